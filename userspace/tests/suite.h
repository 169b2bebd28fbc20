/* The in-guest tests' small framework, and what the test files share.
 * The test program runs as the root task would (init hands it every
 * capability in the same slot): the library's factory (objects.h) works
 * from the largest untyped region. */
#ifndef SUITE_H
#define SUITE_H

#include "../lib/devices.h"
#include "../lib/spawn.h"

extern const char *suite_current;

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

/* The tests' address space (besides what the library maps). */
#define STACKS_VA 0x10000000ul   /* thread stacks, one page table */
#define TEST_VA 0x20000000ul     /* frame tests, one page table */
#define NO_TABLE_VA 0x30000000ul /* no page table here */
#define WAIT_LIMIT 200000
/* wait_blocked and wait_done give up only after WAIT_LIMIT yields and at
 * least WAIT_MIN_TSC cycles of the time-stamp counter (about 11 s at 3 GHz):
 * where a yield is cheap (QEMU's TCG) the yields alone pass in a fraction
 * of a second, less than a client's disk flushes may take on a loaded host. */
#define WAIT_MIN_TSC (1ul << 35)

extern struct keel_bootinfo *suite_boot;
extern keel_word_t suite_untyped; /* the largest untyped: the factory's */

#define USER(l) (KEEL_LABEL_USER + (l))

/* A receive window: its slot and the KEEL_MSG_CAPS after it, for
 * capabilities that come with a message. */
static inline keel_word_t window_alloc(void)
{
    return slot_alloc_range(KEEL_MSG_CAPS + 1);
}

static inline long call_words(keel_word_t cap, keel_word_t label, keel_word_t a0,
                              keel_word_t a1, keel_word_t *r0)
{
    keel_word_t in[KEEL_MSG_WORDS] = { a0, a1 }, out[KEEL_MSG_WORDS];
    long err = keel_call(cap, label, in, out);

    if (r0)
        *r0 = out[0];
    return err;
}

/* Shared helpers (harness.c). */
long spawn(struct thread *t, void (*fn)(struct thread *), keel_word_t fault_ep);
int wait_done(struct thread *t);
int wait_blocked(struct thread *t);
long ep_send(keel_word_t ep, keel_word_t label, keel_word_t w0, keel_word_t w1, keel_word_t w2,
             keel_word_t w3);
long ep_recv(keel_word_t ep, keel_word_t flags, keel_word_t *badge, keel_word_t *label,
             keel_word_t *w0, keel_word_t *w1, keel_word_t *w2, keel_word_t *w3);
/* The kernel's tests by topic (captests.c, threadtests.c, vspacetests.c,
 * msgtests.c, batchtests.c, iotests.c, fasttests.c, batchsame.c). */
extern const struct test cap_tests[], thread_tests[], vspace_tests[], msg_tests[],
    batch_tests[], io_tests[], fast_tests[], batch_same_tests[];
extern const unsigned long cap_tests_count, thread_tests_count, vspace_tests_count,
    msg_tests_count, batch_tests_count, io_tests_count, fast_tests_count,
    batch_same_tests_count;
/* drvtests.c: driver tests, run when the machine has what they need. */
extern const struct test drv_tests[];
extern const unsigned long drv_tests_count;
/* rng.c: the rng driver on the first virtio-rng device, with the spare
 * frame given (or a fresh one); its endpoint, and our io_space capability. */
long rng_start(keel_word_t spare, keel_word_t *ep, keel_word_t *io);
void suite_setup(struct keel_bootinfo *bi);
int suite_run(void);
int bench_run(void);
int stress_run(struct keel_bootinfo *bi);
int services_run(void);            /* svctests.c: keel.test=services */
/* svctests.c, also run by the suite: the services tests, and those of the
 * UART driver the device manager starts on COM2 (registered as console). */
extern const unsigned long svc_tests_count, svc_console_tests_count;
const char *svc_tests_missing(void); /* the devices they need and we lack, or null */
void svc_run(int console, unsigned *passed, unsigned *failed); /* starts the device manager */
/* drvtests.c: starts prog on the first virtio device of that id with only
 * its capabilities, serving ep; mode as DRV_ARG's (DRV_MODE_SERVICE: the
 * client protocol of driver.h, as under the device manager). */
int virtio_start_mode(const char *prog, unsigned int id, unsigned long mode, keel_word_t ep,
                      struct process *p);
/* harness.c: runs n tests, reporting each ("ktest: ok <name>"). */
void run_table(const struct test *t, unsigned long n, unsigned *passed, unsigned *failed);

#endif
