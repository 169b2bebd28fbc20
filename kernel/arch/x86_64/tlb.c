/* TLB shootdowns, the architecture's half: the core (kernel/core/objlock.c,
 * tlb_shootdown) decides who must flush; this flushes and sends the IPI,
 * which entry.c serves. */
#include <arch.h>
#include <keel/cpu.h>

#include "tlb.h"

void arch_flush_user_tlb(void)
{
    tlb_flush_local();
}

void arch_send_tlb_ipi(struct cpu *c)
{
    lapic_send_ipi(c->hw_id, VEC_IPI_TLB);
}
