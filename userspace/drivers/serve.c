/* The request loop every driver runs (see serve.h). */
#include "serve.h"

#define CN KEEL_SLOT_CNODE

struct client {
    int used;
    keel_word_t badge;
};

/* An answer held for later: a waiting read, a write the device has not
 * finished (later), or one that found no room (retried after interrupts). */
struct held {
    int used, later;
    struct drv_req req;
};

static const struct serve_ops *ops;
static struct client clients[SERVE_CLIENTS];
static struct held held[SERVE_PENDING];
static unsigned long next_tag = 1;
unsigned long serve_interrupts;
unsigned long serve_in_flight_max, serve_out_of_order;

long serve_bind(keel_cap_t ntfn)
{
    return keel_tcb_bind_notification(KEEL_SLOT_TCB, ntfn);
}

void serve_fail(const char *name, const char *what, long err)
{
    printf("%s: %s: %ld\n", name, what, err);
    for (;;)
        keel_tcb_suspend(KEEL_SLOT_TCB);
}

static void answer(keel_cap_t reply, long err, keel_word_t bytes)
{
    keel_word_t res[KEEL_MSG_WORDS] = { bytes };

    keel_reply(reply, err, res);
}

/* Window slots emptied while serving the current message (bit i: slot
 * SERVE_WINDOW + i). */
static unsigned taken;

/* Answers the call being served (its reply capability is in the window). */
static void answer_now(long err, keel_word_t bytes)
{
    answer(SERVE_WINDOW, err, bytes);
    taken |= 1;
}

static unsigned char *client_buf(unsigned long handle)
{
    return (unsigned char *)(SERVE_CLIENT_VA + handle * KEEL_PAGE_SIZE);
}

static long do_open(const struct keel_msg *m, keel_word_t res[KEEL_MSG_WORDS])
{
    unsigned i;
    long err;

    if (KEEL_INFO_CAPS(m->info) < 1 || m->w[0] != SERVE_WINDOW + 1)
        return KEEL_E_INVALID_ARG; /* no frame came with it */
    for (i = 0; i < SERVE_CLIENTS && clients[i].used; i++)
        ;
    if (i == SERVE_CLIENTS)
        return KEEL_E_FULL;
    if ((err = keel_cnode_move(CN, SERVE_CLIENT_SLOT + i, CN, SERVE_WINDOW + 1)))
        return err;
    taken |= 2;
    err = keel_frame_map(SERVE_CLIENT_SLOT + i, KEEL_SLOT_VSPACE,
                         (keel_word_t)client_buf(i), KEEL_RIGHT_READ | KEEL_RIGHT_WRITE);
    if (err) {
        keel_cnode_delete(CN, SERVE_CLIENT_SLOT + i);
        return err == KEEL_E_WRONG_TYPE ? KEEL_E_INVALID_ARG : err;
    }
    clients[i] = (struct client){ 1, m->badge };
    res[0] = i;
    return KEEL_E_OK;
}

static int handle_ok(keel_word_t handle, keel_word_t badge)
{
    return handle < SERVE_CLIENTS && clients[handle].used && clients[handle].badge == badge;
}

/* Whether the client's page is still mapped here: a client (or whoever
 * holds its memory) may revoke it at any time, and touching it then would
 * fault.  A page gone takes its handle with it. */
static int buffer_there(keel_word_t handle)
{
    keel_word_t pa, va = 0;

    if (!keel_frame_info(SERVE_CLIENT_SLOT + handle, &pa, &va) &&
        va == (keel_word_t)client_buf(handle))
        return 1;
    keel_cnode_delete(CN, SERVE_CLIENT_SLOT + handle);
    clients[handle].used = 0;
    return 0;
}

static long do_close(const struct keel_msg *m)
{
    keel_word_t h = m->w[0];

    if (!handle_ok(h, m->badge))
        return KEEL_E_INVALID_ARG;
    /* Held requests on this buffer end now: it is about to go. */
    for (unsigned i = 0; i < SERVE_PENDING; i++) {
        if (held[i].used && !held[i].later && held[i].req.handle == h) {
            answer(SERVE_PENDING_SLOT + i, KEEL_E_REVOKED, 0);
            held[i].used = 0;
        }
    }
    keel_frame_unmap(SERVE_CLIENT_SLOT + h);
    keel_cnode_delete(CN, SERVE_CLIENT_SLOT + h);
    clients[h].used = 0;
    return KEEL_E_OK;
}

/* Whether the caller of held answer i still waits for it. */
static int caller_waits(unsigned i)
{
    keel_word_t type = 0;

    return !keel_cnode_identify(CN, SERVE_PENDING_SLOT + i, &type, 0, 0) &&
           type == KEEL_OBJ_REPLY;
}

/* Frees the held answers whose callers have gone (data already taken for a
 * write in flight is the device's; its completion finds nobody). */
static void forget_gone(void)
{
    for (unsigned i = 0; i < SERVE_PENDING; i++) {
        if (held[i].used && !caller_waits(i)) {
            held[i].used = 0;
            keel_cnode_delete(CN, SERVE_PENDING_SLOT + i);
        }
    }
}

/* How many answers are held for badge; *free: a free entry (or SERVE_PENDING). */
static unsigned held_count(keel_word_t badge, unsigned *free)
{
    unsigned n = 0;

    *free = SERVE_PENDING;
    for (unsigned i = SERVE_PENDING; i-- > 0;) {
        if (!held[i].used)
            *free = i;
        else
            n += held[i].req.badge == badge;
    }
    return n;
}

/* Runs a read or write; the same for a first try and a retry. */
static long run_op(struct drv_req *r)
{
    long (*op)(struct drv_req *) = r->label == DRV_READ ? ops->read : ops->write;

    if ((r->flags & DRV_MANY) && ops->kind != DRV_KIND_PACKET && ops->kind != DRV_KIND_BLOCK)
        return -KEEL_E_INVALID_ARG; /* records mean nothing to other devices */
    long n = op ? op(r) : -KEEL_E_INVALID_ARG;

    if (n == 0 && r->label == DRV_READ && (r->flags & DRV_WAIT) && r->len)
        return SERVE_RETRY;
    return n;
}

static void do_transfer(const struct keel_msg *m)
{
    struct drv_req r = { .label = m->label & KEEL_LABEL_MASK, .badge = m->badge,
                         .handle = m->w[0], .dev_off = m->w[3], .flags = m->w[4],
                         .len = m->w[2] };
    keel_word_t off = m->w[1];
    unsigned slot;

    if (!handle_ok(r.handle, r.badge) || off > KEEL_PAGE_SIZE || r.len > KEEL_PAGE_SIZE - off ||
        (r.flags & ~(DRV_WAIT | DRV_SYNC | DRV_MANY))) {
        answer_now(KEEL_E_INVALID_ARG, 0);
        return;
    }
    unsigned mine = held_count(r.badge, &slot);
    if (slot == SERVE_PENDING || mine >= SERVE_PENDING_EACH) {
        forget_gone();
        mine = held_count(r.badge, &slot);
    }
    if (slot == SERVE_PENDING || mine >= SERVE_PENDING_EACH) {
        /* nowhere to hold an answer (or this client holds its share): do not start */
        answer_now(KEEL_E_FULL, 0);
        return;
    }
    if (!buffer_there(r.handle)) {
        answer_now(KEEL_E_REVOKED, 0);
        return;
    }
    r.buf = client_buf(r.handle) + off;
    r.tag = next_tag++;
    long n = run_op(&r);
    if (n >= 0) {
        answer_now(KEEL_E_OK, (keel_word_t)n);
    } else if (n == SERVE_LATER || n == SERVE_RETRY) {
        keel_cnode_move(CN, SERVE_PENDING_SLOT + slot, CN, SERVE_WINDOW);
        taken |= 1;
        held[slot] = (struct held){ 1, n == SERVE_LATER, r };
    } else {
        answer_now(-n, 0);
    }
}

void serve_complete(unsigned long tag, long err, keel_word_t bytes)
{
    for (unsigned i = 0; i < SERVE_PENDING; i++) {
        if (held[i].used && held[i].later && held[i].req.tag == tag) {
            answer(SERVE_PENDING_SLOT + i, err, bytes);
            held[i].used = 0;
            return;
        }
    }
}

unsigned char *serve_held_buffer(unsigned long tag)
{
    for (unsigned i = 0; i < SERVE_PENDING; i++) {
        if (held[i].used && held[i].later && held[i].req.tag == tag) {
            keel_word_t h = held[i].req.handle;
            if (!clients[h].used || clients[h].badge != held[i].req.badge || !buffer_there(h))
                return 0;
            return held[i].req.buf;
        }
    }
    return 0;
}

/* After an interrupt: what waited for data or room may go on now, oldest
 * first, each tried once. */
static void retry_held(void)
{
    unsigned tried = 0;

    for (;;) {
        struct held *h = NULL;
        for (unsigned i = 0; i < SERVE_PENDING; i++) {
            if (held[i].used && !held[i].later && !(tried & (1u << i)) &&
                (!h || held[i].req.tag < h->req.tag))
                h = &held[i];
        }
        if (!h)
            return;
        unsigned i = (unsigned)(h - held);
        tried |= 1u << i;
        if (!caller_waits(i)) {
            h->used = 0; /* its caller is gone: take nothing for it */
            continue;
        }
        if (!clients[h->req.handle].used || !buffer_there(h->req.handle)) {
            answer(SERVE_PENDING_SLOT + i, KEEL_E_REVOKED, 0);
            h->used = 0;
            continue;
        }
        long n = run_op(&h->req);
        if (n == SERVE_RETRY)
            continue;
        if (n == SERVE_LATER) {
            h->later = 1;
            continue;
        }
        answer(SERVE_PENDING_SLOT + i, n >= 0 ? KEEL_E_OK : -n, n >= 0 ? (keel_word_t)n : 0);
        h->used = 0;
    }
}

void serve_run(const struct serve_ops *o)
{
    ops = o;
    printf("%s: ready\n", ops->name);
    for (;;) {
        struct keel_msg m;
        keel_word_t res[KEEL_MSG_WORDS] = { 0 };
        long err;

        if (keel_recv(DRV_SLOT_SERVICE, 0, SERVE_WINDOW, &m))
            continue;
        taken = 0;
        if (m.label == KEEL_LABEL_NOTIFY && !m.info) {
            if (ops->interrupt) { /* (a client's send with this label just makes it look) */
                serve_interrupts++;
                ops->interrupt();
            }
            retry_held();
            continue;
        }
        if (m.info & KEEL_INFO_REPLY) {
            switch (m.label & KEEL_LABEL_MASK) {
            case DRV_READ & KEEL_LABEL_MASK:
            case DRV_WRITE & KEEL_LABEL_MASK:
                do_transfer(&m);
                goto done;
            case DRV_INFO:
                res[0] = ops->kind;
                res[1] = ops->capacity;
                res[2] = ops->features;
                res[3] = serve_interrupts;
                res[4] = serve_in_flight_max;
                res[5] = serve_out_of_order;
                err = KEEL_E_OK;
                break;
            case DRV_OPEN & KEEL_LABEL_MASK:
                err = do_open(&m, res);
                break;
            case DRV_CLOSE:
                err = do_close(&m);
                break;
            case DRV_FLUSH:
                err = !handle_ok(m.w[0], m.badge) ? KEEL_E_INVALID_ARG
                      : ops->flush                ? ops->flush()
                                                  : KEEL_E_OK;
                break;
            default:
                err = ops->other ? ops->other(&m, res) : KEEL_E_UNKNOWN_CALL;
            }
            if (!keel_reply(SERVE_WINDOW, err, res))
                taken |= 1;
        }
    done:
        /* Whatever came along and was not taken (a send's capabilities, a
         * reply capability not consumed) goes, so the window is empty again. */
        for (unsigned i = 0; i <= KEEL_INFO_CAPS(m.info); i++) {
            if (!(taken & (1u << i)) && (i || (m.info & KEEL_INFO_REPLY)))
                keel_cnode_delete(CN, SERVE_WINDOW + i);
        }
    }
}
