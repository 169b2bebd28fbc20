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

/* A received message. */
struct keel_msg {
    keel_word_t badge, label, w[KEEL_MSG_WORDS], info;
};

/* Sends without waiting: KEEL_E_FULL when the queue has no room. */
static inline long keel_send(keel_cap_t ep, keel_word_t label, keel_word_t w0, keel_word_t w1,
                             keel_word_t w2, keel_word_t w3, keel_word_t w4, keel_word_t w5)
{
    keel_word_t in[KEEL_MSG_WORDS] = { w0, w1, w2, w3, w4, w5 };

    return keel_syscall(KEEL_SYS_SEND, ep, label, in, 0);
}

/* A received message, from the registers the kernel returned it in. */
static inline void keel_msg_set(struct keel_msg *m, keel_word_t badge, keel_word_t label,
                                keel_word_t a0, keel_word_t a1, keel_word_t a2, keel_word_t a3,
                                keel_word_t a4, keel_word_t a5, keel_word_t info)
{
    m->badge = badge;
    m->label = label;
    m->w[0] = a0;
    m->w[1] = a1;
    m->w[2] = a2;
    m->w[3] = a3;
    m->w[4] = a4;
    m->w[5] = a5;
    m->info = info;
}

/* Receives into *m; capabilities land from slot window on (0: none). */
static inline long keel_recv(keel_cap_t ep, keel_word_t flags, keel_word_t window,
                             struct keel_msg *m)
{
    register keel_word_t a0 __asm__("rdx") = window;
    register keel_word_t a1 __asm__("r10") = 0;
    register keel_word_t a2 __asm__("r8") = 0;
    register keel_word_t a3 __asm__("r9") = 0;
    register keel_word_t a4 __asm__("r12") = 0;
    register keel_word_t a5 __asm__("r13") = 0;
    register keel_word_t info __asm__("rbx") = 0;
    keel_word_t badge = ep, label = flags;
    long ret = KEEL_SYS_RECV;

    __asm__ volatile("syscall"
                     : "+a"(ret), "+D"(badge), "+S"(label), "+r"(a0), "+r"(a1), "+r"(a2),
                       "+r"(a3), "+r"(a4), "+r"(a5), "+r"(info)
                     :
                     : "rcx", "r11", "memory");
    if (m)
        keel_msg_set(m, badge, label, a0, a1, a2, a3, a4, a5, info);
    return ret;
}

/* Answers a call through its one-shot reply capability. */
static inline long keel_reply(keel_cap_t reply, long err, const keel_word_t res[KEEL_MSG_WORDS])
{
    return keel_syscall(KEEL_SYS_REPLY, reply, (keel_word_t)err, res, 0);
}

/* Answers a call, then receives the next message as keel_recv does
 * (blocking); a failed reply returns its error without receiving. */
static inline long keel_reply_recv(keel_cap_t reply, long err,
                                   const keel_word_t res[KEEL_MSG_WORDS], keel_cap_t ep,
                                   keel_word_t window, struct keel_msg *m)
{
    register keel_word_t a0 __asm__("rdx") = res[0];
    register keel_word_t a1 __asm__("r10") = res[1];
    register keel_word_t a2 __asm__("r8") = res[2];
    register keel_word_t a3 __asm__("r9") = res[3];
    register keel_word_t a4 __asm__("r12") = res[4];
    register keel_word_t a5 __asm__("r13") = res[5];
    register keel_word_t e __asm__("r14") = ep;
    register keel_word_t w __asm__("r15") = window;
    register keel_word_t info __asm__("rbx") = 0;
    keel_word_t badge = reply, label = (keel_word_t)err;
    long ret = KEEL_SYS_REPLY_RECV;

    __asm__ volatile("syscall"
                     : "+a"(ret), "+D"(badge), "+S"(label), "+r"(a0), "+r"(a1), "+r"(a2),
                       "+r"(a3), "+r"(a4), "+r"(a5), "+r"(info)
                     : "r"(e), "r"(w)
                     : "rcx", "r11", "memory");
    keel_msg_set(m, badge, label, a0, a1, a2, a3, a4, a5, info);
    return ret;
}

/* Calls any capability with a raw label: a kernel object or a server. */
static inline long keel_call(keel_cap_t cap, keel_word_t label, const keel_word_t in[KEEL_MSG_WORDS],
                             keel_word_t out[KEEL_MSG_WORDS])
{
    return keel_syscall(KEEL_SYS_INVOKE, cap, label, in, out);
}

static inline long keel_batch_syscall(struct keel_call_rec *recs, unsigned long n,
                                      unsigned long flags, unsigned long *done)
{
    keel_word_t in[KEEL_MSG_WORDS] = { flags, 0, 0, 0, 0, 0 }, out[KEEL_MSG_WORDS];
    long err = keel_syscall(KEEL_SYS_BATCH, (keel_cap_t)recs, n, in, out);

    if (done)
        *done = out[0];
    return err;
}

static inline void keel_yield(void)
{
    keel_syscall(KEEL_SYS_YIELD, 0, 0, 0, 0);
}

#endif
