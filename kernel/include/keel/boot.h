/* What the kernel keeps from the boot loader, copied out of loader memory
 * before anything else runs so the originals may be overwritten. */
#ifndef KEEL_BOOT_H
#define KEEL_BOOT_H

#include <keel/types.h>

#define BOOT_CMDLINE_MAX 1024
#define BOOT_MEM_MAX 128
#define BOOT_MODULES_MAX 16

enum mem_type {
    MEM_RAM = 1,      /* usable */
    MEM_RESERVED = 2, /* anything else keeps the loader's type number */
};

struct mem_region {
    u64 base;
    u64 size;
    u32 type;
};

struct boot_module {
    u64 base;
    u64 size;
};

struct boot_info {
    char cmdline[BOOT_CMDLINE_MAX];
    struct mem_region mem[BOOT_MEM_MAX];
    u32 nmem;
    struct boot_module modules[BOOT_MODULES_MAX];
    u32 nmodules;
    u64 kernel_start; /* physical extent of the loaded image */
    u64 kernel_end;
};

/* Filled once by the architecture's early boot, read-only afterwards. */
extern struct boot_info boot_info;

#endif
