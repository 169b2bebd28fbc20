/* Entries into the kernel, the C side of asm/x86_64/entry.S: the syscall
 * instruction, and interrupts and exceptions from user mode
 * (trap_from_user) and from kernel mode (trap_dispatch).  From user mode
 * each takes the objects lock (sched.h) and hands over to the portable
 * kernel; every way out is sched_exit_kernel() or arch_return_to_user(),
 * and a thread's way into user mode is arch_enter_user (address space, I/O
 * bitmap, FPU state, then arch_return_to_user).
 * An exception in the kernel is a bug: everything known is dumped and the
 * failure reported through the exit device. */
#include <arch.h>
#include <arch/fastpath.h>
#include <keel/console.h>
#include <keel/cpu.h>
#include <keel/exit.h>
#include <keel/printk.h>
#include <keel/sched.h>
#include <keel/syscall.h>

#include "fpu.h"
#include "ioport.h"
#include "tlb.h"
#include "x86.h"

_Static_assert(KEEL_LABEL_USER == 0x10000, "entry.S's ENTRY_LABEL_USER");
_Static_assert(KEEL_SYS_INVOKE == 0, "entry.S tests KEEL_SYS_INVOKE as zero");

#define FMASK_BITS 0x47700ul /* TF DF IF IOPL NT AC cleared on entry */
#define RFLAGS_TF 0x100ul

extern char syscall_entry[];
__noreturn void syscall_from_user(struct trap_frame *f);
__noreturn void trap_from_user(struct trap_frame *f);

/* The console's receive interrupt, from user or kernel mode, without the
 * objects lock: what the UART holds goes up to the core in one call. */
static void console_irq(void)
{
    char buf[64];

    console_input(buf, serial_read(buf, sizeof(buf)));
    lapic_eoi();
}

/* Per CPU, after its GDT is loaded: the syscall instruction's target. */
void entry_cpu_init(void)
{
    wrmsr(MSR_EFER, rdmsr(MSR_EFER) | EFER_SCE);
    wrmsr(MSR_STAR, ((u64)GDT_UCODE32 << 48) | ((u64)GDT_KCODE << 32));
    wrmsr(MSR_LSTAR, (u64)syscall_entry);
    wrmsr(MSR_FMASK, FMASK_BITS);
}

/* -- from user mode ---------------------------------------------------------- */

/* A system call the fast paths did not take, with the objects lock held
 * (t is c's current thread). */
void syscall_general(struct trap_frame *f, struct tcb *t)
{
    /* the six words, then reply_recv's endpoint and window */
    u64 args[KEEL_MSG_WORDS + 2] = { f->rdx, f->r10, f->r8, f->r9, f->r12, f->r13, f->r14, f->r15 };

    syscall_handle(t, f->rax, f->rdi, f->rsi, args);
    sched_exit_kernel();
}

/* A system call the fast paths (fastpath.c for IPC, capfast.c for
 * cnode_copy and cnode_delete) do not take: each entry (entry.S's
 * syscall_entry, trap_from_user) sends those there first; they enter the
 * kernel themselves and go on to syscall_general when they decline. */
void syscall_from_user(struct trap_frame *f)
{
    struct cpu *c = this_cpu();
    u32 reads = syscall_entry_reads(f->rax, f->rsi);

    if (reads == READS_ANY) {
        c->call_pending = 1; /* until served (wait.c: cpu_serve_requests) */
        kernel_enter_exclusive();
        c->call_pending = 0;
    } else {
        kernel_enter_syscall(reads); /* the same, inside its wait for a writer */
    }
    /* A stop served while waiting took the thread away (its call is made
     * again when it next runs). */
    struct tcb *t = c->current;
    if (!t)
        sched_exit_kernel();
    syscall_general(f, t);
}

void trap_from_user(struct trap_frame *f)
{
    struct cpu *c = this_cpu();
    u64 v = f->vector;

    if (v == VEC_IPI_TLB) {
        /* Served without the objects lock: its sender holds it.  Claimed
         * before the flush (see cpu_serve_requests). */
        if (__atomic_exchange_n(&c->tlb_request, 0, __ATOMIC_ACQ_REL))
            tlb_flush_local();
        kernel_wake_waiters(); /* the shooter may have halted (wait.c) */
        lapic_eoi();
        arch_return_to_user(f);
    }
    if (v == VEC_IPI_KICK) {
        /* A kick meant for a wait this CPU has left (wait.c). */
        lapic_eoi();
        arch_return_to_user(f);
    }
    if (v == 14 && f->rip == (u64)syscall_entry && f->rcx < KEEL_USER_TOP) {
        /* A syscall instruction that reached its entry point still in user
         * mode: some hypervisors (kvm_pvm, for guests that are not
         * PVM-aware) switch RIP to LSTAR but not the privilege level, and
         * the fetch faults on the kernel page.  RCX and R11 hold what
         * syscall saved, so the call is served all the same and returns
         * by iret.  User code may also jump here with RCX and R11 of its
         * choosing: the return address must be a user one (else this is
         * the page fault it looks like), and RFLAGS is made safe before
         * any return (no IOPL, interrupts on). */
        u64 nr = f->rax;
        f->rip = f->rcx;
        f->rflags = RFLAGS_SAFE(f->r11);
        if (nr == KEEL_SYS_FLOOR) {
            f->rax = 0;
            arch_return_to_user(f);
        }
        if (nr == KEEL_SYS_NULL && !c->need_resched) {
            /* the null call's fast path, as in syscall_entry */
            f->rax = f->rdx = f->r10 = f->r8 = f->r9 = f->r12 = f->r13 = 0;
            arch_return_to_user(f);
        }
        if (nr == KEEL_SYS_INVOKE && f->rsi >= KEEL_LABEL_USER)
            fastpath_call(f->rdi, f->rsi);
        if (nr == KEEL_SYS_REPLY_RECV)
            fastpath_reply_recv(f->rdi, f->rsi);
        if (nr == KEEL_SYS_INVOKE &&
            (f->rsi == KEEL_CALL_CNODE_COPY || f->rsi == KEEL_CALL_CNODE_DELETE))
            fastpath_cnode(f->rdi, f->rsi, f->rdx, f->r10, f->r8, f->r9);
        syscall_from_user(f);
    }
    if (v == VEC_LAPIC_TIMER) {
        /* Most ticks change nothing: they are served without the lock. */
        cpu_timer_tick();
        sched_tick_rate(c);
        bool enter = sched_timer_tick();
        lapic_eoi();
        if (!enter)
            arch_return_to_user(f);
        kernel_enter();
        sched_timer_balance();
        sched_exit_kernel();
    }
    if (v == VEC_IPI_WAKEUP) {
        /* Acknowledged first: kernel_enter may wait, and a wait that halts
         * (wait.c) must take the IPIs, which a vector in service of the
         * same class would hold back. */
        lapic_eoi();
        sched_tick_rate(c); /* a thread may have been queued here (sched.c) */
        kernel_enter();
        c->need_resched = 1;
        cpu_serve_requests();
        sched_exit_kernel();
    }
    if (v == VEC_IRQ_BASE + 4) {
        console_irq(); /* may wake a listener: then the exit path looks */
        kernel_enter();
        sched_exit_kernel();
    }
    /* Faults and device interrupts are rare: they run alone. */
    kernel_enter_exclusive();
    if (v < 32) {
        if (v != 2 && c->current)
            thread_fault(c->current, v, v == 14 ? read_cr2() : 0, f->error, f->rip);
    } else if (v >= VEC_IRQ_BASE && v < VEC_IRQ_BASE + IRQ_LINES) {
        arch_irq_enable_line((u32)(v - VEC_IRQ_BASE), false); /* until the driver acks */
        irq_deliver((u32)(v - VEC_IRQ_BASE));
        lapic_eoi();
    } else if (v != VEC_SPURIOUS && (v < 0x70 || v >= 0x80)) {
        lapic_eoi();
    }
    sched_exit_kernel();
}

/* -- from kernel mode ---------------------------------------------------------- */

static const char *const exception_names[32] = {
    [0] = "#DE", [1] = "#DB",  [2] = "NMI",  [3] = "#BP",  [4] = "#OF",  [5] = "#BR",
    [6] = "#UD", [7] = "#NM",  [8] = "#DF",  [9] = "CSO",  [10] = "#TS", [11] = "#NP",
    [12] = "#SS", [13] = "#GP", [14] = "#PF", [16] = "#MF", [17] = "#AC", [18] = "#MC",
    [19] = "#XM", [20] = "#VE", [21] = "#CP", [28] = "#HV", [29] = "#VC", [30] = "#SX",
};

static u32 dumping;

static __noreturn void exception(struct trap_frame *f)
{
    const char *name = exception_names[f->vector];
    u32 cpu = this_cpu() ? this_cpu()->index : 0;

    console_panic_take();
    if (__atomic_fetch_add(&dumping, 1, __ATOMIC_ACQ_REL)) {
        printk("keel: exception %lu on cpu %u while dumping another\n", f->vector, cpu);
        arch_exit(KEEL_EXIT_FAIL);
    }
    printk("keel: exception %s (%lu) on cpu %u, error 0x%lx\n"
           "  rip=%016lx cs=%04lx rflags=%016lx\n"
           "  rsp=%016lx ss=%04lx cr2=%016lx cr3=%016lx\n"
           "  rax=%016lx rbx=%016lx rcx=%016lx rdx=%016lx\n"
           "  rsi=%016lx rdi=%016lx rbp=%016lx r8=%016lx\n"
           "  r9=%016lx r10=%016lx r11=%016lx r12=%016lx\n"
           "  r13=%016lx r14=%016lx r15=%016lx\n",
           name ? name : "reserved", f->vector, cpu, f->error, f->rip, f->cs, f->rflags, f->rsp,
           f->ss, read_cr2(), read_cr3(), f->rax, f->rbx, f->rcx, f->rdx, f->rsi, f->rdi, f->rbp,
           f->r8, f->r9, f->r10, f->r11, f->r12, f->r13, f->r14, f->r15);
    printk("keel: stack:");
    const u64 *sp = (const u64 *)f->rsp;
    for (int i = 0; i < 8 && ((u64)sp & 0xfff) + 8 * i < 4096; i++)
        printk(" %016lx", sp[i]);
    printk("\n");
    arch_exit(KEEL_EXIT_FAIL);
}

void trap_dispatch(struct trap_frame *f)
{
    u64 v = f->vector;

    if (v == 1 && (f->rflags & RFLAGS_TF)) {
        /* A single-step trap the kernel never asks for: a debugger (the
         * VMM's gdb stub) stepped this CPU when an interrupt came, and the
         * interrupt's frame kept the trap flag the debugger had set.  The
         * instruction completed: clear the flag and go on. */
        f->rflags &= ~RFLAGS_TF;
    } else if (v < 32) {
        exception(f);
    } else if (v == VEC_LAPIC_TIMER) {
        cpu_timer_tick();
        sched_tick_rate(this_cpu());
        lapic_eoi();
    } else if (v == VEC_IRQ_BASE + 4) {
        console_irq();
    } else if (v >= VEC_IRQ_BASE && v < VEC_IRQ_BASE + IRQ_LINES) {
        /* A driver's interrupt while this CPU idles (the only time kernel
         * code runs with interrupts on): take the lock to deliver it. */
        arch_irq_enable_line((u32)(v - VEC_IRQ_BASE), false);
        kernel_enter_exclusive();
        irq_deliver((u32)(v - VEC_IRQ_BASE));
        kernel_leave();
        lapic_eoi();
    } else if (v == VEC_IPI_TLB || v == VEC_IPI_WAKEUP || v == VEC_IPI_KICK) {
        /* An idle CPU, or one halted in a wait (wait.c), runs no user code:
         * a flush request is just acked, a stop request served. */
        if (v == VEC_IPI_WAKEUP)
            sched_tick_rate(this_cpu());
        cpu_serve_requests();
        lapic_eoi();
    } else if (v == VEC_SPURIOUS || (v >= 0x70 && v < 0x80)) {
        /* spurious LAPIC or legacy PIC interrupt: no EOI */
    } else {
        lapic_eoi();
    }
}

/* -- the way back: into user mode, or idle ----------------------------------- */

void arch_enter_user(struct tcb *t)
{
    arch_fast_enter_user(this_cpu(), t, false, t); /* arch/fastpath.h */
}

void arch_idle_wait(void)
{
    struct cpu *c = this_cpu();

    arch_leave_user_space();
    c->fpu_owner = NULL; /* nothing of a thread may linger for reuse */
    arch_idle();
    arch_irq_disable();
}
