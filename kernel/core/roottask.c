/* The root task: the one process the kernel builds itself, from the "init"
 * program in the initrd.  It receives every initial capability: its own
 * capability table, address space and thread, the console, and untyped
 * capabilities to all free physical memory.  The kernel's own allocations
 * end here. */
#include <keel/boot.h>
#include <keel/bootmem.h>
#include <keel/cpio.h>
#include <keel/cpu.h>
#include <keel/panic.h>
#include <keel/printk.h>
#include <keel/sched.h>
#include <keel/string.h>
#include <keel/syscall.h>
#include <keel/types_gen.h>

#define ROOT_CNODE_BITS 12
#define USER_BASE 0x10000ul

struct elf64_ehdr {
    u8 ident[16];
    u16 type, machine;
    u32 version;
    u64 entry, phoff, shoff;
    u32 flags;
    u16 ehsize, phentsize, phnum, shentsize, shnum, shstrndx;
} __packed;

struct elf64_phdr {
    u32 type, flags;
    u64 offset, vaddr, paddr, filesz, memsz, align;
} __packed;

#define PT_LOAD 1
#define PF_X 1
#define PF_W 2

static void *boot_page(void)
{
    u64 p = bootmem_alloc(4096, 4096);

    if (!p)
        panic("out of memory building the root task");
    void *v = arch_phys_to_virt(p);
    arch_zero_object(v, 4096);
    return v;
}

/* Maps one page, making the missing page tables on the way. */
static void boot_map(void *root, u64 vaddr, u64 phys, u32 rights)
{
    for (u32 level = PAGING_LEVELS - 1; level >= 1; level--) {
        u64 base = vaddr & ~(arch_level_size(level) - 1);
        u64 dummy;
        u32 flags;
        if (arch_lookup(root, base, &dummy, &flags))
            break; /* cannot happen: no large pages here */
        void *table = boot_page();
        long err = arch_map(root, level, base, arch_virt_to_phys(table), KEEL_RIGHT_ALL);
        if (err == KEEL_E_EXISTS)
            continue; /* already there; the page stays unused */
        if (err)
            panic("root task: cannot map a page table at 0x%lx (error %ld)", base, err);
    }
    long err = arch_map(root, 0, vaddr, phys, rights);
    if (err)
        panic("root task: cannot map 0x%lx (error %ld)", vaddr, err);
}

static void load_elf(void *root, const u8 *img, u64 len, u64 *entry)
{
    const struct elf64_ehdr *eh = (const void *)img;

    if (len < sizeof(*eh) || memcmp(eh->ident, "\177ELF", 4) || eh->ident[4] != 2 ||
        eh->machine != 62 || eh->phentsize != sizeof(struct elf64_phdr) ||
        eh->phoff > len || (u64)eh->phnum * sizeof(struct elf64_phdr) > len - eh->phoff)
        panic("initrd: init is not an x86-64 ELF executable");
    const struct elf64_phdr *ph = (const void *)(img + eh->phoff);
    for (u32 i = 0; i < eh->phnum; i++) {
        if (ph[i].type != PT_LOAD || !ph[i].memsz)
            continue;
        if (ph[i].vaddr < USER_BASE || ph[i].vaddr >= KEEL_INITRD_VADDR ||
            ph[i].memsz > KEEL_INITRD_VADDR - ph[i].vaddr || ph[i].filesz > ph[i].memsz ||
            ph[i].offset > len || ph[i].filesz > len - ph[i].offset)
            panic("initrd: init has a bad loadable segment %u", i);
        u32 rights = KEEL_RIGHT_READ | (ph[i].flags & PF_W ? KEEL_RIGHT_WRITE : 0) |
                     (ph[i].flags & PF_X ? KEEL_RIGHT_EXEC : 0);
        u64 start = ALIGN_DOWN(ph[i].vaddr, 4096), end = ALIGN_UP(ph[i].vaddr + ph[i].memsz, 4096);
        for (u64 va = start; va < end; va += 4096) {
            u8 *page = boot_page();
            /* the part of the file that falls in this page */
            u64 lo = MAX(va, ph[i].vaddr), hi = MIN(va + 4096, ph[i].vaddr + ph[i].filesz);
            if (lo < hi)
                memcpy(page + (lo - va), img + ph[i].offset + (lo - ph[i].vaddr), hi - lo);
            u64 have_phys, flags32;
            u32 flags;
            if (arch_lookup(root, va, &have_phys, &flags)) {
                /* two segments share this page: merge into the mapped one */
                (void)flags32;
                u8 *mapped = arch_phys_to_virt(have_phys & ~0xffful);
                if (lo < hi)
                    memcpy(mapped + (lo - va), page + (lo - va), hi - lo);
                continue;
            }
            boot_map(root, va, arch_virt_to_phys(page), rights);
        }
    }
    *entry = eh->entry;
}

/* Splits [base, end) into naturally aligned power-of-two blocks. */
static void add_untyped(struct slot *slots, struct keel_bootinfo *bi, u64 *next_slot, u64 base,
                        u64 end)
{
    base = ALIGN_UP(base, 4096);
    end = ALIGN_DOWN(end, 4096);
    while (base < end && bi->untyped_count < KEEL_MAX_UNTYPED) {
        u32 bits = 12;
        while (bits < 40 && !(base & ((1ul << (bits + 1)) - 1)) && base + (1ul << (bits + 1)) <= end)
            bits++;
        struct cap c = { .type = KEEL_OBJ_UNTYPED, .rights = KEEL_RIGHT_ALL,
                         .size_bits = (u8)bits, .obj = (uptr)arch_phys_to_virt(base) };
        slot_insert_child(NULL, &slots[*next_slot], &c);
        bi->untyped[bi->untyped_count].paddr = base;
        bi->untyped[bi->untyped_count].size_bits = bits;
        bi->untyped_count++;
        (*next_slot)++;
        base += 1ul << bits;
    }
}

static u64 parse_num(const char **p)
{
    const char *s = *p;
    u64 v = 0, base = 10;

    if (s[0] == '0' && (s[1] == 'x' || s[1] == 'X')) {
        base = 16;
        s += 2;
    }
    for (;; s++) {
        u32 d;
        if (*s >= '0' && *s <= '9')
            d = (u32)(*s - '0');
        else if (base == 16 && (*s | 0x20) >= 'a' && (*s | 0x20) <= 'f')
            d = (u32)((*s | 0x20) - 'a' + 10);
        else
            break;
        v = v * base + d;
    }
    *p = s;
    return v;
}

/* One device: a device-memory untyped capability for its page (shared with
 * a device announced before on the same page) and its interrupt line.
 * Only inside the MMIO hole, never RAM: a bad command line or firmware
 * table must not hand out kernel memory as a device.  A device already
 * announced at the same address is not added twice. */
static void add_device(struct slot *slots, struct keel_bootinfo *bi, u64 *next_slot, u64 base,
                       u64 size, u64 irq)
{
    u64 page = base & ~0xffful;

    if (bi->device_count >= KEEL_MAX_DEVICES)
        return;
    if (base < 0xc0000000ul || base >= 0xfec00000ul || size > 4096 - (base & 0xfff))
        return;
    for (u64 i = 0; i < bi->device_count; i++) {
        if (bi->devices[i].paddr == base)
            return;
    }
    struct keel_device_desc *d = &bi->devices[bi->device_count++];
    d->slot = 0;
    for (u64 i = 0; i + 1 < bi->device_count; i++) {
        if ((bi->devices[i].paddr & ~0xffful) == page)
            d->slot = bi->devices[i].slot; /* devices sharing a page share it */
    }
    if (!d->slot) {
        struct cap c = { .type = KEEL_OBJ_UNTYPED, .rights = KEEL_RIGHT_ALL,
                         .size_bits = 12, .flags = CAP_DEVICE,
                         .obj = (uptr)arch_phys_to_virt(page) };
        slot_insert_child(NULL, &slots[*next_slot], &c);
        d->slot = (*next_slot)++;
    }
    d->paddr = base;
    d->size = size;
    d->irq = irq;
}

/* <key><size>@<base>:<irq> entries (virtio_mmio.device=, and the hotplug
 * controller's keel.hotplug=). */
static void add_devices(struct slot *slots, struct keel_bootinfo *bi, u64 *next_slot,
                        const char *key)
{
    const char *p = boot_info.cmdline;
    u64 keylen = strlen(key);

    while ((p = strstr_simple(p, key)) && bi->device_count < KEEL_MAX_DEVICES) {
        p += keylen;
        u64 size = parse_num(&p);
        if (*p++ != '@')
            continue;
        u64 base = parse_num(&p);
        if (*p++ != ':')
            continue;
        u64 irq = parse_num(&p);
        add_device(slots, bi, next_slot, base, size, irq);
    }
}

/* The virtio-mmio devices the firmware describes (the ACPI DSDT under QEMU
 * microvm, cloud-hypervisor and Keel's VMM), when the command line announced
 * none: VMMs that use the command line (Keel's, Firecracker) list every
 * device there, and reading the firmware's tables costs boot time. */
static void add_firmware_devices(struct slot *slots, struct keel_bootinfo *bi, u64 *next_slot)
{
    struct arch_fw_device fw[KEEL_MAX_DEVICES];

    if (bi->device_count)
        return;
    u32 n = arch_firmware_virtio_devices(fw, KEEL_MAX_DEVICES);

    for (u32 i = 0; i < n; i++)
        add_device(slots, bi, next_slot, fw[i].base, fw[i].size, fw[i].irq);
}

static struct keel_bootinfo *untyped_bi;
static struct slot *untyped_slots;
static u64 untyped_next;

static void free_range(u64 base, u64 end)
{
    add_untyped(untyped_slots, untyped_bi, &untyped_next, base, end);
}

_Static_assert(sizeof(struct keel_bootinfo) <= 4096, "the boot information is one page");
_Static_assert(sizeof(((struct keel_bootinfo *)0)->cmdline) >= BOOT_CMDLINE_MAX,
               "the root task sees the whole command line");

bool root_task_create(void)
{
    const u8 *img;
    u64 len;

    if (!boot_info.nmodules)
        return false;
    const u8 *initrd = arch_phys_to_virt(boot_info.modules[0].base);
    u64 initrd_size = boot_info.modules[0].size;
    if (!cpio_find(initrd, initrd_size, "init", &img, &len)) {
        printk("keel: the initrd has no init program\n");
        return false;
    }

    /* The capability table, 2^ROOT_CNODE_BITS slots. */
    u64 cn_size = 1ul << (ROOT_CNODE_BITS + SLOT_BITS);
    u64 cn_phys = bootmem_alloc(cn_size, cn_size);
    u64 tcb_phys = bootmem_alloc(1ul << KEEL_OBJ_TCB_BITS, 1ul << KEEL_OBJ_TCB_BITS);
    u64 vs_phys = bootmem_alloc(1ul << KEEL_OBJ_VSPACE_BITS, 1ul << KEEL_OBJ_VSPACE_BITS);
    if (!cn_phys || !tcb_phys || !vs_phys)
        panic("out of memory building the root task");
    struct cnode *cn = arch_phys_to_virt(cn_phys);
    struct tcb *t = arch_phys_to_virt(tcb_phys);
    void *vs = arch_phys_to_virt(vs_phys);
    arch_zero_object(cn, cn_size);
    arch_zero_object(t, 1ul << KEEL_OBJ_TCB_BITS);
    arch_zero_object(vs, 1ul << KEEL_OBJ_VSPACE_BITS);
    cn->hdr.type = KEEL_OBJ_CNODE;
    cn->size_bits = ROOT_CNODE_BITS;
    tcb_setup(t);
    t->mcp = SCHED_PRIO_LEVELS - 1; /* the root thread may hand out any priority */
    struct cap c = { .type = KEEL_OBJ_VSPACE, .rights = KEEL_RIGHT_ALL, .obj = (uptr)vs };
    if (!vspace_init(&c, 0))
        panic("cannot register the root address space");
    struct slot *slots = (struct slot *)cn;

    slot_insert_child(NULL, &slots[KEEL_SLOT_VSPACE], &c);
    c = (struct cap){ .type = KEEL_OBJ_CNODE, .rights = KEEL_RIGHT_ALL,
                      .size_bits = ROOT_CNODE_BITS, .obj = (uptr)cn };
    slot_insert_child(NULL, &slots[KEEL_SLOT_CNODE], &c);
    c = (struct cap){ .type = KEEL_OBJ_TCB, .rights = KEEL_RIGHT_ALL, .obj = (uptr)t };
    slot_insert_child(NULL, &slots[KEEL_SLOT_TCB], &c);
    c = (struct cap){ .type = KEEL_OBJ_CONSOLE, .rights = KEEL_RIGHT_ALL };
    slot_insert_child(NULL, &slots[KEEL_SLOT_CONSOLE], &c);
    c = (struct cap){ .type = KEEL_OBJ_IRQ_CONTROL, .rights = KEEL_RIGHT_ALL };
    slot_insert_child(NULL, &slots[KEEL_SLOT_IRQ_CONTROL], &c);
    c = (struct cap){ .type = KEEL_OBJ_IO_PORT_CONTROL, .rights = KEEL_RIGHT_ALL };
    slot_insert_child(NULL, &slots[KEEL_SLOT_IO_PORT_CONTROL], &c);
    c = (struct cap){ .type = KEEL_OBJ_IO_SPACE_CONTROL, .rights = KEEL_RIGHT_ALL };
    slot_insert_child(NULL, &slots[KEEL_SLOT_IO_SPACE_CONTROL], &c);
    slot_insert_child(&slots[KEEL_SLOT_CNODE], &t->cspace, &slots[KEEL_SLOT_CNODE].cap);
    slot_insert_child(&slots[KEEL_SLOT_VSPACE], &t->vspace, &slots[KEEL_SLOT_VSPACE].cap);

    u64 entry;
    load_elf(vs, img, len, &entry);
    for (u64 i = 0; i < KEEL_STACK_PAGES; i++) {
        void *page = boot_page();
        boot_map(vs, KEEL_STACK_TOP - (i + 1) * 4096, arch_virt_to_phys(page),
                 KEEL_RIGHT_READ | KEEL_RIGHT_WRITE);
    }
    for (u64 off = 0; off < initrd_size; off += 4096)
        boot_map(vs, KEEL_INITRD_VADDR + off, ALIGN_DOWN(boot_info.modules[0].base + off, 4096),
                 KEEL_RIGHT_READ);
    struct keel_bootinfo *bi = boot_page();
    boot_map(vs, KEEL_BOOTINFO_VADDR, arch_virt_to_phys(bi), KEEL_RIGHT_READ);
    bi->magic = KEEL_BOOTINFO_MAGIC;
    bi->cnode_bits = ROOT_CNODE_BITS;
    bi->ncpus = cpu_count;
    bi->initrd_size = initrd_size;
    strlcpy(bi->cmdline, boot_info.cmdline, sizeof(bi->cmdline));

    /* Everything the kernel has not used becomes untyped memory. */
    untyped_bi = bi;
    untyped_slots = slots;
    untyped_next = KEEL_SLOT_FIRST_UNTYPED;
    bootmem_for_each_free(free_range);
    add_devices(slots, bi, &untyped_next, "virtio_mmio.device=");
    add_firmware_devices(slots, bi, &untyped_next);
    add_devices(slots, bi, &untyped_next, "keel.hotplug=");
    bi->first_free = untyped_next;
    u64 total = 0;
    for (u64 i = 0; i < bi->untyped_count; i++)
        total += 1ul << bi->untyped[i].size_bits;
    printk("keel: root task: %lu untyped capabilities, %lu MiB\n", bi->untyped_count, total >> 20);

    arch_tcb_set_entry(t, entry, KEEL_STACK_TOP, KEEL_BOOTINFO_VADDR);
    root_task = t;
    sched_make_runnable(t);
    return true;
}
