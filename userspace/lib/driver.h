/* How clients, drivers and the device manager talk.
 *
 * A driver is an unprivileged process serving one device on the endpoint in
 * its slot DRV_SLOT_SERVICE.  Clients call that endpoint (keel_call, so each
 * request carries a one-shot reply capability) with the labels below; the
 * badge the device manager minted on the client's copy tells clients apart.
 *
 * Bulk data never travels in messages: a client first shares a buffer with
 * DRV_OPEN (one frame, passed as a capability in word 0; the driver maps
 * it), then names byte ranges of that buffer in its requests.  Every request
 * is answered; a request the driver could not complete is answered with an
 * error and nothing partial is reported as done.  When a driver answers a
 * write (or a flush) with KEEL_E_OK the data is on the device: a driver
 * killed after that answer loses nothing a client was told was written.
 *
 * Block devices: offset and length in bytes, multiples of DRV_BLOCK.
 * Stream devices (UART, virtio-console): offset is ignored; a read returns
 * the bytes available now (0 when none, unless DRV_WAIT is set in flags).
 * Packet devices (virtio-net): a write sends one frame, a read returns one
 * received frame (0 when none, unless DRV_WAIT).
 * Entropy (virtio-rng): a read fills the range with random bytes.
 *
 * Errors a client sees: KEEL_E_INVALID_ARG (bad handle, range or offset),
 * KEEL_E_BAD_STATE (the device failed the request), KEEL_E_FULL (no handle
 * free), and, when the driver died with the request in hand or its endpoint
 * was revoked, KEEL_E_REVOKED / KEEL_E_INVALID_CAP: the client looks the
 * name up again (names.h) and repeats the request, which is safe because
 * every request is idempotent (a block write names its offset).
 *
 * "On the device" means the device reported the request complete: it
 * survives the driver being killed.  Surviving a power cut needs a
 * DRV_FLUSH (or DRV_SYNC on the write) when the device has a volatile cache
 * (virtio-blk VIRTIO_BLK_F_FLUSH); DRV_INFO's features say so.
 *
 * The device manager starts a driver with argument DRV_ARG(mode, offset):
 * the offset of the device's registers in its register frame, and a mode
 * (DRV_MODE_SERVICE serves this protocol; 0 is a driver's own test mode).
 */
#ifndef KEEL_DRIVER_H
#define KEEL_DRIVER_H

#include "keel.h"

/* Capability slots every driver is started with (more follow from slot
 * DRV_SLOT_FIRST_FREE, described by the driver's own header comment). */
#define DRV_SLOT_SERVICE 5 /* endpoint: requests arrive here */

#define DRV_BLOCK 512

enum drv_kind {
    DRV_KIND_BLOCK = 1,
    DRV_KIND_STREAM = 2,
    DRV_KIND_PACKET = 3,
    DRV_KIND_ENTROPY = 4,
};

#define DRV_WAIT 1ul /* flags: block until data is there */
#define DRV_SYNC 2ul /* flags: a write also flushes the device's cache before the answer */
/* flags, packet devices: several frames in one request, so a client pays one
 * call for many.  The range holds records, each a frame behind its length
 * (DRV_FRAME_LEN bytes, little-endian).  A write sends the records from the
 * first on, as many as the driver has room for at once (all of them when it
 * can), and is answered once the device has them, with the bytes of the
 * records sent (the client sends the rest again); a read fills the range
 * with as many waiting frames as fit, oldest first, and answers the bytes
 * of the records filled. */
#define DRV_MANY 4ul
#define DRV_FRAME_LEN 2

/* DRV_MANY on a block device: the range holds up to DRV_MANY_BLOCK records,
 * each naming len bytes (whole sectors, at most a page) at buf_off of the
 * shared page and the device offset dev_off; the driver puts them on the
 * device together (all or, until it has room for all, none) and answers once
 * every one is done: the bytes of all of them, or KEEL_E_BAD_STATE when any
 * failed.  Not with DRV_SYNC (flush after, with DRV_FLUSH). */
#define DRV_MANY_BLOCK 16
struct drv_blk_rec {
    keel_word_t dev_off;
    unsigned int len, buf_off;
};

/* Writes a record of n frame bytes at p (drv_frame_put) and returns what it
 * takes; reads the length of the record at p (drv_frame_len). */
static inline unsigned long drv_frame_put(unsigned char *p, const void *frame, unsigned long n)
{
    p[0] = (unsigned char)n;
    p[1] = (unsigned char)(n >> 8);
    memcpy(p + DRV_FRAME_LEN, frame, n);
    return DRV_FRAME_LEN + n;
}

static inline unsigned long drv_frame_len(const unsigned char *p)
{
    return (unsigned long)p[0] | (unsigned long)p[1] << 8;
}

#define DRV_FEATURE_FLUSH 1ul /* DRV_INFO features: the device has a volatile cache */
#define DRV_FEATURE_READONLY 2ul /* DRV_INFO features: writes fail with KEEL_E_NO_RIGHTS */

#define DRV_MODE_SERVICE 1ul
#define DRV_ARG(mode, offset) ((unsigned long)(mode) << 12 | ((offset) & 0xfff))
#define DRV_ARG_MODE(arg) ((arg) >> 12)
#define DRV_ARG_OFFSET(arg) ((arg) & 0xfff)

/* Every driver's other slots, as the device manager fills them. */
#define DRV_SLOT_REGS 6    /* frame of the device's registers (device memory) */
#define DRV_SLOT_IRQ 7     /* the device's interrupt handler */
#define DRV_SLOT_NTFN 8    /* notification the interrupt signals */
#define DRV_SLOT_DMA 9     /* DRV_DMA_FRAMES frames the device may be pointed at */
#define DRV_DMA_FRAMES 17
/* The device's io_space: the driver maps there the DMA frames the device
 * may use (before starting it); the device can reach no other memory. */
#define DRV_SLOT_IO_SPACE (DRV_SLOT_DMA + DRV_DMA_FRAMES)
#define DRV_SLOT_FIRST_FREE (DRV_SLOT_IO_SPACE + 1)

/* The driver side, shared by every driver: userspace/drivers/serve.h. */

/* Labels; words in order.  Results follow "->". */
#define DRV_INFO (KEEL_LABEL_USER + 0x100)  /* -> kind, capacity bytes (0: none), features,
                                            * interrupts taken, most requests in flight
                                            * at once, completions out of order */
#define DRV_OPEN ((KEEL_LABEL_USER + 0x101) | KEEL_LABEL_CAPS(1)) /* cap frame -> handle */
#define DRV_CLOSE (KEEL_LABEL_USER + 0x102) /* handle */
#define DRV_READ (KEEL_LABEL_USER + 0x103)  /* handle, buf off, len, dev offset, flags -> bytes */
#define DRV_WRITE (KEEL_LABEL_USER + 0x104) /* handle, buf off, len, dev offset, flags -> bytes */
#define DRV_FLUSH (KEEL_LABEL_USER + 0x105) /* handle */

/* -- Added by the drivers branch (UART, virtio-console, virtio-net) ---------
 *
 * DRV_ADDRESS: a packet device's own address: the MAC in the low 48 bits,
 * its first byte in the lowest byte (memcpy order); and how many received
 * frames the driver dropped because nobody read them.
 *
 * DRV_FAULT_INJECT exists for tests only: a driver started with
 * DRV_ARG_TEST_HOOKS in its argument does what word 0 names (a driver
 * started without the flag answers KEEL_E_UNKNOWN_CALL), so the tests can
 * watch the kernel stop a misbehaving driver and the device survive it.
 * The request is never answered: the driver faults while serving it. */
#define DRV_ADDRESS (KEEL_LABEL_USER + 0x140) /* -> address, frames dropped */
#define DRV_FAULT_INJECT (KEEL_LABEL_USER + 0x1f0) /* what */
#define DRV_INJECT_STRAY_PORT 1 /* touch an I/O port outside the driver's range */
#define DRV_ARG_TEST_HOOKS (1ul << 63)
#define DRV_ARG_UART_LOOPBACK (1ul << 62) /* the UART echoes what it sends (tests) */

#endif
