/* keel.test=blkwrites: a disk client that writes and flushes for ever,
 * for the host's crash-consistency test (tests/boot/test_crash.py kills
 * the VMM with SIGKILL at a random moment and checks the image).  Through
 * the device manager's virtio-blk driver, round r writes 4 KiB block
 * r % BLKW_BLOCKS (from BLKW_FIRST on) filled with the words
 * BLKW_MAGIC ^ r << 20 ^ i, flushes, and only then prints
 * "blkw: flushed r": a round the host saw printed must be on the image. */
#include "../devmgr/devmgr.h"
#include "../lib/start.h"
#include "suite.h"

#define BLKW_VA 0x20200000ul
#define BLKW_FIRST 64   /* blocks before it are never written */
#define BLKW_BLOCKS 256 /* nor after BLKW_FIRST + BLKW_BLOCKS */
#define BLKW_MAGIC 0x6b65656c626c6b77ul

int blkwrites_run(void);

int blkwrites_run(void)
{
    struct services svc;
    struct service s;
    unsigned long done;
    keel_word_t in[KEEL_MSG_WORDS] = { 0 }, out[KEEL_MSG_WORDS];

    if (services_start(&svc))
        return 1;
    memset(&s, 0, sizeof(s));
    s.ns = svc.names;
    s.inbox = make_obj(KEEL_OBJ_ENDPOINT, 0);
    s.window = slot_alloc_range(4);
    s.buf = (unsigned char *)BLKW_VA;
    s.frame = map_new_frame(BLKW_VA, KEEL_RIGHT_READ | KEEL_RIGHT_WRITE);
    ns_pack("blk0", s.name);
    OK(service_connect(&s));
    printf("blkw: writing\n");
    for (unsigned long r = 0;; r++) {
        unsigned long block = BLKW_FIRST + r % BLKW_BLOCKS, *w = (unsigned long *)s.buf;
        for (unsigned i = 0; i < 512; i++)
            w[i] = BLKW_MAGIC ^ r << 20 ^ i;
        OK(service_io(&s, DRV_WRITE, 4096, block * 4096, 0, &done));
        EXPECT(done == 4096);
        OK(service_call(&s, DRV_FLUSH, in, out));
        printf("blkw: flushed %lu\n", r);
    }
}

/* -- keel.test=killcampaign ------------------------------------------------------------
 * The virtio-blk driver killed keel.kills=N times (default 20) at random
 * moments while a client writes round after round (as above, without
 * waiting for the kills), reads back an earlier block it was told was
 * written, and flushes every eighth round.  The device manager starts a
 * new driver each time; the client retries through it.  At the end every
 * acknowledged round is read back, then flushed: the host checks the
 * image holds, for each block, the last round written to it.  Prints
 * "kills: N kills, W writes acknowledged, R reads checked, B wrong answers". */
static struct service kc_svc;
static volatile unsigned long kc_acked, kc_reads, kc_wrong, kc_stop;
static volatile long kc_err;

static void kc_fill(unsigned long *w, unsigned long r)
{
    for (unsigned i = 0; i < 512; i++)
        w[i] = BLKW_MAGIC ^ r << 20 ^ i;
}

static int kc_same(const unsigned long *w, unsigned long r)
{
    for (unsigned i = 0; i < 512; i++)
        if (w[i] != (BLKW_MAGIC ^ r << 20 ^ i))
            return 0;
    return 1;
}

static void kc_client(struct thread *t)
{
    unsigned long done, seed = 88172645463325252ul;
    keel_word_t in[KEEL_MSG_WORDS] = { 0 }, out[KEEL_MSG_WORDS];
    unsigned long *w = (unsigned long *)kc_svc.buf;

    for (unsigned long r = 0; !kc_stop; r++) {
        kc_fill(w, r);
        long err = service_io(&kc_svc, DRV_WRITE, 4096, (BLKW_FIRST + r % BLKW_BLOCKS) * 4096, 0,
                              &done);
        if (err || done != 4096) {
            kc_err = err ? err : -1;
            return;
        }
        kc_acked = r + 1;
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        /* the latest round written to a random block already written */
        unsigned long b = seed % (r + 1 < BLKW_BLOCKS ? r + 1 : BLKW_BLOCKS);
        unsigned long last = r - (r + BLKW_BLOCKS - b) % BLKW_BLOCKS;
        if ((err = service_io(&kc_svc, DRV_READ, 4096, (BLKW_FIRST + b) * 4096, 0, &done))) {
            kc_err = err;
            return;
        }
        kc_reads++;
        if (done != 4096 || !kc_same(w, last))
            kc_wrong++;
        if (r % 8 == 7 && (err = service_call(&kc_svc, DRV_FLUSH, in, out))) {
            kc_err = err;
            return;
        }
    }
}

int killcampaign_run(void);

int killcampaign_run(void)
{
    struct services svc;
    struct thread t;
    char val[16] = "20";
    unsigned long kills = 0, want = 0, seed = rdtsc() | 1;
    keel_word_t w[2], out[KEEL_MSG_WORDS], in[KEEL_MSG_WORDS] = { 0 };

    cmdline_get(suite_boot->cmdline, "keel.kills", val, sizeof(val));
    for (const char *p = val; *p >= '0' && *p <= '9'; p++)
        want = want * 10 + (unsigned long)(*p - '0');
    suite_current = "killcampaign";
    if (services_start(&svc))
        return 1;
    memset(&kc_svc, 0, sizeof(kc_svc));
    kc_svc.ns = svc.names;
    kc_svc.inbox = make_obj(KEEL_OBJ_ENDPOINT, 0);
    kc_svc.window = slot_alloc_range(4);
    kc_svc.buf = (unsigned char *)BLKW_VA;
    kc_svc.frame = map_new_frame(BLKW_VA, KEEL_RIGHT_READ | KEEL_RIGHT_WRITE);
    ns_pack("blk0", kc_svc.name);
    OK(service_connect(&kc_svc));
    OK(spawn(&t, kc_client, 0));
    ns_pack("blk0", w);
    while (kills < want && !kc_err) {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        unsigned long until = kc_acked + seed % 6; /* kill after 0-5 more writes */
        while (kc_acked < until && !kc_err)
            keel_yield();
        in[0] = w[0];
        in[1] = w[1];
        OK(keel_call(svc.devmgr, DM_KILL, in, out));
        kills++;
        if (kills % 50 == 0)
            printf("kills: %lu so far, %lu writes acknowledged\n", kills, kc_acked);
    }
    unsigned long target = kc_acked + 4; /* a few more through the last driver */
    while (kc_acked < target && !kc_err)
        keel_yield();
    kc_stop = 1;
    EXPECT(wait_done(&t));
    EXPECT_ERR(kc_err, KEEL_E_OK);
    /* every acknowledged round is what its block holds */
    unsigned long done, n = kc_acked, *buf = (unsigned long *)kc_svc.buf;
    for (unsigned long b = 0; b < BLKW_BLOCKS && b < n; b++) {
        unsigned long last = n - 1 - (n - 1 + BLKW_BLOCKS - b) % BLKW_BLOCKS;
        OK(service_io(&kc_svc, DRV_READ, 4096, (BLKW_FIRST + b) * 4096, 0, &done));
        if (!kc_same(buf, last))
            kc_wrong++;
    }
    OK(service_call(&kc_svc, DRV_FLUSH, in, out));
    printf("kills: %lu kills, %lu writes acknowledged, %lu reads checked, %lu wrong answers, "
           "%lu retries\n", kills, n, kc_reads, kc_wrong, kc_svc.retries);
    return kc_wrong != 0;
}
