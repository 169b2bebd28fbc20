/* What the capability fast path (kernel/core/capfast.c) needs of the
 * architecture, inline: its results, and the way back to user mode for a
 * thread that never left this CPU (beside the IPC fast path's,
 * arch/fastpath.h). */
#ifndef ARCH_CAPFAST_H
#define ARCH_CAPFAST_H

#include <arch/fastpath.h>

/* A call's error and six result words 0 (arch_tcb_set_results with none). */
static inline __attribute__((always_inline)) void arch_fast_set_error(struct tcb *t, long err)
{
    struct trap_frame *f = &t->arch.frame;

    f->rax = (u64)err;
    f->rdx = f->r10 = f->r8 = f->r9 = f->r12 = f->r13 = 0;
}

/* Back to user mode as t, which entered the kernel on this CPU for the call
 * just served and is still c's current thread: then nothing of what
 * arch_fast_enter_user sets up has changed - this CPU's frame top and TSS
 * stack, I/O bitmap, CR3 and FPU owner are t's since t last entered user
 * mode (a stop served while the entry waited for the objects lock, which
 * leaves the user address space, also takes t off this CPU: the caller
 * found it still current).  What is left: the flags user code may not
 * choose, the objects lock, a TLB flush asked meanwhile, the registers. */
static inline __attribute__((always_inline, noreturn)) void arch_fast_return_same(struct cpu *c,
                                                                                  struct tcb *t)
{
    t->arch.frame.rflags = (t->arch.frame.rflags & RFLAGS_USER) | RFLAGS_IF | 2;
    kernel_leave_shared(c);
    if (READ_ONCE(c->tlb_request) && __atomic_exchange_n(&c->tlb_request, 0, __ATOMIC_ACQ_REL))
        tlb_flush_local();
    arch_return_to_user(&t->arch.frame);
}

#endif
