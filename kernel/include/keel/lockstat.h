/* Lock statistics of a measuring build (make KCC="gcc -DKEEL_LOCK_STATS"):
 * per CPU, how often and how long each lock class was waited for, how
 * often the objects lock was taken exclusive (and which calls had to run
 * again exclusive), how long it and the capability lock were held.
 * Printed when the machine powers off (debug_console.c); docs/benchmarks.md
 * ("Where the storm's time goes") has the method and the figures.  Without
 * the flag every hook is empty: nothing on any path changes. */
#ifndef KEEL_LOCKSTAT_H
#define KEEL_LOCKSTAT_H

#include <keel/types.h>

enum lockstat_count {
    LS_SHARED_ENTRY,   /* objects lock taken shared (syscall and capfast entries) */
    LS_EXCL_ENTRY,     /* objects lock taken exclusive (by label, fault, irq) */
    LS_EXCL_UPGRADE,   /* a shared call that returned KEEL_E_RETRY, run again */
    LS_CAPS_TAKEN,     /* capability lock acquisitions */
    LS_CAPS_CONTENDED, /* ... that found it held */
    LS_OTHER_CONTENDED,
    LS_GRACE_RETRY,    /* a fill that found its slot still in its grace period */
    LS_TLB_SHOOTDOWN,
    LS_REGRACE,        /* ... that waited for it outside the lock (kernel_regrace) */
    LS_ZERO_OBJECTS,   /* objects zeroed (arch_zero_object) */
    LS_ZERO_RUNS,      /* ... runs of words written there (the rest was zero) */
    LS_WAIT_HALTS,     /* waits that halted (wait.c) */
    LS_KICKS,          /* kicks sent to halted waiters */
    LS_FINISH_DUE,     /* pending region revokes finished on the way out (grace.c) */
    LS_FINISH_WAIT,    /* ... finished by a call that needed them (KEEL_E_FINISH) */
    LS_GRACE_LOOKS,    /* looks at every CPU for a grace period (objlock.c: grace_blocker) */
    LS_SPIN_TURNS,     /* turns of a wait in the kernel (wait.c: kernel_spin_turn) */
    LS_NCOUNT,
};

enum lockstat_cycles {
    LC_EXCL_CLAIM,  /* exclusive: waiting for another writer */
    LC_EXCL_DRAIN,  /* exclusive: waiting for the readers to leave */
    LC_READER_WAIT, /* shared entry: waiting for a writer to finish */
    LC_EXCL_HELD,   /* objects lock held exclusive */
    LC_CAPS_SPIN,   /* capability lock: waiting */
    LC_CAPS_HELD,   /* capability lock: held */
    LC_OTHER_SPIN,  /* every other lock class: waiting */
    LC_TLB_WAIT,    /* shootdowns: waiting for the acknowledgements */
    LC_REGRACE_WAIT, /* kernel_regrace: waiting for a grace period, holding nothing */
    LC_NCYCLES,
};

#define LOCKSTAT_LABELS 64

#ifdef KEEL_LOCK_STATS
struct lockstat {
    u64 count[LS_NCOUNT];
    u64 cycles[LC_NCYCLES];
    u64 upgrade_by_label[LOCKSTAT_LABELS]; /* label % LOCKSTAT_LABELS */
    u64 excl_since, caps_since;            /* when the hold began */
} __aligned(64);

extern struct lockstat lockstats[];

static inline u64 lockstat_now(void)
{
    u32 lo, hi;
    __asm__ volatile("rdtsc" : "=a"(lo), "=d"(hi));
    return (u64)hi << 32 | lo;
}

struct lockstat *lockstat_mine(void);
#define LOCKSTAT_COUNT(what) (lockstat_mine()->count[what]++)
#define LOCKSTAT_ADD(what, t0) (lockstat_mine()->cycles[what] += lockstat_now() - (t0))
#define LOCKSTAT_T0(var) u64 var = lockstat_now()
#define LOCKSTAT_MARK(field) (lockstat_mine()->field = lockstat_now())
#define LOCKSTAT_HELD(what, field)                                                              \
    do {                                                                                        \
        struct lockstat *ls_ = lockstat_mine();                                                 \
        ls_->cycles[what] += lockstat_now() - ls_->field;                                       \
    } while (0)
#define LOCKSTAT_UPGRADE(label)                                                                 \
    do {                                                                                        \
        struct lockstat *ls_ = lockstat_mine();                                                 \
        ls_->count[LS_EXCL_UPGRADE]++;                                                          \
        ls_->upgrade_by_label[(label) % LOCKSTAT_LABELS]++;                                     \
    } while (0)
void lockstat_print(void);
#else
#define LOCKSTAT_COUNT(what) ((void)0)
#define LOCKSTAT_ADD(what, t0) ((void)0)
#define LOCKSTAT_T0(var) ((void)0)
#define LOCKSTAT_MARK(field) ((void)0)
#define LOCKSTAT_HELD(what, field) ((void)0)
#define LOCKSTAT_UPGRADE(label) ((void)0)
static inline void lockstat_print(void)
{
}
#endif

#endif
