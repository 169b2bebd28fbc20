/* What the kernel-call fuzzer's process (userspace/fuzz/fuzz.c) and its
 * controller (userspace/tests/fuzz.c) agree on. */
#ifndef KEEL_TESTS_FUZZ_H
#define KEEL_TESTS_FUZZ_H

#include <keel.h>

#define FUZZ_CNODE_BITS 6 /* the process's table: 64 slots */
#define FUZZ_CNODE_SLOTS (1ul << FUZZ_CNODE_BITS)
#define FUZZ_CALL_BITS 24 /* arg: seed << FUZZ_CALL_BITS | calls */
#define FUZZ_TRACE (1ul << 63)
#define FUZZ_SEED_MASK ((1ul << (63 - FUZZ_CALL_BITS)) - 1) /* the seed bits arg carries */
#define FUZZ_BATCH_MAX 8
#define FUZZ_SPARE_VA 0x40000000ul
#define FUZZ_DONE 0x4602

/* Its progress page, shared with the controller: after every call (or
 * batch) the process stores its call and batch counts there, so the
 * controller sees it is alive without a kernel call on either side.  No
 * capability in the process's table names the page (it cannot unmap it),
 * and no generated pointer falls on it. */
#define FUZZ_PROGRESS_VA 0x3f000000ul
struct fuzz_progress {
    volatile unsigned long calls, batches;
};

/* The capabilities a fuzz process is given, from slot 5 on: its report
 * endpoint first (never named by a generated call), then objects of each
 * kind an ordinary process holds.  The rest of its table is empty. */
#define FUZZ_SLOT_REPORT 5
#define FUZZ_GIVEN 9
static const unsigned fuzz_given_type[FUZZ_GIVEN] = {
    KEEL_OBJ_ENDPOINT, KEEL_OBJ_UNTYPED, KEEL_OBJ_ENDPOINT, KEEL_OBJ_NOTIFICATION,
    KEEL_OBJ_FRAME, KEEL_OBJ_PT, KEEL_OBJ_VSPACE, KEEL_OBJ_TCB, KEEL_OBJ_CNODE,
};

static inline unsigned long fuzz_given_slot(unsigned i)
{
    return FUZZ_SLOT_REPORT + i;
}

#endif
