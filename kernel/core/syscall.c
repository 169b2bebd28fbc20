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
    const struct call_desc *d = call_describe(label);
    reads_begin(this_cpu(), d);
    inv.slot = tcb_lookup_slot(t, cap, &err);
    if (!inv.slot)
        return err;
    u8 type = __atomic_load_n(&inv.slot->cap.type, __ATOMIC_ACQUIRE);
    if (type == KEEL_OBJ_ENDPOINT) {
        reads_any(this_cpu()); /* a message: what it reads is not listed */
        return endpoint_call(t, inv.slot, label, args, blocked);
    }
    if (!type)
        return KEEL_E_INVALID_CAP; /* emptied since its lookup (slot_type_check) */
    err = invoke_described(&inv, d, type, false);
    *blocked = inv.blocked;
    return err;
}

/* -- batches ------------------------------------------------------------------ */

/* A vector of calls in one trap, run with the objects lock exclusive from
 * entry to exit (syscall_entry_reads: records already run cannot be
 * run again, so a batch never asks to be upgraded).  The records are read
 * and written in place, through the kernel's view of the pages holding
 * them, translated once per batch.  A record's words are read once into
 * kernel memory (a decoder may read a word twice, and another thread may
 * be writing the record); its results are written straight into it, and
 * a later record's reference reads them there.
 *
 * What a record costs is its decode and invoke: the loop's common case
 * (batch_fast: no references, the capability's type and rights right for
 * the call, no capability arguments) checks the call with one compare
 * (call_fast, keel/objtype.h) and copies only the call's arguments; the
 * rest (batch_record) runs the generic checks, which say which failed.
 * What a call may change under the loop is looked at once per record: an
 * object to destroy, the caller gone, a mapping gone (tlb_generation).  A
 * failure that stops the batch ends the loop, and the records left are
 * marked not run. */

#define REC_SIZE sizeof(struct keel_call_rec)
#define RESULTS_AT __builtin_offsetof(struct keel_call_rec, err) /* err, then res */
#define BATCH_PAGES (KEEL_BATCH_MAX * REC_SIZE / KEEL_PAGE_SIZE + 1)

/* A record's err and results when a failure stopped the batch before it. */
static const u64 not_run[1 + KEEL_MSG_WORDS] = { KEEL_E_NOT_RUN };

/* A record that straddles two pages, copied: one batch runs at a time
 * (the objects lock is exclusive), so one copy serves them all. */
static struct keel_call_rec bounce;

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

/* Where the loop reads and writes records: up to stop (excluded), record
 * i at base + i * REC_SIZE. */
struct batch_window {
    struct keel_call_rec *stop;
    uptr base;
};

/* Record i (of count, at uaddr): in place, with w->stop just past the last
 * record from it on that lies whole in the same page; or, when it
 * straddles two pages, copied into bounce, w->stop just past bounce (so
 * the loop looks again at the next record, after copying bounce's results
 * back), w->base such that (&bounce - w->base) / REC_SIZE is i. */
static struct keel_call_rec *batch_window(const struct batch_view *v, u64 uaddr, u64 count,
                                          u64 i, struct batch_window *w)
{
    u64 off0 = uaddr - v->first, page = (off0 + i * REC_SIZE) / KEEL_PAGE_SIZE;
    u64 lim = ((page + 1) * KEEL_PAGE_SIZE - off0) / REC_SIZE; /* first record past the page */
    uptr b = (uptr)v->page[page] - page * KEEL_PAGE_SIZE + off0;

    if (i < lim) {
        w->stop = (struct keel_call_rec *)(b + MIN(lim, count) * REC_SIZE);
        w->base = b;
        return (struct keel_call_rec *)(b + i * REC_SIZE);
    }
    batch_copy(v, uaddr + i * REC_SIZE, (u8 *)&bounce, REC_SIZE, false);
    w->stop = &bounce + 1;
    w->base = (uptr)&bounce - i * REC_SIZE;
    return &bounce;
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

/* Record i, rec, by the generic path: every argument, the references, the
 * lookup as tcb_lookup_slot does it, and invoke_described's checks.  Its
 * words are read again (the loop's look at them did nothing).  Nothing may
 * wait, so a call on an endpoint is a send. */
static __attribute__((noinline)) long batch_record(struct tcb *t, const struct batch_view *v,
                                                   u64 uaddr, u64 i,
                                                   const struct keel_call_rec *rec,
                                                   struct invocation *inv)
{
    u64 *args = (u64 *)inv->arg;
    u64 cap = READ_ONCE(rec->cap), refs = READ_ONCE(rec->refs);

    inv->label = READ_ONCE(rec->label);
    for (u32 w = 0; w < KEEL_MSG_WORDS; w++)
        args[w] = READ_ONCE(rec->arg[w]);
    if (refs) {
        long err = batch_refs(v, uaddr, i, refs, &cap, args);
        if (err)
            return err;
    }
    const struct cap *cs = &t->cspace.cap;
    /* cnode_slot's test: slot 0 and slots past the end are refused */
    if (cs->type != KEEL_OBJ_CNODE || cap - 1 >= (1ul << cs->size_bits) - 1)
        return KEEL_E_INVALID_CAP;
    struct slot *s = (struct slot *)cs->obj + cap;
    u8 type = __atomic_load_n(&s->cap.type, __ATOMIC_ACQUIRE);
    if (!type)
        return KEEL_E_INVALID_CAP;
    if (type == KEEL_OBJ_ENDPOINT)
        return endpoint_send(t, s, inv->label, args);
    inv->slot = s;
    return invoke_described(inv, call_describe(inv->label), type, true);
}

/* Whether cap names a slot (*s) whose type and rights are those the call
 * f needs (and the call has no capability arguments). */
static inline __attribute__((always_inline)) bool batch_fast(const struct tcb *t, u64 cap,
                                                             const struct call_fast *f,
                                                             struct slot **s)
{
    const struct cap *cs = &t->cspace.cap;

    /* cnode_slot's test: slot 0 and slots past the end are refused */
    if (cs->type != KEEL_OBJ_CNODE || !cap || cap >> cs->size_bits)
        return false;
    *s = (struct slot *)cs->obj + cap;
    u16 type_rights = __atomic_load_n((const u16 *)&(*s)->cap, __ATOMIC_RELAXED);
    return (type_rights & f->mask) == f->want;
}

static long batch(struct tcb *t, u64 uaddr, u64 count, u64 flags, u64 *done)
{
    u64 args[KEEL_MSG_WORDS];
    struct batch_view view;
    struct invocation inv;
    long first_err = KEEL_E_OK, err;
    struct keel_call_rec *rec = NULL, *stop = NULL; /* in place (or bounce) up to stop */
    struct batch_window w;
    uptr base = 0; /* record i is at base + i * REC_SIZE */
    u64 gen, i;

    *done = 0;
    if (count > KEEL_BATCH_MAX || (flags & ~(u64)KEEL_BATCH_STOP))
        return KEEL_E_INVALID_ARG;
    if (!count)
        return KEEL_E_OK;
    if (!batch_view_map(t, &view, uaddr, count * REC_SIZE))
        return KEEL_E_BAD_ADDRESS;
    gen = view.gen;
    /* Field by field (as call_one): the capability arguments need no clearing. */
    inv.caller = t;
    inv.arg = args;
    inv.blocked = false;
    inv.no_block = true;
    for (;;) {
        if (__builtin_expect(rec >= stop, 0)) {
            i = ((uptr)rec - base) / REC_SIZE;
            if (rec == &bounce + 1) /* record i - 1 straddled two pages */
                batch_copy(&view, uaddr + (i - 1) * REC_SIZE + RESULTS_AT, (u8 *)&bounce.err,
                           REC_SIZE - RESULTS_AT, true);
            if (i == count)
                break;
            rec = batch_window(&view, uaddr, count, i, &w);
            stop = w.stop;
            base = w.base;
        }
        u64 cap = READ_ONCE(rec->cap), label = READ_ONCE(rec->label);
        _Pragma("GCC unroll 6") for (u32 r = 0; r < KEEL_MSG_WORDS; r++)
            WRITE_ONCE(rec->res[r], 0);
        inv.res = rec->res;
        const struct call_fast *f;
        struct slot *s;
        /* refs is looked at once here (batch_record reads it again). */
        if (__builtin_expect(!rec->refs && label < KEEL_NCALLS &&
                                 batch_fast(t, cap, (f = &call_fast[label]), &s),
                             1)) {
            /* Only the call's arguments: no decoder reads past them. */
            switch (f->nargs) {
#define ARG(w)                                                                                     \
    case (w) + 1:                                                                                  \
        args[w] = READ_ONCE(rec->arg[w]);                                                          \
        __attribute__((fallthrough))
            ARG(5); ARG(4); ARG(3); ARG(2); ARG(1); ARG(0);
#undef ARG
            case 0:
                break;
            default:
                __builtin_unreachable();
            }
            inv.label = label;
            inv.slot = s;
            err = call_decode[label](&inv);
        } else {
            err = batch_record(t, &view, uaddr, ((uptr)rec - base) / REC_SIZE, rec, &inv);
        }
        zombies_reap_pending();
        if (__builtin_expect(t->hdr.type != KEEL_OBJ_TCB, 0))
            return KEEL_E_OK; /* it deleted itself */
        /* A plain read, as one compare: nothing else runs while the batch
         * holds the objects lock exclusive, and the call above is opaque. */
        if (__builtin_expect(tlb_generation != gen, 0)) {
            /* A mapping went away: the record's page may have gone too. */
            i = ((uptr)rec - base) / REC_SIZE;
            if (!batch_view_map(t, &view, uaddr, count * REC_SIZE)) {
                *done = i + 1;
                return KEEL_E_BAD_ADDRESS;
            }
            gen = view.gen;
            if (rec != &bounce) { /* in place again, where the page is now */
                rec = batch_window(&view, uaddr, count, i, &w);
                stop = w.stop;
                base = w.base;
            }
        }
        WRITE_ONCE(rec->err, (u64)err);
        if (__builtin_expect(err != KEEL_E_OK, 0)) {
            if (!first_err)
                first_err = err;
            if (flags & KEEL_BATCH_STOP)
                goto stopped;
        }
        rec++;
    }
    *done = count;
    return first_err;

stopped:
    i = ((uptr)rec - base) / REC_SIZE;
    if (rec == &bounce)
        batch_copy(&view, uaddr + i * REC_SIZE + RESULTS_AT, (u8 *)&bounce.err,
                   REC_SIZE - RESULTS_AT, true);
    *done = i + 1;
    /* The records left are not run. */
    for (u64 j = i + 1; j < count; j++)
        batch_copy(&view, uaddr + j * REC_SIZE + RESULTS_AT, (u8 *)not_run, sizeof(not_run), true);
    return first_err;
}

u32 syscall_label_reads(u64 label)
{
    const struct call_desc *d = call_describe(label);

    if (!d)
        return READS_FRESH;
    return !d->shared ? READS_ANY : d->shared == CALL_LISTED ? 0 : READS_FRESH;
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
    /* Internal codes are negative, users' errors not.  KEEL_E_PENDING: a
     * region's revoke, shared, is done; its objects are destroyed after the
     * grace period (grace.c), without this call waiting.  Refused before
     * changing anything: KEEL_E_GRACE, a slot to fill still in its grace
     * period - wait for its end holding nothing (no CPU waits for another
     * while holding the lock), then run again shared (a slot held by a
     * pending region revoke: as for KEEL_E_FINISH, should the revoke be
     * this CPU's); KEEL_E_FINISH, this CPU's pending region revoke must end
     * first - grace_wait_finish, the same wait for its slots, then
     * grace_finish; KEEL_E_RETRY, or a slot retired again meanwhile - run
     * again exclusive. */
    if (err == KEEL_E_PENDING)
        err = KEEL_E_OK;
    for (u32 again = 0; __builtin_expect(err < 0, 0) && again < 2; again++) {
        c->call_pending = 1; /* nothing done yet */
        if (err == KEEL_E_FINISH && !again) {
            LOCKSTAT_COUNT(LS_FINISH_WAIT);
            grace_wait_finish();
        } else if (err == KEEL_E_GRACE && !again && !c->grace_slot) {
            grace_wait_finish();
        } else if (err == KEEL_E_GRACE && !again) {
            struct slot *s = c->grace_slot;
            struct slot_set one = { &s, 1, s, s };
            kernel_regrace(__atomic_load_n(&grace_epoch, __ATOMIC_ACQUIRE), &one);
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
        if (err == KEEL_E_PENDING)
            err = KEEL_E_OK;
    }
    /* A listed call's list stands until this CPU leaves the kernel: the way
     * out (sched.c) reads no slot but a pending region revoke's, which no
     * fill reclaims before the revoke is finished (CAP_PENDING). */
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
