/* virtio-rng driver: an unprivileged process holding exactly its device's
 * capabilities, nothing else.
 *
 *   slot 5  endpoint it serves: a call answers with 48 random bytes (six words)
 *   slot 6  the device's register frame (device memory)
 *   slot 7  the device's interrupt handler
 *   slot 8  a notification the interrupt signals
 *   slot 9  a frame for the virtqueue and the buffer (it knows its address)
 *
 * Its argument is the offset of the device's registers in that frame.
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
#define WINDOW 20

#define REGS_VA 0x5fe000ul /* in the page table its code already uses: it has no memory to make tables */
#define RING_VA 0x5ff000ul
#define QSIZE 8
#define BUF_OFF 1024
#define CHUNK 48

#define VIRTIO_RNG_ID 4

static struct virtio_dev dev;

/* Fetches CHUNK random bytes into out; 0 on success. */
static long fetch(unsigned char *out)
{
    struct virtq_desc *d = virtq_desc(&dev);
    unsigned short seen = *virtq_used_idx(&dev);

    d[0].addr = dev.ring_pa + BUF_OFF;
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
    if (*virtq_used_len(&dev, seen) < CHUNK)
        return -2;
    memcpy(out, dev.ring + BUF_OFF, CHUNK);
    return 0;
}

long keel_main(keel_word_t arg);

long keel_main(keel_word_t arg)
{
    long err;

    if ((err = virtio_map(&dev, REGS_CAP, REGS_VA, arg, RING_CAP, RING_VA)) ||
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
        err = fetch((unsigned char *)res);
        keel_reply(WINDOW, err ? KEEL_E_BAD_STATE : KEEL_E_OK, res);
    }
}
