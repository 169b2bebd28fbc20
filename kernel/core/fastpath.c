/* The IPC fast path: the common case of a call to a server that waits, and
 * of the server's reply_recv back, as one short straight path.
 *
 * Taken when: the message is in registers and carries no capability (a
 * user label with no capability words, no room request); the endpoint has
 * a waiting receiver with a receive window (for the reply capability) that
 * may run on this CPU at once (sched_direct_ok); for reply_recv, the reply
 * capability is valid, the endpoint's queue is empty (the server will
 * wait) and the server has no bound notification.  Anything else returns
 * before changing anything, and the general path (syscall.c, endpoint.c)
 * serves the call; the results are the same either way.
 *
 * It runs with the objects lock shared, takes the locks the general path
 * would (endpoint, then capability, then each thread's: sched.h's order)
 * and switches straight to the other thread (fast_switch) instead of
 * queueing it and choosing again.  Everything on the way is inline - the
 * lookups, the locks, the register moves, the switch and the return to
 * user mode (arch/fastpath.h) - so a round trip is two entries, these two
 * functions and two exits (docs/benchmarks.md has its profile). */
#include <arch/fastpath.h>
#include <keel/cpu.h>
#include <keel/invoke.h>
#include <keel/sched.h>
#include <keel/syscall.h>
#include <keel/waitlist.h>

#include "runqueue.h"

#define FAST static inline __attribute__((always_inline))

_Static_assert(offsetof(struct cap, type) == 0 && offsetof(struct cap, rights) == 1 &&
                   offsetof(struct cap, obj) == 8,
               "fast_reply_cap_make writes the capability's first word whole");

/* obj_lock and obj_unlock (sched.h) for a CPU known to hold the objects
 * lock shared: with one CPU there is nothing to exclude. */
FAST void fast_lock(bool smp, spinlock_t *l, u32 cls)
{
    if (!smp)
        return;
    lock_check(cls);
    if (!spin_trylock(l))
        obj_lock_spin(l);
}

FAST void fast_unlock(bool smp, spinlock_t *l, u32 cls)
{
    if (!smp)
        return;
    spin_unlock(l);
    lock_release(cls);
}

/* A thread's capability table, looked at once for all the lookups of a
 * call: its slots and its last index (0 when it is no table). */
struct fast_cspace {
    struct slot *slots;
    u64 last;
};

FAST struct fast_cspace fast_cspace(const struct tcb *t)
{
    const struct cap *cn = &t->cspace.cap;
    u64 last = (1ul << cn->size_bits) - 1;

    if (__builtin_expect(cn->type != KEEL_OBJ_CNODE, 0))
        last = 0;
    return (struct fast_cspace){ (struct slot *)cn->obj, last };
}

/* cnode_slot's test: slot 0 is the table's header, never a capability. */
FAST bool fast_index_ok(struct fast_cspace cs, u64 i)
{
    return i - 1 < cs.last;
}

FAST bool fast_cap_ok(const struct slot *s, u8 type, u8 right)
{
    return __atomic_load_n(&s->cap.type, __ATOMIC_ACQUIRE) == type && (s->cap.rights & right);
}

/* A reply capability is made and deleted often and simply: it has no
 * parent, children, siblings or reference count (its type is not
 * derivable, and it is always made as a root: endpoint.c's make_reply_cap),
 * and lives in a capability table's slot, which no thread owns (cap.c's
 * slot_delete takes the general way).  Only what a reply capability holds
 * is written: an empty, unreserved slot past its grace period holds an
 * all-zero capability and no links (every way of emptying a slot -
 * slot_delete, slot_move, slot_reclaim, and fast_reply_cap_delete for the
 * words a reply capability uses - leaves it so).  Under the slot's
 * capability lock, which alone guards a capability with no links: its
 * family field is not kept (nothing relies on it for a reply: none is
 * derived from, and a shared move or delete of one holds its slots' locks
 * or runs exclusive). */
FAST void fast_reply_cap_make(struct slot *dst, struct tcb *caller)
{
    /* type (still 0), rights, size_bits, flags and io are one word */
    *(u64 *)&dst->cap = (u64)KEEL_RIGHT_WRITE << 8;
    dst->cap.obj = (uptr)caller;
    caller->reply_slot = dst;
    __atomic_store_n(&dst->cap.type, KEEL_OBJ_REPLY, __ATOMIC_RELEASE);
}

FAST void fast_reply_cap_delete(struct slot *s)
{
    __atomic_store_n(&s->cap.type, 0, __ATOMIC_RELEASE);
    *(u64 *)&s->cap = 0; /* rights with the rest of the first word */
    s->cap.obj = 0;
}

/* from (the current thread, just blocked) gives this CPU to `to` (just
 * woken, not yet runnable): what sched_make_runnable(to) and the exit path
 * (sched.c) would do, without the run queue.  Under each thread's lock in
 * turn, as there: if from was woken meanwhile by another CPU, or `to` is
 * still on its old CPU's exit path, the general way is taken.  (c->idle is
 * 0: this CPU runs a system call.)  Without smp the message words 1-5 are
 * still in from's frame (arch_fast_pass_words): `to` leaves with them, or
 * gets them copied before it takes the general way. */
FAST __noreturn void fast_switch(struct cpu *c, bool smp, struct tcb *from, struct tcb *to)
{
    fast_lock(smp, &from->hdr.lock, LOCK_THREAD);
    if (smp && from->state == THREAD_RUNNABLE) { /* woken by another CPU */
        fast_unlock(smp, &from->hdr.lock, LOCK_THREAD);
        sched_make_runnable(to);
        sched_exit_kernel();
    }
    if (c->fpu_owner == from) { /* saved now: it may next run elsewhere */
        arch_fast_fpu_save(from);
        if (smp) /* with one CPU its state may stay: nobody else restores it */
            c->fpu_owner = NULL;
    }
    if (smp) /* with one CPU nobody looks in between */
        c->current = NULL;
    from->cpu = -1;
    fast_unlock(smp, &from->hdr.lock, LOCK_THREAD);
    fast_lock(smp, &to->hdr.lock, LOCK_THREAD);
    if (to->cpu >= 0 || to->queued || !arch_fast_can_run(to)) {
        fast_unlock(smp, &to->hdr.lock, LOCK_THREAD);
        if (!smp) { /* what the general path expects, as with smp */
            arch_fast_pass_words(to, from);
            c->current = NULL;
            if (c->fpu_owner == from)
                c->fpu_owner = NULL;
        }
        sched_make_runnable(to);
        sched_exit_kernel();
    }
    to->state = THREAD_RUNNABLE;
    to->blocked_on = NULL;
    to->wait_kind = WAIT_NONE;
    u32 cpu = c->index;
    to->cpu = (s32)cpu;
    to->last_cpu = (s16)cpu;
    if (!to->slice)
        to->slice = SCHED_SLICE_TICKS;
    c->current = to;
    fast_unlock(smp, &to->hdr.lock, LOCK_THREAD);
    WRITE_ONCE(c->in_kernel, 0);
    /* releases the objects lock */
    arch_fast_enter_user(c, to, true, smp ? to : from);
}

/* smp: more than one CPU (else no lock is taken); a constant in each of
 * the two copies the entry points below make of these bodies. */
FAST void fast_call(struct cpu *c, struct tcb *t, u64 cptr, u64 label, bool smp)
{
    if (label < KEEL_LABEL_USER || (label & ~(u64)KEEL_LABEL_MASK))
        return; /* a kernel label, capabilities to transfer, a room request */
    struct fast_cspace cs = fast_cspace(t);
    if (!fast_index_ok(cs, cptr))
        return;
    struct slot *s = cs.slots + cptr;
    if (!fast_cap_ok(s, KEEL_OBJ_ENDPOINT, KEEL_RIGHT_WRITE))
        return;
    struct endpoint *ep = (struct endpoint *)s->cap.obj;
    fast_lock(smp, &ep->hdr.lock, LOCK_WAITQ);
    struct tcb *r = ep->receivers;
    if (!r || !sched_direct_ok(c, r))
        goto fall_back;
    struct fast_cspace rcs = fast_cspace(r);
    u64 window = r->recv_window;
    if (!fast_index_ok(rcs, window)) /* 0 (no window) too */
        goto fall_back;
    struct slot *dst = rcs.slots + window;
    spinlock_t *dl = &caps_stripes[caps_stripe((u64)dst)]; /* its slot's */
    fast_lock(smp, dl, LOCK_CAPS);
    if (dst->cap.type || (dst->cap.flags & CAP_RESERVED) || (dst->retired && !slot_reclaim(dst))) {
        /* slot_is_free, inline */
        fast_unlock(smp, dl, LOCK_CAPS);
        goto fall_back;
    }
    /* Committed: r is ours (we pop it under its endpoint's lock), and its
     * message is read from t's registers before the reply capability
     * exists - once it does, another thread sharing r's table may reply
     * at once and write t's results over them. */
    arch_fast_pass_msg(r, t, s->cap.badge, label, KEEL_INFO_REPLY, smp);
    r->recv_window = 0;
    /* Blocked before the reply capability exists, for the same reason
     * (fast_switch looks). */
    t->state = THREAD_BLOCKED;
    t->wait_kind = WAIT_REPLY;
    t->blocked_on = NULL;
    fast_reply_cap_make(dst, t);
    fast_unlock(smp, dl, LOCK_CAPS);
    ep->receivers = r->rq_next; /* list_pop */
    r->rq_next = NULL;
    fast_unlock(smp, &ep->hdr.lock, LOCK_WAITQ);
    fast_switch(c, smp, t, r);

fall_back:
    fast_unlock(smp, &ep->hdr.lock, LOCK_WAITQ);
}

FAST void fast_reply_recv(struct cpu *c, struct tcb *r, u64 reply, u64 err, bool smp)
{
    u64 epcap = arch_fast_recv_ep(r), window = arch_fast_recv_window(r);

    if (err >= KEEL_NERRORS || r->bound)
        return;
    struct fast_cspace cs = fast_cspace(r);
    if (!fast_index_ok(cs, reply) || !fast_index_ok(cs, epcap))
        return;
    struct slot *s = cs.slots + reply, *es = cs.slots + epcap;
    if (!fast_cap_ok(s, KEEL_OBJ_REPLY, KEEL_RIGHT_WRITE) ||
        !fast_cap_ok(es, KEEL_OBJ_ENDPOINT, KEEL_RIGHT_READ))
        return;
    if (window) { /* window_unready: the general recv reports or reclaims (grace.c) */
        if (!fast_index_ok(cs, window) || !fast_index_ok(cs, window + MSG_CAPS))
            return;
        struct slot *w = cs.slots + window;
        if (w[0].retired | w[1].retired | w[2].retired | w[3].retired)
            return;
    }
    struct tcb *t = (struct tcb *)s->cap.obj;
    if (!sched_direct_ok(c, t))
        return;
    struct endpoint *ep = (struct endpoint *)es->cap.obj;
    fast_lock(smp, &ep->hdr.lock, LOCK_WAITQ);
    if (ep->count) /* a message waits: the general recv takes it */
        goto unlock_ep;
    spinlock_t *sl = &caps_stripes[caps_stripe((u64)s)]; /* its slot's: no links */
    fast_lock(smp, sl, LOCK_CAPS);
    if (smp && (s->cap.type != KEEL_OBJ_REPLY || (struct tcb *)s->cap.obj != t)) {
        /* another CPU's reply won (with one CPU nothing changed since the
         * lookup: kernel code is not preempted) */
        fast_unlock(smp, sl, LOCK_CAPS);
        goto unlock_ep;
    }
    t->reply_slot = NULL; /* consumed: deleting the slot must not revoke */
    fast_reply_cap_delete(s);
    fast_unlock(smp, sl, LOCK_CAPS);
    /* Whoever empties the reply slot owns the caller's wake-up.  r's
     * registers are read and rewritten (as the general path leaves them)
     * before r is on the receivers list, where a sender may fill them
     * (with smp: with one CPU none runs before r's words have left). */
    arch_fast_pass_results(t, r, (long)err, smp);
    arch_fast_syscall_to_recv(r, epcap, window);
    r->state = THREAD_BLOCKED;
    r->blocked_on = ep;
    r->wait_kind = WAIT_RECV;
    r->recv_window = window;
    list_push(&ep->receivers, r);
    fast_unlock(smp, &ep->hdr.lock, LOCK_WAITQ);
    fast_switch(c, smp, r, t);

unlock_ep:
    fast_unlock(smp, &ep->hdr.lock, LOCK_WAITQ);
}

/* The entry points: one copy of each body per case, the one for this
 * machine chosen once at boot (fastpath_init) rather than on every call. */
static __noreturn void call_one_cpu(u64 cptr, u64 label)
{
    struct cpu *c = this_cpu();
    struct tcb *t = kernel_enter_call(c, READS_FRESH);

    fast_call(c, t, cptr, label, false);
    syscall_general(arch_fast_frame(t), t);
}

static __noreturn void call_smp(u64 cptr, u64 label)
{
    struct cpu *c = this_cpu();
    struct tcb *t = kernel_enter_call(c, READS_FRESH);

    fast_call(c, t, cptr, label, true);
    syscall_general(arch_fast_frame(t), t);
}

static __noreturn void reply_recv_one_cpu(u64 reply, u64 err)
{
    struct cpu *c = this_cpu();
    struct tcb *r = kernel_enter_call(c, READS_FRESH);

    fast_reply_recv(c, r, reply, err, false);
    syscall_general(arch_fast_frame(r), r);
}

static __noreturn void reply_recv_smp(u64 reply, u64 err)
{
    struct cpu *c = this_cpu();
    struct tcb *r = kernel_enter_call(c, READS_FRESH);

    fast_reply_recv(c, r, reply, err, true);
    syscall_general(arch_fast_frame(r), r);
}

void (*fastpath_call_fn)(u64 cptr, u64 label) = call_smp;
void (*fastpath_reply_recv_fn)(u64 reply, u64 err) = reply_recv_smp;

void fastpath_init(void)
{
    if (cpu_count == 1) {
        fastpath_call_fn = call_one_cpu;
        fastpath_reply_recv_fn = reply_recv_one_cpu;
    }
}
