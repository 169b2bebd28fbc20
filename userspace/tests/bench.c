/* In-guest micro-benchmarks (keel.test=bench), timed with rdtsc in this
 * boot: the bare syscall/sysret floor, the null kernel call, and a
 * capability copy followed by its delete.  Each figure is the median of
 * ROUNDS rounds of BATCH operations, in cycles per operation. */
#include "../lib/channel.h"
#include "suite.h"

#define ROUNDS 31
#define BATCH 200

static unsigned long median(unsigned long *v, int n)
{
    for (int i = 1; i < n; i++) {
        unsigned long x = v[i];
        int j = i - 1;
        while (j >= 0 && v[j] > x) {
            v[j + 1] = v[j];
            j--;
        }
        v[j + 1] = x;
    }
    return v[n / 2];
}

static unsigned long measure(int what, keel_word_t ep, keel_word_t spare)
{
    unsigned long samples[ROUNDS];

    for (int r = 0; r < ROUNDS; r++) {
        unsigned long t0 = rdtsc();
        for (int i = 0; i < BATCH; i++) {
            if (what == 0) {
                keel_syscall(KEEL_SYS_FLOOR, 0, 0, 0, 0);
            } else if (what == 1) {
                keel_syscall(KEEL_SYS_NULL, 0, 0, 0, 0);
            } else {
                keel_cnode_copy(CN, spare, CN, ep, KEEL_RIGHT_ALL);
                keel_cnode_delete(CN, spare);
            }
        }
        samples[r] = (rdtsc() - t0) / BATCH;
    }
    return median(samples, ROUNDS);
}

/* A server's loop: answer and wait for the next call in one trap. */
static void body_echo_server(struct thread *t)
{
    struct keel_msg m;
    keel_word_t res[KEEL_MSG_WORDS] = { 0 };
    long err = keel_recv(t->a, 0, t->b, &m);

    for (;;) {
        if (err == KEEL_E_OK && (m.info & KEEL_INFO_REPLY))
            err = keel_reply_recv(t->b, 0, res, t->a, t->b, &m);
        else
            err = keel_recv(t->a, 0, t->b, &m);
    }
}

static unsigned long measure_ipc(void)
{
    static struct thread server;
    keel_word_t in[KEEL_MSG_WORDS] = { 0 }, out[KEEL_MSG_WORDS];
    unsigned long samples[ROUNDS];

    server.a = make_obj(KEEL_OBJ_ENDPOINT, 0);
    server.b = slot_alloc();
    for (int i = 0; i < KEEL_MSG_CAPS; i++)
        slot_alloc();
    spawn(&server, body_echo_server, 0);
    for (int r = 0; r < ROUNDS; r++) {
        unsigned long t0 = rdtsc();
        for (int i = 0; i < BATCH / 4; i++)
            keel_call(server.a, KEEL_LABEL_USER, in, out);
        samples[r] = (rdtsc() - t0) / (BATCH / 4);
    }
    keel_tcb_suspend(server.tcb);
    return median(samples, ROUNDS);
}

static unsigned long measure_batch(unsigned n)
{
    static struct keel_call_rec recs[16];
    struct keel_batch b = { recs, 0, 16 };
    unsigned long samples[ROUNDS], done;

    for (unsigned i = 0; i < n; i++)
        keel_batch_cnode_identify(&b, CN, KEEL_SLOT_CONSOLE);
    for (int r = 0; r < ROUNDS; r++) {
        unsigned long t0 = rdtsc();
        for (int i = 0; i < BATCH / 4; i++)
            keel_batch_run(&b, 0, &done);
        samples[r] = (rdtsc() - t0) / (BATCH / 4);
    }
    return median(samples, ROUNDS);
}

#define CHAN_VA 0x20100000ul
#define CHAN_PAGES 64
#define CHAN_TOTAL (64ul << 20)

static void body_drain(struct thread *t)
{
    static unsigned char buf[16384];
    unsigned long got = 0;

    while (got < CHAN_TOTAL)
        got += channel_read((struct channel *)CHAN_VA, buf, sizeof(buf));
    t->value = (long)got;
}

static unsigned long measure_channel(void)
{
    static struct thread t;
    static unsigned char buf[16384];
    struct channel *ch = (struct channel *)CHAN_VA;

    for (int i = 0; i < CHAN_PAGES; i++)
        map_new_frame(CHAN_VA + i * KEEL_PAGE_SIZE, KEEL_RIGHT_READ | KEEL_RIGHT_WRITE);
    channel_init(ch, CHAN_PAGES * KEEL_PAGE_SIZE, make_obj(KEEL_OBJ_NOTIFICATION, 0),
                 make_obj(KEEL_OBJ_NOTIFICATION, 0));
    memset(buf, 0x5a, sizeof(buf));
    spawn(&t, body_drain, 0);
    unsigned long t0 = rdtsc();
    for (unsigned long sent = 0; sent < CHAN_TOTAL; sent += sizeof(buf))
        channel_write(ch, buf, sizeof(buf));
    while (!t.done)
        keel_yield();
    return rdtsc() - t0;
}

int bench_run(void)
{
    keel_word_t ep = make_obj(KEEL_OBJ_ENDPOINT, 0), spare = slot_alloc();

    measure(0, ep, spare); /* warm up */
    unsigned long floor = measure(0, ep, spare);
    unsigned long null = measure(1, ep, spare);
    unsigned long copy = measure(2, ep, spare);
    printf("kbench: floor %lu cycles\n", floor);
    printf("kbench: null %lu cycles\n", null);
    printf("kbench: copy_delete %lu cycles\n", copy);
    printf("kbench: ipc_roundtrip %lu cycles\n", measure_ipc());
    printf("kbench: identify %lu cycles\n", measure_batch(1));
    printf("kbench: batch16_identify %lu cycles\n", measure_batch(16));
    unsigned long cycles = measure_channel();
    printf("kbench: channel_bytes %lu bytes\n", CHAN_TOTAL);
    printf("kbench: channel_time %lu cycles\n", cycles);

    return 0;
}
