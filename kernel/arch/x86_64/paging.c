/* x86-64 memory: the direct map, and four-level page tables for user
 * address spaces.  The upper half of every top-level table is the
 * kernel's, shared with the boot tables. */
#include <arch.h>
#include <keel/abi.h>
#include <keel/cpu.h>
#include <keel/lockstat.h>
#include <keel/string.h>

#include "x86.h"

#define PTE_P 0x1ul
#define PTE_W 0x2ul
#define PTE_U 0x4ul
#define PTE_PWT 0x8ul
#define PTE_PCD 0x10ul
#define PTE_PS 0x80ul
#define PTE_NX (1ul << 63)
#define PTE_ADDR 0x000ffffffffff000ul

extern u64 boot_pml4[512];
static bool nx_enabled;

void *arch_phys_to_virt(u64 phys)
{
    return (void *)(DIRECT_MAP_BASE + phys);
}

u64 arch_virt_to_phys(const void *p)
{
    return x86_virt_to_phys(p);
}

/* The kernel's own tables (the boot PML4), loaded when no user address space
 * may stay: idle, or a thread stopped for another CPU (wait.c). */
void arch_leave_user_space(void)
{
    struct cpu *c = this_cpu();

    if (c->arch.pml4 != (uptr)boot_pml4) {
        write_cr3(x86_virt_to_phys(boot_pml4));
        c->arch.pml4 = (uptr)boot_pml4;
    }
}

/* Zeroes len bytes (a multiple of 8) at p, writing only where memory is
 * not zero already: a read-only scan (repe scasq) finds the next non-zero
 * word, and ZERO_RUN words from it are cleared with rep stosq.  Under an
 * emulating hypervisor every store is costly beyond its instruction (KVM
 * with shadow paging takes its VM-wide MMU lock for each emulated write,
 * so stores on one vCPU hold up every other vCPU's); the memory objects are
 * made from is often zero already (docs/benchmarks.md: "Where the storm's
 * time goes").  Dirty memory costs one scan step per run more. */
#define ZERO_RUN 32

void arch_zero_object(void *p, u64 len)
{
    u64 *w = p, n = len / 8;

    LOCKSTAT_COUNT(LS_ZERO_OBJECTS);
    while (n) {
        bool found;
        __asm__ volatile("repe scasq"
                         : "+D"(w), "+c"(n), "=@ccnz"(found)
                         : "a"(0ul)
                         : "memory");
        if (!found)
            return; /* the rest is zero */
        w--; /* scasq stepped past the non-zero word */
        n++;
        u64 run = n < ZERO_RUN ? n : ZERO_RUN;
        n -= run;
        LOCKSTAT_COUNT(LS_ZERO_RUNS);
        __asm__ volatile("rep stosq" : "+D"(w), "+c"(run) : "a"(0ul) : "memory");
    }
}

u64 arch_level_size(u32 level)
{
    return 1ul << (12 + 9 * level);
}

static u32 index_at(u64 vaddr, u32 level)
{
    return (vaddr >> (12 + 9 * level)) & 511;
}

void arch_vspace_init(void *root)
{
    u64 *pml4 = root;

    nx_enabled = rdmsr(MSR_EFER) & EFER_NXE;
    for (u32 i = 256; i < 512; i++)
        pml4[i] = boot_pml4[i];
}

/* The table holding the entry for vaddr at level, or NULL. */
static u64 *walk(void *root, u32 level, u64 vaddr)
{
    u64 *table = root;

    for (u32 l = PAGING_LEVELS - 1; l > level; l--) {
        u64 e = READ_ONCE(table[index_at(vaddr, l)]);
        if (!(e & PTE_P) || (e & PTE_PS))
            return NULL;
        table = arch_phys_to_virt(e & PTE_ADDR);
    }
    return table;
}

long arch_map(void *root, u32 level, u64 vaddr, u64 phys, u32 rights)
{
    u64 *table = walk(root, level, vaddr);
    u64 e = phys | PTE_P | PTE_U;

    if (!table)
        return KEEL_E_NO_TABLE;
    u64 *slot = &table[index_at(vaddr, level)];
    u64 old = READ_ONCE(*slot);
    if (old & PTE_P)
        return KEEL_E_EXISTS;
    if (level > 0 || (rights & KEEL_RIGHT_WRITE))
        e |= PTE_W;
    if (level == 0 && !(rights & KEEL_RIGHT_EXEC) && nx_enabled)
        e |= PTE_NX;
    if (level == 0 && (rights & MAP_UNCACHED))
        e |= PTE_PCD | PTE_PWT;
    /* Whole-entry updates: a table mapped into two vspaces is changed
     * under either one's lock (and walked under none). */
    if (!__atomic_compare_exchange_n(slot, &old, e, false, __ATOMIC_RELEASE, __ATOMIC_RELAXED))
        return KEEL_E_EXISTS;
    return KEEL_E_OK;
}

bool arch_unmap(void *root, u32 level, u64 vaddr, u64 phys)
{
    u64 *table = walk(root, level, vaddr);

    if (!table)
        return false;
    u64 *slot = &table[index_at(vaddr, level)];
    u64 old = READ_ONCE(*slot);
    /* The MMU of a CPU using the entry may set its accessed and dirty bits
     * meanwhile: try again with what it wrote (a failed exchange updates
     * old) until the entry is gone or is not ours. */
    do {
        if (!(old & PTE_P) || (old & PTE_ADDR) != phys)
            return false;
    } while (!__atomic_compare_exchange_n(slot, &old, 0, false, __ATOMIC_RELEASE,
                                          __ATOMIC_RELAXED));
    return true;
}

bool arch_lookup(void *root, u64 vaddr, u64 *phys, u32 *flags)
{
    u64 *table = walk(root, 0, vaddr);

    if (!table)
        return false;
    u64 e = READ_ONCE(table[index_at(vaddr, 0)]);
    if (!(e & PTE_P) || !(e & PTE_U))
        return false;
    *phys = (e & PTE_ADDR) | (vaddr & 0xfff);
    *flags = KEEL_MAP_PRESENT | (e & PTE_W ? KEEL_MAP_WRITE : 0) | (e & PTE_NX ? 0 : KEEL_MAP_EXEC);
    return true;
}
