/* Descriptor tables: a GDT and TSS per CPU, one shared IDT. */
#include <keel/cpu.h>
#include <keel/string.h>

#include "fpu.h"
#include "ioport.h"
#include "x86.h"

struct idt_gate {
    u16 offset_low;
    u16 selector;
    u8 ist;
    u8 type_attr;
    u16 offset_mid;
    u32 offset_high;
    u32 zero;
} __packed;

#define GATE_INTERRUPT 0x8e /* present, DPL 0, 64-bit interrupt gate */

static struct idt_gate idt[256] __aligned(16);

static void set_gate(u32 vec, u64 handler, u8 ist)
{
    idt[vec] = (struct idt_gate){
        .offset_low = (u16)handler,
        .selector = GDT_KCODE,
        .ist = ist,
        .type_attr = GATE_INTERRUPT,
        .offset_mid = (u16)(handler >> 16),
        .offset_high = (u32)(handler >> 32),
    };
}

/* Only the vectors in use get a gate (exceptions, timer, device IRQs, the
 * remapped 8259, IPIs and spurious): a stray interrupt on another vector
 * raises #NP with the vector in the error code, which the dump shows.
 * Fewer gates also means a shorter boot where guest code is emulated. */
void idt_init(void)
{
    for (u32 v = 0; v < 0x80; v++)
        set_gate(v, trap_stub_table[v], 0);
    set_gate(VEC_LAPIC_TIMER, trap_stub_table[VEC_LAPIC_TIMER], 0);
    for (u32 v = VEC_IPI_WAKEUP; v < 256; v++)
        set_gate(v, trap_stub_table[v], 0);
    set_gate(2, trap_stub_table[2], IST_NMI);
    set_gate(8, trap_stub_table[8], IST_DF);
    set_gate(18, trap_stub_table[18], IST_MC);
}

static u64 tss_desc_low(u64 base, u32 limit)
{
    return (limit & 0xffff) | ((base & 0xffffff) << 16) | (0x89ul << 40) |
           ((u64)((limit >> 16) & 0xf) << 48) | (((base >> 24) & 0xff) << 56);
}

void x86_cpu_init(struct cpu *c)
{
    struct arch_cpu *a = &c->arch;
    struct desc_ptr p;

    c->self = c;
    a->gdt[0] = 0;
    a->gdt[GDT_KCODE / 8] = 0x00af9b000000ffff;
    a->gdt[GDT_KDATA / 8] = 0x00cf93000000ffff;
    a->gdt[GDT_UCODE32 / 8] = 0x00cffb000000ffff;
    a->gdt[GDT_UDATA / 8] = 0x00cff3000000ffff;
    a->gdt[GDT_UCODE / 8] = 0x00affb000000ffff;
    memset(&a->tss, 0, sizeof(a->tss));
    for (u32 i = 0; i < IST_COUNT; i++)
        a->tss.ist[i] = a->ist_top[i];
    a->tss.rsp[0] = c->stack_top;
    /* The I/O permission bitmap: every port denied, then each thread's own
     * range opened while it runs (ioport.h). */
    a->tss.iomap_base = sizeof(a->tss);
    ioport_cpu_init(a);
    u64 base = (u64)&a->tss;
    a->gdt[GDT_TSS / 8] = tss_desc_low(base, sizeof(a->tss) + sizeof(a->iomap) - 1);
    a->gdt[GDT_TSS / 8 + 1] = base >> 32;

    p.limit = sizeof(a->gdt) - 1;
    p.base = (u64)a->gdt;
    lgdt(&p);
    __asm__ volatile("pushq %0\n\t"
                     "leaq 1f(%%rip), %%rax\n\t"
                     "pushq %%rax\n\t"
                     "lretq\n"
                     "1:\n\t"
                     "movl %1, %%eax\n\t"
                     "movl %%eax, %%ds\n\t"
                     "movl %%eax, %%es\n\t"
                     "movl %%eax, %%ss\n\t"
                     "xorl %%eax, %%eax\n\t"
                     "movl %%eax, %%fs\n\t"
                     "movl %%eax, %%gs"
                     :
                     : "i"((u64)GDT_KCODE), "i"(GDT_KDATA)
                     : "rax", "memory");
    ltr(GDT_TSS);
    p.limit = sizeof(idt) - 1;
    p.base = (u64)idt;
    lidt(&p);
    wrmsr(MSR_GS_BASE, (u64)c);
    wrmsr(MSR_KERNEL_GS_BASE, 0);
    fpu_cpu_init();
    entry_cpu_init();
}
