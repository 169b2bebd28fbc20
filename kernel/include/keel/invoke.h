/* Decoding a kernel call: the generic, table-driven part (invoke.c) checks
 * the invoked capability's type and rights and looks up capability
 * arguments; the type's decode hook (keel/objtype.h: <module>_decode) then
 * checks what only it knows and calls its invoke step, which cannot fail. */
#ifndef KEEL_INVOKE_H
#define KEEL_INVOKE_H

#include <keel/object.h>
#include <keel/types_gen.h>

struct call_desc {
    const char *name;
    u8 type;
    u8 rights;
    u8 nargs;
    u8 nresults;
    u8 shared; /* may run with the objects lock shared (calls.tbl) */
    struct {
        u8 type; /* 0: a plain word */
        u8 rights;
    } args[KEEL_MSG_WORDS];
};

struct invocation {
    struct tcb *caller;
    struct slot *slot; /* the invoked capability */
    u64 label;
    u64 arg[KEEL_MSG_WORDS];
    struct slot *cap_arg[KEEL_MSG_WORDS]; /* looked up for capability arguments */
    u64 res[KEEL_MSG_WORDS];
    bool blocked; /* the caller now waits; its results are written when it wakes */
    bool no_block; /* in a batch: a call that would wait fails instead */
};

long invoke(struct invocation *inv);
const struct call_desc *call_describe(u64 label);

#endif
