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

/* Labels; words in order.  Results follow "->". */
#define DM_LIST (KEEL_LABEL_USER + 0x300) /* id -> name0, name1, state, starts, virtio id, gsi */
#define DM_KILL (KEEL_LABEL_USER + 0x301) /* name0, name1 (or 0, id) -> starts */
#define DM_WAIT (KEEL_LABEL_USER + 0x302) /* after -> events: answered once events > after */
#define DM_CRASH (KEEL_LABEL_USER + 0x303) /* name0, name1 (or 0, id): make the driver fault,
                                            * as a bug in it would (for tests) */

#define DM_MAX 16

#endif
