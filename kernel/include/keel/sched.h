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
 * Locks and their order (a CPU takes them only in this order, and holds
 * at most one lock of each class at a time):
 *
 *   1. objects lock      a readers-writer lock (objlock.c: per-CPU reader
 *                        flags and one writer word), taken on every
 *                        entry from user mode (kernel_enter) and by an idle
 *                        CPU looking for work; shared by default.  Held
 *                        shared, every object's existence, the derivation
 *                        tree's shape as an exclusive holder sees it, the
 *                        thread bindings (cspace, vspace, fault endpoint,
 *                        bound notification) and the IRQ table stay as
 *                        they are, and every object it reaches lives on:
 *                        only an exclusive holder destroys an object, or a
 *                        shared one once no capability names it and the
 *                        grace period of the last has ended (grace.c).
 *                        Under the capability locks (4) shared holders fill
 *                        empty slots (copy, mint, retype, a reply
 *                        capability given to a receiver), a reply empties
 *                        its reply capability's slot, a move moves one,
 *                        and delete, move and
 *                        revoke run when they destroy nothing and need no
 *                        type's hook, or only the mapping hook of a paging
 *                        or frame capability mapped nowhere (grace.c); the
 *                        copy and delete of the common case come straight
 *                        from the entry (capfast.c): a slot they empty is
 *                        retired - its capability stays readable by CPUs
 *                        that looked it up - and is filled again only after
 *                        a grace period (every CPU left the kernel or
 *                        entered after it; a fill waits for it holding
 *                        nothing, kernel_regrace).  The revoke of an
 *                        untyped region retires what was made from it and
 *                        destroys the objects after the grace period
 *                        (grace.c: region_retire, grace_finish).  So these
 *                        run exclusive:
 *                        delete, revoke and move otherwise, retype of a
 *                        vspace, messages carrying capabilities or ending a
 *                        wait on a bound notification, thread operations,
 *                        faults, interrupts, batches.  A system call
 *                        whose label says so enters exclusive
 *                        (syscall_entry_reads); a shared operation
 *                        that finds it needs more returns KEEL_E_RETRY
 *                        before changing anything; the caller upgrades
 *                        (drops the shared hold, waits for the exclusive
 *                        one) and runs it again from the start.  Exclusive
 *                        implies every lock below: they are not taken then
 *                        (obj_lock), nor on a machine with one CPU.
 *                        Writers go first: a claimed writer word holds new
 *                        readers back.
 *   2. mapping lock      one of a small array hashed by slot address
 *                        (vspace.c): a paging capability's mapping state
 *                        (CAP_MAPPED, cap.a, cap.b), and whether a map may
 *                        still use the slot: map checks its type under it,
 *                        and a shared delete or revoke of an unmapped one
 *                        (grace.c) holds it around the capability locks.
 *   3. endpoint or       the object's own lock (kobj.lock): an endpoint's
 *      notification      queue and its receivers/senders/room lists; a
 *                        notification's word and waiters.  A thread on one
 *                        of these lists is the list owner's: the CPU that
 *                        pops it under the lock may write its registers.
 *   4. capability locks  CAPS_STRIPES spinlocks (object.h), short, one
 *                        chosen by hashing a key (caps_stripe): a
 *                        derivation family's - the capabilities made from
 *                        one untyped region and everything derived from
 *                        them, keyed by the region (slot.family; FAMILY_ROOT
 *                        above every region) - guards its derivation links,
 *                        the reference counts of its objects (all of an
 *                        object's capabilities are in one family) and, for
 *                        the family a region heads, the region's watermark
 *                        and retypes (cap.b); a slot's own (keyed by its
 *                        address) guards filling it (checked empty under
 *                        it, published with its type written last, so a
 *                        lock-free lookup sees an empty slot or a whole
 *                        capability) and a reply capability, which has no
 *                        links.  Emptying a slot shared takes its family's
 *                        (its type written 0 first; SLOT_RETIRING until its
 *                        stamp: grace.c).  So the capability storms of
 *                        threads with regions of their own share no lock.
 *                        A holder of several (a fill: its source's family
 *                        and its slot; a revoke: every family in the
 *                        subtree) takes them at once in ascending order,
 *                        and nothing else meanwhile.  A family changes only
 *                        exclusive (cap.c: family_merge).  Retype zeroes
 *                        and initialises objects outside them: the memory
 *                        and the target slots are reserved first.
 *   5. vspace lock       kobj.lock of a vspace: its page tables.  Readers
 *                        (user_copy, lookup) walk them without it: no table
 *                        is freed while the objects lock is held shared.
 *   6. thread lock       kobj.lock of a TCB: its state and the hand-over
 *                        between "running on a CPU" (cpu >= 0) and "queued":
 *                        sched_make_runnable and the exit path's decision to
 *                        keep, requeue or drop the current thread.
 *   7. runqueue lock     one per CPU (struct runqueue in sched.c): its queue,
 *                        its bitmap and count; a thread's queued/rq links.
 *                        Balancing moves a thread by dequeueing under the
 *                        victim's lock, then enqueueing under its own.
 *   8. console lock      (printk) innermost; taken with interrupts saved.
 *
 * Building with -DKEEL_DEBUG_LOCKS (make KCC="gcc -DKEEL_DEBUG_LOCKS")
 * makes every lock operation check this order (a class may be taken only
 * when no class at or after it is held) and panic on a violation.
 *
 * Cross-CPU requests: only an exclusive holder stops a thread on another
 * CPU (thread_stop), and that CPU is then in user mode or waiting for the
 * objects lock; a TLB shootdown is made by shared holders too, holding a
 * mapping and a vspace lock.  So every wait for a lock except a runqueue
 * lock (whose holders never wait for anything), and every wait for another
 * CPU's acknowledgement, serves this CPU's pending requests while it spins,
 * and halts after a while until kicked (below: wait_halted); a halted
 * waiter takes the IPIs and the timer tick, and no device interrupt, which
 * would want the objects lock.
 */
#ifndef KEEL_SCHED_H
#define KEEL_SCHED_H

#include <keel/cpu.h>
#include <keel/lockstat.h>
#include <keel/object.h>
#include <keel/spinlock.h>

#define SCHED_PRIO_LEVELS 256
#define SCHED_PRIO_DEFAULT 128
#define SCHED_SLICE_TICKS 2    /* 20 ms at 100 Hz */
#define SCHED_BALANCE_TICKS 5  /* 50 ms at 100 Hz */
/* A CPU with no thread waiting in its queue needs no tick to share itself
 * out: its timer then ticks this many times slower (one tick per balance,
 * each counted as this many; sched.c: sched_tick_rate).  Each tick is an
 * exit, an injected interrupt and emulated kernel code on kvm_pvm: an idle
 * 4-vCPU guest took 10.7% of a host core at 100 Hz, 2.6% at this rate
 * (docs/benchmarks.md). */
#define SCHED_SLOW_TICKS SCHED_BALANCE_TICKS


/* Lock classes, in the order above (debug builds check it). */
enum lock_class {
    LOCK_OBJECTS = 0,
    LOCK_MAPPING,
    LOCK_WAITQ,
    LOCK_CAPS,
    LOCK_VSPACE,
    LOCK_THREAD,
    LOCK_RQ,
};

#ifdef KEEL_DEBUG_LOCKS
void lock_check(u32 cls);
void lock_release(u32 cls);
#else
static inline void lock_check(u32 cls)
{
    (void)cls;
}

static inline void lock_release(u32 cls)
{
    (void)cls;
}
#endif

/* Grace periods (grace.c): the epoch a slot emptied shared is stamped
 * with, and the last stamp known past (raised by exclusive holders and by
 * every look at all CPUs). */
extern u64 grace_epoch, grace_done;
/* The slots a look at the CPUs asks about: one a fill waits for, or a
 * pending region revoke's (grace.c); lo and hi bound their addresses, so a
 * listed slot outside them is passed over in two comparisons. */
struct slot_set {
    struct slot *const *v;
    u32 n;
    const struct slot *lo, *hi;
};
/* Has every CPU but self (NULL: none) left the kernel, or entered it after
 * the stamp, since the slots stamped with it were retired?  0 if so, else
 * the index + 1 of a CPU that has not.  For the slots of set (NULL: any
 * slot), a CPU whose call lists what it reads and listed none of them is
 * past too (cpu_may_read).  objlock.c. */
u32 grace_blocker(u64 stamp, const struct cpu *self, const struct slot_set *set);
void grace_exclusive(void);
/* Could c's current hold of the objects lock read a slot of set (NULL: any
 * slot)?  Yes unless its call lists what it reads (cpu.reads) and none of
 * them is in set. */
static inline bool cpu_may_read(const struct cpu *c, const struct slot_set *set)
{
    if (!set)
        return true;
    u32 n = __atomic_load_n(&c->reads_n, __ATOMIC_ACQUIRE);
    if (n > READS_MAX)
        return true;
    for (u32 i = 0; i < n; i++) {
        const struct slot *r = c->reads[i];
        if (r < set->lo || r > set->hi)
            continue;
        for (u32 j = 0; j < set->n; j++) {
            if (set->v[j] == r)
                return true;
        }
    }
    return false;
}
/* Returned by an operation that must run exclusive; never seen by users. */
#define KEEL_E_RETRY (-1l)
/* Returned, before changing anything, by a shared fill whose slot is still
 * in its grace period (grace.c): the caller waits for the period to end
 * without holding the objects lock (kernel_regrace) and runs the call again
 * shared; never seen by users. */
#define KEEL_E_GRACE (-2l)
/* Returned by a shared revoke of an untyped region that retired what was
 * made from it (grace.c: region_retire): the call is done; the objects are
 * destroyed after the grace period (grace_finish) by this CPU - at its
 * first way out of the kernel that finds the period over
 * (grace_finish_due), before it idles, or when a call needs the region's
 * memory (KEEL_E_FINISH) - or by any exclusive holder; never seen by
 * users. */
#define KEEL_E_PENDING (-3l)
/* Returned, before changing anything, by a call that needs this CPU's
 * pending region revoke finished (a retype from that region, another
 * region's revoke): the caller has it finished (grace_wait_finish) and
 * runs the call again; never seen by users. */
#define KEEL_E_FINISH (-4l)
void grace_finish(void);
/* CPUs with a pending region revoke (grace.c), and this CPU's: */
extern u32 pending_regions;
bool grace_pending_here(void);
/* grace_finish if this CPU has a pending region revoke whose grace period
 * is over (objects lock shared, nothing else held). */
void grace_finish_due(void);
/* This CPU's pending region revoke, if any, finished: its grace period
 * waited for holding nothing (kernel_regrace), then grace_finish - before
 * a call that needs it finished (KEEL_E_FINISH) and before idling. */
void grace_wait_finish(void);
/* A retype from region r: KEEL_E_FINISH if this CPU's pending revoke holds
 * r's memory, KEEL_E_RETRY if another CPU's does (exclusive finishes it),
 * else KEEL_E_OK.  Under the capability locks. */
long grace_region_pending(const struct slot *r);

enum kernel_mode { KMODE_NONE = 0, KMODE_SHARED, KMODE_EXCLUSIVE };

/* The objects lock's writer word (objlock.c): 0, or the index + 1 of the
 * CPU that holds or claims it; readers are per CPU (cpu.reading). */
extern volatile u32 objects_writer;
/* kernel_enter's wait while a writer holds or claims the lock (objlock.c);
 * call: for the current thread's system call, which a stop request served
 * meanwhile makes again (cpu.call_pending). */
void kernel_enter_wait(struct cpu *c, bool call);

/* A reader announces itself in its own cpu.reading with an exchange (a
 * full barrier), then looks for a writer: none, it holds the lock; one, it
 * steps back and waits (kernel_enter_wait).  Inline: on the path of every
 * system call, where one atomic operation is all it should cost. */
static inline __attribute__((always_inline)) void kernel_enter_shared(struct cpu *c, bool call,
                                                                     u32 reads)
{
    WRITE_ONCE(c->in_kernel, 1);
    lock_check(LOCK_OBJECTS);
    /* Before the announcement (grace.c): what this hold reads - READS_FRESH
     * (any slot until call_one starts a listed call's list), or 0 (nothing
     * yet) for an entry known to read no slot before its list starts: an
     * interrupt or an idle CPU's return, which only take the way out
     * (sched_exit_kernel); a listed call (syscall.h: syscall_entry_reads). */
    c->reads_n = reads;
    __atomic_exchange_n(&c->reading, 1, __ATOMIC_SEQ_CST);
    LOCKSTAT_COUNT(LS_SHARED_ENTRY);
    if (__builtin_expect(__atomic_load_n(&objects_writer, __ATOMIC_ACQUIRE) != 0, 0))
        kernel_enter_wait(c, call);
    /* After the announcement: slots retired before this epoch are not
     * reachable from here (grace.c). */
    c->epoch = __atomic_load_n(&grace_epoch, __ATOMIC_ACQUIRE);
    c->kmode = KMODE_SHARED;
}

/* Entry from user mode (interrupts disabled): the objects lock, shared,
 * for an entry that reads no slot - an interrupt's, an idle CPU's, which
 * only take the way out (sched_exit_kernel). */
static inline __attribute__((always_inline)) void kernel_enter(void)
{
    kernel_enter_shared(this_cpu(), false, 0);
}

/* The same for a system call of the current thread: only a wait for the
 * lock can see a stop request (an exclusive holder's), and then the call
 * is made again when the thread next runs (cpu_serve_requests). */
static inline __attribute__((always_inline)) void kernel_enter_syscall(u32 reads)
{
    kernel_enter_shared(this_cpu(), true, reads);
}

/* The same, exclusive (faults, interrupts for user drivers). */
void kernel_enter_exclusive(void);
/* From shared to exclusive; nothing but the objects lock may be held.  In
 * between other CPUs may run exclusive operations: whatever was looked up
 * must be looked up again. */
void kernel_upgrade(void);
/* From shared to shared again, once every CPU is past a stamp below
 * target: drops the hold, waits (holding nothing) until every other CPU
 * has left the kernel or entered it at target or later, and takes the lock
 * shared again.  Only the CPUs that may read a slot of set (NULL: any
 * slot) are waited for: the slot a fill waits for (the grace_slot a
 * KEEL_E_GRACE leaves), a pending region revoke's (grace_wait_finish).
 * Nothing but the objects lock may be held; whatever was looked up must be
 * looked up again. */
void kernel_regrace(u64 target, const struct slot_set *set);

/* Halted waits (wait.c).  A wait that has spun wait_spins_before_halt
 * turns sets this CPU's bit in wait_halted, looks at its condition once
 * more, and halts (arch_wait_halt) until kicked: with more vCPUs than host
 * cores the CPU waited for may be one the host does not run, and a
 * spinning waiter keeps the host core from it.  Whoever ends a wait - a
 * CPU releasing the objects lock or a per-object lock, acknowledging a
 * request - then finds wait_halted non-zero and kicks every CPU in it
 * (kernel_kick_waiters): one load and a branch on each of those paths.
 * A kick lost between a release and its load of the mask (the load may
 * pass the store on x86) costs a halted waiter one timer tick, which a
 * halted wait still takes. */
extern volatile u64 wait_halted;
extern u32 wait_spins_before_halt; /* keel.waitspin=N; 0: spin only */
void kernel_kick_waiters(void);

static inline __attribute__((always_inline)) void kernel_wake_waiters(void)
{
    if (__builtin_expect(__atomic_load_n(&wait_halted, __ATOMIC_RELAXED) != 0, 0))
        kernel_kick_waiters();
}

/* Drops the objects lock, whichever way this CPU holds it: a plain store
 * (no atomic operation on the way out). */
static inline __attribute__((always_inline)) void kernel_leave(void)
{
    struct cpu *c = this_cpu();

    if (c->kmode == KMODE_EXCLUSIVE) {
        LOCKSTAT_HELD(LC_EXCL_HELD, excl_since);
        __atomic_store_n(&objects_writer, 0, __ATOMIC_RELEASE);
    }
    else if (c->kmode == KMODE_SHARED)
        __atomic_store_n(&c->reading, 0, __ATOMIC_RELEASE);
    c->kmode = KMODE_NONE;
    lock_release(LOCK_OBJECTS);
    kernel_wake_waiters();
}

/* kernel_leave for a CPU known to hold the objects lock shared. */
static inline __attribute__((always_inline)) void kernel_leave_shared(struct cpu *c)
{
    __atomic_store_n(&c->reading, 0, __ATOMIC_RELEASE);
    c->kmode = KMODE_NONE;
    lock_release(LOCK_OBJECTS);
    kernel_wake_waiters();
}

/* The objects lock's writer (CPU index + 1, 0: none), for the watchdog. */
u32 objects_lock_writer(void);

/* Is this CPU in the kernel holding the objects lock shared?  Only then
 * are per-object locks taken: an exclusive holder is alone among objects,
 * and the host build of the core (no mode) is single-threaded. */
static inline bool kernel_shared(void)
{
    return this_cpu()->kmode == KMODE_SHARED;
}

void obj_lock_spin(spinlock_t *l);
#ifdef KEEL_LOCK_STATS
void lockstat_lock(spinlock_t *l, u32 cls); /* wait.c: obj_lock, counted */
#endif
/* One turn of any wait in the kernel (wait.c): serves requests from
 * other CPUs (the CPU waited for may be waiting for this one), lets the
 * watchdog look, and after a while halts until kicked (above). */
void kernel_spin_turn(u32 *spins);

/* The acquisition itself, counted in measuring builds (the capability
 * locks' too: caps_stripe_lock). */
static inline __attribute__((always_inline)) void obj_lock_take(spinlock_t *l, u32 cls)
{
#ifdef KEEL_LOCK_STATS
    lockstat_lock(l, cls);
#else
    (void)cls;
    if (!spin_trylock(l))
        obj_lock_spin(l);
#endif
}

/* One CPU: nothing to exclude (kernel code runs with interrupts off). */
static inline __attribute__((always_inline)) void obj_lock(spinlock_t *l, u32 cls)
{
    if (!kernel_shared() || cpu_count == 1)
        return;
    lock_check(cls);
    obj_lock_take(l, cls);
}

static inline __attribute__((always_inline)) void obj_unlock(spinlock_t *l, u32 cls)
{
    if (!kernel_shared() || cpu_count == 1)
        return;
    if (cls == LOCK_CAPS)
        LOCKSTAT_HELD(LC_CAPS_HELD, caps_since);
    spin_unlock(l);
    lock_release(cls);
    kernel_wake_waiters();
}
/* The capability locks (object.h: caps_stripes), taken as obj_lock takes
 * one: only shared, on more than one CPU.  A holder of several took them
 * in ascending order, all at once, and takes no other before it drops
 * them: so no two holders wait for each other. */
static inline __attribute__((always_inline)) bool caps_locking(void)
{
    return kernel_shared() && cpu_count > 1;
}

static inline __attribute__((always_inline)) void caps_stripe_lock(u32 i)
{
    obj_lock_take(&caps_stripes[i], LOCK_CAPS);
}

/* Stripes a and b: one, or two in ascending order (caps_locking known). */
static inline __attribute__((always_inline)) void caps_stripes_lock(u32 a, u32 b)
{
    lock_check(LOCK_CAPS);
    caps_stripe_lock(a < b ? a : b);
    if (a != b)
        caps_stripe_lock(a < b ? b : a);
}

static inline __attribute__((always_inline)) void caps_stripes_unlock(u32 a, u32 b)
{
    LOCKSTAT_HELD(LC_CAPS_HELD, caps_since);
    spin_unlock(&caps_stripes[a]);
    if (a != b)
        spin_unlock(&caps_stripes[b]);
    lock_release(LOCK_CAPS);
    kernel_wake_waiters();
}

static inline __attribute__((always_inline)) void caps_lock_pair(u32 a, u32 b)
{
    if (caps_locking())
        caps_stripes_lock(a, b);
}

static inline __attribute__((always_inline)) void caps_unlock_pair(u32 a, u32 b)
{
    if (caps_locking())
        caps_stripes_unlock(a, b);
}

/* Any set of stripes, ascending and distinct (cap.c locks them in order);
 * n is set to 0 first (the rest is not read). */
struct caps_hold {
    u32 n;
    u8 s[CAPS_STRIPES];
};

static inline void caps_hold_add(struct caps_hold *h, u64 key)
{
    u8 i = (u8)caps_stripe(key);
    u32 j = h->n;

    while (j && h->s[j - 1] > i)
        j--;
    if (j && h->s[j - 1] == i)
        return;
    for (u32 k = h->n; k > j; k--)
        h->s[k] = h->s[k - 1];
    h->s[j] = i;
    h->n++;
}

static inline bool caps_hold_has(const struct caps_hold *h, u64 key)
{
    u8 i = (u8)caps_stripe(key);

    for (u32 j = 0; j < h->n; j++) {
        if (h->s[j] == i)
            return true;
    }
    return false;
}

void caps_hold_lock(const struct caps_hold *h);
void caps_hold_unlock(const struct caps_hold *h);

/* Copy and mint (cnode.c, capfast.c): slot_derive under the lock of src's
 * family (its links, its object's count: read without a lock, so checked
 * again under it) and dst's own (a fill's). */
static inline __attribute__((always_inline)) long slot_derive_shared(struct slot *dst,
                                                                    struct slot *src, u64 rights,
                                                                    bool mint, u64 badge)
{
    if (!caps_locking())
        return slot_derive(dst, src, rights, mint, badge);
    for (;;) {
        u64 fam = src ? src->family : FAMILY_ROOT;
        u32 fa = caps_stripe(fam), db = caps_stripe((u64)dst);
        caps_stripes_lock(fa, db);
        if (!src || !src->cap.type || src->family == fam) {
            long err = slot_derive(dst, src, rights, mint, badge);
            caps_stripes_unlock(fa, db);
            return err;
        }
        caps_stripes_unlock(fa, db);
    }
}

/* Leaves the kernel on this CPU: runs the current thread if it may go on,
 * else the next runnable one, else idles.  Never returns. */
__noreturn void sched_exit_kernel(void);

/* The fast paths' entry (fastpath.c, capfast.c) for a system call of c's
 * current thread: the objects lock, shared, then that thread - or, when a
 * stop served while waiting for the lock took it away, out (its call is
 * made again when it next runs). */
static inline __attribute__((always_inline)) struct tcb *kernel_enter_call(struct cpu *c,
                                                                          u32 reads)
{
    kernel_enter_shared(c, true, reads); /* kernel_enter_syscall */
    struct tcb *t = c->current;
    if (!t)
        sched_exit_kernel();
    return t;
}
/* The per-CPU idle loop, entered once at boot on every CPU. */
__noreturn void sched_idle(void);

void sched_make_runnable(struct tcb *t);
/* Ensures t is neither queued nor running on any CPU (its registers and
 * FPU state are saved in the TCB when this returns). */
void thread_stop(struct tcb *t);
/* The timer tick that interrupted a user thread, without the objects lock
 * (only this CPU's state is written): ends time slices and looks for a
 * better thread or an imbalance.  True when the kernel must be entered;
 * then sched_timer_balance runs (objects lock shared) before the exit path. */
bool sched_timer_tick(void);
/* The timer's rate on c: slow while nothing waits in its queue, else the
 * normal rate.  At every tick and wake-up IPI; lock-free. */
void sched_tick_rate(struct cpu *c);
void sched_timer_balance(void);
void sched_yield(void);
/* Thread parameters (tcb.c checks the arguments): affinity -1 or an online
 * CPU, priority 0..255. */
void sched_set_affinity(struct tcb *t, s32 cpu);
void sched_set_priority(struct tcb *t, u32 prio);
/* Threads waiting in this CPU's run queue (lock-free read). */
u32 sched_queued(u32 cpu);

/* Flushes user TLB entries on every CPU that may hold some (not idle).
 * Every user mapping that goes away (an unmap, a destroyed address space)
 * is shot down, so tlb_generation, which each shootdown advances, tells a
 * holder of kernel pointers into user pages (the batch loop, syscall.c)
 * when to translate them again. */
void tlb_shootdown(void);
extern u64 tlb_generation;
/* Called from interrupts and every lock spin: serve cross-CPU requests. */
void cpu_serve_requests(void);

/* watchdog.c: each CPU's timer tick is its heartbeat; any CPU that ticks
 * or spins for a lock checks the others about once a second and prints
 * every CPU's state once when one has not ticked for WATCHDOG_STALL_US.
 * Weak so the host build of the core (no watchdog) links without it. */
#define WATCHDOG_STALL_US 2000000ul
void watchdog_poll(void) __attribute__((weak));

#endif
