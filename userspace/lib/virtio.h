/* The virtio-mmio transport, for user-space drivers: register offsets,
 * status bits and the device-initialisation sequence of the virtio 1.x
 * specification, section 4.2 (version 2), and of its legacy interface,
 * section 4.2.4 (version 1: QEMU's default for microvm). */
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
#define VIRTIO_LEGACY_GUEST_PAGE_SIZE 0x028 /* version 1 only */
#define VIRTIO_QUEUE_SEL 0x030
#define VIRTIO_QUEUE_NUM_MAX 0x034
#define VIRTIO_QUEUE_NUM 0x038
#define VIRTIO_LEGACY_QUEUE_ALIGN 0x03c /* version 1 only */
#define VIRTIO_LEGACY_QUEUE_PFN 0x040   /* version 1 only */
#define VIRTIO_QUEUE_READY 0x044
#define VIRTIO_QUEUE_NOTIFY 0x050
#define VIRTIO_INTERRUPT_STATUS 0x060
#define VIRTIO_INTERRUPT_ACK 0x064
#define VIRTIO_STATUS 0x070
#define VIRTIO_QUEUE_DESC 0x080
#define VIRTIO_QUEUE_DRIVER 0x090
#define VIRTIO_QUEUE_DEVICE 0x0a0
#define VIRTIO_CONFIG 0x100

/* A legacy queue's used ring starts at this alignment after the driver area
 * (the driver tells the device through QueueAlign), so the three parts share
 * one frame as they do in version 2, with room for used_event. */
#define VIRTIO_LEGACY_ALIGN 64

#define VIRTIO_S_ACK 1
#define VIRTIO_S_DRIVER 2
#define VIRTIO_S_DRIVER_OK 4
#define VIRTIO_S_FEATURES_OK 8
#define VIRTIO_S_FAILED 128

#define VIRTQ_DESC_NEXT 1
#define VIRTQ_DESC_WRITE 2
#define VIRTQ_AVAIL_F_NO_INTERRUPT 1

/* Feature bit 29: the used event (after the available ring) and the
 * available event (after the used ring) say when the other side wants to
 * hear: kicks and interrupts are suppressed while it is busy anyway. */
#define VIRTIO_F_EVENT_IDX (1u << 29)

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
    unsigned event_idx;    /* VIRTIO_F_EVENT_IDX was negotiated (virtio_begin) */
    unsigned short kicked; /* the available index when virtq_kick last looked */
    unsigned version; /* of the transport: 1 (legacy) or 2, set by virtio_begin */
};

static inline unsigned int virtio_rd(struct virtio_dev *d, unsigned off)
{
    return d->regs[off / 4];
}

static inline void virtio_wr(struct virtio_dev *d, unsigned off, unsigned int v)
{
    d->regs[off / 4] = v;
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

/* Where the driver says which used index it wants an interrupt for, and
 * the device which available index it wants a kick for (EVENT_IDX). */
static inline volatile unsigned short *virtq_used_event(struct virtio_dev *d)
{
    return (volatile unsigned short *)(d->ring + d->avail_off + 4 + 2 * d->qsize);
}

static inline volatile unsigned short *virtq_avail_event(struct virtio_dev *d)
{
    return (volatile unsigned short *)(d->ring + d->used_off + 4 + 8 * d->qsize);
}

/* Whether moving an index from old to new_idx passes event (virtio 1.2, 2.7.10). */
static inline int virtq_need_event(unsigned short event, unsigned short new_idx, unsigned short old)
{
    return (unsigned short)(new_idx - event - 1) < (unsigned short)(new_idx - old);
}

/* Asks for an interrupt once the used index moves past seen, then looks
 * again: nonzero when it already has (no interrupt may come for it: the
 * caller takes what is there first). */
static inline int virtq_arm(struct virtio_dev *d, unsigned short seen)
{
    if (d->event_idx)
        *virtq_used_event(d) = seen;
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
    return *virtq_used_idx(d) != seen;
}

/* A driver that polls: no interrupts (the flag, or with EVENT_IDX a used
 * event half the index space ahead of seen; call again as seen moves). */
static inline void virtq_quiet(struct virtio_dev *d, unsigned short seen)
{
    if (d->event_idx)
        *virtq_used_event(d) = (unsigned short)(seen + 0x8000);
    else
        *(volatile unsigned short *)(d->ring + d->avail_off) = VIRTQ_AVAIL_F_NO_INTERRUPT;
}

/* Acknowledges what the device raised and unmasks its line (handler irq):
 * done before the rings are looked at, so what the device finishes later
 * raises a new edge. */
static inline void virtio_interrupt_ack(struct virtio_dev *d, keel_cap_t irq)
{
    unsigned int status = virtio_rd(d, VIRTIO_INTERRUPT_STATUS);

    if (status)
        virtio_wr(d, VIRTIO_INTERRUPT_ACK, status);
    keel_irq_handler_ack(irq);
}

/* Waits, woken by the device's interrupt (handler irq, bound to
 * notification ntfn), until the used ring moves past seen; clears what the
 * device raised and unmasks the line each time.  Returns the interrupts
 * taken. */
static inline unsigned long virtq_wait_used(struct virtio_dev *d, unsigned short seen,
                                            keel_cap_t irq, keel_cap_t ntfn)
{
    unsigned long taken = 0;

    while (!virtq_arm(d, seen)) {
        keel_notification_wait(ntfn, 0);
        virtio_interrupt_ack(d, irq);
        taken++;
    }
    /* Completed without our waiting: clear what it raised all the same, so
     * the line is unmasked and idle for the next request. */
    keel_word_t pending = 0;
    keel_notification_poll(ntfn, &pending);
    if (pending || virtio_rd(d, VIRTIO_INTERRUPT_STATUS)) {
        virtio_interrupt_ack(d, irq);
        taken += pending != 0;
    }
    return taken;
}

/* -- Bringing a device up ----------------------------------------------------
 *
 * One struct virtio_dev per queue: the same registers, a ring frame each
 * (virtio_map for the first, virtio_map_ring for more), qindex naming the
 * queue.  virtio_begin resets the device and negotiates VIRTIO_F_VERSION_1
 * and those of `features` (device-specific bits 0-31) the device offers,
 * returned in *got (if not null); virtio_queue sets up queue d->qindex with
 * qsize entries (a power of two) laid out in d->ring; virtio_go lets the
 * device run.  virtio_setup does all three for a device with one queue.
 * Negative results name the step that failed: -1 not a version 1 or 2
 * device of that id, -2 a version-2 device without VIRTIO_F_VERSION_1, -3
 * features refused, -4 queue too small.  On a legacy (version 1) device
 * there is no VERSION_1 feature and no FEATURES_OK step; queues are given
 * by page frame number (virtio_queue), and d->version says which it is. */

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

/* Maps the device's register frame at regs_va (the registers at offset
 * `offset` in it) and queue 0's frame at ring_va (virtio_map_ring).  A
 * kernel error code, 0 on success. */
static inline long virtio_map(struct virtio_dev *d, keel_cap_t regs_cap, unsigned long regs_va,
                              unsigned long offset, keel_cap_t ring_cap, unsigned long ring_va)
{
    long err = keel_frame_map(regs_cap, KEEL_SLOT_VSPACE, regs_va,
                              KEEL_RIGHT_READ | KEEL_RIGHT_WRITE);

    if (err)
        return err;
    d->regs = (volatile unsigned int *)(regs_va + (offset & 0xfff));
    d->qindex = 0;
    return virtio_map_ring(d, ring_cap, ring_va);
}

static inline long virtio_begin(struct virtio_dev *d, unsigned int device_id,
                                unsigned int features, unsigned int *got)
{
    unsigned int version = virtio_rd(d, VIRTIO_VERSION);

    if (virtio_rd(d, VIRTIO_MAGIC) != 0x74726976 || (version != 1 && version != 2) ||
        virtio_rd(d, VIRTIO_DEVICE_ID) != device_id)
        return -1;
    d->version = version;
    virtio_wr(d, VIRTIO_STATUS, 0);
    virtio_wr(d, VIRTIO_STATUS, VIRTIO_S_ACK);
    virtio_wr(d, VIRTIO_STATUS, VIRTIO_S_ACK | VIRTIO_S_DRIVER);
    if (version == 1) {
        virtio_wr(d, VIRTIO_DEVICE_FEATURES_SEL, 0);
        features &= virtio_rd(d, VIRTIO_DEVICE_FEATURES);
        virtio_wr(d, VIRTIO_DRIVER_FEATURES_SEL, 0);
        virtio_wr(d, VIRTIO_DRIVER_FEATURES, features);
        virtio_wr(d, VIRTIO_LEGACY_GUEST_PAGE_SIZE, 4096);
        if (got)
            *got = features;
        d->event_idx = (features & VIRTIO_F_EVENT_IDX) != 0;
        return 0;
    }
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
    d->event_idx = (features & VIRTIO_F_EVENT_IDX) != 0;
    return 0;
}

static inline long virtio_queue(struct virtio_dev *d, unsigned qsize)
{
    unsigned long pa;

    d->qsize = qsize;
    d->kicked = 0;
    d->avail_off = qsize * 16;
    d->used_off = (d->avail_off + 6 + 2 * qsize + 3) & ~3u;
    virtio_wr(d, VIRTIO_QUEUE_SEL, d->qindex);
    if (virtio_rd(d, VIRTIO_QUEUE_NUM_MAX) < qsize)
        return -4;
    virtio_wr(d, VIRTIO_QUEUE_NUM, qsize);
    if (d->version == 1) {
        /* The device puts the used ring at the first multiple of QueueAlign
         * after the avail ring's flags, index and entries. */
        d->used_off = (d->avail_off + 4 + 2 * qsize + VIRTIO_LEGACY_ALIGN - 1) &
                      ~(VIRTIO_LEGACY_ALIGN - 1u);
        virtio_wr(d, VIRTIO_LEGACY_QUEUE_ALIGN, VIRTIO_LEGACY_ALIGN);
        virtio_wr(d, VIRTIO_LEGACY_QUEUE_PFN, (unsigned int)(d->ring_pa >> 12));
        return 0;
    }
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
    unsigned int negotiated = d->version == 1 ? 0 : VIRTIO_S_FEATURES_OK;

    virtio_wr(d, VIRTIO_STATUS, VIRTIO_S_ACK | VIRTIO_S_DRIVER | negotiated | VIRTIO_S_DRIVER_OK);
}

/* A device with one queue (d->qindex, normally 0) of qsize entries. */
static inline long virtio_setup(struct virtio_dev *d, unsigned int device_id, unsigned qsize,
                                unsigned int features, unsigned int *got)
{
    long err;

    if ((err = virtio_begin(d, device_id, features, got)) || (err = virtio_queue(d, qsize)))
        return err;
    virtio_go(d);
    return 0;
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

/* Tells the device about what virtq_add made available since the last
 * kick; with EVENT_IDX only if the device asked (it is not busy with the
 * queue already). */
static inline void virtq_kick(struct virtio_dev *d)
{
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
    if (d->event_idx) {
        unsigned short now = *virtq_avail_idx(d), old = d->kicked;

        d->kicked = now;
        if (!virtq_need_event(*virtq_avail_event(d), now, old))
            return;
    }
    virtio_wr(d, VIRTIO_QUEUE_NOTIFY, d->qindex);
}

/* virtq_add and virtq_kick. */
static inline void virtq_submit(struct virtio_dev *d, unsigned short head)
{
    virtq_add(d, head);
    virtq_kick(d);
}

#endif
