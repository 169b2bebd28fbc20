/* The in-guest test suite's small framework. */
#ifndef SUITE_H
#define SUITE_H

#include "../lib/keel.h"

extern const char *suite_current;

#define CN KEEL_SLOT_CNODE
#define VS KEEL_SLOT_VSPACE

#define EXPECT(cond)                                                                           \
    do {                                                                                       \
        if (!(cond)) {                                                                         \
            printf("ktest: FAIL %s: %s (line %d)\n", suite_current, #cond, __LINE__);        \
            return 1;                                                                          \
        }                                                                                      \
    } while (0)

#define EXPECT_ERR(call, want)                                                                 \
    do {                                                                                       \
        long _got = (call);                                                                    \
        if (_got != (long)(want)) {                                                            \
            printf("ktest: FAIL %s: %s gave %ld, expected %ld (line %d)\n", suite_current,   \
                   #call, _got, (long)(want), __LINE__);                                       \
            return 1;                                                                          \
        }                                                                                      \
    } while (0)

#define OK(call) EXPECT_ERR(call, KEEL_E_OK)

struct test {
    const char *name;
    int (*fn)(void);
};

struct thread {
    keel_word_t tcb;
    void (*fn)(struct thread *);
    volatile long done;
    volatile long value;
    keel_word_t a, b, c; /* slots the body uses */
};

/* Shared helpers (tests.c). */
long spawn(struct thread *t, void (*fn)(struct thread *), keel_word_t fault_ep);
int wait_done(struct thread *t);
int wait_blocked(struct thread *t);
long ep_send(keel_word_t ep, keel_word_t label, keel_word_t w0, keel_word_t w1, keel_word_t w2,
             keel_word_t w3);
long ep_recv(keel_word_t ep, keel_word_t flags, keel_word_t *badge, keel_word_t *label,
             keel_word_t *w0, keel_word_t *w1, keel_word_t *w2, keel_word_t *w3);
extern const struct test msg_tests[];
extern const unsigned long msg_tests_count;
/* drvtests.c: driver tests, run when the machine has what they need. */
extern const struct test drv_tests[];
extern const unsigned long drv_tests_count;
int drv_tests_ready(void);
/* spawn.c: a process as spawn_program makes it, with its faults sent to
 * fault_ep (a slot of ours; 0: none), and our capabilities to its objects. */
struct process {
    keel_word_t tcb, cnode, vspace;
};
long spawn_process(const char *name, keel_word_t arg, const keel_word_t *caps, unsigned ncaps,
                   keel_word_t fault_ep, struct process *out);
void process_kill(struct process *p);
extern keel_word_t suite_untyped;
/* spawn.c: a process from a program in the initrd. */
long spawn_program(const char *name, keel_word_t arg, const keel_word_t *caps, unsigned ncaps,
                   keel_word_t *tcb_out);
/* Objects made from one untyped into a range of slots [next, end). */
struct obj_alloc {
    keel_word_t ut, next, end;
};
/* The same from a's memory (0: init's own), faults to fault_ep. */
long spawn_process_from(struct obj_alloc *a, const char *name, keel_word_t arg,
                        const keel_word_t *caps, unsigned ncaps, keel_word_t fault_ep,
                        struct process *out);
struct keel_device_desc *find_virtio_device(unsigned int id, keel_word_t *regs);
keel_word_t make_io_space(const struct keel_device_desc *d);
/* rng.c: the rng driver on the first virtio-rng device, with the spare
 * frame given (or a fresh one); its endpoint, and our io_space capability. */
long rng_start(keel_word_t spare, keel_word_t *ep, keel_word_t *io);
keel_word_t slot_alloc(void);
keel_word_t slot_alloc_range(keel_word_t n); /* n consecutive slots: the first */
keel_word_t make_obj(keel_word_t type, keel_word_t bits);
keel_word_t make_untyped(unsigned bits);
keel_word_t map_new_frame(keel_word_t vaddr, keel_word_t rights);
void suite_setup(struct keel_bootinfo *bi);
int suite_run(void);
int bench_run(void);
int stress_run(struct keel_bootinfo *bi);
/* devmgr.c: the device manager and the name service. */
int devmgr_start(struct keel_bootinfo *bi);
keel_word_t devmgr_names(void);    /* a client's capability to the name service */
keel_word_t devmgr_endpoint(void); /* the manager's endpoint (devmgr.h) */
int shell_start(void);             /* the shell on the console */
int services_run(void);            /* svctests.c: keel.test=services */ /* stress.c: keel.test=stress */

#endif
