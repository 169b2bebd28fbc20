/* Decoding a kernel call: the generic, table-driven part (invoke_described,
 * inline so that the batch loop runs it without a call) checks the invoked
 * capability's type and rights and looks up capability arguments; the
 * type's decode hook (keel/objtype.h: <module>_decode) then checks what
 * only it knows and calls its invoke step, which cannot fail. */
#ifndef KEEL_INVOKE_H
#define KEEL_INVOKE_H

#include <keel/object.h>
#include <keel/sched.h>
#include <keel/types_gen.h>

#define CALL_LISTED 2

struct call_desc {
    const char *name;
    u8 type;
    u8 rights;
    u8 nargs;
    u8 nresults;
    u8 shared; /* may run with the objects lock shared (calls.tbl): 1, or
                * CALL_LISTED if it also lists every slot it reads (grace.c) */
    u8 cap_end; /* 1 + the index of the last capability argument (0: none) */
    struct {
        u8 type; /* 0: a plain word */
        u8 rights;
    } args[KEEL_MSG_WORDS];
};

/* Generated from calls.tbl (calls_gen.h), indexed by label. */
extern const struct call_desc call_table[KEEL_NCALLS];

/* The words point at the caller's: a system call's saved registers, a
 * batch record's copy in kernel memory (never user memory: a decoder may
 * read a word twice).  The results start zeroed; what a call does not
 * set stays 0. */
struct invocation {
    struct tcb *caller;
    struct slot *slot; /* the invoked capability */
    u64 label;
    const u64 *arg;
    struct slot *cap_arg[KEEL_MSG_WORDS]; /* looked up for capability arguments */
    u64 *res;
    bool blocked; /* the caller now waits; its results are written when it wakes */
    bool no_block; /* in a batch: a call that would wait fails instead */
};

/* gencalls.py numbers the calls 1, 2, ... KEEL_NCALLS - 1: every label in
 * that range has an entry (label 0 wraps to the top and is refused). */
static inline const struct call_desc *call_describe(u64 label)
{
    if (label - 1 >= KEEL_NCALLS - 1)
        return NULL;
    return &call_table[label];
}

/* The listing of what a call reads (grace.c): a listed call starts it if
 * nothing else was read since the objects lock was taken shared
 * (READS_FRESH), and keeps one the entry or the capability fast path
 * started; any other call reads "any slot".  reads_any: from here on, this
 * hold reads any slot (the exchange orders it before whatever is read
 * next).  reads_listed: from here on it lists what it reads. */
static inline __attribute__((always_inline)) void reads_any(struct cpu *c)
{
    if (c->reads_n <= READS_MAX)
        __atomic_exchange_n(&c->reads_n, READS_ANY, __ATOMIC_SEQ_CST);
}

static inline __attribute__((always_inline)) void reads_listed(struct cpu *c)
{
    if (c->reads_n == READS_FRESH)
        c->reads_n = 0;
}

static inline __attribute__((always_inline)) void reads_begin(struct cpu *c,
                                                              const struct call_desc *d)
{
    if (d && d->shared == CALL_LISTED)
        reads_listed(c);
    else
        reads_any(c);
}

/* The generic checks of a call described by d (NULL: no such call) on
 * inv->slot, whose type the caller read once (non-zero), then its type's
 * decode hook.  exclusive: the caller holds the objects lock exclusive (a
 * batch), so no call needs to ask for it. */
static inline __attribute__((always_inline)) long invoke_described(struct invocation *inv,
                                                                   const struct call_desc *d,
                                                                   u8 type, bool exclusive)
{
    const struct cap *c = &inv->slot->cap;

    if (!d)
        return KEEL_E_UNKNOWN_CALL;
    if (type != d->type)
        return KEEL_E_WRONG_TYPE;
    if ((c->rights & d->rights) != d->rights)
        return KEEL_E_NO_RIGHTS;
    for (u32 i = 0; i < d->cap_end; i++) {
        if (!d->args[i].type)
            continue;
        long err = 0;
        struct slot *s = tcb_lookup_slot(inv->caller, inv->arg[i], &err);
        if (!s)
            return err;
        if ((err = slot_type_check(s, d->args[i].type)))
            return err;
        if ((s->cap.rights & d->args[i].rights) != d->args[i].rights)
            return KEEL_E_NO_RIGHTS;
        inv->cap_arg[i] = s;
    }
    /* Which calls may run shared: the "shared" marks of calls.tbl. */
    if (!exclusive && !d->shared && kernel_shared())
        return KEEL_E_RETRY;
    return object_types[d->type].decode(inv);
}

long invoke(struct invocation *inv);

#endif
