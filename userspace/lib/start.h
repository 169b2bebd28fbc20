/* Starting the system's services: the name service (userspace/nameserv)
 * and the device manager (userspace/devmgr), each a process of its own.
 * Init does it on every boot; the services tests do it the same way. */
#ifndef KEEL_START_H
#define KEEL_START_H

#include "spawn.h"

struct services {
    keel_word_t names;  /* a client's capability to the name service */
    keel_word_t devmgr; /* the manager's endpoint (devmgr.h), to call it */
    struct process ns, dm;
};

/* Both services, from the caller's boot information and capabilities: the
 * device memory of every device, which the device manager takes, and
 * copies of the interrupt, I/O-port and io_space controls.  Returns once
 * the manager answers, its drivers started and their names registered; 0,
 * or an error (printed). */
long services_start(struct services *out);

#endif
