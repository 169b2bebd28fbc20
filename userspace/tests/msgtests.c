/* The in-guest suite, part two: messaging, batches, the trace and fault
 * injection shims, and the shared-memory channel library. */
#include "../lib/channel.h"
#include "suite.h"

#define USER(l) (KEEL_LABEL_USER + (l))

/* A receive window: its slot and the KEEL_MSG_CAPS after it, for
 * capabilities that come with a message. */
static keel_word_t window_alloc(void)
{
    return slot_alloc_range(KEEL_MSG_CAPS + 1);
}

static long call_words(keel_word_t cap, keel_word_t label, keel_word_t a0, keel_word_t a1,
                       keel_word_t *r0)
{
    keel_word_t in[KEEL_MSG_WORDS] = { a0, a1 }, out[KEEL_MSG_WORDS];
    long err = keel_call(cap, label, in, out);

    if (r0)
        *r0 = out[0];
    return err;
}

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

/* -- batches ----------------------------------------------------------------------------- */

static struct keel_call_rec recs[KEEL_BATCH_MAX + 1];

static int t_batch_all_ok(void)
{
    struct keel_batch b = { recs, 0, KEEL_BATCH_MAX };
    keel_word_t n = slot_alloc(), done;

    keel_batch_untyped_retype(&b, suite_untyped, KEEL_OBJ_NOTIFICATION, 0, CN, n, 1);
    keel_batch_notification_signal(&b, n);
    keel_batch_notification_poll(&b, n);
    keel_batch_cnode_identify(&b, CN, n);
    OK(keel_batch_run(&b, KEEL_BATCH_STOP, &done));
    EXPECT(done == 4);
    for (int i = 0; i < 4; i++)
        EXPECT(recs[i].err == KEEL_E_OK);
    EXPECT(recs[2].res[0] == 1 && recs[3].res[0] == KEEL_OBJ_NOTIFICATION);
    return 0;
}

static int t_batch_stop_on_failure(void)
{
    struct keel_batch b = { recs, 0, KEEL_BATCH_MAX };
    keel_word_t n = make_obj(KEEL_OBJ_NOTIFICATION, 0), done;

    keel_batch_notification_signal(&b, n);
    keel_batch_notification_signal(&b, slot_alloc()); /* empty slot */
    keel_batch_notification_signal(&b, n);
    EXPECT_ERR(keel_batch_run(&b, KEEL_BATCH_STOP, &done), KEEL_E_INVALID_CAP);
    EXPECT(done == 2);
    EXPECT(recs[0].err == 0 && recs[1].err == KEEL_E_INVALID_CAP && recs[2].err == KEEL_E_NOT_RUN);
    return 0;
}

static int t_batch_continue_after_failure(void)
{
    struct keel_batch b = { recs, 0, KEEL_BATCH_MAX };
    keel_word_t n = make_obj(KEEL_OBJ_NOTIFICATION, 0), done, bits;

    keel_batch_notification_signal(&b, n);
    keel_batch_cnode_delete(&b, CN, 1ul << 40); /* bad slot */
    keel_batch_notification_signal(&b, n);
    EXPECT_ERR(keel_batch_run(&b, 0, &done), KEEL_E_INVALID_ARG);
    EXPECT(done == 3);
    EXPECT(recs[0].err == 0 && recs[1].err == KEEL_E_INVALID_ARG && recs[2].err == 0);
    OK(keel_notification_poll(n, &bits));
    EXPECT(bits == 1);
    return 0;
}

static int t_batch_results_feed_later_calls(void)
{
    struct keel_batch b = { recs, 0, KEEL_BATCH_MAX };
    keel_word_t ep = make_obj(KEEL_OBJ_ENDPOINT, 0), dst = slot_alloc(), done, type;

    unsigned long id = keel_batch_cnode_identify(&b, CN, ep);
    unsigned long mk = keel_batch_untyped_retype(&b, suite_untyped, 0, 0, CN, dst, 1);
    keel_batch_ref(&b, mk, 0, id, 0); /* type := the type identify found */
    OK(keel_batch_run(&b, KEEL_BATCH_STOP, &done));
    OK(keel_cnode_identify(CN, dst, &type, 0, 0));
    EXPECT(type == KEEL_OBJ_ENDPOINT);
    b.n = 0;
    unsigned long bad = keel_batch_cnode_identify(&b, CN, ep);
    keel_batch_ref(&b, bad, 0, 5, 0); /* a later record: refused */
    EXPECT_ERR(keel_batch_run(&b, 0, &done), KEEL_E_INVALID_ARG);
    return 0;
}

static void body_nothing(struct thread *t)
{
    (void)t;
}

static int t_batch_thread_setup_one_trap(void)
{
    struct keel_batch b = { recs, 0, KEEL_BATCH_MAX };
    static struct thread th;
    keel_word_t tcb = slot_alloc(), f = slot_alloc(), done;
    const keel_word_t stack = 0x20180000ul;

    th.fn = body_nothing;
    th.done = 0;
    th.tcb = tcb;
    keel_batch_untyped_retype(&b, suite_untyped, KEEL_OBJ_TCB, 0, CN, tcb, 1);
    keel_batch_untyped_retype(&b, suite_untyped, KEEL_OBJ_FRAME, 0, CN, f, 1);
    keel_batch_frame_map(&b, f, VS, stack, KEEL_RIGHT_READ | KEEL_RIGHT_WRITE);
    keel_batch_tcb_configure(&b, tcb, CN, VS, 0);
    extern void thread_start(struct thread *t);
    keel_batch_tcb_write_regs(&b, tcb, (keel_word_t)thread_start, stack + 4096 - 8,
                              (keel_word_t)&th);
    keel_batch_tcb_resume(&b, tcb);
    OK(keel_batch_run(&b, KEEL_BATCH_STOP, &done));
    EXPECT(done == 6);
    EXPECT(wait_done(&th));
    return 0;
}

static int t_batch_errors(void)
{
    keel_word_t done;
    struct keel_batch b = { recs, 0, KEEL_BATCH_MAX };
    keel_word_t n = make_obj(KEEL_OBJ_NOTIFICATION, 0);

    EXPECT_ERR(keel_batch_syscall((struct keel_call_rec *)0x1000, 1, 0, &done),
               KEEL_E_BAD_ADDRESS);
    EXPECT_ERR(keel_batch_syscall(recs, KEEL_BATCH_MAX + 1, 0, &done), KEEL_E_INVALID_ARG);
    EXPECT_ERR(keel_batch_syscall(recs, 1, 0x80, &done), KEEL_E_INVALID_ARG);
    keel_batch_notification_wait(&b, n); /* would block: refused */
    EXPECT_ERR(keel_batch_run(&b, 0, &done), KEEL_E_WOULD_BLOCK);
    EXPECT_ERR(keel_batch_syscall((struct keel_call_rec *)0x400000, 1, 0, &done),
               KEEL_E_BAD_ADDRESS); /* code: read-only */
    return 0;
}

static int t_batch_sends_to_endpoints(void)
{
    struct keel_batch b = { recs, 0, KEEL_BATCH_MAX };
    keel_word_t ep = make_obj(KEEL_OBJ_ENDPOINT, 0), done, l;

    for (int i = 0; i < 3; i++) {
        struct keel_call_rec *r = keel_batch_next(&b);
        r->cap = ep;
        r->label = USER(10 + i);
        b.n++;
    }
    OK(keel_batch_run(&b, KEEL_BATCH_STOP, &done));
    for (int i = 0; i < 3; i++) {
        OK(ep_recv(ep, KEEL_RECV_NONBLOCK, 0, &l, 0, 0, 0, 0));
        EXPECT(l == (keel_word_t)(10 + i));
    }
    return 0;
}

static int t_batch_sixteen(void)
{
    struct keel_batch b = { recs, 0, KEEL_BATCH_MAX };
    keel_word_t done;

    for (int i = 0; i < 16; i++)
        keel_batch_cnode_identify(&b, CN, KEEL_SLOT_CONSOLE);
    OK(keel_batch_run(&b, KEEL_BATCH_STOP, &done));
    EXPECT(done == 16 && recs[15].res[0] == KEEL_OBJ_CONSOLE);
    return 0;
}

/* -- the shims ---------------------------------------------------------------------------- */

static keel_word_t shim_ep, shim_tcb, inject_ep, inject_tcb;

/* A shim serving `real` (for the client: endpoint badged 0). */
static long start_shim(keel_word_t mode, const keel_word_t *real, unsigned n, keel_word_t *ep,
                       keel_word_t *tcb)
{
    keel_word_t caps[8];

    *ep = make_obj(KEEL_OBJ_ENDPOINT, 0);
    caps[0] = *ep;
    for (unsigned i = 0; i < n; i++)
        caps[1 + i] = real[i];
    return spawn_program("trace", mode, caps, n + 1, tcb);
}

static keel_word_t shim_for(keel_word_t ep, keel_word_t badge)
{
    keel_word_t s = slot_alloc();

    keel_cnode_mint(CN, s, CN, ep, KEEL_RIGHT_WRITE | KEEL_RIGHT_GRANT, badge);
    return s;
}

/* The same checks, first on the objects, then through the shim. */
static int same_answers(keel_word_t ntfn, keel_word_t cnode, keel_word_t ut)
{
    keel_word_t bits, type, rights, s1 = slot_alloc(), s2 = slot_alloc();

    OK(keel_notification_signal(ntfn));
    OK(keel_notification_poll(ntfn, &bits));
    EXPECT(bits == 1);
    OK(keel_cnode_copy(cnode, s1, CN, KEEL_SLOT_CONSOLE, KEEL_RIGHT_WRITE));
    OK(keel_cnode_identify(cnode, s1, &type, &rights, 0));
    EXPECT(type == KEEL_OBJ_CONSOLE && rights == KEEL_RIGHT_WRITE);
    EXPECT_ERR(keel_cnode_copy(cnode, s1, CN, KEEL_SLOT_CONSOLE, KEEL_RIGHT_ALL), KEEL_E_EXISTS);
    EXPECT_ERR(keel_cnode_identify(cnode, 0, 0, 0, 0), KEEL_E_INVALID_ARG);
    EXPECT_ERR(keel_cnode_copy(cnode, s2, CN, slot_alloc(), KEEL_RIGHT_ALL), KEEL_E_INVALID_CAP);
    OK(keel_untyped_retype(ut, KEEL_OBJ_NOTIFICATION, 0, CN, s2, 1));
    OK(keel_cnode_identify(CN, s2, &type, 0, 0));
    EXPECT(type == KEEL_OBJ_NOTIFICATION);
    EXPECT_ERR(keel_untyped_retype(ut, 99, 0, CN, slot_alloc(), 1), KEEL_E_INVALID_ARG);
    return 0;
}

static int t_shim_starts(void)
{
    keel_word_t real[3] = { make_obj(KEEL_OBJ_NOTIFICATION, 0), CN, make_untyped(16) };

    OK(same_answers(real[0], real[1], real[2]));
    OK(start_shim(0, real, 3, &shim_ep, &shim_tcb));
    return 0;
}

static int t_shim_is_transparent(void)
{
    EXPECT(shim_ep != 0);
    /* the client holds only endpoint capabilities, badged per object */
    return same_answers(shim_for(shim_ep, 0), shim_for(shim_ep, 1), shim_for(shim_ep, 2));
}

static int t_shim_forwards_sends(void)
{
    keel_word_t ep = make_obj(KEEL_OBJ_ENDPOINT, 0), real[1] = { ep }, sep, stcb, l, w0;

    OK(start_shim(0, real, 1, &sep, &stcb));
    OK(ep_send(shim_for(sep, 0), 8, 80, 0, 0, 0));
    OK(ep_recv(ep, 0, 0, &l, &w0, 0, 0, 0)); /* arrives through the shim */
    EXPECT(l == 8 && w0 == 80);
    OK(keel_tcb_suspend(stcb));
    return 0;
}

static int t_fault_injection_shim(void)
{
    keel_word_t n = make_obj(KEEL_OBJ_NOTIFICATION, 0), real[1] = { n }, bits;
    keel_word_t mode = (KEEL_CALL_NOTIFICATION_SIGNAL << 8) | KEEL_E_NO_MEMORY;

    OK(start_shim(mode, real, 1, &inject_ep, &inject_tcb));
    keel_word_t c = shim_for(inject_ep, 0);
    EXPECT_ERR(keel_notification_signal(c), KEEL_E_NO_MEMORY); /* injected */
    OK(keel_notification_poll(c, &bits));                        /* others pass */
    EXPECT(bits == 0);
    OK(keel_notification_signal(n));
    OK(keel_notification_poll(c, &bits));
    EXPECT(bits == 1);
    return 0;
}

static int t_shim_stopped(void)
{
    /* with the shim gone, its clients' calls fail cleanly */
    keel_word_t c = shim_for(inject_ep, 0);

    OK(keel_tcb_suspend(inject_tcb));
    OK(keel_cnode_revoke(CN, inject_ep));
    EXPECT_ERR(keel_notification_signal(c), KEEL_E_INVALID_CAP);
    OK(keel_tcb_suspend(shim_tcb));
    return 0;
}

/* -- channels ------------------------------------------------------------------------------- */

#define CHAN_VA 0x20100000ul
#define CHAN_BYTES (256 * 1024)

static unsigned long checksum(const unsigned char *p, unsigned long n, unsigned long seed)
{
    for (unsigned long i = 0; i < n; i++)
        seed = seed * 31 + p[i];
    return seed;
}

static void body_consumer(struct thread *t)
{
    struct channel *ch = (struct channel *)CHAN_VA;
    unsigned char buf[700];
    unsigned long got = 0, sum = 7;

    while (got < CHAN_BYTES) {
        unsigned long n = channel_read(ch, buf, sizeof(buf));
        sum = checksum(buf, n, sum);
        got += n;
    }
    t->value = (long)sum;
}

static int t_channel_transfers_bytes(void)
{
    struct thread t;
    struct channel *ch = (struct channel *)CHAN_VA;
    unsigned char buf[1000];
    unsigned long sum = 7, sent = 0;
    keel_word_t rd = make_obj(KEEL_OBJ_NOTIFICATION, 0), wr = make_obj(KEEL_OBJ_NOTIFICATION, 0);

    for (int i = 0; i < 2; i++)
        map_new_frame(CHAN_VA + i * KEEL_PAGE_SIZE, KEEL_RIGHT_READ | KEEL_RIGHT_WRITE);
    channel_init(ch, 2 * KEEL_PAGE_SIZE, rd, wr);
    OK(spawn(&t, body_consumer, 0));
    unsigned long x = 12345;
    while (sent < CHAN_BYTES) {
        unsigned long n = CHAN_BYTES - sent < sizeof(buf) ? CHAN_BYTES - sent : sizeof(buf);
        for (unsigned long i = 0; i < n; i++) {
            x = x * 6364136223846793005ul + 1442695040888963407ul;
            buf[i] = (unsigned char)(x >> 56);
        }
        sum = checksum(buf, n, sum);
        channel_write(ch, buf, n);
        sent += n;
    }
    EXPECT(wait_done(&t));
    EXPECT(t.value == (long)sum);
    EXPECT(ch->head == ch->tail && ch->head == CHAN_BYTES);
    return 0;
}

static int t_channel_empty_and_full(void)
{
    struct channel *ch = (struct channel *)CHAN_VA;
    unsigned char buf[64] = { 1, 2, 3 };
    keel_word_t rd = make_obj(KEEL_OBJ_NOTIFICATION, 0), wr = make_obj(KEEL_OBJ_NOTIFICATION, 0);

    channel_init(ch, 2 * KEEL_PAGE_SIZE, rd, wr);
    EXPECT(channel_try_read(ch, buf, sizeof(buf)) == 0);
    unsigned long cap = channel_capacity(ch), put = 0;
    while (put < cap)
        put += channel_try_write(ch, buf, sizeof(buf));
    EXPECT(put == cap);
    EXPECT(channel_try_write(ch, buf, 1) == 0);
    EXPECT(channel_try_read(ch, buf, 3) == 3 && buf[0] == 1 && buf[2] == 3);
    EXPECT(channel_try_write(ch, buf, 8) == 3);
    return 0;
}

/* -- interrupts ------------------------------------------------------------------------ */

static int t_irq_handler_capabilities(void)
{
    keel_word_t h = slot_alloc(), n = make_obj(KEEL_OBJ_NOTIFICATION, 0);

    EXPECT_ERR(keel_irq_control_get(KEEL_SLOT_IRQ_CONTROL, 4, CN, h), KEEL_E_INVALID_ARG);
    EXPECT_ERR(keel_irq_control_get(KEEL_SLOT_IRQ_CONTROL, 0, CN, h), KEEL_E_INVALID_ARG);
    EXPECT_ERR(keel_irq_control_get(KEEL_SLOT_IRQ_CONTROL, 99, CN, h), KEEL_E_INVALID_ARG);
    OK(keel_irq_control_get(KEEL_SLOT_IRQ_CONTROL, 11, CN, h));
    EXPECT_ERR(keel_irq_control_get(KEEL_SLOT_IRQ_CONTROL, 11, CN, slot_alloc()), KEEL_E_EXISTS);
    EXPECT_ERR(keel_irq_handler_ack(h), KEEL_E_BAD_STATE); /* nothing bound */
    EXPECT_ERR(keel_irq_handler_set_notification(h, h), KEEL_E_WRONG_TYPE);
    OK(keel_irq_handler_set_notification(h, n));
    OK(keel_irq_handler_ack(h));
    EXPECT_ERR(keel_cnode_copy(CN, slot_alloc(), CN, h, KEEL_RIGHT_ALL), KEEL_E_INVALID_ARG);
    EXPECT_ERR(keel_irq_handler_ack(n), KEEL_E_WRONG_TYPE);
    OK(keel_cnode_delete(CN, h)); /* frees the line */
    OK(keel_irq_control_get(KEEL_SLOT_IRQ_CONTROL, 11, CN, h));
    OK(keel_cnode_delete(CN, n)); /* its notification may go first */
    EXPECT_ERR(keel_irq_handler_ack(h), KEEL_E_BAD_STATE);
    OK(keel_cnode_delete(CN, h));
    return 0;
}

/* -- I/O ports -------------------------------------------------------------------------- */

/* Waits for the go-ahead (b), then writes port c. */
static void body_port_write(struct thread *t)
{
    while (!*(volatile keel_word_t *)&t->b)
        keel_yield();
    __asm__ volatile("outb %%al, %%dx" : : "a"(0), "d"((unsigned short)t->c));
    t->value = 1;
}

static long port_thread(struct thread *t, keel_word_t port, keel_word_t ep)
{
    t->b = 0;
    t->c = port;
    t->value = 0;
    return spawn(t, body_port_write, ep);
}

static int t_io_port_capabilities(void)
{
    keel_word_t p = slot_alloc(), q = slot_alloc(), ep = make_obj(KEEL_OBJ_ENDPOINT, 0), state;
    struct thread ok, denied, kept, late;
    struct keel_msg m;

    EXPECT_ERR(keel_io_port_control_issue(KEEL_SLOT_IO_PORT_CONTROL, 0x3f8, 0x3ff, CN, p),
               KEEL_E_INVALID_ARG); /* the kernel's console */
    EXPECT_ERR(keel_io_port_control_issue(KEEL_SLOT_IO_PORT_CONTROL, 0x510, 0x500, CN, p),
               KEEL_E_INVALID_ARG);
    EXPECT_ERR(keel_io_port_control_issue(KEEL_SLOT_IO_PORT_CONTROL, 0, 0x10000, CN, p),
               KEEL_E_INVALID_ARG);
    OK(keel_io_port_control_issue(KEEL_SLOT_IO_PORT_CONTROL, 0x510, 0x51f, CN, p));
    EXPECT_ERR(keel_tcb_set_io_ports(KEEL_SLOT_TCB, ep), KEEL_E_WRONG_TYPE);
    /* a thread given the range writes to it */
    OK(port_thread(&ok, 0x518, ep));
    OK(keel_tcb_set_io_ports(ok.tcb, p));
    ok.b = 1;
    EXPECT(wait_done(&ok) && ok.value == 1);
    /* a port outside its range faults */
    OK(port_thread(&denied, 0x520, ep));
    OK(keel_tcb_set_io_ports(denied.tcb, p));
    denied.b = 1;
    OK(keel_recv(ep, 0, 0, &m));
    EXPECT(m.label == KEEL_LABEL_FAULT && m.w[0] == 13 && denied.value == 0);
    /* deleting the original capability leaves the thread's own copy */
    OK(port_thread(&kept, 0x510, ep));
    OK(keel_tcb_set_io_ports(kept.tcb, p));
    OK(keel_cnode_delete(CN, p));
    kept.b = 1;
    EXPECT(wait_done(&kept) && kept.value == 1);
    /* revoking takes it away */
    OK(keel_io_port_control_issue(KEEL_SLOT_IO_PORT_CONTROL, 0x510, 0x51f, CN, q));
    OK(port_thread(&late, 0x511, ep));
    OK(keel_tcb_set_io_ports(late.tcb, q));
    OK(keel_cnode_revoke(CN, q));
    late.b = 1;
    OK(keel_recv(ep, 0, 0, &m));
    EXPECT(m.w[0] == 13 && late.value == 0);
    OK(keel_tcb_state(late.tcb, &state));
    EXPECT(state == KEEL_THREAD_FAULTED);
    OK(keel_cnode_delete(CN, late.tcb));
    OK(keel_cnode_delete(CN, denied.tcb));
    return 0;
}

const struct test msg_tests[] = {
#define T(name) { #name, t_##name }
    T(call_reply), T(reply_carries_error), T(reply_cap_rules), T(dropped_reply_revokes_call),
    T(call_full_queue), T(call_needs_write), T(transfer_capability), T(transfer_errors),
    T(transfer_window_full), T(transfer_revoked_in_flight), T(badges_name_clients),
    T(six_words), T(bound_notification_ends_recv), T(bound_notification_pending),
    T(told_when_room), T(revoked_endpoint_with_waiters), T(deleted_endpoint_wakes_receivers),
    T(suspended_caller_loses_reply), T(batch_all_ok), T(batch_stop_on_failure),
    T(batch_continue_after_failure), T(batch_results_feed_later_calls),
    T(batch_thread_setup_one_trap), T(batch_errors), T(batch_sends_to_endpoints),
    T(batch_sixteen), T(shim_starts), T(shim_is_transparent), T(shim_forwards_sends),
    T(fault_injection_shim), T(shim_stopped), T(channel_transfers_bytes),
    T(channel_empty_and_full), T(irq_handler_capabilities), T(io_port_capabilities),
#undef T
};
const unsigned long msg_tests_count = sizeof(msg_tests) / sizeof(msg_tests[0]);
