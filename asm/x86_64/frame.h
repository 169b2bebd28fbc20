/* Saving and restoring the general-purpose registers as a struct
 * trap_frame.  The layout is <arch/frame.h>: its FRAME_* offsets are
 * checked against the C struct there (static asserts), and here, at
 * assembly time, against the order PUSH_GPRS pushes in (each register
 * pushed lands 8 bytes below the one before it). */
#ifndef ASM_FRAME_H
#define ASM_FRAME_H

#include <arch/frame.h>

.macro FRAME_ORDER hi, lo
    .if (\hi) - (\lo) != 8
    .error "PUSH_GPRS does not match the FRAME_* offsets of <arch/frame.h>"
    .endif
.endm
    FRAME_ORDER FRAME_VECTOR, FRAME_RAX
    FRAME_ORDER FRAME_RAX, FRAME_RBX
    FRAME_ORDER FRAME_RBX, FRAME_RCX
    FRAME_ORDER FRAME_RCX, FRAME_RDX
    FRAME_ORDER FRAME_RDX, FRAME_RSI
    FRAME_ORDER FRAME_RSI, FRAME_RDI
    FRAME_ORDER FRAME_RDI, FRAME_RBP
    FRAME_ORDER FRAME_RBP, FRAME_R8
    FRAME_ORDER FRAME_R8, FRAME_R9
    FRAME_ORDER FRAME_R9, FRAME_R10
    FRAME_ORDER FRAME_R10, FRAME_R11
    FRAME_ORDER FRAME_R11, FRAME_R12
    FRAME_ORDER FRAME_R12, FRAME_R13
    FRAME_ORDER FRAME_R13, FRAME_R14
    FRAME_ORDER FRAME_R14, FRAME_R15
    FRAME_ORDER 8, FRAME_R15 /* R15, pushed last, is at offset 0 */
    /* what the entry code pushes before the registers, in push order */
    FRAME_ORDER FRAME_SS, FRAME_RSP
    FRAME_ORDER FRAME_RSP, FRAME_RFLAGS
    FRAME_ORDER FRAME_RFLAGS, FRAME_CS
    FRAME_ORDER FRAME_CS, FRAME_RIP
    FRAME_ORDER FRAME_RIP, FRAME_ERROR
    FRAME_ORDER FRAME_ERROR, FRAME_VECTOR
    FRAME_ORDER FRAME_SIZE, FRAME_SS

.macro PUSH_GPRS
    pushq %rax
    pushq %rbx
    pushq %rcx
    pushq %rdx
    pushq %rsi
    pushq %rdi
    pushq %rbp
    pushq %r8
    pushq %r9
    pushq %r10
    pushq %r11
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
.endm

.macro POP_GPRS
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %r11
    popq %r10
    popq %r9
    popq %r8
    popq %rbp
    popq %rdi
    popq %rsi
    popq %rdx
    popq %rcx
    popq %rbx
    popq %rax
.endm

#endif
