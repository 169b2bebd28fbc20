/* What the virtio-console and virtio-net drivers share on top of serve.h:
 * a receive queue (0) and a transmit queue (1), their setup, the interrupt
 * acknowledgement, transmit buffers answered once the device used them, and
 * the filled receive buffers waiting for clients.  The device may reach
 * only the frames the driver maps in its io_space (docs/iommu.md): the two
 * rings and the driver's own buffers; clients' data is copied. */
#ifndef KEEL_VIRTIO_SERVE_H
#define KEEL_VIRTIO_SERVE_H

#include "../lib/virtio.h"
#include "serve.h"

#define VS_MAX_BUFS 16

/* The slots both drivers are given (virtio_blk's layout: the DMA frames
 * from slot 9, the io_space in slot 26); the transmit buffers' first frame
 * follows the receive buffers' and is the driver's to say. */
#define VS_RXQ_CAP DRV_SLOT_DMA
#define VS_TXQ_CAP (DRV_SLOT_DMA + 1)
#define VS_RXBUF_CAP (DRV_SLOT_DMA + 2)

/* Maps frames from slot cap on at va, cut into nbufs buffers of size bytes
 * (a divisor of the page size), and lets the device at them through the
 * io_space io with dma_rights (KEEL_RIGHT_WRITE: it fills them, READ: it
 * reads them); their physical addresses go to pa. */
static inline long vs_map_buffers(keel_cap_t cap, unsigned long va, unsigned nbufs, unsigned size,
                                  keel_cap_t io, keel_word_t dma_rights, unsigned long *pa)
{
    unsigned per = KEEL_PAGE_SIZE / size;
    unsigned long frame_pa = 0;
    long err;

    for (unsigned i = 0; i < nbufs; i++) {
        keel_cap_t frame = cap + i / per;
        if (i % per == 0 &&
            ((err = keel_frame_map(frame, KEEL_SLOT_VSPACE, va + i / per * KEEL_PAGE_SIZE,
                                   KEEL_RIGHT_READ | KEEL_RIGHT_WRITE)) ||
             (err = keel_frame_info(frame, &frame_pa, 0)) ||
             (err = keel_io_space_map(io, frame, dma_rights))))
            return err;
        pa[i] = frame_pa + (i % per) * size;
    }
    return 0;
}

/* Transmit buffers, one descriptor each (descriptor i is buffer i). */
struct vs_tx {
    struct virtio_dev *q;
    unsigned n, size;
    unsigned char *va;
    unsigned short seen;
    unsigned long pa[VS_MAX_BUFS], tag[VS_MAX_BUFS] /* 0: free */, len[VS_MAX_BUFS];
};

/* A free transmit buffer (t->n: none). */
static inline unsigned short vs_tx_free(const struct vs_tx *t)
{
    unsigned short id;

    for (id = 0; id < t->n && t->tag[id]; id++)
        ;
    return id;
}

/* Puts n bytes behind hdr zero bytes into free buffer id and makes it
 * available (no kick); tag is the request it answers. */
static inline void vs_tx_post(struct vs_tx *t, unsigned short id, const unsigned char *p,
                              unsigned long n, unsigned hdr, unsigned long tag)
{
    unsigned char *b = t->va + id * t->size;

    memset(b, 0, hdr);
    memcpy(b + hdr, p, n);
    virtq_desc(t->q)[id] = (struct virtq_desc){ t->pa[id], (unsigned int)(hdr + n), 0, 0 };
    t->tag[id] = tag;
    virtq_add(t->q, id);
}

/* Sends r's bytes behind hdr zero bytes; answered by vs_tx_reap. */
static inline long vs_tx_send(struct vs_tx *t, struct drv_req *r, unsigned hdr)
{
    unsigned short id = vs_tx_free(t);

    if (id == t->n)
        return SERVE_RETRY; /* every buffer with the device: after its interrupt */
    vs_tx_post(t, id, r->buf, r->len, hdr, r->tag);
    t->len[id] = r->len;
    virtq_kick(t->q);
    return SERVE_LATER;
}

/* DRV_MANY: sends r's records (frames of min..max bytes), as many as there
 * are free buffers for, with one kick; answered by vs_tx_reap once the
 * device has used them all, with the bytes of the records sent. */
static inline long vs_tx_send_many(struct vs_tx *t, struct drv_req *r, unsigned hdr,
                                   unsigned long min, unsigned long max)
{
    unsigned long at = 0, n;
    unsigned short id, ids[VS_MAX_BUFS], k = 0;

    for (at = 0; at < r->len; at += DRV_FRAME_LEN + n) { /* every record well formed */
        if (r->len - at < DRV_FRAME_LEN || (n = drv_frame_len(r->buf + at)) < min || n > max ||
            n > r->len - at - DRV_FRAME_LEN)
            return -KEEL_E_INVALID_ARG;
    }
    if (!r->len)
        return 0;
    for (at = 0; at < r->len && (id = vs_tx_free(t)) < t->n; at += DRV_FRAME_LEN + n) {
        n = drv_frame_len(r->buf + at);
        vs_tx_post(t, id, r->buf + at + DRV_FRAME_LEN, n, hdr, r->tag);
        ids[k++] = id;
    }
    if (!k)
        return SERVE_RETRY;
    while (k--)
        t->len[ids[k]] = at;
    virtq_kick(t->q);
    return SERVE_LATER;
}

/* Answers the writes whose buffers the device has used (a DRV_MANY write
 * when its last buffer comes back); asks for an interrupt for the next one. */
static inline void vs_tx_reap(struct vs_tx *t)
{
    do {
        for (; t->seen != *virtq_used_idx(t->q); t->seen++) {
            __atomic_thread_fence(__ATOMIC_ACQUIRE);
            unsigned int id = virtq_used_id(t->q, t->seen);
            if (id < t->n && t->tag[id]) {
                unsigned long tag = t->tag[id];
                unsigned short other;
                t->tag[id] = 0;
                for (other = 0; other < t->n && t->tag[other] != tag; other++)
                    ;
                if (other == t->n)
                    serve_complete(tag, KEEL_E_OK, t->len[id]);
            }
        }
    } while (virtq_arm(t->q, t->seen));
}

/* Filled receive buffers (descriptor i is buffer i) not yet given back,
 * oldest first. */
struct vs_rx {
    struct virtio_dev *q;
    unsigned n, size;
    unsigned char *va;
    unsigned short seen;
    unsigned long pa[VS_MAX_BUFS];
    unsigned short id[VS_MAX_BUFS], len[VS_MAX_BUFS];
    unsigned first, count;
};

static inline void vs_rx_post(struct vs_rx *x, unsigned short id)
{
    virtq_desc(x->q)[id] = (struct virtq_desc){ x->pa[id], x->size, VIRTQ_DESC_WRITE, 0 };
    virtq_add(x->q, id);
}

static inline void vs_rx_post_all(struct vs_rx *x)
{
    for (unsigned short id = 0; id < x->n; id++)
        vs_rx_post(x, id);
    virtq_kick(x->q);
}

/* Takes what the device filled into the waiting list; asks for an
 * interrupt for the next one. */
static inline void vs_rx_collect(struct vs_rx *x)
{
    do {
        for (; x->seen != *virtq_used_idx(x->q); x->seen++) {
            __atomic_thread_fence(__ATOMIC_ACQUIRE);
            unsigned int id = virtq_used_id(x->q, x->seen), len = *virtq_used_len(x->q, x->seen);
            if (id >= x->n || x->count == x->n)
                continue; /* a device that does not follow the rules: ignore it */
            unsigned last = (x->first + x->count++) % x->n;
            x->id[last] = (unsigned short)id;
            x->len[last] = (unsigned short)(len > x->size ? x->size : len);
        }
    } while (virtq_arm(x->q, x->seen));
}

/* The oldest filled buffer's bytes (and *len), or NULL. */
static inline unsigned char *vs_rx_oldest(struct vs_rx *x, unsigned *len)
{
    if (!x->count)
        return NULL;
    *len = x->len[x->first];
    return x->va + x->id[x->first] * x->size;
}

/* Gives the oldest filled buffer back to the device (kick separately). */
static inline void vs_rx_release(struct vs_rx *x)
{
    vs_rx_post(x, x->id[x->first]);
    x->first = (x->first + 1) % x->n;
    x->count--;
}

/* Maps the driver's buffers, the registers and both rings (at
 * SERVE_DEVICE_VA), lets the device at the rings and buffers through the
 * io_space, binds the interrupt, and brings the device up to the point of
 * going (vs_go) with rxsize and txsize queue entries; *features: asked for,
 * then what was negotiated.  Reports and stops on failure. */
static inline void vs_setup(const char *name, struct vs_rx *rx, struct vs_tx *tx,
                            keel_cap_t txbuf_cap, unsigned int device_id, unsigned int *features,
                            keel_word_t arg, unsigned rxsize, unsigned txsize)
{
    struct virtio_dev *rxq = rx->q, *txq = tx->q;
    long err;

    if ((err = vs_map_buffers(VS_RXBUF_CAP, (unsigned long)rx->va, rx->n, rx->size,
                              DRV_SLOT_IO_SPACE, KEEL_RIGHT_WRITE, rx->pa)) ||
        (err = vs_map_buffers(txbuf_cap, (unsigned long)tx->va, tx->n, tx->size,
                              DRV_SLOT_IO_SPACE, KEEL_RIGHT_READ, tx->pa)) ||
        (err = virtio_map(rxq, DRV_SLOT_REGS, SERVE_DEVICE_VA, DRV_ARG_OFFSET(arg), VS_RXQ_CAP,
                          SERVE_DEVICE_VA + 0x1000)) ||
        (err = virtio_map_ring(txq, VS_TXQ_CAP, SERVE_DEVICE_VA + 0x2000)) ||
        (err = keel_io_space_map(DRV_SLOT_IO_SPACE, VS_RXQ_CAP, KEEL_RIGHT_READ | KEEL_RIGHT_WRITE)) ||
        (err = keel_io_space_map(DRV_SLOT_IO_SPACE, VS_TXQ_CAP, KEEL_RIGHT_READ | KEEL_RIGHT_WRITE)) ||
        (err = keel_irq_handler_set_notification(DRV_SLOT_IRQ, DRV_SLOT_NTFN)) ||
        (err = serve_bind(DRV_SLOT_NTFN)))
        serve_fail(name, "setup failed", err);
    txq->regs = rxq->regs;
    txq->qindex = 1;
    *features |= VIRTIO_F_EVENT_IDX;
    err = virtio_begin(rxq, device_id, *features, features);
    txq->version = rxq->version;
    txq->event_idx = rxq->event_idx;
    if (err || (err = virtio_queue(rxq, rxsize)) || (err = virtio_queue(txq, txsize))) {
        virtio_wr(rxq, VIRTIO_STATUS, VIRTIO_S_FAILED);
        serve_fail(name, "device refused", err);
    }
}

/* Lets the device run and gives it every receive buffer. */
static inline void vs_go(struct vs_rx *rx)
{
    virtio_go(rx->q);
    vs_rx_post_all(rx);
}

#endif
