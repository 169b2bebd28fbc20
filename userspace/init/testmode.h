/* Handing the machine to the test program (userspace/tests). */
#ifndef INIT_TESTMODE_H
#define INIT_TESTMODE_H

/* Starts "tests" with every capability of ours in the same slot, a copy of
 * the boot information and of the initrd at the addresses the root task has
 * them: to the tests it is the root task.  0, or the error. */
long tests_start(void);

#endif
