/* Endpoints: bounded queues of small messages.  Sending never blocks: a
 * full queue is reported to the sender.  Receiving blocks unless asked not
 * to.  Fault messages, which the kernel sends on a thread's behalf, wait
 * for room instead of failing (the faulted thread waits with them). */
#include <keel/invoke.h>
#include <keel/sched.h>
#include <keel/string.h>
#include <keel/waitlist.h>

/* Hands a message to a receiver that was blocked in recv. */
static void deliver(struct tcb *r, const struct message *m)
{
    u64 res[KEEL_MSG_WORDS] = { m->badge, m->label, m->w[0], m->w[1], m->w[2], m->w[3] };

    arch_tcb_set_results(r, KEEL_E_OK, res);
    sched_make_runnable(r);
}

/* Puts a message on ep: to a waiting receiver, else in the queue.  False
 * when the queue is full. */
static bool ep_post(struct endpoint *ep, const struct message *m)
{
    struct tcb *r = list_pop(&ep->receivers);

    if (r) {
        deliver(r, m);
        return true;
    }
    if (ep->count == EP_QUEUE_LEN)
        return false;
    ep->queue[(ep->head + ep->count) % EP_QUEUE_LEN] = *m;
    ep->count++;
    return true;
}

static void fault_message(struct tcb *t, struct message *m)
{
    m->badge = t->fault_ep.cap.badge;
    m->label = KEEL_LABEL_FAULT;
    memcpy(m->w, t->fault, sizeof(m->w));
}

/* Room appeared: let a waiting fault message in. */
static void ep_admit_senders(struct endpoint *ep)
{
    while (ep->senders && ep->count < EP_QUEUE_LEN) {
        struct tcb *t = list_pop(&ep->senders);
        struct message m;
        fault_message(t, &m);
        ep_post(ep, &m);
        t->blocked_on = NULL; /* stays FAULTED until its handler resumes it */
    }
}

bool endpoint_send_fault(struct tcb *t)
{
    struct endpoint *ep = (struct endpoint *)t->fault_ep.cap.obj;
    struct message m;

    if (t->fault_ep.cap.type != KEEL_OBJ_ENDPOINT)
        return false;
    t->state = THREAD_FAULTED;
    fault_message(t, &m);
    if (!ep->senders && ep_post(ep, &m))
        return true;
    t->blocked_on = ep;
    t->wait_kind = WAIT_FAULT;
    list_push(&ep->senders, t);
    return true;
}

void endpoint_cancel_wait(struct tcb *t)
{
    struct endpoint *ep = t->blocked_on;

    if (!ep)
        return;
    if (t->wait_kind == WAIT_RECV)
        list_remove(&ep->receivers, t);
    else if (t->wait_kind == WAIT_FAULT)
        list_remove(&ep->senders, t);
    else if (t->wait_kind == WAIT_NTFN)
        notification_cancel_wait(t);
    t->blocked_on = NULL;
    t->wait_kind = WAIT_NONE;
}

void endpoint_destroy(struct endpoint *ep)
{
    struct tcb *t;
    u64 zero[KEEL_MSG_WORDS] = { 0 };

    while ((t = list_pop(&ep->receivers))) {
        arch_tcb_set_results(t, KEEL_E_REVOKED, zero);
        sched_make_runnable(t);
    }
    while ((t = list_pop(&ep->senders)))
        t->blocked_on = NULL; /* its fault stays unhandled: it stays FAULTED */
    ep->hdr.type = 0;
}

long decode_endpoint(struct invocation *inv)
{
    struct endpoint *ep = (struct endpoint *)inv->slot->cap.obj;

    switch (inv->label) {
    case KEEL_CALL_ENDPOINT_SEND: {
        struct message m = { inv->slot->cap.badge, inv->arg[0],
                             { inv->arg[1], inv->arg[2], inv->arg[3], inv->arg[4] } };
        if (ep->senders || !ep_post(ep, &m))
            return KEEL_E_FULL;
        return KEEL_E_OK;
    }
    case KEEL_CALL_ENDPOINT_RECV:
        if (inv->arg[0] & ~(u64)KEEL_RECV_NONBLOCK)
            return KEEL_E_INVALID_ARG;
        if (ep->count) {
            struct message *m = &ep->queue[ep->head];
            inv->res[0] = m->badge;
            inv->res[1] = m->label;
            memcpy(&inv->res[2], m->w, sizeof(m->w));
            ep->head = (ep->head + 1) % EP_QUEUE_LEN;
            ep->count--;
            ep_admit_senders(ep);
            return KEEL_E_OK;
        }
        if (inv->arg[0] & KEEL_RECV_NONBLOCK)
            return KEEL_E_WOULD_BLOCK;
        inv->caller->state = THREAD_BLOCKED;
        inv->caller->blocked_on = ep;
        inv->caller->wait_kind = WAIT_RECV;
        list_push(&ep->receivers, inv->caller);
        inv->blocked = true;
        return KEEL_E_OK;
    }
    return KEEL_E_UNKNOWN_CALL;
}
