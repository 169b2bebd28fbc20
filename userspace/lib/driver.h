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

/* Labels; words in order.  Results follow "->". */
#define DRV_INFO (KEEL_LABEL_USER + 0x100)  /* -> kind, capacity bytes (0: none), features */
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
