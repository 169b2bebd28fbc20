/*
 * The syscall instruction's entry and the way back to user mode.
 *
 * syscall leaves the user RIP in RCX and RFLAGS in R11 and masks IF, so
 * nothing interrupts us here.  The user registers are stored straight into
 * the current thread's TCB (per-CPU frame_top) in the layout of struct
 * trap_frame, with vector VEC_SYSCALL; then C runs on this CPU's kernel
 * stack and never returns here: every exit goes through arch_return_to_user.
 */
#include <arch/layout.h>
#include "frame.h"
#include <keel/abi.h>
#include <keel/cpu.h>

#define VEC_SYSCALL 0x100

    .text
    .balign 16
    .globl syscall_entry
syscall_entry:
    swapgs
    /* The floor: what a system call costs with no work at all. */
    cmpq $KEEL_SYS_FLOOR, %rax
    je syscall_floor
    movq %rsp, %gs:CPU_OFFSET_SCRATCH
    movq %gs:CPU_OFFSET_FRAME_TOP, %rsp
    pushq $USER_DS
    pushq %gs:CPU_OFFSET_SCRATCH
    pushq %r11
    pushq $USER_CS
    pushq %rcx
    pushq $0
    pushq $VEC_SYSCALL
    PUSH_GPRS
    movq %rsp, %rdi
    movq %gs:CPU_OFFSET_STACK_TOP, %rsp
    xorl %ebp, %ebp
    call syscall_from_user
    ud2

syscall_floor:
    xorl %eax, %eax
    swapgs
    sysretq

/* void arch_return_to_user(struct trap_frame *f): restores f and leaves. */
    .globl arch_return_to_user
arch_return_to_user:
    movq %rdi, %rsp
    POP_GPRS
    cmpq $VEC_SYSCALL, (%rsp)
    jne 1f
    /* sysret: the frame's RIP is a user address (the kernel checks every
     * RIP it accepts), so sysret cannot fault in ring 0. */
    movq 16(%rsp), %rcx
    movq 32(%rsp), %r11
    movq 40(%rsp), %rsp
    swapgs
    sysretq
1:  addq $16, %rsp
    swapgs
    iretq

    .section .note.GNU-stack, "", @progbits
