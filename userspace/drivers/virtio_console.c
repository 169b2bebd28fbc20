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
 *   slot 26  its device's io_space: the frames above are all the device may
 *            read or write (DMA windows).  Slot 26 as for virtio_blk: the
 *            frames are the first of 17 from slot 9, the rest unused.
 *
 * Its argument is DRV_ARG(mode, offset of the device's registers in that
 * frame); the mode does not matter.
 *
 * Receive buffers stay posted; what the device fills goes to a queue that
 * reads take from, and a buffer is posted again once the queue has room for
 * all it can hold (until then the device holds what the host typed).  A
 * write is copied to a transmit buffer and answered when the device has
 * used it, so an answered write is with the device.  It follows the virtio
 * 1.x specification (virtio-mmio, console device), not Keel's VMM. */
#include "virtio_serve.h"

#define REGS_CAP 6
#define IRQ_CAP 7
#define NTFN_CAP 8
#define RXQ_CAP 9
#define TXQ_CAP 10
#define RXBUF_CAP 11
#define IO_CAP 26
#define TXBUF_CAP 12

#define VIRTIO_CONSOLE_ID 3
#define QSIZE 8
#define RX_BUF_SIZE 512 /* QSIZE of them fill one frame */
#define TX_BUFS 2       /* a page each */

static struct virtio_dev rxq, txq;
static struct vs_rx rx = {
    .q = &rxq, .n = QSIZE, .size = RX_BUF_SIZE, .va = (unsigned char *)SERVE_DRIVER_VA
};
static struct vs_tx tx = { .q = &txq, .n = TX_BUFS, .size = KEEL_PAGE_SIZE,
                           .va = (unsigned char *)SERVE_DRIVER_VA + KEEL_PAGE_SIZE };
static struct bytering in;

/* Moves filled buffers into the byte queue while it has room, reposting them. */
static void rx_drain(void)
{
    unsigned char *p;
    unsigned len, posted = 0;

    while ((p = vs_rx_oldest(&rx, &len)) && bytering_room(&in) >= len) {
        bytering_put(&in, p, len);
        vs_rx_release(&rx);
        posted++;
    }
    if (posted)
        virtq_kick(&rxq);
}

static void vcon_interrupt(void)
{
    vs_interrupt_ack(&rxq, IRQ_CAP);
    vs_rx_collect(&rx);
    rx_drain();
    vs_tx_reap(&tx);
}

static long vcon_read(struct drv_req *r)
{
    long n = (long)bytering_get(&in, r->buf, r->len);

    rx_drain();
    return n;
}

static long vcon_write(struct drv_req *r)
{
    return r->len ? vs_tx_send(&tx, r, 0) : 0;
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
    unsigned int features = 0;
    long err;

    if ((err = vs_map_buffers(RXBUF_CAP, (unsigned long)rx.va, QSIZE, RX_BUF_SIZE, IO_CAP,
                               KEEL_RIGHT_WRITE, rx.pa)) ||
        (err = vs_map_buffers(TXBUF_CAP, (unsigned long)tx.va, TX_BUFS, KEEL_PAGE_SIZE, IO_CAP,
                               KEEL_RIGHT_READ, tx.pa)))
        serve_fail(ops.name, "setup failed", err);
    vs_setup(ops.name, &rxq, &txq, VIRTIO_CONSOLE_ID, &features, DRV_ARG_OFFSET(arg), REGS_CAP, RXQ_CAP, TXQ_CAP,
             IRQ_CAP, NTFN_CAP, IO_CAP, QSIZE, QSIZE);
    virtio_go(&rxq);
    vs_rx_post_all(&rx);
    serve_run(&ops);
}
