/* The TSS I/O permission bitmap: each CPU's bitmap denies every port but
 * the one range of the thread it runs (the thread's io_port capability,
 * tcb.io_ports), opened when the thread enters user mode (entry.c). */
#ifndef X86_IOPORT_H
#define X86_IOPORT_H

#include <keel/cpu.h>
#include <keel/object.h>

/* Per CPU, with its TSS: every port denied. */
void ioport_cpu_init(struct arch_cpu *a);
/* Opens (or closes) ports first..last in a bitmap. */
void io_range_set(u8 *map, u32 first, u32 last, bool open);

/* Changes this CPU's open range to first..last (ioport.c). */
void ioport_switch_range(struct arch_cpu *a, u32 first, u32 last);

/* Opens t's ports in this CPU's bitmap (closing the previous thread's).
 * Inline: on the path of every switch into user mode, where it usually
 * finds nothing to change. */
static inline __attribute__((always_inline)) void ioport_switch(struct cpu *c, struct tcb *t)
{
    struct arch_cpu *a = &c->arch;
    u64 range = 1; /* first 1, last 0: none */

    if (__builtin_expect(t->io_ports.cap.type == KEEL_OBJ_IO_PORT, 0))
        range = (u32)t->io_ports.cap.a | (u64)t->io_ports.cap.b << 32;
    if (__builtin_expect(range != a->io_range, 0))
        ioport_switch_range(a, (u32)range, (u32)(range >> 32));
}

#endif
