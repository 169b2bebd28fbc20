/* Endpoints: bounded queues of small messages, the kernel's only way for
 * one thread to talk to another.
 *
 * - send never blocks: a full queue is reported (KEEL_E_FULL), and the
 *   sender may ask to be told through its bound notification when there is
 *   room again.  No message is ever dropped.
 * - call (a system-call invocation of an endpoint capability) is a send
 *   that carries a one-shot reply capability; the caller waits until that
 *   capability is used (or destroyed).  Its answer arrives in the same
 *   registers a kernel object's would.
 * - recv takes the oldest message, or blocks, or polls; a signal on the
 *   receiver's bound notification also ends it.
 * - Capabilities travel with messages: those named by words the call table
 *   marks cap<...> (kernel labels) or the label's capability mask (user
 *   labels).  In flight they live in the queued message's own slots.
 * - Faults are messages the kernel sends for a thread; they wait for room.
 *
 * Locking: with the objects lock shared, messages without capabilities
 * move under the endpoint's lock, calls and replies included: a reply
 * capability is put into a receiver's slot, and taken out by the reply,
 * under the capability locks (sched.h).  Anything else (capabilities, a
 * waiting fault or room request, a receiver with a bound notification)
 * returns KEEL_E_RETRY before changing anything and runs exclusive.
 */
#include <keel/invoke.h>
#include <keel/sched.h>
#include <keel/string.h>
#include <keel/waitlist.h>

static inline void ep_lock(struct endpoint *ep)
{
    obj_lock(&ep->hdr.lock, LOCK_WAITQ);
}

static inline void ep_unlock(struct endpoint *ep)
{
    obj_unlock(&ep->hdr.lock, LOCK_WAITQ);
}

static void msg_clear(struct message *m)
{
    for (u32 i = 0; i < MSG_CAPS; i++)
        slot_delete(&m->caps[i]);
    slot_delete(&m->reply);
    m->ncaps = 0;
    m->has_reply = 0;
}

/* Which words of a message are capabilities to transfer. */
static u32 cap_words(u64 label)
{
    u64 l = label & KEEL_LABEL_MASK;
    const struct call_desc *d = l < KEEL_LABEL_USER ? call_describe(l) : NULL;
    u32 mask = 0;

    if (d) {
        for (u32 i = 0; i < d->nargs; i++)
            mask |= d->args[i].type ? 1u << i : 0;
    } else if (l >= KEEL_LABEL_USER) {
        mask = (u32)(label >> 48) & 0x3f;
    }
    return mask;
}

/* What a send and a call check before anything is queued: the right to
 * send, and the sender's capabilities for the marked words (a message that
 * carries any is made again with the objects lock exclusive). */
static long collect_caps(struct tcb *t, struct slot *ep, u64 label, const u64 *w,
                         struct slot **src, u8 *word, u32 *n)
{
    u32 mask = cap_words(label);

    if (!(ep->cap.rights & KEEL_RIGHT_WRITE))
        return KEEL_E_NO_RIGHTS;
    if (kernel_shared() && mask)
        return KEEL_E_RETRY;
    *n = 0;
    for (u32 i = 0; i < KEEL_MSG_WORDS; i++) {
        if (!(mask & (1u << i)))
            continue;
        if (*n == MSG_CAPS)
            return KEEL_E_INVALID_ARG;
        if (!(ep->cap.rights & KEEL_RIGHT_GRANT))
            return KEEL_E_NO_RIGHTS;
        long err = 0;
        struct slot *s = tcb_lookup_slot(t, w[i], &err);
        if (!s)
            return err;
        if (!cap_is_derivable(&s->cap))
            return KEEL_E_INVALID_ARG;
        src[*n] = s;
        word[*n] = (u8)i;
        (*n)++;
    }
    return KEEL_E_OK;
}

/* A copy of src's capability into dst (a child, so revoke reaches it). */
static void transfer_copy(struct slot *dst, struct slot *src)
{
    struct cap c = src->cap;

    c.flags &= (u8)~CAP_MAPPED;
    c.a = c.b = 0;
    slot_insert_child(src, dst, &c);
}

void make_reply_cap(struct slot *dst, struct tcb *caller)
{
    struct cap c = { .type = KEEL_OBJ_REPLY, .rights = KEEL_RIGHT_WRITE, .obj = (uptr)caller };

    slot_insert_child(NULL, dst, &c);
    caller->reply_slot = dst;
}

/* Under its slot's capability lock when shared. */
struct slot *window_slot(struct tcb *r, u64 window, u32 i)
{
    struct slot *s = window ? cnode_slot(&r->cspace.cap, window + i) : NULL;

    return s && slot_is_free(s) ? s : NULL;
}

/* Gives a receiver a message whose capabilities are still in the sender's
 * slots (direct hand-over) or in a queued message (src_msg). */
static void deliver(struct tcb *r, u64 window, u64 badge, u64 label, const u64 *words,
                    struct slot **caps, const u8 *cap_word, u32 ncaps, struct tcb *caller,
                    struct message *src_msg)
{
    u64 w[KEEL_MSG_WORDS];
    u64 info = 0;

    memcpy(w, words, sizeof(w));
    if (caller || (src_msg && src_msg->has_reply && src_msg->reply.cap.type)) {
        /* A reply capability has no links: the locks of its two slots. */
        struct slot *w0 = window ? cnode_slot(&r->cspace.cap, window) : NULL;
        u32 da = caps_stripe((u64)w0), rb = src_msg ? caps_stripe((u64)&src_msg->reply) : da;
        caps_lock_pair(da, rb);
        struct slot *dst = window_slot(r, window, 0);
        if (dst && src_msg) {
            slot_move(dst, &src_msg->reply); /* slot_move repoints the caller */
            info |= KEEL_INFO_REPLY;
        } else if (dst) {
            make_reply_cap(dst, caller);
            info |= KEEL_INFO_REPLY;
        } else {
            info |= KEEL_INFO_LOST; /* the caller learns through KEEL_E_REVOKED */
            if (src_msg)
                slot_delete(&src_msg->reply);
            else
                caller_revoke_wait(caller);
        }
        caps_unlock_pair(da, rb);
    }
    for (u32 i = 0; i < ncaps; i++) {
        struct slot *dst = window_slot(r, window, 1 + i);
        if (src_msg && !caps[i]->cap.type) {
            /* revoked in flight */
            info |= KEEL_INFO_LOST;
            w[cap_word[i]] = 0;
            continue;
        }
        if (!dst) {
            info |= KEEL_INFO_LOST;
            w[cap_word[i]] = 0;
            if (src_msg)
                slot_delete(caps[i]);
            continue;
        }
        if (src_msg)
            slot_move(dst, caps[i]);
        else
            transfer_copy(dst, caps[i]);
        w[cap_word[i]] = window + 1 + i;
        info += 1u << 8;
    }
    arch_tcb_set_recv(r, KEEL_E_OK, badge, label, w, info);
}

static void wake_receiver(struct tcb *r)
{
    r->recv_window = 0;
    sched_make_runnable(r);
}

/* Tells one sender that asked that there is room again. */
static void ep_room_appeared(struct endpoint *ep)
{
    struct tcb *t = ep->room;

    if (!t)
        return;
    ep->room = t->room_next;
    t->room_next = NULL;
    t->room_ep = NULL;
    if (t->bound)
        notification_raise(t->bound, KEEL_ROOM_BIT);
}

void tcb_cancel_room_wait(struct tcb *t)
{
    struct endpoint *ep = t->room_ep;

    if (!ep)
        return;
    for (struct tcb **p = &ep->room; *p; p = &(*p)->room_next) {
        if (*p == t) {
            *p = t->room_next;
            break;
        }
    }
    t->room_next = NULL;
    t->room_ep = NULL;
}

/* Posts a message: straight to a waiting receiver, else into the queue.
 * KEEL_E_FULL when there is no room. */
static long ep_post(struct endpoint *ep, u64 badge, u64 label, const u64 *w, struct slot **caps,
                    const u8 *cap_word, u32 ncaps, struct tcb *caller)
{
    struct tcb *r = list_pop(&ep->receivers);

    if (r) {
        deliver(r, r->recv_window, badge, label, w, caps, cap_word, ncaps, caller, NULL);
        wake_receiver(r);
        return KEEL_E_OK;
    }
    if (ep->count == EP_QUEUE_LEN || ep->senders)
        return KEEL_E_FULL;
    struct message *m = &ep->queue[(ep->head + ep->count) % EP_QUEUE_LEN];
    m->badge = badge;
    m->label = label;
    memcpy(m->w, w, sizeof(m->w));
    m->ncaps = ncaps;
    for (u32 i = 0; i < ncaps; i++) {
        m->cap_word[i] = cap_word[i];
        transfer_copy(&m->caps[i], caps[i]);
    }
    m->has_reply = caller != NULL;
    if (caller)
        make_reply_cap(&m->reply, caller);
    ep->count++;
    return KEEL_E_OK;
}

long endpoint_send(struct tcb *t, struct slot *s, u64 label, const u64 *w)
{
    struct endpoint *ep = (struct endpoint *)s->cap.obj;
    struct slot *caps[MSG_CAPS];
    u8 cap_word[MSG_CAPS];
    u32 n;

    long err = slot_type_check(s, KEEL_OBJ_ENDPOINT);
    if (err)
        return err;
    err = collect_caps(t, s, label, w, caps, cap_word, &n);
    if (err)
        return err;
    ep_lock(ep);
    err = ep_post(ep, s->cap.badge, label & ~KEEL_SEND_NOTIFY_ROOM, w, caps, cap_word, n, NULL);
    if (err == KEEL_E_FULL && (label & KEEL_SEND_NOTIFY_ROOM) && t->room_ep != ep) {
        if (kernel_shared()) { /* room requests link threads across endpoints */
            ep_unlock(ep);
            return KEEL_E_RETRY;
        }
        tcb_cancel_room_wait(t);
        t->room_ep = ep;
        t->room_next = ep->room;
        ep->room = t;
    }
    ep_unlock(ep);
    return err;
}

long endpoint_call(struct tcb *t, struct slot *s, u64 label, const u64 *w, bool *blocked)
{
    struct endpoint *ep = (struct endpoint *)s->cap.obj;
    struct slot *caps[MSG_CAPS];
    u8 cap_word[MSG_CAPS];
    u32 n;

    long err = collect_caps(t, s, label, w, caps, cap_word, &n);
    if (err)
        return err;
    /* Blocked first: delivery may already revoke the wait, and a reply
     * from another CPU may follow as soon as the endpoint's lock goes. */
    t->state = THREAD_BLOCKED;
    t->wait_kind = WAIT_REPLY;
    t->blocked_on = NULL;
    ep_lock(ep);
    err = ep_post(ep, s->cap.badge, label, w, caps, cap_word, n, t);
    ep_unlock(ep);
    if (err) {
        t->state = THREAD_RUNNABLE;
        t->wait_kind = WAIT_NONE;
        return err;
    }
    *blocked = true;
    return KEEL_E_OK;
}

long endpoint_recv(struct tcb *t, struct slot *s, u64 flags, u64 window, bool *blocked)
{
    struct endpoint *ep = (struct endpoint *)s->cap.obj;
    u64 zero[KEEL_MSG_WORDS] = { 0 };
    long type_err = slot_type_check(s, KEEL_OBJ_ENDPOINT);

    if (type_err)
        return type_err;
    if (!(s->cap.rights & KEEL_RIGHT_READ))
        return KEEL_E_NO_RIGHTS;
    if (flags & ~(u64)KEEL_RECV_NONBLOCK)
        return KEEL_E_INVALID_ARG;
    if (window && (!cnode_slot(&t->cspace.cap, window) ||
                   !cnode_slot(&t->cspace.cap, window + MSG_CAPS)))
        return KEEL_E_INVALID_ARG;
    long err = window ? window_reclaim(t, window) : KEEL_E_OK; /* grace.c */
    if (err)
        return err;
    if (kernel_shared() && t->bound)
        return KEEL_E_RETRY; /* a signal may end the wait: notification.c */
    if (t->bound && t->bound->word) {
        u64 bits = t->bound->word;
        t->bound->word = 0;
        arch_tcb_set_recv(t, KEEL_E_OK, bits, KEEL_LABEL_NOTIFY, zero, 0);
        *blocked = true; /* results already in place */
        return KEEL_E_OK;
    }
    ep_lock(ep);
    if (ep->count) {
        struct message *m = &ep->queue[ep->head];
        struct slot *caps[MSG_CAPS] = { &m->caps[0], &m->caps[1], &m->caps[2] };
        if (kernel_shared() && (m->ncaps || ep->senders || ep->room)) {
            ep_unlock(ep);
            return KEEL_E_RETRY;
        }
        deliver(t, window, m->badge, m->label, m->w, caps, m->cap_word, m->ncaps, NULL, m);
        msg_clear(m);
        ep->head = (ep->head + 1) % EP_QUEUE_LEN;
        ep->count--;
        ep_admit_faults(ep);
        ep_room_appeared(ep);
        ep_unlock(ep);
        *blocked = true;
        return KEEL_E_OK;
    }
    if (flags & KEEL_RECV_NONBLOCK) {
        ep_unlock(ep);
        return KEEL_E_WOULD_BLOCK;
    }
    /* A sender on another CPU may pop t as soon as the lock goes, before
     * this CPU's exit path has looked at t: sched.c hands it over. */
    t->state = THREAD_BLOCKED;
    t->blocked_on = ep;
    t->wait_kind = WAIT_RECV;
    t->recv_window = window;
    list_push(&ep->receivers, t);
    ep_unlock(ep);
    *blocked = true;
    return KEEL_E_OK;
}

/* -- replies ------------------------------------------------------------------ */

/* The caller's reply capability is gone without a reply. */
void caller_revoke_wait(struct tcb *caller)
{
    u64 zero[KEEL_MSG_WORDS] = { 0 };

    caller->reply_slot = NULL;
    if (caller->state == THREAD_BLOCKED && caller->wait_kind == WAIT_REPLY) {
        arch_tcb_set_results(caller, KEEL_E_REVOKED, zero);
        sched_make_runnable(caller);
    }
}

void reply_cap_deleted(struct slot *s)
{
    struct tcb *caller = (struct tcb *)s->cap.obj;

    if (caller->reply_slot == s)
        caller_revoke_wait(caller);
}

void reply_cap_moved(struct slot *s)
{
    ((struct tcb *)s->cap.obj)->reply_slot = s;
}

/* Shared holders may run this: the slot's capability lock makes taking the
 * reply capability one step, so of two replies through the same slot (two
 * threads sharing a table) only one wakes the caller.  Whoever empties the
 * slot owns the caller's wake-up: every other way to end the wait runs
 * exclusive. */
long reply_invoke(struct tcb *t, struct slot *s, u64 err, const u64 *res)
{
    (void)t;
    long type_err = slot_type_check(s, KEEL_OBJ_REPLY);
    if (type_err)
        return type_err;
    if (err >= KEEL_NERRORS)
        return KEEL_E_INVALID_ARG;
    u32 st = caps_stripe((u64)s); /* a reply capability has no links */
    caps_lock_pair(st, st);
    if (s->cap.type != KEEL_OBJ_REPLY) {
        caps_unlock_pair(st, st);
        return KEEL_E_INVALID_CAP; /* the other reply won */
    }
    struct tcb *caller = (struct tcb *)s->cap.obj;
    caller->reply_slot = NULL; /* consumed: deleting the slot must not revoke */
    slot_delete(s);
    caps_unlock_pair(st, st);
    arch_tcb_set_results(caller, (long)err, res);
    sched_make_runnable(caller);
    return KEEL_E_OK;
}

/* -- faults ------------------------------------------------------------------- */

static void fault_words(struct tcb *t, u64 *w)
{
    memset(w, 0, KEEL_MSG_WORDS * sizeof(u64));
    memcpy(w, t->fault, sizeof(t->fault));
}

/* Room appeared: let waiting fault messages in, oldest first. */
void ep_admit_faults(struct endpoint *ep)
{
    while (ep->senders && ep->count < EP_QUEUE_LEN) {
        struct tcb *t = list_pop(&ep->senders);
        u64 w[KEEL_MSG_WORDS];
        fault_words(t, w);
        struct tcb *waiting = ep->senders;
        ep->senders = NULL; /* ep_post refuses while fault senders wait */
        ep_post(ep, t->fault_ep.cap.badge, KEEL_LABEL_FAULT, w, NULL, NULL, 0, NULL);
        ep->senders = waiting;
        t->blocked_on = NULL; /* stays FAULTED until its handler resumes it */
        t->wait_kind = WAIT_NONE;
    }
}

bool endpoint_send_fault(struct tcb *t)
{
    struct endpoint *ep = (struct endpoint *)t->fault_ep.cap.obj;
    u64 w[KEEL_MSG_WORDS];

    if (t->fault_ep.cap.type != KEEL_OBJ_ENDPOINT)
        return false;
    t->state = THREAD_FAULTED;
    fault_words(t, w);
    if (ep_post(ep, t->fault_ep.cap.badge, KEEL_LABEL_FAULT, w, NULL, NULL, 0, NULL) == 0)
        return true;
    t->blocked_on = ep;
    t->wait_kind = WAIT_FAULT;
    list_push(&ep->senders, t);
    return true;
}

void endpoint_cancel_wait(struct tcb *t)
{
    struct endpoint *ep = t->blocked_on;

    if (t->wait_kind == WAIT_REPLY) {
        if (t->reply_slot) {
            struct slot *s = t->reply_slot;
            t->reply_slot = NULL;
            slot_delete(s);
        }
    } else if (t->wait_kind == WAIT_RECV) {
        recv_wait_cancel(t);
    } else if (t->wait_kind == WAIT_FAULT && ep) {
        list_remove(&ep->senders, t);
    }
    t->blocked_on = NULL;
    t->wait_kind = WAIT_NONE;
}

bool endpoint_destroy_idle(struct kobj *o)
{
    struct endpoint *ep = (struct endpoint *)o;

    ep_lock(ep);
    bool idle = !ep->count && !ep->receivers && !ep->senders && !ep->room;
    if (idle)
        ep->hdr.type = 0;
    ep_unlock(ep);
    return idle;
}

void endpoint_destroy(struct kobj *o)
{
    struct endpoint *ep = (struct endpoint *)o;
    struct tcb *t;
    u64 zero[KEEL_MSG_WORDS] = { 0 };

    while (ep->count) {
        msg_clear(&ep->queue[ep->head]); /* callers in it learn: revoked */
        ep->head = (ep->head + 1) % EP_QUEUE_LEN;
        ep->count--;
    }
    while ((t = list_pop(&ep->receivers))) {
        arch_tcb_set_results(t, KEEL_E_REVOKED, zero);
        wake_receiver(t);
    }
    while ((t = list_pop(&ep->senders))) {
        t->blocked_on = NULL; /* its fault stays unhandled: it stays FAULTED */
        t->wait_kind = WAIT_NONE;
    }
    while (ep->room)
        tcb_cancel_room_wait(ep->room);
    ep->hdr.type = 0;
}
