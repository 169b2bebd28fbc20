/* Threads on CPUs.
 *
 * The kernel is entered from user mode with interrupts disabled and runs to
 * completion; it is never preempted.  A thread's user registers live in its
 * TCB.
 *
 * Scheduling: every CPU has its own run queue of 256 priority levels
 * (higher runs first; a bitmap finds the best non-empty level), round-robin
 * within a level with a time slice of SCHED_SLICE_TICKS timer ticks.  A
 * thread made runnable goes to its affinity CPU if it has one, else to its
 * last CPU if that is idle, else to the least loaded online CPU; an idle or
 * lower-priority remote CPU is woken with an IPI.  The timer tick ends time
 * slices, preempts for a higher-priority thread, and every
 * SCHED_BALANCE_TICKS pulls one thread from the busiest queue when that one
 * has at least two more threads than this CPU.  An idle CPU pulls as soon as
 * another queue has a thread waiting.
 *
 * Locks and their order (a CPU takes them only in this order):
 *
 *   1. kernel_lock       taken on every entry from user mode (kernel_enter)
 *                        and by an idle CPU before it looks for work; it
 *                        protects every kernel object (object.h) and the
 *                        thread fields state/blocked_on/wait_kind.
 *   2. runqueue lock     one per CPU (struct runqueue in sched.c): its queue,
 *                        its bitmap and count; a thread's queued/rq links.
 *                        At most one is held at a time (balancing moves a
 *                        thread by dequeueing under the victim's lock, then
 *                        enqueueing under its own).
 *   3. console lock      (printk) innermost; taken with interrupts saved.
 *
 * The kernel lock is still one big lock around object operations: two CPUs
 * doing independent kernel calls serialize on it.  Splitting it per object
 * (endpoint, cnode, vspace) is the next step; the runqueue locks already
 * follow the order above so they need no change then.  Building with
 * -DKEEL_DEBUG_LOCKS (make KCC="gcc -DKEEL_DEBUG_LOCKS") makes every lock
 * operation of the scheduler check this order and panic on a violation.
 *
 * Cross-CPU requests (stop a thread, flush the TLB) are made while holding
 * the kernel lock, so the CPU asked may itself be spinning for that lock
 * with interrupts disabled; it serves the requests while it spins.
 */
#ifndef KEEL_SCHED_H
#define KEEL_SCHED_H

#include <keel/object.h>
#include <keel/spinlock.h>

#define SCHED_PRIO_LEVELS 256
#define SCHED_PRIO_DEFAULT 128
#define SCHED_SLICE_TICKS 2    /* 20 ms at 100 Hz */
#define SCHED_BALANCE_TICKS 5  /* 50 ms at 100 Hz */

extern spinlock_t kernel_lock;

/* Entry from user mode (interrupts disabled): take the kernel lock. */
void kernel_enter(void);
/* Leaves the kernel on this CPU: runs the current thread if it may go on,
 * else the next runnable one, else idles.  Never returns. */
__noreturn void sched_exit_kernel(void);
/* The per-CPU idle loop, entered once at boot on every CPU. */
__noreturn void sched_idle(void);

void sched_make_runnable(struct tcb *t);
/* Ensures t is neither queued nor running on any CPU (its registers and
 * FPU state are saved in the TCB when this returns). */
void thread_stop(struct tcb *t);
/* The timer tick that interrupted a user thread, without the kernel lock
 * (only this CPU's state is written): ends time slices and looks for a
 * better thread or an imbalance.  True when the kernel must be entered;
 * then sched_timer_balance runs under the lock before the exit path. */
bool sched_timer_tick(void);
void sched_timer_balance(void);
void sched_yield(void);
/* Thread parameters (tcb.c checks the arguments): affinity -1 or an online
 * CPU, priority 0..255. */
void sched_set_affinity(struct tcb *t, s32 cpu);
void sched_set_priority(struct tcb *t, u32 prio);
/* Threads waiting in this CPU's run queue (lock-free read). */
u32 sched_queued(u32 cpu);

/* Flushes user TLB entries on every CPU. */
void tlb_shootdown(void);
/* Called from interrupts and the lock spin: serve cross-CPU requests. */
void cpu_serve_requests(void);

/* watchdog.c: each CPU's timer tick is its heartbeat; any CPU that ticks
 * or spins for a lock checks the others about once a second and prints
 * every CPU's state once when one has not ticked for WATCHDOG_STALL_US.
 * Weak so the host build of the core (no watchdog) links without it. */
#define WATCHDOG_STALL_US 2000000ul
void watchdog_poll(void) __attribute__((weak));

#endif
