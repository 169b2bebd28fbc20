/* The generic half of call decoding, driven by the table generated from
 * kernel/calls.tbl. */
#include <keel/invoke.h>
#include <keel/sched.h>

#include <keel/calls_gen.h>

const struct call_desc *call_describe(u64 label)
{
    if (label == 0 || label >= KEEL_NCALLS || !call_table[label].name)
        return NULL;
    return &call_table[label];
}

/* Calls that may run with the objects lock shared: they destroy nothing
 * and change no slot but by filling an empty one (copy, mint, retype:
 * under the capability lock) or a paging capability's mapping state (its
 * own lock).  Some may still ask for exclusive: a notification signal
 * (a bound thread), a retype of vspaces (the registry). */
bool call_is_shared(u32 type, u64 label)
{
    switch (type) {
    case KEEL_OBJ_NOTIFICATION:
    case KEEL_OBJ_VSPACE:
    case KEEL_OBJ_PDPT:
    case KEEL_OBJ_PD:
    case KEEL_OBJ_PT:
    case KEEL_OBJ_FRAME:
        return true;
    case KEEL_OBJ_CNODE:
        return label == KEEL_CALL_CNODE_IDENTIFY || label == KEEL_CALL_CNODE_COPY ||
               label == KEEL_CALL_CNODE_MINT;
    case KEEL_OBJ_UNTYPED:
        return true;
    }
    return false;
}

long invoke(struct invocation *inv)
{
    const struct call_desc *d = call_describe(inv->label);
    const struct cap *c = &inv->slot->cap;

    if (!d)
        return KEEL_E_UNKNOWN_CALL;
    if (c->type != d->type)
        return KEEL_E_WRONG_TYPE;
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
        if (s->cap.type != d->args[i].type)
            return KEEL_E_WRONG_TYPE;
        if ((s->cap.rights & d->args[i].rights) != d->args[i].rights)
            return KEEL_E_NO_RIGHTS;
        inv->cap_arg[i] = s;
    }
    if (kernel_shared() && !call_is_shared(d->type, inv->label))
        return KEEL_E_RETRY;
    switch (d->type) {
    case KEEL_OBJ_UNTYPED:
        return decode_untyped(inv);
    case KEEL_OBJ_CNODE:
        return decode_cnode(inv);
    case KEEL_OBJ_TCB:
        return decode_tcb(inv);
    case KEEL_OBJ_VSPACE:
    case KEEL_OBJ_PDPT:
    case KEEL_OBJ_PD:
    case KEEL_OBJ_PT:
    case KEEL_OBJ_FRAME:
        return decode_paging(inv);
    case KEEL_OBJ_NOTIFICATION:
        return decode_notification(inv);
    case KEEL_OBJ_CONSOLE:
        return decode_console(inv);
    case KEEL_OBJ_IO_PORT_CONTROL:
        return decode_io_port(inv);
    case KEEL_OBJ_IO_SPACE_CONTROL:
    case KEEL_OBJ_IO_SPACE:
        return decode_io_space(inv);
    case KEEL_OBJ_IRQ_CONTROL:
    case KEEL_OBJ_IRQ_HANDLER:
        return decode_irq(inv);
    }
    return KEEL_E_UNKNOWN_CALL;
}
