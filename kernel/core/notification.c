/* Notifications: a word of bits, OR-ed in by signal (the capability's badge,
 * or 1), taken whole by wait or poll.  The cheapest signal the kernel has. */
#include <keel/invoke.h>
#include <keel/sched.h>
#include <keel/waitlist.h>

void notification_cancel_wait(struct tcb *t)
{
    struct notification *n = t->blocked_on;

    list_remove(&n->waiters, t);
}

/* Adds bits: to a waiter, else to a bound thread blocked in recv, else to
 * the word. */
struct notification *notification_lookup(struct tcb *caller, u64 slot, u8 rights, u64 *bits,
                                         long *err)
{
    struct slot *s = tcb_lookup_slot(caller, slot, err);

    if (!s)
        return NULL;
    if ((*err = slot_type_check(s, KEEL_OBJ_NOTIFICATION)))
        return NULL;
    if ((s->cap.rights & rights) != rights) {
        *err = KEEL_E_NO_RIGHTS;
        return NULL;
    }
    if (bits)
        *bits = s->cap.badge ? s->cap.badge : 1;
    return (struct notification *)s->cap.obj;
}

void notification_raise(struct notification *n, u64 bits)
{
    u64 res[KEEL_MSG_WORDS] = { 0 };
    struct tcb *t = list_pop(&n->waiters);

    if (t) {
        res[0] = n->word | bits;
        n->word = 0;
        arch_tcb_set_results(t, KEEL_E_OK, res);
        sched_make_runnable(t);
        return;
    }
    t = n->bound;
    if (t && t->state == THREAD_BLOCKED && t->wait_kind == WAIT_RECV) {
        recv_wait_cancel(t);
        arch_tcb_set_recv(t, KEEL_E_OK, n->word | bits, KEEL_LABEL_NOTIFY, res, 0);
        n->word = 0;
        t->recv_window = 0;
        sched_make_runnable(t);
        return;
    }
    n->word |= bits;
}

void notification_unbind(struct tcb *t)
{
    if (t->bound) {
        t->bound->bound = NULL;
        t->bound = NULL;
    }
}

/* Does kernel state of another type (an IRQ line, the console's listener)
 * point at n?  Read-only: those change only exclusive. */
static bool notification_referenced(const struct notification *n)
{
    return irq_notification_used(n) || console_notification_used(n);
}

bool notification_destroy_idle(struct kobj *o)
{
    struct notification *n = (struct notification *)o;

    obj_lock(&n->hdr.lock, LOCK_WAITQ);
    bool idle = !n->waiters && !n->bound && !notification_referenced(n);
    if (idle)
        n->hdr.type = 0;
    obj_unlock(&n->hdr.lock, LOCK_WAITQ);
    return idle;
}

void notification_destroy(struct kobj *o)
{
    struct notification *n = (struct notification *)o;
    struct tcb *t;
    u64 zero[KEEL_MSG_WORDS] = { 0 };

    if (n->bound)
        notification_unbind(n->bound);
    /* Kernel state of other types that points at it (an IRQ line, the
     * console's listener) forgets it. */
    for (u32 i = 0; notification_gone_hooks[i]; i++)
        notification_gone_hooks[i](n);
    while ((t = list_pop(&n->waiters))) {
        arch_tcb_set_results(t, KEEL_E_REVOKED, zero);
        sched_make_runnable(t);
    }
    n->hdr.type = 0;
}

/* With the objects lock shared, under the notification's lock; a signal
 * that may end a bound thread's recv runs exclusive (it takes the thread
 * off an endpoint, a lock taken before this one). */
long notification_decode(struct invocation *inv)
{
    struct notification *n = (struct notification *)inv->slot->cap.obj;
    long err = KEEL_E_OK;

    if (inv->label != KEEL_CALL_NOTIFICATION_SIGNAL && inv->label != KEEL_CALL_NOTIFICATION_POLL &&
        inv->label != KEEL_CALL_NOTIFICATION_WAIT)
        return KEEL_E_UNKNOWN_CALL;
    if (inv->label == KEEL_CALL_NOTIFICATION_SIGNAL && kernel_shared() && n->bound)
        return KEEL_E_RETRY;
    obj_lock(&n->hdr.lock, LOCK_WAITQ);
    if (inv->label == KEEL_CALL_NOTIFICATION_SIGNAL) {
        notification_raise(n, inv->slot->cap.badge ? inv->slot->cap.badge : 1);
    } else if (n->word || inv->label == KEEL_CALL_NOTIFICATION_POLL || inv->no_block) {
        if (!n->word && inv->label == KEEL_CALL_NOTIFICATION_WAIT) {
            err = KEEL_E_WOULD_BLOCK;
        } else {
            inv->res[0] = n->word;
            n->word = 0;
        }
    } else {
        inv->caller->state = THREAD_BLOCKED;
        inv->caller->blocked_on = n;
        inv->caller->wait_kind = WAIT_NTFN;
        list_push(&n->waiters, inv->caller);
        inv->blocked = true;
    }
    obj_unlock(&n->hdr.lock, LOCK_WAITQ);
    return err;
}
