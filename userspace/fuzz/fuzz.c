/* The kernel-call fuzzer's process (keel fuzz; the controller is
 * userspace/tests/fuzz.c).  An ordinary process: its own table, address
 * space and console write right (its own thread capability is taken away:
 * userspace/tests/fuzz.c says why), untyped memory and a few objects.  It issues calls
 * drawn from the table generated from kernel/calls.tbl (fuzz_gen.h): every
 * call, on slots that are valid, empty, of another type, or revoked
 * meanwhile; arguments biased towards edges; batches with references to
 * earlier results.  The sequence is a function of the seed alone.  After
 * every call it stores its counts in its progress page (fuzz.h), which the
 * controller reads; at the end it reports on the endpoint in slot
 * FUZZ_SLOT_REPORT, which no generated call names.
 *
 * arg: seed << FUZZ_CALL_BITS | calls; bit 63 (FUZZ_TRACE) prints every
 * call before it is made, for the shrunk sequence of a failure. */
#include <keel.h>
#include <keel/fuzz_gen.h>

#include "../tests/fuzz.h"

static unsigned long rng_state;
static struct fuzz_progress *const progress = (struct fuzz_progress *)FUZZ_PROGRESS_VA;

static unsigned long rnd(void)
{
    unsigned long x = rng_state;

    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    rng_state = x;
    return x * 0x2545f4914f6cdd1dul;
}

static unsigned long below(unsigned long n)
{
    return n ? rnd() % n : 0;
}

/* What each slot held when last seen, to aim calls at the right type
 * often (a guess: calls made elsewhere change it). */
static unsigned char slot_type[FUZZ_CNODE_SLOTS];
static char buf[256];

static const unsigned long edges[] = {
    0, 1, 2, 3, 4, 7, 8, 12, 15, 16, 31, 32, 63, 64, 255, 256, 4095, 4096, 4097,
    0x10000, 0x7fffffff, 0x80000000ul, 0xffffffffu, 0x100000000ul, 0x400000, 0x1000000,
    0x7fffffffffful, 0x800000000000ul, 0xffff800000000000ul, ~0ul, ~0ul - 1,
    0x8000000000000000ul,
};

static unsigned long slot_of_type(unsigned type)
{
    unsigned long start = below(FUZZ_CNODE_SLOTS);

    for (unsigned long i = 0; i < FUZZ_CNODE_SLOTS; i++) {
        unsigned long s = (start + i) % FUZZ_CNODE_SLOTS;
        if (s != FUZZ_SLOT_REPORT && slot_type[s] == type)
            return s;
    }
    return below(FUZZ_CNODE_SLOTS);
}

/* A capability slot: mostly one of the right type, else any (empty, wrong
 * type, out of the table). */
static unsigned long cap_arg(unsigned type)
{
    unsigned long r = below(16), s;

    if (r < 10)
        s = slot_of_type(type);
    else if (r < 14)
        s = below(FUZZ_CNODE_SLOTS);
    else
        s = edges[below(sizeof(edges) / sizeof(edges[0]))];
    return s == FUZZ_SLOT_REPORT ? s + 1 : s;
}

static unsigned long word_arg(void)
{
    unsigned long r = below(16);

    if (r < 5)
        return below(FUZZ_CNODE_SLOTS); /* slot numbers, small counts and bits */
    if (r < 10)
        return edges[below(sizeof(edges) / sizeof(edges[0]))];
    if (r < 12)
        return (unsigned long)buf + below(sizeof(buf)); /* a buffer of ours */
    if (r < 13)
        return FUZZ_SPARE_VA + (below(8) << 12) + (below(4) << 21);
    return rnd();
}

static void draw(struct keel_call_rec *r, const struct fuzz_call **out)
{
    const struct fuzz_call *c = &fuzz_calls[below(FUZZ_CALLS)];

    r->label = c->label;
    r->cap = cap_arg(c->type);
    r->refs = 0;
    for (unsigned i = 0; i < 6; i++)
        r->arg[i] = i < c->nargs && c->arg_type[i] ? cap_arg(c->arg_type[i]) : word_arg();
    /* No clamp on priorities: the threads it is given have a ceiling
     * (MCP) of 0, which the kernel enforces (tcb_set_priority, set_mcp). */
    if (c->label == KEEL_CALL_CONSOLE_WRITE)
        r->arg[1] &= 63; /* short lines: the console is slow */
    *out = c;
}

static void note(const struct keel_call_rec *r, long err)
{
    if (err)
        return;
    if (r->label == KEEL_CALL_UNTYPED_RETYPE && r->arg[2] == KEEL_SLOT_CNODE) {
        for (unsigned long i = 0; i < r->arg[4] && r->arg[3] + i < FUZZ_CNODE_SLOTS; i++)
            slot_type[r->arg[3] + i] = (unsigned char)r->arg[0];
    } else if ((r->label == KEEL_CALL_CNODE_COPY || r->label == KEEL_CALL_CNODE_MINT) &&
               r->cap == KEEL_SLOT_CNODE && r->arg[0] < FUZZ_CNODE_SLOTS &&
               r->arg[2] < FUZZ_CNODE_SLOTS) {
        slot_type[r->arg[0]] = slot_type[r->arg[2]];
    } else if (r->label == KEEL_CALL_CNODE_DELETE && r->cap == KEEL_SLOT_CNODE &&
               r->arg[0] < FUZZ_CNODE_SLOTS) {
        slot_type[r->arg[0]] = 0;
    }
}

static void trace(unsigned long n, const char *name, const struct keel_call_rec *r)
{
    printf("fuzz: #%lu %s(0x%lx; 0x%lx 0x%lx 0x%lx 0x%lx 0x%lx 0x%lx) refs 0x%lx\n", n, name, r->cap,
           r->arg[0], r->arg[1], r->arg[2], r->arg[3], r->arg[4], r->arg[5], r->refs);
}

long keel_main(unsigned long arg);

long keel_main(unsigned long arg)
{
    int tracing = (arg & FUZZ_TRACE) != 0;
    unsigned long calls = arg & ((1ul << FUZZ_CALL_BITS) - 1), done = 0, batches = 0;
    struct keel_call_rec recs[FUZZ_BATCH_MAX];
    const struct fuzz_call *c[FUZZ_BATCH_MAX];

    rng_state = ((arg & ~FUZZ_TRACE) >> FUZZ_CALL_BITS) * 0x9e3779b97f4a7c15ul + 1;
    for (unsigned i = 0; i < FUZZ_GIVEN; i++)
        slot_type[fuzz_given_slot(i)] = (unsigned char)fuzz_given_type[i];
    slot_type[KEEL_SLOT_CNODE] = KEEL_OBJ_CNODE;
    slot_type[KEEL_SLOT_VSPACE] = KEEL_OBJ_VSPACE;
    slot_type[KEEL_SLOT_CONSOLE] = KEEL_OBJ_CONSOLE;
    while (done < calls) {
        unsigned long n = 1;
        if (below(8) == 0) { /* a batch, some arguments the results of earlier calls */
            n = 2 + below(FUZZ_BATCH_MAX - 1);
            if (n > calls - done)
                n = calls - done;
        }
        for (unsigned long i = 0; i < n; i++) {
            draw(&recs[i], &c[i]);
            if (i && below(3) == 0) {
                unsigned bit = (unsigned)below(7); /* an argument or the capability */
                unsigned long ref = KEEL_BATCH_REF(below(i), below(6));
                recs[i].refs |= 1ul << bit;
                if (bit == KEEL_REF_CAP)
                    recs[i].cap = ref;
                else
                    recs[i].arg[bit] = ref;
            }
            if (tracing)
                trace(done + i, c[i]->name, &recs[i]);
        }
        if (n == 1) {
            keel_word_t out[KEEL_MSG_WORDS];
            long err = keel_invoke(recs[0].cap, recs[0].label, recs[0].arg, out);
            note(&recs[0], err);
            if (tracing)
                printf("fuzz: #%lu -> %ld\n", done, err);
        } else {
            unsigned long ran = 0;
            long err = keel_batch_syscall(recs, n, below(2) ? KEEL_BATCH_STOP : 0, &ran);
            batches++;
            for (unsigned long i = 0; i < n; i++)
                note(&recs[i], (long)recs[i].err);
            if (tracing)
                printf("fuzz: #%lu batch of %lu -> %ld (%lu ran)\n", done, n, err, ran);
        }
        done += n;
        progress->batches = batches;
        progress->calls = done; /* last: the controller reads it first */
    }
    while (keel_send(FUZZ_SLOT_REPORT, FUZZ_DONE, done, batches, 0, 0, 0, 0) == KEEL_E_FULL)
        keel_yield();
    for (;;) /* the controller takes the process down */
        keel_yield();
}
