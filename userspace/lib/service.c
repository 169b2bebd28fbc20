/* The client side of names.h: finding a service by name and calling it,
 * again after the driver behind the name was replaced. */
#include "names.h"

/* How long a client waits for a name to come back: tries, each a yield. */
#define RECONNECT_TRIES 2000000

int ns_pack(const char *name, keel_word_t w[2])
{
    size_t n = strlen(name);

    w[0] = w[1] = 0;
    if (!n || n > NS_NAME_MAX)
        return 0;
    for (size_t i = 0; i < n; i++)
        w[i / 8] |= (keel_word_t)(unsigned char)name[i] << (8 * (i % 8));
    return 1;
}

void ns_unpack(const keel_word_t w[2], char out[NS_NAME_MAX + 1])
{
    for (int i = 0; i < NS_NAME_MAX; i++)
        out[i] = (char)(w[i / 8] >> (8 * (i % 8)));
    out[NS_NAME_MAX] = 0;
}

static long lookup(struct service *s)
{
    keel_word_t in[KEEL_MSG_WORDS] = { s->name[0], s->name[1], s->inbox }, out[KEEL_MSG_WORDS];
    struct keel_msg m;

    keel_cnode_delete(KEEL_SLOT_CNODE, service_cap(s));
    /* a grant from an earlier lookup that was answered too late */
    while (keel_recv(s->inbox, KEEL_RECV_NONBLOCK, s->window, &m) == KEEL_E_OK)
        keel_cnode_delete(KEEL_SLOT_CNODE, service_cap(s));
    long err = keel_call(s->ns, NS_LOOKUP, in, out);
    if (err)
        return err;
    err = keel_recv(s->inbox, KEEL_RECV_NONBLOCK, s->window, &m);
    if (err)
        return err;
    if ((m.label & KEEL_LABEL_MASK) != (NS_GRANT & KEEL_LABEL_MASK))
        return KEEL_E_BAD_STATE;
    /* The driver died between the grant and our receive: the kernel took its
     * capability out of the queued message.  The name will come back. */
    if (KEEL_INFO_CAPS(m.info) != 1)
        return KEEL_E_REVOKED;
    return KEEL_E_OK;
}

long service_connect(struct service *s)
{
    keel_word_t in[KEEL_MSG_WORDS] = { s->frame }, out[KEEL_MSG_WORDS];

    s->open = 0;
    long err = lookup(s);
    if (err || !s->frame)
        return err;
    err = keel_call(service_cap(s), DRV_OPEN, in, out);
    if (err)
        return err;
    s->handle = out[0];
    s->open = 1;
    return KEEL_E_OK;
}

static int driver_gone(long err)
{
    return err == KEEL_E_REVOKED || err == KEEL_E_INVALID_CAP;
}

long service_call(struct service *s, keel_word_t label, const keel_word_t in[KEEL_MSG_WORDS],
                  keel_word_t out[KEEL_MSG_WORDS])
{
    keel_word_t req[KEEL_MSG_WORDS];
    long err;

    for (;;) {
        memcpy(req, in, sizeof(req));
        if (s->open && label != DRV_INFO)
            req[0] = s->handle;
        err = keel_call(service_cap(s), label, req, out);
        if (!driver_gone(err))
            return err;
        s->retries++;
        /* The driver went away: wait until a new one has the name. */
        for (unsigned long tries = 0;; tries++) {
            err = service_connect(s);
            if (!err)
                break;
            if ((err != KEEL_E_WOULD_BLOCK && !driver_gone(err)) || tries == RECONNECT_TRIES)
                return err;
            keel_yield();
        }
    }
}

long service_io(struct service *s, keel_word_t label, unsigned long len, unsigned long dev_off,
                keel_word_t flags, unsigned long *done)
{
    keel_word_t in[KEEL_MSG_WORDS] = { s->handle, 0, len, dev_off, flags }, out[KEEL_MSG_WORDS];
    long err = service_call(s, label, in, out);

    if (done)
        *done = err ? 0 : out[0];
    return err;
}

long service_io_many(struct service *s, keel_word_t label, const struct drv_blk_rec *recs,
                     unsigned long n, unsigned long *done)
{
    unsigned long table = KEEL_PAGE_SIZE - n * sizeof(*recs);

    if (!n || n > DRV_MANY_BLOCK)
        return KEEL_E_INVALID_ARG;
    for (unsigned long i = 0; i < n; i++) {
        if (recs[i].buf_off > table || recs[i].len > table - recs[i].buf_off)
            return KEEL_E_INVALID_ARG; /* its data would be the table's bytes */
    }
    memcpy(s->buf + table, recs, n * sizeof(*recs));
    keel_word_t in[KEEL_MSG_WORDS] = { s->handle, table, n * sizeof(*recs), 0, DRV_MANY },
                out[KEEL_MSG_WORDS];
    long err = service_call(s, label, in, out);

    if (done)
        *done = err ? 0 : out[0];
    return err;
}
