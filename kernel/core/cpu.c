/* Per-CPU bookkeeping that does not depend on the architecture: the CPU
 * table and the timer's heartbeat.  Starting the scheduler on every CPU is
 * main.c's (cpu_secondary_main, sched_start_all). */
#include <arch.h>
#include <keel/cpu.h>
#include <keel/sched.h>

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
