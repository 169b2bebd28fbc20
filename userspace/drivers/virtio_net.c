/* virtio-net driver: an unprivileged process holding exactly its device's
 * capabilities, serving the packet protocol of userspace/lib/driver.h: a
 * write sends one Ethernet frame, a read returns one received frame, and
 * DRV_ADDRESS answers the MAC address the device's configuration gives.
 *
 *   slot 5   endpoint it serves
 *   slot 6   the device's register frame (device memory)
 *   slot 7   the device's interrupt handler
 *   slot 8   a notification the interrupt signals
 *   slot 9   a frame for the receive queue (queue 0)
 *   slot 10  a frame for the transmit queue (queue 1)
 *   slot 11..18  eight frames: sixteen 2 KiB receive buffers
 *   slot 19..25  seven frames: fourteen 2 KiB transmit buffers
 *   slot 26  its device's io_space: the frames above are all the device may
 *            read or write (DMA windows).  Slot 26 as for virtio_blk: the
 *            17 frames from slot 9.
 *
 * Its argument is DRV_ARG(mode, offset of the device's registers in that
 * frame); the mode does not matter.
 *
 * Every receive buffer is posted at start; a filled one waits for a read
 * and is posted again as soon as it is read.  When more than half are
 * waiting, the oldest frame is dropped so the device never runs dry.  A
 * write is copied behind a zero virtio-net header into a transmit buffer
 * and answered when the device has used it.  With DRV_MANY (driver.h) a
 * client moves several frames per call: a write puts every record it has
 * a free buffer for in flight with one kick, a read takes every waiting
 * frame that fits and gives their buffers back with one kick.  Only
 * VIRTIO_F_VERSION_1 and VIRTIO_NET_F_MAC are negotiated (no offloads, no
 * mergeable buffers), as the virtio 1.x specification describes, not
 * anything particular to Keel's VMM. */
#include "virtio_serve.h"

#define TXBUF_CAP 19 /* the other slots: virtio_serve.h */

#define VIRTIO_NET_ID 1
#define VIRTIO_NET_F_MAC (1u << 5)
/* struct virtio_net_hdr: with num_buffers (12 bytes) under VERSION_1, without
 * (10) on a legacy device, which Keel does not offer VIRTIO_NET_F_MRG_RXBUF. */
#define HDR (rxq.version == 1 ? 10u : 12u)
#define BUF_SIZE 2048
#define RX_BUFS 16
#define TX_BUFS 14
#define TX_QSIZE 16 /* a power of two: the ring's indexes wrap at 65536 */
#define RX_HOLD_MAX (RX_BUFS / 2)
#define ETH_MIN 14
#define ETH_MAX 1514

static struct virtio_dev rxq, txq;
static struct vs_rx rx = {
    .q = &rxq, .n = RX_BUFS, .size = BUF_SIZE, .va = (unsigned char *)SERVE_DRIVER_VA
};
static struct vs_tx tx = { .q = &txq, .n = TX_BUFS, .size = BUF_SIZE,
                           .va = (unsigned char *)SERVE_DRIVER_VA + RX_BUFS * BUF_SIZE };
static unsigned long dropped;
static unsigned char mac[6];

/* The oldest frame a client can use; frames too short to carry an
 * Ethernet header go back to the device on the way. */
static unsigned char *rx_oldest(unsigned *len, unsigned *kick)
{
    unsigned char *p;

    while ((p = vs_rx_oldest(&rx, len)) && *len < HDR + ETH_MIN) {
        vs_rx_release(&rx);
        *kick = 1;
    }
    return p;
}

static void net_interrupt(void)
{
    unsigned len, kick = 0;

    virtio_interrupt_ack(&rxq, DRV_SLOT_IRQ);
    vs_rx_collect(&rx);
    /* Past RX_HOLD_MAX waiting, the oldest goes: the device always has buffers. */
    while (rx_oldest(&len, &kick) && rx.count > RX_HOLD_MAX) {
        vs_rx_release(&rx);
        dropped++;
        kick = 1;
    }
    if (kick)
        virtq_kick(&rxq);
    vs_tx_reap(&tx);
}

static long net_read(struct drv_req *r)
{
    unsigned len, kick = 0;
    unsigned char *p = rx_oldest(&len, &kick);
    long n = 0;

    if (r->flags & DRV_MANY) { /* every waiting frame that fits, as records */
        unsigned long at = 0;
        for (; p && DRV_FRAME_LEN + len - HDR <= r->len - at; p = rx_oldest(&len, &kick)) {
            at += drv_frame_put(r->buf + at, p + HDR, len - HDR);
            vs_rx_release(&rx);
            kick = 1;
        }
        n = !at && p ? -KEEL_E_INVALID_ARG : (long)at; /* no room even for the oldest */
    } else if (p && r->len < len - HDR) {
        n = -KEEL_E_INVALID_ARG; /* the frame stays for a read with room */
    } else if (p) {
        memcpy(r->buf, p + HDR, len - HDR);
        vs_rx_release(&rx);
        kick = 1;
        n = len - HDR;
    }
    if (kick)
        virtq_kick(&rxq);
    return n;
}

static long net_write(struct drv_req *r)
{
    if (r->flags & DRV_MANY)
        return vs_tx_send_many(&tx, r, HDR, ETH_MIN, ETH_MAX);
    if (r->len < ETH_MIN || r->len > ETH_MAX)
        return -KEEL_E_INVALID_ARG;
    return vs_tx_send(&tx, r, HDR);
}

static long net_other(struct keel_msg *m, keel_word_t res[KEEL_MSG_WORDS])
{
    if ((m->label & KEEL_LABEL_MASK) != DRV_ADDRESS)
        return KEEL_E_UNKNOWN_CALL;
    res[0] = 0;
    memcpy(&res[0], mac, 6);
    res[1] = dropped;
    return KEEL_E_OK;
}

static const struct serve_ops ops = {
    .name = "virtio-net",
    .kind = DRV_KIND_PACKET,
    .read = net_read,
    .write = net_write,
    .interrupt = net_interrupt,
    .other = net_other,
};

long keel_main(keel_word_t arg);

long keel_main(keel_word_t arg)
{
    unsigned int features = VIRTIO_NET_F_MAC;

    vs_setup(ops.name, &rx, &tx, TXBUF_CAP, VIRTIO_NET_ID, &features, arg, RX_BUFS, TX_QSIZE);
    if (features & VIRTIO_NET_F_MAC) {
        for (int i = 0; i < 6; i++)
            mac[i] = ((volatile unsigned char *)rxq.regs)[VIRTIO_CONFIG + i];
    } else { /* none given: a locally administered one of our own */
        unsigned long t = rdtsc();
        mac[0] = 0x02;
        memcpy(mac + 1, &t, 5);
    }
    vs_go(&rx);
    printf("virtio-net: mac %02x:%02x:%02x:%02x:%02x:%02x\n", mac[0], mac[1], mac[2], mac[3],
           mac[4], mac[5]);
    serve_run(&ops);
}
