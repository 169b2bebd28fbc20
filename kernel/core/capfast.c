/* The capability fast path: cnode_copy and cnode_delete in the common case
 * as short straight paths, beside the IPC fast path (fastpath.c).
 *
 * Taken when: the invoked capability (and for a copy the source table's)
 * is a CNode capability in the caller's own table with the rights the call
 * needs, and the slots named are inside their tables.  Then the work is the
 * general path's own (cnode.c: slot_derive; grace.c: slot_delete_shared),
 * under the same capability locks, without the generic decoding (the
 * invocation record, the call table, the capability-argument loop, the
 * result arrays) and without the scheduler's exit path: the caller goes
 * on running, straight back to user mode.  Anything else - a check that
 * fails (the general path then reports the error in its own order), a
 * delete that would destroy an object or run a type's hook (KEEL_E_RETRY:
 * it runs exclusive), a reschedule pending - returns before changing
 * anything, and the general path serves the call.
 *
 * Locking: the objects lock shared (as the general path, these calls being
 * "shared" in calls.tbl), then the capability locks (sched.h's order). */
#include <arch/capfast.h>
#include <arch/fastpath.h>
#include <keel/cpu.h>
#include <keel/invoke.h>
#include <keel/sched.h>
#include <keel/syscall.h>

#define FAST static inline __attribute__((always_inline))

/* cnode_slot for a capability known to name a CNode: the slot at index i,
 * or NULL; not listed (grace.c), for it is read only under the capability
 * locks (slot_derive_shared, slot_delete_shared). */
FAST struct slot *fast_slot(const struct cap *cnode, u64 i)
{
    if (i - 1 >= (1ul << cnode->size_bits) - 1) /* slot 0 is the header */
        return NULL;
    return (struct slot *)cnode->obj + i;
}

/* A CNode capability of t's table with every right wanted, or NULL: the
 * slot is listed (it is read without the lock), then its type read once (a
 * delete on another CPU may empty it: grace.c).  first: the call's first
 * read since c entered, whose list fastpath_cnode's entry left empty
 * (kernel_enter_call(c, 0)): the slot goes in at 0 without slot_listed's
 * look at the count. */
FAST struct slot *fast_cnode_cap(struct cpu *c, const struct cap *table, u64 i, u8 rights,
                                 bool first)
{
    if (table->type != KEEL_OBJ_CNODE)
        return NULL;
    struct slot *s = fast_slot(table, i);
    if (!s)
        return NULL;
    if (first) { /* slot_listed on an empty list */
        c->reads[0] = s;
        __atomic_exchange_n(&c->reads_n, 1, __ATOMIC_SEQ_CST);
    } else {
        slot_listed(s);
    }
    if (__atomic_load_n(&s->cap.type, __ATOMIC_ACQUIRE) != KEEL_OBJ_CNODE ||
        (s->cap.rights & rights) != rights)
        return NULL;
    return s;
}

/* dest, src_cnode, src, rights (calls.tbl); the source table is most often
 * the invoked one. */
FAST long fast_copy(struct cpu *c, struct tcb *t, u64 cptr, u64 dest, u64 src_cnode, u64 src,
                    u64 rights)
{
    struct slot *cn = fast_cnode_cap(c, &t->cspace.cap, cptr, KEEL_RIGHT_WRITE, true);

    if (!cn)
        return KEEL_E_RETRY;
    struct slot *scn =
        src_cnode == cptr ? cn : fast_cnode_cap(c, &t->cspace.cap, src_cnode, KEEL_RIGHT_READ, false);
    if (!scn || !(scn->cap.rights & KEEL_RIGHT_READ))
        return KEEL_E_RETRY;
    struct slot *d = fast_slot(&cn->cap, dest), *s = fast_slot(&scn->cap, src);
    if (!d || !s)
        return KEEL_E_RETRY;
    return slot_derive_shared(d, s, rights, false, 0);
}

FAST long fast_delete(struct cpu *c, struct tcb *t, u64 cptr, u64 slot)
{
    struct slot *cn = fast_cnode_cap(c, &t->cspace.cap, cptr, KEEL_RIGHT_WRITE, true);
    struct slot *s = cn ? fast_slot(&cn->cap, slot) : NULL;

    if (!s)
        return KEEL_E_RETRY;
    return slot_delete_shared(s);
}

void fastpath_cnode(u64 cptr, u64 label, u64 a0, u64 a1, u64 a2, u64 a3)
{
    struct cpu *c = this_cpu();

    struct tcb *t = kernel_enter_call(c, 0); /* both calls are listed */
    /* Both calls list what they read without the lock (grace.c). */
    long err = label == KEEL_CALL_CNODE_COPY ? fast_copy(c, t, cptr, a0, a1, a2, a3)
                                               : fast_delete(c, t, cptr, a0);
    if (err < 0) /* KEEL_E_RETRY or KEEL_E_GRACE: users' errors are >= 0 */
        syscall_general(arch_fast_frame(t), t);
    arch_fast_set_error(t, err);
    if (c->need_resched)
        sched_exit_kernel(); /* it reads no slot: syscall_handle */
    WRITE_ONCE(c->in_kernel, 0);
    arch_fast_return_same(c, t); /* releases the objects lock */
}
