/* The name service, and the client library that finds drivers through it.
 *
 * The name service (userspace/nameserv) maps short names (`blk0`, `rng0`,
 * `net0`, `console`) to endpoint capabilities.  The device manager holds
 * the only copy of its endpoint badged NS_BADGE_ADMIN and is the only one
 * allowed to register and withdraw names; everyone else may look names up.
 *
 * Replies carry no capabilities, so a lookup names an endpoint of the
 * client's own (its inbox) as a capability in the call: the name service
 * sends the service's capability there (label NS_GRANT) and then answers
 * the call.  Each client gets a copy with a badge of its own, which is how
 * a driver tells its clients apart.  When a driver dies its endpoint goes
 * with it, and with it every copy: a client's next call fails with
 * KEEL_E_INVALID_CAP (or KEEL_E_REVOKED for a call in flight), and a lookup
 * answers KEEL_E_WOULD_BLOCK until the device manager registers the driver
 * it started in its place.  A name withdrawn (its device detached) or never
 * registered answers KEEL_E_NOT_MAPPED.
 *
 * A name is at most NS_NAME_MAX bytes, packed little-endian into two words.
 */
#ifndef KEEL_NAMES_H
#define KEEL_NAMES_H

#include "driver.h"

#define NS_NAME_MAX 15
#define NS_BADGE_ADMIN 1ul

/* Labels; words in order.  Results follow "->". */
#define NS_REGISTER ((KEEL_LABEL_USER + 0x200) | KEEL_LABEL_CAPS(4)) /* name0, name1, cap */
#define NS_WITHDRAW (KEEL_LABEL_USER + 0x201) /* name0, name1 */
#define NS_LOOKUP ((KEEL_LABEL_USER + 0x202) | KEEL_LABEL_CAPS(4)) /* name0, name1, inbox */
#define NS_LIST (KEEL_LABEL_USER + 0x203)   /* index -> name0, name1 (0: past the end) */
#define NS_GRANT ((KEEL_LABEL_USER + 0x204) | KEEL_LABEL_CAPS(1)) /* cap: sent to an inbox */

/* Packs a name into two words; 0 if it is empty or too long. */
int ns_pack(const char *name, keel_word_t w[2]);
void ns_unpack(const keel_word_t w[2], char out[NS_NAME_MAX + 1]);

/* A client's connection to one named service.  The client provides slots:
 * inbox (an endpoint of its own), window (four consecutive empty slots, the
 * service's capability lands in window + 1) and, for block, entropy and
 * other data services, a frame mapped at buf shared with the driver. */
struct service {
    keel_cap_t ns, inbox, window;
    keel_cap_t frame; /* 0: no buffer */
    unsigned char *buf;
    keel_word_t name[2];
    keel_word_t handle;
    int open;
    unsigned long retries; /* how often a request had to be repeated */
};

/* Looks the name up and opens it.  KEEL_E_NOT_MAPPED: no such name;
 * KEEL_E_WOULD_BLOCK: its driver is being replaced; KEEL_E_REVOKED or
 * KEEL_E_INVALID_CAP: its driver died during the lookup (try again). */
long service_connect(struct service *s);
/* The service's capability while connected. */
static inline keel_cap_t service_cap(const struct service *s)
{
    return s->window + 1;
}
/* A call on the service: when the driver went away (its endpoint revoked,
 * the call lost) it looks the name up again, reopens, and repeats, waiting
 * (a bounded time) while the name's driver is being replaced.  A withdrawn
 * name ends it: KEEL_E_NOT_MAPPED. */
long service_call(struct service *s, keel_word_t label, const keel_word_t in[KEEL_MSG_WORDS],
                  keel_word_t out[KEEL_MSG_WORDS]);
/* DRV_READ / DRV_WRITE of len bytes between the shared buffer's offset 0 and
 * the device offset; the bytes moved in *done. */
long service_io(struct service *s, keel_word_t label, unsigned long len, unsigned long dev_off,
                keel_word_t flags, unsigned long *done);
/* Several block requests submitted at once (DRV_MANY, driver.h): n records
 * (at most DRV_MANY_BLOCK), each between its range of the shared buffer and
 * its device offset, all reads (DRV_READ) or all writes (DRV_WRITE), on the
 * device together; one answer when all are done, their bytes in *done.  The
 * records go at the end of the buffer: the data ranges lie below
 * KEEL_PAGE_SIZE - n * sizeof(struct drv_blk_rec). */
long service_io_many(struct service *s, keel_word_t label, const struct drv_blk_rec *recs,
                     unsigned long n, unsigned long *done);

#endif
