/* What the tests share: set-up, threads in our address space, plain
 * messages, and running a table of tests (suite.h). */
#include "suite.h"

const char *suite_current;
struct keel_bootinfo *suite_boot;
keel_word_t suite_untyped; /* the untyped the tests allocate from */

/* Plain messages: user labels (kernel call labels would carry
 * capabilities), four words, nothing transferred. */
long ep_send(keel_word_t ep, keel_word_t label, keel_word_t w0, keel_word_t w1,
                    keel_word_t w2, keel_word_t w3)
{
    return keel_send(ep, KEEL_LABEL_USER + label, w0, w1, w2, w3, 0, 0);
}

long ep_recv(keel_word_t ep, keel_word_t flags, keel_word_t *badge, keel_word_t *label,
                    keel_word_t *w0, keel_word_t *w1, keel_word_t *w2, keel_word_t *w3)
{
    struct keel_msg m;
    long err = keel_recv(ep, flags, 0, &m);

    if (badge)
        *badge = m.badge;
    if (label)
        *label = m.label >= KEEL_LABEL_USER ? m.label - KEEL_LABEL_USER : m.label;
    if (w0)
        *w0 = m.w[0];
    if (w1)
        *w1 = m.w[1];
    if (w2)
        *w2 = m.w[2];
    if (w3)
        *w3 = m.w[3];
    return err;
}

void suite_setup(struct keel_bootinfo *bi)
{
    unsigned long best = 0;

    suite_boot = bi;
    for (unsigned long i = 1; i < bi->untyped_count; i++) {
        if (bi->untyped[i].size_bits > bi->untyped[best].size_bits)
            best = i;
    }
    suite_untyped = KEEL_SLOT_FIRST_UNTYPED + best;
    objects_init(bi->first_free, suite_untyped);
    keel_word_t pt = make_obj(KEEL_OBJ_PT, 0);
    keel_pt_map(pt, VS, STACKS_VA);
    pt = make_obj(KEEL_OBJ_PT, 0);
    keel_pt_map(pt, VS, TEST_VA);
}

/* -- threads -------------------------------------------------------------- */

static keel_word_t stack_next = STACKS_VA;

void thread_start(struct thread *t);
void thread_start(struct thread *t)
{
    t->fn(t);
    t->done = 1;
    for (;;)
        keel_tcb_suspend(t->tcb);
}

long spawn(struct thread *t, void (*fn)(struct thread *), keel_word_t fault_ep)
{
    keel_word_t top;
    long err;

    t->fn = fn;
    t->done = 0;
    t->tcb = make_obj(KEEL_OBJ_TCB, 0);
    stack_next += KEEL_PAGE_SIZE; /* guard page */
    for (int i = 0; i < 4; i++) {
        map_new_frame(stack_next, KEEL_RIGHT_READ | KEEL_RIGHT_WRITE);
        stack_next += KEEL_PAGE_SIZE;
    }
    top = stack_next - 8;
    if ((err = keel_tcb_configure(t->tcb, CN, VS, fault_ep)))
        return err;
    if ((err = keel_tcb_write_regs(t->tcb, (keel_word_t)thread_start, top, (keel_word_t)t)))
        return err;
    return keel_tcb_resume(t->tcb);
}

/* Whether a wait that began at TSC t0 and has yielded i times goes on. */
static int waiting(long i, unsigned long t0)
{
    return i < WAIT_LIMIT || rdtsc() - t0 < WAIT_MIN_TSC;
}

/* Waits until t is blocked in the kernel (in recv, a call, a wait). */
int wait_blocked(struct thread *t)
{
    keel_word_t state = 0;
    unsigned long t0 = rdtsc();

    for (long i = 0; waiting(i, t0); i++) {
        if (keel_tcb_state(t->tcb, &state) == KEEL_E_OK && state == KEEL_THREAD_BLOCKED)
            return 1;
        keel_yield();
    }
    return 0;
}

int wait_done(struct thread *t)
{
    unsigned long t0 = rdtsc();

    for (long i = 0; waiting(i, t0) && !t->done; i++)
        keel_yield();
    return t->done != 0;
}

void run_table(const struct test *t, unsigned long n, unsigned *passed, unsigned *failed)
{
    for (unsigned long i = 0; i < n; i++) {
        suite_current = t[i].name;
        if (t[i].fn() == 0) {
            printf("ktest: ok %s\n", t[i].name);
            (*passed)++;
        } else {
            (*failed)++;
        }
    }
}
