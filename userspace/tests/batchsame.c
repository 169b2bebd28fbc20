/* The in-guest suite: a batch gives the results its records give as single
 * calls.  Each test builds the same records twice, on two sets of fresh
 * objects; one set runs one call at a time (run_singly, the batch's rules
 * applied by hand), the other as one batch, and every record's error and
 * results must match: failures in the middle, references to failed
 * results, calls that run with the objects lock shared and exclusive,
 * records straddling a page, records in memory that is or becomes
 * unmapped. */
#include "suite.h"

#define REC_VA 0x20300000ul /* pages for records at odd places */

static struct keel_call_rec singles[KEEL_BATCH_MAX + 1], batched[KEEL_BATCH_MAX + 1];

/* Runs n records one call at a time as a batch does: a reference takes an
 * earlier record's result (a later or out-of-range one: invalid_arg), and
 * with KEEL_BATCH_STOP a failure leaves the rest not run.  No record here
 * calls an endpoint (a batch sends, a single call would wait). */
static long run_singly(struct keel_call_rec *r, unsigned long n, keel_word_t flags,
                       keel_word_t *done)
{
    long first = KEEL_E_OK;

    *done = 0;
    for (unsigned long i = 0; i < n; i++) {
        keel_word_t in[KEEL_MSG_WORDS], out[KEEL_MSG_WORDS] = { 0 }, cap = r[i].cap;
        long err = KEEL_E_OK;

        for (int w = 0; w < KEEL_MSG_WORDS; w++)
            in[w] = r[i].arg[w];
        if (first && (flags & KEEL_BATCH_STOP)) {
            err = KEEL_E_NOT_RUN;
        } else {
            for (int a = 0; a <= KEEL_REF_CAP && !err; a++) {
                if (!(r[i].refs & (1ul << a)))
                    continue;
                keel_word_t *v = a == KEEL_REF_CAP ? &cap : &in[a];
                keel_word_t call = *v >> 8, k = *v & 0xff;
                if (call >= i || k >= KEEL_MSG_WORDS)
                    err = KEEL_E_INVALID_ARG;
                else
                    *v = r[call].res[k];
            }
            if (!err)
                err = keel_call(cap, r[i].label, in, out);
            (*done)++;
        }
        r[i].err = (keel_word_t)err;
        for (int w = 0; w < KEEL_MSG_WORDS; w++)
            r[i].res[w] = out[w];
        if (err && !first)
            first = err;
    }
    return first;
}

/* Both runs gave the same answers, record by record. */
static int same_records(unsigned long n)
{
    for (unsigned long i = 0; i < n; i++) {
        if (singles[i].err != batched[i].err) {
            printf("ktest: record %lu: error %lu alone, %lu in the batch\n", i, singles[i].err,
                   batched[i].err);
            return 1;
        }
        for (int w = 0; w < KEEL_MSG_WORDS; w++)
            if (singles[i].res[w] != batched[i].res[w]) {
                printf("ktest: record %lu: result %d is %lu alone, %lu in the batch\n", i, w,
                       singles[i].res[w], batched[i].res[w]);
                return 1;
            }
    }
    return 0;
}

/* Builds the records with build on fresh objects for each run, runs them
 * singly and as a batch (from recs_at: batched, or records copied to an
 * odd address and back), and compares. */
typedef unsigned long (*build_fn)(struct keel_batch *b);

static int same_as_single_calls(build_fn build, keel_word_t flags, unsigned char *recs_at,
                                long *err_out)
{
    struct keel_batch s = { singles, 0, KEEL_BATCH_MAX }, b = { batched, 0, KEEL_BATCH_MAX };
    keel_word_t done_s, done_b;
    unsigned long n = build(&s);

    EXPECT(build(&b) == n && s.n == n && b.n == n);
    long err_s = run_singly(singles, n, flags, &done_s);
    long err_b;
    if (recs_at) {
        memcpy(recs_at, batched, n * sizeof(batched[0]));
        err_b = keel_batch_syscall((struct keel_call_rec *)recs_at, n, flags, &done_b);
        memcpy(batched, recs_at, n * sizeof(batched[0]));
    } else {
        err_b = keel_batch_run(&b, flags, &done_b);
    }
    EXPECT(err_s == err_b);
    EXPECT(done_s == done_b);
    EXPECT(!same_records(n));
    *err_out = err_b;
    return 0;
}

/* -- a failure in the middle ------------------------------------------------------------------ */

static unsigned long build_failures(struct keel_batch *b)
{
    keel_word_t n = make_obj(KEEL_OBJ_NOTIFICATION, 0), dst = slot_alloc();

    keel_batch_notification_signal(b, n);
    keel_batch_cnode_identify(b, CN, n);
    keel_batch_notification_signal(b, CN); /* a CNode: wrong_type */
    keel_batch_cnode_copy(b, CN, dst, CN, n, KEEL_RIGHT_READ);
    keel_batch_notification_poll(b, n);
    keel_batch_cnode_identify(b, CN, dst);
    keel_batch_notification_signal(b, dst); /* read only: no_rights */
    keel_batch_console_write(b, KEEL_SLOT_CONSOLE, 0x1000, 4); /* unmapped buffer */
    keel_batch_cnode_identify(b, CN, 1ul << 40);                /* out of range */
    keel_batch_cnode_delete(b, CN, dst);
    keel_batch_cnode_identify(b, CN, dst);
    return b->n;
}

static int t_batch_failure_in_the_middle(void)
{
    long err;

    OK(same_as_single_calls(build_failures, 0, 0, &err));
    EXPECT(err == KEEL_E_WRONG_TYPE);
    EXPECT(batched[6].err == KEEL_E_NO_RIGHTS && batched[7].err == KEEL_E_BAD_ADDRESS);
    EXPECT(batched[10].err == 0 && batched[10].res[0] == 0); /* deleted */
    return 0;
}

static int t_batch_failure_in_the_middle_stops(void)
{
    long err;

    OK(same_as_single_calls(build_failures, KEEL_BATCH_STOP, 0, &err));
    EXPECT(err == KEEL_E_WRONG_TYPE);
    EXPECT(batched[1].res[0] == KEEL_OBJ_NOTIFICATION && batched[3].err == KEEL_E_NOT_RUN);
    return 0;
}

/* -- references to failed results ------------------------------------------------------------ */

static unsigned long build_refs_to_failures(struct keel_batch *b)
{
    keel_word_t n = make_obj(KEEL_OBJ_NOTIFICATION, 0), dst = slot_alloc();

    unsigned long bad = keel_batch_notification_poll(b, CN); /* wrong_type: results 0 */
    unsigned long id = keel_batch_cnode_identify(b, CN, n);
    keel_batch_ref(b, id, 0, bad, 0); /* slot := 0: invalid_arg */
    unsigned long mk = keel_batch_untyped_retype(b, suite_untyped, 0, 0, CN, dst, 1);
    keel_batch_ref(b, mk, 0, id, 0); /* type := 0 from the failed identify */
    unsigned long on = keel_batch_notification_signal(b, 0);
    keel_batch_ref(b, on, KEEL_REF_CAP, bad, 0); /* capability := 0: invalid_cap */
    unsigned long ok = keel_batch_cnode_identify(b, CN, n);
    unsigned long mk2 = keel_batch_untyped_retype(b, suite_untyped, 0, 0, CN, dst, 1);
    keel_batch_ref(b, mk2, 0, ok, 0); /* a good reference after the failed ones */
    keel_batch_cnode_identify(b, CN, dst);
    unsigned long self = keel_batch_cnode_identify(b, CN, n);
    keel_batch_ref(b, self, 0, self, 0); /* itself: invalid_arg */
    return b->n;
}

static int t_batch_reference_to_a_failed_result(void)
{
    long err;

    OK(same_as_single_calls(build_refs_to_failures, 0, 0, &err));
    EXPECT(err == KEEL_E_WRONG_TYPE);
    EXPECT(batched[1].err == KEEL_E_INVALID_ARG && batched[2].err == KEEL_E_INVALID_ARG);
    EXPECT(batched[3].err == KEEL_E_INVALID_CAP && batched[5].err == KEEL_E_OK);
    EXPECT(batched[6].res[0] == KEEL_OBJ_NOTIFICATION && batched[7].err == KEEL_E_INVALID_ARG);
    OK(same_as_single_calls(build_refs_to_failures, KEEL_BATCH_STOP, 0, &err));
    EXPECT(batched[1].err == KEEL_E_NOT_RUN);
    return 0;
}

/* -- shared and exclusive calls in one batch -------------------------------------------------- */

static unsigned long build_mixed_modes(struct keel_batch *b)
{
    keel_word_t t = slot_alloc(), n = slot_alloc(), n2 = slot_alloc();

    keel_batch_untyped_retype(b, suite_untyped, KEEL_OBJ_TCB, 0, CN, t, 1); /* shared */
    keel_batch_tcb_state(b, t);                                         /* exclusive */
    keel_batch_untyped_retype(b, suite_untyped, KEEL_OBJ_NOTIFICATION, 0, CN, n, 1);
    keel_batch_notification_signal(b, n);                  /* shared */
    keel_batch_cnode_copy(b, CN, n2, CN, n, KEEL_RIGHT_ALL); /* shared */
    keel_batch_tcb_write_regs(b, t, 0x1000, 0x2000, 7);     /* exclusive */
    keel_batch_tcb_read_regs(b, t);                         /* exclusive */
    keel_batch_cnode_delete(b, CN, n);                      /* shared: not the last */
    keel_batch_notification_poll(b, n2);
    keel_batch_cnode_delete(b, CN, n2); /* the last: destroys, exclusive */
    keel_batch_cnode_identify(b, CN, n2);
    keel_batch_cnode_delete(b, CN, t); /* destroys a thread */
    keel_batch_cnode_identify(b, CN, t);
    keel_batch_tcb_state(b, t); /* gone: invalid_cap */
    return b->n;
}

static int t_batch_mixes_shared_and_exclusive_calls(void)
{
    long err;

    OK(same_as_single_calls(build_mixed_modes, 0, 0, &err));
    EXPECT(err == KEEL_E_INVALID_CAP);
    EXPECT(batched[1].res[0] == KEEL_THREAD_INACTIVE && batched[6].res[0] == 0x1000);
    EXPECT(batched[8].res[0] == 1 && batched[10].res[0] == 0 && batched[12].res[0] == 0);
    return 0;
}

/* -- too many records ------------------------------------------------------------------------- */

static int t_batch_longer_than_the_maximum_runs_nothing(void)
{
    struct keel_batch b = { batched, 0, KEEL_BATCH_MAX + 1 };
    keel_word_t n = make_obj(KEEL_OBJ_NOTIFICATION, 0), done = 99, bits;

    for (int i = 0; i <= KEEL_BATCH_MAX; i++)
        keel_batch_notification_signal(&b, n);
    EXPECT(b.n == KEEL_BATCH_MAX + 1);
    EXPECT_ERR(keel_batch_syscall(batched, b.n, 0, &done), KEEL_E_INVALID_ARG);
    EXPECT(done == 0);
    OK(keel_notification_poll(n, &bits));
    EXPECT(bits == 0);
    b.n = KEEL_BATCH_MAX; /* the maximum itself runs */
    OK(keel_batch_run(&b, KEEL_BATCH_STOP, &done));
    EXPECT(done == KEEL_BATCH_MAX && batched[KEEL_BATCH_MAX - 1].err == 0);
    return 0;
}

/* -- records at odd addresses, and unmapped ---------------------------------------------------- */

static unsigned long build_references(struct keel_batch *b)
{
    keel_word_t n = make_obj(KEEL_OBJ_NOTIFICATION, 0);

    for (int i = 0; i < 6; i++) {
        keel_word_t dst = slot_alloc();
        unsigned long id = keel_batch_cnode_identify(b, CN, n);
        unsigned long mk = keel_batch_untyped_retype(b, suite_untyped, 0, 0, CN, dst, 1);
        keel_batch_ref(b, mk, 0, id, 0);
        unsigned long again = keel_batch_cnode_identify(b, CN, 0);
        keel_batch_ref(b, again, 0, id, 0); /* slot := a type: the slot of that number */
        keel_batch_cnode_identify(b, CN, dst);
    }
    return b->n;
}

static int t_batch_records_straddling_a_page(void)
{
    long err;

    map_new_frame(REC_VA, KEEL_RIGHT_READ | KEEL_RIGHT_WRITE);
    map_new_frame(REC_VA + KEEL_PAGE_SIZE, KEEL_RIGHT_READ | KEEL_RIGHT_WRITE);
    /* 24 records starting a little over 8 records before the boundary: the
     * ninth straddles it (its first result word in the second page, across
     * the boundary, in the first), and the two after it refer to it. */
    static const unsigned long backs[] = { 1032, 1108, 1144 };
    for (unsigned i = 0; i < sizeof(backs) / sizeof(backs[0]); i++) {
        unsigned char *at = (unsigned char *)(REC_VA + KEEL_PAGE_SIZE - backs[i]);
        OK(same_as_single_calls(build_references, 0, at, &err));
        EXPECT(err == KEEL_E_OK);
        EXPECT(batched[23].res[0] == KEEL_OBJ_NOTIFICATION);
    }
    return 0;
}

static int t_batch_records_in_unmapped_memory(void)
{
    keel_word_t n1 = make_obj(KEEL_OBJ_NOTIFICATION, 0), n2 = make_obj(KEEL_OBJ_NOTIFICATION, 0);
    keel_word_t page = REC_VA + 4 * KEEL_PAGE_SIZE, done = 99, bits;
    struct keel_call_rec *r = (struct keel_call_rec *)(page + KEEL_PAGE_SIZE) - 1;
    struct keel_batch b = { r, 0, 2 };

    /* The second record lies in the unmapped page after the first: nothing
     * runs, the first record's signal included. */
    keel_word_t f = map_new_frame(page, KEEL_RIGHT_READ | KEEL_RIGHT_WRITE);
    keel_batch_notification_signal(&b, n1);
    EXPECT_ERR(keel_batch_syscall(r, 2, 0, &done), KEEL_E_BAD_ADDRESS);
    EXPECT(done == 0);
    OK(keel_notification_poll(n1, &bits));
    EXPECT(bits == 0);

    /* The records' page goes away under the batch (its second record
     * unmaps it): the batch ends there, as a bad pointer, after two. */
    r = (struct keel_call_rec *)page;
    b = (struct keel_batch){ r, 0, 3 };
    keel_batch_notification_signal(&b, n1);
    keel_batch_frame_unmap(&b, f);
    keel_batch_notification_signal(&b, n2);
    r[1].err = r[2].err = 0xdead;
    EXPECT_ERR(keel_batch_syscall(r, 3, 0, &done), KEEL_E_BAD_ADDRESS);
    EXPECT(done == 2);
    OK(keel_notification_poll(n1, &bits));
    EXPECT(bits == 1);
    OK(keel_notification_poll(n2, &bits));
    EXPECT(bits == 0);
    OK(keel_frame_map(f, VS, page, KEEL_RIGHT_READ | KEEL_RIGHT_WRITE));
    EXPECT(r[0].err == 0 && r[1].err == 0xdead && r[2].err == 0xdead);
    return 0;
}

/* -- the loop's shortcut and its fallbacks ----------------------------------------------------- */

/* Words a call does not read or write, filled with junk: a batch zeroes the
 * results a call leaves unset and reads only the arguments it has. */
static void junk(struct keel_batch *b, unsigned long rec, int from_arg)
{
    for (int w = from_arg; w < KEEL_MSG_WORDS; w++)
        b->rec[rec].arg[w] = 0xdead0000ul + (unsigned long)w;
    for (int w = 0; w < KEEL_MSG_WORDS; w++)
        b->rec[rec].res[w] = 0xbad0000ul + (unsigned long)w;
    b->rec[rec].err = 0xbad;
}

/* A record of label on cap, no arguments. */
static unsigned long raw(struct keel_batch *b, keel_word_t cap, keel_word_t label)
{
    struct keel_call_rec *r = keel_batch_next(b);

    r->cap = cap;
    r->label = label;
    return b->n < b->max ? b->n++ : b->n;
}

/* Calls the shortcut runs (no references, type and rights right, no
 * capability arguments: call_fast) beside every way a record misses it. */
static unsigned long build_shortcut_fallbacks(struct keel_batch *b)
{
    keel_word_t n = make_obj(KEEL_OBJ_NOTIFICATION, 0), ro = slot_alloc(), dst = slot_alloc();
    keel_word_t t = slot_alloc(), empty = slot_alloc(), cn_ro = slot_alloc();

    keel_cnode_copy(CN, ro, CN, n, KEEL_RIGHT_READ);
    keel_cnode_copy(CN, cn_ro, CN, CN, KEEL_RIGHT_WRITE); /* no read: identify refused */
    keel_untyped_retype(suite_untyped, KEEL_OBJ_TCB, 0, CN, t, 1);
    junk(b, keel_batch_cnode_identify(b, CN, n), 1);     /* the shortcut: 3 results */
    junk(b, keel_batch_cnode_identify(b, CN, empty), 1); /* the shortcut: 1 result */
    junk(b, keel_batch_notification_signal(b, n), 0);    /* no arguments */
    junk(b, keel_batch_notification_poll(b, n), 0);
    junk(b, keel_batch_tcb_write_regs(b, t, 0x1000, 0x2000, 7), 3);
    junk(b, keel_batch_tcb_read_regs(b, t), 0);
    junk(b, keel_batch_cnode_identify(b, cn_ro, n), 1);    /* no_rights */
    junk(b, keel_batch_notification_signal(b, ro), 0);     /* no_rights */
    junk(b, keel_batch_cnode_identify(b, n, n), 1);        /* wrong_type */
    junk(b, keel_batch_notification_signal(b, empty), 0);  /* an empty slot */
    junk(b, keel_batch_notification_signal(b, 0), 0);      /* slot 0 */
    junk(b, keel_batch_notification_signal(b, 1ul << 40), 0); /* past the table */
    junk(b, raw(b, CN, 0), 0);                             /* label 0 */
    junk(b, raw(b, CN, KEEL_NCALLS), 0);                   /* past the last call */
    junk(b, raw(b, n, ~0ul), 0);
    junk(b, keel_batch_cnode_copy(b, CN, dst, CN, n, KEEL_RIGHT_ALL), 5); /* a capability argument */
    junk(b, keel_batch_cnode_identify(b, CN, dst), 1);
    junk(b, keel_batch_cnode_copy(b, CN, dst, n, n, KEEL_RIGHT_ALL), 5); /* ... of the wrong type */
    unsigned long ref = keel_batch_cnode_identify(b, CN, 0);
    keel_batch_ref(b, ref, 0, 0, 1); /* slot := record 0's rights: a reference */
    junk(b, ref, 1);
    junk(b, keel_batch_cnode_delete(b, CN, dst), 1);
    junk(b, keel_batch_cnode_identify(b, CN, dst), 1);
    junk(b, keel_batch_cnode_delete(b, CN, t), 1); /* destroys the thread */
    junk(b, keel_batch_tcb_read_regs(b, t), 0);
    /* A mapping goes away (not the records'): the loop translates their
     * pages again and goes on in place. */
    static unsigned long page = REC_VA + 8 * KEEL_PAGE_SIZE; /* a fresh one each build */
    keel_word_t f = map_new_frame(page, KEEL_RIGHT_READ | KEEL_RIGHT_WRITE);
    page += KEEL_PAGE_SIZE;
    junk(b, keel_batch_frame_unmap(b, f), 0);
    junk(b, keel_batch_cnode_identify(b, CN, n), 1);
    return b->n;
}

static int t_batch_shortcut_and_its_fallbacks(void)
{
    long err;

    OK(same_as_single_calls(build_shortcut_fallbacks, 0, 0, &err));
    EXPECT(err == KEEL_E_NO_RIGHTS);
    EXPECT(batched[0].res[0] == KEEL_OBJ_NOTIFICATION && batched[0].res[3] == 0);
    EXPECT(batched[1].err == 0 && batched[1].res[0] == 0 && batched[1].res[1] == 0);
    EXPECT(batched[3].res[0] == 1 && batched[5].res[0] == 0x1000 && batched[5].res[1] == 0x2000);
    EXPECT(batched[6].err == KEEL_E_NO_RIGHTS && batched[8].err == KEEL_E_WRONG_TYPE);
    EXPECT(batched[11].err == KEEL_E_INVALID_CAP && batched[12].err == KEEL_E_UNKNOWN_CALL);
    EXPECT(batched[16].res[0] == KEEL_OBJ_NOTIFICATION && batched[17].err == KEEL_E_WRONG_TYPE);
    EXPECT(batched[20].res[0] == 0 && batched[22].err == KEEL_E_INVALID_CAP);
    EXPECT(batched[23].err == 0 && batched[24].res[0] == KEEL_OBJ_NOTIFICATION);
    OK(same_as_single_calls(build_shortcut_fallbacks, KEEL_BATCH_STOP, 0, &err));
    EXPECT(batched[6].err == KEEL_E_NO_RIGHTS && batched[7].err == KEEL_E_NOT_RUN);
    return 0;
}

/* -- a batch that deletes its own thread ------------------------------------------------------ */

static struct keel_call_rec self_recs[3];

static void body_delete_self(struct thread *t)
{
    struct keel_batch b = { self_recs, 0, 3 };
    keel_word_t done;

    keel_batch_notification_signal(&b, t->a);
    keel_batch_cnode_delete(&b, CN, t->tcb);
    keel_batch_notification_signal(&b, t->b);
    self_recs[1].err = self_recs[2].err = 0xdead;
    keel_batch_run(&b, 0, &done);
    t->done = 1; /* not reached: the batch ends the thread */
}

static int t_batch_deletes_its_own_thread(void)
{
    static struct thread th;
    keel_word_t bits, type = 1;

    th.a = make_obj(KEEL_OBJ_NOTIFICATION, 0);
    th.b = make_obj(KEEL_OBJ_NOTIFICATION, 0);
    OK(spawn(&th, body_delete_self, 0));
    for (long i = 0; i < WAIT_LIMIT && type; i++) {
        keel_yield();
        OK(keel_cnode_identify(CN, th.tcb, &type, 0, 0));
    }
    EXPECT(type == 0 && !th.done);
    OK(keel_notification_poll(th.a, &bits));
    EXPECT(bits == 1);
    OK(keel_notification_poll(th.b, &bits));
    EXPECT(bits == 0);
    EXPECT(self_recs[0].err == 0 && self_recs[1].err == 0xdead && self_recs[2].err == 0xdead);
    return 0;
}

const struct test batch_same_tests[] = {
#define T(name) { #name, t_##name }
    T(batch_failure_in_the_middle), T(batch_failure_in_the_middle_stops),
    T(batch_reference_to_a_failed_result), T(batch_mixes_shared_and_exclusive_calls),
    T(batch_longer_than_the_maximum_runs_nothing), T(batch_records_straddling_a_page),
    T(batch_records_in_unmapped_memory), T(batch_shortcut_and_its_fallbacks),
    T(batch_deletes_its_own_thread),
#undef T
};
const unsigned long batch_same_tests_count = sizeof(batch_same_tests) / sizeof(batch_same_tests[0]);
