/* A user thread's context on x86-64: its registers (the trap frame in its
 * TCB) and how kernel calls return their results in them.  The switch into
 * user mode is entry.c's (arch_enter_user). */
#include <arch.h>
#include <arch/fastpath.h>
#include <keel/cpu.h>
#include <keel/sched.h>
#include <keel/string.h>

#include "fpu.h"
#include "x86.h"

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
    arch_fast_syscall_to_recv(t, ep, window);
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
    arch_fast_pass_results(to, from, err, true);
}

void arch_tcb_pass_msg(struct tcb *to, const struct tcb *from, u64 badge, u64 label, u64 info)
{
    arch_fast_pass_msg(to, from, badge, label, info, true);
}

bool arch_thread_can_run(struct tcb *t)
{
    return arch_fast_can_run(t);
}
