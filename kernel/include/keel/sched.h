/* Threads on CPUs.
 *
 * The kernel is entered from user mode with interrupts disabled and runs to
 * completion under the kernel lock; it is never preempted.  A thread's user
 * registers live in its TCB.  One global run queue for now (per-CPU queues
 * are the SMP scheduling work); the timer preempts a user thread when
 * another one is waiting.
 *
 * Cross-CPU requests (stop a thread, flush the TLB) are made while holding
 * the kernel lock, so the CPU asked may itself be spinning for that lock
 * with interrupts disabled; it serves the requests while it spins.
 */
#ifndef KEEL_SCHED_H
#define KEEL_SCHED_H

#include <keel/object.h>
#include <keel/spinlock.h>

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
void sched_timer_tick(void);
void sched_yield(void);

/* Flushes user TLB entries on every CPU. */
void tlb_shootdown(void);
/* Called from interrupts and the lock spin: serve cross-CPU requests. */
void cpu_serve_requests(void);

#endif
