/*
 * PVH entry; the C side is kernel/arch/x86_64/boot.c.  The loader enters
 * pvh_start32 in 32-bit protected mode, paging off, flat CS/DS/ES/SS,
 * EBX = physical address of struct hvm_start_info, no usable stack and an
 * unspecified GDTR.  We switch to our own GDT, build
 * the boot page tables, enable long mode and jump to kmain() in the higher
 * half.  This code runs at its physical address (.boot is linked VMA=LMA);
 * everything else is reached through PHYS() until paging is on.
 */
#include <arch/layout.h>
#include <keel/exit.h>

#define PHYS(x) ((x) - KERNEL_VMA)
#define PTE_P 0x001
#define PTE_W 0x002
#define PTE_PWT 0x008
#define PTE_PCD 0x010
#define PTE_PS 0x080

/*
 * XEN_ELFNOTE_PHYS32_ENTRY: the 32-bit physical entry point.  The note is
 * 4-byte aligned (Linux convention, what every PVH loader expects), and the
 * linker script leaves zero bytes after it because QEMU reads the
 * descriptor as a 64-bit value.
 */
    .pushsection .note.Xen, "a", @note
    .balign 4
    .long 2f - 1f                   /* namesz */
    .long 4f - 3f                   /* descsz */
    .long XEN_ELFNOTE_PHYS32_ENTRY
1:  .asciz "Xen"
2:  .balign 4
3:  .quad pvh_start32
4:  .balign 4
    .popsection

    .section .boot.text, "ax"
    .code32
    .globl pvh_start32
pvh_start32:
    cli
    cld
    lgdt boot_gdtr
    ljmp $GDT_BOOT_CODE32, $1f
1:  movl $GDT_KDATA, %eax
    movl %eax, %ds
    movl %eax, %es
    movl %eax, %ss
    movl %eax, %fs
    movl %eax, %gs
    movl %ebx, %esi                 /* start_info, kept in ESI until kmain */

    /* Long mode is the only thing we cannot do without; report and stop. */
    movl $0x80000000, %eax
    cpuid
    cmpl $0x80000001, %eax
    jb no_long_mode
    movl $0x80000001, %eax
    cpuid
    btl $29, %edx
    jnc no_long_mode
    movl %edx, %ebp                 /* EDX bit 20 = NX, used below */

    /* Everything before paging is on runs emulated instruction by
     * instruction on hosts without "unrestricted guest" (nested KVM), so
     * this path is kept to a few instructions: the page tables are built
     * at link time. */
    movl $PHYS(boot_pml4), %edi
    movl %edi, %cr3
    movl %cr4, %eax
    orl $(CR4_PAE | CR4_PGE), %eax
    movl %eax, %cr4

    movl $MSR_EFER, %ecx
    rdmsr
    orl $EFER_LME, %eax
    btl $20, %ebp
    jnc 4f
    orl $EFER_NXE, %eax
4:  wrmsr
    movl %eax, %ebp                 /* kept for boot_efer, stored once .bss is clear */

    movl %cr0, %eax
    orl $(CR0_PG | CR0_WP | CR0_PE), %eax
    movl %eax, %cr0
    ljmp $GDT_KCODE, $start64_low

no_long_mode:
    movb $KEEL_EXIT_FAIL, %al
    outb %al, $0xf4
5:  hlt
    jmp 5b

    .code64
start64_low:
    /* Still executing from the identity map; continue in the higher half. */
    movabsq $start64, %rax
    jmp *%rax

    .balign 8
boot_gdt:
    .quad 0
    .quad 0x00af9b000000ffff        /* 0x08: 64-bit code */
    .quad 0x00cf93000000ffff        /* 0x10: flat data */
    .quad 0x00cf9b000000ffff        /* 0x18: 32-bit flat code */
boot_gdt_end:
boot_gdtr:
    .word boot_gdt_end - boot_gdt - 1
    .long boot_gdt

    .text
start64:
    /* .bss is not cleared here: an ELF loader zero-fills every PT_LOAD
     * segment beyond its file size (the ELF specification requires it, and
     * Keel's VMM and QEMU do it), and clearing it instruction by instruction
     * costs milliseconds where guest code is emulated. */
    movl %ebp, boot_efer(%rip)      /* the AP trampoline uses the same */
    xorl %eax, %eax
    movl %eax, %fs
    movl %eax, %gs
    leaq boot_stack_top(%rip), %rsp
    xorl %ebp, %ebp
    movl %esi, %edi                 /* zero-extends the start_info address */
    movabsq $DIRECT_MAP_BASE, %rax
    addq %rax, %rdi
    call kmain
1:  cli
    hlt
    jmp 1b

/*
 * The boot page tables, built at link time.  Four page directories of
 * 2 MiB pages map physical 0-4 GiB; the fourth GiB is the MMIO hole on every
 * PC-like machine (LAPIC, IOAPIC, device registers), so it is uncached.  One
 * PDPT serves both the identity map (PML4[0]) and the direct map
 * (PML4[256] = DIRECT_MAP_BASE); KERNEL_VMA is PML4[511], PDPT[510..511],
 * the first two GiB of physical memory through the same directories.
 */
    .section .data.pagetables, "aw"
    .balign 4096
    .globl boot_pml4
boot_pml4:
    .quad PHYS(boot_pdpt_low) + PTE_P + PTE_W
    .fill 255, 8, 0
    .quad PHYS(boot_pdpt_low) + PTE_P + PTE_W
    .fill 254, 8, 0
    .quad PHYS(boot_pdpt_high) + PTE_P + PTE_W
boot_pdpt_low:
    .quad PHYS(boot_pd) + PTE_P + PTE_W
    .quad PHYS(boot_pd) + 0x1000 + PTE_P + PTE_W
    .quad PHYS(boot_pd) + 0x2000 + PTE_P + PTE_W
    .quad PHYS(boot_pd) + 0x3000 + PTE_P + PTE_W
    .fill 508, 8, 0
boot_pdpt_high:
    .fill 510, 8, 0
    .quad PHYS(boot_pd) + PTE_P + PTE_W
    .quad PHYS(boot_pd) + 0x1000 + PTE_P + PTE_W
boot_pd:
    .set i, 0
    .rept 2048
    .if i < 1536
    .quad (i << 21) + PTE_P + PTE_W + PTE_PS
    .else
    .quad (i << 21) + PTE_P + PTE_W + PTE_PS + PTE_PCD + PTE_PWT
    .endif
    .set i, i + 1
    .endr

    .section .bss, "aw", @nobits
    .balign 16
boot_stack:
    .skip BOOT_STACK_SIZE
    .globl boot_stack_top
boot_stack_top:
    .balign 4
    .globl boot_efer
boot_efer:
    .skip 4

    .section .note.GNU-stack, "", @progbits
