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

#define MAGIC 0x000
#define VERSION 0x004
#define DEVICE_ID 0x008
#define DEVICE_FEATURES 0x010
#define DEVICE_FEATURES_SEL 0x014
#define DRIVER_FEATURES 0x020
#define DRIVER_FEATURES_SEL 0x024
#define QUEUE_SEL 0x030
#define QUEUE_NUM_MAX 0x034
#define QUEUE_NUM 0x038
#define QUEUE_READY 0x044
#define QUEUE_NOTIFY 0x050
#define INTERRUPT_STATUS 0x060
#define INTERRUPT_ACK 0x064
#define STATUS 0x070
#define QUEUE_DESC 0x080
#define QUEUE_DRIVER 0x090
#define QUEUE_DEVICE 0x0a0

#define S_ACK 1
#define S_DRIVER 2
#define S_DRIVER_OK 4
#define S_FEATURES_OK 8
#define S_FAILED 128
#define VIRTIO_RNG_ID 4
#define DESC_WRITE 2

struct desc {
    unsigned long addr;
    unsigned int len;
    unsigned short flags, next;
};

struct avail {
    unsigned short flags, idx, ring[QSIZE], used_event;
};

struct used {
    unsigned short flags, idx;
    struct {
        unsigned int id, len;
    } ring[QSIZE];
};

static volatile unsigned int *regs; /* REGS_VA + the device's offset in its page */

static unsigned int rd(unsigned off)
{
    return regs[off / 4];
}

static void wr(unsigned off, unsigned int v)
{
    regs[off / 4] = v;
}

static long setup(unsigned long ring_pa)
{
    if (rd(MAGIC) != 0x74726976 || rd(VERSION) != 2 || rd(DEVICE_ID) != VIRTIO_RNG_ID)
        return -1;
    wr(STATUS, 0); /* reset */
    wr(STATUS, S_ACK);
    wr(STATUS, S_ACK | S_DRIVER);
    wr(DEVICE_FEATURES_SEL, 1);
    if (!(rd(DEVICE_FEATURES) & 1)) /* VIRTIO_F_VERSION_1 */
        return -2;
    wr(DRIVER_FEATURES_SEL, 0);
    wr(DRIVER_FEATURES, 0);
    wr(DRIVER_FEATURES_SEL, 1);
    wr(DRIVER_FEATURES, 1);
    wr(STATUS, S_ACK | S_DRIVER | S_FEATURES_OK);
    if (!(rd(STATUS) & S_FEATURES_OK))
        return -3;
    wr(QUEUE_SEL, 0);
    if (rd(QUEUE_NUM_MAX) < QSIZE)
        return -4;
    wr(QUEUE_NUM, QSIZE);
    wr(QUEUE_DESC, (unsigned int)ring_pa);
    wr(QUEUE_DESC + 4, (unsigned int)(ring_pa >> 32));
    wr(QUEUE_DRIVER, (unsigned int)(ring_pa + 128));
    wr(QUEUE_DRIVER + 4, (unsigned int)((ring_pa + 128) >> 32));
    wr(QUEUE_DEVICE, (unsigned int)(ring_pa + 256));
    wr(QUEUE_DEVICE + 4, (unsigned int)((ring_pa + 256) >> 32));
    wr(QUEUE_READY, 1);
    wr(STATUS, S_ACK | S_DRIVER | S_FEATURES_OK | S_DRIVER_OK);
    return 0;
}

/* Fetches CHUNK random bytes into out; 0 on success. */
static long fetch(unsigned long ring_pa, unsigned char *out)
{
    struct desc *d = (struct desc *)RING_VA;
    struct avail *av = (struct avail *)(RING_VA + 128);
    volatile struct used *u = (volatile struct used *)(RING_VA + 256);
    unsigned short seen = u->idx;

    d[0].addr = ring_pa + BUF_OFF;
    d[0].len = CHUNK;
    d[0].flags = DESC_WRITE;
    d[0].next = 0;
    av->ring[av->idx % QSIZE] = 0;
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
    av->idx++;
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
    wr(QUEUE_NOTIFY, 0);
    for (int spins = 0; u->idx == seen; spins++) {
        if (spins > 1000)
            return -1;
        keel_notification_wait(NTFN_CAP, 0);
        wr(INTERRUPT_ACK, rd(INTERRUPT_STATUS));
        keel_irq_handler_ack(IRQ_CAP);
    }
    /* Completed without our waiting: clear what it raised all the same, so
     * the line is unmasked and idle for the next request. */
    keel_word_t pending = 0;
    keel_notification_poll(NTFN_CAP, &pending);
    unsigned int status = rd(INTERRUPT_STATUS);
    if (status)
        wr(INTERRUPT_ACK, status);
    if (pending || status)
        keel_irq_handler_ack(IRQ_CAP);
    if (u->ring[seen % QSIZE].len < CHUNK)
        return -2;
    memcpy(out, (void *)(RING_VA + BUF_OFF), CHUNK);
    return 0;
}

long keel_main(keel_word_t arg);

long keel_main(keel_word_t arg)
{
    unsigned long ring_pa;
    long err;

    regs = (volatile unsigned int *)(REGS_VA + (arg & 0xfff));
    if ((err = keel_frame_map(REGS_CAP, KEEL_SLOT_VSPACE, REGS_VA,
                              KEEL_RIGHT_READ | KEEL_RIGHT_WRITE)) ||
        (err = keel_frame_map(RING_CAP, KEEL_SLOT_VSPACE, RING_VA,
                              KEEL_RIGHT_READ | KEEL_RIGHT_WRITE)) ||
        (err = keel_frame_info(RING_CAP, &ring_pa, 0)) ||
        (err = keel_irq_handler_set_notification(IRQ_CAP, NTFN_CAP))) {
        printf("virtio-rng: setup failed: %ld\n", err);
        return 0;
    }
    memset((void *)RING_VA, 0, 4096);
    if ((err = setup(ring_pa))) {
        printf("virtio-rng: device refused: %ld\n", err);
        wr(STATUS, S_FAILED);
        return 0;
    }
    printf("virtio-rng: ready\n");
    for (;;) {
        struct keel_msg m;
        keel_word_t res[KEEL_MSG_WORDS];
        if (keel_recv(SERVICE, 0, WINDOW, &m) || !(m.info & KEEL_INFO_REPLY))
            continue;
        err = fetch(ring_pa, (unsigned char *)res);
        keel_reply(WINDOW, err ? KEEL_E_BAD_STATE : KEEL_E_OK, res);
    }
}
