/* virtio-blk driver: an unprivileged process holding its device's
 * capabilities and the frames it may point the device at.
 *
 *   slot 5  endpoint: it serves requests there (benchmark mode: reports there)
 *   slot 6  the device's register frame (device memory)
 *   slot 7  the device's interrupt handler (service mode)
 *   slot 8  a notification the interrupt signals (service mode)
 *   slot 9  a frame for the virtqueue, the request header and status
 *   slot 10..25  sixteen frames: a 64 KiB data buffer
 *   slot 26 its device's io_space: it maps the frames above there, and the
 *           device may use no other memory
 *
 * Its argument is DRV_ARG(mode, register offset in the frame).
 *
 * Service mode (DRV_MODE_SERVICE) serves userspace/lib/driver.h on the
 * request loop every driver shares (serve.c): clients share a frame with
 * DRV_OPEN and read, write and flush through it; it sleeps on the device's
 * interrupt while a request is on the device, and answers a write only
 * once the device has completed it.
 *
 * Benchmark mode (0): it reads the whole disk in 64 KiB requests, then 2000
 * random 4 KiB blocks, checking that every 4 KiB block starts with its own
 * block number (how the benchmark writes its image), and prints cycle
 * counts.  It polls the used ring (no interrupts), so the figure is the
 * device path alone. */
#include "../lib/virtio.h"
#include "serve.h"

#define SERVICE DRV_SLOT_SERVICE
#define REGS_CAP DRV_SLOT_REGS
#define IRQ_CAP DRV_SLOT_IRQ
#define NTFN_CAP DRV_SLOT_NTFN
#define RING_CAP DRV_SLOT_DMA
#define DATA_CAP (DRV_SLOT_DMA + 1)
#define DATA_PAGES 16
#define IO_CAP DRV_SLOT_IO_SPACE

#define REGS_VA SERVE_DEVICE_VA
#define RING_VA (SERVE_DEVICE_VA + 0x1000)
#define DATA_VA SERVE_DRIVER_VA /* DATA_PAGES: all of the driver's own frames */
#define QSIZE 32
#define HDR_OFF 2048
#define STATUS_OFF 2064
#define VIRTIO_BLK_ID 2
#define VIRTIO_BLK_T_IN 0
#define VIRTIO_BLK_T_OUT 1
#define VIRTIO_BLK_T_FLUSH 4
#define VIRTIO_BLK_F_RO (1u << 5)
#define VIRTIO_BLK_F_FLUSH (1u << 9)
#define RANDOM_READS 2000

struct blk_req_hdr {
    unsigned int type, reserved;
    unsigned long sector;
};

static struct virtio_dev dev;
static unsigned long data_pa[DATA_PAGES];

/* Puts a request of type at sector on the queue: the header, then `pages`
 * data descriptors of len bytes each (the data buffer's frames in order;
 * written by the device for VIRTIO_BLK_T_IN), then the status byte.  The
 * used index before it, to wait on. */
static unsigned short submit(unsigned int type, unsigned long sector, unsigned pages,
                             unsigned long len)
{
    struct virtq_desc *d = virtq_desc(&dev);
    struct blk_req_hdr *h = (struct blk_req_hdr *)(dev.ring + HDR_OFF);
    unsigned short seen = *virtq_used_idx(&dev);
    unsigned short data_flags = type == VIRTIO_BLK_T_IN ? VIRTQ_DESC_WRITE : 0;

    h->type = type;
    h->reserved = 0;
    h->sector = sector;
    dev.ring[STATUS_OFF] = 0xff;
    d[0] = (struct virtq_desc){ dev.ring_pa + HDR_OFF, sizeof(*h), VIRTQ_DESC_NEXT, 1 };
    for (unsigned i = 0; i < pages; i++)
        d[1 + i] = (struct virtq_desc){ data_pa[i], (unsigned int)len,
                                        data_flags | VIRTQ_DESC_NEXT, (unsigned short)(2 + i) };
    d[1 + pages] = (struct virtq_desc){ dev.ring_pa + STATUS_OFF, 1, VIRTQ_DESC_WRITE, 0 };
    virtq_submit(&dev, 0);
    return seen;
}

/* The status byte of the request just completed: 0 is success. */
static unsigned char status(void)
{
    return *(volatile unsigned char *)(dev.ring + STATUS_OFF);
}

/* Reads pages*4 KiB at sector, polling; 0 on success. */
static long read_blocks(unsigned long sector, unsigned pages)
{
    unsigned short seen = submit(VIRTIO_BLK_T_IN, sector, pages, 4096);

    for (unsigned long spins = 0; *virtq_used_idx(&dev) == seen; spins++) {
        if (spins > 2000000000ul)
            return -1;
    }
    return status() == 0 ? 0 : -2;
}

static int check(unsigned long first_block, unsigned pages)
{
    for (unsigned i = 0; i < pages; i++) {
        if (*(volatile unsigned long *)(DATA_VA + i * 4096ul) != first_block + i)
            return 1;
    }
    return 0;
}

/* -- service mode ---------------------------------------------------------- */

static unsigned int features;

/* One request of type with len bytes of the data buffer at sector, waiting
 * for the device's interrupt; 0 when the device reports success. */
static long transfer(unsigned int type, unsigned long sector, unsigned long len)
{
    unsigned short seen = submit(type, sector, len ? 1 : 0, len);

    serve_interrupts += virtq_wait_used(&dev, seen, IRQ_CAP, NTFN_CAP);
    return status() == 0 ? 0 : -1;
}

static long blk_flush(void)
{
    if (!(features & VIRTIO_BLK_F_FLUSH))
        return KEEL_E_OK; /* no volatile cache: what is written is kept */
    return transfer(VIRTIO_BLK_T_FLUSH, 0, 0) ? KEEL_E_BAD_STATE : KEEL_E_OK;
}

static struct serve_ops ops;

/* The loop checked the handle and that the range lies in the client's
 * page; a block device also wants whole sectors inside the disk. */
static int bad_range(const struct drv_req *r)
{
    return r->len % DRV_BLOCK || r->dev_off % DRV_BLOCK || r->dev_off >= ops.capacity ||
           r->len > ops.capacity - r->dev_off;
}

static long blk_read(struct drv_req *r)
{
    if (bad_range(r))
        return -KEEL_E_INVALID_ARG;
    if (transfer(VIRTIO_BLK_T_IN, r->dev_off / DRV_BLOCK, r->len))
        return -KEEL_E_BAD_STATE;
    memcpy(r->buf, (void *)DATA_VA, r->len);
    return (long)r->len;
}

static long blk_write(struct drv_req *r)
{
    if (features & VIRTIO_BLK_F_RO)
        return -KEEL_E_NO_RIGHTS; /* a read-only disk: told apart from a failed write */
    if (bad_range(r))
        return -KEEL_E_INVALID_ARG;
    memcpy((void *)DATA_VA, r->buf, r->len);
    if (transfer(VIRTIO_BLK_T_OUT, r->dev_off / DRV_BLOCK, r->len) ||
        ((r->flags & DRV_SYNC) && blk_flush()))
        return -KEEL_E_BAD_STATE;
    return (long)r->len;
}

static struct serve_ops ops = {
    .name = "virtio-blk",
    .kind = DRV_KIND_BLOCK,
    .read = blk_read,
    .write = blk_write,
    .flush = blk_flush,
};

/* -- benchmark mode --------------------------------------------------------- */

long keel_main(keel_word_t arg);

long keel_main(keel_word_t arg)
{
    unsigned long errors = 0;
    int service = DRV_ARG_MODE(arg) == DRV_MODE_SERVICE;
    long err;

    if ((err = virtio_map(&dev, REGS_CAP, REGS_VA, DRV_ARG_OFFSET(arg), RING_CAP, RING_VA)) ||
        (err = keel_io_space_map(IO_CAP, RING_CAP, KEEL_RIGHT_READ | KEEL_RIGHT_WRITE)))
        goto out;
    for (unsigned i = 0; i < DATA_PAGES; i++) {
        if ((err = keel_frame_map(DATA_CAP + i, KEEL_SLOT_VSPACE, DATA_VA + i * 4096ul,
                                  KEEL_RIGHT_READ | KEEL_RIGHT_WRITE)) ||
            (err = keel_frame_info(DATA_CAP + i, &data_pa[i], 0)) ||
            (err = keel_io_space_map(IO_CAP, DATA_CAP + i, KEEL_RIGHT_READ | KEEL_RIGHT_WRITE)))
            goto out;
    }
    if (service && (err = keel_irq_handler_set_notification(IRQ_CAP, NTFN_CAP)))
        goto out;
    if ((err = virtio_setup(&dev, VIRTIO_BLK_ID, QSIZE,
                            service ? VIRTIO_BLK_F_FLUSH | VIRTIO_BLK_F_RO : 0, &features)))
        goto out;
    unsigned long sectors = virtio_rd(&dev, VIRTIO_CONFIG) |
                            (unsigned long)virtio_rd(&dev, VIRTIO_CONFIG + 4) << 32;
    unsigned long blocks = sectors / 8;
    if (service) {
        ops.capacity = sectors * DRV_BLOCK;
        int ro = !!(features & VIRTIO_BLK_F_RO);
        ops.features = (features & VIRTIO_BLK_F_FLUSH && !ro ? DRV_FEATURE_FLUSH : 0) |
                       (ro ? DRV_FEATURE_READONLY : 0);
        printf("virtio-blk: serving %lu sectors%s\n", sectors,
               ro ? ", read-only" : features & VIRTIO_BLK_F_FLUSH ? ", write cache" : "");
        serve_run(&ops);
    }
    printf("virtio-blk: %lu sectors\n", sectors);

    unsigned long t0 = rdtsc(), bytes = 0;
    for (unsigned long b = 0; b + DATA_PAGES <= blocks; b += DATA_PAGES) {
        if (read_blocks(b * 8, DATA_PAGES) || check(b, DATA_PAGES))
            errors++;
        bytes += DATA_PAGES * 4096ul;
    }
    unsigned long seq = rdtsc() - t0;
    unsigned long x = 88172645463325252ul;
    t0 = rdtsc();
    for (int i = 0; i < RANDOM_READS; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        unsigned long b = x % blocks;
        if (read_blocks(b * 8, 1) || check(b, 1))
            errors++;
    }
    unsigned long rnd = rdtsc() - t0;
    printf("kbench: blk_seq_bytes %lu bytes\n", bytes);
    printf("kbench: blk_seq_time %lu cycles\n", seq);
    printf("kbench: blk_rand_ops %d ops\n", RANDOM_READS);
    printf("kbench: blk_rand_time %lu cycles\n", rnd);
    printf("kbench: blk_errors %lu errors\n", errors);
    err = errors ? -5 : 0;
out:
    if (service) {
        if (dev.regs)
            virtio_wr(&dev, VIRTIO_STATUS, VIRTIO_S_FAILED);
        serve_fail(ops.name, "setup failed", err);
    }
    if (err)
        printf("virtio-blk: failed: %ld\n", err);
    keel_send(SERVICE, KEEL_LABEL_USER, (keel_word_t)err, 0, 0, 0, 0, 0);
    for (;;)
        keel_yield();
}
