/* The IPC fast path: the common case of a call to a server that waits, and
 * of the server's reply_recv back, as one short straight path.
 *
 * Taken when: the message is in registers and carries no capability (a
 * user label with no capability words, no room request); the endpoint has
 * a waiting receiver with a receive window (for the reply capability) that
 * may run on this CPU at once (sched_direct_ok); for reply_recv, the reply
 * capability is valid, the endpoint's queue is empty (the server will
 * wait) and the server has no bound notification.  Anything else returns
 * false before changing anything, and the general path (syscall.c,
 * endpoint.c) serves the call; the results are the same either way.
 *
 * It runs with the objects lock shared, takes the locks the general path
 * would (endpoint, then capability, then each thread's: sched.h's order)
 * and switches straight to the other thread (sched_switch_direct) instead
 * of queueing it and choosing again. */
#include <keel/cpu.h>
#include <keel/invoke.h>
#include <keel/sched.h>
#include <keel/syscall.h>
#include <keel/waitlist.h>

static inline struct slot *fast_lookup(struct tcb *t, u64 cptr, u8 type, u8 right)
{
    struct slot *s = cnode_slot(&t->cspace.cap, cptr);

    if (!s || __atomic_load_n(&s->cap.type, __ATOMIC_ACQUIRE) != type ||
        !(s->cap.rights & right))
        return NULL;
    return s;
}

/* A reply capability is made and deleted often and simply: it has no
 * parent, children, siblings or reference count, and lives in a capability
 * table's slot (endpoint.c: make_reply_cap, and cap.c's slot_delete, which
 * take the general way).  Under the capability lock. */
static inline void fast_reply_cap_make(struct slot *dst, struct tcb *caller)
{
    dst->cap = (struct cap){ .rights = KEEL_RIGHT_WRITE, .obj = (uptr)caller };
    dst->parent = dst->child = dst->next = dst->prev = NULL;
    caller->reply_slot = dst;
    __atomic_store_n(&dst->cap.type, KEEL_OBJ_REPLY, __ATOMIC_RELEASE);
}

static inline void fast_reply_cap_delete(struct slot *s)
{
    if (s->parent || s->child || s->next || s->owner) {
        slot_delete(s);
        return;
    }
    __atomic_store_n(&s->cap.type, 0, __ATOMIC_RELEASE);
    s->cap = (struct cap){ 0 };
}

bool fastpath_call(struct tcb *t, u64 cptr, u64 label)
{
    if (label < KEEL_LABEL_USER || (label & ~(u64)KEEL_LABEL_MASK))
        return false; /* a kernel label, capabilities to transfer, a room request */
    struct slot *s = fast_lookup(t, cptr, KEEL_OBJ_ENDPOINT, KEEL_RIGHT_WRITE);
    if (!s)
        return false;
    struct endpoint *ep = (struct endpoint *)s->cap.obj;
    obj_lock(&ep->hdr.lock, LOCK_WAITQ);
    struct tcb *r = ep->receivers;
    if (!r || !r->recv_window || !sched_direct_ok(r))
        goto fall_back;
    caps_lock();
    struct slot *dst = window_slot(r, r->recv_window, 0);
    if (!dst) {
        caps_unlock();
        goto fall_back;
    }
    /* Blocked before the reply capability exists: it may be used at once
     * by another thread sharing r's table (sched_switch_direct looks). */
    t->state = THREAD_BLOCKED;
    t->wait_kind = WAIT_REPLY;
    t->blocked_on = NULL;
    fast_reply_cap_make(dst, t);
    caps_unlock();
    list_pop(&ep->receivers);
    obj_unlock(&ep->hdr.lock, LOCK_WAITQ);
    arch_tcb_pass_msg(r, t, s->cap.badge, label, KEEL_INFO_REPLY);
    r->recv_window = 0;
    sched_switch_direct(t, r);

fall_back:
    obj_unlock(&ep->hdr.lock, LOCK_WAITQ);
    return false;
}

bool fastpath_reply_recv(struct tcb *r, u64 reply, u64 err, u64 epcap, u64 window)
{
    if (err >= KEEL_NERRORS || r->bound)
        return false;
    struct slot *s = fast_lookup(r, reply, KEEL_OBJ_REPLY, KEEL_RIGHT_WRITE);
    struct slot *es = fast_lookup(r, epcap, KEEL_OBJ_ENDPOINT, KEEL_RIGHT_READ);
    if (!s || !es)
        return false;
    if (window && window_unready(r, window))
        return false; /* the general recv reports or reclaims (grace.c) */
    struct tcb *t = (struct tcb *)s->cap.obj;
    if (!sched_direct_ok(t))
        return false;
    struct endpoint *ep = (struct endpoint *)es->cap.obj;
    obj_lock(&ep->hdr.lock, LOCK_WAITQ);
    if (ep->count) { /* a message waits: the general recv takes it */
        obj_unlock(&ep->hdr.lock, LOCK_WAITQ);
        return false;
    }
    caps_lock();
    if (s->cap.type != KEEL_OBJ_REPLY || (struct tcb *)s->cap.obj != t) { /* another reply won */
        caps_unlock();
        obj_unlock(&ep->hdr.lock, LOCK_WAITQ);
        return false;
    }
    t->reply_slot = NULL; /* consumed: deleting the slot must not revoke */
    fast_reply_cap_delete(s);
    caps_unlock();
    /* Whoever empties the reply slot owns the caller's wake-up.  r's
     * registers are read and rewritten (as the general path leaves them)
     * before r is on the receivers list, where a sender may fill them. */
    arch_tcb_pass_results(t, r, (long)err);
    arch_tcb_syscall_to_recv(r, epcap, window);
    r->state = THREAD_BLOCKED;
    r->blocked_on = ep;
    r->wait_kind = WAIT_RECV;
    r->recv_window = window;
    list_push(&ep->receivers, r);
    obj_unlock(&ep->hdr.lock, LOCK_WAITQ);
    sched_switch_direct(r, t);
}
