/* Finding the devices the kernel handed over (the boot information's
 * device list) and the second 16550, for whoever holds their capabilities:
 * the device manager, or the tests that start drivers of their own. */
#ifndef KEEL_DEVICES_H
#define KEEL_DEVICES_H

#include "objects.h"

/* The second 16550 (COM2): its ports and line. */
#define COM2_BASE 0x2f8
#define COM2_LAST 0x2ff
#define COM2_IRQ 3

/* Whether a 16550 answers at COM2 (needs the I/O-port control capability
 * in KEEL_SLOT_IO_PORT_CONTROL). */
int com2_present(void);

/* The first device of the boot information whose virtio DeviceID is id: a
 * frame of its registers is made in *regs (unmapped) and its description
 * returned; null if there is none. */
struct keel_device_desc *find_virtio_device(unsigned int id, keel_word_t *regs);

/* The device's io_space (its DMA windows), for its driver; 0 on failure. */
keel_word_t make_io_space(const struct keel_device_desc *d);

#endif
