/* The request loop every driver shares: the client protocol of
 * userspace/lib/driver.h (shared buffers, read/write ranges, waiting
 * reads, answers held until the device is done) on one thread that waits
 * for requests and for its interrupt together (the interrupt's
 * notification is bound to the thread, so it ends a receive).
 *
 * A driver fills in struct serve_ops and calls serve_run.  The loop checks
 * everything the protocol defines (handles and the badge that opened them,
 * ranges inside the shared page, flags, the client's page still there)
 * before an op sees a request.  An op may answer at once (a byte count),
 * later (SERVE_LATER: the driver calls serve_complete when the device is
 * done) or ask to be tried again after the next interrupt (SERVE_RETRY).
 * An op may also wait for its device itself (virtq_wait_used on the bound
 * notification: a thread waiting on a notification takes its signals
 * before the bound receive does); it then adds the interrupts it took to
 * serve_interrupts.
 *
 * Its capability table (64 slots) is shared out so:
 *
 *   5 .. 39   the driver's own capabilities (DRV_SLOT_SERVICE is 5)
 *   40 .. 43  the receive window (reply capability, then transferred ones)
 *   44 .. 51  the clients' buffer frames (one per DRV_OPEN)
 *   52 .. 59  answers held for later (waiting reads, writes in flight)
 *
 * and its address space (the 2 MiB its code lies in already has a page
 * table; the driver has no memory to make more):
 *
 *   0x5e0000 .. 0x5effff  the driver's own frames (SERVE_DRIVER_VA)
 *   0x5f0000 .. 0x5f7fff  the clients' buffers
 *   0x5f8000 .. 0x5fffff  device registers and rings (SERVE_DEVICE_VA) */
#ifndef KEEL_SERVE_H
#define KEEL_SERVE_H

#include "../lib/driver.h"
#include "../lib/keel.h"

#define SERVE_WINDOW 40
#define SERVE_CLIENT_SLOT 44
#define SERVE_PENDING_SLOT 52
#define SERVE_CLIENTS 8
#define SERVE_PENDING 8
#define SERVE_PENDING_EACH 4 /* answers held for one client (badge) at most */

#define SERVE_DRIVER_VA 0x5e0000ul
#define SERVE_CLIENT_VA 0x5f0000ul
#define SERVE_DEVICE_VA 0x5f8000ul

/* What a read or write op returns besides a byte count or -KEEL_E_...: */
#define SERVE_LATER (-1000) /* answered later: serve_complete(req->tag, ...) */
#define SERVE_RETRY (-1001) /* no room now: ask again after the next interrupt */

struct drv_req {
    keel_word_t label, badge, handle, dev_off, flags;
    unsigned char *buf; /* the client's range, mapped here */
    unsigned long len;
    unsigned long tag; /* an op returning SERVE_LATER sets it (not 0) */
};

struct serve_ops {
    const char *name;
    keel_word_t kind, capacity, features; /* DRV_INFO's answer */
    /* Bytes read (0: none now; the loop holds the request if DRV_WAIT).
     * NULL: KEEL_E_INVALID_ARG (a device that cannot be read or written). */
    long (*read)(struct drv_req *r);
    long (*write)(struct drv_req *r);
    /* DRV_FLUSH on a good handle (NULL: KEEL_E_OK, writes are on the
     * device once answered); KEEL_E_... */
    long (*flush)(void);
    /* The notification fired: look at the device, complete what it finished. */
    void (*interrupt)(void);
    /* Any other label (NULL: KEEL_E_UNKNOWN_CALL); results in res. */
    long (*other)(struct keel_msg *m, keel_word_t res[KEEL_MSG_WORDS]);
};

/* A byte queue for stream devices: what arrived and no client has read. */
#define BYTERING_SIZE 4096u

struct bytering {
    unsigned char data[BYTERING_SIZE];
    unsigned head, count;
};

static inline unsigned bytering_room(const struct bytering *q)
{
    return BYTERING_SIZE - q->count;
}

static inline void bytering_put(struct bytering *q, const unsigned char *p, unsigned n)
{
    for (unsigned i = 0; i < n && q->count < BYTERING_SIZE; i++)
        q->data[(q->head + q->count++) % BYTERING_SIZE] = p[i];
}

static inline unsigned long bytering_get(struct bytering *q, unsigned char *p, unsigned long n)
{
    unsigned long i;

    for (i = 0; i < n && q->count; i++, q->count--) {
        p[i] = q->data[q->head];
        q->head = (q->head + 1) % BYTERING_SIZE;
    }
    return i;
}

/* Interrupts taken (the fourth word of DRV_INFO's answer): the loop counts
 * those that end its receive, ops add those they wait for themselves. */
extern unsigned long serve_interrupts;
/* A driver with a queue of requests says here the most it had in flight at
 * once and how many completed before one posted earlier (DRV_INFO's fifth
 * and sixth words). */
extern unsigned long serve_in_flight_max, serve_out_of_order;

/* Binds the notification the interrupt signals to this thread. */
long serve_bind(keel_cap_t ntfn);
/* Reports why the driver cannot go on and stops its thread (returning from
 * keel_main would power the machine off). */
__attribute__((noreturn)) void serve_fail(const char *name, const char *what, long err);
__attribute__((noreturn)) void serve_run(const struct serve_ops *ops);
/* Answers the request held with tag (SERVE_LATER). */
void serve_complete(unsigned long tag, long err, keel_word_t bytes);
/* The client's bytes of the request held with tag, or NULL when its caller
 * or its buffer has gone meanwhile (a read completing later copies there). */
unsigned char *serve_held_buffer(unsigned long tag);

#endif
