/* User mode on x86-64: syscall/sysret set-up, thread register state, FPU
 * state, and the entries from user mode into the portable kernel. */
#include <arch.h>
#include <keel/console.h>
#include <keel/cpu.h>
#include <keel/printk.h>
#include <keel/sched.h>
#include <keel/string.h>
#include <keel/syscall.h>

#include "trap.h"
#include "x86.h"

#define RFLAGS_IF (1ul << 9)
#define RFLAGS_USER 0xcd5ul /* CF PF AF ZF SF DF OF: what user code may set */
#define FMASK_BITS 0x47700ul     /* TF DF IF IOPL NT AC cleared on entry */
#define CR0_MP (1ul << 1)
#define CR0_EM (1ul << 2)
#define CR0_TS (1ul << 3)
#define CR0_NE (1ul << 5)
#define CR4_OSFXSR (1ul << 9)
#define CR4_OSXMMEXCPT (1ul << 10)

extern char syscall_entry[];
extern char boot_pml4[];
__noreturn void arch_return_to_user(struct trap_frame *f);
__noreturn void syscall_from_user(struct trap_frame *f);
__noreturn void trap_from_user(struct trap_frame *f);

static u8 fpu_initial[512] __aligned(16);

/* Per CPU, after its GDT is loaded. */
void x86_user_init(void)
{
    __asm__ volatile("mov %0, %%cr0" : : "r"((read_cr0() | CR0_MP | CR0_NE) & ~(CR0_EM | CR0_TS)));
    __asm__ volatile("mov %0, %%cr4" : : "r"(read_cr4() | CR4_OSFXSR | CR4_OSXMMEXCPT));
    wrmsr(MSR_EFER, rdmsr(MSR_EFER) | EFER_SCE);
    wrmsr(MSR_STAR, ((u64)GDT_UCODE32 << 48) | ((u64)GDT_KCODE << 32));
    wrmsr(MSR_LSTAR, (u64)syscall_entry);
    wrmsr(MSR_FMASK, FMASK_BITS);
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

void arch_zero_object(void *p, u64 len)
{
    u64 n = len / 8;

    __asm__ volatile("rep stosq" : "+D"(p), "+c"(n) : "a"(0ul) : "memory");
}

u64 arch_virt_to_phys(const void *p)
{
    u64 v = (u64)p;

    return v >= KERNEL_VMA ? v - KERNEL_VMA : v - DIRECT_MAP_BASE;
}

void arch_tcb_init(struct tcb *t)
{
    struct trap_frame *f = &t->arch.frame;

    memset(f, 0, sizeof(*f));
    f->cs = USER_CS;
    f->ss = USER_DS;
    f->rflags = RFLAGS_IF | 2;
    memcpy(t->arch.fpu, fpu_initial, sizeof(fpu_initial));
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

void arch_fpu_save(struct tcb *t)
{
    __asm__ volatile("fxsave64 %0" : "=m"(t->arch.fpu));
}

static void fpu_restore(struct tcb *t)
{
    __asm__ volatile("fxrstor64 %0" : : "m"(t->arch.fpu));
}

bool arch_thread_can_run(struct tcb *t)
{
    return t->vspace.cap.type == KEEL_OBJ_VSPACE;
}

void arch_flush_user_tlb(void)
{
    write_cr3(read_cr3()); /* every user mapping is non-global */
}

void arch_send_tlb_ipi(struct cpu *c)
{
    lapic_send_ipi(c->hw_id, VEC_IPI_TLB);
}

static void io_range_set(u8 *map, u32 first, u32 last, bool open)
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

/* Opens t's ports in this CPU's bitmap (closing the previous thread's). */
static void io_ports_for(struct cpu *c, struct tcb *t)
{
    struct arch_cpu *a = &c->arch;
    u32 first = 1, last = 0;

    if (t->io_ports.cap.type == KEEL_OBJ_IO_PORT) {
        first = (u32)t->io_ports.cap.a;
        last = (u32)t->io_ports.cap.b;
    }
    if (first == a->io_first && last == a->io_last)
        return;
    if (a->io_first <= a->io_last)
        io_range_set(a->iomap, a->io_first, a->io_last, false);
    if (first <= last)
        io_range_set(a->iomap, first, last, true);
    a->io_first = first;
    a->io_last = last;
}

void arch_enter_user(struct tcb *t)
{
    struct cpu *c = this_cpu();
    u64 cr3 = arch_virt_to_phys((void *)t->vspace.cap.obj);

    c->frame_top = (uptr)(&t->arch.frame + 1);
    c->arch.tss.rsp[0] = c->frame_top;
    io_ports_for(c, t);
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
    bool flush = __atomic_exchange_n(&c->tlb_request, 0, __ATOMIC_ACQ_REL);
    /* CR3 is remembered rather than read: where kernel code is emulated
     * every privileged instruction is an expensive trip to the host. */
    if (c->arch.cr3 != cr3) {
        write_cr3(cr3);
        c->arch.cr3 = cr3;
    } else if (flush) {
        arch_flush_user_tlb();
    }
    if (c->fpu_owner != t) {
        fpu_restore(t);
        c->fpu_owner = t;
    }
    arch_return_to_user(&t->arch.frame);
}

void arch_leave_user_space(void)
{
    u64 kernel_cr3 = arch_virt_to_phys(boot_pml4);
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

void syscall_from_user(struct trap_frame *f)
{
    struct cpu *c = this_cpu();
    u64 args[KEEL_MSG_WORDS] = { f->rdx, f->r10, f->r8, f->r9, f->r12, f->r13 };

    c->call_pending = 1; /* until served (sched.c: cpu_serve_requests) */
    if (syscall_needs_exclusive(f->rax, f->rsi))
        kernel_enter_exclusive();
    else
        kernel_enter();
    if (c->current)
        syscall_handle(c->current, f->rax, f->rdi, f->rsi, args);
    sched_exit_kernel();
}

void trap_from_user(struct trap_frame *f)
{
    struct cpu *c = this_cpu();
    u64 v = f->vector;

    if (v == VEC_IPI_TLB) {
        /* Served without the objects lock: its sender holds it.  Claimed
         * before the flush (see cpu_serve_requests). */
        if (__atomic_exchange_n(&c->tlb_request, 0, __ATOMIC_ACQ_REL))
            arch_flush_user_tlb();
        lapic_eoi();
        arch_return_to_user(f);
    }
    if (v == 14 && f->rip == (u64)syscall_entry) {
        /* A syscall instruction that reached its entry point still in user
         * mode: some hypervisors (kvm_pvm, for guests that are not
         * PVM-aware) switch RIP to LSTAR but not the privilege level, and
         * the fetch faults on the kernel page.  RCX and R11 hold what
         * syscall saved, so the call is served all the same and returns
         * by iret. */
        f->rip = f->rcx;
        f->rflags = f->r11;
        if (f->rax == KEEL_SYS_FLOOR) {
            f->rax = 0;
            arch_return_to_user(f);
        }
        syscall_from_user(f);
    }
    if (v == VEC_LAPIC_TIMER) {
        /* Most ticks change nothing: they are served without the lock. */
        cpu_timer_tick();
        bool enter = sched_timer_tick();
        lapic_eoi();
        if (!enter)
            arch_return_to_user(f);
        kernel_enter();
        sched_timer_balance();
        sched_exit_kernel();
    }
    if (v == VEC_IPI_WAKEUP) {
        kernel_enter();
        c->need_resched = 1;
        cpu_serve_requests();
        lapic_eoi();
        sched_exit_kernel();
    }
    /* Faults and device interrupts are rare: they run alone. */
    kernel_enter_exclusive();
    if (v < 32) {
        if (v != 2 && c->current)
            thread_fault(c->current, v, v == 14 ? read_cr2() : 0, f->error, f->rip);
    } else if (v == VEC_IRQ_BASE + 4) {
        serial_irq();
        console_input_arrived();
        lapic_eoi();
    } else if (v >= VEC_IRQ_BASE && v < VEC_IRQ_BASE + IRQ_LINES) {
        arch_irq_enable_line((u32)(v - VEC_IRQ_BASE), false); /* until the driver acks */
        irq_deliver((u32)(v - VEC_IRQ_BASE));
        lapic_eoi();
    } else if (v != VEC_SPURIOUS && (v < 0x70 || v >= 0x80)) {
        lapic_eoi();
    }
    sched_exit_kernel();
}
