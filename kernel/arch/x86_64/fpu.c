/* FPU and SSE state of user threads (fpu.h). */
#include <arch.h>
#include <arch/fastpath.h>
#include <keel/string.h>

#include "fpu.h"
#include "x86.h"

#define CR0_MP (1ul << 1)
#define CR0_EM (1ul << 2)
#define CR0_TS (1ul << 3)
#define CR0_NE (1ul << 5)
#define CR4_OSFXSR (1ul << 9)
#define CR4_OSXMMEXCPT (1ul << 10)

static u8 fpu_initial[512] __aligned(16);

void fpu_cpu_init(void)
{
    __asm__ volatile("mov %0, %%cr0" : : "r"((read_cr0() | CR0_MP | CR0_NE) & ~(CR0_EM | CR0_TS)));
    __asm__ volatile("mov %0, %%cr4" : : "r"(read_cr4() | CR4_OSFXSR | CR4_OSXMMEXCPT));
    if (!fpu_initial[0]) {
        /* The state a new thread starts with, written as an fxsave image
         * (no fninit/ldmxcsr: hypervisors that emulate kernel code may not
         * emulate those): x87 control word 0x37f, all exceptions masked,
         * MXCSR 0x1f80, every register empty. */
        fpu_initial[0] = 0x7f;
        fpu_initial[1] = 0x03;
        u32 mxcsr = 0x1f80;
        memcpy(&fpu_initial[24], &mxcsr, 4);
    }
}

void fpu_thread_init(struct tcb *t)
{
    memcpy(t->arch.fpu, fpu_initial, sizeof(fpu_initial));
}

void arch_fpu_save(struct tcb *t)
{
    arch_fast_fpu_save(t);
}
