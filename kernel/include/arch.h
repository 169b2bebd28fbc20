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
/* The virtio-mmio devices the firmware describes (ACPI: LNRO0005 devices of
 * the DSDT, read on the first call, after arch_platform_init): up to max of
 * them in out; returns how many it stored. */
struct arch_fw_device {
    u64 base, size;
    u32 irq;
};
u32 arch_firmware_virtio_devices(struct arch_fw_device *out, u32 max);
/* Boot CPU: sends the startup sequence to every cpus[i] in CPU_STARTING
 * (their stack_top already set).  Does not wait for them. */
void arch_start_secondaries(void);
/* Wakes a CPU halted in arch_idle(). */
void arch_wake_cpu(struct cpu *c);
/* A wait in the kernel that has spun a while (wait.c): halts this CPU until
 * an interrupt that can be served wherever a wait spins - a kick, a
 * cross-CPU request, the timer tick - and returns with interrupts disabled
 * again; device interrupts stay pending until the CPU leaves the kernel or
 * idles (they take the objects lock, which the waiter may hold). */
void arch_wait_halt(void);
/* This CPU's periodic timer fires once every n periods of its normal rate
 * (n = 1: the normal rate), from now. */
void arch_timer_every(u32 n);
/* Ends c's arch_wait_halt (wait.c: kernel_kick_waiters). */
void arch_kick_cpu(struct cpu *c);

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

/* -- threads and address spaces (under the objects lock: sched.h) ------- */
struct tcb;

void arch_zero_object(void *p, u64 len);
u64 arch_virt_to_phys(const void *p);

/* A new thread: user mode, interrupts enabled, clean FPU state. */
void arch_tcb_init(struct tcb *t);
void arch_tcb_set_entry(struct tcb *t, u64 pc, u64 sp, u64 arg);
/* Makes a thread whose system call was not served make it again when it
 * next runs (its registers still hold the call). */
void arch_tcb_restart_syscall(struct tcb *t);
/* Rewrites a reply_recv whose reply is done into the recv that is left, so
 * a restart (above) receives without replying twice. */
void arch_tcb_syscall_to_recv(struct tcb *t, u64 ep, u64 window);
void arch_tcb_get_regs(const struct tcb *t, u64 *pc, u64 *sp, u64 *ret);
/* The result of a system call, seen by the thread when it next runs. */
void arch_tcb_set_results(struct tcb *t, long err, const u64 *res);
/* A received message: error, badge, label, six words and the info word. */
void arch_tcb_set_recv(struct tcb *t, long err, u64 badge, u64 label, const u64 *w, u64 info);
/* The IPC fast path (fastpath.c): from's six message words, as a received
 * message (KEEL_E_OK, badge, label, info) or as results (err), straight
 * from register file to register file. */
void arch_tcb_pass_msg(struct tcb *to, const struct tcb *from, u64 badge, u64 label, u64 info);
void arch_tcb_pass_results(struct tcb *to, const struct tcb *from, long err);
void arch_fpu_save(struct tcb *t);
/* Whether t has what it needs to run (an address space). */
bool arch_thread_can_run(struct tcb *t);
/* Switches to t's address space and registers and leaves the kernel,
 * releasing the objects lock on the way. */
__noreturn void arch_enter_user(struct tcb *t);
/* Idle until an interrupt (called without the objects lock). */
void arch_idle_wait(void);
/* This CPU stops using the address space of the thread it ran: the kernel's
 * own tables are loaded, so that address space can be destroyed and its
 * memory reused while this CPU runs kernel code. */
void arch_leave_user_space(void);
void arch_flush_user_tlb(void);
void arch_send_tlb_ipi(struct cpu *c);

/* Device interrupt lines (GSIs) handed to user drivers. */
bool arch_irq_available(u32 gsi);
void arch_irq_enable_line(u32 gsi, bool on);

/* Paging: a vspace's top-level table and the levels below it.  Levels are
 * counted from the leaf: 0 = a frame in a page table, 1 = a page table in a
 * page directory, 2 = a page directory in a PDPT, 3 = a PDPT in the top
 * level.  Return KEEL_E_* codes. */
#define PAGING_LEVELS 4
#define MAP_UNCACHED 0x100 /* with the rights: device memory */
void arch_vspace_init(void *root);
long arch_map(void *root, u32 level, u64 vaddr, u64 phys, u32 rights);
/* Clears the entry for vaddr at level if it still points to phys. */
bool arch_unmap(void *root, u32 level, u64 vaddr, u64 phys);
bool arch_lookup(void *root, u64 vaddr, u64 *phys, u32 *flags);
/* Bytes of address space one entry of a table at this level covers. */
u64 arch_level_size(u32 level);

#endif
