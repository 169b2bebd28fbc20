/* x86-64 memory layout, descriptor selectors and interrupt vectors; shared
 * by the C and the assembly (so only #defines here). */
#ifndef ARCH_LAYOUT_H
#define ARCH_LAYOUT_H

/* The image is linked at KERNEL_VMA + physical address and loaded at
 * KERNEL_PHYS; the boot page tables map KERNEL_VMA -> physical 0 (2 GiB). */
#define KERNEL_VMA 0xffffffff80000000
#define KERNEL_PHYS 0x100000
/* All physical memory below DIRECT_MAP_SIZE, mapped at DIRECT_MAP_BASE (and
 * identity-mapped during boot, which the AP trampoline relies on). */
#define DIRECT_MAP_BASE 0xffff800000000000
#define DIRECT_MAP_SIZE 0x100000000

/* Physical page the AP trampoline is copied to; the STARTUP IPI vector is
 * its page number, so it must be page-aligned and below 1 MiB. */
#define TRAMPOLINE_PHYS 0x8000

#define BOOT_STACK_SIZE 16384
#define KSTACK_SIZE 16384
#define IST_STACK_SIZE 8192

/* GDT layout, identical in the boot GDT and each CPU's GDT where they
 * overlap.  Entries 3-5 follow the order SYSRET requires. */
#define GDT_KCODE 0x08
#define GDT_KDATA 0x10
#define GDT_BOOT_CODE32 0x18 /* boot GDT only */
#define GDT_UCODE32 0x18
#define GDT_UDATA 0x20
#define GDT_UCODE 0x28
#define GDT_TSS 0x30
#define GDT_ENTRIES 8

/* IST slots (1-based, as in the gate descriptor). */
#define IST_DF 1
#define IST_NMI 2
#define IST_MC 3
#define IST_COUNT 3

/* Interrupt vectors.  Their priority classes (vector >> 4) matter to a
 * wait that halts (apic.c: arch_wait_halt): it raises the task priority to
 * TPR_WAIT, holding back every device interrupt (classes 3-6) but letting
 * the timer and the IPIs through. */
#define VEC_LAPIC_TIMER 0xe0
#define VEC_IRQ_BASE 0x30 /* + GSI */
#define VEC_IRQ_COUNT 64
#define VEC_IPI_WAKEUP 0xf0 /* wake an idle CPU or make one reschedule */
#define VEC_IPI_TLB 0xf1    /* flush user TLB entries */
#define VEC_IPI_KICK 0xf2   /* end a halted wait in the kernel (wait.c) */
#define TPR_WAIT 0xd0       /* classes 0-13 held back */
#define VEC_SPURIOUS 0xff

#define MSR_EFER 0xc0000080
#define EFER_LME (1 << 8)
#define EFER_NXE (1 << 11)
#define MSR_GS_BASE 0xc0000101
#define MSR_KERNEL_GS_BASE 0xc0000102
#define MSR_APIC_BASE 0x1b
#define MSR_STAR 0xc0000081
#define MSR_LSTAR 0xc0000082
#define MSR_FMASK 0xc0000084
#define EFER_SCE (1 << 0)

/* Selectors with their privilege level, as user mode sees them. */
#define USER_CS (GDT_UCODE | 3)
#define USER_DS (GDT_UDATA | 3)

#define CR0_PE (1 << 0)
#define CR0_WP (1 << 16)
#define CR0_PG (1 << 31)
#define CR4_PAE (1 << 5)
#define CR4_PGE (1 << 7)

#define XEN_ELFNOTE_PHYS32_ENTRY 18

#endif
