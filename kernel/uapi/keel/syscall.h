/* The system call instruction, for user programs. */
#ifndef KEEL_UAPI_SYSCALL_H
#define KEEL_UAPI_SYSCALL_H

#include <keel/abi.h>

typedef unsigned long keel_word_t;
typedef unsigned long keel_cap_t;

static inline long keel_syscall(long nr, keel_cap_t cap, keel_word_t label,
                                const keel_word_t in[KEEL_MSG_WORDS],
                                keel_word_t out[KEEL_MSG_WORDS])
{
    register keel_word_t a0 __asm__("rdx") = in ? in[0] : 0;
    register keel_word_t a1 __asm__("r10") = in ? in[1] : 0;
    register keel_word_t a2 __asm__("r8") = in ? in[2] : 0;
    register keel_word_t a3 __asm__("r9") = in ? in[3] : 0;
    register keel_word_t a4 __asm__("r12") = in ? in[4] : 0;
    register keel_word_t a5 __asm__("r13") = in ? in[5] : 0;
    long ret = nr;

    __asm__ volatile("syscall"
                     : "+a"(ret), "+r"(a0), "+r"(a1), "+r"(a2), "+r"(a3), "+r"(a4), "+r"(a5)
                     : "D"(cap), "S"(label)
                     : "rcx", "r11", "memory");
    if (out) {
        out[0] = a0;
        out[1] = a1;
        out[2] = a2;
        out[3] = a3;
        out[4] = a4;
        out[5] = a5;
    }
    return ret;
}

static inline long keel_invoke(keel_cap_t cap, keel_word_t label,
                               const keel_word_t in[KEEL_MSG_WORDS],
                               keel_word_t out[KEEL_MSG_WORDS])
{
    return keel_syscall(KEEL_SYS_INVOKE, cap, label, in, out);
}

static inline void keel_yield(void)
{
    keel_syscall(KEEL_SYS_YIELD, 0, 0, 0, 0);
}

#endif
