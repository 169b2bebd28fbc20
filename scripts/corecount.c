/* The portable core's instructions per kernel call, counted by valgrind:
 * scripts/corecount runs this under callgrind collecting only inside
 * host_invoke (kernel/arch/host/host.c), which hands a call to the core as
 * the system-call entry does - the capability's lookup, then invoke() - so
 * the count is the core's own work (decoding, lookups, the capability
 * operation, the locks and the grace bookkeeping) without the x86-64 entry
 * and exit, which scripts/icount counts in a guest.  Two runs with
 * different REPS give the count per round, first-time paths left out.
 *
 * Usage: corecount OP REPS CPUS.  OP: identify, copy_delete, mint_delete,
 * retype_delete or move; CPUS 1 runs it as the one CPU (no capability lock
 * taken, exclusive), 2 as CPU 0 of two holding the objects lock shared
 * (the capability locks, retired slots and their grace periods).  Each
 * measured function makes the call REPS times and checks every result. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <keel/abi.h> /* the ABI (the generated part: build/gen) */

int host_world_create(uint32_t ut_bits);
void host_cpus(uint32_t n);
void host_enter(uint32_t cpu);
void host_leave(uint32_t cpu);
long host_invoke(uint64_t cap, uint64_t label, const uint64_t *args, uint64_t *res);

enum { CNODE_SLOT = 1, UT_SLOT = 2, A = 3, B = 4, REGION = 5, UT_BITS = 20 };

static uint32_t shared_cpus;

static long call(uint64_t cap, uint64_t label, uint64_t a0, uint64_t a1, uint64_t a2,
                 uint64_t a3, uint64_t a4)
{
    uint64_t args[KEEL_MSG_WORDS] = { a0, a1, a2, a3, a4 }, res[KEEL_MSG_WORDS];

    if (shared_cpus)
        host_enter(0); /* a system call of its own: the objects lock shared */
    long err = host_invoke(cap, label, args, res);
    if (shared_cpus) {
        host_leave(0);
        if (err == -1) /* KEEL_E_RETRY: again exclusive, as kernel_upgrade runs it */
            err = host_invoke(cap, label, args, res);
    }
    return err;
}

static void check(long err, const char *what)
{
    if (err) {
        fprintf(stderr, "corecount: %s failed: %ld\n", what, err);
        exit(1);
    }
}

/* One round of each: the calls callgrind counts. */
static void measure_identify(unsigned reps)
{
    for (unsigned i = 0; i < reps; i++)
        check(call(CNODE_SLOT, KEEL_CALL_CNODE_IDENTIFY, A, 0, 0, 0, 0), "identify");
}

static void measure_copy_delete(unsigned reps)
{
    for (unsigned i = 0; i < reps; i++) {
        check(call(CNODE_SLOT, KEEL_CALL_CNODE_COPY, B, CNODE_SLOT, A, KEEL_RIGHT_ALL, 0), "copy");
        check(call(CNODE_SLOT, KEEL_CALL_CNODE_DELETE, B, 0, 0, 0, 0), "delete");
    }
}

static void measure_mint_delete(unsigned reps)
{
    for (unsigned i = 0; i < reps; i++) {
        check(call(CNODE_SLOT, KEEL_CALL_CNODE_MINT, B, CNODE_SLOT, A, KEEL_RIGHT_ALL, i + 1),
              "mint");
        check(call(CNODE_SLOT, KEEL_CALL_CNODE_DELETE, B, 0, 0, 0, 0), "delete");
    }
}

/* A notification (64 bytes: the zeroing of a larger object would outweigh
 * the path) made from a region of its own and deleted: the region's last
 * object, so its watermark goes back and every round makes it at the same
 * place; the delete destroys it (exclusive with two CPUs). */
static void measure_retype_delete(unsigned reps)
{
    for (unsigned i = 0; i < reps; i++) {
        check(call(REGION, KEEL_CALL_UNTYPED_RETYPE, KEEL_OBJ_NOTIFICATION, 0, CNODE_SLOT, B, 1),
              "retype");
        check(call(CNODE_SLOT, KEEL_CALL_CNODE_DELETE, B, 0, 0, 0, 0), "delete");
    }
}

/* A copy moved away and back: two moves per round. */
static void measure_move(unsigned reps)
{
    for (unsigned i = 0; i < reps; i++) {
        check(call(CNODE_SLOT, KEEL_CALL_CNODE_MOVE, B, CNODE_SLOT, A, 0, 0), "move");
        check(call(CNODE_SLOT, KEEL_CALL_CNODE_MOVE, A, CNODE_SLOT, B, 0, 0), "move back");
    }
}

int main(int argc, char **argv)
{
    static const struct {
        const char *name;
        void (*fn)(unsigned);
    } ops[] = {
        { "identify", measure_identify },       { "copy_delete", measure_copy_delete },
        { "mint_delete", measure_mint_delete }, { "retype_delete", measure_retype_delete },
        { "move", measure_move },
    };

    if (argc != 4) {
        fprintf(stderr, "usage: corecount OP REPS CPUS\n");
        return 2;
    }
    unsigned reps = (unsigned)strtoul(argv[2], NULL, 10), cpus = (unsigned)strtoul(argv[3], NULL, 10);
    if (host_world_create(UT_BITS)) {
        fprintf(stderr, "corecount: no memory for the world\n");
        return 1;
    }
    /* An endpoint in A and a 64 KiB region in REGION, made as the one CPU
     * (set-up: the same in both runs). */
    uint64_t args[KEEL_MSG_WORDS] = { KEEL_OBJ_ENDPOINT, 0, CNODE_SLOT, A, 1 }, res[KEEL_MSG_WORDS];
    host_cpus(1);
    check(host_invoke(UT_SLOT, KEEL_CALL_UNTYPED_RETYPE, args, res), "set-up endpoint");
    uint64_t region[KEEL_MSG_WORDS] = { KEEL_OBJ_UNTYPED, 16, CNODE_SLOT, REGION, 1 };
    check(host_invoke(UT_SLOT, KEEL_CALL_UNTYPED_RETYPE, region, res), "set-up region");
    host_cpus(cpus);
    shared_cpus = cpus > 1;
    for (size_t i = 0; i < sizeof(ops) / sizeof(ops[0]); i++) {
        if (!strcmp(argv[1], ops[i].name)) {
            ops[i].fn(reps);
            return 0;
        }
    }
    fprintf(stderr, "corecount: no operation %s\n", argv[1]);
    return 2;
}
