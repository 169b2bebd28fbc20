/* Per-CPU run queues with priorities and the exit path to user mode.  The
 * policy and the lock order are described in sched.h; the objects lock is
 * in objlock.c, the kernel's waits and the cross-CPU requests in wait.c. */
#include <keel/cpu.h>
#include <keel/panic.h>
#include <keel/printk.h>
#include <keel/sched.h>

#include "runqueue.h"

struct runqueue runqueues[MAX_CPUS];

static inline void rq_lock(struct runqueue *rq)
{
    lock_check(LOCK_RQ);
    spin_lock(&rq->lock);
}

static inline void rq_unlock(struct runqueue *rq)
{
    spin_unlock(&rq->lock);
    lock_release(LOCK_RQ);
}

/* -- queues (caller holds the queue's lock) ---------------------------------- */

static void rq_insert(struct runqueue *rq, u32 cpu, struct tcb *t, bool front)
{
    struct tcb **h = &rq->head[t->prio];

    t->queued = cpu + 1;
    if (!*h) {
        t->rq_next = t->rq_prev = t;
        *h = t;
        rq->bitmap[t->prio / 64] |= 1ul << (t->prio % 64);
    } else {
        struct tcb *first = *h, *last = first->rq_prev;
        t->rq_next = first;
        t->rq_prev = last;
        last->rq_next = t;
        first->rq_prev = t;
        if (front)
            *h = t;
    }
    rq->nr++;
}

static void rq_delete(struct runqueue *rq, struct tcb *t)
{
    struct tcb **h = &rq->head[t->prio];

    if (t->rq_next == t) {
        *h = NULL;
        rq->bitmap[t->prio / 64] &= ~(1ul << (t->prio % 64));
    } else {
        t->rq_prev->rq_next = t->rq_next;
        t->rq_next->rq_prev = t->rq_prev;
        if (*h == t)
            *h = t->rq_next;
    }
    t->rq_next = t->rq_prev = NULL;
    t->queued = 0;
    rq->nr--;
}

static void rq_remove(struct tcb *t)
{
    if (!t->queued)
        return;
    struct runqueue *rq = rq_of(t->queued - 1);
    rq_lock(rq);
    rq_delete(rq, t);
    rq_unlock(rq);
}

/* -- the timer's rate --------------------------------------------------------- */

void sched_tick_rate(struct cpu *c)
{
    u32 slow = c->tick_may_slow && !READ_ONCE(rq_of(c->index)->nr);

    if (slow == c->tick_slow)
        return;
    WRITE_ONCE(c->tick_slow, slow);
    arch_timer_every(slow ? SCHED_SLOW_TICKS : 1);
}

static void rq_push(u32 cpu, struct tcb *t, bool front)
{
    struct runqueue *rq = rq_of(cpu);

    rq_lock(rq);
    if (!t->queued)
        rq_insert(rq, cpu, t, front);
    rq_unlock(rq);
    /* This CPU's timer back to the normal rate, so that the threads here
     * share it; another CPU's is brought back by kick_cpu's wake-up. */
    if (__builtin_expect(READ_ONCE(cpus[cpu].tick_slow), 0) && cpu == this_cpu()->index)
        sched_tick_rate(&cpus[cpu]);
}

static struct tcb *rq_pop(u32 cpu)
{
    struct runqueue *rq = rq_of(cpu);
    struct tcb *t = NULL;

    if (!READ_ONCE(rq->nr))
        return NULL;
    rq_lock(rq);
    int p = rq_best(rq);
    if (p >= 0) {
        t = rq->head[p];
        rq_delete(rq, t);
    }
    rq_unlock(rq);
    return t;
}

u32 sched_queued(u32 cpu)
{
    return READ_ONCE(rq_of(cpu)->nr);
}

/* Takes one thread that may run on `to` from cpu's queue (lowest level
 * first: the least urgent work moves). */
static struct tcb *rq_steal(u32 cpu, u32 to)
{
    struct runqueue *rq = rq_of(cpu);
    struct tcb *found = NULL;

    rq_lock(rq);
    for (int w = 0; w < PRIO_WORDS && !found; w++) {
        u64 bits = rq->bitmap[w];
        while (bits && !found) {
            int p = w * 64 + __builtin_ctzl(bits);
            bits &= bits - 1;
            struct tcb *t = rq->head[p];
            do {
                if (t->affinity < 0 || t->affinity == (s32)to) {
                    found = t;
                    break;
                }
                t = t->rq_next;
            } while (t != rq->head[p]);
        }
    }
    if (found)
        rq_delete(rq, found);
    rq_unlock(rq);
    return found;
}

static bool cpu_online(u32 i)
{
    return READ_ONCE(cpus[i].state) == CPU_ONLINE;
}

static u32 cpu_load(u32 i)
{
    return READ_ONCE(rq_of(i)->nr) + (READ_ONCE(cpus[i].current) != NULL);
}

/* Where a thread made runnable should wait. */
static u32 select_cpu(struct tcb *t)
{
    u32 me = this_cpu()->index;

    if (t->affinity >= 0 && (u32)t->affinity < cpu_count && cpu_online((u32)t->affinity))
        return (u32)t->affinity;
    u32 best = me;
    if (t->last_cpu >= 0 && (u32)t->last_cpu < cpu_count && cpu_online((u32)t->last_cpu))
        best = (u32)t->last_cpu;
    u32 best_load = cpu_load(best);
    for (u32 i = 0; i < cpu_count && best_load; i++) {
        if (i == best || !cpu_online(i))
            continue;
        u32 l = cpu_load(i);
        if (l < best_load) {
            best = i;
            best_load = l;
        }
    }
    return best;
}

/* t was queued on cpu: make sure that CPU looks at it soon. */
static void kick_cpu(u32 cpu, struct tcb *t)
{
    struct cpu *me = this_cpu(), *c = &cpus[cpu];
    struct tcb *cur = READ_ONCE(c->current);

    if (c == me) {
        if (cur && t->prio > cur->prio)
            me->need_resched = 1;
        return;
    }
    if (READ_ONCE(c->idle)) {
        arch_wake_cpu(c);
    } else if (cur && t->prio > cur->prio) {
        WRITE_ONCE(c->need_resched, 1);
        arch_wake_cpu(c);
    } else if (READ_ONCE(c->tick_slow)) {
        /* Its handler brings its timer back to the normal rate (sched_tick_rate).
         * One that was just turning slow and missed t finds it at its next tick. */
        arch_wake_cpu(c);
    }
}

/* Under the thread lock: the CPU that ran t may still be on its exit path
 * deciding whether t goes on (it looks at t->state under the same lock);
 * if t->cpu is still set, that CPU keeps or requeues it. */
void sched_make_runnable(struct tcb *t)
{
    obj_lock(&t->hdr.lock, LOCK_THREAD);
    t->state = THREAD_RUNNABLE;
    t->blocked_on = NULL;
    t->wait_kind = WAIT_NONE;
    if (t->cpu < 0 && !t->queued) {
        u32 cpu = select_cpu(t);
        rq_push(cpu, t, false);
        kick_cpu(cpu, t);
    }
    obj_unlock(&t->hdr.lock, LOCK_THREAD);
}

/* Exclusive holders only: the CPU running t is then in user mode (the
 * wake-up IPI brings it into the kernel) or waiting for the objects lock,
 * where it acknowledges; it gets the lock only after we are done. */
void thread_stop(struct tcb *t)
{
    struct cpu *me = this_cpu();

    rq_remove(t);
    if (t->cpu < 0)
        return;
    struct cpu *c = &cpus[t->cpu];
    if (c == me) {
        if (me->fpu_owner == t)
            arch_fpu_save(t);
        arch_leave_user_space(); /* as cpu_serve_requests does for a remote stop */
        me->current = NULL;
        me->fpu_owner = NULL;
    } else {
        u32 spins = 0;
        __atomic_store_n(&c->stop_ack, 0, __ATOMIC_RELEASE);
        __atomic_store_n(&c->stop_request, 1, __ATOMIC_RELEASE);
        arch_wake_cpu(c);
        while (!__atomic_load_n(&c->stop_ack, __ATOMIC_ACQUIRE))
            kernel_spin_turn(&spins);
        c->current = NULL;
        c->fpu_owner = NULL;
        __atomic_store_n(&c->stop_request, 0, __ATOMIC_RELEASE);
    }
    t->cpu = -1;
}

void sched_set_affinity(struct tcb *t, s32 cpu)
{
    bool run = t->state == THREAD_RUNNABLE && (t->queued || t->cpu >= 0);

    if (t->affinity == cpu)
        return;
    t->affinity = (s16)cpu;
    if (!run || (cpu >= 0 && t->cpu == cpu))
        return;
    thread_stop(t);
    sched_make_runnable(t);
}

void sched_set_priority(struct tcb *t, u32 prio)
{
    if (t->prio == prio)
        return;
    if (t->queued) {
        u32 cpu = t->queued - 1;
        rq_remove(t);
        t->prio = (u8)prio;
        rq_push(cpu, t, false);
        kick_cpu(cpu, t);
        return;
    }
    t->prio = (u8)prio;
    if (t->cpu >= 0) {
        /* Running: its CPU reconsiders at its next entry (at once if it is
         * this one, by the next tick otherwise). */
        cpus[t->cpu].need_resched = 1;
    }
}

/* The busiest other CPU's queue, by a lock-free look: its index (this
 * CPU's own when none has at least `margin` more threads than this one). */
static u32 busiest_cpu(struct cpu *c, u32 margin)
{
    u32 mine = cpu_load(c->index), busiest = c->index, most = 0;

    for (u32 i = 0; i < cpu_count; i++) {
        if (i == c->index || !cpu_online(i))
            continue;
        u32 n = READ_ONCE(rq_of(i)->nr);
        if (n > most) {
            most = n;
            busiest = i;
        }
    }
    /* The busiest CPU runs one thread besides those queued. */
    if (!most || most + 1 < mine + margin)
        return c->index;
    return busiest;
}

/* Pulls one thread from the busiest other queue onto this CPU's when that
 * queue has at least `margin` more threads than this CPU runs. */
static bool balance(struct cpu *c, u32 margin)
{
    u32 busiest = busiest_cpu(c, margin);

    if (busiest == c->index)
        return false;
    struct tcb *t = rq_steal(busiest, c->index);
    if (!t)
        return false;
    rq_push(c->index, t, false);
    return true;
}

static bool balance_due(struct cpu *c)
{
    return cpu_count > 1 && c->balance_tick &&
           busiest_cpu(c, 2) != c->index;
}

bool sched_timer_tick(void)
{
    struct cpu *c = this_cpu();
    struct tcb *t = c->current;

    if (t) {
        if (t->slice)
            t->slice--;
        int best = rq_best(rq_of(c->index)); /* a hint: rechecked under the lock */
        if (best > (int)t->prio || (!t->slice && best >= (int)t->prio))
            c->need_resched = 1;
    }
    /* a pending region revoke of this CPU: the exit path finishes it */
    return READ_ONCE(c->need_resched) || balance_due(c) || grace_pending_here();
}

void sched_timer_balance(void)
{
    struct cpu *c = this_cpu();

    if (balance_due(c) && balance(c, 2))
        c->need_resched = 1;
}

void sched_yield(void)
{
    struct cpu *c = this_cpu();

    c->need_resched = 1;
    if (c->current)
        c->current->slice = 0; /* gives up the rest of its slice */
}

/* Should the current thread t give way to a queued one? */
static bool should_preempt(struct cpu *c, struct tcb *t)
{
    if (!c->need_resched)
        return false;
    int best = rq_best(rq_of(c->index));
    return best > (int)t->prio || (!t->slice && best >= (int)t->prio);
}

/* Lock-free: is there anything for an idle CPU to do? */
static bool idle_has_work(struct cpu *c)
{
    if (READ_ONCE(rq_of(c->index)->nr) || READ_ONCE(c->need_resched))
        return true;
    for (u32 i = 0; i < cpu_count; i++) {
        if (i != c->index && READ_ONCE(rq_of(i)->nr) && cpu_online(i))
            return true;
    }
    return false;
}

__noreturn void sched_exit_kernel(void)
{
    struct cpu *c = this_cpu();

    for (;;) {
        /* A region's revoke left pending by this CPU (grace.c): its objects
         * are destroyed on the first way out after the grace period. */
        if (__builtin_expect(READ_ONCE(c->region_pending), 0))
            grace_finish_due();
        struct tcb *t = c->current;
        /* A runnable current thread is no one else's to wake; one that
         * blocked may be woken by another CPU at any moment: the decision
         * is made again under its lock (sched_make_runnable). */
        if (t && (READ_ONCE(t->state) != THREAD_RUNNABLE || should_preempt(c, t))) {
            obj_lock(&t->hdr.lock, LOCK_THREAD);
            if (t->state == THREAD_RUNNABLE && !should_preempt(c, t)) {
                obj_unlock(&t->hdr.lock, LOCK_THREAD);
                goto keep;
            }
            if (c->fpu_owner == t) { /* saved now: it may next run elsewhere */
                arch_fpu_save(t);
                c->fpu_owner = NULL;
            }
            c->current = NULL;
            t->cpu = -1;
            if (t->state == THREAD_RUNNABLE) {
                /* A used-up slice goes to the back of its level; a thread
                 * preempted by a higher level keeps its place. */
                bool front = t->slice != 0;
                if (!t->slice)
                    t->slice = SCHED_SLICE_TICKS;
                u32 cpu = c->index;
                if (t->affinity >= 0 && (u32)t->affinity != cpu)
                    cpu = select_cpu(t);
                rq_push(cpu, t, front);
                if (cpu != c->index)
                    kick_cpu(cpu, t);
            }
            obj_unlock(&t->hdr.lock, LOCK_THREAD);
        }
    keep:
        c->need_resched = 0;
        if (!c->current) {
            t = rq_pop(c->index);
            if (!t && cpu_count > 1 && balance(c, 1))
                t = rq_pop(c->index);
            if (t) {
                t->cpu = (s32)c->index;
                t->last_cpu = (s16)c->index;
                if (!t->slice)
                    t->slice = SCHED_SLICE_TICKS;
                c->current = t;
            }
        }
        if (c->current && arch_thread_can_run(c->current)) {
            WRITE_ONCE(c->idle, 0);
            WRITE_ONCE(c->in_kernel, 0);
            arch_enter_user(c->current); /* releases the objects lock */
        }
        if (c->current) {
            /* Lost its address space: it cannot run until configured again. */
            c->current->state = THREAD_INACTIVE;
            c->current->cpu = -1;
            c->current = NULL;
            continue;
        }
        if (grace_pending_here()) {
            /* Not before idling: the objects may be waited on, their
             * memory wanted.  The wait holds nothing. */
            grace_wait_finish();
            continue;
        }
        WRITE_ONCE(c->idle, 1);
        kernel_leave();
        do {
            arch_idle_wait();
        } while (!idle_has_work(c));
        kernel_enter();
    }
}

__noreturn void sched_idle(void)
{
    this_cpu()->tick_may_slow = 1;
    kernel_enter();
    sched_exit_kernel();
}
