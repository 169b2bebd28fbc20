/* Tiny PVH guests for VMM tests: 32-bit code, no kernel.
 * One source, several behaviours chosen with -DGUEST_<NAME>. */
#define COM1 0x3f8
#define EXIT_PORT 0xf4

    .section .note.Xen, "a", @note
    .balign 4
    .long 4                 /* namesz */
    .long 4                 /* descsz */
    .long 18                /* XEN_ELFNOTE_PHYS32_ENTRY */
    .asciz "Xen"
    .long _start

    .text
    .code32
    .globl _start
_start:
    mov $stack_top, %esp
    mov $hello, %esi
    call puts
#if defined(GUEST_TRIPLE)
    lidt zero_idt
    xor %ecx, %ecx          /* #DE through an empty IDT: #DF, then shutdown */
    div %ecx
#elif defined(GUEST_PROBE)
    /* Touch ports and MMIO nobody emulates: the VMM must answer harmlessly. */
    mov $0x2f8, %dx
    inb %dx, %al
    cmp $0xff, %al
    jne fail
    mov $0x510, %dx
    movw $0x1234, %ax
    outw %ax, %dx
    movl $0xd0000000, %ebx
    movl (%ebx), %eax
    cmp $0xffffffff, %eax
    jne fail
    movl $0x5a5a5a5a, (%ebx)
    mov $probed, %esi
    call puts
#elif defined(GUEST_EXITS)
    /* A fixed number of port writes to the unused POST port: exit-cost bench. */
    mov $EXIT_COUNT, %ecx
    mov $0x80, %dx
1:  outb %al, %dx
    loop 1b
#elif defined(GUEST_HANG)
1:  hlt
    jmp 1b
#elif defined(GUEST_FAIL)
    jmp fail
#endif
    mov $EXIT_PORT, %dx
    mov $0x10, %al
    outb %al, %dx
    hlt

fail:
    mov $EXIT_PORT, %dx
    mov $0x11, %al
    outb %al, %dx
    hlt

/* puts(esi): poll LSR, then write one byte. */
puts:
1:  lodsb
    test %al, %al
    jz 2f
    mov %al, %ah
    mov $COM1+5, %dx
3:  inb %dx, %al
    test $0x20, %al
    jz 3b
    mov $COM1, %dx
    mov %ah, %al
    outb %al, %dx
    jmp 1b
2:  ret

hello:  .asciz "tiny: hello\n"
probed: .asciz "tiny: probe ok\n"
    .balign 8
zero_idt: .word 0
    .long 0

    .bss
    .balign 16
    .space 4096
stack_top:
