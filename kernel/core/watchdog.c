/* The watchdog: notices a CPU that stops making progress.
 *
 * Every CPU's timer interrupt is its heartbeat (cpu.ticks).  A CPU that
 * spins with interrupts disabled - a lost wake-up in a stop or TLB request,
 * a lock never released, a loop in the kernel - stops ticking.  Whoever
 * calls watchdog_poll (every timer tick, and every few hundred turns of
 * the kernel's spin loops, so a CPU waiting for a stuck one still checks)
 * claims the check at most once a second; when an online CPU has not
 * ticked for WATCHDOG_STALL_US it prints every CPU's state, once.
 *
 * Lock-free: only the CPU that won the claim touches the bookkeeping. */
#include <arch.h>
#include <keel/cpu.h>
#include <keel/printk.h>
#include <keel/sched.h>

#define CHECK_EVERY_US 1000000ul

static u64 next_check_us;
static u64 seen_ticks[MAX_CPUS];
static u64 seen_at_us[MAX_CPUS];
static u32 reported;

static void report(u32 stalled, u64 now)
{
    printk("keel: watchdog: cpu %u made no progress for %lu ms; every cpu:\n", stalled,
           (now - seen_at_us[stalled]) / 1000);
    for (u32 i = 0; i < cpu_count; i++) {
        struct cpu *c = &cpus[i];
        struct tcb *t = READ_ONCE(c->current);
        u64 pc = 0, sp = 0, ret = 0;
        if (t)
            arch_tcb_get_regs(t, &pc, &sp, &ret);
        printk("keel: watchdog: cpu %u state %u ticks %lu idle %u in_kernel %u mode %u/%u queued %u "
               "thread %ld user rip 0x%lx stop %u/%u tlb %u grace-wait %d%s\n",
               i, READ_ONCE(c->state), READ_ONCE(c->ticks), READ_ONCE(c->idle),
               READ_ONCE(c->in_kernel), READ_ONCE(c->kmode), READ_ONCE(c->reading),
               sched_queued(i), t ? (long)t->id : -1l, pc,
               READ_ONCE(c->stop_request), READ_ONCE(c->stop_ack), READ_ONCE(c->tlb_request),
               (int)READ_ONCE(c->grace_wait) - 1,
               now - seen_at_us[i] >= WATCHDOG_STALL_US ? " STALLED" : "");
    }
    u32 w = objects_lock_writer();
    if (w)
        printk("keel: watchdog: objects lock held or claimed exclusive by cpu %u\n", w - 1);
    else
        printk("keel: watchdog: objects lock: no writer\n");
}

void watchdog_poll(void)
{
    u64 now = arch_time_us(), due = READ_ONCE(next_check_us);

    if (now < due || READ_ONCE(reported))
        return;
    if (!__atomic_compare_exchange_n(&next_check_us, &due, now + CHECK_EVERY_US, false,
                                     __ATOMIC_ACQ_REL, __ATOMIC_RELAXED))
        return;
    for (u32 i = 0; i < cpu_count; i++) {
        if (READ_ONCE(cpus[i].state) != CPU_ONLINE)
            continue;
        u64 ticks = READ_ONCE(cpus[i].ticks);
        if (ticks != seen_ticks[i] || !seen_at_us[i]) {
            seen_ticks[i] = ticks;
            seen_at_us[i] = now;
        } else if (now - seen_at_us[i] >= WATCHDOG_STALL_US && !reported) {
            reported = 1;
            report(i, now);
        }
    }
}
