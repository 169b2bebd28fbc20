/* The test program: init starts it, with every capability the root task
 * has, when keel.test= is on the command line.  It runs the test or
 * benchmark named there and powers off with the verdict (0x10 passed,
 * 0x11 failed). */
#include "suite.h"

long keel_main(struct keel_bootinfo *bi);
int uart_run(void);
int vcon_run(void);
int net_run(void);
int netsnap_run(void); /* drvtests.c: net, waiting halfway for a frame sent during a snapshot */
int rng_run(void);
int blk_run(void);
int dma_run(void);
int fuzz_run(void); /* fuzz.c: the kernel-call fuzzer's controller (keel fuzz) */
int blkwrites_run(void); /* crashtests.c: writes and flushes until the host kills the VMM */
int killcampaign_run(void); /* crashtests.c: the blk driver killed again and again */
int icount_run(void);
int entry_run(void); /* entrytests.c: jumps to the syscall entry point */
int netbench_run(void); /* netbench.c: virtio-net throughput (scripts/bench --net) */

/* keel.test= values and what they run; stress sets itself up. */
static const struct {
    const char *name;
    int (*fn)(void);
} runs[] = {
    { "suite", suite_run },
    { "uart", uart_run }, /* drvtests.c: a driver started and used as a client */
    { "vconsole", vcon_run },
    { "net", net_run },
    { "netsnap", netsnap_run },
    { "blkbench", blk_run },
    { "netbench", netbench_run },
    { "dma", dma_run },
    { "rng", rng_run },
    { "services", services_run },
    { "bench", bench_run },
    { "fuzz", fuzz_run },
    { "blkwrites", blkwrites_run },
    { "killcampaign", killcampaign_run },
    { "icount", icount_run }, /* scripts/icount counts instructions */
    { "entry", entry_run },
};

static int run(const char *test, struct keel_bootinfo *bi)
{
    if (!strcmp(test, "stress"))
        return stress_run(bi);
    for (unsigned i = 0; i < sizeof(runs) / sizeof(runs[0]); i++) {
        if (!strcmp(test, runs[i].name)) {
            suite_setup(bi);
            return runs[i].fn();
        }
    }
    printf("keel: unknown test %s; keel.test= takes stress", test);
    for (unsigned i = 0; i < sizeof(runs) / sizeof(runs[0]); i++)
        printf(" %s", runs[i].name);
    printf(" (the kernel's own: boot timer serial fault triple)\n");
    return 1;
}

long keel_main(struct keel_bootinfo *bi)
{
    char test[32] = "";

    cmdline_get(bi->cmdline, "keel.test", test, sizeof(test));
    return run(test, bi) ? 0x11 : 0x10;
}
