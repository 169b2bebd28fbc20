/* The waits of the kernel and the cross-CPU requests every wait serves:
 * stopping a thread (sched.c: thread_stop) and flushing user TLB entries
 * (tlb_shootdown); lock order checking in debug builds.  Below the objects
 * lock (objlock.c) and the capability code: nothing here calls up into
 * them, so a per-object lock (sched.h: obj_lock) depends only on this. */
#include <keel/cpu.h>
#include <keel/panic.h>
#include <keel/sched.h>

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

/* Halted waits (sched.h).  4 turns of a wait are some 40-50 us of
 * emulated kernel code on kvm_pvm, far shorter than a host time slice (the
 * wait when the CPU waited for is not run).  Alternating boot by boot with
 * 4 vCPUs on 2 host cores, the storm made more objects per second with 4
 * than with 16 or 64 turns, and with 16 than spinning only
 * (docs/benchmarks.md); with 2 vCPUs they were alike. */
#define WAIT_SPINS_BEFORE_HALT 4

volatile u64 wait_halted;
u32 wait_spins_before_halt = WAIT_SPINS_BEFORE_HALT;

/* Every halted waiter but this CPU gets a kick; all bits are cleared, so a
 * waiter that goes on waiting sets its own again before it halts again. */
void kernel_kick_waiters(void)
{
    u64 w = __atomic_exchange_n(&wait_halted, 0, __ATOMIC_ACQ_REL);

    w &= ~(1ul << this_cpu()->index);
    while (w) {
        u32 i = (u32)__builtin_ctzl(w);
        w &= w - 1;
        LOCKSTAT_COUNT(LS_KICKS);
        arch_kick_cpu(&cpus[i]);
    }
}

/* The first turn past the threshold sets this CPU's bit and returns, so the
 * caller looks at its condition after that; a later turn that finds the bit
 * still set - no kick since the look, nor since an earlier wait's (which
 * looked too) - halts.  A release after the look kicks (its kick is taken
 * at once by the halt), a release before it ended the wait. */
static void wait_halt(struct cpu *c)
{
    u64 bit = 1ul << c->index;

    if (!(__atomic_load_n(&wait_halted, __ATOMIC_RELAXED) & bit)) {
        __atomic_fetch_or(&wait_halted, bit, __ATOMIC_SEQ_CST);
        return;
    }
    LOCKSTAT_COUNT(LS_WAIT_HALTS);
    arch_wait_halt();
}

/* One turn of any wait in the kernel: serve requests from other CPUs (the
 * CPU we wait for may be waiting for us), let the watchdog look, and after
 * a while halt until kicked. */
void kernel_spin_turn(u32 *spins)
{
    LOCKSTAT_COUNT(LS_SPIN_TURNS);
    cpu_serve_requests();
    arch_cpu_relax();
    u32 n = ++*spins;
    if (!(n & 255) && watchdog_poll)
        watchdog_poll();
    if (n >= wait_spins_before_halt && wait_spins_before_halt)
        wait_halt(this_cpu());
}

void obj_lock_spin(spinlock_t *l)
{
    u32 spins = 0;

    while (!spin_trylock(l))
        kernel_spin_turn(&spins);
}

/* -- lock statistics (keel/lockstat.h; measuring builds only) --------------- */

#ifdef KEEL_LOCK_STATS
#include <keel/printk.h>

struct lockstat lockstats[MAX_CPUS];

struct lockstat *lockstat_mine(void)
{
    return &lockstats[this_cpu()->index];
}

void lockstat_lock(spinlock_t *l, u32 cls)
{
    struct lockstat *ls = lockstat_mine();
    bool caps = cls == LOCK_CAPS;

    if (caps)
        ls->count[LS_CAPS_TAKEN]++;
    if (!spin_trylock(l)) {
        u64 t0 = lockstat_now();
        obj_lock_spin(l);
        ls->count[caps ? LS_CAPS_CONTENDED : LS_OTHER_CONTENDED]++;
        ls->cycles[caps ? LC_CAPS_SPIN : LC_OTHER_SPIN] += lockstat_now() - t0;
    }
    if (caps)
        ls->caps_since = lockstat_now();
}

static const char *const count_names[LS_NCOUNT] = {
    "shared_entries", "excl_entries", "excl_upgrades", "caps_taken", "caps_contended",
    "other_contended", "grace_retries", "tlb_shootdowns", "regraces",
    "zero_objects", "zero_runs", "wait_halts", "kicks",
    "finish_due", "finish_wait", "grace_looks", "spin_turns",
};
static const char *const cycle_names[LC_NCYCLES] = {
    "excl_claim", "excl_drain", "reader_wait", "excl_held", "caps_spin", "caps_held",
    "other_spin", "tlb_wait", "regrace_wait",
};

/* One line per CPU and counter, for scripts (lockstat: cpu N name value). */
void lockstat_print(void)
{
    printk("lockstat: tsc %lu\n", lockstat_now());
    for (u32 i = 0; i < cpu_count; i++) {
        struct lockstat *ls = &lockstats[i];
        for (u32 k = 0; k < LS_NCOUNT; k++)
            printk("lockstat: cpu %u %s %lu\n", i, count_names[k], ls->count[k]);
        for (u32 k = 0; k < LC_NCYCLES; k++)
            printk("lockstat: cpu %u cycles_%s %lu\n", i, cycle_names[k], ls->cycles[k]);
        for (u32 k = 0; k < LOCKSTAT_LABELS; k++) {
            if (ls->upgrade_by_label[k])
                printk("lockstat: cpu %u upgrade_label_%u %lu\n", i, k, ls->upgrade_by_label[k]);
        }
    }
}
#endif

/* -- cross-CPU requests -------------------------------------------------------- */

/* A flush request is claimed before the flush, so one made after the claim
 * (by another CPU that changed another mapping) is served again rather than
 * cleared unserved.  Stale entries matter only once back in user mode. */
void cpu_serve_requests(void)
{
    struct cpu *c = this_cpu();

    if (READ_ONCE(c->tlb_request) && __atomic_exchange_n(&c->tlb_request, 0, __ATOMIC_ACQ_REL)) {
        arch_flush_user_tlb();
        kernel_wake_waiters(); /* the shooter may have halted */
    }
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
        kernel_wake_waiters(); /* the stopper may have halted */
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
u64 tlb_generation;

void tlb_shootdown(void)
{
    struct cpu *me = this_cpu();
    u64 asked[MAX_CPUS / 64] = { 0 };

    LOCKSTAT_COUNT(LS_TLB_SHOOTDOWN);
    __atomic_fetch_add(&tlb_generation, 1, __ATOMIC_RELAXED);
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
    LOCKSTAT_T0(t0);
    for (u32 i = 0; i < cpu_count; i++) {
        struct cpu *c = &cpus[i];
        if (!(asked[i / 64] & (1ul << (i % 64))))
            continue;
        u32 spins = 0;
        while (__atomic_load_n(&c->tlb_request, __ATOMIC_ACQUIRE))
            kernel_spin_turn(&spins);
    }
    LOCKSTAT_ADD(LC_TLB_WAIT, t0);
}
