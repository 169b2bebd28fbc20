/* The steps of a retire that grace.c (delete, move, revoke shared) and
 * region.c (a region's revoke, shared) share. */
#ifndef KEEL_CORE_GRACE_H
#define KEEL_CORE_GRACE_H

#include <keel/objtype.h>
#include <keel/sched.h>

/* A retire begins: nothing fills s until its stamp is known (slot_reclaim
 * refuses SLOT_RETIRING), and new lookups fail. */
static inline void retire_begin(struct slot *s)
{
    s->retired = SLOT_RETIRING;
    __atomic_store_n(&s->cap.type, 0, __ATOMIC_RELEASE);
}

/* After the slots' types became 0: their stamp, and the epoch moves past
 * it.  Retires of other families run at once, so the stamp is read after
 * the types' stores (a locked operation orders them): a CPU whose lookup
 * could still see one of them took an epoch at or before it. */
static inline u64 grace_stamp(void)
{
    return __atomic_fetch_add(&grace_epoch, 1, __ATOMIC_SEQ_CST);
}

/* The retire ends: s's last write (a fill may come after it). */
static inline void retire_end(struct slot *s, u64 stamp)
{
    __atomic_store_n(&s->retired, stamp, __ATOMIC_RELEASE);
}

/* A retired slot's capability but its type (0 already), flags and stamp,
 * cleared field by field: no memset or structure assignment, a call or a
 * rep stos here.  slot_clear (grace.c) and slot_release (region.c) clear
 * the flags and the stamp each in its own order. */
static inline void slot_clear_fields(struct slot *s)
{
    s->cap.rights = s->cap.size_bits = 0;
    s->cap.io = 0;
    s->cap.obj = 0;
    s->cap.badge = s->cap.a = s->cap.b = 0;
}

/* A leaf leaves its siblings' list; its parent, if left without children,
 * has no hook to run (the caller checked: empties_hooked_parent). */
static inline void unlink_quiet_leaf(struct slot *s)
{
    if (s->prev)
        s->prev->next = s->next;
    else if (s->parent)
        s->parent->child = s->next;
    if (s->next)
        s->next->prev = s->prev;
    s->parent = s->next = s->prev = NULL;
}

/* The next slot of root's subtree after d, depth first. */
static inline struct slot *subtree_next(struct slot *d, const struct slot *root)
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

/* region.c */
extern u32 pending_regions; /* CPUs with a pending region revoke */
/* Step 1 of a region's revoke under h's locks (NULL: none needed); or
 * KEEL_E_LOCKS, nothing done, when regions inside head families whose
 * locks h lacks (the keys of up to REGION_MISS_MAX of them in miss,
 * their number in missing). */
#define KEEL_E_LOCKS (-100l)
#define PENDING_MAX 64 /* the most capabilities a region revoke retires shared */
#define REGION_MISS_MAX 8
long region_retire(struct slot *r, const struct caps_hold *h, u64 *miss, u32 *missing);
void finish_all_pending(void);

#endif
