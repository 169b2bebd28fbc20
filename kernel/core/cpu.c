/* Per-CPU bookkeeping that does not depend on the architecture. */
#include <arch.h>
#include <keel/cpu.h>
#include <keel/printk.h>
#include <keel/sched.h>

volatile u32 sched_started;

struct cpu cpus[MAX_CPUS];
u32 cpu_count;

void cpu_timer_tick(void)
{
    struct cpu *c = this_cpu();

    c->ticks++;
    watchdog_poll();
}

u32 cpus_timer_ok(void)
{
    u32 n = 0;

    for (u32 i = 0; i < cpu_count; i++) {
        if (READ_ONCE(cpus[i].state) == CPU_ONLINE && READ_ONCE(cpus[i].ticks) >= TIMER_TEST_TICKS)
            n++;
    }
    return n;
}

__noreturn void cpu_secondary_main(void)
{
    struct cpu *c = this_cpu();

    printk("keel: cpu %u online (apic %u)\n", c->index, c->hw_id);
    __atomic_store_n(&c->state, CPU_ONLINE, __ATOMIC_RELEASE);
    for (;;) {
        arch_irq_disable();
        if (READ_ONCE(sched_started))
            sched_idle();
        arch_idle();
    }
}

void sched_start_all(void)
{
    __atomic_store_n(&sched_started, 1, __ATOMIC_RELEASE);
    for (u32 i = 1; i < cpu_count; i++) {
        if (READ_ONCE(cpus[i].state) == CPU_ONLINE)
            arch_wake_cpu(&cpus[i]);
    }
    arch_irq_disable();
    sched_idle();
}
