/* In-guest micro-benchmarks (keel.test=bench), timed with rdtsc in this
 * boot: the bare syscall/sysret floor, the null kernel call, and a
 * capability copy followed by its delete.  Each figure is the median of
 * ROUNDS rounds of BATCH operations, in cycles per operation. */
#include "suite.h"

#define ROUNDS 31
#define BATCH 200

static unsigned long median(unsigned long *v, int n)
{
    for (int i = 1; i < n; i++) {
        unsigned long x = v[i];
        int j = i - 1;
        while (j >= 0 && v[j] > x) {
            v[j + 1] = v[j];
            j--;
        }
        v[j + 1] = x;
    }
    return v[n / 2];
}

static unsigned long measure(int what, keel_word_t ep, keel_word_t spare)
{
    unsigned long samples[ROUNDS];

    for (int r = 0; r < ROUNDS; r++) {
        unsigned long t0 = rdtsc();
        for (int i = 0; i < BATCH; i++) {
            if (what == 0) {
                keel_syscall(KEEL_SYS_FLOOR, 0, 0, 0, 0);
            } else if (what == 1) {
                keel_syscall(KEEL_SYS_NULL, 0, 0, 0, 0);
            } else {
                keel_cnode_copy(CN, spare, CN, ep, KEEL_RIGHT_ALL);
                keel_cnode_delete(CN, spare);
            }
        }
        samples[r] = (rdtsc() - t0) / BATCH;
    }
    return median(samples, ROUNDS);
}

int bench_run(void)
{
    keel_word_t ep = make_obj(KEEL_OBJ_ENDPOINT, 0), spare = slot_alloc();

    measure(0, ep, spare); /* warm up */
    unsigned long floor = measure(0, ep, spare);
    unsigned long null = measure(1, ep, spare);
    unsigned long copy = measure(2, ep, spare);
    printf("kbench: floor %lu cycles\n", floor);
    printf("kbench: null %lu cycles\n", null);
    printf("kbench: copy_delete %lu cycles\n", copy);
    return 0;
}
