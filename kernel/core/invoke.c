/* The generic half of call decoding, driven by the tables generated from
 * kernel/calls.tbl: the call's description (type, rights, capability
 * arguments) is checked here, then the type's decode hook runs
 * (keel/objtype.h).  Every label of a type with calls has a decode hook:
 * a call is listed under its type in calls.tbl. */
#include <keel/invoke.h>
#include <keel/sched.h>

#include <keel/calls_gen.h>

const struct call_desc *call_describe(u64 label)
{
    if (label == 0 || label >= KEEL_NCALLS || !call_table[label].name)
        return NULL;
    return &call_table[label];
}

long invoke(struct invocation *inv)
{
    const struct call_desc *d = call_describe(inv->label);
    const struct cap *c = &inv->slot->cap;

    if (!d)
        return KEEL_E_UNKNOWN_CALL;
    long type_err = slot_type_check(inv->slot, (u8)d->type);
    if (type_err)
        return type_err;
    if ((c->rights & d->rights) != d->rights)
        return KEEL_E_NO_RIGHTS;
    for (u32 i = 0; i < d->nargs; i++) {
        inv->cap_arg[i] = NULL;
        if (!d->args[i].type)
            continue;
        long err = 0;
        struct slot *s = tcb_lookup_slot(inv->caller, inv->arg[i], &err);
        if (!s)
            return err;
        if ((err = slot_type_check(s, (u8)d->args[i].type)))
            return err;
        if ((s->cap.rights & d->args[i].rights) != d->args[i].rights)
            return KEEL_E_NO_RIGHTS;
        inv->cap_arg[i] = s;
    }
    /* Which calls may run shared: the "shared" marks of calls.tbl. */
    if (kernel_shared() && !d->shared)
        return KEEL_E_RETRY;
    return object_types[d->type].decode(inv);
}
