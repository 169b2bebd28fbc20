/* Capability slots and the derivation tree.
 *
 * Invariants (checked by the host tests after every operation):
 *  - an empty slot has no parent, children or siblings;
 *  - a child's rights are a subset of its parent's, and it names the same
 *    object (or, for the children of an untyped slot, an object inside the
 *    untyped region);
 *  - an object with a header has refs == the number of slots naming it.
 * Locking (sched.h): filling an empty slot (slot_insert_child) may run
 * with the objects lock shared, under the capability locks of the slot and
 * of its parent's family: the type is written last, and a lookup reads it
 * first (tcb_lookup_slot), so it sees an empty slot or a whole capability.
 * Deleting, moving and revoking run here exclusive; grace.c runs the
 * common cases of the three shared, under their families' capability
 * locks, where no object is destroyed: reference counts go up and down
 * under the lock of the family all of the object's capabilities are in,
 * and reach zero only exclusive.
 *
 * This file knows no object type: what differs between types (which have a
 * header, which may be derived, what deleting or moving a capability or
 * destroying an object means) comes from the per-type operations table
 * (keel/objtype.h), and object code is called only through it.
 */
#include <keel/objtype.h>
#include <keel/sched.h>
#include <keel/string.h>

u64 kernel_ids = 1;
struct kobj *zombies; /* keel/object.h: zombies_reap_pending */
spinlock_t caps_stripes[CAPS_STRIPES];

void caps_hold_lock(const struct caps_hold *h)
{
    if (!caps_locking())
        return;
    lock_check(LOCK_CAPS);
    for (u32 j = 0; j < h->n; j++)
        caps_stripe_lock(h->s[j]);
}

void caps_hold_unlock(const struct caps_hold *h)
{
    if (!caps_locking())
        return;
    LOCKSTAT_HELD(LC_CAPS_HELD, caps_since);
    for (u32 j = 0; j < h->n; j++)
        spin_unlock(&caps_stripes[h->s[j]]);
    lock_release(LOCK_CAPS);
    kernel_wake_waiters();
}

struct slot *tcb_lookup_slot(struct tcb *t, u64 cptr, long *err)
{
    struct slot *s = cnode_slot(&t->cspace.cap, cptr);

    if (!s || !__atomic_load_n(&s->cap.type, __ATOMIC_ACQUIRE)) {
        *err = KEEL_E_INVALID_CAP;
        return NULL;
    }
    return s;
}

struct kobj *cap_kobj(const struct cap *c)
{
    const struct object_type *ot = object_type_of(c->type);

    if (!(ot->flags & OT_HEADER))
        return NULL;
    return (struct kobj *)(c->obj + ot->header);
}

/* Untyped memory is handed out by retype only: a copy would be a second
 * allocator over the same memory.  A reply capability is one-shot (it has
 * exactly one holder), and an IRQ line has one handler. */
bool cap_is_derivable(const struct cap *c)
{
    return object_type_of(c->type)->flags & OT_DERIVABLE;
}

void obj_ref(const struct cap *c)
{
    struct kobj *o = cap_kobj(c);

    if (o)
        o->refs++;
}

static void obj_unref(const struct cap *c)
{
    struct kobj *o = cap_kobj(c);

    if (o && --o->refs == 0) {
        o->zombie_next = zombies;
        zombies = o;
    }
}

/* child gets cap (its type last), as a child of parent, naming o (cap's
 * object header, or NULL). */
static inline __attribute__((always_inline)) void insert_child(struct slot *parent,
                                                                struct slot *child,
                                                                const struct cap *cap,
                                                                struct kobj *o)
{
    struct cap c = *cap;

    c.type = 0; /* the type goes in last */
    /* A DMA window belongs to the one capability that was mapped: copies,
     * made here whatever the path (copy, mint, message), carry none. */
    c.flags &= (u8)~CAP_IO_FLAGS;
    c.io = 0;
    child->cap = c;
    child->parent = parent;
    child->child = NULL;
    child->prev = NULL;
    child->retired = 0; /* a retired slot is filled only past its grace period */
    child->family = parent ? children_family(parent) : FAMILY_ROOT;
    child->next = parent ? parent->child : NULL;
    if (child->next)
        child->next->prev = child;
    if (parent)
        parent->child = child;
    if (o)
        o->refs++;
    __atomic_store_n(&child->cap.type, cap->type, __ATOMIC_RELEASE);
}

/* Under the capability locks (or exclusive): see the top of this file. */
void slot_insert_child(struct slot *parent, struct slot *child, const struct cap *cap)
{
    insert_child(parent, child, cap, cap_kobj(cap));
}

/* dst took a capability's place in the tree: its siblings and children
 * are pointed at it (the caller fixes the parent's first-child link). */
void slot_relink(struct slot *dst)
{
    if (dst->prev)
        dst->prev->next = dst;
    if (dst->next)
        dst->next->prev = dst;
    for (struct slot *c = dst->child; c; c = c->next)
        c->parent = dst;
}

/* Exclusive, or shared for a reply capability leaving a queued message
 * (endpoint.c) under both slots' capability locks: dst's type goes in last. */
void slot_move(struct slot *dst, struct slot *src)
{
    struct slot moved = *src;
    u8 type = moved.cap.type;

    moved.cap.type = 0;
    *dst = moved;
    __atomic_store_n(&dst->cap.type, type, __ATOMIC_RELEASE);
    if (dst->parent && dst->parent->child == src)
        dst->parent->child = dst;
    slot_relink(dst);
    memset(src, 0, sizeof(*src));
    void (*cap_moved)(struct slot *) = object_type_of(type)->cap_moved;
    if (cap_moved)
        cap_moved(dst);
}

/* An untyped capability leaves with children (exclusive only): the family
 * it headed joins the one it is in. */
static void family_merge(struct slot *s)
{
    u64 from = s->cap.obj;

    for (struct slot *d = s->child; d;) {
        bool descend = d->family == from && d->cap.type != KEEL_OBJ_UNTYPED && d->child;
        if (d->family == from)
            d->family = s->family;
        if (descend) {
            d = d->child;
            continue;
        }
        while (d != s && !d->next)
            d = d->parent;
        d = d == s ? NULL : d->next;
    }
}

/* Unlinks s from the tree; its children move up to its parent (or become
 * roots), keeping every other derivation relation. */
void slot_unlink(struct slot *s)
{
    struct slot *c = s->child;

    if (c && s->cap.type == KEEL_OBJ_UNTYPED)
        family_merge(s);

    while (c) {
        struct slot *next = c->next;
        c->parent = s->parent;
        c->prev = NULL;
        c->next = NULL;
        if (s->parent) {
            c->next = s->parent->child;
            if (c->next)
                c->next->prev = c;
            s->parent->child = c;
        }
        c = next;
    }
    if (s->prev)
        s->prev->next = s->next;
    else if (s->parent && s->parent->child == s)
        s->parent->child = s->next;
    if (s->next)
        s->next->prev = s->prev;
    struct slot *parent = s->parent;
    s->parent = s->child = s->next = s->prev = NULL;
    if (parent && !parent->child) {
        void (*emptied)(struct slot *) = object_type_of(parent->cap.type)->children_deleted;
        if (emptied)
            emptied(parent);
    }
}

void slot_delete(struct slot *s)
{
    struct cap c;

    if (!s->cap.type)
        return;
    void (*deleted)(struct slot *) = object_type_of(s->cap.type)->cap_deleted;
    if (deleted)
        deleted(s); /* e.g. a mapping or a DMA window goes with its capability */
    c = s->cap;
    slot_unlink(s);
    memset(&s->cap, 0, sizeof(s->cap));
    if (s->owner) /* a slot embedded in an object: a thread's binding */
        object_type_of(s->owner->hdr.type)->binding_deleted(s);
    obj_unref(&c);
}

/* Deletes every descendant of s, leaves first.  Deleting a capability may
 * destroy an object, which deletes the capabilities stored in it; the walk
 * therefore restarts from s each time instead of keeping pointers. */
void slot_revoke(struct slot *s)
{
    while (s->cap.type && s->child) {
        struct slot *leaf = s->child;
        while (leaf->child)
            leaf = leaf->child;
        slot_delete(leaf);
        zombies_reap();
    }
}

/* Destroys objects whose last capability went away.  Iterative: destroying
 * a CNode deletes the capabilities in it, which may queue more objects. */
void zombies_reap(void)
{
    while (zombies) {
        struct kobj *o = zombies;
        zombies = o->zombie_next;
        o->zombie_next = NULL;
        object_type_of(o->type)->destroy(o);
    }
}
