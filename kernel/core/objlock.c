/* The objects lock (sched.h: the lock order): shared entry, exclusive
 * entry (which ends the grace periods of retired slots, grace.c), upgrade
 * and exit.  Its waits spin through wait.c. */
#include <keel/cpu.h>
#include <keel/panic.h>
#include <keel/sched.h>

/* The objects lock's writer (sched.h). */
volatile u32 objects_writer;

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
    LOCKSTAT_T0(t0);

    c->call_pending = call;
    do {
        __atomic_store_n(&c->reading, 0, __ATOMIC_RELEASE);
        kernel_wake_waiters(); /* the writer may have halted draining */
        while (__atomic_load_n(&objects_writer, __ATOMIC_RELAXED))
            kernel_spin_turn(&spins);
        __atomic_exchange_n(&c->reading, 1, __ATOMIC_SEQ_CST);
    } while (__atomic_load_n(&objects_writer, __ATOMIC_ACQUIRE));
    c->call_pending = 0;
    LOCKSTAT_ADD(LC_READER_WAIT, t0);
}

static void objects_lock_exclusive(void)
{
    struct cpu *me = this_cpu();
    u32 spins = 0;
    LOCKSTAT_T0(t0);

    LOCKSTAT_COUNT(LS_EXCL_ENTRY);
    for (;;) {
        u32 none = 0;
        if (!__atomic_load_n(&objects_writer, __ATOMIC_RELAXED) &&
            __atomic_compare_exchange_n(&objects_writer, &none, me->index + 1, false,
                                        __ATOMIC_SEQ_CST, __ATOMIC_RELAXED))
            break;
        kernel_spin_turn(&spins);
    }
    LOCKSTAT_ADD(LC_EXCL_CLAIM, t0);
    LOCKSTAT_T0(t1);
    for (u32 i = 0; i < cpu_count; i++) {
        if (i == me->index)
            continue;
        while (__atomic_load_n(&cpus[i].reading, __ATOMIC_ACQUIRE))
            kernel_spin_turn(&spins);
    }
    LOCKSTAT_ADD(LC_EXCL_DRAIN, t1);
    LOCKSTAT_MARK(excl_since);
    me->kmode = KMODE_EXCLUSIVE;
    me->reads_n = READS_ANY; /* no fill runs meanwhile: nothing to list */
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
    kernel_wake_waiters(); /* a writer may have halted draining */
    objects_lock_exclusive();
}

/* sched.h.  A look at every CPU also raises grace_done (grace.c) to the
 * stamp before the lowest epoch of a CPU in the kernel (or the epoch read
 * before the look, none being in it): every slot stamped up to there is
 * past for good, and later fills of such slots look at no CPU.  Two looks
 * may race and lower it; lower is only later. */
u32 grace_blocker(u64 stamp, const struct cpu *self, const struct slot_set *set)
{
    u64 done = __atomic_load_n(&grace_done, __ATOMIC_RELAXED);
    if (stamp <= done)
        return 0;
    LOCKSTAT_COUNT(LS_GRACE_LOOKS);
    u64 low = __atomic_load_n(&grace_epoch, __ATOMIC_ACQUIRE);
    if (set) /* the lists are read after the set's types became 0 (a call
              * lists a slot before reading its type) */
        __atomic_thread_fence(__ATOMIC_SEQ_CST);
    u32 blocker = 0;
    for (u32 i = 0; i < cpu_count; i++) {
        struct cpu *c = &cpus[i];
        if (!__atomic_load_n(&c->reading, __ATOMIC_ACQUIRE))
            continue;
        u64 e = __atomic_load_n(&c->epoch, __ATOMIC_RELAXED);
        low = e < low ? e : low;
        if (!blocker && e <= stamp && c != self && cpu_may_read(c, set))
            blocker = i + 1;
    }
    if (low > done + 1)
        __atomic_store_n(&grace_done, low - 1, __ATOMIC_RELAXED);
    return blocker;
}

void kernel_regrace(u64 target, const struct slot_set *set)
{
    struct cpu *c = this_cpu();
    u32 spins = 0;
    LOCKSTAT_T0(t0);

#ifdef KEEL_DEBUG_LOCKS
    if (c->locks_held != 1u << LOCK_OBJECTS)
        panic("lock order: cpu %u waits for a grace period holding 0x%x", c->index,
              c->locks_held);
#endif
    LOCKSTAT_COUNT(LS_REGRACE);
    kernel_leave_shared(c);
    /* As grace_blocker above: a CPU in the kernel since an epoch at or
     * past target, or out of it once, can no longer read a slot retired
     * before; nor can one whose call lists what it reads, none of set's
     * slots among them (the call made again looks once more, under the
     * capability locks). */
    for (u32 i = 0; i < cpu_count; i++) {
        struct cpu *o = &cpus[i];
        if (o == c)
            continue;
        WRITE_ONCE(c->grace_wait, i + 1);
        while (__atomic_load_n(&o->reading, __ATOMIC_ACQUIRE) &&
               __atomic_load_n(&o->epoch, __ATOMIC_RELAXED) < target && cpu_may_read(o, set))
            kernel_spin_turn(&spins);
    }
    WRITE_ONCE(c->grace_wait, 0);
    LOCKSTAT_ADD(LC_REGRACE_WAIT, t0);
    kernel_enter_shared(c, true, READS_FRESH);
}

u32 objects_lock_writer(void)
{
    return objects_writer;
}
