/* Channels: a single-producer, single-consumer byte ring in memory both
 * sides have mapped (frames they share), with notifications to wake a side
 * that sleeps on an empty or full ring.  Bulk data never passes through the
 * kernel; it is entered only to wake a sleeper, and only when one sleeps. */
#ifndef KEEL_CHANNEL_H
#define KEEL_CHANNEL_H

#include "keel.h"

#define CHANNEL_HEADER 64

struct channel {
    volatile unsigned long head; /* bytes ever written; the producer's */
    volatile unsigned long tail; /* bytes ever read; the consumer's */
    unsigned long size;          /* bytes of data space */
    keel_cap_t readable;         /* notification the consumer sleeps on */
    keel_cap_t writable;         /* notification the producer sleeps on */
    volatile unsigned long reader_waiting;
    volatile unsigned long writer_waiting;
    unsigned long pad;
    unsigned char data[];
};

/* Lays a channel over `bytes` of shared memory at ch. */
void channel_init(struct channel *ch, unsigned long bytes, keel_cap_t readable,
                  keel_cap_t writable);
unsigned long channel_capacity(const struct channel *ch);
/* Copy what fits / what is there now; return the byte count (maybe 0). */
unsigned long channel_try_write(struct channel *ch, const void *buf, unsigned long len);
unsigned long channel_try_read(struct channel *ch, void *buf, unsigned long len);
/* Write all of buf, sleeping while the ring is full. */
void channel_write(struct channel *ch, const void *buf, unsigned long len);
/* Read at least one byte (up to len), sleeping while the ring is empty. */
unsigned long channel_read(struct channel *ch, void *buf, unsigned long len);

#endif
