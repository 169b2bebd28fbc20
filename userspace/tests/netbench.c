/* keel.test=netbench: virtio-net throughput through the user-space driver
 * (userspace/drivers/virtio_net.c), as a client sees it, several frames per
 * call (DRV_MANY).  The host side is scripts/bench --net, on the TAP's other
 * end in a network namespace of its own; the same guest runs under Keel's
 * VMM and under QEMU microvm.  Frames are of the local experimental type
 * 0x88b5, payload a 4-byte tag then the sequence number:
 *
 *   guest -> host: keel.frames= frames (default 2000) of 60 bytes, then as
 *       many of 1514, as fast as the driver takes them, each size ended by
 *       a frame tagged "kbte" with the count, which the host checks;
 *   host -> guest: a frame tagged "kbrq" asks for that many frames of the
 *       size; the host keeps at most NB_WINDOW of them unacknowledged and
 *       the guest acknowledges ("kbak", count received) every NB_ACK, so
 *       nothing is dropped for want of buffers (the driver keeps 8 waiting).
 *
 * keel.many=0 moves one frame per call instead (plain DRV_WRITE and
 * DRV_READ), to compare.
 *
 * Reports `kbench: net_<dir>_<size>_{frames,bytes,time}` (rdtsc cycles from
 * the first frame sent or received to the last) and net_errors. */
#include "../lib/driver.h"
#include "netpkt.h"
#include "suite.h"

#define NB_VA 0x20280000ul /* the client's buffer page */
#define NB_TYPE 0x88b5
#define NB_WINDOW 8
#define NB_ACK 4
#define NB_SMALL 60
#define NB_LARGE 1514

int netbench_run(void);

static keel_word_t ep, handle;
static int one; /* keel.many=0: one frame per call (no DRV_MANY), for comparison */
static unsigned char *page = (unsigned char *)NB_VA;
static unsigned char mac[6];
static unsigned long errors;

static long call(keel_word_t label, keel_word_t off, keel_word_t len, keel_word_t flags,
                 keel_word_t *done)
{
    keel_word_t in[KEEL_MSG_WORDS] = { handle, off, len, 0, flags, 0 }, out[KEEL_MSG_WORDS] = { 0 };
    long err = keel_call(ep, label, in, out);

    *done = out[0];
    return err;
}

/* A frame of n bytes with tag and sequence number at f. */
static void nb_frame(unsigned char *f, unsigned long n, const char *tag, unsigned long seq)
{
    static const unsigned char bcast[6] = { 0xff, 0xff, 0xff, 0xff, 0xff, 0xff };
    unsigned char *p = f + eth_header(f, bcast, mac, NB_TYPE);

    memset(p, 0, n - 14);
    memcpy(p, tag, 4);
    put32(p + 4, seq);
}

/* Sends the records of [0, len) of the page, again from where the driver
 * stopped until all are sent. */
static int send_records(unsigned long len)
{
    unsigned long at = 0;

    while (at < len) {
        keel_word_t done;
        long err;
        if ((err = call(DRV_WRITE, at, len - at, DRV_MANY, &done)) || !done || done > len - at) {
            printf("netbench: write of %lu bytes gave %ld, %lu\n", len - at, err, done);
            errors++;
            return 1;
        }
        at += done;
    }
    return 0;
}

static int control(const char *tag, unsigned long n, unsigned long size)
{
    unsigned char f[NB_SMALL];

    nb_frame(f, sizeof(f), tag, n);
    put32(f + 22, size);
    return send_records(drv_frame_put(page, f, sizeof(f)));
}

static void report(const char *what, unsigned long frames, unsigned long size, unsigned long t)
{
    printf("kbench: net_%s_frames %lu frames\n", what, frames);
    printf("kbench: net_%s_bytes %lu bytes\n", what, frames * size);
    printf("kbench: net_%s_time %lu cycles\n", what, t);
}

static int tx(const char *what, unsigned long frames, unsigned long size)
{
    static unsigned char f[NB_LARGE];
    unsigned long seq = 0, t0 = rdtsc();

    while (one && seq < frames) {
        keel_word_t done;
        nb_frame(page, size, "kbtx", seq++);
        if (call(DRV_WRITE, 0, size, 0, &done) || done != size) {
            errors++;
            return 1;
        }
    }
    while (seq < frames) {
        unsigned long len = 0;
        for (; seq < frames && len + DRV_FRAME_LEN + size <= KEEL_PAGE_SIZE; seq++) {
            nb_frame(f, size, "kbtx", seq);
            len += drv_frame_put(page + len, f, size);
        }
        if (send_records(len))
            return 1;
    }
    unsigned long t = rdtsc() - t0;
    if (control("kbte", frames, size))
        return 1;
    report(what, frames, size, t);
    return 0;
}

static int is_ours(const unsigned char *f, unsigned long n, const char *tag)
{
    return n >= 22 && get16(f + 12) == NB_TYPE && !memcmp(f + 14, tag, 4);
}

static int rx(const char *what, unsigned long frames, unsigned long size)
{
    unsigned long got = 0, acked = 0, t0 = 0, next = 0;

    if (control("kbrq", frames, size))
        return 1;
    while (got < frames) {
        keel_word_t done, room = KEEL_PAGE_SIZE - DRV_FRAME_LEN;
        long err = one ? call(DRV_READ, DRV_FRAME_LEN, room, DRV_WAIT, &done)
                       : call(DRV_READ, 0, KEEL_PAGE_SIZE, DRV_MANY | DRV_WAIT, &done);
        if (err || done > room) {
            printf("netbench: read gave %ld, %lu\n", err, done);
            errors++;
            return 1;
        }
        if (one) { /* the frame as the only record */
            page[0] = (unsigned char)done;
            page[1] = (unsigned char)(done >> 8);
            done += DRV_FRAME_LEN;
        }
        for (unsigned long at = 0, n; at + DRV_FRAME_LEN <= done; at += DRV_FRAME_LEN + n) {
            unsigned char *f = page + at + DRV_FRAME_LEN;
            n = drv_frame_len(page + at);
            if (!is_ours(f, n, "kbrx"))
                continue; /* something of the host's own */
            if (!got++)
                t0 = rdtsc();
            if (n != size || get32(f + 18) != next++)
                errors++;
        }
        if (got - acked >= NB_ACK || got == frames) {
            acked = got;
            if (control("kbak", acked, size))
                return 1;
        }
    }
    report(what, frames - 1, size, rdtsc() - t0); /* the first frame started the clock */
    return 0;
}

int netbench_run(void)
{
    keel_word_t in[KEEL_MSG_WORDS] = { 0 }, out[KEEL_MSG_WORDS], addr[KEEL_MSG_WORDS], frame;
    unsigned long frames = 2000;
    char v[24];
    struct process p;

    if (cmdline_get(boot_info()->cmdline, "keel.frames", v, sizeof(v)) && v[0]) {
        frames = 0;
        for (const char *c = v; *c >= '0' && *c <= '9'; c++)
            frames = frames * 10 + (unsigned long)(*c - '0');
    }
    if (frames < 2)
        frames = 2;
    one = cmdline_get(boot_info()->cmdline, "keel.many", v, sizeof(v)) && v[0] == '0';
    ep = make_obj(KEEL_OBJ_ENDPOINT, 0);
    if (virtio_start_mode("virtio_net", 1, 0, ep, &p))
        return 1;
    frame = map_new_frame(NB_VA, KEEL_RIGHT_READ | KEEL_RIGHT_WRITE);
    in[0] = frame;
    if (keel_call(ep, DRV_OPEN, in, out) || keel_call(ep, DRV_ADDRESS, in, addr)) {
        printf("netbench: the driver did not answer\n");
        return 1;
    }
    handle = out[0];
    memcpy(mac, &addr[0], 6);
    if (tx("tx_small", frames, NB_SMALL) || tx("tx_large", frames, NB_LARGE) ||
        rx("rx_small", frames, NB_SMALL) || rx("rx_large", frames, NB_LARGE))
        return 1;
    printf("kbench: net_errors %lu errors\n", errors);
    process_kill(&p);
    return errors != 0;
}
