/* Delete, move and revoke with the objects lock shared, and the grace
 * periods that keep them safe.
 *
 * A CPU holding the objects lock shared looks a slot up without any lock
 * (tcb_lookup_slot reads its type first) and goes on reading the
 * capability in it - its object, rights, badge - until it leaves the
 * kernel.  So a slot emptied while others hold the lock shared is
 * retired, not cleared: under the capability lock its type becomes 0 (new
 * lookups fail), it leaves the derivation tree, its object's reference
 * count goes down, and the rest of the capability stays as it was.  The
 * slot is stamped with the current grace epoch, and the epoch advances.
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
 * was published (release) after the slot's type became 0, so its lookups
 * see the slot empty.  Taking the objects lock exclusive waits for every
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
 * Lock order (sched.h): objects lock shared, that mapping lock, the
 * capability lock; nothing else is taken here. */
#include <keel/objtype.h>
#include <keel/sched.h>

/* The epoch retired slots are stamped with (under the capability lock;
 * read by kernel_enter), the last stamp known past (objlock.c: grace_blocker). */
u64 grace_epoch = 1;
u64 grace_done;

u32 pending_regions; /* CPUs with a pending region revoke (below) */
static void finish_all_pending(void);

void grace_exclusive(void)
{
    __atomic_store_n(&grace_done, grace_epoch - 1, __ATOMIC_RELAXED);
    if (__atomic_load_n(&pending_regions, __ATOMIC_RELAXED))
        finish_all_pending();
}

/* A retired slot past its grace period becomes free (type 0 already; no
 * memset or structure assignment: a call or a rep stos here). */
static void slot_clear(struct slot *s)
{
    s->cap.rights = s->cap.size_bits = s->cap.flags = 0;
    s->cap.io = 0;
    s->cap.obj = 0;
    s->cap.badge = s->cap.a = s->cap.b = 0;
    s->retired = 0;
}

bool slot_reclaim(struct slot *s)
{
    if (s->cap.flags & CAP_PENDING) {
        this_cpu()->grace_slot = NULL; /* syscall_handle: grace_wait_finish */
        return false; /* a pending revoke still reads it (below) */
    }
    struct slot_set one = { &s, 1, s, s };
    if (kernel_shared() && grace_blocker(s->retired, NULL, &one)) {
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
 * else NULL.  Taken before the capability lock: sched.h's order. */
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
static void retire_ref(struct slot *s, struct kobj *o, u64 stamp)
{
    __atomic_store_n(&s->cap.type, 0, __ATOMIC_RELEASE);
    slot_unlink(s);
    if (o)
        o->refs--;
    s->retired = stamp;
}

static void retire(struct slot *s, u64 stamp)
{
    retire_ref(s, cap_kobj(&s->cap), stamp);
}

/* Published after the slots' types became 0 (the stamp's readers). */
static void grace_advance(u64 stamp)
{
    __atomic_store_n(&grace_epoch, stamp + 1, __ATOMIC_RELEASE);
}

/* A leaf leaves its siblings' list; its parent, if left without children,
 * has no hook to run (the caller checked: empties_hooked_parent). */
static void unlink_quiet_leaf(struct slot *s)
{
    if (s->prev)
        s->prev->next = s->next;
    else if (s->parent)
        s->parent->child = s->next;
    if (s->next)
        s->next->prev = s->prev;
    s->parent = s->next = s->prev = NULL;
}

/* The capability fast path's delete too (capfast.c): the slot's type and
 * its type table entry are read once; a leaf (a copy nothing was made
 * from: the common case) leaves the tree without slot_unlink's walk. */
long slot_delete_shared(struct slot *s)
{
    long err = KEEL_E_OK;
    spinlock_t *ml = NULL;

again:
    obj_lock(&caps_spinlock, LOCK_CAPS); /* caps_lock, inline */
    u8 type = s->cap.type;
    if (type) { /* deleting an empty (or retired) slot does nothing */
        const struct object_type *ot = object_type_of(type);
        if ((ot->flags & OT_MAPPED) && !ml) {
            /* its mapping lock comes first (sched.h): take it, look again;
             * s is read without the lock meanwhile, so listed first */
            slot_listed(s);
            obj_unlock(&caps_spinlock, LOCK_CAPS);
            ml = cap_mapping_lock(&s->cap);
            obj_lock(ml, LOCK_MAPPING);
            goto again;
        }
        struct kobj *o = ot->flags & OT_HEADER ? (struct kobj *)(s->cap.obj + ot->header) : NULL;
        /* No object destroyed (another capability keeps it), no hook run. */
        bool keeps = quiet_unmapped(ot, s, ml) && (!o || o->refs >= 2) &&
                     !empties_hooked_parent(s);
        if (keeps || idle_untyped(s)) {
            u64 stamp = grace_epoch;
            if (keeps && !s->child) {
                __atomic_store_n(&s->cap.type, 0, __ATOMIC_RELEASE);
                unlink_quiet_leaf(s);
                if (o)
                    o->refs--;
                s->retired = stamp;
            } else {
                retire_ref(s, o, stamp);
            }
            grace_advance(stamp);
        } else {
            err = KEEL_E_RETRY;
        }
    }
    obj_unlock(&caps_spinlock, LOCK_CAPS);
    mapping_unlock(ml);
    return err;
}

/* The same checks and order of errors as cnode.c's exclusive move. */
static long move_locked(struct slot *dst, struct slot *src)
{
    if (!src->cap.type)
        return KEEL_E_INVALID_CAP;
    if (dst == src)
        return KEEL_E_OK;
    if (dst->cap.type)
        return KEEL_E_EXISTS;
    if (!quiet(object_type_of(src->cap.type), src) || dst->owner || !slot_is_free(dst))
        return KEEL_E_RETRY;
    /* dst gets a copy; src keeps its capability for those who looked it up
     * until its grace period ends, and the object its one reference. */
    struct slot moved = *src;
    u8 type = moved.cap.type;
    u64 stamp = grace_epoch;
    moved.cap.type = 0;
    moved.retired = 0;
    *dst = moved;
    if (dst->parent && dst->parent->child == src)
        dst->parent->child = dst;
    slot_relink(dst);
    __atomic_store_n(&dst->cap.type, type, __ATOMIC_RELEASE);
    __atomic_store_n(&src->cap.type, 0, __ATOMIC_RELEASE);
    src->parent = src->child = src->next = src->prev = NULL;
    src->retired = stamp;
    grace_advance(stamp);
    return KEEL_E_OK;
}

long slot_move_shared(struct slot *dst, struct slot *src)
{
    caps_lock();
    long err = move_locked(dst, src);
    caps_unlock();
    return err;
}

/* The next slot of root's subtree after d, depth first. */
static struct slot *subtree_next(struct slot *d, const struct slot *root)
{
    if (d->child)
        return d->child;
    while (d != root) {
        if (d->next)
            return d->next;
        d = d->parent;
    }
    return NULL;
}

/* -- a region's revoke, shared ---------------------------------------------------
 *
 * Revoking an untyped region destroys what was made from it.  Shared, that
 * runs in two steps when the types' table allows it for every descendant
 * (region_member: e.g. endpoints, notifications, frames and page tables
 * mapped nowhere, untyped regions with no retype from them under way),
 * none is embedded in an object, and no retype from the region itself is
 * under way (else KEEL_E_RETRY: exclusive, as before):
 *
 *  1. region_retire, under the capability lock: every descendant is retired
 *     (leaves first, as slot_revoke; no children_deleted hook runs) and
 *     noted in this CPU's pending list; the region's cap.b goes up, so its
 *     watermark stays (reserve resets it only when cap.b is 0) and nothing
 *     is made over the objects meanwhile.  KEEL_E_PENDING: the call is
 *     done, and syscall_handle returns to the caller at once.
 *  2. Once the grace period is over no CPU reads a retired capability any
 *     more, and as every capability of the objects is gone, nothing can
 *     reach them but what already waits on them.  Only a CPU that may read
 *     a retired slot holds the period open: not one whose call lists what
 *     it reads, none of them in the list (it read none of them and reached
 *     none of the objects; cpu_may_read on the pending list).  This CPU
 *     finds the period over on a way out of the kernel (sched.c calls
 *     grace_finish_due; a timer tick brings it there), or waits for it
 *     holding nothing (grace_wait_finish) before it idles and when a call
 *     needs the region's memory or its pending list (KEEL_E_FINISH: a
 *     retype from the region, another region's revoke).  grace_finish then
 *     has each object's destroy_idle hook destroy it under its own lock
 *     when nothing waits on it (an endpoint with nothing queued and no
 *     thread waiting, a notification no thread waits on or is bound to and
 *     no IRQ line or console listens through).  Anything else (a waiting
 *     thread, a map or DMA window that came first) upgrades to exclusive,
 *     where the types' destroy and cap_deleted hooks run.  Then cap.b goes
 *     down, the memory is free, and so are the slots (slot_clear: past
 *     their grace period, later fills look at no CPU); until then they stay
 *     as they are (CAP_PENDING: slot_reclaim refuses them), for step 2
 *     reads them.  So a revoke waits for no other CPU, and a thread that
 *     waited on one of the objects is woken (by the exclusive destroy) at
 *     step 2, at the latest a timer tick after the grace period ended.
 *
 * An exclusive holder finishes every CPU's pending step 2 first
 * (grace_exclusive): it is past every grace period, and no exclusive
 * operation (deleting the region, say) may find objects half destroyed.
 */
#define PENDING_MAX 64

struct pending {
    struct slot *region;
    u64 stamp; /* the slots' grace epoch */
    u32 blocker; /* index + 1 of a CPU in its grace period at the last look */
    u32 n;
    u8 types[PENDING_MAX];
    struct slot *slots[PENDING_MAX];
    const struct slot *lo, *hi; /* the slots' bounds (struct slot_set) */
};
static struct pending pendings[MAX_CPUS];

static bool mapped_somewhere(const struct slot *s)
{
    return s->cap.flags & (CAP_MAPPED | CAP_IO_FLAGS);
}

/* From the types' table: no hook for a move, none for a deletion but the
 * mapping one of a capability mapped nowhere, an object (if it has a
 * header) that can be destroyed when idle, and for a region (the type
 * with children_deleted) no retype from it under way (cap.b). */
static bool region_member(const struct slot *d)
{
    const struct object_type *ot = object_type_of(d->cap.type);

    if (d->owner || ot->cap_moved || (ot->children_deleted && d->cap.b))
        return false;
    if (ot->cap_deleted && (!(ot->flags & OT_MAPPED) || mapped_somewhere(d)))
        return false;
    return !(ot->flags & OT_HEADER) || ot->destroy_idle;
}

/* Step 1 (under the capability lock, shared). */
static long region_retire(struct slot *r)
{
    struct pending *p = &pendings[this_cpu()->index];
    u32 n = 0;

    if (p->region)
        return KEEL_E_FINISH; /* this CPU's earlier one first */
    if (r->cap.type != KEEL_OBJ_UNTYPED || r->cap.b || r->owner)
        return KEEL_E_RETRY;
    for (struct slot *d = r->child; d; d = subtree_next(d, r)) {
        if (++n > PENDING_MAX || !region_member(d))
            return KEEL_E_RETRY;
    }
    u64 stamp = grace_epoch;
    p->n = 0;
    p->lo = p->hi = r->child;
    while (r->child) {
        struct slot *leaf = r->child;
        while (leaf->child)
            leaf = leaf->child;
        struct kobj *o = cap_kobj(&leaf->cap);
        p->types[p->n] = leaf->cap.type;
        p->slots[p->n++] = leaf;
        p->lo = leaf < p->lo ? leaf : p->lo;
        p->hi = leaf > p->hi ? leaf : p->hi;
        __atomic_store_n(&leaf->cap.type, 0, __ATOMIC_RELEASE);
        unlink_quiet_leaf(leaf);
        if (o)
            o->refs--;
        leaf->retired = stamp;
        leaf->cap.flags |= CAP_PENDING;
    }
    grace_advance(stamp);
    r->cap.b++;
    p->stamp = stamp;
    p->blocker = 0;
    p->region = r;
    this_cpu()->region_pending = 1;
    __atomic_fetch_add(&pending_regions, 1, __ATOMIC_RELAXED);
    return KEEL_E_PENDING;
}

/* The object a retired slot of type t named (its header), or NULL. */
static struct kobj *pending_obj(const struct pending *p, u32 i)
{
    const struct object_type *ot = object_type_of(p->types[i]);

    return ot->flags & OT_HEADER ? (struct kobj *)(p->slots[i]->cap.obj + ot->header) : NULL;
}

/* The objects are gone: the region's memory is free again, unless something
 * was made from it meanwhile (under the capability lock, or exclusive). */
static void region_release(struct pending *p)
{
    struct slot *r = p->region;

    for (u32 i = 0; i < p->n; i++)
        slot_clear(p->slots[i]); /* past its grace period, as the revoke */
    if (!--r->cap.b && !r->child)
        object_type_of(KEEL_OBJ_UNTYPED)->children_deleted(r);
    p->region = NULL;
    cpus[p - pendings].region_pending = 0;
    __atomic_fetch_sub(&pending_regions, 1, __ATOMIC_RELAXED);
}

/* Step 2, exclusive: the types' own hooks. */
static void finish_exclusive(struct pending *p)
{
    for (u32 i = 0; i < p->n; i++) {
        const struct object_type *ot = object_type_of(p->types[i]);
        struct kobj *o = pending_obj(p, i);
        if (ot->cap_deleted && mapped_somewhere(p->slots[i]))
            ot->cap_deleted(p->slots[i]); /* a map that came before step 1 ended */
        if (o && !o->refs && o->type)
            ot->destroy(o);
    }
    zombies_reap();
    region_release(p);
}

static void finish_all_pending(void)
{
    for (u32 i = 0; i < cpu_count; i++) {
        if (pendings[i].region)
            finish_exclusive(&pendings[i]);
    }
}

bool grace_pending_here(void)
{
    return READ_ONCE(this_cpu()->region_pending);
}

void grace_finish_due(void)
{
    struct cpu *c = this_cpu();
    struct pending *p = &pendings[c->index];

    if (!p->region)
        return;
    /* The CPU that held the period open at the last look, if still in the
     * same stay (its list only grows), answers for all: a look at one CPU
     * on most ways out.  This CPU's calls since read none of p's slots. */
    if (p->blocker) {
        struct cpu *b = &cpus[p->blocker - 1];
        if (__atomic_load_n(&b->reading, __ATOMIC_ACQUIRE) &&
            __atomic_load_n(&b->epoch, __ATOMIC_RELAXED) <= p->stamp)
            return;
    }
    struct slot_set set = { p->slots, p->n, p->lo, p->hi };
    p->blocker = grace_blocker(p->stamp, c, &set);
    if (!p->blocker) {
        LOCKSTAT_COUNT(LS_FINISH_DUE);
        grace_finish();
    }
}

void grace_wait_finish(void)
{
    struct pending *p = &pendings[this_cpu()->index];
    struct slot_set set = { p->slots, p->n, p->lo, p->hi };

    if (p->region)
        kernel_regrace(p->stamp + 1, &set);
    grace_finish();
}

/* A retype from r: does a pending revoke hold r's memory?
 * Under the capability lock (which region_retire and region_release hold). */
long grace_region_pending(const struct slot *r)
{
    for (u32 i = 0; i < cpu_count; i++) {
        if (pendings[i].region == r)
            return &pendings[i] == &pendings[this_cpu()->index] ? KEEL_E_FINISH : KEEL_E_RETRY;
    }
    return KEEL_E_OK;
}

void grace_finish(void)
{
    struct pending *p = &pendings[this_cpu()->index];

    if (!p->region)
        return; /* an exclusive holder finished it meanwhile */
    if (!kernel_shared()) {
        finish_exclusive(p);
        return;
    }
    bool hooks = false;
    for (u32 i = 0; i < p->n && !hooks; i++) {
        struct kobj *o = pending_obj(p, i);
        if (mapped_somewhere(p->slots[i]))
            hooks = true;
        if (!o)
            continue;
        /* Read without the capability lock: no capability of it is left
         * to copy, so a count of 0 stays 0; a shared delete never takes one
         * to 0 (it needs 2), so a count above 0 stays above 0 too. */
        u32 refs = __atomic_load_n(&o->refs, __ATOMIC_RELAXED);
        if (!refs && o->type && !object_type_of(p->types[i])->destroy_idle(o))
            hooks = true;
    }
    if (hooks) {
        kernel_upgrade(); /* grace_exclusive finishes it */
        return;
    }
    caps_lock();
    region_release(p);
    caps_unlock();
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

long slot_revoke_shared(struct slot *s)
{
    long err = KEEL_E_OK;
    /* A copy of a frame or paging object, the common case of a revoke
     * with a hook: its mapping lock first (checked under the capability
     * lock to be the only descendant still). */
    struct slot *only = __atomic_load_n(&s->child, __ATOMIC_ACQUIRE);
    if (only)
        slot_listed(only); /* reached by a link, read without the lock */
    spinlock_t *ml = only ? mapping_lock_if_mapped_type(only) : NULL;

    caps_lock();
    if (!s->cap.type) {
        err = KEEL_E_INVALID_CAP;
    } else if (!s->child) {
        ; /* nothing derived: nothing to do, whatever the type */
    } else if (!revoke_quiet(s, ml ? only : NULL)) {
        err = region_retire(s); /* a region's objects (below), else KEEL_E_RETRY */
    } else {
        u64 stamp = grace_epoch;
        while (s->child) { /* leaves first, as slot_revoke */
            struct slot *leaf = s->child;
            while (leaf->child)
                leaf = leaf->child;
            retire(leaf, stamp);
        }
        grace_advance(stamp);
    }
    caps_unlock();
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
    caps_lock();
    for (i = 0; i <= MSG_CAPS && !err; i++) {
        struct slot *s = cnode_slot(&t->cspace.cap, window + i);
        if (s->retired && !s->cap.type && !slot_reclaim(s))
            err = KEEL_E_RETRY;
    }
    caps_unlock();
    return err;
}
