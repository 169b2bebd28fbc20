/* The per-type operations table: everything the generic code (cap.c,
 * invoke.c, untyped.c) needs to know about an object type, so that it
 * calls object code only through this table and no type switch exists
 * outside the type's own file.  The table is generated from the [types]
 * section of kernel/calls.tbl (scripts/gencalls.py -> keel/types_gen.h,
 * instantiated by kernel/core/objtype.c); each hook is the function
 * <module>_<hook> of the type's file.  A hook a type does not need is
 * NULL. */
#ifndef KEEL_OBJTYPE_H
#define KEEL_OBJTYPE_H

#include <keel/object.h>

struct invocation;

#define OT_RETYPE 1    /* made by untyped_retype */
#define OT_HEADER 2    /* starts with a struct kobj (at .header): counted */
#define OT_DERIVABLE 4 /* may be copied, minted and sent */
#define OT_BADGED 8    /* may be minted with a badge */
#define OT_DEVICE 16   /* may be made from device memory: holds no kernel data */
#define OT_EXCLUSIVE 32 /* made with the objects lock exclusive only */
#define OT_MAPPED 64   /* cap_deleted only undoes a mapping (CAP_MAPPED, CAP_IOMAPPED) */

struct object_type {
    /* Hooks of the kernel call path first. */
    long (*decode)(struct invocation *inv);     /* a kernel call on the object */
    void (*cap_deleted)(struct slot *s);        /* a capability to it goes */
    void (*cap_moved)(struct slot *s);          /* ... changes slot */
    void (*children_deleted)(struct slot *s);   /* nothing derived from s is left */
    void (*binding_deleted)(struct slot *s);    /* a slot embedded in it (s->owner) */
    void (*destroy)(struct kobj *o);            /* its last capability went */
    /* ... and the grace period of every capability that named it ended
     * (grace.c: a region's revoke), so nothing new can reach it: destroys
     * it under its own lock if nothing waits on it (then destroy would
     * only mark it destroyed), else false and destroy runs exclusive. */
    bool (*destroy_idle)(struct kobj *o);
    /* Retype: size (caller-sized types; else size_bits) and set-up of a
     * new object in zeroed memory; false when the type refuses. */
    u32 (*bits)(u32 user_bits);
    bool (*init)(struct cap *c, u32 user_bits);
    const char *name;
    u16 header;   /* offset of its struct kobj from cap.obj (OT_HEADER) */
    u8 flags;     /* OT_* */
    u8 size_bits; /* a fixed size, log2 bytes; 0: the caller chooses (bits) */
};

/* Indexed by KEEL_OBJ_*; entry 0 (the empty slot) is all zero. */
extern const struct object_type object_types[KEEL_NTYPES];

/* The types' notification_gone hooks, NULL-terminated: a notification is
 * destroyed, and kernel state of these types that points at it (an IRQ
 * line, the console's listener) forgets it.  A list rather than a table
 * column: notification_destroy calls just these. */
extern void (*const notification_gone_hooks[])(struct notification *n);

static inline const struct object_type *object_type_of(u32 type)
{
    return &object_types[type];
}

/* A call's checks for the batch loop (kernel/core/syscall.c), generated
 * from the [calls] of calls.tbl beside the table above, indexed by label:
 * a capability passes the call's type and rights checks when its first two
 * bytes (type, rights) masked with mask equal want.  An empty slot, an
 * endpoint, a wrong type or missing rights do not; a call with capability
 * arguments and label 0 never do (want has a bit outside every mask): those
 * take the generic path (keel/invoke.h), which says which check failed.
 * nargs is the call's argument count, call_decode[label] its type's decode
 * hook (two arrays of 8-byte entries: a label indexes both without a
 * multiplication). */
#define CALL_FAST_NEVER 0x8000
struct call_fast {
    u16 mask;
    u16 want;
    u8 nargs;
    u8 unused[3];
};
_Static_assert(sizeof(struct call_fast) == 8, "call_fast is indexed by label * 8");
_Static_assert(__builtin_offsetof(struct cap, type) == 0 &&
                   __builtin_offsetof(struct cap, rights) == 1,
               "call_fast reads a capability's type and rights as one u16");

extern const struct call_fast call_fast[KEEL_NCALLS];
extern long (*const call_decode[KEEL_NCALLS])(struct invocation *inv);

#endif
