/* The Xen PVH boot ABI hand-off (xen/include/public/arch-x86/hvm/start_info.h). */
#ifndef PVH_H
#define PVH_H

#include <keel/types.h>

#define HVM_START_MAGIC 0x336ec578

struct hvm_start_info {
    u32 magic;
    u32 version;
    u32 flags;
    u32 nr_modules;
    u64 modlist_paddr;
    u64 cmdline_paddr;
    u64 rsdp_paddr;
    /* version >= 1 */
    u64 memmap_paddr;
    u32 memmap_entries;
    u32 reserved;
} __packed;

struct hvm_modlist_entry {
    u64 paddr;
    u64 size;
    u64 cmdline_paddr;
    u64 reserved;
} __packed;

struct hvm_memmap_table_entry {
    u64 addr;
    u64 size;
    u32 type;
    u32 reserved;
} __packed;

/* Kept from start_info for later stages (ACPI). */
extern u64 pvh_rsdp_paddr;

#endif
