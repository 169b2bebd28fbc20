/* The virtio-mmio (version 2) transport, for user-space drivers: register
 * offsets, status bits and the device-initialisation sequence of the virtio
 * 1.x specification, section 4.2. */
#ifndef KEEL_VIRTIO_H
#define KEEL_VIRTIO_H

#include "keel.h"

#define VIRTIO_MAGIC 0x000
#define VIRTIO_VERSION 0x004
#define VIRTIO_DEVICE_ID 0x008
#define VIRTIO_DEVICE_FEATURES 0x010
#define VIRTIO_DEVICE_FEATURES_SEL 0x014
#define VIRTIO_DRIVER_FEATURES 0x020
#define VIRTIO_DRIVER_FEATURES_SEL 0x024
#define VIRTIO_QUEUE_SEL 0x030
#define VIRTIO_QUEUE_NUM_MAX 0x034
#define VIRTIO_QUEUE_NUM 0x038
#define VIRTIO_QUEUE_READY 0x044
#define VIRTIO_QUEUE_NOTIFY 0x050
#define VIRTIO_INTERRUPT_STATUS 0x060
#define VIRTIO_INTERRUPT_ACK 0x064
#define VIRTIO_STATUS 0x070
#define VIRTIO_QUEUE_DESC 0x080
#define VIRTIO_QUEUE_DRIVER 0x090
#define VIRTIO_QUEUE_DEVICE 0x0a0
#define VIRTIO_CONFIG 0x100

#define VIRTIO_S_ACK 1
#define VIRTIO_S_DRIVER 2
#define VIRTIO_S_DRIVER_OK 4
#define VIRTIO_S_FEATURES_OK 8
#define VIRTIO_S_FAILED 128

#define VIRTQ_DESC_NEXT 1
#define VIRTQ_DESC_WRITE 2

struct virtq_desc {
    unsigned long addr;
    unsigned int len;
    unsigned short flags, next;
};

struct virtio_dev {
    volatile unsigned int *regs;
    unsigned long ring_pa; /* descriptors, then driver (avail), then device (used) areas */
    unsigned char *ring;   /* the same, mapped */
    unsigned qsize;
    unsigned avail_off, used_off;
    unsigned qindex; /* the queue this ring serves (virtio_queue, virtq_kick) */
};

/* Maps the device's register frame at regs_va (the registers at offset
 * `offset` in it) and the queue frame at ring_va, learns the queue frame's
 * physical address and clears it.  A kernel error code, 0 on success. */
static inline long virtio_map(struct virtio_dev *d, keel_cap_t regs_cap, unsigned long regs_va,
                              unsigned long offset, keel_cap_t ring_cap, unsigned long ring_va)
{
    long err;

    if ((err = keel_frame_map(regs_cap, KEEL_SLOT_VSPACE, regs_va,
                              KEEL_RIGHT_READ | KEEL_RIGHT_WRITE)) ||
        (err = keel_frame_map(ring_cap, KEEL_SLOT_VSPACE, ring_va,
                              KEEL_RIGHT_READ | KEEL_RIGHT_WRITE)) ||
        (err = keel_frame_info(ring_cap, &d->ring_pa, 0)))
        return err;
    d->regs = (volatile unsigned int *)(regs_va + (offset & 0xfff));
    d->ring = (unsigned char *)ring_va;
    memset(d->ring, 0, 4096);
    return 0;
}

static inline unsigned int virtio_rd(struct virtio_dev *d, unsigned off)
{
    return d->regs[off / 4];
}

static inline void virtio_wr(struct virtio_dev *d, unsigned off, unsigned int v)
{
    d->regs[off / 4] = v;
}

/* Resets and initialises a version-2 device of the given id with queue 0
 * of qsize entries laid out in d->ring; negotiates VIRTIO_F_VERSION_1 and
 * nothing else.  0 on success, negative naming the step that failed. */
static inline long virtio_setup_features(struct virtio_dev *d, unsigned int device_id,
                                         unsigned qsize, unsigned int want, unsigned int *got);

static inline long virtio_setup(struct virtio_dev *d, unsigned int device_id, unsigned qsize)
{
    return virtio_setup_features(d, device_id, qsize, 0, 0);
}

/* The same, also accepting those of the device-specific feature bits 0-31
 * in want that the device offers; *got (if not null) says which. */
static inline long virtio_setup_features(struct virtio_dev *d, unsigned int device_id,
                                         unsigned qsize, unsigned int want, unsigned int *got)
{
    unsigned long pa;
    unsigned int offered;

    if (virtio_rd(d, VIRTIO_MAGIC) != 0x74726976 || virtio_rd(d, VIRTIO_VERSION) != 2 ||
        virtio_rd(d, VIRTIO_DEVICE_ID) != device_id)
        return -1;
    d->qsize = qsize;
    d->avail_off = qsize * 16;
    d->used_off = (d->avail_off + 6 + 2 * qsize + 3) & ~3u;
    virtio_wr(d, VIRTIO_STATUS, 0);
    virtio_wr(d, VIRTIO_STATUS, VIRTIO_S_ACK);
    virtio_wr(d, VIRTIO_STATUS, VIRTIO_S_ACK | VIRTIO_S_DRIVER);
    virtio_wr(d, VIRTIO_DEVICE_FEATURES_SEL, 1);
    if (!(virtio_rd(d, VIRTIO_DEVICE_FEATURES) & 1))
        return -2;
    virtio_wr(d, VIRTIO_DEVICE_FEATURES_SEL, 0);
    offered = virtio_rd(d, VIRTIO_DEVICE_FEATURES) & want;
    if (got)
        *got = offered;
    virtio_wr(d, VIRTIO_DRIVER_FEATURES_SEL, 0);
    virtio_wr(d, VIRTIO_DRIVER_FEATURES, offered);
    virtio_wr(d, VIRTIO_DRIVER_FEATURES_SEL, 1);
    virtio_wr(d, VIRTIO_DRIVER_FEATURES, 1);
    virtio_wr(d, VIRTIO_STATUS, VIRTIO_S_ACK | VIRTIO_S_DRIVER | VIRTIO_S_FEATURES_OK);
    if (!(virtio_rd(d, VIRTIO_STATUS) & VIRTIO_S_FEATURES_OK))
        return -3;
    virtio_wr(d, VIRTIO_QUEUE_SEL, 0);
    if (virtio_rd(d, VIRTIO_QUEUE_NUM_MAX) < qsize)
        return -4;
    virtio_wr(d, VIRTIO_QUEUE_NUM, qsize);
    pa = d->ring_pa;
    virtio_wr(d, VIRTIO_QUEUE_DESC, (unsigned int)pa);
    virtio_wr(d, VIRTIO_QUEUE_DESC + 4, (unsigned int)(pa >> 32));
    pa = d->ring_pa + d->avail_off;
    virtio_wr(d, VIRTIO_QUEUE_DRIVER, (unsigned int)pa);
    virtio_wr(d, VIRTIO_QUEUE_DRIVER + 4, (unsigned int)(pa >> 32));
    pa = d->ring_pa + d->used_off;
    virtio_wr(d, VIRTIO_QUEUE_DEVICE, (unsigned int)pa);
    virtio_wr(d, VIRTIO_QUEUE_DEVICE + 4, (unsigned int)(pa >> 32));
    virtio_wr(d, VIRTIO_QUEUE_READY, 1);
    virtio_wr(d, VIRTIO_STATUS,
              VIRTIO_S_ACK | VIRTIO_S_DRIVER | VIRTIO_S_FEATURES_OK | VIRTIO_S_DRIVER_OK);
    return 0;
}

static inline struct virtq_desc *virtq_desc(struct virtio_dev *d)
{
    return (struct virtq_desc *)d->ring;
}

static inline volatile unsigned short *virtq_avail_idx(struct virtio_dev *d)
{
    return (volatile unsigned short *)(d->ring + d->avail_off + 2);
}

static inline volatile unsigned short *virtq_avail_ring(struct virtio_dev *d)
{
    return (volatile unsigned short *)(d->ring + d->avail_off + 4);
}

static inline volatile unsigned short *virtq_used_idx(struct virtio_dev *d)
{
    return (volatile unsigned short *)(d->ring + d->used_off + 2);
}

static inline volatile unsigned int *virtq_used_len(struct virtio_dev *d, unsigned slot)
{
    return (volatile unsigned int *)(d->ring + d->used_off + 4 + 8 * (slot % d->qsize) + 4);
}

/* Waits, woken by the device's interrupt (handler irq, bound to
 * notification ntfn), until the used ring moves past seen; clears what the
 * device raised and unmasks the line each time.  Returns the interrupts
 * taken. */
static inline unsigned long virtq_wait_used(struct virtio_dev *d, unsigned short seen,
                                            keel_cap_t irq, keel_cap_t ntfn)
{
    unsigned long taken = 0;

    while (*virtq_used_idx(d) == seen) {
        keel_notification_wait(ntfn, 0);
        virtio_wr(d, VIRTIO_INTERRUPT_ACK, virtio_rd(d, VIRTIO_INTERRUPT_STATUS));
        keel_irq_handler_ack(irq);
        taken++;
    }
    /* Completed without our waiting: clear what it raised all the same, so
     * the line is unmasked and idle for the next request. */
    keel_word_t pending = 0;
    keel_notification_poll(ntfn, &pending);
    unsigned int status = virtio_rd(d, VIRTIO_INTERRUPT_STATUS);
    if (status)
        virtio_wr(d, VIRTIO_INTERRUPT_ACK, status);
    if (pending || status) {
        keel_irq_handler_ack(irq);
        taken += pending != 0;
    }
    return taken;
}

/* Makes the chain starting at descriptor head available and kicks queue 0. */
static inline void virtq_submit(struct virtio_dev *d, unsigned short head)
{
    volatile unsigned short *idx = virtq_avail_idx(d);

    virtq_avail_ring(d)[*idx % d->qsize] = head;
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
    *idx = (unsigned short)(*idx + 1);
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
    virtio_wr(d, VIRTIO_QUEUE_NOTIFY, 0);
}

/* -- Devices with several queues (virtio-console, virtio-net) ---------------
 *
 * One struct virtio_dev per queue: the same registers, a ring frame each
 * (virtio_map_ring), qindex naming the queue.  virtio_begin resets the
 * device and negotiates VIRTIO_F_VERSION_1 and those of `features` (bits
 * 0-31) the device offers, returned in *got; virtio_queue sets up queue
 * d->qindex with qsize entries (a power of two); virtio_go lets the device
 * run.  Negative results name the failed step, as virtio_setup's do. */

/* Maps a queue's frame at ring_va, learns its physical address and clears it. */
static inline long virtio_map_ring(struct virtio_dev *d, keel_cap_t ring_cap, unsigned long ring_va)
{
    long err;

    if ((err = keel_frame_map(ring_cap, KEEL_SLOT_VSPACE, ring_va,
                              KEEL_RIGHT_READ | KEEL_RIGHT_WRITE)) ||
        (err = keel_frame_info(ring_cap, &d->ring_pa, 0)))
        return err;
    d->ring = (unsigned char *)ring_va;
    memset(d->ring, 0, 4096);
    return 0;
}

static inline long virtio_begin(struct virtio_dev *d, unsigned int device_id,
                                unsigned int features, unsigned int *got)
{
    if (virtio_rd(d, VIRTIO_MAGIC) != 0x74726976 || virtio_rd(d, VIRTIO_VERSION) != 2 ||
        virtio_rd(d, VIRTIO_DEVICE_ID) != device_id)
        return -1;
    virtio_wr(d, VIRTIO_STATUS, 0);
    virtio_wr(d, VIRTIO_STATUS, VIRTIO_S_ACK);
    virtio_wr(d, VIRTIO_STATUS, VIRTIO_S_ACK | VIRTIO_S_DRIVER);
    virtio_wr(d, VIRTIO_DEVICE_FEATURES_SEL, 1);
    if (!(virtio_rd(d, VIRTIO_DEVICE_FEATURES) & 1))
        return -2;
    virtio_wr(d, VIRTIO_DEVICE_FEATURES_SEL, 0);
    features &= virtio_rd(d, VIRTIO_DEVICE_FEATURES);
    virtio_wr(d, VIRTIO_DRIVER_FEATURES_SEL, 0);
    virtio_wr(d, VIRTIO_DRIVER_FEATURES, features);
    virtio_wr(d, VIRTIO_DRIVER_FEATURES_SEL, 1);
    virtio_wr(d, VIRTIO_DRIVER_FEATURES, 1);
    virtio_wr(d, VIRTIO_STATUS, VIRTIO_S_ACK | VIRTIO_S_DRIVER | VIRTIO_S_FEATURES_OK);
    if (!(virtio_rd(d, VIRTIO_STATUS) & VIRTIO_S_FEATURES_OK))
        return -3;
    if (got)
        *got = features;
    return 0;
}

static inline long virtio_queue(struct virtio_dev *d, unsigned qsize)
{
    unsigned long pa;

    d->qsize = qsize;
    d->avail_off = qsize * 16;
    d->used_off = (d->avail_off + 6 + 2 * qsize + 3) & ~3u;
    virtio_wr(d, VIRTIO_QUEUE_SEL, d->qindex);
    if (virtio_rd(d, VIRTIO_QUEUE_NUM_MAX) < qsize)
        return -4;
    virtio_wr(d, VIRTIO_QUEUE_NUM, qsize);
    pa = d->ring_pa;
    virtio_wr(d, VIRTIO_QUEUE_DESC, (unsigned int)pa);
    virtio_wr(d, VIRTIO_QUEUE_DESC + 4, (unsigned int)(pa >> 32));
    pa = d->ring_pa + d->avail_off;
    virtio_wr(d, VIRTIO_QUEUE_DRIVER, (unsigned int)pa);
    virtio_wr(d, VIRTIO_QUEUE_DRIVER + 4, (unsigned int)(pa >> 32));
    pa = d->ring_pa + d->used_off;
    virtio_wr(d, VIRTIO_QUEUE_DEVICE, (unsigned int)pa);
    virtio_wr(d, VIRTIO_QUEUE_DEVICE + 4, (unsigned int)(pa >> 32));
    virtio_wr(d, VIRTIO_QUEUE_READY, 1);
    return 0;
}

static inline void virtio_go(struct virtio_dev *d)
{
    virtio_wr(d, VIRTIO_STATUS,
              VIRTIO_S_ACK | VIRTIO_S_DRIVER | VIRTIO_S_FEATURES_OK | VIRTIO_S_DRIVER_OK);
}

/* The head of the chain in used-ring entry slot. */
static inline unsigned int virtq_used_id(struct virtio_dev *d, unsigned slot)
{
    return *(volatile unsigned int *)(d->ring + d->used_off + 4 + 8 * (slot % d->qsize));
}

/* Makes the chain starting at descriptor head available, without a kick. */
static inline void virtq_add(struct virtio_dev *d, unsigned short head)
{
    volatile unsigned short *idx = virtq_avail_idx(d);

    virtq_avail_ring(d)[*idx % d->qsize] = head;
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
    *idx = (unsigned short)(*idx + 1);
}

static inline void virtq_kick(struct virtio_dev *d)
{
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
    virtio_wr(d, VIRTIO_QUEUE_NOTIFY, d->qindex);
}

#endif
