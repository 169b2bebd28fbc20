/*
 * Interrupt and exception entry.  One 16-byte stub per vector pushes a zero
 * error code where the CPU does not push one (so every trap frame has the
 * same shape) and the vector number, then joins trap_common, which saves all
 * general-purpose registers as a struct trap_frame (kernel/arch/x86_64/trap.h)
 * and calls trap_dispatch(frame).
 */
#include <arch/layout.h>
#include "frame.h"
#include <keel/cpu.h>

/* Vectors for which the CPU pushes an error code. */
#define HAS_ERRCODE(v) ((v) == 8 || (v) == 10 || (v) == 11 || (v) == 12 || \
                        (v) == 13 || (v) == 14 || (v) == 17 || (v) == 21 || \
                        (v) == 29 || (v) == 30)

/* Offset of the saved CS once vector and error code are on the stack. */
#define FRAME_CS_NOREGS 24
#define FRAME_CS_REGS (24 + 15 * 8)

    .pushsection .rodata
    .balign 8
    .globl trap_stub_table
trap_stub_table:
    .popsection

    .text
    .balign 16
    .set vec, 0
    .rept 256
    .balign 16
1:
    .if !HAS_ERRCODE(vec)
    pushq $0
    .endif
    pushq $vec
    jmp trap_common
    .pushsection .rodata
    .quad 1b
    .popsection
    .set vec, vec + 1
    .endr

trap_common:
    testb $3, FRAME_CS_NOREGS(%rsp)
    jnz from_user
    PUSH_GPRS
    cld
    movq %rsp, %rdi
    /* The CPU aligned RSP to 16 before pushing the 5-word frame; with the
     * 2 + 15 words pushed here RSP is 16-byte aligned again for the call. */
    call trap_dispatch
    POP_GPRS
    addq $16, %rsp
    iretq

/* From user mode the CPU took RSP from TSS.rsp0, the end of the current
 * thread's saved-register area in its TCB: the frame is completed there,
 * then C runs on this CPU's kernel stack and leaves through
 * arch_return_to_user. */
from_user:
    swapgs
    PUSH_GPRS
    cld
    movq %rsp, %rdi
    movq %gs:CPU_OFFSET_STACK_TOP, %rsp
    xorl %ebp, %ebp
    call trap_from_user
    ud2

    .section .note.GNU-stack, "", @progbits
