/* What the IPC fast path (kernel/core/fastpath.c) needs of the
 * architecture, inline: the message's register moves and the way back to
 * user mode.  thread.c's out-of-line functions of the same names without
 * "fast" (arch.h) are these, for every other path. */
#ifndef ARCH_FASTPATH_H
#define ARCH_FASTPATH_H

#include <keel/cpu.h>
#include <keel/object.h>
#include <keel/sched.h>

/* kernel/arch/x86_64/, on the include path of the whole kernel. */
#include "fpu.h"
#include "ioport.h"
#include "tlb.h"
#include "x86.h"

#define RFLAGS_IF (1ul << 9)
#define RFLAGS_USER 0xcd5ul /* CF PF AF ZF SF DF OF: what user code may set */

/* The six message words of a system call: RDX R10 R8 R9 R12 R13. */
static inline __attribute__((always_inline)) void arch_fast_pass_results(struct tcb *to,
                                                                           const struct tcb *from,
                                                                           long err)
{
    struct trap_frame *f = &to->arch.frame;
    const struct trap_frame *g = &from->arch.frame;

    f->rax = (u64)err;
    f->rdx = g->rdx;
    f->r10 = g->r10;
    f->r8 = g->r8;
    f->r9 = g->r9;
    f->r12 = g->r12;
    f->r13 = g->r13;
}

static inline __attribute__((always_inline)) void
arch_fast_pass_msg(struct tcb *to, const struct tcb *from, u64 badge, u64 label, u64 info)
{
    struct trap_frame *f = &to->arch.frame;

    arch_fast_pass_results(to, from, KEEL_E_OK);
    f->rdi = badge;
    f->rsi = label;
    f->rbx = info;
}

static inline __attribute__((always_inline)) void arch_fast_syscall_to_recv(struct tcb *t, u64 ep,
                                                                              u64 window)
{
    struct trap_frame *f = &t->arch.frame;

    f->rax = KEEL_SYS_RECV;
    f->rdi = ep;
    f->rsi = 0;
    f->rdx = window;
}

static inline __attribute__((always_inline)) bool arch_fast_can_run(const struct tcb *t)
{
    return t->vspace.cap.type == KEEL_OBJ_VSPACE;
}

static inline __attribute__((always_inline)) void arch_fast_fpu_save(struct tcb *t)
{
    __asm__ volatile("fxsave64 %0" : "=m"(t->arch.fpu));
}

/* Into user mode as t, the current thread of c: its saved-register area
 * for the next entry, its I/O ports, its address space and FPU state, then
 * entry.S restores its registers.  The objects lock goes before the
 * expensive privileged work (CR3, FPU state, the return): t stays ours,
 * because another CPU that wants it stopped (thread_stop, which also
 * precedes destroying its TCB or its address space) waits for this CPU's
 * acknowledgement, given only once we are back in the kernel with t's
 * registers saved (the IPI is taken as soon as user mode enables
 * interrupts).  A TLB flush request is claimed before flushing, so one made
 * from now on is served by its IPI after the return rather than cleared
 * unserved.  shared: the caller knows it holds the objects lock shared. */
static inline __attribute__((always_inline, noreturn)) void
arch_fast_enter_user(struct cpu *c, struct tcb *t, bool shared)
{
    u64 cr3 = x86_virt_to_phys((void *)t->vspace.cap.obj);

    c->frame_top = (uptr)(&t->arch.frame + 1);
    c->arch.tss.rsp[0] = c->frame_top;
    ioport_switch(c, t);
    /* Only user-changeable flags survive; interrupts stay on. */
    t->arch.frame.rflags = (t->arch.frame.rflags & RFLAGS_USER) | RFLAGS_IF | 2;
    if (shared) /* known to hold the objects lock shared: kernel_leave's work */
        kernel_leave_shared(c);
    else
        kernel_leave();
    bool flush = READ_ONCE(c->tlb_request) &&
                 __atomic_exchange_n(&c->tlb_request, 0, __ATOMIC_ACQ_REL);
    /* CR3 is remembered rather than read: where kernel code is emulated
     * every privileged instruction is an expensive trip to the host. */
    if (c->arch.cr3 != cr3) {
        write_cr3(cr3);
        c->arch.cr3 = cr3;
    } else if (flush) {
        tlb_flush_local();
    }
    if (c->fpu_owner != t) {
        fpu_restore(t);
        c->fpu_owner = t;
    }
    arch_return_to_user(&t->arch.frame);
}

#endif
