/* FIFO lists of threads waiting on an object (endpoint, notification),
 * linked through tcb.rq_next, which a waiting thread does not otherwise use
 * (it is not on the run queue).  Under the lock of the list's owner. */
#ifndef KEEL_WAITLIST_H
#define KEEL_WAITLIST_H

#include <keel/object.h>

static inline void list_push(struct tcb **head, struct tcb *t)
{
    t->rq_next = NULL;
    while (*head)
        head = &(*head)->rq_next;
    *head = t;
}

static inline struct tcb *list_pop(struct tcb **head)
{
    struct tcb *t = *head;

    if (t) {
        *head = t->rq_next;
        t->rq_next = NULL;
    }
    return t;
}

static inline bool list_remove(struct tcb **head, struct tcb *t)
{
    for (; *head; head = &(*head)->rq_next) {
        if (*head == t) {
            *head = t->rq_next;
            t->rq_next = NULL;
            return true;
        }
    }
    return false;
}

/* A thread blocked in recv leaves its endpoint's receivers (under the
 * endpoint's lock, or exclusive).  Here rather than in endpoint.c because a
 * signal to the thread's bound notification ends the wait too
 * (notification.c), and notifications sit below endpoints. */
static inline void recv_wait_cancel(struct tcb *t)
{
    struct endpoint *ep = t->blocked_on;

    if (ep)
        list_remove(&ep->receivers, t);
    t->blocked_on = NULL;
    t->wait_kind = WAIT_NONE;
}

#endif
