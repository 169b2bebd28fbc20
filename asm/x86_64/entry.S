/*
 * Entries into the kernel and the way back to user mode; the C side is
 * kernel/arch/x86_64/entry.c.  Every entry saves the interrupted registers
 * as a struct trap_frame (<arch/frame.h>: the FRAME_* offsets used here are
 * checked against the C struct), then calls C on this CPU's kernel stack.
 *
 * - syscall_entry: the syscall instruction.
 * - trap_stub_table / trap_common: interrupts and exceptions.
 * - arch_return_to_user: restores a user frame and leaves by sysret or iret.
 */
#include <arch/layout.h>
#include "frame.h"
#include <keel/abi.h>
#include <keel/cpu.h>

/* -- the syscall instruction ----------------------------------------------- */

/*
 * syscall leaves the user RIP in RCX and RFLAGS in R11 and masks IF, so
 * nothing interrupts us here.  The user registers are stored straight into
 * the current thread's TCB (per-CPU frame_top) in the layout of struct
 * trap_frame, with vector VEC_SYSCALL; then C runs on this CPU's kernel
 * stack and never returns here: every exit goes through arch_return_to_user.
 */
/* KEEL_LABEL_USER without its C suffix (entry.c checks the two agree). */
#define ENTRY_LABEL_USER 0x10000
    .text
    .balign 16
    .globl syscall_entry
syscall_entry:
    swapgs
    /* The floor: what a system call costs with no work at all. */
    cmpq $KEEL_SYS_FLOOR, %rax
    je syscall_floor
    /* The null call's fast path: nothing to do but return its results
     * (error and six words 0), unless this CPU must reschedule.  Nothing
     * else can be pending: requests from other CPUs come by interrupt,
     * taken as soon as sysret turns interrupts back on. */
    cmpq $KEEL_SYS_NULL, %rax
    jne 1f
    cmpl $0, %gs:CPU_OFFSET_NEED_RESCHED
    je syscall_null
1:
    movq %rsp, %gs:CPU_OFFSET_SCRATCH
    movq %gs:CPU_OFFSET_FRAME_TOP, %rsp
    pushq $USER_DS                  /* ss */
    pushq %gs:CPU_OFFSET_SCRATCH    /* rsp */
    pushq %r11                      /* rflags */
    pushq $USER_CS                  /* cs */
    pushq %rcx                      /* rip */
    pushq $0                        /* error */
    pushq $VEC_SYSCALL              /* vector */
    PUSH_GPRS
    /* The IPC fast paths are called straight from here, their arguments
     * still in the caller's registers (C's first two: capability and
     * label; reply capability and error) and the rest read from the frame
     * just saved: a call with a user label (fastpath_call_fn) and
     * reply_recv (fastpath_reply_recv_fn), each the body for this
     * machine's number of CPUs; cnode_copy and cnode_delete, all six
     * arguments in registers, to the capability fast path (fastpath_cnode,
     * capfast.c).  Everything else, and other kernel labels (which may
     * need the objects lock exclusive), goes to syscall_from_user.
     * Nothing here preserves registers for C: every way out restores the
     * user's from a frame (arch_return_to_user). */
    movq %gs:CPU_OFFSET_STACK_TOP, %rsp
    cmpq $KEEL_SYS_REPLY_RECV, %rax
    je 2f
    testq %rax, %rax                /* KEEL_SYS_INVOKE */
    jnz 1f
    cmpq $ENTRY_LABEL_USER, %rsi
    jb 3f
    call *fastpath_call_fn(%rip)
2:  call *fastpath_reply_recv_fn(%rip)
3:  cmpq $KEEL_CALL_CNODE_COPY, %rsi
    je 4f
    cmpq $KEEL_CALL_CNODE_DELETE, %rsi
    jne 1f
4:  movq %r10, %rcx                 /* the fourth argument, as C wants it */
    call fastpath_cnode
1:  movq %gs:CPU_OFFSET_FRAME_TOP, %rdi
    subq $FRAME_SIZE, %rdi
    call syscall_from_user
    ud2

syscall_null:
    xorl %edx, %edx
    xorl %r10d, %r10d
    xorl %r8d, %r8d
    xorl %r9d, %r9d
    xorl %r12d, %r12d
    xorl %r13d, %r13d
syscall_floor:
    xorl %eax, %eax
    swapgs
    sysretq

/* void arch_return_to_user(struct trap_frame *f): restores f and leaves.
 * After POP_GPRS, RSP points at the frame's vector. */
#define AT(field) (FRAME_##field - FRAME_VECTOR)
    .globl arch_return_to_user
arch_return_to_user:
    movq %rdi, %rsp
    POP_GPRS
    cmpq $VEC_SYSCALL, AT(VECTOR)(%rsp)
    jne 1f
    /* sysret: the frame's RIP is a user address (the kernel checks every
     * RIP it accepts), so sysret cannot fault in ring 0. */
    movq AT(RIP)(%rsp), %rcx
    movq AT(RFLAGS)(%rsp), %r11
    movq AT(RSP)(%rsp), %rsp
    swapgs
    sysretq
1:  addq $AT(RIP), %rsp
    swapgs
    iretq

/* void arch_return_to_user_msg(struct trap_frame *f, const struct trap_frame *m):
 * arch_return_to_user(f) for a thread switched to by arch_enter_user, with
 * message words 1-5 (R10 R8 R9 R12 R13) taken from m: on one CPU the IPC
 * fast path leaves a message's words in its sender's frame instead of
 * copying them twice (fastpath.c).  m is f when there is no message.  The
 * RFLAGS that leaves is made safe here: only the flags user code may set,
 * interrupts on (RFLAGS_SAFE of <arch/frame.h>). */
    .globl arch_return_to_user_msg
arch_return_to_user_msg:
    movq FRAME_R10(%rsi), %r10
    movq FRAME_R8(%rsi), %r8
    movq FRAME_R9(%rsi), %r9
    movq FRAME_R12(%rsi), %r12
    movq FRAME_R13(%rsi), %r13
    movq %rdi, %rsp
    movq FRAME_R15(%rsp), %r15
    movq FRAME_R14(%rsp), %r14
    movq FRAME_RBP(%rsp), %rbp
    movq FRAME_RDI(%rsp), %rdi
    movq FRAME_RSI(%rsp), %rsi
    movq FRAME_RDX(%rsp), %rdx
    movq FRAME_RBX(%rsp), %rbx
    movq FRAME_RAX(%rsp), %rax
    cmpq $VEC_SYSCALL, FRAME_VECTOR(%rsp)
    jne 1f
    movq FRAME_RIP(%rsp), %rcx
    movq FRAME_RFLAGS(%rsp), %r11
    andl $RFLAGS_USER, %r11d
    orl $(RFLAGS_IF | 2), %r11d
    movq FRAME_RSP(%rsp), %rsp
    swapgs
    sysretq
1:  movq FRAME_RCX(%rsp), %rcx
    movq FRAME_R11(%rsp), %r11
    andq $RFLAGS_USER, FRAME_RFLAGS(%rsp)
    orq $(RFLAGS_IF | 2), FRAME_RFLAGS(%rsp)
    addq $FRAME_RIP, %rsp
    swapgs
    iretq

/* -- interrupts and exceptions ---------------------------------------------- */

/*
 * One 16-byte stub per vector pushes a zero error code where the CPU does
 * not push one (so every trap frame has the same shape) and the vector
 * number, then joins trap_common, which saves all general-purpose
 * registers and calls trap_dispatch(frame) (from kernel mode) or
 * trap_from_user(frame) (from user mode).
 */

/* Vectors for which the CPU pushes an error code. */
#define HAS_ERRCODE(v) ((v) == 8 || (v) == 10 || (v) == 11 || (v) == 12 || \
                        (v) == 13 || (v) == 14 || (v) == 17 || (v) == 21 || \
                        (v) == 29 || (v) == 30)

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
    testb $3, AT(CS)(%rsp)          /* vector and error code on the stack */
    jnz from_user
    PUSH_GPRS
    cld
    movq %rsp, %rdi
    /* The CPU aligned RSP to 16 before pushing the 5-word frame; with the
     * 2 + 15 words pushed here RSP is 16-byte aligned again for the call. */
    call trap_dispatch
    POP_GPRS
    addq $AT(RIP), %rsp
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
