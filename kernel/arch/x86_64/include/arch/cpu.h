/* x86-64 per-CPU state and the inline primitives the core may use. */
#ifndef ARCH_CPU_H
#define ARCH_CPU_H

#include <arch/frame.h>
#include <arch/layout.h>
#include <keel/types.h>

struct tss {
    u32 reserved0;
    u64 rsp[3];
    u64 reserved1;
    u64 ist[7];
    u64 reserved2;
    u16 reserved3;
    u16 iomap_base;
} __packed;

_Static_assert(sizeof(struct tss) == 104, "tss layout");

/* A thread's registers (struct trap_frame, <arch/frame.h>) live in its
 * TCB: the CPU and the entry code (asm/x86_64/entry.S) write them there
 * directly. */
struct arch_tcb {
    struct trap_frame frame __aligned(16); /* its end is where entries store */
    u8 fpu[512] __aligned(16);             /* fxsave area */
};

/* Each CPU has its own GDT because the TSS descriptor's busy bit is per
 * CPU; the IDT is shared (it is never written after boot). */
struct arch_cpu {
    u64 gdt[GDT_ENTRIES];
    struct tss tss;
    u8 iomap[8192 + 1]; /* follows the TSS: one bit per port, 1 = denied */
    uptr pml4; /* kernel address of the top-level table this CPU last loaded into
                * CR3 (0: not known): compared without converting to physical */
    union { /* the range open in iomap (first > last: none); io_range for
             * ioport_switch's one compare (x86 is little-endian) */
        struct {
            u32 io_first, io_last;
        };
        u64 io_range;
    };
    u64 ist_top[IST_COUNT]; /* tops of the IST stacks (kernel virtual) */
};

/* Not volatile: the per-CPU base never changes under running kernel code
 * (set once per CPU at boot, cpu.c, before any C code asks for it; kernel
 * code is never preempted or moved), so the compiler may load it once per
 * function instead of at every this_cpu(). */
static inline void *arch_cpu_self(void)
{
    void *p;
    __asm__("movq %%gs:0, %0" : "=r"(p));
    return p;
}

static inline void arch_cpu_relax(void)
{
    __asm__ volatile("pause" ::: "memory");
}

static inline unsigned long arch_irq_save(void)
{
    unsigned long flags;
    __asm__ volatile("pushfq; popq %0; cli" : "=r"(flags) : : "memory");
    return flags;
}

static inline void arch_irq_restore(unsigned long flags)
{
    if (flags & (1ul << 9))
        __asm__ volatile("sti" ::: "memory");
}

static inline void arch_irq_disable(void)
{
    __asm__ volatile("cli" ::: "memory");
}

static inline void arch_irq_enable(void)
{
    __asm__ volatile("sti" ::: "memory");
}

/* Enables interrupts and halts in one step (STI's one-instruction shadow
 * covers HLT), so a wake-up that arrives after the caller checked its
 * condition with interrupts off is not lost.  Returns with them enabled. */
static inline void arch_idle(void)
{
    __asm__ volatile("sti; hlt" ::: "memory");
}

#endif
