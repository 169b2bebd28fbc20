/* virtio-console driver: an unprivileged process holding exactly its
 * device's capabilities, serving the stream protocol of
 * userspace/lib/driver.h for port 0 (no multiport).
 *
 *   slot 5   endpoint it serves
 *   slot 6   the device's register frame (device memory)
 *   slot 7   the device's interrupt handler
 *   slot 8   a notification the interrupt signals
 *   slot 9   a frame for the receive queue (queue 0)
 *   slot 10  a frame for the transmit queue (queue 1)
 *   slot 11  a frame of receive buffers
 *   slot 12, 13  two frames of transmit buffers
 *
 * Its argument is the offset of the device's registers in that frame.
 *
 * Receive buffers stay posted; what the device fills goes to a queue that
 * reads take from, and a buffer is posted again once the queue has room for
 * all it can hold (until then the device holds what the host typed).  A
 * write is copied to a transmit buffer and answered when the device has
 * used it, so an answered write is with the device.  It follows the virtio
 * 1.x specification (virtio-mmio, console device), not Keel's VMM. */
#include "../lib/virtio.h"
#include "serve.h"

#define REGS_CAP 6
#define IRQ_CAP 7
#define NTFN_CAP 8
#define RXQ_CAP 9
#define TXQ_CAP 10
#define RXBUF_CAP 11
#define TXBUF_CAP 12
#define TX_BUFS 2

#define VIRTIO_CONSOLE_ID 3
#define QSIZE 8
#define RX_BUFS QSIZE
#define RX_BUF_SIZE 512 /* QSIZE of them fill one frame */

#define REGS_VA SERVE_DEVICE_VA
#define RXQ_VA (SERVE_DEVICE_VA + 0x1000)
#define TXQ_VA (SERVE_DEVICE_VA + 0x2000)
#define RXBUF_VA SERVE_DRIVER_VA
#define TXBUF_VA (SERVE_DRIVER_VA + 0x1000)

static struct virtio_dev rxq, txq;
static unsigned short rx_seen, tx_seen;
static struct bytering rx;
static unsigned long rxbuf_pa, txbuf_pa[TX_BUFS];
static unsigned long tx_tag[TX_BUFS]; /* 0: free */
static unsigned long tx_len[TX_BUFS];
/* Filled receive buffers waiting for room in the byte queue: a ring of
 * rx_nwaiting from rx_first, oldest first. */
static unsigned short rx_waiting[RX_BUFS], rx_waiting_len[RX_BUFS];
static unsigned rx_first, rx_nwaiting;

static void rx_post(unsigned short id)
{
    struct virtq_desc *d = virtq_desc(&rxq);

    d[id] = (struct virtq_desc){ rxbuf_pa + id * RX_BUF_SIZE, RX_BUF_SIZE, VIRTQ_DESC_WRITE, 0 };
    virtq_add(&rxq, id);
}

/* Moves filled buffers into the byte queue while it has room, reposting them. */
static void rx_drain(void)
{
    unsigned posted = 0;

    while (rx_nwaiting && bytering_room(&rx) >= rx_waiting_len[rx_first]) {
        unsigned short id = rx_waiting[rx_first];
        bytering_put(&rx, (unsigned char *)RXBUF_VA + id * RX_BUF_SIZE, rx_waiting_len[rx_first]);
        rx_first = (rx_first + 1) % RX_BUFS;
        rx_nwaiting--;
        rx_post(id);
        posted++;
    }
    if (posted)
        virtq_kick(&rxq);
}

static void vcon_interrupt(void)
{
    unsigned int status = virtio_rd(&rxq, VIRTIO_INTERRUPT_STATUS);

    if (status)
        virtio_wr(&rxq, VIRTIO_INTERRUPT_ACK, status);
    keel_irq_handler_ack(IRQ_CAP); /* before looking: later work raises a new edge */
    for (; rx_seen != *virtq_used_idx(&rxq); rx_seen++) {
        __atomic_thread_fence(__ATOMIC_ACQUIRE);
        unsigned int id = virtq_used_id(&rxq, rx_seen), len = *virtq_used_len(&rxq, rx_seen);
        if (id >= RX_BUFS || rx_nwaiting == RX_BUFS)
            continue; /* a device that does not follow the rules: ignore it */
        unsigned last = (rx_first + rx_nwaiting++) % RX_BUFS;
        rx_waiting[last] = (unsigned short)id;
        rx_waiting_len[last] = (unsigned short)(len > RX_BUF_SIZE ? RX_BUF_SIZE : len);
    }
    rx_drain();
    for (; tx_seen != *virtq_used_idx(&txq); tx_seen++) {
        __atomic_thread_fence(__ATOMIC_ACQUIRE);
        unsigned int id = virtq_used_id(&txq, tx_seen);
        if (id < TX_BUFS && tx_tag[id]) {
            serve_complete(tx_tag[id], KEEL_E_OK, tx_len[id]);
            tx_tag[id] = 0;
        }
    }
}

static long vcon_read(struct drv_req *r)
{
    long n = (long)bytering_get(&rx, r->buf, r->len);

    rx_drain();
    return n;
}

static long vcon_write(struct drv_req *r)
{
    unsigned short id;

    if (!r->len)
        return 0;
    for (id = 0; id < TX_BUFS && tx_tag[id]; id++)
        ;
    if (id == TX_BUFS)
        return SERVE_RETRY; /* both buffers with the device: after its interrupt */
    memcpy((unsigned char *)TXBUF_VA + id * KEEL_PAGE_SIZE, r->buf, r->len);
    virtq_desc(&txq)[id] = (struct virtq_desc){ txbuf_pa[id], (unsigned int)r->len, 0, 0 };
    tx_tag[id] = r->tag;
    tx_len[id] = r->len;
    virtq_submit(&txq, id);
    return SERVE_LATER;
}

static const struct serve_ops ops = {
    .name = "virtio-console",
    .kind = DRV_KIND_STREAM,
    .read = vcon_read,
    .write = vcon_write,
    .interrupt = vcon_interrupt,
};

long keel_main(keel_word_t arg);

long keel_main(keel_word_t arg)
{
    long err;

    txq.qindex = 1;
    if ((err = virtio_map(&rxq, REGS_CAP, REGS_VA, arg, RXQ_CAP, RXQ_VA)) ||
        (err = virtio_map_ring(&txq, TXQ_CAP, TXQ_VA)) ||
        (err = keel_frame_map(RXBUF_CAP, KEEL_SLOT_VSPACE, RXBUF_VA,
                              KEEL_RIGHT_READ | KEEL_RIGHT_WRITE)) ||
        (err = keel_frame_info(RXBUF_CAP, &rxbuf_pa, 0)))
        serve_fail(ops.name, "setup failed", err);
    for (unsigned i = 0; i < TX_BUFS; i++) {
        if ((err = keel_frame_map(TXBUF_CAP + i, KEEL_SLOT_VSPACE, TXBUF_VA + i * KEEL_PAGE_SIZE,
                                  KEEL_RIGHT_READ | KEEL_RIGHT_WRITE)) ||
            (err = keel_frame_info(TXBUF_CAP + i, &txbuf_pa[i], 0)))
            serve_fail(ops.name, "setup failed", err);
    }
    txq.regs = rxq.regs;
    if ((err = keel_irq_handler_set_notification(IRQ_CAP, NTFN_CAP)) ||
        (err = serve_bind(NTFN_CAP)))
        serve_fail(ops.name, "setup failed", err);
    if ((err = virtio_begin(&rxq, VIRTIO_CONSOLE_ID, 0, 0)) || (err = virtio_queue(&rxq, QSIZE)) ||
        (err = virtio_queue(&txq, QSIZE))) {
        virtio_wr(&rxq, VIRTIO_STATUS, VIRTIO_S_FAILED);
        serve_fail(ops.name, "device refused", err);
    }
    virtio_go(&rxq);
    for (unsigned short id = 0; id < RX_BUFS; id++)
        rx_post(id);
    virtq_kick(&rxq);
    serve_run(&ops);
}
