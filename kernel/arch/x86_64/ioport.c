/* The TSS I/O permission bitmap (ioport.h); which ports a thread may be
 * given is the core's business (kernel/core/ioport.c). */
#include "ioport.h"

void ioport_cpu_init(struct arch_cpu *a)
{
    u64 *w = (u64 *)a->iomap, n = 8192 / 8;

    __asm__ volatile("rep stosq" : "+D"(w), "+c"(n) : "a"(~0ul) : "memory");
    a->iomap[8192] = 0xff; /* the byte after the map must be all ones */
    a->io_first = 1;
    a->io_last = 0;
}

void io_range_set(u8 *map, u32 first, u32 last, bool open)
{
    for (u32 port = first; port <= last; port++) {
        if (!(port & 7) && port + 7 <= last) {
            map[port / 8] = open ? 0 : 0xff;
            port += 7;
        } else if (open) {
            map[port / 8] &= (u8)~(1u << (port & 7));
        } else {
            map[port / 8] |= (u8)(1u << (port & 7));
        }
    }
}

void ioport_switch_range(struct arch_cpu *a, u32 first, u32 last)
{
    if (a->io_first <= a->io_last)
        io_range_set(a->iomap, a->io_first, a->io_last, false);
    if (first <= last)
        io_range_set(a->iomap, first, last, true);
    a->io_first = first;
    a->io_last = last;
}
