/* Run queue, kernel lock and the exit path to user mode. */
#include <keel/cpu.h>
#include <keel/printk.h>
#include <keel/sched.h>

spinlock_t kernel_lock = SPINLOCK_INIT;

static struct tcb *rq_head, *rq_tail;

static void rq_push(struct tcb *t)
{
    if (t->queued)
        return;
    t->queued = 1;
    t->rq_next = NULL;
    t->rq_prev = rq_tail;
    if (rq_tail)
        rq_tail->rq_next = t;
    else
        rq_head = t;
    rq_tail = t;
}

static void rq_remove(struct tcb *t)
{
    if (!t->queued)
        return;
    if (t->rq_prev)
        t->rq_prev->rq_next = t->rq_next;
    else
        rq_head = t->rq_next;
    if (t->rq_next)
        t->rq_next->rq_prev = t->rq_prev;
    else
        rq_tail = t->rq_prev;
    t->rq_next = t->rq_prev = NULL;
    t->queued = 0;
}

static struct tcb *rq_pop(void)
{
    struct tcb *t = rq_head;

    if (t)
        rq_remove(t);
    return t;
}

void cpu_serve_requests(void)
{
    struct cpu *c = this_cpu();

    if (READ_ONCE(c->tlb_request)) {
        arch_flush_user_tlb();
        __atomic_store_n(&c->tlb_request, 0, __ATOMIC_RELEASE);
    }
    if (READ_ONCE(c->stop_request) && !READ_ONCE(c->stop_ack)) {
        if (c->current && c->fpu_owner == c->current)
            arch_fpu_save(c->current);
        __atomic_store_n(&c->stop_ack, 1, __ATOMIC_RELEASE);
    }
}

void kernel_enter(void)
{
    struct cpu *c = this_cpu();

    WRITE_ONCE(c->in_kernel, 1);
    while (!spin_trylock(&kernel_lock)) {
        cpu_serve_requests();
        arch_cpu_relax();
    }
}

/* Wakes one idle CPU, if any, to pick up newly runnable work. */
static void kick_idle_cpu(void)
{
    struct cpu *me = this_cpu();

    for (u32 i = 0; i < cpu_count; i++) {
        struct cpu *c = &cpus[i];
        if (c != me && READ_ONCE(c->idle) && READ_ONCE(c->state) == CPU_ONLINE) {
            arch_wake_cpu(c);
            return;
        }
    }
}

void sched_make_runnable(struct tcb *t)
{
    t->state = THREAD_RUNNABLE;
    t->blocked_on = NULL;
    t->wait_kind = WAIT_NONE;
    if (t->cpu < 0 && !t->queued) {
        rq_push(t);
        kick_idle_cpu();
    }
}

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
        me->current = NULL;
        me->fpu_owner = NULL;
    } else {
        __atomic_store_n(&c->stop_ack, 0, __ATOMIC_RELEASE);
        __atomic_store_n(&c->stop_request, 1, __ATOMIC_RELEASE);
        arch_wake_cpu(c);
        while (!__atomic_load_n(&c->stop_ack, __ATOMIC_ACQUIRE))
            arch_cpu_relax();
        c->current = NULL;
        c->fpu_owner = NULL;
        __atomic_store_n(&c->stop_request, 0, __ATOMIC_RELEASE);
    }
    t->cpu = -1;
}

void tlb_shootdown(void)
{
    struct cpu *me = this_cpu();

    arch_flush_user_tlb();
    for (u32 i = 0; i < cpu_count; i++) {
        struct cpu *c = &cpus[i];
        if (c == me || READ_ONCE(c->state) != CPU_ONLINE)
            continue;
        __atomic_store_n(&c->tlb_request, 1, __ATOMIC_RELEASE);
        arch_send_tlb_ipi(c);
    }
    for (u32 i = 0; i < cpu_count; i++) {
        struct cpu *c = &cpus[i];
        if (c == me || READ_ONCE(c->state) != CPU_ONLINE)
            continue;
        while (__atomic_load_n(&c->tlb_request, __ATOMIC_ACQUIRE))
            arch_cpu_relax();
    }
}

void sched_timer_tick(void)
{
    struct cpu *c = this_cpu();

    if (c->current && rq_head)
        c->need_resched = 1;
}

void sched_yield(void)
{
    this_cpu()->need_resched = 1;
}

__noreturn void sched_exit_kernel(void)
{
    struct cpu *c = this_cpu();

    for (;;) {
        struct tcb *t = c->current;
        if (t && (t->state != THREAD_RUNNABLE || (c->need_resched && rq_head))) {
            if (c->fpu_owner == t) { /* saved now: it may next run elsewhere */
                arch_fpu_save(t);
                c->fpu_owner = NULL;
            }
            c->current = NULL;
            t->cpu = -1;
            if (t->state == THREAD_RUNNABLE)
                rq_push(t);
        }
        c->need_resched = 0;
        if (!c->current) {
            t = rq_pop();
            if (t) {
                t->cpu = (s32)c->index;
                c->current = t;
            }
        }
        if (c->current && arch_thread_can_run(c->current)) {
            WRITE_ONCE(c->idle, 0);
            WRITE_ONCE(c->in_kernel, 0);
            arch_enter_user(c->current); /* releases the kernel lock */
        }
        if (c->current) {
            /* Lost its address space: it cannot run until configured again. */
            c->current->state = THREAD_INACTIVE;
            c->current->cpu = -1;
            c->current = NULL;
            continue;
        }
        WRITE_ONCE(c->idle, 1);
        spin_unlock(&kernel_lock);
        arch_idle_wait();
        kernel_enter();
    }
}

__noreturn void sched_idle(void)
{
    kernel_enter();
    sched_exit_kernel();
}
