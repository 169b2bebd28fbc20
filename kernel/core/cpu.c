/* Per-CPU bookkeeping that does not depend on the architecture: the CPU
 * table and the timer's heartbeat.  Starting the scheduler on every CPU is
 * main.c's (cpu_secondary_main, sched_start_all). */
#include <arch.h>
#include <keel/cpu.h>
#include <keel/printk.h>
#include <keel/sched.h>

struct cpu cpus[MAX_CPUS];
u32 cpu_count;

void cpu_timer_tick(void)
{
    struct cpu *c = this_cpu();

    u64 before = c->ticks;

    c->ticks = before + (c->tick_slow ? SCHED_SLOW_TICKS : 1);
    /* a balancing period ended with this tick (sched.c: balance_due) */
    c->balance_tick = before / SCHED_BALANCE_TICKS != c->ticks / SCHED_BALANCE_TICKS;
    c->timer_irqs++;
    watchdog_poll();
}

bool cpu_tick_stats;

void cpu_tick_stats_print(void)
{
    if (!cpu_tick_stats)
        return;
    for (u32 i = 0; i < cpu_count; i++) {
        printk("keel: cpu %u timer: %lu interrupts in %lu periods\n", i,
               READ_ONCE(cpus[i].timer_irqs), READ_ONCE(cpus[i].ticks));
    }
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
