/* I/O-port capabilities: a range of ports a thread may use directly.  The
 * root task holds the control capability and issues ranges; a thread is
 * given one range (tcb_set_io_ports) and the CPU enforces it (on x86 with
 * the TSS I/O permission bitmap).  Ports the kernel itself drives are
 * never issued. */
#include <keel/invoke.h>

static const struct {
    u16 first, last;
} kernel_ports[] = {
    { 0x20, 0x21 },   /* interrupt controllers */
    { 0x40, 0x43 },   /* PIT: timer calibration */
    { 0x61, 0x61 },
    { 0x70, 0x71 },   /* CMOS, NMI mask */
    { 0x80, 0x80 },   /* used by the kernel as an I/O delay */
    { 0xa0, 0xa1 },
    { 0xf4, 0xf7 },   /* the exit device */
    { 0x3f8, 0x3ff }, /* COM1: the kernel's console */
};

long ioport_decode(struct invocation *inv)
{
    u64 first = inv->arg[0], last = inv->arg[1];
    struct slot *dst = cnode_slot(&inv->cap_arg[2]->cap, inv->arg[3]);

    if (inv->label != KEEL_CALL_IO_PORT_CONTROL_ISSUE)
        return KEEL_E_UNKNOWN_CALL;
    if (first > last || last > 0xffff || !dst)
        return KEEL_E_INVALID_ARG;
    for (u32 i = 0; i < ARRAY_SIZE(kernel_ports); i++) {
        if (first <= kernel_ports[i].last && kernel_ports[i].first <= last)
            return KEEL_E_INVALID_ARG;
    }
    if (dst->cap.type)
        return KEEL_E_EXISTS;
    struct cap c = { .type = KEEL_OBJ_IO_PORT, .rights = KEEL_RIGHT_ALL, .a = first, .b = last };
    slot_insert_child(inv->slot, dst, &c);
    return KEEL_E_OK;
}
