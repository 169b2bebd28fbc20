/* What the device manager (userspace/init/devmgr.c) answers on its
 * endpoint: the shell and the tests list the drivers and kill them.
 *
 * Every driver has an id (its index in the manager's table) and the name
 * it is registered under.  A killed driver is restarted at once, and so is
 * one that faults (the manager is its fault handler); a driver whose
 * device was detached is stopped and its name withdrawn. */
#ifndef KEEL_DEVMGR_H
#define KEEL_DEVMGR_H

#include "names.h"

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

#endif
