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
 *   slot 19, 20  two frames: four 2 KiB transmit buffers
 *
 * Its argument is the offset of the device's registers in that frame.
 *
 * Every receive buffer is posted at start; a filled one waits for a read
 * and is posted again as soon as it is read.  When more than half are
 * waiting, the oldest frame is dropped so the device never runs dry.  A
 * write is copied behind a zero virtio-net header into a transmit buffer
 * and answered when the device has used it.  Only VIRTIO_F_VERSION_1 and
 * VIRTIO_NET_F_MAC are negotiated (no offloads, no mergeable buffers), as
 * the virtio 1.x specification describes, not anything particular to
 * Keel's VMM. */
#include "../lib/virtio.h"
#include "serve.h"

#define REGS_CAP 6
#define IRQ_CAP 7
#define NTFN_CAP 8
#define RXQ_CAP 9
#define TXQ_CAP 10
#define RXBUF_CAP 11
#define TXBUF_CAP 19

#define VIRTIO_NET_ID 1
#define VIRTIO_NET_F_MAC (1u << 5)
#define HDR 12 /* struct virtio_net_hdr with num_buffers (VERSION_1) */
#define BUF_SIZE 2048
#define RX_BUFS 16
#define TX_BUFS 4
#define RX_HOLD_MAX (RX_BUFS / 2)
#define ETH_MIN 14
#define ETH_MAX 1514

#define REGS_VA SERVE_DEVICE_VA
#define RXQ_VA (SERVE_DEVICE_VA + 0x1000)
#define TXQ_VA (SERVE_DEVICE_VA + 0x2000)
#define RXBUF_VA SERVE_DRIVER_VA
#define TXBUF_VA (SERVE_DRIVER_VA + RX_BUFS * BUF_SIZE)

static struct virtio_dev rxq, txq;
static unsigned short rx_seen, tx_seen;
static unsigned long rx_pa[RX_BUFS], tx_pa[TX_BUFS];
static unsigned long tx_tag[TX_BUFS]; /* 0: free */
static unsigned long tx_len[TX_BUFS];
/* Received frames waiting for a read: a ring of rx_nheld from rx_first. */
static unsigned short rx_held[RX_BUFS], rx_held_len[RX_BUFS];
static unsigned rx_first, rx_nheld;
static unsigned long dropped;
static unsigned char mac[6];

static unsigned char *rx_buf(unsigned id)
{
    return (unsigned char *)RXBUF_VA + id * BUF_SIZE;
}

static void rx_post(unsigned short id)
{
    virtq_desc(&rxq)[id] = (struct virtq_desc){ rx_pa[id], BUF_SIZE, VIRTQ_DESC_WRITE, 0 };
    virtq_add(&rxq, id);
}

/* Gives the oldest held frame's buffer back to the device. */
static void rx_release(void)
{
    rx_post(rx_held[rx_first]);
    rx_first = (rx_first + 1) % RX_BUFS;
    rx_nheld--;
}

static void net_interrupt(void)
{
    unsigned int status = virtio_rd(&rxq, VIRTIO_INTERRUPT_STATUS);
    int repost = 0;

    if (status)
        virtio_wr(&rxq, VIRTIO_INTERRUPT_ACK, status);
    keel_irq_handler_ack(IRQ_CAP); /* before looking: later work raises a new edge */
    for (; rx_seen != *virtq_used_idx(&rxq); rx_seen++) {
        __atomic_thread_fence(__ATOMIC_ACQUIRE);
        unsigned int id = virtq_used_id(&rxq, rx_seen), len = *virtq_used_len(&rxq, rx_seen);
        if (id >= RX_BUFS || rx_nheld == RX_BUFS)
            continue; /* a device that does not follow the rules: ignore it */
        if (len < HDR + ETH_MIN || len > BUF_SIZE) {
            rx_post((unsigned short)id); /* nothing a client could use */
            repost = 1;
            continue;
        }
        unsigned last = (rx_first + rx_nheld++) % RX_BUFS;
        rx_held[last] = (unsigned short)id;
        rx_held_len[last] = (unsigned short)(len - HDR);
        if (rx_nheld > RX_HOLD_MAX) {
            rx_release();
            dropped++;
            repost = 1;
        }
    }
    if (repost)
        virtq_kick(&rxq);
    for (; tx_seen != *virtq_used_idx(&txq); tx_seen++) {
        __atomic_thread_fence(__ATOMIC_ACQUIRE);
        unsigned int id = virtq_used_id(&txq, tx_seen);
        if (id < TX_BUFS && tx_tag[id]) {
            serve_complete(tx_tag[id], KEEL_E_OK, tx_len[id]);
            tx_tag[id] = 0;
        }
    }
}

static long net_read(struct drv_req *r)
{
    if (!rx_nheld)
        return 0;
    unsigned short id = rx_held[rx_first], len = rx_held_len[rx_first];
    if (r->len < len)
        return -KEEL_E_INVALID_ARG; /* the frame stays for a read with room */
    memcpy(r->buf, rx_buf(id) + HDR, len);
    rx_release();
    virtq_kick(&rxq);
    return len;
}

static long net_write(struct drv_req *r)
{
    unsigned short id;

    if (r->len < ETH_MIN || r->len > ETH_MAX)
        return -KEEL_E_INVALID_ARG;
    for (id = 0; id < TX_BUFS && tx_tag[id]; id++)
        ;
    if (id == TX_BUFS)
        return SERVE_RETRY; /* every buffer with the device: after its interrupt */
    unsigned char *b = (unsigned char *)TXBUF_VA + id * BUF_SIZE;
    memset(b, 0, HDR);
    memcpy(b + HDR, r->buf, r->len);
    virtq_desc(&txq)[id] = (struct virtq_desc){ tx_pa[id], (unsigned int)(HDR + r->len), 0, 0 };
    tx_tag[id] = r->tag;
    tx_len[id] = r->len;
    virtq_submit(&txq, id);
    return SERVE_LATER;
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
    .features = 0,
    .read = net_read,
    .write = net_write,
    .interrupt = net_interrupt,
    .other = net_other,
};

/* Maps count frames from slot cap on at va, BUF_SIZE pieces; their addresses in pa. */
static long map_buffers(keel_cap_t cap, unsigned long va, unsigned count, unsigned long *pa)
{
    long err;

    for (unsigned i = 0; i < count * (KEEL_PAGE_SIZE / BUF_SIZE); i++) {
        unsigned long page = i / (KEEL_PAGE_SIZE / BUF_SIZE), frame_pa;
        if (i % (KEEL_PAGE_SIZE / BUF_SIZE) == 0 &&
            ((err = keel_frame_map(cap + page, KEEL_SLOT_VSPACE, va + page * KEEL_PAGE_SIZE,
                                   KEEL_RIGHT_READ | KEEL_RIGHT_WRITE))))
            return err;
        if ((err = keel_frame_info(cap + page, &frame_pa, 0)))
            return err;
        pa[i] = frame_pa + (i % (KEEL_PAGE_SIZE / BUF_SIZE)) * BUF_SIZE;
    }
    return 0;
}

long keel_main(keel_word_t arg);

long keel_main(keel_word_t arg)
{
    unsigned int features = 0;
    long err;

    txq.qindex = 1;
    if ((err = virtio_map(&rxq, REGS_CAP, REGS_VA, arg, RXQ_CAP, RXQ_VA)) ||
        (err = virtio_map_ring(&txq, TXQ_CAP, TXQ_VA)) ||
        (err = map_buffers(RXBUF_CAP, RXBUF_VA, RX_BUFS * BUF_SIZE / KEEL_PAGE_SIZE, rx_pa)) ||
        (err = map_buffers(TXBUF_CAP, TXBUF_VA, TX_BUFS * BUF_SIZE / KEEL_PAGE_SIZE, tx_pa)) ||
        (err = keel_irq_handler_set_notification(IRQ_CAP, NTFN_CAP)) ||
        (err = serve_bind(NTFN_CAP)))
        serve_fail(ops.name, "setup failed", err);
    txq.regs = rxq.regs;
    if ((err = virtio_begin(&rxq, VIRTIO_NET_ID, VIRTIO_NET_F_MAC, &features)) ||
        (err = virtio_queue(&rxq, RX_BUFS)) || (err = virtio_queue(&txq, TX_BUFS))) {
        virtio_wr(&rxq, VIRTIO_STATUS, VIRTIO_S_FAILED);
        serve_fail(ops.name, "device refused", err);
    }
    if (features & VIRTIO_NET_F_MAC) {
        for (int i = 0; i < 6; i++)
            mac[i] = ((volatile unsigned char *)rxq.regs)[VIRTIO_CONFIG + i];
    } else { /* none given: a locally administered one of our own */
        unsigned long t = rdtsc();
        mac[0] = 0x02;
        memcpy(mac + 1, &t, 5);
    }
    virtio_go(&rxq);
    for (unsigned short id = 0; id < RX_BUFS; id++)
        rx_post(id);
    virtq_kick(&rxq);
    printf("virtio-net: mac %02x:%02x:%02x:%02x:%02x:%02x\n", mac[0], mac[1], mac[2], mac[3],
           mac[4], mac[5]);
    serve_run(&ops);
}
