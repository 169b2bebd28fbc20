/* Delete, move and revoke with the objects lock shared, and the grace
 * periods that keep them safe.
 *
 * A CPU holding the objects lock shared looks a slot up without any lock
 * (tcb_lookup_slot reads its type first) and goes on reading the
 * capability in it - its object, rights, badge - until it leaves the
 * kernel.  So a slot emptied while others hold the lock shared is
 * retired, not cleared: under its family's capability lock its type
 * becomes 0 (new lookups fail), it leaves the derivation tree, its
 * object's reference count goes down, and the rest of the capability stays
 * as it was.  The slot is stamped with the grace epoch read after that,
 * and the epoch advances (grace_stamp); until the stamp is written it
 * reads SLOT_RETIRING, which no fill takes.
 * A retired slot is not free: it may be filled again (slot_reclaim, when a
 * fill finds it) only once every CPU that could have looked it up has
 * left the kernel - its grace period.
 *
 * Calls that list what they read ("shared listed", calls.tbl) narrow that:
 * a fill does not wait for a CPU whose list (cpu.reads) lacks its slot
 * (docs/architecture.md, "Calls that list what they read").
 *
 * Quiescent states per CPU: a CPU taking the objects lock shared records
 * the grace epoch after announcing itself (objlock.c: kernel_enter, after
 * the exchange on cpu.reading).  A retired slot's stamp s is past its grace
 * period when every CPU either holds the lock no longer (reading == 0) or
 * took it at an epoch after s: such a CPU read the advanced epoch, which
 * was advanced (a locked operation) after the slot's type became 0, so
 * its lookups see the slot empty.  Taking the objects lock exclusive waits for every
 * reader to leave: it ends every grace period begun so far (grace_done).
 * An exclusive holder reclaims retired slots at once.
 *
 * Objects are never destroyed here: an operation that would drop a
 * reference count to zero, or needs a type's hook (a mapping, a DMA
 * window, a reply, a thread's binding, an untyped region's watermark while
 * a retype from it is under way), returns KEEL_E_RETRY before changing
 * anything and runs exclusive, where destruction waits for no reader.  Nor does
 * a fill wait for a grace period holding the lock: one that finds its slot
 * still retired returns KEEL_E_GRACE, and syscall_handle waits for the
 * grace period's end holding nothing, then runs the call again shared, so
 * no CPU ever waits for another while holding the objects lock shared.
 *
 * A capability of a paging object or a frame (OT_MAPPED: its hook only
 * undoes a mapping or a DMA window) that is mapped nowhere needs no hook:
 * it is deleted shared - alone, or as the one descendant a revoke removes -
 * holding its mapping lock, which a map holds while it checks the slot's
 * type and marks the capability mapped (vspace.c).  So either the map
 * comes first and the delete sees the mapping (and runs exclusive, where
 * the hook removes it), or the delete does and the map finds the slot
 * empty (KEEL_E_INVALID_CAP, as if looked up after the delete).
 *
 * The capability locks (sched.h): a delete takes its slot's family's and,
 * for an untyped capability, the family's it heads; a move, its source's
 * family's (a reply capability's: its source slot's; an untyped one's: the
 * family's it heads too) and its destination slot's; a revoke, every
 * family in the subtree (revoke_lock); a fill, its source's family's and
 * its slot's.
 * Each is read without a lock first and checked again under it.
 *
 * Lock order (sched.h): objects lock shared, that mapping lock, the
 * capability locks; nothing else is taken here. */
#include "grace.h"

/* The epoch retired slots are stamped with (grace_stamp; read by
 * kernel_enter), the last stamp known past (objlock.c: grace_blocker). */
u64 grace_epoch = 1;
u64 grace_done;

void grace_exclusive(void)
{
    __atomic_store_n(&grace_done, grace_epoch - 1, __ATOMIC_RELAXED);
    if (__atomic_load_n(&pending_regions, __ATOMIC_RELAXED))
        finish_all_pending();
}

/* A retired slot past its grace period becomes free (type 0 already). */
static void slot_clear(struct slot *s)
{
    slot_clear_fields(s);
    s->cap.flags = 0;
    s->retired = 0;
}

bool slot_reclaim(struct slot *s)
{
    if (s->cap.flags & CAP_PENDING) {
        this_cpu()->grace_slot = NULL; /* syscall_handle: grace_wait_finish */
        return false; /* a pending revoke still reads it (below) */
    }
    u64 stamp = __atomic_load_n(&s->retired, __ATOMIC_ACQUIRE);
    if (stamp == SLOT_RETIRING) {
        this_cpu()->grace_slot = NULL; /* another CPU's retire (below) is under way */
        return false;
    }
    struct slot_set one = { &s, 1, s, s };
    if (kernel_shared() && grace_blocker(stamp, NULL, &one)) {
        LOCKSTAT_COUNT(LS_GRACE_RETRY);
        this_cpu()->grace_slot = s; /* what kernel_regrace waits for */
        return false;
    }
    slot_clear(s);
    return true;
}

/* Which capabilities may leave a slot shared: a derivable one with no
 * hook for its deletion or move, not embedded in an object. */
static bool quiet(const struct object_type *ot, const struct slot *s)
{
    return (ot->flags & OT_DERIVABLE) && !ot->cap_deleted && !ot->cap_moved && !s->owner;
}

/* Or, its mapping lock held (ml_held), a paging or frame capability that
 * is mapped nowhere: its hook would do nothing, and no map of it can begin
 * until the lock is dropped, when it finds the slot's type 0 (vspace.c). */
static bool quiet_unmapped(const struct object_type *ot, const struct slot *s, bool ml_held)
{
    if (quiet(ot, s))
        return true;
    return ml_held && (ot->flags & (OT_MAPPED | OT_DERIVABLE)) == (OT_MAPPED | OT_DERIVABLE) &&
           !ot->cap_moved && !s->owner && !(s->cap.flags & (CAP_MAPPED | CAP_IO_FLAGS));
}

/* The mapping lock of s taken, when s (looked at without the capability
 * lock: checked again under it) holds a capability with a mapping hook;
 * else NULL.  Taken before the capability locks: sched.h's order. */
static spinlock_t *mapping_lock_if_mapped_type(const struct slot *s)
{
    u8 type = __atomic_load_n(&s->cap.type, __ATOMIC_ACQUIRE);

    if (!(object_type_of(type)->flags & OT_MAPPED))
        return NULL;
    spinlock_t *ml = cap_mapping_lock(&s->cap);
    obj_lock(ml, LOCK_MAPPING);
    return ml;
}

static void mapping_unlock(spinlock_t *ml)
{
    if (ml)
        obj_unlock(ml, LOCK_MAPPING);
}

/* Would emptying s run its parent's children_deleted hook? */
static bool empties_hooked_parent(const struct slot *s)
{
    return s->parent && s->parent->child == s && !s->next && !s->child &&
           object_type_of(s->parent->cap.type)->children_deleted;
}

/* An untyped capability with nothing made from it and no retype from it
 * under way: its memory holds no object, so deleting it destroys nothing.
 * Its parent region's watermark goes back (children_deleted) only if no
 * retype from the parent is under way either (untyped.c: reserve). */
static bool idle_untyped(const struct slot *s)
{
    return s->cap.type == KEEL_OBJ_UNTYPED && !s->child && !s->cap.b && !s->owner &&
           (!s->parent || !s->parent->cap.b);
}

/* s's capability, naming o (its object's header or NULL), leaves the tree. */
static void retire_ref(struct slot *s, struct kobj *o)
{
    retire_begin(s);
    slot_unlink(s);
    if (o)
        o->refs--;
    retire_end(s, grace_stamp());
}

/* The capability fast path's delete too (capfast.c): the slot's type and
 * its type table entry are read once; a leaf (a copy nothing was made
 * from: the common case) leaves the tree without slot_unlink's walk. */
long slot_delete_shared(struct slot *s)
{
    long err = KEEL_E_OK;
    spinlock_t *ml = NULL;

again:;
    u8 type = __atomic_load_n(&s->cap.type, __ATOMIC_ACQUIRE);
    if (!type) { /* deleting an empty (or retired) slot does nothing */
        mapping_unlock(ml);
        return KEEL_E_OK;
    }
    const struct object_type *ot = object_type_of(type);
    if ((ot->flags & OT_MAPPED) && !ml) {
        /* its mapping lock comes first (sched.h): take it, look again;
         * s is read without the lock meanwhile, so listed first */
        slot_listed(s);
        ml = cap_mapping_lock(&s->cap);
        obj_lock(ml, LOCK_MAPPING);
        goto again;
    }
    /* Its family's lock (its links, its object's count) and, for an
     * untyped capability, the one of the family it heads (no retype from
     * it meanwhile); read without a lock, so checked again under them. */
    u32 fa = 0, hb = 0;
    if (caps_locking()) {
        u64 fam = s->family, heads = type == KEEL_OBJ_UNTYPED ? s->cap.obj : fam;
        fa = caps_stripe(fam);
        hb = caps_stripe(heads);
        caps_lock_pair(fa, hb);
        if (s->cap.type != type || s->family != fam || children_family(s) != heads) {
            caps_unlock_pair(fa, hb);
            goto again;
        }
    }
    struct kobj *o = ot->flags & OT_HEADER ? (struct kobj *)(s->cap.obj + ot->header) : NULL;
    /* No object destroyed (another capability keeps it), no hook run. */
    bool keeps = quiet_unmapped(ot, s, ml) && (!o || o->refs >= 2) && !empties_hooked_parent(s);
    if (keeps && !s->child) {
        retire_begin(s);
        unlink_quiet_leaf(s);
        if (o)
            o->refs--;
        retire_end(s, grace_stamp());
    } else if (keeps || idle_untyped(s)) {
        retire_ref(s, o);
    } else {
        err = KEEL_E_RETRY;
    }
    caps_unlock_pair(fa, hb);
    mapping_unlock(ml);
    return err;
}

/* The same checks and order of errors as cnode.c's exclusive move, under
 * the locks slot_move_shared took for a capability of type locked (read
 * without a lock: src's may be another by now).  A reply capability has
 * no links, and its move hook only repoints its caller at dst.  An untyped
 * one moves with no retype from it under way and no revoke of it pending
 * (cap.b): its children's links then change under its family's lock only. */
static long move_locked(struct slot *dst, struct slot *src, u8 locked)
{
    if (!src->cap.type)
        return KEEL_E_INVALID_CAP;
    if (dst == src)
        return KEEL_E_OK;
    if (dst->cap.type)
        return KEEL_E_EXISTS;
    const struct object_type *ot = object_type_of(src->cap.type);
    bool movable = locked == KEEL_OBJ_REPLY     ? !src->owner
                   : locked == KEEL_OBJ_UNTYPED ? !src->owner && !src->cap.b
                                                : quiet(ot, src);
    if (!movable || dst->owner)
        return KEEL_E_RETRY;
    if (!slot_is_free(dst)) /* as a fill's (cnode.c: slot_derive) */
        return dst->retired ? KEEL_E_GRACE : KEEL_E_RETRY;
    /* dst gets a copy; src keeps its capability for those who looked it up
     * until its grace period ends, and the object its one reference. */
    struct slot moved = *src;
    u8 type = moved.cap.type;
    moved.cap.type = 0;
    moved.retired = 0;
    *dst = moved;
    if (dst->parent && dst->parent->child == src)
        dst->parent->child = dst;
    slot_relink(dst);
    if (locked == KEEL_OBJ_REPLY)
        ot->cap_moved(dst);
    __atomic_store_n(&dst->cap.type, type, __ATOMIC_RELEASE);
    retire_begin(src);
    src->parent = src->child = src->next = src->prev = NULL;
    retire_end(src, grace_stamp());
    return KEEL_E_OK;
}

/* An untyped capability: its family (its place in the tree), the family
 * it heads (its children's links to it, its retypes) and dst's slot. */
static long move_untyped_shared(struct slot *dst, struct slot *src)
{
    for (;;) {
        u64 fam = src->family, heads = children_family(src);
        struct caps_hold h;
        h.n = 0; /* not an initializer: that would zero the whole set */
        caps_hold_add(&h, fam);
        caps_hold_add(&h, heads);
        caps_hold_add(&h, (u64)dst);
        caps_hold_lock(&h);
        u8 type = src->cap.type;
        if (!type || (type == KEEL_OBJ_UNTYPED && src->family == fam &&
                      children_family(src) == heads)) {
            long err = move_locked(dst, src, KEEL_OBJ_UNTYPED);
            caps_hold_unlock(&h);
            return err;
        }
        caps_hold_unlock(&h);
        if (type != KEEL_OBJ_UNTYPED)
            return KEEL_E_RETRY; /* another capability since the lookup */
    }
}

/* src's family (its place in the tree goes to dst) and dst's slot; for a
 * reply capability, src's slot and dst's. */
long slot_move_shared(struct slot *dst, struct slot *src)
{
    for (;;) {
        u8 locked = __atomic_load_n(&src->cap.type, __ATOMIC_ACQUIRE);
        if (locked == KEEL_OBJ_UNTYPED)
            return move_untyped_shared(dst, src);
        bool reply = locked == KEEL_OBJ_REPLY;
        u64 key = reply ? (u64)src : src->family;
        u32 fa = caps_stripe(key), db = caps_stripe((u64)dst);
        caps_lock_pair(fa, db);
        if (!src->cap.type || (reply ? src->cap.type == KEEL_OBJ_REPLY : src->family == key)) {
            long err = move_locked(dst, src, reply ? KEEL_OBJ_REPLY : 0);
            caps_unlock_pair(fa, db);
            return err;
        }
        caps_unlock_pair(fa, db);
    }
}

/* Every descendant names root's object (or no object with a header, so
 * no count reaches zero while root holds its reference) and is quiet, or
 * is the one descendant, unmapped, whose mapping lock is held (locked). */
static bool revoke_quiet(struct slot *root, const struct slot *locked)
{
    struct kobj *keep = cap_kobj(&root->cap);

    if (object_type_of(root->cap.type)->children_deleted)
        return false;
    for (struct slot *d = root->child; d; d = subtree_next(d, root)) {
        struct kobj *o = cap_kobj(&d->cap);
        bool only = d == locked && d == root->child && !d->next && !d->child;
        if (!quiet_unmapped(object_type_of(d->cap.type), d, only) || (o && o != keep))
            return false;
    }
    return true;
}

/* Under the locks of s's family and, for a region, of every family in its
 * subtree (h; NULL: no locks needed). */
static long revoke_locked(struct slot *s, struct slot *only, spinlock_t *ml,
                          const struct caps_hold *h, u64 *miss, u32 *missing)
{
    if (!s->cap.type)
        return KEEL_E_INVALID_CAP;
    if (!s->child)
        return KEEL_E_OK; /* nothing derived: nothing to do, whatever the type */
    if (!revoke_quiet(s, ml ? only : NULL))
        return region_retire(s, h, miss, missing); /* its objects, else KEEL_E_RETRY */
    while (s->child) { /* leaves first, as slot_revoke */
        struct slot *leaf = s->child;
        while (leaf->child)
            leaf = leaf->child;
        retire_ref(leaf, cap_kobj(&leaf->cap));
    }
    return KEEL_E_OK;
}

long slot_revoke_shared(struct slot *s)
{
    long err = KEEL_E_RETRY;
    /* A copy of a frame or paging object, the common case of a revoke
     * with a hook: its mapping lock first (checked under the capability
     * locks to be the only descendant still). */
    struct slot *only = __atomic_load_n(&s->child, __ATOMIC_ACQUIRE);
    if (only)
        slot_listed(only); /* reached by a link, read without the lock */
    spinlock_t *ml = only ? mapping_lock_if_mapped_type(only) : NULL;

    if (!caps_locking()) {
        err = revoke_locked(s, only, ml, NULL, NULL, NULL);
        mapping_unlock(ml);
        return err;
    }
    /* The family s heads (read without a lock, so checked again under it),
     * then the ones regions inside it head, added as the walk finds them. */
    struct caps_hold h;
    h.n = 0; /* not an initializer: that would zero the whole set */
    u64 miss[REGION_MISS_MAX];
    u32 missing = 0;
    /* A region's revoke: its regions at the top, guessed without a lock
     * (the walk under the locks checks), spare it a try in most cases. */
    if (__atomic_load_n(&s->cap.type, __ATOMIC_RELAXED) == KEEL_OBJ_UNTYPED) {
        struct slot *d = __atomic_load_n(&s->child, __ATOMIC_RELAXED);
        for (u32 n = 0; d && n < PENDING_MAX; n++) {
            if (__atomic_load_n(&d->cap.type, __ATOMIC_RELAXED) == KEEL_OBJ_UNTYPED &&
                missing < REGION_MISS_MAX)
                miss[missing++] = __atomic_load_n(&d->cap.obj, __ATOMIC_RELAXED);
            d = __atomic_load_n(&d->next, __ATOMIC_RELAXED);
        }
    }
    for (u32 tries = 0; tries < 8; tries++) {
        caps_hold_add(&h, children_family(s));
        for (u32 i = 0; i < missing; i++)
            caps_hold_add(&h, miss[i]);
        missing = 0;
        caps_hold_lock(&h);
        if (!s->cap.type || caps_hold_has(&h, children_family(s))) {
            err = revoke_locked(s, only, ml, &h, miss, &missing);
            if (err != KEEL_E_LOCKS) {
                caps_hold_unlock(&h);
                break;
            }
        }
        caps_hold_unlock(&h);
        err = KEEL_E_RETRY; /* s changes under every try: exclusive */
    }
    mapping_unlock(ml);
    return err;
}

long window_reclaim(struct tcb *t, u64 window)
{
    long err = KEEL_E_OK;
    struct slot *w = cnode_slot(&t->cspace.cap, window);
    u32 i;

    if (!w || !(w[0].retired | w[1].retired | w[2].retired | w[3].retired))
        return KEEL_E_OK; /* a look without the lock first: the common case */
    for (i = 0; i <= MSG_CAPS && !err; i++) {
        struct slot *s = cnode_slot(&t->cspace.cap, window + i);
        u32 st = caps_stripe((u64)s); /* the slot's own lock: a fill's */
        caps_lock_pair(st, st);
        if (s->retired && !s->cap.type && !slot_reclaim(s))
            err = KEEL_E_GRACE; /* as a fill's: wait holding nothing, again shared */
        caps_unlock_pair(st, st);
    }
    return err;
}
