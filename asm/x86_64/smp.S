/*
 * AP trampoline; the C side is kernel/arch/x86_64/smp.c.  The BSP copies
 * [ap_trampoline_start, ap_trampoline_end) to TRAMPOLINE_PHYS and fills in
 * the parameter block; a STARTUP IPI with vector TRAMPOLINE_PHYS >> 12
 * starts the AP here in real mode at CS:IP = (TRAMPOLINE_PHYS >> 4):0.  It
 * goes 16 -> 32 -> 64 bit on the boot page tables (whose identity map
 * covers this page) and jumps to ap_entry64 in the kernel image.  It uses
 * no stack, so any number of APs may run it at once.  The blob is only copied, never executed in place.
 */
#include <arch/layout.h>
#include <keel/cpu.h>

#define TA(x) (TRAMPOLINE_PHYS + (x) - ap_trampoline_start)

    .section .rodata.trampoline, "a"
    .balign 16
    .code16
    .globl ap_trampoline_start
ap_trampoline_start:
    cli
    cld
    xorw %ax, %ax
    movw %ax, %ds
    lgdtl TA(tr_gdtr)
    movl %cr0, %eax
    orl $CR0_PE, %eax
    movl %eax, %cr0
    ljmpl $GDT_BOOT_CODE32, $TA(tr_start32)

    .code32
tr_start32:
    movl $GDT_KDATA, %eax
    movl %eax, %ds
    movl %eax, %es
    movl %eax, %ss
    movl TA(tr_cr3), %eax
    movl %eax, %cr3
    movl %cr4, %eax
    orl $(CR4_PAE | CR4_PGE), %eax
    movl %eax, %cr4
    movl $MSR_EFER, %ecx
    rdmsr
    orl TA(tr_efer), %eax
    wrmsr
    movl %cr0, %eax
    orl $(CR0_PG | CR0_WP | CR0_PE), %eax
    movl %eax, %cr0
    ljmp $GDT_KCODE, $TA(tr_start64)

    .code64
tr_start64:
    movq TA(tr_entry), %rax
    jmp *%rax

    .balign 8
    /* The accessed bits are preset so that loading the segments does not
     * write to this page while other APs run from it. */
tr_gdt:
    .quad 0
    .quad 0x00af9b000000ffff        /* 0x08: 64-bit code */
    .quad 0x00cf93000000ffff        /* 0x10: flat data */
    .quad 0x00cf9b000000ffff        /* 0x18: 32-bit flat code */
tr_gdt_end:
    .balign 4
tr_gdtr:
    .word tr_gdt_end - tr_gdt - 1
    .long TA(tr_gdt)

    /* Parameter block, filled in by the BSP (struct trampoline_params). */
    .balign 8
    .globl ap_trampoline_params
ap_trampoline_params:
tr_entry:
    .quad 0
tr_cr3:
    .long 0
tr_efer:
    .long 0
    .globl ap_trampoline_end
ap_trampoline_end:

/*
 * First code in the higher half on an AP, on the boot page tables.  Finds
 * this CPU's struct cpu from its initial APIC ID, switches to the stack the
 * BSP allocated for it and calls ap_main(struct cpu *).
 */
    .text
    .globl ap_entry64
ap_entry64:
    movl $GDT_KDATA, %eax
    movl %eax, %ds
    movl %eax, %es
    movl %eax, %ss
    xorl %eax, %eax
    movl %eax, %fs
    movl %eax, %gs
    movl $1, %eax
    cpuid
    shrl $24, %ebx                  /* CPUID.1:EBX[31:24] = initial APIC ID */
    movq apic_to_cpu(,%rbx,8), %rdi
    testq %rdi, %rdi
    jz 1f                           /* not a CPU we started: stay parked */
    movq CPU_OFFSET_STACK_TOP(%rdi), %rsp
    testq %rsp, %rsp
    jz 1f
    xorl %ebp, %ebp
    call ap_main
1:  cli
    hlt
    jmp 1b

    .section .note.GNU-stack, "", @progbits
