/* The "host" architecture: the portable core built as a shared library for
 * the Python tests.  No CPUs, no privilege levels: just memory. */
#ifndef ARCH_CPU_H
#define ARCH_CPU_H

#include <keel/types.h>

struct arch_cpu {
    u64 unused;
};

struct arch_tcb {
    u64 pc, sp, arg, result[7];
};

struct cpu;
void *host_cpu_self(void);

static inline void *arch_cpu_self(void)
{
    return host_cpu_self();
}

static inline void arch_cpu_relax(void)
{
}

static inline unsigned long arch_irq_save(void)
{
    return 0;
}

static inline void arch_irq_restore(unsigned long flags)
{
    (void)flags;
}

static inline void arch_irq_disable(void)
{
}

static inline void arch_irq_enable(void)
{
}

static inline void arch_idle(void)
{
}

#endif
