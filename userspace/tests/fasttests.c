/* The in-guest suite: the IPC fast path (kernel/core/fastpath.c) and each
 * of its fallbacks.  Every case checks what a client and a server see -
 * errors, the six words, badge, label, info, capabilities - which is the
 * same whichever path the kernel took. */
#include "suite.h"

/* A server looping on reply_recv: answers each call with its six words
 * plus one, its badge in the error-free result w5, and counts the calls in
 * t->value.  Stops when told (label USER(99)). */
static void body_fast_server(struct thread *t)
{
    struct keel_msg m;
    keel_word_t res[KEEL_MSG_WORDS];
    long err = keel_recv(t->a, 0, t->b, &m);

    while (err == KEEL_E_OK) {
        if (!(m.info & KEEL_INFO_REPLY)) {
            t->value = -1;
            return;
        }
        for (int i = 0; i < KEEL_MSG_WORDS; i++)
            res[i] = m.w[i] + 1;
        res[5] = m.badge;
        if (m.label == USER(99))
            break;
        t->value++;
        t->c = KEEL_INFO_CAPS(m.info);
        err = keel_reply_recv(t->b, 0, res, t->a, t->b, &m);
    }
    keel_reply(t->b, 0, res);
    t->done = 1;
    for (;;)
        keel_recv(t->a, 0, 0, &m);
}

static int start_fast_server(struct thread *t, keel_word_t ep)
{
    t->a = ep;
    t->b = window_alloc();
    t->c = 0;
    t->value = 0;
    if (spawn(t, body_fast_server, 0) != KEEL_E_OK)
        return 0;
    return wait_blocked(t);
}

static int stop_fast_server(struct thread *t, keel_word_t ep)
{
    keel_word_t in[KEEL_MSG_WORDS] = { 0 }, out[KEEL_MSG_WORDS];

    OK(keel_call(ep, USER(99), in, out));
    EXPECT(wait_done(t));
    return 0;
}

/* The fast path both ways: words, badge, label, many times over. */
static int t_fast_call_and_reply_recv(void)
{
    struct thread srv;
    keel_word_t ep = make_obj(KEEL_OBJ_ENDPOINT, 0), b = slot_alloc();
    keel_word_t in[KEEL_MSG_WORDS], out[KEEL_MSG_WORDS];

    OK(keel_cnode_mint(CN, b, CN, ep, KEEL_RIGHT_WRITE, 0x77));
    EXPECT(start_fast_server(&srv, ep));
    for (int n = 0; n < 50; n++) {
        for (int i = 0; i < KEEL_MSG_WORDS; i++)
            in[i] = (keel_word_t)(n * 10 + i);
        OK(keel_call(b, USER(1), in, out));
        for (int i = 0; i < 5; i++)
            EXPECT(out[i] == in[i] + 1);
        EXPECT(out[5] == 0x77);
    }
    EXPECT(srv.value == 50);
    return stop_fast_server(&srv, ep);
}

/* A capability in the message: the general path moves it. */
static int t_fast_falls_back_for_capabilities(void)
{
    struct thread srv;
    keel_word_t ep = make_obj(KEEL_OBJ_ENDPOINT, 0), n = make_obj(KEEL_OBJ_NOTIFICATION, 0);
    keel_word_t in[KEEL_MSG_WORDS] = { n }, out[KEEL_MSG_WORDS];

    EXPECT(start_fast_server(&srv, ep));
    OK(keel_call(ep, USER(2) | KEEL_LABEL_CAPS(1), in, out));
    EXPECT(srv.c == 1); /* it arrived in the server's window */
    EXPECT(out[1] == 1 && out[5] == 0);
    /* without the grant right the general path refuses, as always */
    keel_word_t w = slot_alloc();
    OK(keel_cnode_copy(CN, w, CN, ep, KEEL_RIGHT_WRITE));
    EXPECT_ERR(keel_call(w, USER(2) | KEEL_LABEL_CAPS(1), in, out), KEEL_E_NO_RIGHTS);
    OK(keel_call(w, USER(3), in, out)); /* no capability: the fast path again */
    EXPECT(srv.value == 2);
    return stop_fast_server(&srv, ep);
}

/* A kernel object's label on an endpoint, a missing right, an empty slot,
 * a capability of another type: the errors of the general path. */
static int t_fast_falls_back_on_rights_and_types(void)
{
    struct thread srv;
    keel_word_t ep = make_obj(KEEL_OBJ_ENDPOINT, 0), r = slot_alloc();
    keel_word_t n = make_obj(KEEL_OBJ_NOTIFICATION, 0);
    keel_word_t in[KEEL_MSG_WORDS] = { 1 }, out[KEEL_MSG_WORDS];

    EXPECT(start_fast_server(&srv, ep));
    OK(keel_cnode_copy(CN, r, CN, ep, KEEL_RIGHT_READ));
    EXPECT_ERR(keel_call(r, USER(1), in, out), KEEL_E_NO_RIGHTS);
    EXPECT_ERR(keel_call(slot_alloc(), USER(1), in, out), KEEL_E_INVALID_CAP);
    EXPECT(keel_call(n, USER(1), in, out) != KEEL_E_OK);
    EXPECT(srv.value == 0);
    OK(keel_call(ep, USER(1), in, out));
    EXPECT(out[0] == 2 && srv.value == 1);
    return stop_fast_server(&srv, ep);
}

/* The server is not waiting: the call is queued and served later. */
static keel_word_t late_no_read; /* the go-ahead endpoint, write only */

static void body_late_server(struct thread *t)
{
    struct keel_msg m;
    keel_word_t res[KEEL_MSG_WORDS] = { 0 };

    keel_recv(t->c, 0, 0, &m); /* the go-ahead, on another endpoint */
    if (keel_recv(t->a, 0, t->b, &m) != KEEL_E_OK || !(m.info & KEEL_INFO_REPLY)) {
        t->value = -1;
        return;
    }
    res[0] = m.w[0] * 3;
    /* a reply_recv whose endpoint cannot be read: replied, then refused */
    t->value = keel_reply_recv(t->b, 0, res, late_no_read, t->b, &m);
    t->done = 1;
    for (;;)
        keel_recv(t->c, 0, 0, &m);
}

static int t_fast_falls_back_when_server_not_waiting(void)
{
    struct thread srv;
    keel_word_t go = make_obj(KEEL_OBJ_ENDPOINT, 0), ep = make_obj(KEEL_OBJ_ENDPOINT, 0), r;

    late_no_read = slot_alloc();
    OK(keel_cnode_copy(CN, late_no_read, CN, go, KEEL_RIGHT_WRITE));
    srv.a = ep;
    srv.b = window_alloc();
    srv.c = go;
    srv.value = 99;
    OK(spawn(&srv, body_late_server, 0));
    EXPECT(wait_blocked(&srv));
    OK(ep_send(go, 1, 0, 0, 0, 0)); /* it wakes, but waits on ep only later */
    OK(call_words(ep, USER(1), 7, 0, &r));
    EXPECT(r == 21);
    EXPECT(wait_done(&srv));
    EXPECT(srv.value == KEEL_E_NO_RIGHTS);
    return 0;
}

/* A server bound to another CPU: the call crosses CPUs the general way. */
static int t_fast_falls_back_for_another_cpu(void)
{
    struct thread srv;
    keel_word_t ep = make_obj(KEEL_OBJ_ENDPOINT, 0), me = suite_boot->ncpus > 1 ? 1 : 0;
    keel_word_t in[KEEL_MSG_WORDS] = { 5 }, out[KEEL_MSG_WORDS];

    EXPECT(start_fast_server(&srv, ep));
    OK(keel_tcb_set_affinity(srv.tcb, me));
    OK(keel_tcb_set_affinity(KEEL_SLOT_TCB, 0));
    for (int i = 0; i < 10; i++) {
        OK(keel_call(ep, USER(1), in, out));
        EXPECT(out[0] == 6);
    }
    EXPECT(srv.value == 10);
    int err = stop_fast_server(&srv, ep);
    OK(keel_tcb_set_affinity(KEEL_SLOT_TCB, (keel_word_t)-1));
    return err;
}

/* reply_recv with a reply capability that is not one: its error, and no
 * receive (the server is not blocked). */
static int t_reply_recv_bad_reply(void)
{
    keel_word_t ep = make_obj(KEEL_OBJ_ENDPOINT, 0), res[KEEL_MSG_WORDS] = { 0 };
    struct keel_msg m;

    EXPECT_ERR(keel_reply_recv(slot_alloc(), 0, res, ep, 0, &m), KEEL_E_INVALID_CAP);
    EXPECT_ERR(keel_reply_recv(ep, 0, res, ep, 0, &m), KEEL_E_WRONG_TYPE);
    return 0;
}

const struct test fast_tests[] = {
    { "fast_call_and_reply_recv", t_fast_call_and_reply_recv },
    { "fast_falls_back_for_capabilities", t_fast_falls_back_for_capabilities },
    { "fast_falls_back_on_rights_and_types", t_fast_falls_back_on_rights_and_types },
    { "fast_falls_back_when_server_not_waiting", t_fast_falls_back_when_server_not_waiting },
    { "fast_falls_back_for_another_cpu", t_fast_falls_back_for_another_cpu },
    { "reply_recv_bad_reply", t_reply_recv_bad_reply },
};
const unsigned long fast_tests_count = sizeof(fast_tests) / sizeof(fast_tests[0]);
