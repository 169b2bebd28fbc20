/* Untyped memory and retype: the only way kernel objects come to exist
 * after boot.  An untyped capability keeps a watermark (cap.a, bytes used);
 * objects are carved above it, and it drops back to zero when the last
 * capability derived from the region is deleted, which is how deleting or
 * revoking returns memory.
 *
 * Retype may run with the objects lock shared (sched.h).  Under the
 * capability locks it checks the target slots, reserves them (CAP_RESERVED)
 * and moves the watermark past the new objects; it zeroes and initialises
 * them without the lock; under it again it fills the slots.  cap.b of an
 * untyped capability counts retypes between the two steps: the watermark
 * goes back to zero only when the region has no child and none is
 * running. */
#include <keel/invoke.h>
#include <keel/sched.h>
#include <keel/string.h>

#define UNTYPED_MIN_BITS 4
#define UNTYPED_MAX_BITS 47
#define RETYPE_MAX_COUNT 256

u32 untyped_bits(u32 user_bits)
{
    return user_bits >= UNTYPED_MIN_BITS && user_bits <= UNTYPED_MAX_BITS ? user_bits : 0;
}

bool untyped_init(struct cap *c, u32 user_bits)
{
    c->size_bits = (u8)user_bits;
    return true;
}

/* Size of one object, log2 bytes; 0 when the request is invalid. */
u32 object_bits(u32 type, u32 user_bits)
{
    const struct object_type *ot = object_type_of(type < KEEL_NTYPES ? type : 0);

    if (!(ot->flags & OT_RETYPE))
        return 0;
    return ot->bits ? ot->bits(user_bits) : ot->size_bits;
}

/* The last capability made from the region went away: all of it is free. */
void untyped_children_deleted(struct slot *s)
{
    s->cap.a = 0;
}

/* Makes the object at p (zeroed, 2^bits bytes) and returns its capability. */
static bool init_object(u32 type, u32 user_bits, uptr p, struct cap *c)
{
    const struct object_type *ot = object_type_of(type);

    memset(c, 0, sizeof(*c));
    c->type = (u8)type;
    c->rights = KEEL_RIGHT_ALL;
    c->obj = p;
    if (ot->init && !ot->init(c, user_bits))
        return false;
    if (ot->flags & OT_HEADER)
        ((struct kobj *)(p + ot->header))->type = type;
    return true;
}

/* Step one, under the capability locks: the region's start, or an error. */
static long reserve(struct slot *ut, u32 bits, struct slot **dst, u32 count, u64 *start)
{
    u64 size = 1ul << ut->cap.size_bits;

    if (!ut->cap.type)
        return KEEL_E_INVALID_CAP; /* deleted since the lookup (grace.c) */
    for (u32 i = 0; i < count; i++) {
        if (!slot_is_free(dst[i])) /* retired: exclusive, it is free (grace.c) */
            return dst[i]->retired ? KEEL_E_GRACE : KEEL_E_EXISTS;
    }
    /* A revoke of the region whose objects are not destroyed yet (grace.c)
     * is finished first: after a revoke the whole region is free. */
    long pending = ut->cap.b ? grace_region_pending(ut) : KEEL_E_OK;
    if (pending)
        return pending;
    if (!ut->child && !ut->cap.b)
        ut->cap.a = 0;
    *start = ALIGN_UP(ut->cap.a, 1ul << bits);
    if (bits > ut->cap.size_bits || *start > size || ((u64)count << bits) > size - *start)
        return KEEL_E_NO_MEMORY;
    for (u32 i = 0; i < count; i++)
        dst[i]->cap.flags |= CAP_RESERVED;
    ut->cap.a = *start + ((u64)count << bits);
    ut->cap.b++;
    return KEEL_E_OK;
}

static inline void retype_lock(const struct caps_hold *h, u32 ua, u32 da)
{
    if (h->n)
        caps_hold_lock(h);
    else
        caps_lock_pair(ua, da);
}

static inline void retype_unlock(const struct caps_hold *h, u32 ua, u32 da)
{
    if (h->n)
        caps_hold_unlock(h);
    else
        caps_unlock_pair(ua, da);
}

long untyped_make_objects(struct slot *ut, u32 type, u32 user_bits, struct slot **dst, u32 count)
{
    u32 bits = object_bits(type, user_bits);
    uptr base = ut->cap.obj;
    u64 start = 0;
    struct cap c; /* the same for every object but for c.obj */

    if (!bits || count == 0 || count > RETYPE_MAX_COUNT)
        return KEEL_E_INVALID_ARG;
    bool device = ut->cap.flags & CAP_DEVICE;
    if (device && !(object_type_of(type)->flags & OT_DEVICE))
        return KEEL_E_INVALID_ARG; /* device memory holds no kernel object */
    /* The family ut heads (its watermark, its children's links) and the
     * slots to fill (sched.h: the capability locks): a pair for one slot. */
    u32 ua = caps_stripe(base), da = caps_stripe((u64)dst[0]);
    struct caps_hold h;
    h.n = 0; /* not an initializer: that would zero the whole set */
    if (count > 1) {
        caps_hold_add(&h, base);
        for (u32 i = 0; i < count; i++)
            caps_hold_add(&h, (u64)dst[i]);
    }
    retype_lock(&h, ua, da);
    long err = ut->cap.type && ut->cap.obj != base ? KEEL_E_RETRY /* another since */
                                                     : reserve(ut, bits, dst, count, &start);
    retype_unlock(&h, ua, da);
    if (err)
        return err;
    u32 made = 0;
    for (; made < count; made++) {
        uptr p = base + start + ((u64)made << bits);
        /* An untyped region is not zeroed: nothing reads it as such, and
         * every object made from it is zeroed when it is made. */
        if (!device && type != KEEL_OBJ_UNTYPED)
            arch_zero_object((void *)p, 1ul << bits);
        if (!init_object(type, user_bits, p, &c))
            break; /* only the vspace registry can refuse */
    }
    c.flags |= device ? CAP_DEVICE : 0;
    retype_lock(&h, ua, da);
    for (u32 i = 0; i < count; i++) {
        dst[i]->cap.flags &= (u8)~CAP_RESERVED;
        c.obj = base + start + ((u64)i << bits);
        if (i < made)
            slot_insert_child(ut, dst[i], &c);
    }
    ut->cap.b--;
    /* Objects made so far stay; the rest of the region is free again at
     * the next reset of the watermark. */
    retype_unlock(&h, ua, da);
    return made ? KEEL_E_OK : KEEL_E_NO_MEMORY;
}

long untyped_decode(struct invocation *inv)
{
    u64 type = inv->arg[0], user_bits = inv->arg[1], first = inv->arg[3], count = inv->arg[4];
    struct cap *cn = &inv->cap_arg[2]->cap;
    struct slot *dst[RETYPE_MAX_COUNT];

    if (type == 0 || type >= KEEL_NTYPES || !(object_type_of((u32)type)->flags & OT_RETYPE) ||
        user_bits > 64)
        return KEEL_E_INVALID_ARG;
    if (count == 0 || count > RETYPE_MAX_COUNT)
        return KEEL_E_INVALID_ARG;
    for (u64 i = 0; i < count; i++) {
        dst[i] = cnode_slot(cn, first + i);
        if (!dst[i])
            return KEEL_E_INVALID_ARG;
        if (dst[i]->cap.type)
            return KEEL_E_EXISTS;
    }
    if (!object_bits((u32)type, (u32)user_bits))
        return KEEL_E_INVALID_ARG;
    if ((object_type_of((u32)type)->flags & OT_EXCLUSIVE) && kernel_shared())
        return KEEL_E_RETRY; /* e.g. the vspace registry is changed exclusive */
    return untyped_make_objects(inv->slot, (u32)type, (u32)user_bits, dst, (u32)count);
}
