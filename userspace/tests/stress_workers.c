/* The stress workloads' threads and what they share: the clock, the
 * random numbers, objects from the stress region (stress.h). */
#include "stress.h"

struct worker workers[MAX_WORKERS];
int nworkers;
keel_word_t stress_ut;
unsigned long ncpus, tsc_khz, seed;
volatile int stop;
static keel_word_t stack_next = STACK_VA;
int pin_local;
unsigned long inject;
keel_word_t tick_ntfn;   /* wakes the main thread: a second passed, or a worker ended */
unsigned long end_ms, next_tick_ms;

unsigned long rnd(unsigned long *s)
{
    unsigned long x = *s;

    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *s = x;
    return x * 0x2545f4914f6cdd1dul;
}

unsigned long now_ms(void)
{
    return rdtsc() / tsc_khz;
}

void pause_loop(int n)
{
    for (int i = 0; i < n; i++)
        __asm__ volatile("pause" ::: "memory");
}

/* Workers watch the clock themselves (rdtsc, in user mode), so the main
 * thread can sleep at a high priority: the first worker to see a second
 * boundary wakes it to print progress. */
int stopped(void)
{
    unsigned long t, due;

    if (stop)
        return 1;
    t = now_ms();
    due = next_tick_ms;
    if (t >= due && __atomic_compare_exchange_n(&next_tick_ms, &due, due + 1000, 0,
                                                __ATOMIC_RELAXED, __ATOMIC_RELAXED))
        keel_notification_signal(tick_ntfn);
    if (t >= end_ms)
        stop = 1;
    return stop;
}

keel_word_t new_obj(keel_word_t type, keel_word_t bits)
{
    keel_word_t s = slot_alloc();
    long err = keel_untyped_retype(stress_ut, type, bits, CN, s, 1);

    if (err) {
        printf("stress: setup: retype of type %lu failed: %ld\n", type, err);
        keel_exit(0x11);
    }
    return s;
}

void setup_check(long err, const char *what)
{
    if (err) {
        printf("stress: setup: %s failed: %ld\n", what, err);
        keel_exit(0x11);
    }
}

keel_word_t new_stack(unsigned pages)
{
    stack_next += KEEL_PAGE_SIZE; /* guard page */
    for (unsigned i = 0; i < pages; i++) {
        keel_word_t f = new_obj(KEEL_OBJ_FRAME, 0);
        setup_check(keel_frame_map(f, VS, stack_next, KEEL_RIGHT_READ | KEEL_RIGHT_WRITE),
                    "stack map");
        stack_next += KEEL_PAGE_SIZE;
    }
    return stack_next - 8;
}

static void worker_entry(struct worker *w)
{
    w->fn(w);
    __atomic_store_n(&w->done, 1, __ATOMIC_RELEASE);
    keel_notification_signal(tick_ntfn);
    for (;;)
        keel_tcb_suspend(w->tcb);
}

/* A worker thread, configured but not started; cpu -1 runs anywhere. */
struct worker *w_spawn(void (*fn)(struct worker *), long cpu, keel_word_t fault_ep)
{
    struct worker *w = &workers[nworkers];

    if (nworkers == MAX_WORKERS) {
        printf("stress: setup: too many workers\n");
        keel_exit(0x11);
    }
    w->id = nworkers++;
    w->fn = fn;
    w->cpu = cpu < 0 ? -1 : cpu % (long)ncpus;
    w->rng = (seed + 1) * 0x9e3779b97f4a7c15ul + (unsigned long)w->id * 0xbf58476d1ce4e5b9ul;
    w->tcb = new_obj(KEEL_OBJ_TCB, 0);
    keel_word_t top = new_stack(STACK_PAGES);
    setup_check(keel_tcb_configure(w->tcb, CN, VS, fault_ep), "configure");
    setup_check(keel_tcb_write_regs(w->tcb, (keel_word_t)worker_entry, top, (keel_word_t)w),
                "write_regs");
    setup_check(keel_tcb_set_affinity(w->tcb, (keel_word_t)w->cpu), "set_affinity");
    return w;
}

unsigned long workers_count(struct worker *const *w, int n)
{
    unsigned long sum = 0;

    for (int i = 0; i < n; i++)
        sum += w[i]->count;
    return sum;
}
