/* virtio-blk's usual request in C: a 16-byte device-readable header, one
 * data buffer, a one-byte device-writable status (compiled into
 * vmm.kvm._kvm by ffi_build.py, which reads this file; used by
 * vmm.devices.virtio.blk).
 *
 * This is a shortcut, never the definition: vmm/devices/virtio/queue.py's
 * read_chain and blk.py's request code are.  keel_blk_parse accepts a chain
 * only when read_chain would accept it with the same three buffers and the
 * DMA windows allow every one (the same binary search over the same merged
 * runs, DmaWindows.covers); anything else -- another shape, a flag, an index
 * or address out of range, overlapping buffers, a refused buffer -- ends the
 * prefix it returns, and Python walks the rest as before, with its errors
 * and refusals.  keel_blk_serve then serves the parsed prefix in order as
 * BlockDevice.service does (header read at that moment, the sector range
 * checked, pread/pwrite in place, the status byte, the used element), and
 * stops at a request whose header asks for anything but a read into a
 * writable buffer or a write from a readable one (flush, an identity,
 * unknown types, a read-only disk), which Python serves.
 * tests/virtio/test_blk_fast.py checks both against the Python path on
 * hostile rings.
 *
 * The caller holds the transport's lock (guest memory, the ring views and
 * the DMA windows stay as checked) and has checked the three ring areas as
 * wholes (Virtqueue.begin), so the table, available and used rings are
 * read and written here without further checks.  The GIL is released
 * around each call (cffi); nothing here touches Python objects. */
#include <errno.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>

#define KEEL_BLK_SECTOR 512u
#define KEEL_DESC_NEXT 1u
#define KEEL_DESC_WRITE 2u

struct keel_blk_req {
    uint32_t head, data_write, data_len, pad;
    uint64_t hdr, data, status;                 /* guest-physical */
    uint64_t hdr_host, data_host, status_host;  /* in this process */
};

struct keel_blk_queue {
    uint64_t table, avail, used; /* host addresses of the checked ring areas */
    uint32_t size, next_avail, used_idx;
    int32_t nram;
    const uint64_t *ram; /* nram triples: first, end (guest-physical), host address */
    int32_t nrd, nwr;    /* runs the device may read, write; -1: every access allowed */
    const uint64_t *rd_starts, *rd_ends, *wr_starts, *wr_ends;
    int32_t fd, readonly;
    uint64_t capacity;   /* sectors */
    /* Added to by keel_blk_serve. */
    uint64_t bytes;
    uint32_t requests, errors, wrote;
};

struct keel_desc {
    uint64_t addr;
    uint32_t len;
    uint16_t flags, next;
};

/* GuestMemory.contains, and the host address: the range in one slot. */
static int blk_ram(const struct keel_blk_queue *q, uint64_t addr, uint64_t len, uint64_t *host)
{
    uint64_t end = addr + len;

    if (end < addr)
        return 0;
    for (int i = 0; i < q->nram; i++) {
        const uint64_t *r = q->ram + 3 * i;
        if (r[0] <= addr && end <= r[1]) {
            *host = r[2] + (addr - r[0]);
            return 1;
        }
    }
    return 0;
}

/* read_chain's check against DmaWindows.covers: the run at or before addr
 * (bisect_right - 1) holds the whole buffer.  addr + len cannot wrap: the
 * buffer is in RAM. */
static int blk_dma(const uint64_t *starts, const uint64_t *ends, int n, uint64_t addr,
                   uint64_t len)
{
    int lo = 0, hi = n;

    if (n < 0)
        return 1;
    while (lo < hi) {
        int mid = (lo + hi) / 2;
        if (addr < starts[mid])
            hi = mid;
        else
            lo = mid + 1;
    }
    return lo > 0 && addr + len <= ends[lo - 1];
}

static int blk_meet(uint64_t a, uint64_t alen, uint64_t b, uint64_t blen)
{
    return a < b + blen && b < a + alen;
}

/* The chain at head, if it is the usual one and read_chain accepts it. */
static int blk_parse_one(const struct keel_blk_queue *q, uint32_t head, struct keel_blk_req *r)
{
    const unsigned char *table = (const unsigned char *)(uintptr_t)q->table;
    struct keel_desc h, d, s;

    if (q->size < 3 || head >= q->size)
        return 0;
    memcpy(&h, table + 16 * head, 16);
    if (h.flags != KEEL_DESC_NEXT || h.len != 16 || h.next >= q->size)
        return 0;
    memcpy(&d, table + 16 * h.next, 16);
    if ((d.flags & ~KEEL_DESC_WRITE) != KEEL_DESC_NEXT || !d.len || d.next >= q->size)
        return 0;
    memcpy(&s, table + 16 * d.next, 16);
    if (s.flags != KEEL_DESC_WRITE || s.len != 1)
        return 0;
    if (!blk_ram(q, h.addr, h.len, &r->hdr_host) || !blk_ram(q, d.addr, d.len, &r->data_host) ||
        !blk_ram(q, s.addr, s.len, &r->status_host))
        return 0;
    if (blk_meet(h.addr, h.len, d.addr, d.len) || blk_meet(h.addr, h.len, s.addr, s.len) ||
        blk_meet(d.addr, d.len, s.addr, s.len))
        return 0;
    int dw = (d.flags & KEEL_DESC_WRITE) != 0;
    if (!blk_dma(q->rd_starts, q->rd_ends, q->nrd, h.addr, h.len) ||
        !(dw ? blk_dma(q->wr_starts, q->wr_ends, q->nwr, d.addr, d.len)
             : blk_dma(q->rd_starts, q->rd_ends, q->nrd, d.addr, d.len)) ||
        !blk_dma(q->wr_starts, q->wr_ends, q->nwr, s.addr, s.len))
        return 0;
    r->head = head;
    r->data_write = (uint32_t)dw;
    r->data_len = d.len;
    r->hdr = h.addr;
    r->data = d.addr;
    r->status = s.addr;
    return 1;
}

/* Parses the chains published from q->next_avail on into out[]: how many
 * in a row are the usual request (the rest are Python's; none when the
 * available index is more than a queue ahead, which Python reports).
 * Reads guest memory only. */
static int keel_blk_parse(const struct keel_blk_queue *q, struct keel_blk_req *out)
{
    const unsigned char *avail = (const unsigned char *)(uintptr_t)q->avail;
    uint16_t idx;
    uint32_t n = 0, pending;

    memcpy(&idx, avail + 2, 2);
    pending = (uint16_t)(idx - q->next_avail);
    if (pending > q->size)
        return 0;
    for (; n < pending; n++) {
        uint16_t head;
        memcpy(&head, avail + 4 + 2 * ((q->next_avail + n) % q->size), 2);
        if (!blk_parse_one(q, head, &out[n]))
            break;
    }
    return (int)n;
}

/* Serves reqs[from..n) in order; returns the index of the first one it
 * leaves to Python (n: none). */
static int keel_blk_serve(struct keel_blk_queue *q, const struct keel_blk_req *reqs, int from,
                          int n)
{
    unsigned char *used = (unsigned char *)(uintptr_t)q->used;

    for (int k = from; k < n; k++) {
        const struct keel_blk_req *r = &reqs[k];
        uint32_t type;
        uint64_t sector;
        memcpy(&type, (const void *)(uintptr_t)r->hdr_host, 4);
        memcpy(&sector, (const void *)(uintptr_t)(r->hdr_host + 8), 8);
        int in = type == 0 && r->data_write, out = type == 1 && !r->data_write && !q->readonly;
        if (!in && !out)
            return k;
        unsigned char status = 1; /* VIRTIO_BLK_S_IOERR */
        if (r->data_len % KEEL_BLK_SECTOR == 0 && sector <= q->capacity &&
            r->data_len / KEEL_BLK_SECTOR <= q->capacity - sector) {
            ssize_t got;
            do {
                if (in)
                    got = pread(q->fd, (void *)(uintptr_t)r->data_host, r->data_len,
                                (off_t)(sector * KEEL_BLK_SECTOR));
                else
                    got = pwrite(q->fd, (const void *)(uintptr_t)r->data_host, r->data_len,
                                 (off_t)(sector * KEEL_BLK_SECTOR));
            } while (got < 0 && errno == EINTR);
            if (got == (ssize_t)r->data_len)
                status = 0;
        }
        if (status)
            q->errors++;
        else if (out)
            q->wrote = 1;
        *(volatile unsigned char *)(uintptr_t)r->status_host = status;
        uint32_t written = !status && in ? r->data_len + 1 : 1;
        unsigned char *elem = used + 4 + 8 * (q->used_idx % q->size);
        uint32_t id = r->head;
        memcpy(elem, &id, 4);
        memcpy(elem + 4, &written, 4);
        q->used_idx = (q->used_idx + 1) & 0xffff;
        q->requests++;
        q->bytes += written;
    }
    return n;
}
