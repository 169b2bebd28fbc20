/* The differential corpus: small foreign guests run under `keel run` and QEMU
 * microvm, whose console output must match line for line
 * (tests/boot/test_differential.py).  -DGUEST_<NAME> picks what a guest does;
 * it is linked as ELF64 and, through objcopy -O elf32-i386, as ELF32.  Each
 * enters at the PVH entry in 32-bit protected mode, goes to long mode, prints
 * what it checks with `out` to COM1 and ends on the exit port 0xf4 (0x10
 * pass, 0x11 fail; QEMU's isa-debug-exit).  An exception it did not ask for
 * prints "corpus: exception <vector> ..." and fails.  pvh_entry.S is the
 * guest that stays in 32-bit mode. */
#define LAPIC 0xfee00000
#define IOAPIC 0xfec00000
#define AP_FLAG 0x7000
#define AP_TRAMPOLINE 0x8000

#include "guest_io.h"

    .text
    .code32
    .globl _start
_start:
    mov $stack_top, %esp
    SAY32 s_start
    /* Identity-map 4 GiB with 2 MiB pages (user-accessible: ring 3 runs here too). */
    mov $pd, %edi
    xor %eax, %eax
    mov $0x87, %ecx          /* P | RW | US | PS */
1:  mov %ecx, (%edi)
    movl %eax, 4(%edi)
    add $0x200000, %ecx
    adc $0, %eax
    add $8, %edi
    cmp $pd + 4 * 4096, %edi
    jne 1b
    movl $pdpt + 7, pml4
    xor %ecx, %ecx
    mov $pd + 7, %eax
2:  mov %eax, pdpt(, %ecx, 8)
    add $4096, %eax
    inc %ecx
    cmp $4, %ecx
    jne 2b
    /* The TSS descriptor (64-bit available TSS) in the GDT. */
    mov $tss, %eax
    mov %ax, gdt_tss + 2
    shr $16, %eax
    mov %al, gdt_tss + 4
    mov %ah, gdt_tss + 7
    lgdt gdt_ptr
    mov %cr4, %eax
    or $0x20, %eax          /* PAE */
    mov %eax, %cr4
    mov $pml4, %eax
    mov %eax, %cr3
    mov $0xc0000080, %ecx   /* EFER.LME */
    rdmsr
    or $0x100, %eax
    wrmsr
    mov %cr0, %eax
    or $0x80000001, %eax
    mov %eax, %cr0
    ljmp $0x18, $long_entry

    IO_FUNCS 32

    .code64
long_entry:
    mov $0x10, %ax
    mov %ax, %ds
    mov %ax, %es
    mov %ax, %ss
    mov %ax, %fs
    mov %ax, %gs
    mov $stack_top, %esp
    mov $LAPIC, %r12d       /* device bases: absolute addresses above 2 GiB */
    mov $IOAPIC, %r13d      /* cannot be 32-bit displacements in long mode */
    /* IDT: 48 vectors through the stubs, plus the ring-3 return gate. */
    xor %ecx, %ecx
1:  mov $stubs, %eax
    imul $16, %ecx, %edx
    add %edx, %eax
    call set_gate
    inc %ecx
    cmp $48, %ecx
    jne 1b
    mov $0x80, %ecx
    mov $to_ring0, %eax
    call set_gate
    orb $0x60, idt + 0x80 * 16 + 5     /* DPL 3 */
    lidt idt_ptr
    movq $int_stack_top, tss + 4       /* RSP0 */
    mov $0x30, %ax
    ltr %ax
    SAY s_long
    mov $0xc0000080, %ecx
    rdmsr
    call puthex64
    SAY s_nl
    /* Quiet the legacy PIC and LINT0, so only the IOAPIC delivers. */
    mov $0xff, %al
    out %al, $0x21
    out %al, $0xa1
    movl $0x10000, 0x350(%r12)
    movl $0x1ff, 0xf0(%r12)           /* software-enable, spurious vector 0xff */

#if defined(GUEST_IOPL3)
    /* Ring 3 with IOPL 3 and no I/O bitmap: `out` is allowed by IOPL alone. */
    movw $104, tss + 102               /* I/O map base at the limit: no bitmap */
    mov $0x3002, %eax
    call enter_ring3
    SAY s_back
#elif defined(GUEST_IOBITMAP)
    /* Ring 3 with IOPL 0: the TSS I/O bitmap allows COM1 and nothing else. */
    movw $tss_iomap - tss, tss + 102
    movb $0, tss_iomap + COM1 / 8       /* ports 0x3f8-0x3ff */
    mov $0x0002, %eax
    call enter_ring3
    SAY s_back
#elif defined(GUEST_CPUIDMSR)
    mov $1, %eax
    xor %ecx, %ecx
    cpuid
    mov %edx, %r8d
    mov %ecx, %r9d
    mov %ebx, %r10d
    SAY s_cpuid1d
    mov %r8d, %eax
    and $0x07808371, %eax   /* fpu tsc msr pae cx8 apic cmov pat fxsr sse sse2 */
    call puthex64
    SAY s_cpuid1c
    mov %r9d, %eax
    and $0x84000000, %eax   /* hypervisor, xsave */
    call puthex64
    SAY s_cx16
    mov %r9d, %eax
    shr $13, %eax
    and $1, %eax
    call puthex64
    SAY s_apicid
    mov %r10d, %eax
    shr $24, %eax
    call puthex64
    mov $0x80000001, %eax
    cpuid
    SAY s_ext
    mov %edx, %eax
    and $0x20100800, %eax   /* lm nx syscall */
    call puthex64
    SAY s_apicbase
    mov $0x1b, %ecx
    rdmsr
    call puthex64
    SAY s_pat
    mov $0x277, %ecx
    rdmsr
    mov %eax, %r8d
    HEX %edx
    HEX %r8d
    SAY s_tsc
    rdtsc
    mov %eax, %r8d
    rdtsc
    sub %r8d, %eax
    setnz %al
    movzbl %al, %eax
    call puthex64
    SAY s_nl
#elif defined(GUEST_PORTMMIO)
    mov $0x5a, %al
    mov $COM1 + 7, %dx
    out %al, %dx
    in %dx, %al
    movzbl %al, %eax
    mov %eax, %r8d
    SAY s_scratch
    HEX %r8d
    SAY s_lsr
    mov $COM1 + 5, %dx
    in %dx, %al
    movzbl %al, %eax
    call puthex64
    SAY s_lapicver
    mov 0x30(%r12), %eax
    and $0xff, %eax
    call puthex64
    SAY s_lapicid
    HEX 0x20(%r12)
    SAY s_ioapicpins
    movl $1, (%r13)
    mov 0x10(%r13), %eax
    shr $16, %eax
    and $0xff, %eax
    call puthex64
    SAY s_unclaimed
    movabs 0xc0000000, %eax
    call puthex64
    SAY s_nl
#elif defined(GUEST_IOAPIC)
    /* COM1's transmitter-empty interrupt: IRQ 4 through IOAPIC pin 4 to vector 0x28. */
    movl $0x18, (%r13)
    movl $0x28, 0x10(%r13)
    movl $0x19, (%r13)
    movl $0, 0x10(%r13)
    mov $0x08, %al          /* MCR: OUT2 (the ISA interrupt gate) */
    mov $COM1 + 4, %dx
    out %al, %dx
    mov $0x02, %al          /* IER: transmitter holding register empty */
    mov $COM1 + 1, %dx
    out %al, %dx
    call wait_irq
    SAY s_irq
    HEX irq_iir
    SAY s_nl
#elif defined(GUEST_LAPICTIMER)
    movl $0xb, 0x3e0(%r12)           /* divide by 1 */
    movl $0x29, 0x320(%r12)          /* one-shot, vector 0x29 */
    movl $100000, 0x380(%r12)        /* initial count */
    call wait_irq
    SAY s_timer
    mov 0x390(%r12), %eax            /* current count: 0 after a one-shot */
    call puthex64
    SAY s_nl
#elif defined(GUEST_SMP)
    /* INIT-SIPI-SIPI to APIC ID 1; it starts in real mode at 0x8000. */
    mov $ap_code, %esi
    mov $AP_TRAMPOLINE, %edi
    mov $ap_code_end - ap_code, %ecx
    rep movsb
    movl $0, AP_FLAG
    movl $0x01000000, 0x310(%r12)
    movl $0x00004500, 0x300(%r12)       /* INIT */
    call icr_wait
    mov $2, %r8d
3:  movl $0x01000000, 0x310(%r12)
    movl $0x00004600 + AP_TRAMPOLINE / 4096, 0x300(%r12)  /* SIPI, sent twice */
    call icr_wait
    dec %r8d
    jnz 3b
    mov $100000000, %ecx
1:  cmpl $0xa5a5, AP_FLAG
    je 2f
    pause
    loop 1b
    SAY s_noap
    jmp fail64
2:  mov $s_ap, %esi
    call puts64
    HEX AP_FLAG + 4
    SAY s_nl
#endif
    SAY s_done
pass64:
    mov $EXIT_PORT, %dx
    mov $0x10, %al
    outb %al, %dx
    hlt
fail64:
    mov $EXIT_PORT, %dx
    mov $0x11, %al
    outb %al, %dx
    hlt

/* wait_irq: until an interrupt handler sets irq_seen; `sti; hlt` opens the
 * window only with the CPU halted, so a wake-up cannot be missed. */
wait_irq:
1:  cmpl $0, irq_seen
    jne 2f
    sti
    hlt
    cli
    jmp 1b
2:  ret

/* set_gate: vector ecx -> handler eax (64-bit interrupt gate, DPL 0, CS 0x18). */
set_gate:
    imul $16, %ecx, %edx
    add $idt, %edx
    mov %ax, (%edx)
    movw $0x18, 2(%edx)
    movw $0x8e00, 4(%edx)
    shr $16, %eax
    mov %ax, 6(%edx)
    movl $0, 8(%edx)
    movl $0, 12(%edx)
    ret

/* enter_ring3: iretq to user_code in ring 3 with RFLAGS eax; returns (through
 * `int $0x80` or a #GP from ring 3) with the kernel stack reset. */
enter_ring3:
    mov %rsp, saved_rsp
#if defined(IOPL_VIA_POPF)
    push %rax
    popfq
#endif
#if defined(IOPL_VIA_SYSRET)
    mov %rax, %r11
    mov $user_code, %ecx
    mov $user_stack_top, %esp
    mov $0xc0000080, %ecx
    rdmsr
    or $1, %eax             /* EFER.SCE */
    wrmsr
    mov $0xc0000081, %ecx   /* STAR: sysret CS = 0x20 + 16 | 3, SS = 0x20 + 8 | 3 */
    xor %eax, %eax
    mov $0x00180000, %edx
    wrmsr
    mov $user_code, %ecx
    sysretq
#endif
    pushq $0x23
    pushq $user_stack_top
    push %rax
    pushq $0x2b
    pushq $user_code
    iretq
to_ring0:
    mov saved_rsp, %rsp
    ret

user_code:
    SAY s_ring3
#if defined(GUEST_IOBITMAP)
    mov $0x80, %dx          /* not in the bitmap: #GP */
    out %al, %dx
#endif
    int $0x80

#if defined(GUEST_SMP)
icr_wait:
    mov $1000000, %ecx
1:  testl $0x1000, 0x300(%r12)
    jz 2f
    pause
    loop 1b
2:  ret
#endif

/* The common interrupt entry: the stub pushed an error code (or 0) and the vector. */
common:
    mov (%rsp), %eax
    cmp $0x28, %eax
    je irq_com1
    cmp $0x29, %eax
    je irq_timer
    cmp $13, %eax
    jne 1f
    testb $3, 24(%rsp)      /* a #GP from ring 3 is the I/O bitmap guest's check */
    jz 1f
    SAY s_gp3
    HEX 8(%rsp)
    mov $s_iopl, %esi        /* the IOPL the interrupted ring-3 code ran with */
    call puts64
    mov 32(%rsp), %eax
    shr $12, %eax
    and $3, %eax
    call puthex64
    SAY s_nl
    jmp to_ring0
1:  mov $s_exc, %esi
    call puts64
    HEX (%rsp)
    SAY s_err
    HEX 8(%rsp)
    SAY s_rip
    HEX 16(%rsp)
    SAY s_nl
    jmp fail64
irq_com1:
    mov $COM1 + 2, %dx      /* IIR: reading it acknowledges THRE */
    in %dx, %al
    and $0xf, %eax
    mov %eax, irq_iir
    xor %al, %al
    mov $COM1 + 1, %dx
    out %al, %dx
    jmp irq_done
irq_timer:
irq_done:
    movl $1, irq_seen
    movl $0, 0xb0(%r12)     /* EOI */
    add $16, %rsp
    iretq

    .balign 16
stubs:
    .irp v, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31,32,33,34,35,36,37,38,39,40,41,42,43,44,45,46,47
    .balign 16
    .if (\v == 8) || (\v == 10) || (\v == 11) || (\v == 12) || (\v == 13) || (\v == 14) || (\v == 17) || (\v == 21) || (\v == 29) || (\v == 30)
    pushq $\v
    .else
    pushq $0
    pushq $\v
    .endif
    jmp common
    .endr

    IO_FUNCS 64
#if defined(GUEST_SMP)
    .code16
ap_code:                    /* runs at 0x8000 in real mode, CS = 0x800 */
    mov $1, %eax
    cpuid
    shr $24, %ebx
    xor %ax, %ax
    mov %ax, %ds
    mov %ebx, AP_FLAG + 4
    movl $0xa5a5, AP_FLAG
1:  cli
    hlt
    jmp 1b
ap_code_end:
    .code64
#endif

    .data
    .balign 8
irq_seen: .long 0
irq_iir: .long 0
saved_rsp: .quad 0
gdt:
    .quad 0
    .quad 0x00cf9a000000ffff    /* 0x08 code32 */
    .quad 0x00cf92000000ffff    /* 0x10 data */
    .quad 0x00af9a000000ffff    /* 0x18 code64 */
    .quad 0x00cff2000000ffff    /* 0x20 user data (DPL 3) */
    .quad 0x00affa000000ffff    /* 0x28 user code64 (DPL 3) */
gdt_tss:
    .quad 0x0000890000000000 + (tss_end - tss - 1)  /* 0x30 TSS, base filled in */
    .quad 0
gdt_end:
gdt_ptr: .word gdt_end - gdt - 1
    .quad gdt
idt_ptr: .word 256 * 16 - 1
    .quad idt

s_start:    .asciz "corpus: start\n"
s_nl:       .asciz "\n"
s_long:     .asciz "long mode: efer "
s_ring3:    .asciz "ring 3: hello through out\n"
s_back:     .asciz "ring 0: back from ring 3\n"
s_gp3:      .asciz "ring 0: #GP from ring 3, error code "
s_cpuid1d:  .asciz "cpuid 1: edx&basic "
s_cpuid1c:  .asciz " ecx&(hypervisor|xsave) "
s_cx16:     .asciz " cx16 "
s_apicid:   .asciz " apic id "
s_ext:      .asciz "\ncpuid 80000001: edx&(lm|nx|syscall) "
s_apicbase: .asciz "\nmsr apic_base "
s_pat:      .asciz " pat "
s_tsc:      .asciz " tsc advances "
s_scratch:  .asciz "port: uart scratch "
s_lsr:      .asciz " lsr "
s_lapicver: .asciz "\nmmio: lapic version "
s_lapicid:  .asciz " lapic id "
s_ioapicpins: .asciz " ioapic max redirection entry "
s_unclaimed: .asciz "\nmmio: unclaimed 0xc0000000 reads "
s_irq:      .asciz "ioapic: irq 4 on vector 0x28, iir "
s_timer:    .asciz "lapic timer: one-shot fired on vector 0x29, current count "
s_ap:       .asciz "smp: cpu with apic id 1 ran real-mode code at 0x8000, cpuid apic id "
s_noap:     .asciz "smp: the second cpu did not start\n"
s_exc:      .asciz "corpus: exception "
s_err:      .asciz " error "
s_rip:      .asciz " rip "
s_iopl:     .asciz " rflags.iopl "
s_done:     .asciz "corpus: done\n"

    .balign 16
tss:
    .fill 104, 1, 0
tss_iomap:
    .fill 8192, 1, 0xff
    .byte 0xff
tss_end:

    .bss
    .balign 4096
pml4: .space 4096
pdpt: .space 4096
pd:   .space 4 * 4096
idt:  .space 256 * 16
    .space 4096
stack_top:
    .space 4096
int_stack_top:
    .space 4096
user_stack_top:
