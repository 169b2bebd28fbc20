/* The PVH entry state as a 32-bit kernel finds it, printed for the
 * differential test (tests/boot/test_differential.py): hvm_start_info, the
 * control registers, EFER, RFLAGS, the selectors and the descriptor tables.
 * The PVH ABI fixes CR0 (PE only), CR4 (0), flat 32-bit CS/DS/ES/SS, a
 * 32-bit TSS in TR and RFLAGS.VM/IF/TF clear; selectors and where the GDT
 * lives are the loader's to choose.  (LSL, which would show the segment
 * limits, is one more instruction this host's emulator cannot run.) */
#include "guest_io.h"

    .text
    .code32
    .globl _start
_start:
    mov $stack_top, %esp
    mov %ebx, %ebp          /* hvm_start_info; the print routines leave ebp alone */
    SAY32 s_start
    SAY32 s_magic
    HEX32 (%ebp)
    SAY32 s_version
    HEX32 4(%ebp)
    SAY32 s_modules
    HEX32 12(%ebp)
    SAY32 s_cr0
    HEX32 %cr0
    SAY32 s_cr4
    HEX32 %cr4
    SAY32 s_efer
    mov $0xc0000080, %ecx
    rdmsr
    call puthex32
    SAY32 s_eflags
    pushf
    pop %eax
    and $0x23300, %eax      /* VM, IOPL, IF, TF: the arithmetic flags are ours */
    call puthex32
    SAY32 s_cs
    HEX32 %cs
    SAY32 s_ds
    HEX32 %ds
    SAY32 s_es
    HEX32 %es
    SAY32 s_ss
    HEX32 %ss
    SAY32 s_tr
    str %eax
    call puthex32
    SAY32 s_gdtr
    sgdt table
    HEX32 table + 2
    SAY32 s_limit
    movzwl table, %eax
    call puthex32
    SAY32 s_idtr
    sidt table
    HEX32 table + 2
    SAY32 s_limit
    movzwl table, %eax
    call puthex32
    SAY32 s_nl
    cmpl $0, 40(%ebp)       /* the memory map: an address and a count */
    je fail
    cmpl $0, 48(%ebp)
    je fail
    SAY32 s_memmap
    SAY32 s_done
    mov $EXIT_PORT, %dx
    mov $0x10, %al
    outb %al, %dx
    hlt
fail:
    mov $EXIT_PORT, %dx
    mov $0x11, %al
    outb %al, %dx
    hlt

    IO_FUNCS 32

    .data
table:      .quad 0
s_start:    .asciz "corpus: start\n"
s_magic:    .asciz "pvh: start_info magic "
s_version:  .asciz " version "
s_modules:  .asciz " modules "
s_cr0:      .asciz "\npvh: cr0 "
s_cr4:      .asciz " cr4 "
s_efer:     .asciz " efer "
s_eflags:   .asciz " eflags.vm|iopl|if|tf "
s_cs:       .asciz "\npvh: cs "
s_ds:       .asciz " ds "
s_es:       .asciz " es "
s_ss:       .asciz " ss "
s_tr:       .asciz " tr "
s_gdtr:     .asciz "\npvh: gdtr base "
s_idtr:     .asciz " idtr base "
s_limit:    .asciz " limit "
s_nl:       .asciz "\n"
s_memmap:   .asciz "pvh: memory map present\n"
s_done:     .asciz "corpus: done\n"

    .bss
    .balign 16
    .space 4096
stack_top:
