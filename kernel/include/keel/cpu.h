/* Per-CPU state.  Every CPU owns one struct cpu, reached only through
 * this_cpu() (the architecture keeps a pointer to it in a per-CPU base
 * register), and other CPUs look at a remote one only through the fields
 * documented as shared below. */
#ifndef KEEL_CPU_H
#define KEEL_CPU_H

/* Offsets the assembly entry code relies on; checked by static asserts. */
#define CPU_OFFSET_SELF 0
#define CPU_OFFSET_STACK_TOP 8
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

struct cpu {
    struct cpu *self;  /* must be first: this_cpu() loads it from the base */
    uptr stack_top;    /* initial kernel stack; the AP entry switches to it */
    u32 index;         /* logical index: BSP 0, then firmware (MADT) order */
    u32 hw_id;         /* the interrupt controller's id for this CPU */
    /* Shared: written with atomics by this CPU and by the BSP during boot
     * (STARTING -> BOOTING by the CPU, STARTING -> FAILED by the BSP). */
    u32 state;
    u32 pad;
    volatile u64 ticks; /* timer interrupts taken; written only by this CPU */
    struct arch_cpu arch;
} __aligned(64);

_Static_assert(offsetof(struct cpu, self) == CPU_OFFSET_SELF, "cpu.self");
_Static_assert(offsetof(struct cpu, stack_top) == CPU_OFFSET_STACK_TOP, "cpu.stack_top");

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
/* Number of CPUs whose own timer has ticked at least TIMER_TEST_TICKS. */
#define TIMER_TEST_TICKS 10
u32 cpus_timer_ok(void);

/* The portable half of secondary bring-up: called on the new CPU once its
 * architectural state (descriptor tables, interrupt controller, timer) is
 * set up, with interrupts disabled.  Never returns. */
__noreturn void cpu_secondary_main(void);
#endif

#endif
