/* The register frame of an interrupted user or kernel context, shared by
 * the C and the assembly (asm/x86_64/entry.S): the FRAME_* offsets are
 * what the assembly uses, and the static asserts below check them against
 * struct trap_frame, so the two cannot drift.  asm/x86_64/frame.h checks
 * at assembly time that PUSH_GPRS pushes in this order. */
#ifndef ARCH_FRAME_H
#define ARCH_FRAME_H

/* General-purpose registers: RAX is pushed first, so R15 is lowest. */
#define FRAME_R15 0
#define FRAME_R14 8
#define FRAME_R13 16
#define FRAME_R12 24
#define FRAME_R11 32
#define FRAME_R10 40
#define FRAME_R9 48
#define FRAME_R8 56
#define FRAME_RBP 64
#define FRAME_RDI 72
#define FRAME_RSI 80
#define FRAME_RDX 88
#define FRAME_RCX 96
#define FRAME_RBX 104
#define FRAME_RAX 112
/* Pushed by the entry stubs. */
#define FRAME_VECTOR 120
#define FRAME_ERROR 128
/* Pushed by the CPU (or, for syscall, by the entry code in the same shape). */
#define FRAME_RIP 136
#define FRAME_CS 144
#define FRAME_RFLAGS 152
#define FRAME_RSP 160
#define FRAME_SS 168
#define FRAME_SIZE 176

/* vector of a frame saved by the syscall instruction (it returns by
 * sysret; any other frame by iret) */
#define VEC_SYSCALL 0x100

/* The RFLAGS a thread leaves the kernel with (entry.S makes it so):
 * only the flags user code may set (CF PF AF ZF SF DF OF), interrupts
 * on, and bit 1 (always set). */
#define RFLAGS_IF 0x200
#define RFLAGS_USER 0xcd5
#define RFLAGS_SAFE(r) (((r) & RFLAGS_USER) | RFLAGS_IF | 2)

#ifndef __ASSEMBLY__
#include <keel/types.h>

struct trap_frame {
    u64 r15, r14, r13, r12, r11, r10, r9, r8;
    u64 rbp, rdi, rsi, rdx, rcx, rbx, rax;
    u64 vector, error;
    u64 rip, cs, rflags, rsp, ss; /* pushed by the CPU */
};

#define FRAME_CHECK(field, off) \
    _Static_assert(offsetof(struct trap_frame, field) == (off), "trap_frame." #field)
FRAME_CHECK(r15, FRAME_R15);
FRAME_CHECK(r14, FRAME_R14);
FRAME_CHECK(r13, FRAME_R13);
FRAME_CHECK(r12, FRAME_R12);
FRAME_CHECK(r11, FRAME_R11);
FRAME_CHECK(r10, FRAME_R10);
FRAME_CHECK(r9, FRAME_R9);
FRAME_CHECK(r8, FRAME_R8);
FRAME_CHECK(rbp, FRAME_RBP);
FRAME_CHECK(rdi, FRAME_RDI);
FRAME_CHECK(rsi, FRAME_RSI);
FRAME_CHECK(rdx, FRAME_RDX);
FRAME_CHECK(rcx, FRAME_RCX);
FRAME_CHECK(rbx, FRAME_RBX);
FRAME_CHECK(rax, FRAME_RAX);
FRAME_CHECK(vector, FRAME_VECTOR);
FRAME_CHECK(error, FRAME_ERROR);
FRAME_CHECK(rip, FRAME_RIP);
FRAME_CHECK(cs, FRAME_CS);
FRAME_CHECK(rflags, FRAME_RFLAGS);
FRAME_CHECK(rsp, FRAME_RSP);
FRAME_CHECK(ss, FRAME_SS);
_Static_assert(sizeof(struct trap_frame) == FRAME_SIZE, "trap_frame size");
#undef FRAME_CHECK
#endif

#endif
