/* keel.test=fuzz: the kernel-call fuzzer's controller (keel fuzz).
 *
 * One fuzz process (userspace/fuzz/fuzz.c) per CPU issues random kernel
 * calls while a known workload runs beside them (two threads passing
 * numbered messages, each checking the sequence) and a canary sits still (a
 * table of capabilities, a queued message and a page of memory that no
 * fuzz process can name).  A process that faults (it may well unmap its
 * own code) or stops reporting is taken down by revoking the untyped
 * memory it was made from, and replaced with the next seed of its stream,
 * until keel.fuzz.calls calls were made in all.  Then every process is
 * revoked and the invariants checked: the canary is untouched, the
 * workload saw every message in order, and each process's memory is whole
 * again (an object as large as the region can be made from it).  Prints
 * "fuzz: ok ..." or "fuzz: FAIL ...".
 *
 * keel.fuzz.seed=N keel.fuzz.calls=M (per run, over all processes);
 * keel.fuzz.procs=P (default: one per CPU); keel.fuzz.failat=N makes a
 * process that reports N calls a failure (to test the host's shrinking);
 * keel.fuzz.trace=1 has the processes print every call (used to show the
 * shrunk sequence of a failure, with one process: keel.fuzz.procs=1). */
#include "suite.h"
#include "fuzz.h"

#define FUZZ_UT_BITS 20    /* a process and everything it makes: 1 MiB */
#define FUZZ_GIVE_BITS 16  /* the untyped memory it is given to retype */
#define FUZZ_MAX_PROCS 8
#define FUZZ_WAITING 40000000ul   /* TSC ticks without a call done, not running: waiting */
#define FUZZ_STALL 40000000000ul  /* TSC ticks without a call done, running: stalled */
#define FUZZ_MIRROR_VA 0x51000000ul /* our view of process i's progress page: + i pages */
#define WORKLOAD_BURST 4 /* messages the sender sends before it waits for their receipt */

struct fuzz_proc {
    struct obj_alloc a;
    keel_word_t ut, slots, report; /* our copies: its memory, slot range, badged report ep */
    keel_word_t uobj, obj_slots;   /* the region of the objects it is given; their slots */
    int refreshed;                 /* its objects were renewed since its last call done */
    unsigned long gen;             /* incarnation, in its report badge's bits 8 and up */
    struct process p;
    unsigned long seed, quota, done, batches;
    unsigned long last_tsc;        /* when a call of its was last seen done */
    unsigned long checked_tsc;     /* when its state was last asked for */
    int live;
};

static struct fuzz_proc procs[FUZZ_MAX_PROCS];
static keel_word_t report_ep, report_window;
static unsigned long total, batches, faults, stalls, waiting, refreshes, spawned;
static int spawn_failed, injected;
static unsigned long failat; /* keel.fuzz.failat: a failure injected (tests the shrinking) */

static keel_word_t fuzz_mirror_va(unsigned i)
{
    return FUZZ_MIRROR_VA + i * KEEL_PAGE_SIZE;
}

static unsigned long word_from(const char *key, unsigned long dflt)
{
    char val[24];
    unsigned long v = 0;

    if (!cmdline_get(suite_boot->cmdline, key, val, sizeof(val)) || !val[0])
        return dflt;
    for (const char *s = val; *s >= '0' && *s <= '9'; s++)
        v = v * 10 + (unsigned long)(*s - '0');
    return v;
}

/* Makes the objects process i is given (fuzz.h: fuzz_given_type) from a
 * region of their own, f->uobj, and puts them in its table: revoking
 * f->uobj takes them and everything the process made from them away
 * without taking the process down. */
static long fuzz_give_objects(struct fuzz_proc *f)
{
    keel_word_t given[FUZZ_GIVEN];
    long err;

    given[0] = f->report;
    for (unsigned k = 1; k < FUZZ_GIVEN; k++) {
        unsigned type = fuzz_given_type[k];
        given[k] = f->obj_slots + k;
        keel_word_t bits = type == KEEL_OBJ_UNTYPED ? FUZZ_GIVE_BITS
                           : type == KEEL_OBJ_CNODE ? 4
                                                    : 0;
        if ((err = keel_untyped_retype(f->uobj, type, bits, CN, given[k], 1)))
            return err;
    }
    for (unsigned k = 0; k < FUZZ_GIVEN; k++) {
        keel_word_t rights = k == 0 ? KEEL_RIGHT_WRITE : KEEL_RIGHT_ALL;
        keel_cnode_delete(f->p.cnode, fuzz_given_slot(k)); /* whatever it put there */
        if ((err = process_give(&f->p, fuzz_given_slot(k), given[k], rights)))
            return err;
    }
    return 0;
}

static struct fuzz_progress *fuzz_mirror(unsigned i)
{
    return (struct fuzz_progress *)fuzz_mirror_va(i);
}

/* Starts process i on its next seed with up to quota calls. */
static long fuzz_spawn(unsigned i, unsigned long quota, int tracing)
{
    struct fuzz_proc *f = &procs[i];
    long err;

    /* A report capability of this incarnation's own: the badge carries a
     * generation, so a message the last one left queued is not taken for
     * this one's. */
    keel_cnode_delete(CN, f->report);
    f->gen = (f->gen + 1) & 0xffffff;
    if ((err = keel_cnode_mint(CN, f->report, CN, report_ep, KEEL_RIGHT_WRITE,
                               f->gen << 8 | (i + 1))))
        return err;
    f->a = (struct obj_alloc){ f->ut, f->slots, f->slots + 200 };
    if ((err = process_load(&f->a, "fuzz", FUZZ_CNODE_BITS, SPAWN_STACK_PAGES, &f->p)))
        return err;
    /* Its progress page, mapped in both address spaces (a copy of the
     * frame capability for ours): both go when f->ut is revoked. */
    keel_word_t page = obj_make(&f->a, KEEL_OBJ_FRAME, 0), mirror = f->a.next++;
    if (!page || f->a.next > f->a.end)
        return KEEL_E_NO_MEMORY;
    if ((err = map_frame(&f->a, f->p.vspace, page, FUZZ_PROGRESS_VA,
                         KEEL_RIGHT_READ | KEEL_RIGHT_WRITE)) ||
        (err = keel_cnode_copy(CN, mirror, CN, page, KEEL_RIGHT_ALL)) ||
        (err = map_frame(0, VS, mirror, fuzz_mirror_va(i), KEEL_RIGHT_READ)))
        return err;
    f->uobj = obj_make(&f->a, KEEL_OBJ_UNTYPED, FUZZ_GIVE_BITS + 1);
    if (!f->uobj)
        return KEEL_E_NO_MEMORY;
    if ((err = fuzz_give_objects(f)))
        return err;
    /* Its own thread capability goes: with a ceiling (MCP) of 0 it could
     * still lower itself to priority 0, below the busy workload, and
     * starve until counted as stalled. */
    if ((err = keel_cnode_delete(f->p.cnode, KEEL_SLOT_TCB)))
        return err;
    if ((err = keel_tcb_set_affinity(f->p.tcb, i % suite_boot->ncpus)))
        return err;
    f->quota = quota;
    f->done = f->batches = 0;
    f->last_tsc = f->checked_tsc = rdtsc();
    f->refreshed = 0;
    f->live = 1;
    spawned++;
    keel_word_t arg = (f->seed & FUZZ_SEED_MASK) << FUZZ_CALL_BITS | quota |
                      (tracing ? FUZZ_TRACE : 0);
    return process_start(&f->p, arg, f->report);
}

/* A process waiting for what nobody will send (a call on an endpoint of
 * its own, a wait on its own notification): its objects are revoked, which
 * ends the wait, and new ones given; it goes on with its sequence. */
static long fuzz_refresh(unsigned i)
{
    struct fuzz_proc *f = &procs[i];
    long err = keel_cnode_revoke(CN, f->uobj);

    if (!err)
        err = fuzz_give_objects(f);
    f->last_tsc = rdtsc();
    f->refreshed = 1;
    refreshes++;
    return err;
}

/* What process i's progress page says: a call done since we last looked
 * is a sign of life. */
static void fuzz_seen(unsigned i)
{
    struct fuzz_proc *f = &procs[i];
    if (!f->live) /* then the page is gone */
        return;
    struct fuzz_progress *pg = fuzz_mirror(i);
    unsigned long calls = pg->calls, b = pg->batches;

    if (calls <= f->done || calls > f->quota)
        return;
    f->done = calls;
    f->batches = b;
    f->last_tsc = rdtsc();
    f->refreshed = 0;
    if (failat && calls >= failat && !injected) {
        printf("\nktest: FAIL fuzz: injected failure: a process made %lu calls\n", calls);
        injected = 1;
    }
}

/* Takes process i down: everything it was made of, and made, goes.  The
 * calls of its quota it did not make go back to *remaining. */
static long fuzz_kill(unsigned i, unsigned long *remaining)
{
    struct fuzz_proc *f = &procs[i];

    fuzz_seen(i); /* its last counts, before the page goes */
    f->live = 0;
    total += f->done;
    batches += f->batches;
    *remaining += f->quota - f->done;
    return keel_cnode_revoke(CN, f->ut);
}

/* -- the canary and the known workload ------------------------------------------------ */

#define CANARY_VA 0x50000000ul
static keel_word_t canary_cn, canary_ep, canary_frame;
static keel_word_t canary_id[4][3];

static int canary_set(void)
{
    canary_cn = make_obj(KEEL_OBJ_CNODE, 3);
    canary_ep = make_obj(KEEL_OBJ_ENDPOINT, 0);
    canary_frame = map_new_frame(CANARY_VA, KEEL_RIGHT_READ | KEEL_RIGHT_WRITE);
    for (unsigned long i = 0; i < 512; i++)
        ((volatile unsigned long *)CANARY_VA)[i] = i * 0x9e3779b97f4a7c15ul;
    OK(keel_cnode_mint(canary_cn, 1, CN, canary_ep, KEEL_RIGHT_READ, 0x5a));
    OK(keel_cnode_copy(canary_cn, 2, CN, canary_frame, KEEL_RIGHT_READ));
    OK(keel_send(canary_ep, USER(7), 1, 2, 3, 4, 5, 6));
    for (unsigned s = 1; s < 3; s++)
        OK(keel_cnode_identify(canary_cn, s, &canary_id[s][0], &canary_id[s][1],
                               &canary_id[s][2]));
    return 0;
}

static int canary_check(void)
{
    keel_word_t id[3];
    struct keel_msg m;

    for (unsigned s = 1; s < 3; s++) {
        OK(keel_cnode_identify(canary_cn, s, &id[0], &id[1], &id[2]));
        EXPECT(id[0] == canary_id[s][0] && id[1] == canary_id[s][1] && id[2] == canary_id[s][2]);
    }
    OK(keel_cnode_identify(canary_cn, 3, &id[0], &id[1], &id[2]));
    EXPECT(id[0] == 0); /* nothing appeared in its empty slot */
    for (unsigned long i = 0; i < 512; i++)
        EXPECT(((volatile unsigned long *)CANARY_VA)[i] == i * 0x9e3779b97f4a7c15ul);
    OK(keel_recv(canary_ep, KEEL_RECV_NONBLOCK, 0, &m));
    EXPECT(m.label == USER(7) && m.w[0] == 1 && m.w[5] == 6);
    EXPECT_ERR(keel_recv(canary_ep, KEEL_RECV_NONBLOCK, 0, &m), KEEL_E_WOULD_BLOCK);
    return 0;
}

/* The workload blocks between bursts: the sender sends WORKLOAD_BURST
 * messages and waits until the receiver, which waits in recv, has taken
 * them; the receiver then also signals workload_tick, the controller's
 * heartbeat (its bound notification).  Threads that polled and yielded
 * instead took a turn of every time slice whatever the load: sampled,
 * more of both vCPUs than the fuzz processes (docs/reliability.md). */
static volatile int workload_stop;
static volatile unsigned long workload_sent, workload_got, workload_bad;
static keel_word_t workload_ep, workload_ack, workload_tick;

static void body_sender(struct thread *t)
{
    unsigned long seq = 0;
    keel_word_t bits;

    while (!workload_stop) {
        if (keel_send(t->a, USER(1), seq, ~seq, 0, 0, 0, 0) != KEEL_E_OK) {
            keel_yield();
            continue;
        }
        workload_sent = ++seq;
        if (!(seq % WORKLOAD_BURST))
            keel_notification_wait(workload_ack, &bits);
    }
    /* After its last count, the end: the receiver takes everything up to
     * it (it once stopped between a send and its count, one short). */
    while (keel_send(t->a, USER(2), seq, 0, 0, 0, 0, 0) != KEEL_E_OK)
        keel_yield();
}

static void body_receiver(struct thread *t)
{
    unsigned long want = 0;
    struct keel_msg m;

    for (;;) {
        if (keel_recv(t->a, 0, 0, &m) != KEEL_E_OK) {
            workload_bad++;
            keel_yield();
            continue;
        }
        if (m.label == USER(2))
            break;
        if (m.label != USER(1) || m.w[0] != want || m.w[1] != ~want)
            workload_bad++;
        want = m.w[0] + 1;
        workload_got = want;
        if (!(want % WORKLOAD_BURST)) {
            keel_notification_signal(workload_ack);
            keel_notification_signal(workload_tick);
        }
    }
}

/* -- the run ------------------------------------------------------------------------ */

static unsigned long share; /* calls per process: the total over the processes, at most 20000 */

static void serve_report(struct keel_msg *m, unsigned long *remaining, unsigned nprocs)
{
    unsigned i = (unsigned)(m->badge & 0xff) - 1;

    if (m->label == KEEL_LABEL_NOTIFY)
        return; /* the workload's heartbeat */
    if (m->info & KEEL_INFO_REPLY) /* a call on its report endpoint: answer it */
        keel_reply(report_window, KEEL_E_UNKNOWN_CALL, 0);
    for (unsigned k = 0; k <= KEEL_MSG_CAPS; k++)
        keel_cnode_delete(CN, report_window + k);
    if (i >= nprocs || !procs[i].live || m->badge >> 8 != procs[i].gen)
        return; /* from a process already taken down */
    struct fuzz_proc *f = &procs[i];
    if (m->label == FUZZ_DONE) {
        fuzz_seen(i);
        f->done = m->w[0] > f->quota ? f->quota : m->w[0];
        f->batches = m->w[1];
        fuzz_kill(i, remaining);
    } else if (m->label == KEEL_LABEL_FAULT) {
        faults++;
        fuzz_kill(i, remaining);
    }
}

/* With wait set, first waits for a report or the workload's heartbeat. */
static void serve_reports(int wait, int tracing, unsigned long *remaining, unsigned nprocs)
{
    struct keel_msg m;

    if (wait && keel_recv(report_ep, 0, report_window, &m) == KEEL_E_OK)
        serve_report(&m, remaining, nprocs);
    while (keel_recv(report_ep, KEEL_RECV_NONBLOCK, report_window, &m) == KEEL_E_OK)
        serve_report(&m, remaining, nprocs);
    for (unsigned i = 0; i < nprocs; i++) {
        /* A process waiting for something nobody will send (a wait on a
         * notification of its own, say) is given new objects, then
         * replaced; one that runs and finishes no call for much longer is
         * counted as stalled.  Its state is asked for (a call that takes
         * the objects lock whole) at most once per FUZZ_WAITING. */
        keel_word_t state = KEEL_THREAD_RUNNABLE;
        fuzz_seen(i);
        unsigned long now = rdtsc();
        if (procs[i].live && now - procs[i].last_tsc > FUZZ_WAITING &&
            now - procs[i].checked_tsc > FUZZ_WAITING &&
            ((procs[i].checked_tsc = now), 1) &&
            (keel_tcb_state(procs[i].p.tcb, &state) || state != KEEL_THREAD_RUNNABLE)) {
            if (!procs[i].refreshed && fuzz_refresh(i) == KEEL_E_OK)
                continue;
            waiting++;
            fuzz_kill(i, remaining);
        } else if (procs[i].live && now - procs[i].last_tsc > FUZZ_STALL) {
            stalls++;
            fuzz_kill(i, remaining);
        }
        if (!procs[i].live && *remaining) {
            unsigned long q = *remaining < share ? *remaining : share;
            procs[i].seed = procs[i].seed * 6364136223846793005ul + 1442695040888963407ul;
            long err = fuzz_spawn(i, q, tracing);
            if (err == KEEL_E_OK) {
                *remaining -= q;
            } else {
                printf("ktest: FAIL fuzz: cannot start a fuzz process: %ld\n", err);
                spawn_failed = 1;
                fuzz_kill(i, remaining);
                *remaining = 0;
            }
        }
    }
}

int fuzz_run(void)
{
    unsigned long seed = word_from("keel.fuzz.seed", 1), calls = word_from("keel.fuzz.calls", 2000);
    int tracing = word_from("keel.fuzz.trace", 0) != 0;
    unsigned nprocs = (unsigned)word_from("keel.fuzz.procs", suite_boot->ncpus);

    failat = word_from("keel.fuzz.failat", 0);
    struct thread sender, receiver;
    keel_word_t ep = workload_ep = make_obj(KEEL_OBJ_ENDPOINT, 0);
    workload_ack = make_obj(KEEL_OBJ_NOTIFICATION, 0);
    workload_tick = make_obj(KEEL_OBJ_NOTIFICATION, 0);
    unsigned long remaining = calls;

    if (nprocs < 1 || nprocs > FUZZ_MAX_PROCS)
        nprocs = nprocs < 1 ? 1 : FUZZ_MAX_PROCS;
    suite_current = "fuzz";
    printf("fuzz: seed %lu, %lu calls, %u processes on %lu cpus\n", seed, calls, nprocs,
           suite_boot->ncpus);
    if (canary_set())
        return 1;
    report_ep = make_obj(KEEL_OBJ_ENDPOINT, 0);
    report_window = window_alloc();
    for (unsigned i = 0; i < nprocs; i++) {
        procs[i].ut = make_untyped(FUZZ_UT_BITS);
        procs[i].slots = slot_alloc_range(200);
        procs[i].report = slot_alloc();
        procs[i].obj_slots = slot_alloc_range(FUZZ_GIVEN);
        procs[i].seed = seed + i;
    }
    share = (calls + nprocs - 1) / nprocs;
    if (share > 20000)
        share = 20000;
    sender.a = receiver.a = ep;
    OK(spawn(&receiver, body_receiver, 0));
    OK(spawn(&sender, body_sender, 0));
    OK(keel_tcb_set_affinity(sender.tcb, 0));
    if (suite_boot->ncpus > 1)
        OK(keel_tcb_set_affinity(receiver.tcb, 1));
    for (unsigned i = 0; i < nprocs; i++) {
        procs[i].seed = seed * FUZZ_MAX_PROCS + i; /* the first seed of stream i */
        unsigned long q = remaining < share ? remaining : share;
        if (q && fuzz_spawn(i, q, tracing) == KEEL_E_OK)
            remaining -= q;
    }
    unsigned long shown = 0;
    OK(keel_tcb_bind_notification(KEEL_SLOT_TCB, workload_tick));
    /* Above everyone else, and waiting most of the time: a renewal or a
     * replacement is made at once instead of a few calls per time slice
     * (a process waited 0.7 s for its renewal under load). */
    OK(keel_tcb_set_priority(KEEL_SLOT_TCB, KEEL_PRIO_DEFAULT + 1, KEEL_SLOT_TCB));
    for (int first = 1;; first = 0) {
        int live = 0;
        /* Between heartbeats and reports it waits rather than polls. */
        serve_reports(!first, tracing, &remaining, nprocs);
        /* Counted with the calls of the processes still running (their
         * progress pages): a process runs up to 20000 calls, longer than
         * the hang watchdog waits for a line on a loaded host. */
        unsigned long sofar = total;
        for (unsigned i = 0; i < nprocs; i++)
            sofar += procs[i].live ? procs[i].done : 0;
        if (sofar / 10000 != shown) { /* progress, and a sign of life for the hang watchdog */
            shown = sofar / 10000;
            /* The invariants that hold during the run, checked as it goes:
             * a long run stopped early still says how far they held. */
            /* Unbound meanwhile: a pending heartbeat would be what its
             * receives from the canary's endpoint get (it was, once). */
            OK(keel_tcb_bind_notification(KEEL_SLOT_TCB, 0));
            if (canary_check())
                return 1;
            OK(keel_tcb_bind_notification(KEEL_SLOT_TCB, workload_tick));
            OK(keel_send(canary_ep, USER(7), 1, 2, 3, 4, 5, 6)); /* the check took it */
            EXPECT(workload_bad == 0);
            printf("\nfuzz: %lu calls so far; canary untouched, workload %lu messages in order\n",
                   sofar, workload_got);
        }
        for (unsigned i = 0; i < nprocs; i++)
            live |= procs[i].live;
        if (!live && !remaining)
            break;
    }
    OK(keel_tcb_set_priority(KEEL_SLOT_TCB, KEEL_PRIO_DEFAULT, KEEL_SLOT_TCB));
    OK(keel_tcb_bind_notification(KEEL_SLOT_TCB, 0));
    workload_stop = 1;
    EXPECT(!spawn_failed && !injected);
    EXPECT(wait_done(&sender) && wait_done(&receiver));
    /* Everything the processes made is gone: each region is whole again. */
    for (unsigned i = 0; i < nprocs; i++) {
        keel_word_t whole = slot_alloc();
        OK(keel_untyped_retype(procs[i].ut, KEEL_OBJ_UNTYPED, FUZZ_UT_BITS, CN, whole, 1));
        OK(keel_cnode_revoke(CN, procs[i].ut));
        for (keel_word_t s = procs[i].slots; s < procs[i].slots + 200; s++) {
            keel_word_t id[3];
            OK(keel_cnode_identify(CN, s, &id[0], &id[1], &id[2]));
            if (id[0]) {
                printf("\nktest: FAIL fuzz: slot %lu of process %u holds a capability after "
                       "its memory was revoked (type %lu rights %lu badge 0x%lx)\n",
                       s - procs[i].slots, i, id[0], id[1], id[2]);
                return 1;
            }
        }
    }
    if (canary_check())
        return 1;
    if (workload_bad || workload_got != workload_sent || !workload_got)
        printf("\nfuzz: workload %lu sent, %lu received, %lu out of order\n", workload_sent,
               workload_got, workload_bad);
    EXPECT(workload_bad == 0);
    EXPECT(workload_got == workload_sent && workload_got > 0);
    struct keel_msg left;
    EXPECT_ERR(keel_recv(workload_ep, KEEL_RECV_NONBLOCK, 0, &left), KEEL_E_WOULD_BLOCK);
    printf("\nfuzz: ok %lu calls (%lu batches) in %lu processes (%lu faulted, %lu waiting, "
           "%lu stalled; %lu renewals); workload %lu messages in order; canary untouched; "
           "memory whole\n", total, batches, spawned, faults, waiting, stalls, refreshes,
           workload_got);
    return 0;
}
