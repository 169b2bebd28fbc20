/* A region's revoke with the objects lock shared (grace.c: delete, move
 * and revoke shared, and the grace periods that keep them safe). */
#include "grace.h"

u32 pending_regions;

/* -- a region's revoke, shared ---------------------------------------------------
 *
 * Revoking an untyped region destroys what was made from it.  Shared, that
 * runs in two steps when the types' table allows it for every descendant
 * (region_member: e.g. endpoints, notifications, frames and page tables
 * mapped nowhere, untyped regions with no retype from them under way),
 * none is embedded in an object, and no retype from the region itself is
 * under way (else KEEL_E_RETRY: exclusive, as before):
 *
 *  1. region_retire, under the capability locks of every family in the
 *     region (the region's own, and each one a region inside it heads:
 *     KEEL_E_LOCKS names those missing, and slot_revoke_shared takes them
 *     and tries again): every descendant is retired
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
 *     down, under the region's family lock, the memory is free, and so are
 *     the slots (slot_release: past their grace period, later fills look at
 *     no CPU); until then they stay
 *     as they are (CAP_PENDING: slot_reclaim refuses them), for step 2
 *     reads them.  So a revoke waits for no other CPU, and a thread that
 *     waited on one of the objects is woken (by the exclusive destroy) at
 *     step 2, at the latest a timer tick after the grace period ended.
 *
 * An exclusive holder finishes every CPU's pending step 2 first
 * (grace_exclusive): it is past every grace period, and no exclusive
 * operation (deleting the region, say) may find objects half destroyed.
 */

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

/* Step 1 (under the capability locks, shared). */
long region_retire(struct slot *r, const struct caps_hold *h, u64 *miss, u32 *missing)
{
    struct pending *p = &pendings[this_cpu()->index];
    u32 n = 0;

    if (p->region)
        return KEEL_E_FINISH; /* this CPU's earlier one first */
    if (r->cap.type != KEEL_OBJ_UNTYPED || r->cap.b || r->owner)
        return KEEL_E_RETRY;
    for (struct slot *d = r->child; d;) {
        if (++n > PENDING_MAX || !region_member(d))
            return KEEL_E_RETRY;
        /* a region inside: the lock of the family it heads, before the
         * walk goes into it (no retype from it meanwhile) */
        if (d->cap.type == KEEL_OBJ_UNTYPED && h && !caps_hold_has(h, d->cap.obj)) {
            if (*missing < REGION_MISS_MAX)
                miss[(*missing)++] = d->cap.obj;
            while (d != r && !d->next) /* its next, not its children */
                d = d->parent;
            d = d == r ? NULL : d->next;
            continue;
        }
        d = subtree_next(d, r);
    }
    if (h && *missing)
        return KEEL_E_LOCKS;
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
        retire_begin(leaf);
        unlink_quiet_leaf(leaf);
        if (o)
            o->refs--;
        leaf->cap.flags |= CAP_PENDING;
    }
    u64 stamp = grace_stamp();
    for (u32 i = 0; i < p->n; i++)
        retire_end(p->slots[i], stamp);
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

/* A pending slot past its grace period becomes free (slot_clear, as the
 * revoke did), without its slot's lock: a fill takes it only once
 * CAP_PENDING is gone, the last of its fields cleared; its stamp goes to 0
 * (later fills look at no CPU) unless a fill came first - stamps are never
 * reused, so a slot filled and retired since holds another. */
static void slot_release(struct slot *s, u64 stamp)
{
    slot_clear_fields(s);
    __atomic_store_n(&s->cap.flags, 0, __ATOMIC_RELEASE);
    __atomic_compare_exchange_n(&s->retired, &stamp, 0, false, __ATOMIC_RELAXED,
                                __ATOMIC_RELAXED);
}

/* The objects are gone: the region's memory is free again, unless something
 * was made from it meanwhile (under the lock of the family the region
 * heads, or exclusive). */
static void region_release(struct pending *p)
{
    struct slot *r = p->region;

    for (u32 i = 0; i < p->n; i++)
        slot_release(p->slots[i], p->stamp); /* past its grace period */
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

void finish_all_pending(void)
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
 * Under the capability locks (which region_retire and region_release hold). */
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
        /* Read without the capability locks: no capability of it is left
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
    u32 heads = caps_stripe(p->region->cap.obj); /* its watermark, cap.b */
    caps_lock_pair(heads, heads);
    region_release(p);
    caps_unlock_pair(heads, heads);
}
