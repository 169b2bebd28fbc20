/* virtio-rng driver: an unprivileged process holding exactly its device's
 * capabilities, nothing else.
 *
 *   slot 5  endpoint it serves: a call answers with 48 random bytes (six words)
 *   slot 6  the device's register frame (device memory)
 *   slot 7  the device's interrupt handler
 *   slot 8  a notification the interrupt signals
 *   slot 9  a frame for the virtqueue and the buffer (it knows its address)
 *   slot 10 its device's io_space: the frames it maps there are all the
 *           device may read or write (DMA windows)
 *   slot 11 a spare frame, mapped for DMA too
 *
 * Its argument is the offset of the device's registers in that frame.
 *
 * Calls it answers (labels above KEEL_LABEL_USER):
 *   +1  48 random bytes, in six result words
 *   +2  w0 = a physical address: have the device write 48 random bytes
 *       there, whatever it is -- how the tests play a driver pointing its
 *       device at memory it was not given; result word 0 is the length the
 *       device reported
 *   +3  the same into the spare frame, by the address learned at start
 *       (still used after the frame was taken away: the window must be gone)
 *
 * It follows the virtio 1.x specification for the virtio-mmio transport
 * (version 2) and the entropy device, not anything particular to Keel's VMM. */
#include "../lib/keel.h"
#include "../lib/virtio.h"

#define SERVICE 5
#define REGS_CAP 6
#define IRQ_CAP 7
#define NTFN_CAP 8
#define RING_CAP 9
#define IO_CAP 10
#define SPARE_CAP 11
#define WINDOW 20

#define REGS_VA 0x5fe000ul /* in the page table its code already uses: it has no memory to make tables */
#define RING_VA 0x5ff000ul
#define QSIZE 8
#define BUF_OFF 1024
#define CHUNK 48

#define VIRTIO_RNG_ID 4

static struct virtio_dev dev;
static unsigned long spare_pa;

/* Has the device write CHUNK random bytes at physical address pa; the
 * length the device reported, negative if it never answered. */
static long fetch_at(unsigned long pa)
{
    struct virtq_desc *d = virtq_desc(&dev);
    unsigned short seen = *virtq_used_idx(&dev);

    d[0].addr = pa;
    d[0].len = CHUNK;
    d[0].flags = VIRTQ_DESC_WRITE;
    d[0].next = 0;
    virtq_submit(&dev, 0);
    for (int spins = 0; *virtq_used_idx(&dev) == seen; spins++) {
        if (spins > 1000)
            return -1;
        keel_notification_wait(NTFN_CAP, 0);
        virtio_wr(&dev, VIRTIO_INTERRUPT_ACK, virtio_rd(&dev, VIRTIO_INTERRUPT_STATUS));
        keel_irq_handler_ack(IRQ_CAP);
    }
    /* Completed without our waiting: clear what it raised all the same, so
     * the line is unmasked and idle for the next request. */
    keel_word_t pending = 0;
    keel_notification_poll(NTFN_CAP, &pending);
    unsigned int status = virtio_rd(&dev, VIRTIO_INTERRUPT_STATUS);
    if (status)
        virtio_wr(&dev, VIRTIO_INTERRUPT_ACK, status);
    if (pending || status)
        keel_irq_handler_ack(IRQ_CAP);
    return *virtq_used_len(&dev, seen);
}

/* Fetches CHUNK random bytes into out; 0 on success. */
static long fetch(unsigned char *out)
{
    long got = fetch_at(dev.ring_pa + BUF_OFF);

    if (got < 0)
        return got;
    if (got < CHUNK)
        return -2;
    memcpy(out, dev.ring + BUF_OFF, CHUNK);
    return 0;
}

long keel_main(keel_word_t arg);

long keel_main(keel_word_t arg)
{
    long err;

    /* The device may use its queue frame (rings and buffer) and the spare
     * frame, nothing else; this must come before the device starts. */
    if ((err = virtio_map(&dev, REGS_CAP, REGS_VA, arg, RING_CAP, RING_VA)) ||
        (err = keel_io_space_map(IO_CAP, RING_CAP, KEEL_RIGHT_READ | KEEL_RIGHT_WRITE)) ||
        (err = keel_frame_info(SPARE_CAP, &spare_pa, 0)) ||
        (err = keel_io_space_map(IO_CAP, SPARE_CAP, KEEL_RIGHT_WRITE)) ||
        (err = keel_irq_handler_set_notification(IRQ_CAP, NTFN_CAP))) {
        printf("virtio-rng: setup failed: %ld\n", err);
        return 0;
    }
    if ((err = virtio_setup(&dev, VIRTIO_RNG_ID, QSIZE))) {
        printf("virtio-rng: device refused: %ld\n", err);
        virtio_wr(&dev, VIRTIO_STATUS, VIRTIO_S_FAILED);
        return 0;
    }
    printf("virtio-rng: ready\n");
    for (;;) {
        struct keel_msg m;
        keel_word_t res[KEEL_MSG_WORDS];
        if (keel_recv(SERVICE, 0, WINDOW, &m) || !(m.info & KEEL_INFO_REPLY))
            continue;
        unsigned long op = m.label - KEEL_LABEL_USER;
        if (op == 2 || op == 3) {
            res[0] = (keel_word_t)fetch_at(op == 2 ? m.w[0] : spare_pa);
            err = res[0] == CHUNK ? 0 : -1;
        } else {
            err = fetch((unsigned char *)res);
        }
        keel_reply(WINDOW, err ? KEEL_E_BAD_STATE : KEEL_E_OK, res);
    }
}
