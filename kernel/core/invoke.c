/* The generic half of call decoding, driven by the tables generated from
 * kernel/calls.tbl: the call's description (type, rights, capability
 * arguments) is checked (invoke_described, keel/invoke.h), then the type's
 * decode hook runs (keel/objtype.h).  Every label of a type with calls has
 * a decode hook: a call is listed under its type in calls.tbl. */
#include <keel/invoke.h>

#include <keel/calls_gen.h>

long invoke(struct invocation *inv)
{
    u8 type = __atomic_load_n(&inv->slot->cap.type, __ATOMIC_ACQUIRE);

    if (!type)
        return KEEL_E_INVALID_CAP; /* emptied since its lookup (slot_type_check) */
    return invoke_described(inv, call_describe(inv->label), type, false);
}
