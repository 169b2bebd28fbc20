/* Program entry: the kernel starts a thread with RDI = its argument (for
 * the root task, the boot information page) and RSP = its stack top. */
    .text
    .globl _start
_start:
    xorl %ebp, %ebp
    andq $-16, %rsp
    call keel_main
    movq %rax, %rdi
    call keel_exit
1:  jmp 1b

    .section .note.GNU-stack, "", @progbits
