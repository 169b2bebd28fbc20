/* The driver side of driver.h that every driver shares: the table of
 * clients' buffers (DRV_OPEN / DRV_CLOSE) and the request loop. */
#include "driver.h"

static keel_word_t handle_badge[DRV_HANDLES];
static unsigned char handle_used[DRV_HANDLES];

long drv_open(const struct keel_msg *m, keel_word_t *res)
{
    if (KEEL_INFO_CAPS(m->info) != 1)
        return KEEL_E_INVALID_ARG;
    for (keel_word_t i = 0; i < DRV_HANDLES; i++) {
        if (handle_used[i])
            continue;
        long err = keel_cnode_move(KEEL_SLOT_CNODE, DRV_SLOT_HANDLE + i, KEEL_SLOT_CNODE, m->w[0]);
        if (!err)
            err = keel_frame_map(DRV_SLOT_HANDLE + i, KEEL_SLOT_VSPACE,
                                 DRV_HANDLE_VA + i * 4096ul, KEEL_RIGHT_READ | KEEL_RIGHT_WRITE);
        if (err) {
            keel_cnode_delete(KEEL_SLOT_CNODE, DRV_SLOT_HANDLE + i);
            return err == KEEL_E_WRONG_TYPE ? KEEL_E_INVALID_ARG : err;
        }
        handle_used[i] = 1;
        handle_badge[i] = m->badge;
        res[0] = i;
        return KEEL_E_OK;
    }
    return KEEL_E_FULL;
}

unsigned char *drv_buffer(const struct keel_msg *m)
{
    keel_word_t h = m->w[0];

    if (h >= DRV_HANDLES || !handle_used[h] || handle_badge[h] != m->badge)
        return 0;
    return (unsigned char *)(DRV_HANDLE_VA + h * 4096ul);
}

long drv_close(const struct keel_msg *m)
{
    if (!drv_buffer(m))
        return KEEL_E_INVALID_ARG;
    keel_cnode_delete(KEEL_SLOT_CNODE, DRV_SLOT_HANDLE + m->w[0]);
    handle_used[m->w[0]] = 0;
    return KEEL_E_OK;
}

unsigned char *drv_range(const struct keel_msg *m, unsigned long *len)
{
    unsigned char *buf = drv_buffer(m);
    unsigned long off = m->w[1];

    *len = m->w[2];
    if (!buf || off >= 4096 || *len > 4096 - off)
        return 0;
    return buf + off;
}

void drv_serve(long (*serve_one)(const struct keel_msg *m, keel_word_t *res))
{
    for (;;) {
        struct keel_msg m;
        keel_word_t res[KEEL_MSG_WORDS] = { 0 };

        if (keel_recv(DRV_SLOT_SERVICE, 0, DRV_WINDOW, &m))
            continue;
        long err;
        switch (m.label & KEEL_LABEL_MASK) {
        case DRV_OPEN & KEEL_LABEL_MASK:
            err = drv_open(&m, res);
            break;
        case DRV_CLOSE:
            err = drv_close(&m);
            break;
        default:
            err = serve_one(&m, res);
        }
        for (keel_word_t s = DRV_WINDOW + 1; s <= DRV_WINDOW + KEEL_MSG_CAPS; s++)
            keel_cnode_delete(KEEL_SLOT_CNODE, s);
        if (m.info & KEEL_INFO_REPLY)
            keel_reply(DRV_WINDOW, err, res);
    }
}
