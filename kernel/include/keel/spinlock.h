/* Test-and-test-and-set spinlocks.  The _irqsave variants must be used for
 * any lock also taken from interrupt context (the console lock is one), or a
 * CPU interrupted while holding it would deadlock against itself. */
#ifndef KEEL_SPINLOCK_H
#define KEEL_SPINLOCK_H

#include <arch.h>
#include <keel/types.h>

typedef struct {
    volatile u32 locked;
} spinlock_t;

#define SPINLOCK_INIT { 0 }

static inline bool spin_trylock(spinlock_t *l)
{
    return __atomic_exchange_n(&l->locked, 1, __ATOMIC_ACQUIRE) == 0;
}

static inline void spin_lock(spinlock_t *l)
{
    while (!spin_trylock(l)) {
        /* Spin on a plain read so waiters share the cache line. */
        while (__atomic_load_n(&l->locked, __ATOMIC_RELAXED))
            arch_cpu_relax();
    }
}

static inline void spin_unlock(spinlock_t *l)
{
    __atomic_store_n(&l->locked, 0, __ATOMIC_RELEASE);
}

static inline unsigned long spin_lock_irqsave(spinlock_t *l)
{
    unsigned long flags = arch_irq_save();
    spin_lock(l);
    return flags;
}

static inline void spin_unlock_irqrestore(spinlock_t *l, unsigned long flags)
{
    spin_unlock(l);
    arch_irq_restore(flags);
}

#endif
