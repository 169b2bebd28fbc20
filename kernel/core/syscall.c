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

/* One kernel call: an object's method, or a call to an endpoint's server. */
static long call_one(struct tcb *t, u64 cap, u64 label, const u64 *args, u64 *res, bool *blocked)
{
    struct invocation inv;
    long err = 0;

    /* Field by field: clearing the whole structure costs more than the call. */
    inv.caller = t;
    inv.label = label;
    inv.blocked = false;
    inv.no_block = false;
    _Pragma("GCC unroll 6") for (u32 i = 0; i < KEEL_MSG_WORDS; i++) {
        inv.arg[i] = args[i];
        inv.cap_arg[i] = NULL;
        inv.res[i] = 0;
    }
    inv.slot = tcb_lookup_slot(t, cap, &err);
    if (!inv.slot)
        return err;
    if (inv.slot->cap.type == KEEL_OBJ_ENDPOINT)
        return endpoint_call(t, inv.slot, label, args, blocked);
    err = invoke(&inv);
    *blocked = inv.blocked;
    _Pragma("GCC unroll 6") for (u32 i = 0; i < KEEL_MSG_WORDS; i++)
        res[i] = inv.res[i];
    return err;
}

/* One call of a batch: nothing may wait, so a call on an endpoint is a
 * send; the invocation comes filled in from the record. */
static long batch_call(struct tcb *t, u64 cap, struct invocation *inv)
{
    long err = 0;

    inv->slot = tcb_lookup_slot(t, cap, &err);
    if (!inv->slot)
        return err;
    if (inv->slot->cap.type == KEEL_OBJ_ENDPOINT)
        return endpoint_send(t, inv->slot, inv->label, inv->arg);
    return invoke(inv);
}

/* A vector of calls in one trap.  The records come in and go out
 * BATCH_CHUNK at a time, one copy each way through the caller's page
 * tables (the inputs go back as they were read, beside the results), and
 * each record's words go straight into the invocation, so the work per
 * call is its decode and invoke.  A bad pointer ends the batch. */
#define BATCH_CHUNK 8

static long batch(struct tcb *t, u64 uaddr, u64 count, u64 flags, u64 *done)
{
    struct keel_call_rec recs[BATCH_CHUNK];
    u64 results[KEEL_BATCH_MAX][KEEL_MSG_WORDS];
    struct invocation inv = { .caller = t, .no_block = true };
    long first_err = KEEL_E_OK;

    *done = 0;
    if (count > KEEL_BATCH_MAX || (flags & ~(u64)KEEL_BATCH_STOP))
        return KEEL_E_INVALID_ARG;
    for (u64 base = 0; base < count; base += BATCH_CHUNK) {
        u64 n = MIN(count - base, (u64)BATCH_CHUNK);
        u64 at = uaddr + base * sizeof(recs[0]);
        if (!user_copy_in(t, recs, at, n * sizeof(recs[0])))
            return KEEL_E_BAD_ADDRESS;
        for (u64 j = 0; j < n; j++) {
            struct keel_call_rec *rec = &recs[j];
            u64 i = base + j, cap = rec->cap;
            long err = KEEL_E_OK;
            inv.label = rec->label;
            inv.blocked = false;
            _Pragma("GCC unroll 6") for (u32 w = 0; w < KEEL_MSG_WORDS; w++) {
                inv.arg[w] = rec->arg[w];
                inv.cap_arg[w] = NULL;
                inv.res[w] = 0;
            }
            if (first_err && (flags & KEEL_BATCH_STOP)) {
                err = KEEL_E_NOT_RUN;
            } else {
                /* arguments that refer to earlier results */
                for (u32 a = 0; rec->refs && a <= KEEL_REF_CAP && !err; a++) {
                    if (!(rec->refs & (1ul << a)))
                        continue;
                    u64 *v = a == KEEL_REF_CAP ? &cap : &inv.arg[a];
                    u64 call = *v >> 8, r = *v & 0xff;
                    if (call >= i || r >= KEEL_MSG_WORDS)
                        err = KEEL_E_INVALID_ARG;
                    else
                        *v = results[call][r];
                }
                if (!err)
                    err = batch_call(t, cap, &inv);
                zombies_reap();
                if (t->hdr.type != KEEL_OBJ_TCB)
                    return KEEL_E_OK; /* it deleted itself */
            }
            _Pragma("GCC unroll 6") for (u32 w = 0; w < KEEL_MSG_WORDS; w++) {
                rec->res[w] = inv.res[w];
                results[i][w] = inv.res[w];
            }
            rec->err = (u64)err;
            if (err && !first_err)
                first_err = err;
            if (err != KEEL_E_NOT_RUN)
                (*done)++;
        }
        if (!user_copy_out(t, at, recs, n * sizeof(recs[0])))
            return KEEL_E_BAD_ADDRESS;
    }
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
    if (err == KEEL_E_RETRY) {
        c->call_pending = 1; /* nothing done yet */
        kernel_upgrade();
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
