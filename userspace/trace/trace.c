/* trace: a process that stands in for capabilities.  Its slot 5 is the
 * endpoint its clients were handed; slot 6 + b is the real capability that
 * a client holding the endpoint badged b believes it is using.  Every call
 * is forwarded to the real object, logged, and answered with exactly what
 * the object answered; plain sends are forwarded as sends.
 *
 * The argument selects the mode: 0 traces; otherwise bits 0-7 are an error
 * code to inject and bits 8-31 the call label to inject it on (the fault
 * injection shim), which then fails without reaching the object. */
#include "../lib/keel.h"

#define SERVICE 5
#define REAL_BASE 6
#define WINDOW 40 /* reply capability, then transferred capabilities */

long keel_main(keel_word_t mode);

long keel_main(keel_word_t mode)
{
    keel_word_t inject_err = mode & 0xff, inject_label = (mode >> 8) & 0xffffff;

    printf("trace: serving (%s)\n", inject_err ? "injecting faults" : "tracing");
    for (;;) {
        struct keel_msg m;
        keel_word_t res[KEEL_MSG_WORDS] = { 0 };
        long err = keel_recv(SERVICE, 0, WINDOW, &m);
        if (err)
            continue;
        keel_word_t real = REAL_BASE + m.badge, label = m.label & KEEL_LABEL_MASK;
        const char *name = label < KEEL_NCALLS && keel_call_names[label] ? keel_call_names[label]
                                                                          : "message";
        if (!(m.info & KEEL_INFO_REPLY)) {
            err = keel_syscall(KEEL_SYS_SEND, real, m.label, m.w, 0);
            printf("trace: send %s(0x%lx) -> %ld\n", name, m.w[0], err);
        } else {
            if (inject_err && label == inject_label)
                err = (long)inject_err;
            else
                err = keel_call(real, m.label, m.w, res);
            printf("trace: %s(0x%lx, 0x%lx, 0x%lx) -> %ld\n", name, m.w[0], m.w[1], m.w[2], err);
            keel_reply(WINDOW, err, res);
        }
        for (unsigned i = 1; i <= KEEL_MSG_CAPS; i++)
            keel_cnode_delete(KEEL_SLOT_CNODE, WINDOW + i);
    }
}
