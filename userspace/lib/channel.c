#include "channel.h"

void channel_init(struct channel *ch, unsigned long bytes, keel_cap_t readable,
                  keel_cap_t writable)
{
    ch->head = ch->tail = 0;
    ch->size = bytes - CHANNEL_HEADER;
    ch->readable = readable;
    ch->writable = writable;
    ch->reader_waiting = ch->writer_waiting = 0;
}

unsigned long channel_capacity(const struct channel *ch)
{
    return ch->size;
}

/* Copies n bytes to or from the ring at stream position pos, in at most
 * two contiguous pieces. */
static void copy_ring(unsigned char *ring, unsigned long size, unsigned long pos,
                      const unsigned char *src, unsigned char *dst, unsigned long n)
{
    unsigned long at = pos % size, first = size - at < n ? size - at : n;

    if (src) {
        memcpy(ring + at, src, first);
        memcpy(ring, src + first, n - first);
    } else {
        memcpy(dst, ring + at, first);
        memcpy(dst + first, ring, n - first);
    }
}

unsigned long channel_try_write(struct channel *ch, const void *buf, unsigned long len)
{
    unsigned long head = ch->head, tail = __atomic_load_n(&ch->tail, __ATOMIC_ACQUIRE);
    unsigned long room = ch->size - (head - tail), n = len < room ? len : room;

    if (!n)
        return 0;
    copy_ring(ch->data, ch->size, head, buf, NULL, n);
    __atomic_store_n(&ch->head, head + n, __ATOMIC_RELEASE);
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
    /* One wake-up per sleep: whoever clears the flag signals. */
    if (ch->reader_waiting && __atomic_exchange_n(&ch->reader_waiting, 0, __ATOMIC_ACQ_REL))
        keel_notification_signal(ch->readable);
    return n;
}

unsigned long channel_try_read(struct channel *ch, void *buf, unsigned long len)
{
    unsigned long tail = ch->tail, head = __atomic_load_n(&ch->head, __ATOMIC_ACQUIRE);
    unsigned long avail = head - tail, n = len < avail ? len : avail;

    if (!n)
        return 0;
    copy_ring(ch->data, ch->size, tail, NULL, buf, n);
    __atomic_store_n(&ch->tail, tail + n, __ATOMIC_RELEASE);
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
    if (ch->writer_waiting && __atomic_exchange_n(&ch->writer_waiting, 0, __ATOMIC_ACQ_REL))
        keel_notification_signal(ch->writable);
    return n;
}

/* Sleep protocol: announce, re-check, then wait.  A signal sent between
 * the re-check and the wait stays in the notification word, so the wait
 * returns at once: no wake-up is lost. */
void channel_write(struct channel *ch, const void *buf, unsigned long len)
{
    const unsigned char *p = buf;

    while (len) {
        unsigned long n = channel_try_write(ch, p, len);
        p += n;
        len -= n;
        if (n || !len)
            continue;
        ch->writer_waiting = 1;
        __atomic_thread_fence(__ATOMIC_SEQ_CST);
        if (ch->size - (ch->head - ch->tail) == 0)
            keel_notification_wait(ch->writable, 0);
        else if (__atomic_exchange_n(&ch->writer_waiting, 0, __ATOMIC_ACQ_REL) == 0)
            keel_notification_poll(ch->writable, 0); /* consume the signal sent anyway */
    }
}

unsigned long channel_read(struct channel *ch, void *buf, unsigned long len)
{
    for (;;) {
        unsigned long n = channel_try_read(ch, buf, len);
        if (n)
            return n;
        ch->reader_waiting = 1;
        __atomic_thread_fence(__ATOMIC_SEQ_CST);
        if (ch->head == ch->tail)
            keel_notification_wait(ch->readable, 0);
        else if (__atomic_exchange_n(&ch->reader_waiting, 0, __ATOMIC_ACQ_REL) == 0)
            keel_notification_poll(ch->readable, 0); /* consume the signal sent anyway */
    }
}
