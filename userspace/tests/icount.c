/* Path lengths (keel.test=icount): each kernel path measured alone,
 * between two rdtsc.  Under QEMU's TCG with -icount shift=0 the time stamp
 * counter advances by exactly one per guest instruction executed, so the
 * figures are instruction counts, user stub and kernel together, the same
 * on every run and every host (scripts/icount runs it and
 * tests/boot/test_icount.py budgets it).  Under KVM they are cycles.  Each
 * path runs ICOUNT_REPS times and the smallest figure is reported (a timer
 * tick inside one run does not count); the cost of the two rdtsc is taken
 * off. */
#include "suite.h"

#define ICOUNT_REPS 8

static void body_echo(struct thread *t)
{
    struct keel_msg m;
    keel_word_t res[KEEL_MSG_WORDS] = { 0 };

    if (keel_recv(t->a, 0, t->b, &m) != KEEL_E_OK)
        return;
    for (;;) {
        res[0] = m.w[0] + 1;
        if (keel_reply_recv(t->b, 0, res, t->a, t->b, &m) != KEEL_E_OK)
            keel_recv(t->a, 0, t->b, &m);
    }
}

static inline unsigned long tsc(void)
{
    unsigned lo, hi;

    __asm__ volatile("rdtsc" : "=a"(lo), "=d"(hi) : : "memory");
    return ((unsigned long)hi << 32) | lo;
}

static unsigned long best[8];

static void keep(int path, unsigned long n)
{
    if (!best[path] || n < best[path])
        best[path] = n;
}

int icount_run(void)
{
    static const char *const names[] = { "empty", "floor", "null", "ipc_roundtrip",
                                         "batch1", "batch16", "copy_delete" };
    static struct keel_call_rec recs[16];
    static struct thread server;
    struct keel_batch b1 = { recs, 0, 1 }, b16 = { recs, 0, 16 };
    keel_word_t ep = make_obj(KEEL_OBJ_ENDPOINT, 0), spare = slot_alloc();
    keel_word_t in[KEEL_MSG_WORDS] = { 41 }, out[KEEL_MSG_WORDS];
    unsigned long done, t0;
    long err;

    server.a = make_obj(KEEL_OBJ_ENDPOINT, 0);
    server.b = window_alloc();
    OK(spawn(&server, body_echo, 0));
    EXPECT(wait_blocked(&server));
    for (int i = 0; i < 16; i++)
        keel_batch_cnode_identify(&b16, CN, KEEL_SLOT_CONSOLE);
    keel_batch_cnode_identify(&b1, CN, KEEL_SLOT_CONSOLE);
    for (int r = 0; r < ICOUNT_REPS; r++) {
        t0 = tsc();
        keep(0, tsc() - t0);
        t0 = tsc();
        keel_syscall(KEEL_SYS_FLOOR, 0, 0, 0, 0);
        keep(1, tsc() - t0);
        t0 = tsc();
        keel_syscall(KEEL_SYS_NULL, 0, 0, 0, 0);
        keep(2, tsc() - t0);
        t0 = tsc();
        err = keel_call(server.a, USER(1), in, out);
        keep(3, tsc() - t0);
        EXPECT(err == KEEL_E_OK && out[0] == 42);
        t0 = tsc();
        err = keel_batch_run(&b1, 0, &done);
        keep(4, tsc() - t0);
        EXPECT(err == KEEL_E_OK && done == 1);
        t0 = tsc();
        err = keel_batch_run(&b16, 0, &done);
        keep(5, tsc() - t0);
        EXPECT(err == KEEL_E_OK && done == 16);
        t0 = tsc();
        keel_cnode_copy(CN, spare, CN, ep, KEEL_RIGHT_ALL);
        keel_cnode_delete(CN, spare);
        keep(6, tsc() - t0);
    }
    keel_tcb_suspend(server.tcb);
    for (int p = 1; p < 7; p++)
        printf("icount: %s %lu\n", names[p], best[p] - best[0]);
    return 0;
}
