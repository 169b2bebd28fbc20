/* The per-CPU run queues (sched.c), for the IPC fast path's look at its
 * own CPU's queue (fastpath.c) too. */
#ifndef KEEL_RUNQUEUE_H
#define KEEL_RUNQUEUE_H

#include <keel/sched.h>

#define PRIO_WORDS (SCHED_PRIO_LEVELS / 64)

struct runqueue {
    spinlock_t lock;
    volatile u32 nr;           /* threads queued (not the running one) */
    u64 bitmap[PRIO_WORDS];    /* bit p: level p is not empty */
    struct tcb *head[SCHED_PRIO_LEVELS]; /* circular lists: tail = head->rq_prev */
};

extern struct runqueue runqueues[MAX_CPUS];

static inline struct runqueue *rq_of(u32 cpu)
{
    return &runqueues[cpu];
}

/* Highest non-empty level, or -1. */
static inline int rq_best(const struct runqueue *rq)
{
    for (int w = PRIO_WORDS - 1; w >= 0; w--) {
        if (rq->bitmap[w])
            return w * 64 + 63 - __builtin_clzl(rq->bitmap[w]);
    }
    return -1;
}

/* May `to`, woken by the current thread, run here at once instead of being
 * queued?  When it may run on this CPU, nothing urgent waits (no pending
 * reschedule), and no queued thread of its level or above would have gone
 * first.  A lock-free look: a hint, as the exit path's own.  Inline: the
 * IPC fast path asks it once per call. */
static inline __attribute__((always_inline)) bool sched_direct_ok(struct cpu *c,
                                                                    const struct tcb *to)
{
    if (c->need_resched || (to->affinity >= 0 && (u32)to->affinity != c->index))
        return false;
    const struct runqueue *rq = rq_of(c->index);
    return !READ_ONCE(rq->nr) || rq_best(rq) < (int)to->prio;
}

#endif
