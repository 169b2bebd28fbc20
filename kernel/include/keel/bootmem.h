/* Boot-time physical allocator: a bump pointer over the firmware's RAM
 * regions that never hands out the first MiB, the kernel image or a boot
 * module.  Allocations are permanent; single-threaded use only (the BSP,
 * before secondary CPUs run). */
#ifndef KEEL_BOOTMEM_H
#define KEEL_BOOTMEM_H

#include <keel/boot.h>

void bootmem_init(const struct boot_info *bi);
/* Returns a physical address, or 0 when nothing fits. */
u64 bootmem_alloc(u64 size, u64 align);
/* Candidate ranges bootmem_alloc examined so far: one per obstacle stepped
 * over, not one per page (the host tests check it). */
extern u64 bootmem_probes;
/* Total bytes of RAM the memory map reports as usable. */
u64 bootmem_ram_bytes(const struct boot_info *bi);
/* Whether [base, base+size) is RAM and free of the image and modules. */
bool bootmem_range_free(const struct boot_info *bi, u64 base, u64 size);

/* Calls fn for every range of RAM below 4 GiB not handed out yet (the
 * image, modules and everything allocated so far excluded).  After this the
 * allocator must not be used: the ranges belong to someone else. */
void bootmem_for_each_free(void (*fn)(u64 base, u64 end));

#endif
