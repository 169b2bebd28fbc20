/* The in-guest suite: messaging - call and reply, capabilities passed in
 * messages, notifications bound to threads. */
#include "../lib/names.h"
#include "suite.h"

/* -- call and reply ----------------------------------------------------------- */

/* A server: answers one call with (error a->c, result w0 * 2). */
static void body_server_once(struct thread *t)
{
    struct keel_msg m;
    keel_word_t win = t->b, res[KEEL_MSG_WORDS] = { 0 };

    if (keel_recv(t->a, 0, win, &m) || !(m.info & KEEL_INFO_REPLY)) {
        t->value = -1;
        return;
    }
    res[0] = m.w[0] * 2;
    t->value = keel_reply(win, (long)t->c, res);
    /* used: a second reply finds no capability */
    if (keel_reply(win, 0, res) != KEEL_E_INVALID_CAP)
        t->value = -2;
}

static int start_server(struct thread *t, keel_word_t ep, keel_word_t err)
{
    t->a = ep;
    t->b = window_alloc();
    t->c = err;
    t->value = 99;
    return (int)spawn(t, body_server_once, 0);
}

static int t_call_reply(void)
{
    struct thread t;
    keel_word_t ep = make_obj(KEEL_OBJ_ENDPOINT, 0), r;

    OK(start_server(&t, ep, 0));
    OK(call_words(ep, USER(5), 21, 0, &r));
    EXPECT(r == 42);
    EXPECT(wait_done(&t));
    EXPECT(t.value == 0);
    return 0;
}

static int t_reply_carries_error(void)
{
    struct thread t;
    keel_word_t ep = make_obj(KEEL_OBJ_ENDPOINT, 0);

    OK(start_server(&t, ep, KEEL_E_INVALID_ARG));
    EXPECT_ERR(call_words(ep, USER(5), 1, 0, 0), KEEL_E_INVALID_ARG);
    EXPECT(wait_done(&t) && t.value == 0);
    return 0;
}

static void body_server_misbehaves(struct thread *t)
{
    struct keel_msg m;
    keel_word_t win = t->b, res[KEEL_MSG_WORDS] = { 0 }, other = win + 3;

    if (keel_recv(t->a, 0, win, &m))
        return;
    t->value = keel_reply(win, 1000, res) == KEEL_E_INVALID_ARG;                   /* bad code */
    t->value &= keel_cnode_copy(CN, other, CN, win, KEEL_RIGHT_ALL) == KEEL_E_INVALID_ARG;
    t->value &= keel_cnode_move(CN, other, CN, win) == KEEL_E_OK;                  /* movable */
    t->value &= keel_reply(other, 0, res) == KEEL_E_OK;
}

static int t_reply_cap_rules(void)
{
    struct thread t;
    keel_word_t ep = make_obj(KEEL_OBJ_ENDPOINT, 0);

    t.a = ep;
    t.b = window_alloc();
    t.value = 0;
    OK(spawn(&t, body_server_misbehaves, 0));
    OK(call_words(ep, USER(1), 0, 0, 0));
    EXPECT(wait_done(&t) && t.value == 1);
    return 0;
}

static void body_server_drops(struct thread *t)
{
    struct keel_msg m;

    if (t->c)
        keel_recv(t->a, 0, 0, &m); /* no window: the reply capability is dropped */
    else if (!keel_recv(t->a, 0, t->b, &m))
        keel_cnode_delete(CN, t->b);
}

static int t_dropped_reply_revokes_call(void)
{
    struct thread t, u;
    keel_word_t ep = make_obj(KEEL_OBJ_ENDPOINT, 0);

    t.a = ep;
    t.b = window_alloc();
    t.c = 0;
    OK(spawn(&t, body_server_drops, 0));
    EXPECT_ERR(call_words(ep, USER(1), 0, 0, 0), KEEL_E_REVOKED);
    u.a = ep;
    u.c = 1;
    OK(spawn(&u, body_server_drops, 0));
    EXPECT_ERR(call_words(ep, USER(1), 0, 0, 0), KEEL_E_REVOKED);
    EXPECT(wait_done(&t) && wait_done(&u));
    return 0;
}

static int t_call_full_queue(void)
{
    keel_word_t ep = make_obj(KEEL_OBJ_ENDPOINT, 0);

    for (int i = 0; i < 16; i++)
        OK(ep_send(ep, 1, 0, 0, 0, 0));
    EXPECT_ERR(call_words(ep, USER(1), 0, 0, 0), KEEL_E_FULL); /* not blocked */
    EXPECT_ERR(ep_send(ep, 1, 0, 0, 0, 0), KEEL_E_FULL);
    return 0;
}

static int t_call_needs_write(void)
{
    keel_word_t ep = make_obj(KEEL_OBJ_ENDPOINT, 0), ro = slot_alloc();

    OK(keel_cnode_copy(CN, ro, CN, ep, KEEL_RIGHT_READ));
    EXPECT_ERR(call_words(ro, USER(1), 0, 0, 0), KEEL_E_NO_RIGHTS);
    return 0;
}

/* -- capability transfer -------------------------------------------------------- */

static int t_transfer_capability(void)
{
    keel_word_t ep = make_obj(KEEL_OBJ_ENDPOINT, 0), n = make_obj(KEEL_OBJ_NOTIFICATION, 0);
    keel_word_t win = window_alloc(), bits, type;
    struct keel_msg m;

    OK(keel_send(ep, USER(7) | KEEL_LABEL_CAPS(1 << 1), 5, n, 6, 0, 0, 0));
    OK(keel_recv(ep, 0, win, &m));
    EXPECT(m.label == (USER(7) | KEEL_LABEL_CAPS(1 << 1)));
    EXPECT(KEEL_INFO_CAPS(m.info) == 1 && !(m.info & KEEL_INFO_REPLY));
    EXPECT(m.w[0] == 5 && m.w[1] == win + 1 && m.w[2] == 6);
    OK(keel_cnode_identify(CN, win + 1, &type, 0, 0));
    EXPECT(type == KEEL_OBJ_NOTIFICATION);
    OK(keel_notification_signal(win + 1)); /* the same object */
    OK(keel_notification_poll(n, &bits));
    EXPECT(bits == 1);
    return 0;
}

static int t_transfer_errors(void)
{
    keel_word_t ep = make_obj(KEEL_OBJ_ENDPOINT, 0), n = make_obj(KEEL_OBJ_NOTIFICATION, 0);
    keel_word_t nogrant = slot_alloc();

    OK(keel_cnode_copy(CN, nogrant, CN, ep, KEEL_RIGHT_READ | KEEL_RIGHT_WRITE));
    EXPECT_ERR(keel_send(nogrant, USER(1) | KEEL_LABEL_CAPS(1), n, 0, 0, 0, 0, 0),
               KEEL_E_NO_RIGHTS);
    EXPECT_ERR(keel_send(ep, USER(1) | KEEL_LABEL_CAPS(1), slot_alloc(), 0, 0, 0, 0, 0),
               KEEL_E_INVALID_CAP);
    EXPECT_ERR(keel_send(ep, USER(1) | KEEL_LABEL_CAPS(0xf), n, n, n, n, 0, 0),
               KEEL_E_INVALID_ARG);
    EXPECT_ERR(keel_send(ep, USER(1) | KEEL_LABEL_CAPS(1), suite_untyped, 0, 0, 0, 0, 0),
               KEEL_E_INVALID_ARG);
    EXPECT_ERR(keel_recv(ep, KEEL_RECV_NONBLOCK, 0, 0), KEEL_E_WOULD_BLOCK); /* nothing sent */
    return 0;
}

static int t_transfer_window_full(void)
{
    keel_word_t ep = make_obj(KEEL_OBJ_ENDPOINT, 0), n = make_obj(KEEL_OBJ_NOTIFICATION, 0);
    keel_word_t win = window_alloc();
    struct keel_msg m;

    OK(keel_cnode_copy(CN, win + 1, CN, n, KEEL_RIGHT_ALL)); /* occupied */
    OK(keel_send(ep, USER(1) | KEEL_LABEL_CAPS(1), n, 0, 0, 0, 0, 0));
    OK(keel_recv(ep, 0, win, &m));
    EXPECT(m.info & KEEL_INFO_LOST);
    EXPECT(m.w[0] == 0 && KEEL_INFO_CAPS(m.info) == 0);
    EXPECT_ERR(keel_recv(ep, 0, 1ul << 30, 0), KEEL_E_INVALID_ARG);
    return 0;
}

static int t_transfer_revoked_in_flight(void)
{
    keel_word_t ep = make_obj(KEEL_OBJ_ENDPOINT, 0), n = make_obj(KEEL_OBJ_NOTIFICATION, 0);
    keel_word_t win = window_alloc(), type;
    struct keel_msg m;

    OK(keel_send(ep, USER(1) | KEEL_LABEL_CAPS(1), n, 0, 0, 0, 0, 0));
    OK(keel_cnode_revoke(CN, n)); /* reaches the copy in the queue */
    OK(keel_recv(ep, 0, win, &m));
    EXPECT((m.info & KEEL_INFO_LOST) && m.w[0] == 0);
    OK(keel_cnode_identify(CN, win + 1, &type, 0, 0));
    EXPECT(type == 0);
    return 0;
}

/* A name service that grants a driver's capability and sees the driver die
 * (its endpoint revoked) before the client receives the grant. */
static void body_ns_grant_revoked(struct thread *t)
{
    struct keel_msg m;
    keel_word_t win = t->b, tmp = win + 2, res[KEEL_MSG_WORDS] = { 0 };

    if (keel_recv(t->a, 0, win, &m) || !(m.info & KEEL_INFO_REPLY) ||
        KEEL_INFO_CAPS(m.info) != 1) {
        t->value = -1;
        return;
    }
    if (keel_cnode_mint(CN, tmp, CN, t->c, KEEL_RIGHT_WRITE | KEEL_RIGHT_GRANT, 7) ||
        keel_send(win + 1, NS_GRANT, tmp, 0, 0, 0, 0, 0) || keel_cnode_revoke(CN, t->c)) {
        t->value = -2;
        return;
    }
    keel_cnode_delete(CN, tmp);
    keel_cnode_delete(CN, win + 1);
    t->value = keel_reply(win, 0, res);
}

/* The client is told the driver went away (and so retries), not that the
 * name service is broken. */
static int t_lookup_grant_revoked_in_flight(void)
{
    struct thread t;
    struct service s;

    memset(&s, 0, sizeof(s));
    s.ns = make_obj(KEEL_OBJ_ENDPOINT, 0);
    s.inbox = make_obj(KEEL_OBJ_ENDPOINT, 0);
    s.window = slot_alloc_range(4);
    ns_pack("gone0", s.name);
    t.a = s.ns;
    t.b = window_alloc();
    t.c = make_obj(KEEL_OBJ_ENDPOINT, 0);
    t.value = 99;
    OK(spawn(&t, body_ns_grant_revoked, 0));
    EXPECT_ERR(service_connect(&s), KEEL_E_REVOKED);
    EXPECT(wait_done(&t) && t.value == 0);
    EXPECT(!s.open);
    return 0;
}

static int t_badges_name_clients(void)
{
    keel_word_t ep = make_obj(KEEL_OBJ_ENDPOINT, 0), a = slot_alloc(), b = slot_alloc(), badge;

    OK(keel_cnode_mint(CN, a, CN, ep, KEEL_RIGHT_WRITE, 100));
    OK(keel_cnode_mint(CN, b, CN, ep, KEEL_RIGHT_WRITE, 200));
    OK(ep_send(b, 1, 0, 0, 0, 0));
    OK(ep_send(a, 1, 0, 0, 0, 0));
    OK(ep_recv(ep, 0, &badge, 0, 0, 0, 0, 0));
    EXPECT(badge == 200);
    OK(ep_recv(ep, 0, &badge, 0, 0, 0, 0, 0));
    EXPECT(badge == 100);
    return 0;
}

static int t_six_words(void)
{
    keel_word_t ep = make_obj(KEEL_OBJ_ENDPOINT, 0);
    struct keel_msg m;

    OK(keel_send(ep, USER(3), 1, 2, 3, 4, 5, 6));
    OK(keel_recv(ep, 0, 0, &m));
    for (int i = 0; i < 6; i++)
        EXPECT(m.w[i] == (keel_word_t)i + 1);
    return 0;
}

/* -- notifications with endpoints ------------------------------------------------------ */

static void body_recv_bound(struct thread *t)
{
    struct keel_msg m;

    keel_tcb_bind_notification(t->tcb, t->b);
    t->value = 1;
    if (keel_recv(t->a, 0, 0, &m) == KEEL_E_OK && m.label == KEEL_LABEL_NOTIFY)
        t->value = (long)m.badge;
}

static int t_bound_notification_ends_recv(void)
{
    struct thread t;
    keel_word_t n = make_obj(KEEL_OBJ_NOTIFICATION, 0), s = slot_alloc();

    t.a = make_obj(KEEL_OBJ_ENDPOINT, 0);
    t.b = n;
    t.value = 0;
    OK(keel_cnode_mint(CN, s, CN, n, KEEL_RIGHT_WRITE, 0x30));
    OK(spawn(&t, body_recv_bound, 0));
    EXPECT(wait_blocked(&t)); /* in recv, after binding */
    OK(keel_notification_signal(s));
    EXPECT(wait_done(&t));
    EXPECT(t.value == 0x30);
    return 0;
}

static int t_bound_notification_pending(void)
{
    keel_word_t n = make_obj(KEEL_OBJ_NOTIFICATION, 0), ep = make_obj(KEEL_OBJ_ENDPOINT, 0);
    struct keel_msg m;

    OK(keel_tcb_bind_notification(KEEL_SLOT_TCB, n));
    OK(keel_notification_signal(n));
    OK(keel_recv(ep, 0, 0, &m));
    EXPECT(m.label == KEEL_LABEL_NOTIFY && m.badge == 1);
    OK(ep_send(ep, 4, 0, 0, 0, 0));
    keel_word_t l;
    OK(ep_recv(ep, 0, 0, &l, 0, 0, 0, 0)); /* messages still come through */
    EXPECT(l == 4);
    keel_word_t other = make_obj(KEEL_OBJ_TCB, 0);
    EXPECT_ERR(keel_tcb_bind_notification(other, n), KEEL_E_BAD_STATE);
    EXPECT_ERR(keel_tcb_bind_notification(other, ep), KEEL_E_WRONG_TYPE);
    OK(keel_tcb_bind_notification(KEEL_SLOT_TCB, 0));
    OK(keel_tcb_bind_notification(other, n));
    return 0;
}

static int t_told_when_room(void)
{
    keel_word_t n = make_obj(KEEL_OBJ_NOTIFICATION, 0), ep = make_obj(KEEL_OBJ_ENDPOINT, 0);
    keel_word_t bits;

    OK(keel_tcb_bind_notification(KEEL_SLOT_TCB, n));
    for (int i = 0; i < 16; i++)
        OK(ep_send(ep, 1, 0, 0, 0, 0));
    EXPECT_ERR(keel_send(ep, USER(1) | KEEL_SEND_NOTIFY_ROOM, 0, 0, 0, 0, 0, 0), KEEL_E_FULL);
    OK(keel_notification_poll(n, &bits));
    EXPECT(bits == 0);
    OK(ep_recv(ep, 0, 0, 0, 0, 0, 0, 0));
    OK(keel_notification_poll(n, &bits));
    EXPECT(bits == KEEL_ROOM_BIT);
    OK(ep_send(ep, 1, 0, 0, 0, 0));
    OK(keel_tcb_bind_notification(KEEL_SLOT_TCB, 0));
    return 0;
}

static void body_call_forever(struct thread *t)
{
    t->value = call_words(t->a, USER(1), 0, 0, 0);
}

static int t_revoked_endpoint_with_waiters(void)
{
    struct thread rx, caller;
    keel_word_t ep = make_obj(KEEL_OBJ_ENDPOINT, 0), ep2 = make_obj(KEEL_OBJ_ENDPOINT, 0);

    rx.a = ep;
    rx.value = -1;
    caller.a = ep2;
    caller.value = -1;
    OK(spawn(&rx, body_call_forever, 0));
    OK(spawn(&caller, body_call_forever, 0));
    EXPECT(wait_blocked(&rx) && wait_blocked(&caller)); /* their calls are queued */
    OK(keel_cnode_delete(CN, ep));  /* rx's call is queued there */
    OK(keel_cnode_delete(CN, ep2)); /* so is caller's */
    EXPECT(wait_done(&rx) && wait_done(&caller));
    EXPECT(rx.value == KEEL_E_REVOKED && caller.value == KEEL_E_REVOKED);
    return 0;
}

static void body_recv_any(struct thread *t)
{
    t->value = keel_recv(t->a, 0, 0, 0);
}

static int t_deleted_endpoint_wakes_receivers(void)
{
    struct thread a, b;
    keel_word_t ep = make_obj(KEEL_OBJ_ENDPOINT, 0);

    a.a = b.a = ep;
    OK(spawn(&a, body_recv_any, 0));
    OK(spawn(&b, body_recv_any, 0));
    EXPECT(wait_blocked(&a) && wait_blocked(&b));
    OK(keel_cnode_revoke(CN, ep));
    OK(keel_cnode_delete(CN, ep));
    EXPECT(wait_done(&a) && wait_done(&b));
    EXPECT(a.value == KEEL_E_REVOKED && b.value == KEEL_E_REVOKED);
    return 0;
}

static int t_suspended_caller_loses_reply(void)
{
    struct thread caller;
    keel_word_t ep = make_obj(KEEL_OBJ_ENDPOINT, 0), win = window_alloc();
    struct keel_msg m;

    caller.a = ep;
    caller.value = -1;
    OK(spawn(&caller, body_call_forever, 0));
    EXPECT(wait_blocked(&caller)); /* its call is queued */
    OK(keel_tcb_suspend(caller.tcb));
    OK(keel_recv(ep, 0, win, &m));
    EXPECT(!(m.info & KEEL_INFO_REPLY)); /* the reply capability went with the wait */
    OK(keel_cnode_delete(CN, caller.tcb));
    return 0;
}

const struct test msg_tests[] = {
#define T(name) { #name, t_##name }
    T(call_reply), T(reply_carries_error), T(reply_cap_rules), T(dropped_reply_revokes_call),
    T(call_full_queue), T(call_needs_write), T(transfer_capability), T(transfer_errors),
    T(transfer_window_full), T(transfer_revoked_in_flight), T(lookup_grant_revoked_in_flight),
    T(badges_name_clients), T(six_words),
    T(bound_notification_ends_recv), T(bound_notification_pending), T(told_when_room),
    T(revoked_endpoint_with_waiters), T(deleted_endpoint_wakes_receivers),
    T(suspended_caller_loses_reply),
#undef T
};
const unsigned long msg_tests_count = sizeof(msg_tests) / sizeof(msg_tests[0]);
