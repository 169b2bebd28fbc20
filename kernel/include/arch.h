/* The interface between the portable core and the architecture.  The core
 * calls only what is declared here (and the inline helpers of
 * <arch/cpu.h>); everything else under kernel/arch/ is private to it. */
#ifndef KEEL_ARCH_H
#define KEEL_ARCH_H

#include <arch/cpu.h>
#include <keel/types.h>

struct boot_info;
struct cpu;
struct hvm_start_info; /* opaque to the core: the PVH loader's hand-off */

/* The machine as the firmware described it. */
struct arch_platform {
    u32 cpus_in_firmware; /* enabled CPUs listed (all may not be usable) */
    u32 timer_hz;         /* per-CPU periodic timer rate */
};

/* Boot CPU, first thing: console, per-CPU base of cpus[0], descriptor and
 * trap tables; copies the loader's hand-off into *bi. */
void arch_early_init(struct hvm_start_info *si, struct boot_info *bi);
/* Boot CPU: firmware tables (fills cpus[] and cpu_count), interrupt
 * controllers, timer calibration, console receive interrupt; starts this
 * CPU's periodic timer and enables interrupts. */
void arch_platform_init(struct arch_platform *out);
/* Boot CPU: sends the startup sequence to every cpus[i] in CPU_STARTING
 * (their stack_top already set).  Does not wait for them. */
void arch_start_secondaries(void);
/* Wakes a CPU halted in arch_idle(). */
void arch_wake_cpu(struct cpu *c);

/* Monotonic microseconds since an arbitrary origin (after calibration). */
u64 arch_time_us(void);
/* Physical address -> kernel virtual address (the direct map). */
void *arch_phys_to_virt(u64 phys);

/* Writes raw bytes to the console device; callers serialize (console.c). */
void arch_console_write(const char *s, size_t len);

/* Reports the result through the exit device, then halts forever. */
__noreturn void arch_exit(int code);
/* Stops this CPU for good with interrupts disabled. */
__noreturn void arch_halt(void);
/* Deliberately escalates to a triple fault (a test of the VMM). */
__noreturn void arch_triple_fault(void);

#endif
