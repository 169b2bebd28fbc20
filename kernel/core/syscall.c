/* What happens when a user thread enters the kernel: system calls and
 * faults.  The architecture saves the registers in the TCB, takes the
 * objects lock (shared for system calls, exclusive for faults) and calls
 * these; then sched_exit_kernel() decides who runs.  A call that needs the
 * lock exclusive says so (KEEL_E_RETRY) before changing anything and runs
 * again once upgraded. */
#include <keel/console.h>
#include <keel/cpu.h>
#include <keel/exit.h>
#include <keel/invoke.h>
#include <keel/printk.h>
#include <keel/sched.h>
#include <keel/string.h>
#include <keel/syscall.h>

struct tcb *root_task;

/* One kernel call: an object's method, or a call to an endpoint's server.
 * The words and results stay the caller's (res is zeroed). */
static long call_one(struct tcb *t, u64 cap, u64 label, const u64 *args, u64 *res, bool *blocked)
{
    struct invocation inv;
    long err = 0;

    /* Field by field: clearing the whole structure costs more than the call. */
    inv.caller = t;
    inv.label = label;
    inv.arg = args;
    inv.res = res;
    inv.blocked = false;
    inv.no_block = false;
    inv.slot = tcb_lookup_slot(t, cap, &err);
    if (!inv.slot)
        return err;
    u8 type = __atomic_load_n(&inv.slot->cap.type, __ATOMIC_ACQUIRE);
    if (type == KEEL_OBJ_ENDPOINT)
        return endpoint_call(t, inv.slot, label, args, blocked);
    if (!type)
        return KEEL_E_INVALID_CAP; /* emptied since its lookup (slot_type_check) */
    err = invoke_described(&inv, call_describe(label), type, false);
    *blocked = inv.blocked;
    return err;
}

/* -- batches ------------------------------------------------------------------ */

/* A vector of calls in one trap, run with the objects lock exclusive from
 * entry to exit (syscall_needs_exclusive: records already run cannot be
 * run again, so a batch never asks to be upgraded).  The records are read
 * and written in place, through the kernel's view of the pages holding
 * them, translated once per batch.  A record's words are copied once into
 * kernel memory (a decoder may read a word twice, and another thread may
 * be writing the record); its results are written straight into it, and
 * a later record's reference reads them there.  So what a record costs is
 * its lookup, decode and invoke; a failure that stops the batch ends the
 * loop, and the records left are marked not run. */

#define REC_SIZE sizeof(struct keel_call_rec)
#define RESULTS_AT __builtin_offsetof(struct keel_call_rec, err) /* err, then res */
#define BATCH_PAGES (KEEL_BATCH_MAX * REC_SIZE / KEEL_PAGE_SIZE + 1)

/* A record's err and results when a failure stopped the batch before it. */
static const u64 not_run[1 + KEEL_MSG_WORDS] = { KEEL_E_NOT_RUN };

struct batch_view {
    u64 first; /* the user address of the page holding the first record */
    u64 gen;   /* tlb_generation when the pages were translated */
    u8 *page[BATCH_PAGES];
};

/* Every page of the records mapped user-writable (the results go there),
 * or the batch does not start. */
static bool batch_view_map(struct tcb *t, struct batch_view *v, u64 uaddr, u64 len)
{
    if (uaddr >= KEEL_USER_TOP || len > KEEL_USER_TOP - uaddr)
        return false;
    v->gen = READ_ONCE(tlb_generation);
    v->first = uaddr & ~(KEEL_PAGE_SIZE - 1);
    for (u64 p = v->first, i = 0; p < uaddr + len; p += KEEL_PAGE_SIZE, i++)
        if (!(v->page[i] = user_page_writable(t, p)))
            return false;
    return true;
}

/* Copies len bytes between buf and user address at, inside the records,
 * through the view: a record that straddles two pages (the uapi type is
 * aligned so that none does, but a pointer may be anything), a reference
 * to an earlier record's result. */
static void batch_copy(const struct batch_view *v, u64 at, u8 *buf, u64 len, bool to_user)
{
    while (len) {
        u64 off = at - v->first, in = off & (KEEL_PAGE_SIZE - 1);
        u64 n = MIN(len, KEEL_PAGE_SIZE - in);
        u8 *p = v->page[off / KEEL_PAGE_SIZE] + in;
        if (to_user)
            memcpy(p, buf, n);
        else
            memcpy(buf, p, n);
        buf += n;
        at += n;
        len -= n;
    }
}

/* Record i (at uaddr + i * REC_SIZE): in place, with *stop just past the
 * last record from it on that lies whole in the same page; or, when it
 * straddles two pages, copied into bounce, *stop 0 (the next record looks
 * again). */
static struct keel_call_rec *batch_window(const struct batch_view *v, u64 uaddr, u64 i,
                                          uptr *stop, struct keel_call_rec *bounce)
{
    u64 off0 = uaddr - v->first, page = (off0 + i * REC_SIZE) / KEEL_PAGE_SIZE;
    u64 lim = ((page + 1) * KEEL_PAGE_SIZE - off0) / REC_SIZE; /* first record past the page */
    uptr base = (uptr)v->page[page] - page * KEEL_PAGE_SIZE + off0;

    if (i < lim) {
        *stop = base + lim * REC_SIZE;
        return (struct keel_call_rec *)(base + i * REC_SIZE);
    }
    batch_copy(v, uaddr + i * REC_SIZE, (u8 *)bounce, REC_SIZE, false);
    *stop = 0;
    return bounce;
}

/* Arguments (bit a < KEEL_REF_CAP of refs) and the capability (bit
 * KEEL_REF_CAP) that name a result of an earlier record (of i, at uaddr):
 * the result as it is in that record now. */
static long batch_refs(const struct batch_view *v, u64 uaddr, u64 i, u64 refs, u64 *cap, u64 *args)
{
    for (u32 a = 0; a <= KEEL_REF_CAP; a++) {
        if (!(refs & (1ul << a)))
            continue;
        u64 *val = a == KEEL_REF_CAP ? cap : &args[a];
        u64 call = *val >> 8, r = *val & 0xff;
        if (call >= i || r >= KEEL_MSG_WORDS)
            return KEEL_E_INVALID_ARG;
        u64 at = uaddr + call * REC_SIZE + __builtin_offsetof(struct keel_call_rec, res[r]);
        batch_copy(v, at, (u8 *)val, sizeof(u64), false);
    }
    return KEEL_E_OK;
}

/* One record: nothing may wait, so a call on an endpoint is a send.  The
 * capability is looked up as tcb_lookup_slot does, inline. */
static inline __attribute__((always_inline)) long batch_call(struct tcb *t, u64 cap,
                                                             struct invocation *inv)
{
    const struct cap *cs = &t->cspace.cap;

    /* cnode_slot's test: slot 0 and slots past the end are refused */
    if (cs->type != KEEL_OBJ_CNODE || cap - 1 >= (1ul << cs->size_bits) - 1)
        return KEEL_E_INVALID_CAP;
    struct slot *s = (struct slot *)cs->obj + cap;
    u8 type = __atomic_load_n(&s->cap.type, __ATOMIC_ACQUIRE);
    if (!type)
        return KEEL_E_INVALID_CAP;
    if (type == KEEL_OBJ_ENDPOINT)
        return endpoint_send(t, s, inv->label, inv->arg);
    inv->slot = s;
    return invoke_described(inv, call_describe(inv->label), type, true);
}

static long batch(struct tcb *t, u64 uaddr, u64 count, u64 flags, u64 *done)
{
    u64 args[KEEL_MSG_WORDS];
    struct keel_call_rec bounce;
    struct batch_view view;
    struct invocation inv = { .caller = t, .arg = args, .no_block = true };
    long first_err = KEEL_E_OK;
    uptr next = 0, stop = 0; /* the records before stop are in place from next on */
    u64 i;

    *done = 0;
    if (count > KEEL_BATCH_MAX || (flags & ~(u64)KEEL_BATCH_STOP))
        return KEEL_E_INVALID_ARG;
    if (count && !batch_view_map(t, &view, uaddr, count * REC_SIZE))
        return KEEL_E_BAD_ADDRESS;
    for (i = 0; i < count; i++) {
        struct keel_call_rec *rec = (struct keel_call_rec *)next;
        if (__builtin_expect(next >= stop, 0))
            rec = batch_window(&view, uaddr, i, &stop, &bounce);
        next = (uptr)(rec + 1);
        u64 cap = READ_ONCE(rec->cap), refs = READ_ONCE(rec->refs);
        _Pragma("GCC unroll 6") for (u32 w = 0; w < KEEL_MSG_WORDS; w++) {
            args[w] = READ_ONCE(rec->arg[w]);
            WRITE_ONCE(rec->res[w], 0);
        }
        long err = refs ? batch_refs(&view, uaddr, i, refs, &cap, args) : KEEL_E_OK;
        if (!err) {
            inv.label = READ_ONCE(rec->label);
            inv.res = rec->res;
            err = batch_call(t, cap, &inv);
        }
        zombies_reap_pending();
        if (t->hdr.type != KEEL_OBJ_TCB)
            return KEEL_E_OK; /* it deleted itself */
        if (__builtin_expect(READ_ONCE(tlb_generation) != view.gen, 0)) {
            /* A mapping went away: the record's page may have gone too. */
            if (!batch_view_map(t, &view, uaddr, count * REC_SIZE)) {
                *done = i + 1;
                return KEEL_E_BAD_ADDRESS;
            }
            if (rec != &bounce)
                next = (uptr)(batch_window(&view, uaddr, i, &stop, &bounce) + 1);
            rec = (struct keel_call_rec *)next - 1;
        }
        WRITE_ONCE(rec->err, (u64)err);
        if (__builtin_expect(rec == &bounce, 0))
            batch_copy(&view, uaddr + i * REC_SIZE + RESULTS_AT, (u8 *)&bounce.err,
                       REC_SIZE - RESULTS_AT, true);
        if (__builtin_expect(err != KEEL_E_OK, 0)) {
            if (!first_err)
                first_err = err;
            if (flags & KEEL_BATCH_STOP)
                break;
        }
    }
    *done = i < count ? i + 1 : count;
    /* Stopped: the records left are not run. */
    for (u64 j = i + 1; j < count; j++)
        batch_copy(&view, uaddr + j * REC_SIZE + RESULTS_AT, (u8 *)not_run, sizeof(not_run), true);
    return first_err;
}

bool syscall_label_exclusive(u64 label)
{
    const struct call_desc *d = call_describe(label);

    return d && !d->shared;
}

static inline __attribute__((always_inline)) long syscall_one(struct tcb *t, u64 nr, u64 cap, u64 label, const u64 *args, u64 *res,
                        bool *blocked)
{
    long err = KEEL_E_OK;
    struct slot *s;

    switch (nr) {
    case KEEL_SYS_INVOKE:
        err = call_one(t, cap, label, args, res, blocked);
        break;
    case KEEL_SYS_SEND:
        if ((s = tcb_lookup_slot(t, cap, &err)))
            err = endpoint_send(t, s, label, args);
        break;
    case KEEL_SYS_RECV:
        if ((s = tcb_lookup_slot(t, cap, &err)))
            err = endpoint_recv(t, s, label, args[0], blocked);
        break;
    case KEEL_SYS_REPLY:
        if ((s = tcb_lookup_slot(t, cap, &err)))
            err = reply_invoke(t, s, label, args);
        break;
    case KEEL_SYS_BATCH:
        /* Its records cannot be run again once some have run. */
        if (kernel_shared())
            return KEEL_E_RETRY;
        err = batch(t, cap, label, args[0], &res[0]);
        break;
    case KEEL_SYS_YIELD:
        sched_yield();
        break;
    case KEEL_SYS_NULL:
        break;
    default:
        err = KEEL_E_UNKNOWN_CALL;
    }
    return err;
}

void syscall_handle(struct tcb *t, u64 nr, u64 cap, u64 label, const u64 *args)
{
    struct cpu *c = this_cpu();
    u64 res[KEEL_MSG_WORDS] = { 0 }, recv_args[KEEL_MSG_WORDS] = { 0 };
    bool blocked = false;
    long err_reply = 0;

    c->call_pending = 0;
    if (nr == KEEL_SYS_REPLY_RECV) {
        /* The reply runs shared and is done once: the call then becomes
         * the recv that is left (the saved registers too, for a restart). */
        struct slot *s = tcb_lookup_slot(t, cap, &err_reply);
        if (s)
            err_reply = reply_invoke(t, s, label, args);
        if (err_reply) {
            arch_tcb_set_results(t, err_reply, res);
            return;
        }
        arch_tcb_syscall_to_recv(t, args[KEEL_MSG_WORDS], args[KEEL_MSG_WORDS + 1]);
        recv_args[0] = args[KEEL_MSG_WORDS + 1];
        nr = KEEL_SYS_RECV;
        cap = args[KEEL_MSG_WORDS];
        label = 0;
        args = recv_args;
    }
    long err = syscall_one(t, nr, cap, label, args, res, &blocked);
    /* Internal codes are negative, users' errors not.  Refused before
     * changing anything: KEEL_E_GRACE, a slot to fill still in its grace period -
     * wait for its end holding nothing (no CPU waits for another while
     * holding the lock), then run again shared; KEEL_E_RETRY, or a slot
     * retired again meanwhile - run again exclusive. */
    for (u32 again = 0; __builtin_expect(err < 0, 0) && again < 2; again++) {
        c->call_pending = 1; /* nothing done yet */
        if (err == KEEL_E_PENDING) {
            /* A region's revoke, shared (grace.c): done once its objects
             * are destroyed after the grace period.  A thread stopped
             * meanwhile makes the call again: nothing is left to revoke. */
            kernel_regrace();
            grace_finish();
            if (c->current != t)
                return;
            c->call_pending = 0;
            err = KEEL_E_OK;
            break;
        }
        if (err == KEEL_E_GRACE && !again) {
            kernel_regrace();
        } else {
            LOCKSTAT_UPGRADE(nr == KEEL_SYS_INVOKE ? label : LOCKSTAT_LABELS - 1 - nr);
            kernel_upgrade();
        }
        /* Stopped by an exclusive holder while this CPU waited: rewound to
         * make the call again when it runs (cpu_serve_requests). */
        if (c->current != t)
            return;
        c->call_pending = 0;
        blocked = false;
        for (u32 i = 0; i < KEEL_MSG_WORDS; i++)
            res[i] = 0;
        err = syscall_one(t, nr, cap, label, args, res, &blocked);
    }
    if (!kernel_shared())
        zombies_reap(); /* only exclusive holders delete capabilities */
    /* The caller may have deleted itself; a blocked caller gets its
     * results from whoever wakes it. */
    if (t->hdr.type == KEEL_OBJ_TCB && !blocked)
        arch_tcb_set_results(t, err, res);
}

void thread_fault(struct tcb *t, u64 vector, u64 addr, u64 error, u64 pc)
{
    t->fault[0] = vector;
    t->fault[1] = addr;
    t->fault[2] = error;
    t->fault[3] = pc;
    thread_stop(t);
    if (endpoint_send_fault(t))
        return;
    t->state = THREAD_INACTIVE;
    printk("keel: thread %lu: unhandled fault, vector %lu at pc 0x%lx, address 0x%lx, "
           "error 0x%lx; thread stopped\n",
           t->id, vector, pc, addr, error);
    if (t == root_task) {
        printk("keel: the root task died\n");
        arch_exit(KEEL_EXIT_FAIL);
    }
}
