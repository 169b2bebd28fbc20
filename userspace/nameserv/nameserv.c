/* The name service: a process that maps names to endpoint capabilities
 * (protocol in userspace/lib/names.h).
 *
 *   slot 5  its endpoint: the device manager's copy is badged NS_BADGE_ADMIN
 *
 * It holds one capability per name, in slots NAME_SLOT + i, and hands out
 * badged copies.  A capability revoked under it (its driver died) leaves
 * the slot empty: the name is then unknown until registered again. */
#include "../lib/names.h"

#define SERVICE DRV_SLOT_SERVICE
#define NAMES 16
#define NAME_SLOT 16
#define WINDOW 40 /* 40: reply, 41..43: capabilities received */
#define TEMP 44

static keel_word_t names[NAMES][2];
static keel_word_t next_badge = 2;

static int find(const keel_word_t *name)
{
    for (int i = 0; i < NAMES; i++) {
        if (names[i][0] == name[0] && names[i][1] == name[1] && (name[0] | name[1]))
            return i;
    }
    return -1;
}

static int alive(int i)
{
    keel_word_t type = 0;

    return keel_cnode_identify(KEEL_SLOT_CNODE, NAME_SLOT + (keel_word_t)i, &type, 0, 0) ==
               KEEL_E_OK &&
           type == KEEL_OBJ_ENDPOINT;
}

static long do_register(const struct keel_msg *m)
{
    int i = find(m->w);

    if (m->badge != NS_BADGE_ADMIN)
        return KEEL_E_NO_RIGHTS;
    if (!(m->w[0] | m->w[1]) || KEEL_INFO_CAPS(m->info) != 1)
        return KEEL_E_INVALID_ARG;
    for (int j = 0; i < 0 && j < NAMES; j++) {
        if (!(names[j][0] | names[j][1]))
            i = j;
    }
    if (i < 0)
        return KEEL_E_FULL;
    keel_cnode_delete(KEEL_SLOT_CNODE, NAME_SLOT + (keel_word_t)i);
    long err = keel_cnode_move(KEEL_SLOT_CNODE, NAME_SLOT + (keel_word_t)i, KEEL_SLOT_CNODE,
                               WINDOW + 1);
    if (err)
        return err;
    names[i][0] = m->w[0];
    names[i][1] = m->w[1];
    return KEEL_E_OK;
}

static long do_withdraw(const struct keel_msg *m)
{
    int i = find(m->w);

    if (m->badge != NS_BADGE_ADMIN)
        return KEEL_E_NO_RIGHTS;
    if (i < 0)
        return KEEL_E_NOT_MAPPED;
    keel_cnode_delete(KEEL_SLOT_CNODE, NAME_SLOT + (keel_word_t)i);
    names[i][0] = names[i][1] = 0;
    return KEEL_E_OK;
}

static long do_lookup(const struct keel_msg *m)
{
    int i = find(m->w);

    if (KEEL_INFO_CAPS(m->info) != 1)
        return KEEL_E_INVALID_ARG;
    if (i < 0)
        return KEEL_E_NOT_MAPPED;
    if (!alive(i))
        return KEEL_E_WOULD_BLOCK; /* its driver died: the manager is starting another */
    /* clients may call and pass buffers, never receive the driver's requests */
    long err = keel_cnode_mint(KEEL_SLOT_CNODE, TEMP, KEEL_SLOT_CNODE,
                               NAME_SLOT + (keel_word_t)i, KEEL_RIGHT_WRITE | KEEL_RIGHT_GRANT,
                               next_badge++);
    if (err)
        return err;
    err = keel_send(WINDOW + 1, NS_GRANT, TEMP, 0, 0, 0, 0, 0);
    keel_cnode_delete(KEEL_SLOT_CNODE, TEMP);
    return err;
}

/* The index-th live name (0 words: past the end). */
static long do_list(keel_word_t index, keel_word_t *res)
{
    keel_word_t k = 0;

    for (int i = 0; i < NAMES; i++) {
        if ((names[i][0] | names[i][1]) && alive(i) && k++ == index) {
            res[0] = names[i][0];
            res[1] = names[i][1];
            break;
        }
    }
    return KEEL_E_OK;
}

long keel_main(keel_word_t arg);

long keel_main(keel_word_t arg)
{
    for (;;) {
        struct keel_msg m;
        keel_word_t res[KEEL_MSG_WORDS] = { 0 };
        long err;

        if (keel_recv(SERVICE, 0, WINDOW, &m))
            continue;
        switch (m.label & KEEL_LABEL_MASK) {
        case NS_REGISTER & KEEL_LABEL_MASK:
            err = do_register(&m);
            break;
        case NS_WITHDRAW & KEEL_LABEL_MASK:
            err = do_withdraw(&m);
            break;
        case NS_LOOKUP & KEEL_LABEL_MASK:
            err = do_lookup(&m);
            break;
        case NS_LIST & KEEL_LABEL_MASK:
            err = do_list(m.w[0], res);
            break;
        default:
            err = KEEL_E_UNKNOWN_CALL;
        }
        for (keel_word_t s = WINDOW + 1; s < WINDOW + 4; s++)
            keel_cnode_delete(KEEL_SLOT_CNODE, s);
        if (m.info & KEEL_INFO_REPLY)
            keel_reply(WINDOW, err, res);
    }
}
