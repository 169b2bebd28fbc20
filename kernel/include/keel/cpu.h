/* Per-CPU state.  Every CPU owns one struct cpu, reached only through
 * this_cpu() (the architecture keeps a pointer to it in a per-CPU base
 * register), and other CPUs look at a remote one only through the fields
 * documented as shared below. */
#ifndef KEEL_CPU_H
#define KEEL_CPU_H

/* Offsets the assembly entry code relies on; checked by static asserts. */
#define CPU_OFFSET_SELF 0
#define CPU_OFFSET_STACK_TOP 8
#define CPU_OFFSET_FRAME_TOP 16
#define CPU_OFFSET_SCRATCH 24
#define CPU_OFFSET_NEED_RESCHED 80
#define MAX_CPUS 64

#ifndef __ASSEMBLY__
#include <arch/cpu.h>
#include <keel/types.h>

enum cpu_state {
    CPU_ABSENT = 0, /* slot unused */
    CPU_STARTING,   /* the BSP has sent the startup IPIs */
    CPU_BOOTING,    /* the CPU itself claimed its slot and is announcing */
    CPU_ONLINE,     /* announced on the console, idling or working */
    CPU_FAILED,     /* never arrived before the boot timeout */
};

struct tcb;
struct slot;

/* cpu.reads_n (grace.c: the slots a call reads): up to READS_MAX slots
 * listed in cpu.reads, or one of two values meaning "any slot": this hold
 * of the objects lock lists nothing (yet), or it read more or other than
 * it lists. */
#define READS_MAX 8
#define READS_FRESH 0xfffffffeu /* from kernel_enter_shared until a listing call starts */
#define READS_ANY 0xffffffffu

struct cpu {
    struct cpu *self;  /* must be first: this_cpu() loads it from the base */
    uptr stack_top;    /* this CPU's kernel stack; every entry from user mode
                        * starts on it afresh */
    uptr frame_top;    /* end of the current thread's saved user registers:
                        * where the entry code stores them */
    uptr scratch;      /* the syscall entry parks the user stack pointer here */
    u32 index;         /* logical index: BSP 0, then firmware (MADT) order */
    u32 hw_id;         /* the interrupt controller's id for this CPU */
    /* Shared: written with atomics by this CPU and by the BSP during boot
     * (STARTING -> BOOTING by the CPU, STARTING -> FAILED by the BSP). */
    u32 state;
    u32 locks_held; /* debug builds: lock classes this CPU holds (wait.c) */
    u32 kmode;      /* enum kernel_mode: how this CPU holds the objects lock */
    volatile u64 ticks; /* timer periods elapsed (sched.h: SCHED_SLOW_TICKS); this CPU's */
    /* Scheduling: written by this CPU (and current/fpu_owner by an
     * exclusive holder stopping its thread), read lock-free by others. */
    struct tcb *current;   /* thread in user mode on this CPU, or NULL */
    struct tcb *fpu_owner; /* thread whose FPU state is in the registers */
    u32 need_resched;
    volatile u32 idle;      /* halted in the idle loop (read without the lock) */
    volatile u32 in_kernel; /* not running user code (read without the lock) */
    u32 call_pending;       /* current's system call waits for the objects lock */
    u32 tick_slow;          /* its timer ticks SCHED_SLOW_TICKS times slower (sched.c) */
    u32 tick_may_slow;      /* it schedules threads: the slow rate may be used */
    u32 balance_tick;       /* the last tick ended a balancing period */
    u64 timer_irqs;         /* timer interrupts taken */
    volatile u32 reading;   /* holds the objects lock shared (objlock.c) */
    volatile u64 epoch;     /* grace_epoch when it last took it shared (grace.c) */
    volatile u32 reads_n;   /* how many of reads[] its current call read, or READS_* */
    struct slot *volatile reads[READS_MAX]; /* grace.c: published before they are read */
    struct slot *grace_slot; /* the slot a fill found in its grace period (kernel_regrace) */
    volatile u32 grace_wait; /* kernel_regrace waits for CPU index + 1 (0: not); watchdog */
    u32 region_pending;      /* it has a pending region revoke (grace.c) */
    /* Requests from other CPUs, set and polled with atomics. */
    volatile u32 tlb_request;
    volatile u32 stop_request;
    volatile u32 stop_ack;
    struct arch_cpu arch;
} __aligned(64);

_Static_assert(offsetof(struct cpu, self) == CPU_OFFSET_SELF, "cpu.self");
_Static_assert(offsetof(struct cpu, stack_top) == CPU_OFFSET_STACK_TOP, "cpu.stack_top");
_Static_assert(offsetof(struct cpu, frame_top) == CPU_OFFSET_FRAME_TOP, "cpu.frame_top");
_Static_assert(offsetof(struct cpu, scratch) == CPU_OFFSET_SCRATCH, "cpu.scratch");
_Static_assert(offsetof(struct cpu, need_resched) == CPU_OFFSET_NEED_RESCHED, "cpu.need_resched");

/* Slots 0..cpu_count-1 are filled by the architecture from firmware tables
 * before the secondary CPUs are started and never change afterwards. */
extern struct cpu cpus[MAX_CPUS];
extern u32 cpu_count;

static inline struct cpu *this_cpu(void)
{
    return (struct cpu *)arch_cpu_self();
}

/* Called by the timer interrupt on the CPU that took it. */
void cpu_timer_tick(void);
/* keel.tickstats: at power-off, every CPU's timer interrupts and the
 * periods they stood for (sched.h: SCHED_SLOW_TICKS), for tests. */
extern bool cpu_tick_stats;
void cpu_tick_stats_print(void);

/* Number of CPUs whose own timer has ticked at least TIMER_TEST_TICKS. */
#define TIMER_TEST_TICKS 10
u32 cpus_timer_ok(void);

/* The portable half of secondary bring-up: called on the new CPU once its
 * architectural state (descriptor tables, interrupt controller, timer) is
 * set up, with interrupts disabled.  Never returns. */
__noreturn void cpu_secondary_main(void);
/* The boot CPU, once the root task exists: every CPU enters the scheduler. */
__noreturn void sched_start_all(void);
#endif

#endif
