/* Instruction wrappers private to the x86-64 code. */
#ifndef X86_H
#define X86_H

#include <arch/layout.h>
#include <keel/types.h>

static inline void outb(u16 port, u8 v)
{
    __asm__ volatile("outb %0, %1" : : "a"(v), "Nd"(port));
}

static inline u8 inb(u16 port)
{
    u8 v;
    __asm__ volatile("inb %1, %0" : "=a"(v) : "Nd"(port));
    return v;
}

/* One string instruction is one VM exit for the whole buffer under KVM,
 * instead of one exit per byte. */
static inline void outsb(u16 port, const void *buf, size_t n)
{
    __asm__ volatile("rep outsb" : "+S"(buf), "+c"(n) : "d"(port) : "memory");
}

static inline u64 rdmsr(u32 msr)
{
    u32 lo, hi;
    __asm__ volatile("rdmsr" : "=a"(lo), "=d"(hi) : "c"(msr));
    return ((u64)hi << 32) | lo;
}

static inline void wrmsr(u32 msr, u64 v)
{
    __asm__ volatile("wrmsr" : : "c"(msr), "a"((u32)v), "d"((u32)(v >> 32)) : "memory");
}

struct cpuid_regs {
    u32 eax, ebx, ecx, edx;
};

static inline struct cpuid_regs cpuid(u32 leaf, u32 subleaf)
{
    struct cpuid_regs r;
    __asm__ volatile("cpuid"
                     : "=a"(r.eax), "=b"(r.ebx), "=c"(r.ecx), "=d"(r.edx)
                     : "a"(leaf), "c"(subleaf));
    return r;
}

static inline u64 rdtsc(void)
{
    u32 lo, hi;
    __asm__ volatile("rdtsc" : "=a"(lo), "=d"(hi));
    return ((u64)hi << 32) | lo;
}

static inline u64 read_cr0(void)
{
    u64 v;
    __asm__ volatile("mov %%cr0, %0" : "=r"(v));
    return v;
}

static inline u64 read_cr4(void)
{
    u64 v;
    __asm__ volatile("mov %%cr4, %0" : "=r"(v));
    return v;
}

static inline void write_cr3(u64 v)
{
    __asm__ volatile("mov %0, %%cr3" : : "r"(v) : "memory");
}

static inline u64 read_cr2(void)
{
    u64 v;
    __asm__ volatile("mov %%cr2, %0" : "=r"(v));
    return v;
}

static inline u64 read_cr3(void)
{
    u64 v;
    __asm__ volatile("mov %%cr3, %0" : "=r"(v));
    return v;
}

struct desc_ptr {
    u16 limit;
    u64 base;
} __packed;

static inline void lgdt(const struct desc_ptr *p)
{
    __asm__ volatile("lgdt %0" : : "m"(*p) : "memory");
}

static inline void lidt(const struct desc_ptr *p)
{
    __asm__ volatile("lidt %0" : : "m"(*p) : "memory");
}

static inline void ltr(u16 sel)
{
    __asm__ volatile("ltr %0" : : "r"(sel) : "memory");
}

/* The kernel image and the direct map (arch_virt_to_phys, inline for the
 * path into user mode). */
static inline u64 x86_virt_to_phys(const void *p)
{
    u64 v = (u64)p;

    return v >= KERNEL_VMA ? v - KERNEL_VMA : v - DIRECT_MAP_BASE;
}

static inline void io_delay(void)
{
    outb(0x80, 0);
}

/* Set once on the BSP: CPUID.1:ECX[31], "running under a hypervisor". */
extern bool x86_hypervisor;

struct cpu;
struct trap_frame;

/* cpu.c: descriptor tables and the per-CPU base register of one CPU. */
void x86_cpu_init(struct cpu *c);
void idt_init(void);
/* entry.c: the syscall instruction's MSRs, per CPU. */
void entry_cpu_init(void);

/* serial.c: the 16550 console. */
void serial_init(void);
void serial_enable_rx(void);
/* The bytes received so far, at most size of them. */
size_t serial_read(char *buf, size_t size);

/* acpi.c: finds the MADT; fills cpus[] (BSP first) and the controllers;
 * reads the devices of the DSDT (arch_firmware_devices). */
#define MAX_IOAPICS 8
struct madt_info {
    u64 lapic_phys;
    u64 ioapic_phys[MAX_IOAPICS];
    u32 ioapic_gsi_base[MAX_IOAPICS];
    u32 ioapic_count;
    u32 cpus_listed;
    /* ISA IRQ -> GSI and MPS INTI flags, from interrupt source overrides */
    u32 isa_gsi[16];
    u16 isa_flags[16];
};
bool acpi_init(u64 rsdp_hint, struct madt_info *out);
/* The trigger mode and polarity the DSDT gives a device's GSI (false: it
 * names none; known once arch_firmware_virtio_devices has read it). */
bool acpi_gsi_trigger(u32 gsi, bool *level, bool *low);

/* apic.c: local APIC, IOAPIC, legacy PIC and the timer. */
void lapic_init_mmio(u64 phys);
u32 lapic_id(void);
void lapic_cpu_init(void);
void lapic_eoi(void);
void lapic_send_ipi(u32 apic_id, u32 low);
void lapic_timer_calibrate(void);
void lapic_timer_start(u32 hz);
u32 lapic_timer_hz(void);
void ioapic_init(u64 phys, u32 gsi_base);
void ioapic_route_isa(const struct madt_info *m, u32 irq, u32 vector, u32 dest_apic);
void pic_disable(void);
bool ioapic_has_pin(u32 gsi);
void ioapic_set(u32 gsi, u32 vector, u32 dest_apic, bool level, bool active_low, bool masked);
void tsc_delay_us(u64 us);

/* entry.c and asm/x86_64/entry.S */
void trap_dispatch(struct trap_frame *f);
__noreturn void arch_return_to_user(struct trap_frame *f);

/* Symbols from the linker script and the assembly. */
extern char __kernel_start[], __kernel_end[];
extern char ap_trampoline_start[], ap_trampoline_end[], ap_trampoline_params[];
extern u64 trap_stub_table[256];
extern u32 boot_efer;
extern struct cpu *apic_to_cpu[256];

#endif
