/* Local APIC (xAPIC, memory-mapped), IOAPIC, the legacy 8259 pair (masked
 * for good) and time: the LAPIC timer and the TSC, both calibrated against
 * the 8254 PIT. */
#include <arch.h>
#include <keel/cpu.h>
#include <keel/printk.h>

#include "x86.h"

bool x86_hypervisor; /* set by boot.c (x86.h) */

#define LAPIC_ID 0x20
#define LAPIC_TPR 0x80
#define LAPIC_EOI 0xb0
#define LAPIC_SVR 0xf0
#define LAPIC_ESR 0x280
#define LAPIC_ICR_LOW 0x300
#define LAPIC_ICR_HIGH 0x310
#define LAPIC_LVT_TIMER 0x320
#define LAPIC_LVT_LINT0 0x350
#define LAPIC_LVT_LINT1 0x360
#define LAPIC_LVT_ERROR 0x370
#define LAPIC_TIMER_INIT 0x380
#define LAPIC_TIMER_CUR 0x390
#define LAPIC_TIMER_DIV 0x3e0

#define LVT_MASKED (1u << 16)
#define LVT_PERIODIC (1u << 17)
#define LVT_NMI (4u << 8)
#define SVR_ENABLE (1u << 8)
#define ICR_PENDING (1u << 12)
#define APIC_BASE_ENABLE (1ul << 11)

#define PIT_HZ 1193182u
#define PIT_CH0 0x40
#define PIT_CMD 0x43
#define CALIBRATE_PIT_TICKS 23864u /* 20 ms */

static volatile u32 *lapic;
static u64 lapic_hz; /* timer ticks per second at divide-by-16 */
static u64 tsc_per_us = 1000;
static u32 timer_hz;

static inline u32 lapic_read(u32 reg)
{
    return lapic[reg / 4];
}

static inline void lapic_write(u32 reg, u32 v)
{
    lapic[reg / 4] = v;
}

void lapic_init_mmio(u64 phys)
{
    wrmsr(MSR_APIC_BASE, rdmsr(MSR_APIC_BASE) | APIC_BASE_ENABLE);
    lapic = arch_phys_to_virt(phys);
}

u32 lapic_id(void)
{
    return lapic_read(LAPIC_ID) >> 24;
}

void lapic_cpu_init(void)
{
    wrmsr(MSR_APIC_BASE, rdmsr(MSR_APIC_BASE) | APIC_BASE_ENABLE);
    lapic_write(LAPIC_SVR, SVR_ENABLE | VEC_SPURIOUS);
    lapic_write(LAPIC_TPR, 0);
    lapic_write(LAPIC_LVT_LINT0, LVT_MASKED);
    lapic_write(LAPIC_LVT_LINT1, LVT_NMI);
    lapic_write(LAPIC_LVT_ERROR, LVT_MASKED);
    lapic_write(LAPIC_ESR, 0);
    lapic_write(LAPIC_LVT_TIMER, LVT_MASKED);
    lapic_write(LAPIC_EOI, 0);
}

void lapic_eoi(void)
{
    lapic_write(LAPIC_EOI, 0);
}

void lapic_send_ipi(u32 apic_id, u32 low)
{
    for (int i = 0; i < 1000000 && (lapic_read(LAPIC_ICR_LOW) & ICR_PENDING); i++)
        arch_cpu_relax();
    lapic_write(LAPIC_ICR_HIGH, apic_id << 24);
    lapic_write(LAPIC_ICR_LOW, low);
}

/* sti; hlt with the task priority at TPR_WAIT (layout.h), so that only the
 * interrupts trap_dispatch serves without any lock can end the halt.  No
 * caller serves an interrupt it has not acknowledged yet but a device's
 * (entry.c): an IPI or the timer in service would hold back the kicks and
 * requests that end the wait. */
void arch_wait_halt(void)
{
    lapic_write(LAPIC_TPR, TPR_WAIT);
    arch_idle();
    arch_irq_disable();
    lapic_write(LAPIC_TPR, 0);
}

void arch_kick_cpu(struct cpu *c)
{
    lapic_send_ipi(c->hw_id, VEC_IPI_KICK);
}

static u16 pit_read(void)
{
    outb(PIT_CMD, 0x00); /* latch channel 0 */
    u8 lo = inb(PIT_CH0);
    u8 hi = inb(PIT_CH0);
    return (u16)(lo | (hi << 8));
}

/* A hypervisor may state the frequencies in the timing leaf 0x40000010
 * (EAX = TSC kHz, EBX = APIC bus kHz); Keel's VMM does. */
static bool timing_from_hypervisor(void)
{
    if (!x86_hypervisor || cpuid(0x40000000, 0).eax < 0x40000010)
        return false;
    struct cpuid_regs r = cpuid(0x40000010, 0);
    if (!r.eax || !r.ebx)
        return false;
    tsc_per_us = MAX(r.eax / 1000u, 1u);
    lapic_hz = (u64)r.ebx * 1000 / 16;
    return true;
}

void lapic_timer_calibrate(void)
{
    lapic_write(LAPIC_TIMER_DIV, 0x3); /* divide by 16 */
    lapic_write(LAPIC_LVT_TIMER, LVT_MASKED);
    if (timing_from_hypervisor())
        return;
    outb(PIT_CMD, 0x30); /* channel 0, lo/hi byte, mode 0, binary */
    outb(PIT_CH0, 0xff);
    outb(PIT_CH0, 0xff);

    u16 start = pit_read(), now = start;
    /* Wait for the first change, so the window starts on a tick edge. */
    for (int i = 0; i < 100000 && now == start; i++)
        now = pit_read();
    if (now == start) {
        /* No PIT: KVM's and QEMU's LAPIC timers run at 1 GHz. */
        printk("keel: no PIT; assuming a 1 GHz APIC timer clock\n");
        lapic_hz = 1000000000ul / 16;
        lapic_write(LAPIC_TIMER_INIT, 0xffffffff);
        u64 t0 = rdtsc();
        while (0xffffffffu - lapic_read(LAPIC_TIMER_CUR) < lapic_hz / 50)
            arch_cpu_relax();
        tsc_per_us = (rdtsc() - t0) / 20000;
        return;
    }
    start = now;
    lapic_write(LAPIC_TIMER_INIT, 0xffffffff);
    u64 t0 = rdtsc();
    u16 elapsed;
    do {
        now = pit_read();
        elapsed = (u16)(start - now);
    } while (elapsed < CALIBRATE_PIT_TICKS);
    u64 t1 = rdtsc();
    u32 lapic_ticks = 0xffffffffu - lapic_read(LAPIC_TIMER_CUR);
    lapic_write(LAPIC_TIMER_INIT, 0);
    lapic_hz = (u64)lapic_ticks * PIT_HZ / elapsed;
    tsc_per_us = (t1 - t0) * PIT_HZ / elapsed / 1000000;
    if (!tsc_per_us)
        tsc_per_us = 1;
}

void lapic_timer_start(u32 hz)
{
    timer_hz = hz;
    lapic_write(LAPIC_TIMER_DIV, 0x3);
    lapic_write(LAPIC_LVT_TIMER, LVT_PERIODIC | VEC_LAPIC_TIMER);
    lapic_write(LAPIC_TIMER_INIT, (u32)MAX(lapic_hz / hz, 1ul));
}

void arch_timer_every(u32 n)
{
    u64 count = MAX(lapic_hz / timer_hz, 1ul) * n;

    lapic_write(LAPIC_TIMER_INIT, (u32)MIN(count, 0xfffffffful));
}

u32 lapic_timer_hz(void)
{
    return timer_hz;
}

u64 arch_time_us(void)
{
    return rdtsc() / tsc_per_us;
}

void tsc_delay_us(u64 us)
{
    u64 end = rdtsc() + us * tsc_per_us;

    while (rdtsc() < end)
        arch_cpu_relax();
}

/* IOAPICs: every one the MADT lists, each serving the GSIs from its base
 * (QEMU microvm has a second one for GSI 24 and up).  Set up on the boot
 * CPU before the others start; read-only afterwards. */
static struct ioapic {
    volatile u32 *regs;
    u32 gsi_base, pins;
} ioapics[MAX_IOAPICS];
static u32 ioapic_count;

static void ioapic_write(struct ioapic *io, u32 reg, u32 v)
{
    io->regs[0] = reg;
    io->regs[4] = v;
}

static u32 ioapic_read(struct ioapic *io, u32 reg)
{
    io->regs[0] = reg;
    return io->regs[4];
}

static struct ioapic *ioapic_for(u32 gsi)
{
    for (u32 i = 0; i < ioapic_count; i++) {
        struct ioapic *io = &ioapics[i];
        if (gsi >= io->gsi_base && gsi - io->gsi_base < io->pins)
            return io;
    }
    return NULL;
}

void ioapic_init(u64 phys, u32 gsi_base)
{
    if (ioapic_count == MAX_IOAPICS) {
        printk("keel: IOAPIC at 0x%lx ignored: at most %u\n", phys, MAX_IOAPICS);
        return;
    }
    struct ioapic *io = &ioapics[ioapic_count];
    io->regs = arch_phys_to_virt(phys);
    io->gsi_base = gsi_base;
    io->pins = ((ioapic_read(io, 1) >> 16) & 0xff) + 1;
    for (u32 i = 0; i < io->pins; i++) {
        ioapic_write(io, 0x10 + 2 * i, LVT_MASKED);
        ioapic_write(io, 0x11 + 2 * i, 0);
    }
    ioapic_count++;
}

void ioapic_route_isa(const struct madt_info *m, u32 irq, u32 vector, u32 dest_apic)
{
    u32 gsi = m->isa_gsi[irq], flags = m->isa_flags[irq];

    if (!ioapic_for(gsi)) {
        printk("keel: irq %u (gsi %u) is not on an IOAPIC\n", irq, gsi);
        return;
    }
    ioapic_set(gsi, vector, dest_apic, ((flags >> 2) & 3) == 3, (flags & 3) == 3, false);
}

bool ioapic_has_pin(u32 gsi)
{
    return ioapic_for(gsi) != NULL;
}

/* Routes a GSI to vector on dest_apic, masked or not (a GSI no IOAPIC
 * serves is ignored: callers check ioapic_has_pin). */
void ioapic_set(u32 gsi, u32 vector, u32 dest_apic, bool level, bool active_low, bool masked)
{
    struct ioapic *io = ioapic_for(gsi);
    u32 low = vector;

    if (!io)
        return;
    if (level)
        low |= 1u << 15;
    if (active_low)
        low |= 1u << 13;
    if (masked)
        low |= LVT_MASKED;
    u32 pin = gsi - io->gsi_base;
    ioapic_write(io, 0x11 + 2 * pin, dest_apic << 24);
    ioapic_write(io, 0x10 + 2 * pin, low);
}

void pic_disable(void)
{
    /* Remap to 0x70-0x7f (so a spurious 8259 interrupt is recognisable)
     * and mask every line. */
    outb(0x20, 0x11);
    outb(0xa0, 0x11);
    outb(0x21, 0x70);
    outb(0xa1, 0x78);
    outb(0x21, 4);
    outb(0xa1, 2);
    outb(0x21, 1);
    outb(0xa1, 1);
    outb(0x21, 0xff);
    outb(0xa1, 0xff);
}
