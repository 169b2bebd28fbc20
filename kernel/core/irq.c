/* Interrupts for user-space drivers.  The root task holds the IRQ control
 * capability; it makes one handler capability per line and gives it to a
 * driver.  The driver binds a notification: each interrupt masks the line
 * and signals the notification, and the line stays masked until the
 * driver acknowledges through the handler.  A driver that never
 * acknowledges silences only its own device. */
#include <keel/invoke.h>
#include <keel/sched.h>

struct irq_line {
    bool claimed;
    struct notification *ntfn;
    u64 bits;
};

static struct irq_line lines[IRQ_LINES];

/* Called with the objects lock exclusive, the line already masked. */
void irq_deliver(u32 gsi)
{
    if (gsi < IRQ_LINES && lines[gsi].ntfn)
        notification_raise(lines[gsi].ntfn, lines[gsi].bits);
}

bool irq_notification_used(const struct notification *n)
{
    for (u32 i = 0; i < IRQ_LINES; i++) {
        if (lines[i].ntfn == n)
            return true;
    }
    return false;
}

void irq_notification_gone(struct notification *n)
{
    for (u32 i = 0; i < IRQ_LINES; i++) {
        if (lines[i].ntfn == n)
            lines[i].ntfn = NULL;
    }
}

void irq_cap_deleted(struct slot *s)
{
    u32 gsi = (u32)s->cap.a;

    arch_irq_enable_line(gsi, false);
    lines[gsi] = (struct irq_line){ 0 };
}

static long irq_get(struct invocation *inv)
{
    u64 gsi = inv->arg[0];
    struct slot *dst = cnode_slot(&inv->cap_arg[1]->cap, inv->arg[2]);

    if (gsi >= IRQ_LINES || !arch_irq_available((u32)gsi) || !dst)
        return KEEL_E_INVALID_ARG;
    if (lines[gsi].claimed || dst->cap.type)
        return KEEL_E_EXISTS;
    struct cap c = { .type = KEEL_OBJ_IRQ_HANDLER, .rights = KEEL_RIGHT_ALL, .a = gsi };
    lines[gsi].claimed = true;
    slot_insert_child(inv->slot, dst, &c);
    return KEEL_E_OK;
}

long irq_decode(struct invocation *inv)
{
    struct cap *c = &inv->slot->cap;
    u32 gsi = (u32)c->a;

    switch (inv->label) {
    case KEEL_CALL_IRQ_CONTROL_GET:
        return irq_get(inv);
    case KEEL_CALL_IRQ_HANDLER_SET_NOTIFICATION:
        if (inv->arg[0]) {
            long err = 0;
            u64 bits;
            struct notification *n =
                notification_lookup(inv->caller, inv->arg[0], KEEL_RIGHT_WRITE, &bits, &err);
            if (!n)
                return err;
            lines[gsi].ntfn = n;
            lines[gsi].bits = bits;
            arch_irq_enable_line(gsi, true);
        } else {
            lines[gsi].ntfn = NULL;
            arch_irq_enable_line(gsi, false);
        }
        return KEEL_E_OK;
    case KEEL_CALL_IRQ_HANDLER_ACK:
        if (!lines[gsi].ntfn)
            return KEEL_E_BAD_STATE;
        arch_irq_enable_line(gsi, true);
        return KEEL_E_OK;
    }
    return KEEL_E_UNKNOWN_CALL;
}
