/* init: the root task.  It holds every initial capability.  With
 * keel.test=suite on the command line it runs the in-guest test suite and
 * powers off with the verdict (other keel.test= values: other suites and
 * benchmarks); with no test it starts the device manager, the drivers and
 * the shell on the console. */
#include "suite.h"

long keel_main(struct keel_bootinfo *bi);
int uart_run(void);
int vcon_run(void);
int net_run(void);
int rng_run(void);
int blk_run(void);
int dma_run(void);

long keel_main(struct keel_bootinfo *bi)
{
    char test[32];
    unsigned long total = 0;

    if (bi->magic != KEEL_BOOTINFO_MAGIC) {
        printf("init: bad boot information\n");
        return 0x11;
    }
    for (unsigned long i = 0; i < bi->untyped_count; i++)
        total += 1ul << bi->untyped[i].size_bits;
    printf("init: running on %lu cpus with %lu untyped regions, %lu MiB\n", bi->ncpus,
           bi->untyped_count, total >> 20);
    if (cmdline_get(bi->cmdline, "keel.test", test, sizeof(test))) {
        if (!strcmp(test, "suite")) {
            suite_setup(bi);
            return suite_run() ? 0x11 : 0x10;
        }
        if (!strcmp(test, "uart") || !strcmp(test, "vconsole") || !strcmp(test, "net")) {
            suite_setup(bi); /* drvtests.c: a driver started and used as a client */
            int failed = test[0] == 'u' ? uart_run() : test[0] == 'v' ? vcon_run() : net_run();
            return failed ? 0x11 : 0x10;
        }
        if (!strcmp(test, "blkbench")) {
            suite_setup(bi);
            return blk_run() ? 0x11 : 0x10;
        }
        if (!strcmp(test, "dma")) {
            suite_setup(bi);
            return dma_run() ? 0x11 : 0x10;
        }
        if (!strcmp(test, "rng")) {
            suite_setup(bi);
            return rng_run() ? 0x11 : 0x10;
        }
        if (!strcmp(test, "services")) {
            suite_setup(bi);
            return services_run() ? 0x11 : 0x10;
        }
        if (!strcmp(test, "stress"))
            return stress_run(bi) ? 0x11 : 0x10;
        if (!strcmp(test, "bench")) {
            suite_setup(bi);
            return bench_run() ? 0x11 : 0x10;
        }
        printf("keel: unknown test %s\n", test);
        return 0x11;
    }
    /* What a person gets: the device manager and the shell on the console. */
    suite_setup(bi);
    if (devmgr_start(bi) || shell_start())
        printf("init: no shell; Ctrl-C stops the machine\n");
    /* Wait for ever on a notification nobody signals. */
    keel_word_t n = make_obj(KEEL_OBJ_NOTIFICATION, 0);
    for (;;)
        keel_notification_wait(n, 0);
}
