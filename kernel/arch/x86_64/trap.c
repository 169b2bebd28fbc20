/* Interrupt and exception dispatch.  An exception in the kernel is a bug:
 * dump everything we know and report failure through the exit device. */
#include <arch.h>
#include <keel/console.h>
#include <keel/cpu.h>
#include <keel/exit.h>
#include <keel/printk.h>
#include <keel/object.h>
#include <keel/sched.h>

#include "trap.h"
#include "x86.h"

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

    if (v < 32) {
        exception(f);
    } else if (v == VEC_LAPIC_TIMER) {
        cpu_timer_tick();
        lapic_eoi();
    } else if (v == VEC_IRQ_BASE + 4) {
        serial_irq();
        if (console_line_ready()) {
            kernel_enter_exclusive(); /* a user-space listener may be told */
            console_input_arrived();
            kernel_leave();
        }
        lapic_eoi();
    } else if (v >= VEC_IRQ_BASE && v < VEC_IRQ_BASE + IRQ_LINES) {
        /* A driver's interrupt while this CPU idles (the only time kernel
         * code runs with interrupts on): take the lock to deliver it. */
        arch_irq_enable_line((u32)(v - VEC_IRQ_BASE), false);
        kernel_enter_exclusive();
        irq_deliver((u32)(v - VEC_IRQ_BASE));
        kernel_leave();
        lapic_eoi();
    } else if (v == VEC_IPI_TLB || v == VEC_IPI_WAKEUP) {
        /* An idle CPU runs no user code: a flush request is just acked. */
        cpu_serve_requests();
        lapic_eoi();
    } else if (v == VEC_SPURIOUS || (v >= 0x70 && v < 0x80)) {
        /* spurious LAPIC or legacy PIC interrupt: no EOI */
    } else {
        lapic_eoi();
    }
}
