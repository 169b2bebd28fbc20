/* init: the root task.  It holds every initial capability and hands them
 * out: with keel.test= on the command line, all of them to the test
 * program (userspace/tests), which reports and powers off; otherwise it
 * starts the name service and the device manager (userspace/lib/start.c)
 * and the shell on the console. */
#include "../lib/start.h"
#include "testmode.h"

long keel_main(struct keel_bootinfo *bi);

/* The shell (userspace/shell), with what it may use: reading the console,
 * looking names up, the manager's endpoint (to call it, not to serve it). */
static long start_shell(const struct services *s)
{
    keel_word_t caps[6], tcb;

    caps[0] = KEEL_SLOT_CONSOLE;
    caps[1] = s->names;
    caps[2] = slot_alloc();
    caps[3] = make_obj(KEEL_OBJ_NOTIFICATION, 0);
    caps[4] = make_obj(KEEL_OBJ_ENDPOINT, 0);
    caps[5] = make_obj(KEEL_OBJ_FRAME, 0);
    long err = keel_cnode_copy(CN, caps[2], CN, s->devmgr, KEEL_RIGHT_WRITE | KEEL_RIGHT_GRANT);
    if (!err)
        err = spawn_program("shell", 0, caps, 6, &tcb);
    if (err)
        printf("init: cannot start the shell: %ld\n", err);
    return err;
}

long keel_main(struct keel_bootinfo *bi)
{
    unsigned long total = 0, best = 0;

    if (bi->magic != KEEL_BOOTINFO_MAGIC) {
        printf("init: bad boot information\n");
        return 0x11;
    }
    for (unsigned long i = 0; i < bi->untyped_count; i++) {
        total += 1ul << bi->untyped[i].size_bits;
        if (bi->untyped[i].size_bits > bi->untyped[best].size_bits)
            best = i;
    }
    printf("init: running on %lu cpus with %lu untyped regions, %lu MiB\n", bi->ncpus,
           bi->untyped_count, total >> 20);
    objects_init(bi->first_free, KEEL_SLOT_FIRST_UNTYPED + best);
    char test[32];
    if (cmdline_get(bi->cmdline, "keel.test", test, sizeof(test))) {
        long err = tests_start();
        if (err) {
            printf("init: cannot start the tests: %ld\n", err);
            return 0x11;
        }
        for (;;) /* the tests power off */
            keel_tcb_suspend(KEEL_SLOT_TCB);
    }
    /* What a person gets: the device manager and the shell on the console. */
    struct services s;
    if (services_start(&s) || start_shell(&s))
        printf("init: no shell; Ctrl-C stops the machine\n");
    /* Wait for ever on a notification nobody signals. */
    keel_word_t n = make_obj(KEEL_OBJ_NOTIFICATION, 0);
    for (;;)
        keel_notification_wait(n, 0);
}
