/* Secondary CPU start-up: the INIT-SIPI-SIPI sequence through the local
 * APIC, and the first C code on each new CPU. */
#include <arch.h>
#include <keel/bootmem.h>
#include <keel/cpu.h>
#include <keel/panic.h>
#include <keel/printk.h>
#include <keel/string.h>

#include "x86.h"

#define ICR_INIT (5u << 8)
#define ICR_STARTUP (6u << 8)
#define ICR_FIXED 0u
#define ICR_ASSERT (1u << 14)
#define ICR_LEVEL (1u << 15)

struct trampoline_params {
    u64 entry;
    u32 cr3;
    u32 efer;
} __packed;

struct cpu *apic_to_cpu[256];
extern char ap_entry64[];
void ap_main(struct cpu *c);

static void alloc_ist(struct cpu *c)
{
    for (u32 i = 0; i < IST_COUNT; i++) {
        u64 phys = bootmem_alloc(IST_STACK_SIZE, 4096);
        if (!phys)
            panic("no memory for the exception stacks of cpu %u", c->index);
        c->arch.ist_top[i] = (u64)arch_phys_to_virt(phys) + IST_STACK_SIZE;
    }
}

void arch_start_secondaries(void)
{
    size_t len = (size_t)(ap_trampoline_end - ap_trampoline_start);
    u8 *tramp = arch_phys_to_virt(TRAMPOLINE_PHYS);
    struct trampoline_params *params =
        (void *)(tramp + (ap_trampoline_params - ap_trampoline_start));

    memcpy(tramp, ap_trampoline_start, len);
    params->entry = (u64)ap_entry64;
    params->cr3 = (u32)read_cr3();
    params->efer = boot_efer;

    for (u32 i = 1; i < cpu_count; i++) {
        alloc_ist(&cpus[i]);
        __atomic_store_n(&apic_to_cpu[cpus[i].hw_id], &cpus[i], __ATOMIC_RELEASE);
    }
    /* Real hardware needs 10 ms after INIT and 200 us between the STARTUP
     * IPIs; a hypervisor's LAPIC acts at once, so we only wait briefly. */
    u64 init_wait = x86_hypervisor ? 100 : 10000, sipi_wait = x86_hypervisor ? 20 : 200;
    for (u32 i = 1; i < cpu_count; i++)
        lapic_send_ipi(cpus[i].hw_id, ICR_INIT | ICR_ASSERT | ICR_LEVEL);
    tsc_delay_us(init_wait);
    for (int round = 0; round < 2; round++) {
        for (u32 i = 1; i < cpu_count; i++) {
            if (__atomic_load_n(&cpus[i].state, __ATOMIC_ACQUIRE) == CPU_STARTING)
                lapic_send_ipi(cpus[i].hw_id, ICR_STARTUP | (TRAMPOLINE_PHYS >> 12));
        }
        tsc_delay_us(sipi_wait);
    }
}

void arch_wake_cpu(struct cpu *c)
{
    lapic_send_ipi(c->hw_id, ICR_FIXED | VEC_IPI_WAKEUP);
}

/* Called from ap_entry64 on the CPU's own stack, boot page tables, no
 * per-CPU base yet. */
void ap_main(struct cpu *c)
{
    u32 expected = CPU_STARTING;

    if (!__atomic_compare_exchange_n(&c->state, &expected, CPU_BOOTING, false, __ATOMIC_ACQ_REL,
                                     __ATOMIC_ACQUIRE))
        arch_halt(); /* the BSP gave up on us (or a second SIPI raced) */
    x86_cpu_init(c);
    lapic_cpu_init();
    lapic_timer_start(lapic_timer_hz());
    arch_irq_enable();
    cpu_secondary_main();
}
