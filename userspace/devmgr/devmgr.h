/* What the device manager (userspace/devmgr/devmgr.c) answers on its
 * endpoint: the shell and the tests list the drivers and kill them; and
 * the capabilities it is started with (userspace/lib/start.c).
 *
 * Every driver has an id (its index in the manager's table) and the name
 * it is registered under.  A killed driver is restarted at once, and so is
 * one that faults (the manager is its fault handler); a driver whose
 * device was detached is stopped and its name withdrawn. */
#ifndef KEEL_DEVMGR_H
#define KEEL_DEVMGR_H

#include "../lib/names.h"

enum dm_state {
    DM_FREE = 0,    /* no device */
    DM_RUNNING = 1, /* its driver serves the name */
    DM_FAILED = 2,  /* the driver could not be started */
};

/* What kind of device a driver serves (DM_LIST's fifth word): the virtio
 * DeviceID, or DM_TYPE_UART for the 16550 on COM2. */
#define DM_TYPE_UART 0x100

/* The driver program and the kind of device of a type, for listings. */
static inline const char *dm_program(unsigned long type)
{
    switch (type) {
    case 1: return "virtio_net";
    case 2: return "virtio_blk";
    case 3: return "virtio_console";
    case 4: return "virtio_rng";
    case DM_TYPE_UART: return "uart";
    }
    return "?";
}

static inline const char *dm_kind(unsigned long type)
{
    switch (type) {
    case 1: return "net";
    case 2: return "block";
    case 3: case DM_TYPE_UART: return "stream";
    case 4: return "entropy";
    }
    return "other";
}

/* Labels; words in order.  Results follow "->". */
#define DM_LIST (KEEL_LABEL_USER + 0x300) /* id -> name0, name1, state, starts, type, gsi */
#define DM_KILL (KEEL_LABEL_USER + 0x301) /* name0, name1 (or 0, id) -> starts */
#define DM_WAIT (KEEL_LABEL_USER + 0x302) /* after -> events: answered once events > after */
#define DM_CRASH (KEEL_LABEL_USER + 0x303) /* name0, name1 (or 0, id): make the driver fault,
                                            * as a bug in it would (for tests) */

#define DM_MAX 16

/* Its capability table, as the one who starts it fills it: the interrupt,
 * I/O-port and io_space controls in the root task's slots, then these.  Its
 * boot information (at KEEL_BOOTINFO_VADDR, a copy) lists the devices with
 * the slots it holds them in, and its initrd (a copy at KEEL_INITRD_VADDR)
 * holds the driver programs only. */
#define DM_SLOT_ENDPOINT 8 /* requests, its drivers' faults, the hotplug line */
#define DM_SLOT_NAMES 9    /* the name service, badged NS_BADGE_ADMIN */
#define DM_SLOT_POOL 10    /* untyped memory: its drivers' and its own */
#define DM_SLOT_FIRST_DEVICE 11 /* device i's register memory (boot information order) */
#define DM_SLOT_FIRST_FREE (DM_SLOT_FIRST_DEVICE + KEEL_MAX_DEVICES)
#define DM_CNODE_BITS 12   /* a driver's process takes DRIVER_SLOTS of them */
#define DM_POOL_BITS 23

#endif
