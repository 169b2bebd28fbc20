/* The register frame trap_entry.S builds on the kernel stack. */
#ifndef TRAP_H
#define TRAP_H

#include <keel/types.h>

struct trap_frame {
    u64 r15, r14, r13, r12, r11, r10, r9, r8;
    u64 rbp, rdi, rsi, rdx, rcx, rbx, rax;
    u64 vector, error;
    u64 rip, cs, rflags, rsp, ss; /* pushed by the CPU */
};

#endif
