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
 * Requests go through a queue of up to DEPTH in flight (blk_post, then one
 * kick for all of them; blk_reap takes what the device finished, in any
 * order).  A data range of physically adjacent frames is one descriptor.
 *
 * Benchmark mode (0) keeps DEPTH_BENCH requests in flight and polls the used
 * ring (no interrupts, so the figure is the device path alone): it reads the
 * whole disk in 64 KiB requests (all into the one 64 KiB buffer: their data
 * is checked afterwards as one coherent 64 KiB run), then 2000 random 4 KiB
 * blocks (each request its own frame, each block checked to start with its
 * own number, as the benchmark writes its image), 500 more one at a time
 * (the latency), and writes the buffer over the whole disk in 64 KiB
 * requests followed by a flush, reading some back; it prints cycle counts.
 * The writes leave the image changed: the benchmark writes it afresh for
 * every run. */
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
/* The ring frame: 128 descriptors (2048 bytes), the driver area (262), the
 * device area (1030: from 2312 under version 2, to 3398 from 2368 under the
 * legacy layout, which aligns it to 64), then a header and a status byte
 * per slot (virtio_queue's layout is checked against HDR_OFF at set-up). */
#define QSIZE 128
#define DEPTH 32
#define DEPTH_BENCH 16
#define HDR_OFF 3408
#define STATUS_OFF (HDR_OFF + 16 * DEPTH)
#define VIRTIO_BLK_ID 2
#define VIRTIO_BLK_T_IN 0
#define VIRTIO_BLK_T_OUT 1
#define VIRTIO_BLK_T_FLUSH 4
#define VIRTIO_BLK_F_RO (1u << 5)
#define VIRTIO_BLK_F_FLUSH (1u << 9)
#define RANDOM_READS 2000
#define SINGLE_READS 500

_Static_assert(STATUS_OFF + DEPTH <= 4096, "the request slots fit in the ring frame");

struct blk_req_hdr {
    unsigned int type, reserved;
    unsigned long sector;
};

struct seg {
    unsigned long pa;
    unsigned int len;
};

/* A request slot: its header and status byte live in the ring frame. */
struct slot {
    int busy;
    unsigned long order; /* when it was posted */
    unsigned short ndesc, desc[DATA_PAGES + 2]; /* its chain, head first */
    unsigned int type;
    unsigned long tag; /* service mode: the held answer's */
    unsigned char *buf; /* service mode: the client's bytes */
    unsigned long len, flags;
    int many, failed; /* one of a DRV_MANY request's (same tag); one of them failed */
    unsigned int buf_off, rlen; /* DRV_MANY: its record's place in the page, length */
};

static struct virtio_dev dev;
static unsigned long data_pa[DATA_PAGES];
static struct slot slots[DEPTH];
static unsigned short free_desc[QSIZE], nfree;
static unsigned short slot_of_head[QSIZE]; /* DEPTH: no request starts there */
static unsigned short seen;                /* used entries taken so far */
static unsigned busy;
static unsigned long posted_count;

static void blk_queue_init(void)
{
    for (unsigned i = 0; i < QSIZE; i++) {
        free_desc[i] = (unsigned short)(QSIZE - 1 - i);
        slot_of_head[i] = DEPTH;
    }
    nfree = QSIZE;
}

/* Puts a request of type at sector in slot s on the queue (no kick): the
 * header, the data segments (adjacent ones merged; written by the device
 * for VIRTIO_BLK_T_IN), the status byte.  -1 when the queue has no room. */
static int blk_post(unsigned s, unsigned int type, unsigned long sector, const struct seg *segs,
                    unsigned nsegs, unsigned long tag)
{
    struct seg m[DATA_PAGES + 1];
    unsigned n = 0;

    for (unsigned i = 0; i < nsegs && n <= DATA_PAGES; i++) {
        if (n && m[n - 1].pa + m[n - 1].len == segs[i].pa)
            m[n - 1].len += segs[i].len;
        else
            m[n++] = segs[i];
    }
    if (slots[s].busy || n > DATA_PAGES || nfree < n + 2)
        return -1;
    struct virtq_desc *d = virtq_desc(&dev);
    struct blk_req_hdr *h = (struct blk_req_hdr *)(dev.ring + HDR_OFF + 16 * s);
    unsigned short data_flags = type == VIRTIO_BLK_T_IN ? VIRTQ_DESC_WRITE : 0;
    struct slot *sl = &slots[s];
    unsigned short next = free_desc[--nfree];

    sl->ndesc = (unsigned short)(n + 2);
    sl->desc[n + 1] = next;
    h->type = type;
    h->reserved = 0;
    h->sector = sector;
    dev.ring[STATUS_OFF + s] = 0xff;
    d[next] = (struct virtq_desc){ dev.ring_pa + STATUS_OFF + s, 1, VIRTQ_DESC_WRITE, 0 };
    for (unsigned i = n; i-- > 0;) {
        unsigned short id = free_desc[--nfree];
        d[id] = (struct virtq_desc){ m[i].pa, m[i].len, data_flags | VIRTQ_DESC_NEXT, next };
        sl->desc[i + 1] = next = id;
    }
    unsigned short head = free_desc[--nfree];
    d[head] = (struct virtq_desc){ dev.ring_pa + HDR_OFF + 16 * s, sizeof(*h), VIRTQ_DESC_NEXT,
                                   next };
    sl->desc[0] = head;
    sl->busy = 1;
    sl->order = posted_count++;
    sl->type = type;
    sl->tag = tag;
    slot_of_head[head] = (unsigned short)s;
    if (++busy > serve_in_flight_max)
        serve_in_flight_max = busy;
    virtq_add(&dev, head);
    return 0;
}

/* Takes every request the device finished, in the order it finished them:
 * done(slot, status) for each (0 is success), its descriptors free again.
 * An entry naming no request in flight (a device repeating itself) is
 * ignored: no request completes twice.  Returns how many completed. */
static unsigned blk_reap(void (*done)(unsigned s, unsigned char status))
{
    unsigned n = 0;

    for (; seen != *virtq_used_idx(&dev); seen++) {
        __atomic_thread_fence(__ATOMIC_ACQUIRE);
        unsigned int head = virtq_used_id(&dev, seen);
        if (head >= QSIZE || slot_of_head[head] >= DEPTH)
            continue;
        unsigned s = slot_of_head[head];
        struct slot *sl = &slots[s];
        slot_of_head[head] = DEPTH;
        for (unsigned k = 0; k < DEPTH; k++) {
            if (slots[k].busy && slots[k].order < sl->order) {
                serve_out_of_order++; /* an older one is still on the device */
                break;
            }
        }
        for (unsigned k = 0; k < sl->ndesc; k++) /* the chain as we built it */
            free_desc[nfree++] = sl->desc[k];
        sl->busy = 0;
        busy--;
        n++;
        done(s, *(volatile unsigned char *)(dev.ring + STATUS_OFF + s));
    }
    return n;
}

/* The data buffer's frames from page first on, len bytes each, as segments. */
static unsigned data_segs(struct seg *segs, unsigned first, unsigned pages, unsigned long len)
{
    for (unsigned i = 0; i < pages; i++)
        segs[i] = (struct seg){ data_pa[first + i], (unsigned int)len };
    return pages;
}

/* -- service mode ---------------------------------------------------------- */

static unsigned int features;
static struct serve_ops ops;

/* Slot s (below DATA_PAGES: data page s) finished with status; a write
 * asked to be synchronous goes on as a flush in the same slot. */
static void service_done(unsigned s, unsigned char status)
{
    struct slot *sl = &slots[s];
    long err = status ? KEEL_E_BAD_STATE : KEEL_E_OK;

    if (!status && sl->type == VIRTIO_BLK_T_OUT && (sl->flags & DRV_SYNC) &&
        (features & VIRTIO_BLK_F_FLUSH)) {
        unsigned long len = sl->len;
        if (!blk_post(s, VIRTIO_BLK_T_FLUSH, 0, 0, 0, sl->tag)) {
            slots[s].len = len;
            slots[s].flags = 0;
            return; /* kicked by whoever reaped */
        }
        err = KEEL_E_BAD_STATE;
    }
    if (!err && sl->type == VIRTIO_BLK_T_IN) {
        unsigned char *buf = serve_held_buffer(sl->tag);
        if (buf && sl->many) /* the record's range of the page (page-aligned) */
            memcpy((unsigned char *)((unsigned long)buf & ~(KEEL_PAGE_SIZE - 1)) + sl->buf_off,
                   (void *)(DATA_VA + s * 4096ul), sl->rlen);
        else if (buf) /* (the client's page may have gone meanwhile) */
            memcpy(buf, (void *)(DATA_VA + s * 4096ul), sl->len);
    }
    if (sl->many) { /* the request is answered with its last record */
        int others = 0;
        for (unsigned k = 0; k < DATA_PAGES; k++) {
            if (slots[k].busy && slots[k].many && slots[k].tag == sl->tag) {
                slots[k].failed |= err != KEEL_E_OK || sl->failed;
                others = 1;
            }
        }
        if (others)
            return;
        if (sl->failed)
            err = KEEL_E_BAD_STATE;
    }
    serve_complete(sl->tag, err, err ? 0 : sl->len);
}

/* Takes what the device finished and asks for an interrupt for the next one. */
static void service_reap(void)
{
    do
        blk_reap(service_done);
    while (virtq_arm(&dev, seen));
    virtq_kick(&dev); /* flushes that followed a write */
}

static void blk_interrupt(void)
{
    virtio_interrupt_ack(&dev, IRQ_CAP);
    service_reap();
}

/* The loop checked the handle and that the range lies in the client's
 * page; a block device also wants whole sectors inside the disk. */
static int bad_range(const struct drv_req *r)
{
    return r->len % DRV_BLOCK || r->dev_off % DRV_BLOCK || r->dev_off >= ops.capacity ||
           r->len > ops.capacity - r->dev_off;
}

/* Starts r on a free data slot: answered by service_done (SERVE_LATER), or
 * SERVE_RETRY when every slot is busy. */
static long start(struct drv_req *r, unsigned int type)
{
    struct seg seg;
    unsigned s;

    if (bad_range(r))
        return -KEEL_E_INVALID_ARG;
    for (s = 0; s < DATA_PAGES && slots[s].busy; s++)
        ;
    if (s == DATA_PAGES)
        return SERVE_RETRY;
    if (type == VIRTIO_BLK_T_OUT)
        memcpy((void *)(DATA_VA + s * 4096ul), r->buf, r->len);
    data_segs(&seg, s, 1, r->len);
    if (blk_post(s, type, r->dev_off / DRV_BLOCK, &seg, r->len ? 1 : 0, r->tag))
        return SERVE_RETRY;
    slots[s].len = r->len;
    slots[s].flags = r->flags;
    slots[s].many = 0;
    virtq_kick(&dev);
    return SERVE_LATER;
}

/* DRV_MANY: every record on a data slot of its own, one kick; answered by
 * service_done when the last is done, or SERVE_RETRY until there are slots
 * for all. */
static long start_many(struct drv_req *r, unsigned int type)
{
    const struct drv_blk_rec *rec = (const struct drv_blk_rec *)r->buf;
    unsigned long n = r->len / sizeof(*rec), total = 0;
    unsigned s, free = 0;

    if (r->len % sizeof(*rec) || !n || n > DRV_MANY_BLOCK || (r->flags & DRV_SYNC) ||
        (unsigned long)r->buf % sizeof(keel_word_t))
        return -KEEL_E_INVALID_ARG;
    for (unsigned long i = 0; i < n; i++) {
        struct drv_req one = { .dev_off = rec[i].dev_off, .len = rec[i].len };
        if (!rec[i].len || rec[i].len > KEEL_PAGE_SIZE || bad_range(&one) ||
            rec[i].buf_off > KEEL_PAGE_SIZE - rec[i].len)
            return -KEEL_E_INVALID_ARG;
        total += rec[i].len;
    }
    for (s = 0; s < DATA_PAGES; s++)
        free += !slots[s].busy;
    if (free < n || nfree < 3 * n)
        return SERVE_RETRY; /* all at once, or none */
    const unsigned char *page =
        (const unsigned char *)((unsigned long)r->buf & ~(KEEL_PAGE_SIZE - 1));
    struct drv_blk_rec copy[DRV_MANY_BLOCK]; /* a read may land on the table itself */
    memcpy(copy, rec, n * sizeof(*rec));
    s = 0;
    for (unsigned long i = 0; i < n; i++, s++) {
        struct seg seg;
        while (slots[s].busy)
            s++;
        if (type == VIRTIO_BLK_T_OUT)
            memcpy((void *)(DATA_VA + s * 4096ul), page + copy[i].buf_off, copy[i].len);
        data_segs(&seg, s, 1, copy[i].len);
        blk_post(s, type, copy[i].dev_off / DRV_BLOCK, &seg, 1, r->tag); /* room: checked */
        slots[s].len = total;
        slots[s].flags = 0;
        slots[s].many = 1;
        slots[s].failed = 0;
        slots[s].buf_off = copy[i].buf_off;
        slots[s].rlen = copy[i].len;
    }
    virtq_kick(&dev);
    return SERVE_LATER;
}

static long blk_read(struct drv_req *r)
{
    if (r->flags & DRV_MANY)
        return start_many(r, VIRTIO_BLK_T_IN);
    return start(r, VIRTIO_BLK_T_IN);
}

static long blk_write(struct drv_req *r)
{
    if (features & VIRTIO_BLK_F_RO)
        return -KEEL_E_NO_RIGHTS; /* a read-only disk: told apart from a failed write */
    if (r->flags & DRV_MANY)
        return start_many(r, VIRTIO_BLK_T_OUT);
    return start(r, VIRTIO_BLK_T_OUT);
}

/* DRV_FLUSH: waits for a flush of its own (on a slot without data), taking
 * other requests' completions as they come. */
static long blk_flush(void)
{
    unsigned s;

    if (!(features & VIRTIO_BLK_F_FLUSH))
        return KEEL_E_OK; /* no volatile cache: what is written is kept */
    for (s = DATA_PAGES; s < DEPTH && slots[s].busy; s++)
        ;
    if (s == DEPTH || blk_post(s, VIRTIO_BLK_T_FLUSH, 0, 0, 0, 0))
        return KEEL_E_FULL;
    slots[s].len = 0;
    slots[s].flags = 0;
    virtq_kick(&dev);
    while (slots[s].busy) {
        blk_reap(service_done);
        if (slots[s].busy && !virtq_arm(&dev, seen)) {
            keel_notification_wait(NTFN_CAP, 0);
            virtio_interrupt_ack(&dev, IRQ_CAP);
            serve_interrupts++;
        }
    }
    service_reap();
    return *(volatile unsigned char *)(dev.ring + STATUS_OFF + s) ? KEEL_E_BAD_STATE : KEEL_E_OK;
}

static struct serve_ops ops = {
    .name = "virtio-blk",
    .kind = DRV_KIND_BLOCK,
    .read = blk_read,
    .write = blk_write,
    .flush = blk_flush,
    .interrupt = blk_interrupt,
};

/* -- benchmark mode --------------------------------------------------------- */

static unsigned long errors, done_count;
static unsigned long slot_block[DEPTH]; /* what each request asked for */
static int check_pages; /* random pass: check the slot's page on completion */

static void bench_done(unsigned s, unsigned char status)
{
    done_count++;
    if (status)
        errors++;
    else if (check_pages && *(volatile unsigned long *)(DATA_VA + s * 4096ul) != slot_block[s])
        errors++;
}

/* Runs count requests, at most depth in flight, polling: next(i, &slot
 * chosen among the free ones) posts request i.  Cycles taken. */
static unsigned long bench_pass(unsigned long count, unsigned depth,
                                void (*next)(unsigned long i, unsigned s))
{
    unsigned long t0 = rdtsc(), posted = 0;

    done_count = 0;
    while (done_count < count) {
        for (unsigned s = 0; s < depth && posted < count; s++) {
            if (!slots[s].busy)
                next(posted++, s);
        }
        virtq_kick(&dev);
        for (unsigned long spins = 0; !blk_reap(bench_done); spins++) {
            if (spins > 2000000000ul) {
                errors++;
                return rdtsc() - t0;
            }
        }
        virtq_quiet(&dev, seen);
    }
    return rdtsc() - t0;
}

static unsigned long blocks;
static unsigned long rnd_state = 88172645463325252ul;

static void seq_read(unsigned long i, unsigned s)
{
    struct seg segs[DATA_PAGES];

    slot_block[s] = i * DATA_PAGES;
    if (blk_post(s, VIRTIO_BLK_T_IN, i * DATA_PAGES * 8, segs, data_segs(segs, 0, DATA_PAGES, 4096),
                 0))
        errors++;
}

static void seq_write(unsigned long i, unsigned s)
{
    struct seg segs[DATA_PAGES];

    if (blk_post(s, VIRTIO_BLK_T_OUT, i * DATA_PAGES * 8, segs,
                 data_segs(segs, 0, DATA_PAGES, 4096), 0))
        errors++;
}

static void rand_read(unsigned long i, unsigned s)
{
    struct seg seg;

    rnd_state ^= rnd_state << 13;
    rnd_state ^= rnd_state >> 7;
    rnd_state ^= rnd_state << 17;
    slot_block[s] = rnd_state % blocks;
    if (blk_post(s, VIRTIO_BLK_T_IN, slot_block[s] * 8, &seg, data_segs(&seg, s, 1, 4096), 0))
        errors++;
}

static void flush_req(unsigned long i, unsigned s)
{
    if (blk_post(s, VIRTIO_BLK_T_FLUSH, 0, 0, 0, 0))
        errors++;
}

/* After the sequential reads the buffer holds one request's 64 KiB: blocks
 * b .. b+15 for some b a multiple of 16. */
static int check_run(void)
{
    unsigned long b = *(volatile unsigned long *)DATA_VA;

    if (b % DATA_PAGES || b >= blocks)
        return 1;
    for (unsigned i = 0; i < DATA_PAGES; i++) {
        if (*(volatile unsigned long *)(DATA_VA + i * 4096ul) != b + i)
            return 1;
    }
    return 0;
}

static void bench(void)
{
    unsigned long runs = blocks / DATA_PAGES;

    virtq_quiet(&dev, seen);
    check_pages = 0;
    unsigned long seq = bench_pass(runs, DEPTH_BENCH, seq_read);
    errors += check_run();
    check_pages = 1;
    unsigned long rnd = bench_pass(RANDOM_READS, DEPTH_BENCH, rand_read);
    unsigned long one = bench_pass(SINGLE_READS, 1, rand_read);
    check_pages = 0;
    for (unsigned i = 0; i < DATA_PAGES; i++) /* what the writes put everywhere */
        *(volatile unsigned long *)(DATA_VA + i * 4096ul) = 0x5752495445ul + i;
    unsigned long wr = bench_pass(runs, DEPTH_BENCH, seq_write);
    wr += bench_pass(1, 1, flush_req);
    check_pages = 0; /* read back the first and last runs' first pages into page 1 */
    for (unsigned i = 0; i < 2; i++) {
        struct seg seg;
        if (blk_post(0, VIRTIO_BLK_T_IN, (i ? (runs - 1) * DATA_PAGES : 0) * 8, &seg,
                     data_segs(&seg, 1, 1, 4096), 0))
            errors++;
        virtq_kick(&dev);
        while (!blk_reap(bench_done))
            ;
        if (*(volatile unsigned long *)(DATA_VA + 4096ul) != 0x5752495445ul)
            errors++;
    }
    printf("kbench: blk_seq_bytes %lu bytes\n", runs * DATA_PAGES * 4096ul);
    printf("kbench: blk_seq_time %lu cycles\n", seq);
    printf("kbench: blk_rand_ops %d ops\n", RANDOM_READS);
    printf("kbench: blk_rand_time %lu cycles\n", rnd);
    printf("kbench: blk_one_ops %d ops\n", SINGLE_READS);
    printf("kbench: blk_one_time %lu cycles\n", one);
    printf("kbench: blk_write_bytes %lu bytes\n", runs * DATA_PAGES * 4096ul);
    printf("kbench: blk_write_time %lu cycles\n", wr);
    printf("kbench: blk_depth %d requests\n", DEPTH_BENCH);
    printf("kbench: blk_errors %lu errors\n", errors);
}

long keel_main(keel_word_t arg);

long keel_main(keel_word_t arg)
{
    int service = DRV_ARG_MODE(arg) == DRV_MODE_SERVICE;
    long err;

    blk_queue_init();
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
    if (service && ((err = keel_irq_handler_set_notification(IRQ_CAP, NTFN_CAP)) ||
                    (err = serve_bind(NTFN_CAP))))
        goto out;
    if ((err = virtio_setup(&dev, VIRTIO_BLK_ID, QSIZE,
                            VIRTIO_F_EVENT_IDX | VIRTIO_BLK_F_FLUSH |
                                (service ? VIRTIO_BLK_F_RO : 0),
                            &features)))
        goto out;
    if (dev.used_off + 6 + 8 * QSIZE > HDR_OFF) { /* the slots would overlap the used ring */
        err = -6;
        goto out;
    }
    unsigned long sectors = virtio_rd(&dev, VIRTIO_CONFIG) |
                            (unsigned long)virtio_rd(&dev, VIRTIO_CONFIG + 4) << 32;
    blocks = sectors / 8;
    if (service) {
        ops.capacity = sectors * DRV_BLOCK;
        int ro = !!(features & VIRTIO_BLK_F_RO);
        ops.features = (features & VIRTIO_BLK_F_FLUSH && !ro ? DRV_FEATURE_FLUSH : 0) |
                       (ro ? DRV_FEATURE_READONLY : 0);
        printf("virtio-blk: serving %lu sectors%s\n", sectors,
               ro ? ", read-only" : features & VIRTIO_BLK_F_FLUSH ? ", write cache" : "");
        serve_run(&ops);
    }
    printf("virtio-blk: %lu sectors, %d requests in flight%s\n", sectors, DEPTH_BENCH,
           dev.event_idx ? ", event index" : "");
    bench();
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
