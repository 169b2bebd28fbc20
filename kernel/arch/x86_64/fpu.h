/* FPU and SSE state: one fxsave image per thread (struct arch_tcb.fpu),
 * loaded lazily when a thread enters user mode on a CPU whose registers
 * hold another thread's state (entry.c: arch_enter_user). */
#ifndef X86_FPU_H
#define X86_FPU_H

#include <keel/object.h>

/* Per CPU: lets user mode use x87 and SSE (fxsave/fxrstor state). */
void fpu_cpu_init(void);
/* A new thread's state: everything masked and empty. */
void fpu_thread_init(struct tcb *t);

/* Inline: on the path of every switch into user mode. */
static inline void fpu_restore(struct tcb *t)
{
    __asm__ volatile("fxrstor64 %0" : : "m"(t->arch.fpu));
}

#endif
