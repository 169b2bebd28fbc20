/* Flushing user TLB entries on this CPU.  Every user mapping is
 * non-global, so reloading CR3 drops them all.  Inline: also on the path
 * into user mode and of the flush IPI (entry.c). */
#ifndef X86_TLB_H
#define X86_TLB_H

#include "x86.h"

static inline void tlb_flush_local(void)
{
    write_cr3(read_cr3());
}

#endif
