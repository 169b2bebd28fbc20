/* Capability tables: copy, mint, move, delete, revoke, identify (grace.c:
 * move, delete and revoke with the objects lock shared). */
#include <keel/invoke.h>
#include <keel/sched.h>

#define CNODE_MAX_SLOT_BITS 16

/* A CNode of 2^n slots (n = user_bits) is 2^(n+7) bytes. */
u32 cnode_bits(u32 user_bits)
{
    return user_bits >= 1 && user_bits <= CNODE_MAX_SLOT_BITS ? user_bits + SLOT_BITS : 0;
}

bool cnode_init(struct cap *c, u32 user_bits)
{
    ((struct cnode *)c->obj)->size_bits = user_bits;
    c->size_bits = (u8)user_bits;
    return true;
}

void cnode_destroy(struct kobj *o)
{
    struct cnode *cn = (struct cnode *)o;
    struct slot *slots = (struct slot *)cn;

    for (u64 i = 1; i < (1ul << cn->size_bits); i++)
        slot_delete(&slots[i]);
}

/* Copy and mint (here, and the capability fast path, capfast.c, so both
 * give the same results): dst and src come looked up (NULL: outside
 * their tables).  The source's type table entry is read once. */
long slot_derive(struct slot *dst, struct slot *src, u64 rights, bool mint, u64 badge)
{
    if (!dst)
        return KEEL_E_INVALID_ARG;
    if (!src || !src->cap.type)
        return KEEL_E_INVALID_CAP;
    if (!slot_is_free(dst)) /* retired: exclusive, it is free (grace.c) */
        return dst->retired ? KEEL_E_GRACE : KEEL_E_EXISTS;
    if (!cap_is_derivable(&src->cap) || rights > KEEL_RIGHT_ALL)
        return KEEL_E_INVALID_ARG;
    const struct object_type *ot = object_type_of(src->cap.type);
    if (mint && src->cap.badge)
        return KEEL_E_INVALID_ARG; /* badges are set once */
    if (mint && !(ot->flags & OT_BADGED))
        return KEEL_E_INVALID_ARG;

    struct cap c = src->cap;
    c.rights &= (u8)rights;
    if (mint)
        c.badge = badge;
    if (c.flags & CAP_MAPPED) { /* a mapping belongs to one capability */
        c.flags &= (u8)~CAP_MAPPED;
        c.a = c.b = 0;
    }
    slot_insert_child(src, dst, &c);
    return KEEL_E_OK;
}

/* Copy and mint fill an empty slot: they may run with the objects lock
 * shared, under the capability locks (slot_derive_shared). */
static long derive(struct invocation *inv, bool mint)
{
    return slot_derive_shared(cnode_slot(&inv->slot->cap, inv->arg[0]),
                              cnode_slot(&inv->cap_arg[1]->cap, inv->arg[2]), inv->arg[3], mint,
                              inv->arg[4]);
}

static long move(struct invocation *inv)
{
    struct slot *dst = cnode_slot(&inv->slot->cap, inv->arg[0]);
    struct slot *src = cnode_slot(&inv->cap_arg[1]->cap, inv->arg[2]);

    if (!dst)
        return KEEL_E_INVALID_ARG;
    if (!src || !src->cap.type)
        return KEEL_E_INVALID_CAP;
    if (kernel_shared())
        return slot_move_shared(dst, src); /* grace.c; it checks the rest */
    if (dst == src)
        return KEEL_E_OK;
    if (dst->cap.type)
        return KEEL_E_EXISTS;
    slot_move(dst, src);
    return KEEL_E_OK;
}

/* The calls that change slots; apart from identify so that it stays a
 * leaf (no frame, a tail call here for the rest). */
static __attribute__((noinline)) long cnode_change(struct invocation *inv)
{
    struct slot *s;

    switch (inv->label) {
    case KEEL_CALL_CNODE_COPY:
        return derive(inv, false);
    case KEEL_CALL_CNODE_MINT:
        return derive(inv, true);
    case KEEL_CALL_CNODE_MOVE:
        return move(inv);
    case KEEL_CALL_CNODE_DELETE:
    case KEEL_CALL_CNODE_REVOKE:
        s = cnode_slot(&inv->slot->cap, inv->arg[0]);
        if (!s)
            return KEEL_E_INVALID_ARG;
        /* Shared, grace.c runs the common cases (KEEL_E_RETRY: the rest). */
        if (inv->label == KEEL_CALL_CNODE_DELETE) {
            if (kernel_shared())
                return slot_delete_shared(s);
            slot_delete(s);
        } else {
            if (kernel_shared())
                return slot_revoke_shared(s);
            if (!s->cap.type)
                return KEEL_E_INVALID_CAP;
            slot_revoke(s);
        }
        return KEEL_E_OK;
    }
    return KEEL_E_UNKNOWN_CALL;
}

long cnode_decode(struct invocation *inv)
{
    if (inv->label != KEEL_CALL_CNODE_IDENTIFY)
        return cnode_change(inv);
    /* Shared, the slot may be being filled: the type comes first. */
    struct slot *s = cnode_slot(&inv->slot->cap, inv->arg[0]);
    u64 *res = inv->res;
    if (!s)
        return KEEL_E_INVALID_ARG;
    u8 type = __atomic_load_n(&s->cap.type, __ATOMIC_ACQUIRE);
    res[0] = type;
    if (type) {
        res[1] = s->cap.rights;
        res[2] = s->cap.badge;
    }
    return KEEL_E_OK;
}
