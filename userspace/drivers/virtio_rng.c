/* virtio-rng driver: an unprivileged process holding exactly its device's
 * capabilities, nothing else.
 *
 *   slot 5  endpoint it serves on the request loop every driver shares
 *           (serve.c): userspace/lib/driver.h (DRV_READ fills a range of
 *           the client's buffer), and the labels below
 *   slot 6  the device's register frame (device memory)
 *   slot 7  the device's interrupt handler
 *   slot 8  a notification the interrupt signals
 *   slot 9  a frame for the virtqueue and the buffer (it knows its address)
 *   slot 10 a spare frame (optional), mapped for DMA too
 *   slot 26 its device's io_space: the frames it maps there are all the
 *           device may read or write (DMA windows)
 *
 * Its argument is DRV_ARG(mode, offset of the device's registers in that
 * frame); the mode does not matter.
 *
 * Calls it answers (labels above KEEL_LABEL_USER):
 *   +1  48 random bytes, in six result words
 *   +2  w0 = a physical address: have the device write 48 random bytes
 *       there, whatever it is -- how the tests play a driver pointing its
 *       device at memory it was not given; result word 0 is the length the
 *       device reported
 *   +3  the same into the spare frame, by the address learned at start
 *       (still used after the frame was taken away: the window must be gone)
 *   +4  result word 0: whether a completion that came after the interrupt
 *       status was cleared, while the line was still masked, is delivered
 *       once the line is unmasked (late_interrupt)
 *
 * It follows the virtio 1.x specification for the virtio-mmio transport
 * (version 2) and the entropy device, not anything particular to Keel's VMM. */
#include "../lib/virtio.h"
#include "serve.h"

#define REGS_CAP DRV_SLOT_REGS
#define IRQ_CAP DRV_SLOT_IRQ
#define NTFN_CAP DRV_SLOT_NTFN
#define RING_CAP DRV_SLOT_DMA
#define SPARE_CAP (DRV_SLOT_DMA + 1)
#define IO_CAP DRV_SLOT_IO_SPACE
#define LABEL_INLINE (KEEL_LABEL_USER + 1)
#define LABEL_AT (KEEL_LABEL_USER + 2)
#define LABEL_SPARE (KEEL_LABEL_USER + 3)
#define LABEL_LATE (KEEL_LABEL_USER + 4)
#define LATE_WAIT (1ul << 32) /* TSC cycles, 1-2 s: a delivery is at once */

#define REGS_VA SERVE_DEVICE_VA
#define RING_VA (SERVE_DEVICE_VA + 0x1000)
#define QSIZE 8
#define BUF_OFF 1024
#define CHUNK 48
#define MAX_FETCH 3072

#define VIRTIO_RNG_ID 4

static struct virtio_dev dev;
static unsigned long spare_pa;

/* Has the device write up to n random bytes at physical address pa; the
 * length the device reported. */
static long fetch_at(unsigned long pa, unsigned long n)
{
    struct virtq_desc *d = virtq_desc(&dev);
    unsigned short seen = *virtq_used_idx(&dev);

    d[0].addr = pa;
    d[0].len = (unsigned int)n;
    d[0].flags = VIRTQ_DESC_WRITE;
    d[0].next = 0;
    virtq_submit(&dev, 0);
    serve_interrupts += virtq_wait_used(&dev, seen, IRQ_CAP, NTFN_CAP);
    return *virtq_used_len(&dev, seen);
}

/* Fetches up to n (at most MAX_FETCH) random bytes into out: how many, or
 * negative when the device failed. */
static long fetch(unsigned char *out, unsigned long n)
{
    long got = fetch_at(dev.ring_pa + BUF_OFF, n);

    if (got <= 0 || (unsigned long)got > n)
        return -2;
    memcpy(out, dev.ring + BUF_OFF, (unsigned long)got);
    return got;
}

/* Plays the window every wake-up has: the device's interrupt status is
 * cleared (its line goes down), then the device completes another request
 * while the kernel still keeps the line masked, then the line is unmasked.
 * 1 if an interrupt is delivered then (a level-triggered line, up again,
 * is: QEMU's), 0 if not (an edge that came while masked is lost), -1 if
 * the device did not complete.  The device and line are left clean. */
static long late_interrupt(void)
{
    struct virtq_desc *d = virtq_desc(&dev);
    unsigned short seen = *virtq_used_idx(&dev);
    keel_word_t got = 0;

    d[0].addr = dev.ring_pa + BUF_OFF;
    d[0].len = CHUNK;
    d[0].flags = VIRTQ_DESC_WRITE;
    d[0].next = 0;
    virtq_arm(&dev, seen);
    virtq_submit(&dev, 0);
    keel_notification_wait(NTFN_CAP, 0); /* the kernel masked the line */
    seen = *virtq_used_idx(&dev);
    unsigned int status = virtio_rd(&dev, VIRTIO_INTERRUPT_STATUS);
    if (status)
        virtio_wr(&dev, VIRTIO_INTERRUPT_ACK, status);
    virtq_arm(&dev, seen);
    virtq_submit(&dev, 0);
    for (unsigned long t0 = rdtsc(); *virtq_used_idx(&dev) == seen && rdtsc() - t0 < LATE_WAIT;)
        keel_yield();
    long done = *virtq_used_idx(&dev) != seen;
    keel_irq_handler_ack(IRQ_CAP);
    for (unsigned long t0 = rdtsc(); done && !got && rdtsc() - t0 < LATE_WAIT;) {
        keel_notification_poll(NTFN_CAP, &got);
        if (!got)
            keel_yield();
    }
    virtio_interrupt_ack(&dev, IRQ_CAP);
    return done ? got != 0 : -1;
}

static long rng_read(struct drv_req *r)
{
    for (unsigned long done = 0; done < r->len;) {
        unsigned long n = r->len - done < MAX_FETCH ? r->len - done : MAX_FETCH;
        long got = fetch(r->buf + done, n);
        if (got < 0)
            return -KEEL_E_BAD_STATE;
        done += (unsigned long)got;
    }
    return (long)r->len;
}

static long rng_other(struct keel_msg *m, keel_word_t res[KEEL_MSG_WORDS])
{
    keel_word_t label = m->label & KEEL_LABEL_MASK;

    switch (label) {
    case LABEL_INLINE:
        for (long got, done = 0; done < CHUNK; done += got) {
            if ((got = fetch((unsigned char *)res + done, CHUNK - (unsigned long)done)) < 0)
                return KEEL_E_BAD_STATE;
        }
        return KEEL_E_OK;
    case LABEL_AT:
    case LABEL_SPARE:
        if (label == LABEL_SPARE && !spare_pa)
            return KEEL_E_BAD_STATE;
        res[0] = (keel_word_t)fetch_at(label == LABEL_AT ? m->w[0] : spare_pa, CHUNK);
        return res[0] == CHUNK ? KEEL_E_OK : KEEL_E_BAD_STATE;
    case LABEL_LATE:
        res[0] = (keel_word_t)late_interrupt();
        return KEEL_E_OK;
    }
    return KEEL_E_UNKNOWN_CALL;
}

static const struct serve_ops ops = {
    .name = "virtio-rng",
    .kind = DRV_KIND_ENTROPY,
    .read = rng_read,
    .other = rng_other,
};

long keel_main(keel_word_t arg);

long keel_main(keel_word_t arg)
{
    long err;

    /* The device may use its queue frame (rings and buffer) and the spare
     * frame, nothing else; this must come before the device starts. */
    if ((err = virtio_map(&dev, REGS_CAP, REGS_VA, DRV_ARG_OFFSET(arg), RING_CAP, RING_VA)) ||
        (err = keel_io_space_map(IO_CAP, RING_CAP, KEEL_RIGHT_READ | KEEL_RIGHT_WRITE)) ||
        (err = keel_irq_handler_set_notification(IRQ_CAP, NTFN_CAP)))
        serve_fail(ops.name, "setup failed", err);
    if (!keel_frame_info(SPARE_CAP, &spare_pa, 0) &&
        keel_io_space_map(IO_CAP, SPARE_CAP, KEEL_RIGHT_WRITE))
        spare_pa = 0;
    if ((err = virtio_setup(&dev, VIRTIO_RNG_ID, QSIZE, VIRTIO_F_EVENT_IDX, 0))) {
        virtio_wr(&dev, VIRTIO_STATUS, VIRTIO_S_FAILED);
        serve_fail(ops.name, "device refused", err);
    }
    serve_run(&ops);
}
