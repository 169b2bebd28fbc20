/* The in-guest suite: batches of calls, the trace and fault-injection
 * shims, and the shared-memory channel library. */
#include "../lib/channel.h"
#include "suite.h"

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

const struct test batch_tests[] = {
#define T(name) { #name, t_##name }
    T(batch_all_ok), T(batch_stop_on_failure), T(batch_continue_after_failure),
    T(batch_results_feed_later_calls), T(batch_thread_setup_one_trap), T(batch_errors),
    T(batch_sends_to_endpoints), T(batch_sixteen), T(shim_starts), T(shim_is_transparent),
    T(shim_forwards_sends), T(fault_injection_shim), T(shim_stopped), T(channel_transfers_bytes),
    T(channel_empty_and_full),
#undef T
};
const unsigned long batch_tests_count = sizeof(batch_tests) / sizeof(batch_tests[0]);
