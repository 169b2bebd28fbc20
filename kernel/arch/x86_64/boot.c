/* x86-64 early boot and platform set-up: the PVH hand-off, the boot CPU's
 * descriptor tables, ACPI, interrupt controllers and the timer. */
#include <arch.h>
#include <keel/boot.h>
#include <keel/cpu.h>
#include <keel/exit.h>
#include <keel/panic.h>
#include <keel/printk.h>
#include <keel/string.h>

#include "pvh.h"
#include "x86.h"

#define TIMER_HZ 100
#define KERNEL_VMA_U ((u64)KERNEL_VMA)

bool x86_hypervisor;
u64 pvh_rsdp_paddr;

static u8 bsp_ist[IST_COUNT][IST_STACK_SIZE] __aligned(16);
extern char boot_stack_top[];

/* The loader's data is read through the direct map and bounded by what the
 * boot page tables map; a bad hand-off is reported, not followed. */
static const void *loader_ptr(u64 phys, u64 len)
{
    if (phys + len > DIRECT_MAP_SIZE || phys + len < phys)
        return NULL;
    return arch_phys_to_virt(phys);
}

static void copy_start_info(const struct hvm_start_info *si, struct boot_info *bi)
{
    bi->kernel_start = (u64)__kernel_start - KERNEL_VMA_U;
    bi->kernel_end = (u64)__kernel_end - KERNEL_VMA_U;
    if (si->magic != HVM_START_MAGIC)
        panic("bad hvm_start_info magic 0x%x (not booted through PVH?)", si->magic);

    const char *cmd = si->cmdline_paddr ? loader_ptr(si->cmdline_paddr, 1) : NULL;
    if (cmd)
        strlcpy(bi->cmdline, cmd, sizeof(bi->cmdline));
    pvh_rsdp_paddr = si->rsdp_paddr;

    const struct hvm_memmap_table_entry *mm = NULL;
    if (si->version >= 1 && si->memmap_entries)
        mm = loader_ptr(si->memmap_paddr, (u64)si->memmap_entries * sizeof(*mm));
    if (!mm)
        panic("the loader passed no memory map (start_info version %u)", si->version);
    bi->nmem = MIN(si->memmap_entries, (u32)BOOT_MEM_MAX);
    for (u32 i = 0; i < bi->nmem; i++) {
        bi->mem[i].base = mm[i].addr;
        bi->mem[i].size = mm[i].size;
        bi->mem[i].type = mm[i].type;
    }

    const struct hvm_modlist_entry *mods = NULL;
    if (si->nr_modules)
        mods = loader_ptr(si->modlist_paddr, (u64)si->nr_modules * sizeof(*mods));
    bi->nmodules = mods ? MIN(si->nr_modules, (u32)BOOT_MODULES_MAX) : 0;
    for (u32 i = 0; i < bi->nmodules; i++) {
        bi->modules[i].base = mods[i].paddr;
        bi->modules[i].size = mods[i].size;
    }
}

void arch_early_init(struct hvm_start_info *si, struct boot_info *bi)
{
    serial_init();
    x86_hypervisor = (cpuid(1, 0).ecx >> 31) & 1;
    struct cpu *c = &cpus[0];
    c->stack_top = (uptr)boot_stack_top;
    for (u32 i = 0; i < IST_COUNT; i++)
        c->arch.ist_top[i] = (u64)bsp_ist[i] + IST_STACK_SIZE;
    idt_init();
    x86_cpu_init(c);
    copy_start_info(si, bi);
}

static struct madt_info platform;

bool arch_irq_available(u32 gsi)
{
    /* 0 and 2: the timer; 4: COM1, the kernel's console */
    return gsi != 0 && gsi != 2 && gsi != 4 && gsi < VEC_IRQ_COUNT && ioapic_has_pin(gsi);
}

/* Device lines are programmed edge-triggered, active high (the virtio-mmio
 * convention; Keel's VMM pulses them), except where the MADT overrides an
 * ISA line or the DSDT describes the device's interrupt otherwise (QEMU's
 * virtio-mmio lines are level-triggered: programmed as edges, a completion
 * that raised the line while it was masked, after the driver cleared the
 * device's status, left it up with no edge to come, and the driver waited
 * for ever).  A driver must read its device's status after every wake-up:
 * an edge that came while the line was masked is not delivered again. */
void arch_irq_enable_line(u32 gsi, bool on)
{
    bool level = false, low = false;

    for (u32 irq = 0; irq < 16; irq++) {
        if (platform.isa_gsi[irq] == gsi) { /* an ISA line: its override's polarity */
            level = ((platform.isa_flags[irq] >> 2) & 3) == 3;
            low = (platform.isa_flags[irq] & 3) == 3;
        }
    }
    acpi_gsi_trigger(gsi, &level, &low);
    ioapic_set(gsi, VEC_IRQ_BASE + gsi, cpus[0].hw_id, level, low, !on);
}

void arch_platform_init(struct arch_platform *out)
{
#define m platform

    if (!acpi_init(pvh_rsdp_paddr, &m))
        panic("cannot find the CPUs without ACPI");
    pic_disable();
    lapic_cpu_init();
    for (u32 i = 0; i < m.ioapic_count; i++)
        ioapic_init(m.ioapic_phys[i], m.ioapic_gsi_base[i]);
    if (m.ioapic_count) {
        ioapic_route_isa(&m, 4, VEC_IRQ_BASE + 4, cpus[0].hw_id);
    } else {
        printk("keel: no IOAPIC in the MADT: no console input\n");
    }
    lapic_timer_calibrate();
    lapic_timer_start(TIMER_HZ);
    serial_enable_rx();
    arch_irq_enable();
    out->cpus_in_firmware = m.cpus_listed;
    out->timer_hz = TIMER_HZ;
}
#undef m

void arch_exit(int code)
{
    arch_irq_disable();
    outb(0xf4, (u8)code);
    arch_halt();
}

void arch_halt(void)
{
    for (;;)
        __asm__ volatile("cli; hlt");
}

void arch_triple_fault(void)
{
    struct desc_ptr empty = { 0, 0 };

    printk("keel: triple faulting on purpose\n");
    arch_irq_disable();
    lidt(&empty);
    /* A divide error: the CPU delivers it itself (KVM would try to emulate
     * a software interrupt such as int3 through the empty IDT). */
    __asm__ volatile("xorl %%ecx, %%ecx; divl %%ecx" ::: "eax", "ecx", "edx");
    arch_halt();
}
