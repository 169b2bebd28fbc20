/* The in-guest test suite (keel.test=suite): every kernel call with good
 * and bad arguments, then the device tests the machine has devices for.
 * Each test prints "ktest: ok NAME" or "ktest: FAIL NAME: why"; the last
 * line is "ktest: N passed, M failed".  The tests by topic are in
 * captests.c, threadtests.c, vspacetests.c, msgtests.c, batchtests.c,
 * iotests.c, drvtests.c and svctests.c; what they share in harness.c. */
#include "suite.h"

/* The kernel's tests, by topic, in the order they run. */
static const struct {
    const struct test *t;
    const unsigned long *count;
} kernel_tests[] = {
    { cap_tests, &cap_tests_count },       { thread_tests, &thread_tests_count },
    { vspace_tests, &vspace_tests_count }, { msg_tests, &msg_tests_count },
    { batch_tests, &batch_tests_count },   { io_tests, &io_tests_count },
    { fast_tests, &fast_tests_count },     { batch_same_tests, &batch_same_tests_count },
};

#define VIRTIO_NET_DEVICE 1
int net_run(void);
/* ARP and pings with the host at 10.0.2.2 through the virtio-net driver,
 * which is then killed and started again (drvtests.c). */
static const struct test net_tests[] = { { "net_loopback", net_run } };

int suite_run(void)
{
    unsigned passed = 0, failed = 0;
    unsigned long n = 0;

    for (unsigned i = 0; i < sizeof(kernel_tests) / sizeof(kernel_tests[0]); i++)
        n += *kernel_tests[i].count;
    /* The plan, counted from the tables before anything runs: the host
     * compares it with the tests that passed (tests/boot/test_guest_suite.py). */
    int com2 = com2_present();
    keel_word_t regs;
    int net = find_virtio_device(VIRTIO_NET_DEVICE, &regs) != 0;
    if (net)
        keel_cnode_delete(CN, regs);
    const char *missing = svc_tests_missing();
    unsigned long planned = n + (com2 ? drv_tests_count : 0) + (net ? 1 : 0) +
                            (missing ? 0 : svc_tests_count + (com2 ? svc_console_tests_count : 0));
    printf("ktest: running %lu tests\n", n);
    printf("ktest: %lu tests planned\n", planned);
    for (unsigned i = 0; i < sizeof(kernel_tests) / sizeof(kernel_tests[0]); i++)
        run_table(kernel_tests[i].t, *kernel_tests[i].count, &passed, &failed);
    /* Device tests, when the machine has the devices.  The UART tests start
     * and kill drivers of their own on COM2, so they go first; the services
     * tests start the device manager, whose drivers stay until power-off. */
    if (com2)
        run_table(drv_tests, drv_tests_count, &passed, &failed);
    else
        printf("ktest: no 16550 at COM2: %lu driver tests not run\n", drv_tests_count);
    /* Before the services tests: the device manager takes every device. */
    if (net) {
        run_table(net_tests, 1, &passed, &failed);
    } else {
        printf("ktest: no virtio-net: 1 net test not run\n");
    }
    if (missing)
        printf("ktest: no %s: %lu services tests not run\n", missing,
               svc_tests_count + svc_console_tests_count);
    else
        svc_run(com2, &passed, &failed);
    printf("ktest: %u passed, %u failed\n", passed, failed);
    return failed != 0;
}
