/* The objects lock (sched.h: the lock order), the waits of the kernel,
 * and the cross-CPU requests every wait serves: stopping a thread
 * (sched.c: thread_stop) and flushing user TLB entries (tlb_shootdown). */
#include <keel/cpu.h>
#include <keel/panic.h>
#include <keel/sched.h>

/* The objects lock's writer (sched.h). */
volatile u32 objects_writer;

/* -- lock order checking (debug builds) ------------------------------------- */

#ifdef KEEL_DEBUG_LOCKS
void lock_check(u32 cls)
{
    struct cpu *c = this_cpu();

    if (c->locks_held & ~((1u << cls) - 1))
        panic("lock order: cpu %u takes lock class %u holding 0x%x", c->index, cls,
              c->locks_held);
    c->locks_held |= 1u << cls;
}

void lock_release(u32 cls)
{
    this_cpu()->locks_held &= ~(1u << cls);
}
#endif

/* -- waiting ---------------------------------------------------------------- */

/* One turn of any wait in the kernel: serve requests from other CPUs (the
 * CPU we wait for may be waiting for us) and let the watchdog look. */
void kernel_spin_turn(u32 *spins)
{
    cpu_serve_requests();
    arch_cpu_relax();
    if (!(++*spins & 255) && watchdog_poll)
        watchdog_poll();
}

void obj_lock_spin(spinlock_t *l)
{
    u32 spins = 0;

    while (!spin_trylock(l))
        kernel_spin_turn(&spins);
}

/* -- the objects lock ------------------------------------------------------- */

/* kernel_enter (sched.h) found a writer: the reader steps back and waits,
 * so writers are not starved, then announces itself again.  A writer
 * claims objects_writer (its CPU index + 1), then waits for every other
 * CPU's flag to clear; readers arriving meanwhile see the claim and step
 * back.  One atomic operation per shared entry and none per exit: on this
 * host every locked instruction is expensive. */
void kernel_enter_wait(struct cpu *c, bool call)
{
    u32 spins = 0;

    c->call_pending = call;
    do {
        __atomic_store_n(&c->reading, 0, __ATOMIC_RELEASE);
        while (__atomic_load_n(&objects_writer, __ATOMIC_RELAXED))
            kernel_spin_turn(&spins);
        __atomic_exchange_n(&c->reading, 1, __ATOMIC_SEQ_CST);
    } while (__atomic_load_n(&objects_writer, __ATOMIC_ACQUIRE));
    c->call_pending = 0;
}

static void objects_lock_exclusive(void)
{
    struct cpu *me = this_cpu();
    u32 spins = 0;

    for (;;) {
        u32 none = 0;
        if (!__atomic_load_n(&objects_writer, __ATOMIC_RELAXED) &&
            __atomic_compare_exchange_n(&objects_writer, &none, me->index + 1, false,
                                        __ATOMIC_SEQ_CST, __ATOMIC_RELAXED))
            break;
        kernel_spin_turn(&spins);
    }
    for (u32 i = 0; i < cpu_count; i++) {
        if (i == me->index)
            continue;
        while (__atomic_load_n(&cpus[i].reading, __ATOMIC_ACQUIRE))
            kernel_spin_turn(&spins);
    }
    me->kmode = KMODE_EXCLUSIVE;
    grace_exclusive(); /* no reader is left: every retired slot is past its grace */
}

void kernel_enter_exclusive(void)
{
    WRITE_ONCE(this_cpu()->in_kernel, 1);
    lock_check(LOCK_OBJECTS);
    objects_lock_exclusive();
}

void kernel_upgrade(void)
{
    struct cpu *c = this_cpu();

    if (c->kmode != KMODE_SHARED)
        return;
#ifdef KEEL_DEBUG_LOCKS
    if (c->locks_held != 1u << LOCK_OBJECTS)
        panic("lock order: cpu %u upgrades holding 0x%x", c->index, c->locks_held);
#endif
    __atomic_store_n(&c->reading, 0, __ATOMIC_RELEASE);
    c->kmode = KMODE_NONE;
    objects_lock_exclusive();
}

u32 objects_lock_writer(void)
{
    return objects_writer;
}

/* -- cross-CPU requests -------------------------------------------------------- */

/* A flush request is claimed before the flush, so one made after the claim
 * (by another CPU that changed another mapping) is served again rather than
 * cleared unserved.  Stale entries matter only once back in user mode. */
void cpu_serve_requests(void)
{
    struct cpu *c = this_cpu();

    if (READ_ONCE(c->tlb_request) && __atomic_exchange_n(&c->tlb_request, 0, __ATOMIC_ACQ_REL))
        arch_flush_user_tlb();
    if (READ_ONCE(c->stop_request) && !READ_ONCE(c->stop_ack)) {
        if (c->current && c->fpu_owner == c->current)
            arch_fpu_save(c->current);
        /* Stopped while its call waits for the lock (nothing of the call
         * has been done): it makes the call again when it runs. */
        if (c->current && c->call_pending)
            arch_tcb_restart_syscall(c->current);
        c->call_pending = 0;
        /* The stopper may destroy the thread's address space next, and
         * reuse its memory while this CPU still waits in the kernel. */
        arch_leave_user_space();
        __atomic_store_n(&c->stop_ack, 1, __ATOMIC_RELEASE);
    }
}

/* An idle CPU is skipped: it switched (or is switching) to the kernel's
 * page tables, and leaving idle goes through arch_enter_user, which loads
 * CR3 afresh - a full flush.  A CPU leaving idle meanwhile (the caller may
 * hold the objects lock shared only) clears its idle flag before loading
 * CR3; the fence orders the caller's page-table change before its look at
 * the flag, so either it sees the CPU busy and asks, or that CPU's CR3 load
 * comes after the change.  Besides saving an IPI, this spares waiting for
 * a halted vCPU the host may not be running.  Several CPUs may shoot down
 * at once: each waits for its own request's claim, serving others'. */
void tlb_shootdown(void)
{
    struct cpu *me = this_cpu();
    u64 asked[MAX_CPUS / 64] = { 0 };

    __atomic_thread_fence(__ATOMIC_SEQ_CST);
    arch_flush_user_tlb();
    for (u32 i = 0; i < cpu_count; i++) {
        struct cpu *c = &cpus[i];
        if (c == me || READ_ONCE(c->state) != CPU_ONLINE || READ_ONCE(c->idle))
            continue;
        asked[i / 64] |= 1ul << (i % 64);
        __atomic_store_n(&c->tlb_request, 1, __ATOMIC_RELEASE);
        arch_send_tlb_ipi(c);
    }
    for (u32 i = 0; i < cpu_count; i++) {
        struct cpu *c = &cpus[i];
        if (!(asked[i / 64] & (1ul << (i % 64))))
            continue;
        u32 spins = 0;
        while (__atomic_load_n(&c->tlb_request, __ATOMIC_ACQUIRE))
            kernel_spin_turn(&spins);
    }
}
