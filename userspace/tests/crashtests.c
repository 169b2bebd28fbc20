/* keel.test=blkwrites: a disk client that writes and flushes for ever,
 * for the host's crash-consistency test (tests/boot/test_crash.py kills
 * the VMM with SIGKILL at a random moment and checks the image).  Through
 * the virtio-blk driver (started alone, in service mode: without the name
 * service and the device manager each start, and so each kill, is seconds
 * shorter), round r writes 4 KiB block r % BLKW_BLOCKS (from BLKW_FIRST
 * on) filled with the words BLKW_MAGIC ^ r << 20 ^ i, flushes, and only
 * then prints "blkw: flushed r": a round the host saw printed must be on
 * the image. */
#include "../lib/driver.h"
#include "../lib/start.h"
#include "../devmgr/devmgr.h"
#include "suite.h"
#include "netpkt.h"

#define BLKW_VA 0x20200000ul
#define BLKW_FIRST 64   /* blocks before it are never written */
#define BLKW_BLOCKS 256 /* nor after BLKW_FIRST + BLKW_BLOCKS */
#define BLKW_MAGIC 0x6b65656c626c6b77ul
#define VIRTIO_BLK_ID 2

int blkwrites_run(void);

int blkwrites_run(void)
{
    struct process p;
    keel_word_t ep = make_obj(KEEL_OBJ_ENDPOINT, 0), in[KEEL_MSG_WORDS] = { 0 }, out[KEEL_MSG_WORDS];

    suite_current = "blkwrites";
    if (virtio_start_mode("virtio_blk", VIRTIO_BLK_ID, DRV_MODE_SERVICE, ep, &p))
        return 1;
    in[0] = map_new_frame(BLKW_VA, KEEL_RIGHT_READ | KEEL_RIGHT_WRITE);
    OK(keel_call(ep, DRV_OPEN, in, out));
    keel_word_t handle = out[0];
    printf("blkw: writing\n");
    for (unsigned long r = 0;; r++) {
        unsigned long block = BLKW_FIRST + r % BLKW_BLOCKS, *w = (unsigned long *)BLKW_VA;
        for (unsigned i = 0; i < 512; i++)
            w[i] = BLKW_MAGIC ^ r << 20 ^ i;
        keel_word_t write[KEEL_MSG_WORDS] = { handle, 0, 4096, block * 4096, 0 };
        OK(keel_call(ep, DRV_WRITE, write, out));
        EXPECT(out[0] == 4096);
        keel_word_t flush[KEEL_MSG_WORDS] = { handle };
        OK(keel_call(ep, DRV_FLUSH, flush, out));
        printf("blkw: flushed %lu\n", r);
    }
}

/* -- keel.test=killcampaign ------------------------------------------------------------
 * Drivers killed keel.kills=N times (default 20) at random moments while
 * their clients use them: each kill, after a random 0-5 more answers to
 * any client, goes to one of the devices present, chosen at random, among
 * blk0, net0 and hvc0 (keel.killdevs=blk0,hvc0 names some).  The device
 * manager starts a new driver each time; the clients retry through it.
 * - blk0: 4 KiB blocks written round after round (as blkwrites, without
 *   waiting for the kills), after each a random earlier block read back,
 *   a flush every eighth round; at the end every acknowledged round is
 *   read back, then flushed: the host checks the image holds, for each
 *   block, the last round written to it.
 * - net0: ICMP echo requests to the host (10.0.2.2, the TAP's address),
 *   each of its own size; a reply with the sequence asked for must be whole
 *   and correct (a late or repeated reply to an earlier one is counted
 *   apart); a request or its reply lost with a driver is sent again.
 * - hvc0: numbered lines written through the virtio-console driver, each
 *   answered with its length; the host checks every acknowledged line
 *   reached it, whole and in order (one sent again after a kill may come
 *   twice).
 * Prints a "kills: NAME ..." line per device and "kills: N kills in all,
 * W wrong answers". */
#define KC_BLK 0
#define KC_NET 1
#define KC_HVC 2
#define KC_CLIENTS 3
#define KC_VA 0x20210000ul    /* a page per client */
#define KC_RESEND 300000000ul /* TSC ticks without the echo reply: sent again */

struct kc_client {
    const char *name;
    void (*body)(struct thread *);
    struct service s;
    struct thread t;
    int present;
    unsigned long kills;
    volatile unsigned long acked, checked, wrong, late;
    volatile long err;
};

static volatile int kc_stop;
static void kc_blk(struct thread *t);
static void kc_net(struct thread *t);
static void kc_hvc(struct thread *t);
static struct kc_client kc[KC_CLIENTS] = {
    { .name = "blk0", .body = kc_blk },
    { .name = "net0", .body = kc_net },
    { .name = "hvc0", .body = kc_hvc },
};

static unsigned long kc_next(unsigned long *seed)
{
    *seed ^= *seed << 13;
    *seed ^= *seed >> 7;
    *seed ^= *seed << 17;
    return *seed;
}

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

static void kc_blk(struct thread *t)
{
    struct kc_client *c = &kc[KC_BLK];
    unsigned long done, seed = 88172645463325252ul;
    keel_word_t in[KEEL_MSG_WORDS] = { 0 }, out[KEEL_MSG_WORDS];
    unsigned long *w = (unsigned long *)c->s.buf;

    for (unsigned long r = 0; !kc_stop; r++) {
        kc_fill(w, r);
        long err = service_io(&c->s, DRV_WRITE, 4096, (BLKW_FIRST + r % BLKW_BLOCKS) * 4096, 0,
                              &done);
        if (err || done != 4096) {
            c->err = err ? err : -1;
            return;
        }
        c->acked = r + 1;
        /* the latest round written to a random block already written */
        unsigned long b = kc_next(&seed) % (r + 1 < BLKW_BLOCKS ? r + 1 : BLKW_BLOCKS);
        unsigned long last = r - (r + BLKW_BLOCKS - b) % BLKW_BLOCKS;
        if ((err = service_io(&c->s, DRV_READ, 4096, (BLKW_FIRST + b) * 4096, 0, &done))) {
            c->err = err;
            return;
        }
        c->checked++;
        if (done != 4096 || !kc_same(w, last))
            c->wrong++;
        if (r % 8 == 7 && (err = service_call(&c->s, DRV_FLUSH, in, out))) {
            c->err = err;
            return;
        }
    }
}

/* One frame the net client read: an echo reply to seq (checked), to an
 * earlier one (late), an ARP request for us (answered), or anything else
 * (ignored).  1: the reply to seq came. */
static int kc_net_frame(struct kc_client *c, const unsigned char *f, unsigned long n,
                        const unsigned char *mac, struct echo *e)
{
    static unsigned char answer[64];
    const unsigned char *icmp = f + 14 + 20;
    unsigned long done;

    if (n >= 42 && get16(f + 12) == 0x0806 && get16(f + 20) == 1 && get32(f + 38) == GUEST_IP) {
        unsigned long len = arp_frame(answer, 2, mac, f + 22, get32(f + 28));
        memcpy(c->s.buf, answer, len);
        long err = service_io(&c->s, DRV_WRITE, len, 0, 0, &done);
        if (err)
            c->err = err;
        return 0;
    }
    if (n < 14 + 20 + 8 || get16(f + 12) != 0x0800 || f[14 + 9] != 1 || icmp[0] != 0 ||
        get16(icmp + 4) != 0x6b6c)
        return 0;
    unsigned got = get16(icmp + 6);
    if (got != e->seq) {
        if ((unsigned short)(e->seq - got) < 0x8000)
            c->late++; /* an earlier request's reply, late or repeated */
        else
            c->wrong++; /* a reply to what was never asked */
        return 0;
    }
    if (is_echo_reply(f, n, e))
        c->checked++;
    else
        c->wrong++;
    return 1;
}

static void kc_net(struct thread *t)
{
    static unsigned char frame[1514];
    struct kc_client *c = &kc[KC_NET];
    keel_word_t in[KEEL_MSG_WORDS] = { 0 }, out[KEEL_MSG_WORDS];
    unsigned char mac[6], host[6];
    int have_host = 0;
    unsigned long n;
    long err;

    if ((err = service_call(&c->s, DRV_ADDRESS, in, out))) {
        c->err = err;
        return;
    }
    memcpy(mac, &out[0], 6);
    for (unsigned seq = 1; !kc_stop && !c->err;) {
        struct echo e = { seq & 0xffff, 16 + seq * 97 % 1400 };
        unsigned long len = have_host ? ping_frame(c->s.buf, mac, host, e.seq, e.payload)
                                      : arp_frame(c->s.buf, 1, mac, 0, HOST_IP);
        if ((err = service_io(&c->s, DRV_WRITE, len, 0, 0, &n))) {
            c->err = err;
            return;
        }
        for (unsigned long sent = rdtsc(); !kc_stop && rdtsc() - sent < KC_RESEND;) {
            if ((err = service_io(&c->s, DRV_READ, sizeof(frame), 0, 0, &n))) {
                c->err = err;
                return;
            }
            if (!n) {
                keel_yield();
                continue;
            }
            memcpy(frame, c->s.buf, n);
            if (!have_host) {
                if ((have_host = is_arp_reply(frame, n, host)))
                    break;
            } else if (kc_net_frame(c, frame, n, mac, &e)) {
                c->acked = seq++;
                break;
            }
        }
    }
}

static void kc_hvc(struct thread *t)
{
    struct kc_client *c = &kc[KC_HVC];
    unsigned long done;

    for (unsigned long r = 0; !kc_stop; r++) {
        int len = snprintf((char *)c->s.buf, 64, "hvc: line %lu of the kill campaign\n", r);
        long err = service_io(&c->s, DRV_WRITE, (unsigned long)len, 0, 0, &done);
        if (err) {
            c->err = err;
            return;
        }
        if (done != (unsigned long)len)
            c->wrong++;
        c->acked = r + 1;
    }
}

/* Whether name is one of the comma-separated list. */
static int kc_listed(const char *list, const char *name)
{
    size_t n = strlen(name);

    for (const char *p = list; *p;) {
        const char *end = p;
        while (*end && *end != ',')
            end++;
        if ((size_t)(end - p) == n && !memcmp(p, name, n))
            return 1;
        p = *end ? end + 1 : end;
    }
    return 0;
}

static unsigned long kc_progress(void)
{
    unsigned long n = 0;

    for (int i = 0; i < KC_CLIENTS; i++)
        n += kc[i].present ? kc[i].acked : 0;
    return n;
}

static long kc_failed(void)
{
    for (int i = 0; i < KC_CLIENTS; i++)
        if (kc[i].present && kc[i].err)
            return kc[i].err;
    return 0;
}

/* The blk client's last check: every acknowledged round is what its block
 * holds; then a flush. */
static int kc_blk_final(struct kc_client *c)
{
    keel_word_t in[KEEL_MSG_WORDS] = { 0 }, out[KEEL_MSG_WORDS];
    unsigned long done, n = c->acked, *buf = (unsigned long *)c->s.buf;

    for (unsigned long b = 0; b < BLKW_BLOCKS && b < n; b++) {
        unsigned long last = n - 1 - (n - 1 + BLKW_BLOCKS - b) % BLKW_BLOCKS;
        OK(service_io(&c->s, DRV_READ, 4096, (BLKW_FIRST + b) * 4096, 0, &done));
        c->checked++;
        if (!kc_same(buf, last))
            c->wrong++;
    }
    OK(service_call(&c->s, DRV_FLUSH, in, out));
    return 0;
}

int killcampaign_run(void);

int killcampaign_run(void)
{
    struct services svc;
    char val[16] = "20", devs[48] = "blk0,net0,hvc0";
    unsigned long kills = 0, want = 0, seed = rdtsc() | 1, wrong = 0;
    keel_word_t w[2], out[KEEL_MSG_WORDS], in[KEEL_MSG_WORDS] = { 0 };
    unsigned npresent = 0, present[KC_CLIENTS];

    cmdline_get(suite_boot->cmdline, "keel.kills", val, sizeof(val));
    cmdline_get(suite_boot->cmdline, "keel.killdevs", devs, sizeof(devs));
    for (const char *p = val; *p >= '0' && *p <= '9'; p++)
        want = want * 10 + (unsigned long)(*p - '0');
    suite_current = "killcampaign";
    if (services_start(&svc))
        return 1;
    for (unsigned i = 0; i < KC_CLIENTS; i++) {
        struct kc_client *c = &kc[i];
        if (!kc_listed(devs, c->name))
            continue;
        c->s.ns = svc.names;
        c->s.inbox = make_obj(KEEL_OBJ_ENDPOINT, 0);
        c->s.window = slot_alloc_range(4);
        c->s.buf = (unsigned char *)(KC_VA + i * KEEL_PAGE_SIZE);
        c->s.frame = map_new_frame(KC_VA + i * KEEL_PAGE_SIZE, KEEL_RIGHT_READ | KEEL_RIGHT_WRITE);
        ns_pack(c->name, c->s.name);
        long err = service_connect(&c->s);
        if (err == KEEL_E_NOT_MAPPED)
            continue; /* no such device on this machine */
        OK(err);
        c->present = 1;
        present[npresent++] = i;
        OK(spawn(&c->t, c->body, 0));
    }
    EXPECT(npresent > 0);
    while (kills < want && !kc_failed()) {
        unsigned long until = kc_progress() + kc_next(&seed) % 6; /* 0-5 more answers */
        struct kc_client *c = &kc[present[kc_next(&seed) % npresent]];
        while (kc_progress() < until && !kc_failed())
            keel_yield();
        ns_pack(c->name, w);
        in[0] = w[0];
        in[1] = w[1];
        OK(keel_call(svc.devmgr, DM_KILL, in, out));
        c->kills++;
        kills++;
        if (kills % 50 == 0)
            printf("kills: %lu so far, %lu answers\n", kills, kc_progress());
    }
    unsigned long target = kc_progress() + 4 * npresent; /* some more through the last drivers */
    while (kc_progress() < target && !kc_failed())
        keel_yield();
    kc_stop = 1;
    for (unsigned k = 0; k < npresent; k++)
        EXPECT(wait_done(&kc[present[k]].t));
    for (unsigned k = 0; k < npresent; k++) {
        struct kc_client *c = &kc[present[k]];
        EXPECT_ERR(c->err, KEEL_E_OK);
        if (present[k] == KC_BLK && kc_blk_final(c))
            return 1;
        if (present[k] == KC_BLK)
            printf("kills: blk0 %lu kills, %lu writes acknowledged, %lu reads checked, "
                   "%lu wrong answers, %lu retries\n", c->kills, c->acked, c->checked, c->wrong,
                   c->s.retries);
        else if (present[k] == KC_NET)
            printf("kills: net0 %lu kills, %lu echoes checked, %lu late or repeated, "
                   "%lu wrong answers, %lu retries\n", c->kills, c->checked, c->late, c->wrong,
                   c->s.retries);
        else
            printf("kills: hvc0 %lu kills, %lu lines acknowledged, %lu wrong answers, "
                   "%lu retries\n", c->kills, c->acked, c->wrong, c->s.retries);
        wrong += c->wrong;
    }
    printf("kills: %lu kills in all, %lu wrong answers\n", kills, wrong);
    return wrong != 0;
}
