/* A user thread's context on x86-64: its registers (the trap frame in its
 * TCB), how kernel calls return their results in them, and the switch into
 * user mode (address space, I/O bitmap, FPU state, then entry.S's
 * arch_return_to_user). */
#include <arch.h>
#include <keel/cpu.h>
#include <keel/sched.h>
#include <keel/string.h>

#include "fpu.h"
#include "ioport.h"
#include "tlb.h"
#include "x86.h"

#define RFLAGS_IF (1ul << 9)
#define RFLAGS_USER 0xcd5ul /* CF PF AF ZF SF DF OF: what user code may set */

extern char boot_pml4[];

void arch_tcb_init(struct tcb *t)
{
    struct trap_frame *f = &t->arch.frame;

    memset(f, 0, sizeof(*f));
    f->cs = USER_CS;
    f->ss = USER_DS;
    f->rflags = RFLAGS_IF | 2;
    fpu_thread_init(t);
}

void arch_tcb_set_entry(struct tcb *t, u64 pc, u64 sp, u64 arg)
{
    struct trap_frame *f = &t->arch.frame;

    f->rip = pc;
    f->rsp = sp;
    f->rdi = arg;
    f->vector = 0; /* leave by iret: every register as written */
}

void arch_tcb_restart_syscall(struct tcb *t)
{
    t->arch.frame.rip -= 2; /* the syscall instruction, 0f 05 */
}

void arch_tcb_syscall_to_recv(struct tcb *t, u64 ep, u64 window)
{
    struct trap_frame *f = &t->arch.frame;

    f->rax = KEEL_SYS_RECV;
    f->rdi = ep;
    f->rsi = 0;
    f->rdx = window;
}

void arch_tcb_get_regs(const struct tcb *t, u64 *pc, u64 *sp, u64 *ret)
{
    *pc = t->arch.frame.rip;
    *sp = t->arch.frame.rsp;
    *ret = t->arch.frame.rax;
}

void arch_tcb_set_results(struct tcb *t, long err, const u64 *res)
{
    struct trap_frame *f = &t->arch.frame;

    f->rax = (u64)err;
    f->rdx = res[0];
    f->r10 = res[1];
    f->r8 = res[2];
    f->r9 = res[3];
    f->r12 = res[4];
    f->r13 = res[5];
}

void arch_tcb_set_recv(struct tcb *t, long err, u64 badge, u64 label, const u64 *w, u64 info)
{
    struct trap_frame *f = &t->arch.frame;

    arch_tcb_set_results(t, err, w);
    f->rdi = badge;
    f->rsi = label;
    f->rbx = info;
}

void arch_tcb_pass_results(struct tcb *to, const struct tcb *from, long err)
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

void arch_tcb_pass_msg(struct tcb *to, const struct tcb *from, u64 badge, u64 label, u64 info)
{
    struct trap_frame *f = &to->arch.frame;

    arch_tcb_pass_results(to, from, KEEL_E_OK);
    f->rdi = badge;
    f->rsi = label;
    f->rbx = info;
}

bool arch_thread_can_run(struct tcb *t)
{
    return t->vspace.cap.type == KEEL_OBJ_VSPACE;
}

void arch_enter_user(struct tcb *t)
{
    struct cpu *c = this_cpu();
    u64 cr3 = x86_virt_to_phys((void *)t->vspace.cap.obj);

    c->frame_top = (uptr)(&t->arch.frame + 1);
    c->arch.tss.rsp[0] = c->frame_top;
    ioport_switch(c, t);
    /* Only user-changeable flags survive; interrupts stay on. */
    t->arch.frame.rflags = (t->arch.frame.rflags & RFLAGS_USER) | RFLAGS_IF | 2;
    /* The objects lock goes before the expensive privileged work (CR3, FPU
     * state, the return): t stays ours, because another CPU that wants it
     * stopped (thread_stop, which also precedes destroying its TCB or its
     * address space) waits for this CPU's acknowledgement, given only once
     * we are back in the kernel with t's registers saved (the IPI is taken
     * as soon as user mode enables interrupts).  A TLB flush request is
     * claimed before flushing, so one made from now on is served by its IPI
     * after the return rather than cleared unserved. */
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

void arch_leave_user_space(void)
{
    u64 kernel_cr3 = x86_virt_to_phys(boot_pml4);
    struct cpu *c = this_cpu();

    if (c->arch.cr3 != kernel_cr3) {
        write_cr3(kernel_cr3);
        c->arch.cr3 = kernel_cr3;
    }
}

void arch_idle_wait(void)
{
    struct cpu *c = this_cpu();

    arch_leave_user_space();
    c->fpu_owner = NULL; /* nothing of a thread may linger for reuse */
    arch_idle();
    arch_irq_disable();
}
