/* Boot-time bump allocator over the loader's RAM regions. */
#include <keel/bootmem.h>

#define LOW_LIMIT 0x100000ul /* the first MiB holds loader and firmware data */

static const struct boot_info *boot;
static u32 region; /* index of the region being carved */
static u64 next;   /* next free physical address in it */
u64 bootmem_probes; /* candidate ranges examined (tests/unit/test_bootmem_host.py) */

static bool overlaps(u64 a, u64 alen, u64 b, u64 blen)
{
    return a < b + blen && b < a + alen;
}

/* 0 when [base, base + size) is RAM the allocator may hand out; otherwise an
 * address past the conflict (the end of the reserved range, the image or
 * the module it overlaps) below which no candidate can be free either, so
 * a search steps over an obstacle at once instead of a page at a time.
 * (Page steps over the kernel image were 60 ms of a 2-vCPU boot where
 * kernel code is emulated: about 100 instructions a step, 800 steps.) */
static u64 conflict_end(const struct boot_info *bi, u64 base, u64 size)
{
    bool in_ram = false;

    if (base < LOW_LIMIT)
        return LOW_LIMIT;
    for (u32 i = 0; i < bi->nmem; i++) {
        const struct mem_region *r = &bi->mem[i];
        if (r->type == MEM_RAM && base >= r->base && base + size <= r->base + r->size)
            in_ram = true;
        else if (r->type != MEM_RAM && overlaps(base, size, r->base, r->size))
            return r->base + r->size;
    }
    if (!in_ram)
        return base + 4096;
    if (overlaps(base, size, bi->kernel_start, bi->kernel_end - bi->kernel_start))
        return bi->kernel_end;
    for (u32 i = 0; i < bi->nmodules; i++) {
        if (overlaps(base, size, bi->modules[i].base, bi->modules[i].size))
            return bi->modules[i].base + bi->modules[i].size;
    }
    return 0;
}

bool bootmem_range_free(const struct boot_info *bi, u64 base, u64 size)
{
    return conflict_end(bi, base, size) == 0;
}

void bootmem_init(const struct boot_info *bi)
{
    boot = bi;
    region = 0;
    next = 0;
}

u64 bootmem_alloc(u64 size, u64 align)
{
    for (; region < boot->nmem; region++) {
        const struct mem_region *r = &boot->mem[region];
        if (r->type != MEM_RAM)
            continue;
        u64 end = r->base + r->size;
        if (next < r->base)
            next = r->base;
        /* The direct map covers only the first 4 GiB during boot. */
        while (ALIGN_UP(next, align) + size <= MIN(end, 0x100000000ul)) {
            u64 base = ALIGN_UP(next, align);
            u64 past = conflict_end(boot, base, size);
            bootmem_probes++;
            if (!past) {
                next = base + size;
                return base;
            }
            next = past; /* > base: every candidate below it overlaps the same range */
        }
    }
    return 0;
}

u64 bootmem_ram_bytes(const struct boot_info *bi)
{
    u64 total = 0;

    for (u32 i = 0; i < bi->nmem; i++) {
        if (bi->mem[i].type == MEM_RAM)
            total += bi->mem[i].size;
    }
    return total;
}

/* Splits [base, end) around the image and the modules. */
static void emit_free(u64 base, u64 end, void (*fn)(u64, u64))
{
    u64 cut_base = end, cut_end = end;

    if (base >= end)
        return;
    /* the first excluded range that starts inside [base, end) */
    if (boot->kernel_start < end && boot->kernel_end > base) {
        cut_base = boot->kernel_start;
        cut_end = boot->kernel_end;
    }
    for (u32 i = 0; i < boot->nmodules; i++) {
        const struct boot_module *m = &boot->modules[i];
        if (m->base < end && m->base + m->size > base && m->base < cut_base) {
            cut_base = m->base;
            cut_end = m->base + m->size;
        }
    }
    if (cut_base >= end) {
        fn(base, end);
        return;
    }
    emit_free(base, MAX(cut_base, base), fn);
    emit_free(ALIGN_UP(cut_end, 4096), end, fn);
}

void bootmem_for_each_free(void (*fn)(u64 base, u64 end))
{
    for (; region < boot->nmem; region++) {
        const struct mem_region *r = &boot->mem[region];
        if (r->type != MEM_RAM)
            continue;
        u64 base = MAX(MAX(r->base, next), LOW_LIMIT);
        u64 end = MIN(r->base + r->size, 0x100000000ul);
        emit_free(base, end, fn);
        next = 0;
    }
    next = ~0ul;
}
