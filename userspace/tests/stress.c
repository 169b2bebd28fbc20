/* keel.test=stress: SMP stress workloads with invariant checks.
 *
 * Command line: keel.duration=SECONDS (default 5), keel.seed=N (default 1),
 * keel.stress=ipc,storm,caps,map,churn,rpc (default: all), keel.pairs=N
 * (IPC pairs and RPC servers, default one per two CPUs),
 * keel.pin=spread|local (spread: each IPC pair across two CPUs, each RPC
 * server and its two clients on three, and the capability storms on the
 * shared root table; local: each pair on one CPU, each storm thread on its
 * own CPU with its own table - the scaling benchmark's set-up).
 *
 * Every workload runs as threads in init's address space, made from one
 * untyped region; when time is up the main thread stops them, checks each
 * workload's invariants and prints "stress: NAME ok ..." or
 * "stress: NAME FAILED ...", then revokes the region and retypes all of it
 * again to prove every object's memory came back, and ends with
 * "stress: summary N workloads, M failed".  Progress is printed about every
 * second. */
#include "suite.h"

#define STACK_VA 0x38000000ul /* worker stacks: one page table (2 MiB) */
#define MAP_VA 0x38200000ul   /* map workload: pages that come and go */
#define ALIAS_VA 0x38400000ul /* map workload: the same frames, always mapped */
#define STACK_PAGES 4
#define MAX_WORKERS 64
#define MAP_PAGES 16
#define STORM_SENDERS 3
#define CAP_SLOTS 32
#define STRESS_UT_BITS 23
#define GRACE_SECONDS 20

#define LABEL_DATA 1
#define LABEL_DONE 2
#define LABEL_QUIT 3

struct worker {
    keel_word_t tcb;
    void (*fn)(struct worker *);
    volatile long done;
    long id;
    long cpu;
    unsigned long rng;
    keel_word_t a, b, c, d;  /* capabilities the body uses */
    unsigned long n;         /* a count given to the body */
    volatile unsigned long count, count2, count3;
    volatile long fail;      /* source line of the first failed check */
    unsigned long fail_a, fail_b;
};

static struct worker workers[MAX_WORKERS];
static int nworkers;
static keel_word_t stress_ut;
static unsigned long ncpus, tsc_khz, seed;
static volatile int stop;
static keel_word_t stack_next = STACK_VA;
static int pin_local;
static unsigned long inject;
static keel_word_t tick_ntfn;   /* wakes the main thread: a second passed, or a worker ended */
static unsigned long end_ms, next_tick_ms;

#define WFAIL(w, x, y)                                                                          \
    do {                                                                                        \
        if (!(w)->fail) {                                                                       \
            (w)->fail_a = (unsigned long)(x);                                                   \
            (w)->fail_b = (unsigned long)(y);                                                   \
            (w)->fail = __LINE__;                                                               \
        }                                                                                       \
    } while (0)

static unsigned long rnd(unsigned long *s)
{
    unsigned long x = *s;

    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *s = x;
    return x * 0x2545f4914f6cdd1dul;
}

static unsigned long now_ms(void)
{
    return rdtsc() / tsc_khz;
}

static void cpuid(unsigned leaf, unsigned *a, unsigned *b)
{
    unsigned c = 0, d;

    __asm__ volatile("cpuid" : "=a"(*a), "=b"(*b), "+c"(c), "=d"(d) : "a"(leaf));
}

static void pause_loop(int n)
{
    for (int i = 0; i < n; i++)
        __asm__ volatile("pause" ::: "memory");
}

/* Workers watch the clock themselves (rdtsc, in user mode), so the main
 * thread can sleep at a high priority: the first worker to see a second
 * boundary wakes it to print progress. */
static int stopped(void)
{
    unsigned long t, due;

    if (stop)
        return 1;
    t = now_ms();
    due = next_tick_ms;
    if (t >= due && __atomic_compare_exchange_n(&next_tick_ms, &due, due + 1000, 0,
                                                __ATOMIC_RELAXED, __ATOMIC_RELAXED))
        keel_notification_signal(tick_ntfn);
    if (t >= end_ms)
        stop = 1;
    return stop;
}

static keel_word_t new_obj(keel_word_t type, keel_word_t bits)
{
    keel_word_t s = slot_alloc();
    long err = keel_untyped_retype(stress_ut, type, bits, CN, s, 1);

    if (err) {
        printf("stress: setup: retype of type %lu failed: %ld\n", type, err);
        keel_exit(0x11);
    }
    return s;
}

static void setup_check(long err, const char *what)
{
    if (err) {
        printf("stress: setup: %s failed: %ld\n", what, err);
        keel_exit(0x11);
    }
}

static keel_word_t new_stack(unsigned pages)
{
    stack_next += KEEL_PAGE_SIZE; /* guard page */
    for (unsigned i = 0; i < pages; i++) {
        keel_word_t f = new_obj(KEEL_OBJ_FRAME, 0);
        setup_check(keel_frame_map(f, VS, stack_next, KEEL_RIGHT_READ | KEEL_RIGHT_WRITE),
                    "stack map");
        stack_next += KEEL_PAGE_SIZE;
    }
    return stack_next - 8;
}

static void worker_entry(struct worker *w)
{
    w->fn(w);
    __atomic_store_n(&w->done, 1, __ATOMIC_RELEASE);
    keel_notification_signal(tick_ntfn);
    for (;;)
        keel_tcb_suspend(w->tcb);
}

/* A worker thread, configured but not started; cpu -1 runs anywhere. */
static struct worker *w_spawn(void (*fn)(struct worker *), long cpu, keel_word_t fault_ep)
{
    struct worker *w = &workers[nworkers];

    if (nworkers == MAX_WORKERS) {
        printf("stress: setup: too many workers\n");
        keel_exit(0x11);
    }
    w->id = nworkers++;
    w->fn = fn;
    w->cpu = cpu < 0 ? -1 : cpu % (long)ncpus;
    w->rng = (seed + 1) * 0x9e3779b97f4a7c15ul + (unsigned long)w->id * 0xbf58476d1ce4e5b9ul;
    w->tcb = new_obj(KEEL_OBJ_TCB, 0);
    keel_word_t top = new_stack(STACK_PAGES);
    setup_check(keel_tcb_configure(w->tcb, CN, VS, fault_ep), "configure");
    setup_check(keel_tcb_write_regs(w->tcb, (keel_word_t)worker_entry, top, (keel_word_t)w),
                "write_regs");
    setup_check(keel_tcb_set_affinity(w->tcb, (keel_word_t)w->cpu), "set_affinity");
    return w;
}

/* -- IPC ping-pong ------------------------------------------------------------- */

/* a: endpoint to the partner, b: endpoint from it. */
static void ipc_ping(struct worker *w)
{
    unsigned long n = 0;
    keel_word_t l, w0, w1;

    while (!stopped()) {
        long e = ep_send(w->a, LABEL_DATA, n, (keel_word_t)w->id, 0, 0);
        if (e) {
            WFAIL(w, e, n);
            break;
        }
        e = ep_recv(w->b, 0, 0, &l, &w0, &w1, 0, 0);
        if (e || l != LABEL_DATA || w0 != n + 1) {
            WFAIL(w, e ? (unsigned long)e : w0, n + 1);
            break;
        }
        w->count = ++n;
    }
    ep_send(w->a, LABEL_DONE, n, 0, 0, 0);
}

static void ipc_pong(struct worker *w)
{
    unsigned long expect = 0;
    keel_word_t l, w0;

    for (;;) {
        long e = ep_recv(w->a, 0, 0, &l, &w0, 0, 0, 0);
        if (e) {
            WFAIL(w, e, expect);
            break;
        }
        if (l == LABEL_DONE) {
            if (w0 != expect)
                WFAIL(w, w0, expect);
            break;
        }
        if (l != LABEL_DATA || w0 != expect) { /* lost or duplicated */
            WFAIL(w, w0, expect);
            break;
        }
        w->count = ++expect;
        e = ep_send(w->b, LABEL_DATA, w0 + 1, 0, 0, 0);
        if (e) {
            WFAIL(w, e, w0);
            break;
        }
    }
}

static struct worker *ipc_w[MAX_WORKERS];
static int ipc_pairs;

static void ipc_setup(unsigned long pairs)
{
    ipc_pairs = (int)pairs;
    for (int i = 0; i < ipc_pairs; i++) {
        keel_word_t to = new_obj(KEEL_OBJ_ENDPOINT, 0), from = new_obj(KEEL_OBJ_ENDPOINT, 0);
        long c1 = pin_local ? i : 2 * i, c2 = pin_local ? i : 2 * i + 1;
        struct worker *a = w_spawn(ipc_ping, c1, 0), *b = w_spawn(ipc_pong, c2, 0);
        a->a = to;
        a->b = from;
        b->a = to;
        b->b = from;
        ipc_w[2 * i] = a;
        ipc_w[2 * i + 1] = b;
    }
}

static unsigned long ipc_progress(void)
{
    unsigned long n = 0;

    for (int i = 0; i < ipc_pairs; i++)
        n += ipc_w[2 * i]->count;
    return n;
}

static int ipc_check(unsigned long secs_ms)
{
    unsigned long total = 0;
    int bad = 0;

    for (int i = 0; i < 2 * ipc_pairs; i++) {
        struct worker *w = ipc_w[i];
        if (w->fail) {
            printf("stress: ipc FAILED: pair %d %s: check at line %ld (%lu vs %lu)\n", i / 2,
                   i % 2 ? "pong" : "ping", w->fail, w->fail_a, w->fail_b);
            bad = 1;
        }
    }
    for (int i = 0; i < ipc_pairs; i++) {
        unsigned long a = ipc_w[2 * i]->count, b = ipc_w[2 * i + 1]->count;
        if (a != b) {
            printf("stress: ipc FAILED: pair %d: %lu round trips seen by ping, %lu by pong\n", i,
                   a, b);
            bad = 1;
        }
        total += a;
    }
    if (!bad)
        printf("stress: ipc ok %d pairs (%s), %lu round trips, %lu per s, no message lost or "
               "duplicated\n",
               ipc_pairs, pin_local ? "each on one cpu" : "across cpus", total,
               total * 1000 / (secs_ms ? secs_ms : 1));
    return bad;
}

/* -- calls and replies across CPUs ------------------------------------------- */

#define RPC_CLIENTS 2 /* per server, on other CPUs than it */

static struct worker *rpc_w[MAX_WORKERS];
static int rpc_servers;

/* a: the endpoint; b: the first of its receive window's slots. */
static void rpc_serve(struct worker *w)
{
    keel_word_t res[KEEL_MSG_WORDS] = { 0 };
    unsigned long done = 0;
    struct keel_msg m;

    while (done < RPC_CLIENTS) {
        long e = keel_recv(w->a, 0, w->b, &m);
        if (e || !(m.info & KEEL_INFO_REPLY)) {
            WFAIL(w, e, m.info);
            break;
        }
        if (m.label == KEEL_LABEL_USER + LABEL_DONE)
            done++;
        else
            w->count++;
        res[0] = m.w[0] + 1;
        res[1] = m.badge;
        if ((e = keel_reply(w->b, 0, res))) {
            WFAIL(w, e, m.w[0]);
            break;
        }
    }
}

/* a: the server's endpoint, minted with this client's badge (its id + 1). */
static void rpc_call(struct worker *w)
{
    keel_word_t in[KEEL_MSG_WORDS] = { 0 }, out[KEEL_MSG_WORDS];
    unsigned long n = 0;

    while (!stopped()) {
        in[0] = n;
        long e = keel_call(w->a, KEEL_LABEL_USER + LABEL_DATA, in, out);
        if (e || out[0] != n + 1 || out[1] != (keel_word_t)w->id + 1) {
            WFAIL(w, e ? (unsigned long)e : out[0], n + 1);
            break;
        }
        w->count = ++n;
    }
    in[0] = n;
    long e = keel_call(w->a, KEEL_LABEL_USER + LABEL_DONE, in, out);
    if (e || out[0] != n + 1)
        WFAIL(w, e, n);
}

static void rpc_setup(unsigned long servers)
{
    rpc_servers = (int)servers;
    for (int i = 0; i < rpc_servers; i++) {
        keel_word_t ep = new_obj(KEEL_OBJ_ENDPOINT, 0), win = slot_alloc();
        for (int j = 0; j < KEEL_MSG_CAPS; j++)
            slot_alloc();
        struct worker *srv = w_spawn(rpc_serve, pin_local ? i : 3 * i, 0);
        srv->a = ep;
        srv->b = win;
        rpc_w[i * (RPC_CLIENTS + 1)] = srv;
        for (int c = 0; c < RPC_CLIENTS; c++) {
            struct worker *cl = w_spawn(rpc_call, pin_local ? i : 3 * i + 1 + c, 0);
            cl->a = slot_alloc();
            setup_check(keel_cnode_mint(CN, cl->a, CN, ep, KEEL_RIGHT_WRITE,
                                        (keel_word_t)cl->id + 1), "mint");
            rpc_w[i * (RPC_CLIENTS + 1) + 1 + c] = cl;
        }
    }
}

static unsigned long rpc_progress(void)
{
    unsigned long n = 0;

    for (int i = 0; i < rpc_servers; i++)
        n += rpc_w[i * (RPC_CLIENTS + 1)]->count;
    return n;
}

static int rpc_check(unsigned long ms)
{
    unsigned long calls = 0, served = 0;
    int bad = 0;

    for (int i = 0; i < rpc_servers * (RPC_CLIENTS + 1); i++) {
        struct worker *w = rpc_w[i];
        if (w->fail) {
            printf("stress: rpc FAILED: %s %d check at line %ld (%lu vs %lu)\n",
                   i % (RPC_CLIENTS + 1) ? "client" : "server", i, w->fail, w->fail_a, w->fail_b);
            bad = 1;
        }
        if (i % (RPC_CLIENTS + 1))
            calls += w->count;
        else
            served += w->count;
    }
    if (calls != served) {
        printf("stress: rpc FAILED: %lu calls answered, %lu served\n", calls, served);
        bad = 1;
    }
    if (!bad)
        printf("stress: rpc ok %d servers, %d clients each, %lu calls = %lu served, %lu per s, "
               "every reply to its caller\n",
               rpc_servers, RPC_CLIENTS, calls, served, calls * 1000 / (ms ? ms : 1));
    return bad;
}

/* -- message storm into a full queue ---------------------------------------- */

static struct worker *storm_rx, *storm_tx[STORM_SENDERS];

/* a: the endpoint minted with this sender's badge. */
static void storm_send(struct worker *w)
{
    unsigned long n = 0, full = 0;
    long e;

    while (!stopped()) {
        e = ep_send(w->a, LABEL_DATA, n, 0, 0, 0);
        if (e == KEEL_E_FULL) {
            full++;
            keel_yield();
            continue;
        }
        if (inject && w == storm_tx[0] && n == 10)
            n++; /* keel.inject=1: lose a message, to prove the check */
        if (e) {
            WFAIL(w, e, n);
            break;
        }
        w->count = ++n;
    }
    w->count2 = full;
    while ((e = ep_send(w->a, LABEL_DONE, n, 0, 0, 0)) == KEEL_E_FULL)
        keel_yield();
    if (e)
        WFAIL(w, e, n);
}

/* a: the endpoint; n: how many senders. */
static void storm_recv(struct worker *w)
{
    unsigned long next[STORM_SENDERS] = { 0 }, done = 0, total = 0;
    keel_word_t badge, l, w0;

    while (done < w->n) {
        long e = ep_recv(w->a, 0, &badge, &l, &w0, 0, 0, 0);
        if (e || badge < 1 || badge > w->n) {
            WFAIL(w, e, badge);
            break;
        }
        unsigned long s = badge - 1;
        if (l == LABEL_DONE) {
            if (w0 != next[s])
                WFAIL(w, w0, next[s]);
            done++;
            continue;
        }
        if (l != LABEL_DATA || w0 != next[s]) {
            WFAIL(w, w0, next[s]); /* lost or duplicated: noted, and on */
            next[s] = w0;
        }
        next[s]++;
        w->count = ++total;
        if (!(total & 7))
            pause_loop(200); /* a slow consumer: the queue fills */
    }
}

static void storm_setup(void)
{
    keel_word_t ep = new_obj(KEEL_OBJ_ENDPOINT, 0);

    storm_rx = w_spawn(storm_recv, 0, 0);
    storm_rx->a = ep;
    storm_rx->n = STORM_SENDERS;
    for (int i = 0; i < STORM_SENDERS; i++) {
        keel_word_t m = slot_alloc();
        setup_check(keel_cnode_mint(CN, m, CN, ep, KEEL_RIGHT_WRITE, (keel_word_t)i + 1), "mint");
        storm_tx[i] = w_spawn(storm_send, i + 1, 0);
        storm_tx[i]->a = m;
    }
}

static unsigned long storm_progress(void)
{
    return storm_rx->count;
}

static int storm_check(void)
{
    unsigned long sent = 0, full = 0;
    int bad = 0;

    if (storm_rx->fail) {
        printf("stress: storm FAILED: receiver check at line %ld (%lu vs %lu)\n", storm_rx->fail,
               storm_rx->fail_a, storm_rx->fail_b);
        bad = 1;
    }
    for (int i = 0; i < STORM_SENDERS; i++) {
        if (storm_tx[i]->fail) {
            printf("stress: storm FAILED: sender %d check at line %ld (%lu vs %lu)\n", i,
                   storm_tx[i]->fail, storm_tx[i]->fail_a, storm_tx[i]->fail_b);
            bad = 1;
        }
        sent += storm_tx[i]->count;
        full += storm_tx[i]->count2;
    }
    if (sent != storm_rx->count) {
        printf("stress: storm FAILED: %lu sent, %lu received\n", sent, storm_rx->count);
        bad = 1;
    }
    if (!bad)
        printf("stress: storm ok %d senders, %lu sent = %lu received in order, %lu sends refused "
               "by a full queue\n",
               STORM_SENDERS, sent, storm_rx->count, full);
    return bad;
}

/* -- capability storms ------------------------------------------------------------ */

static keel_word_t caps_shared; /* an endpoint every storm thread copies; revoked now and then */
static struct worker *caps_w[MAX_WORKERS];
static int caps_n;

/* a: this thread's untyped (2^18); b: the table its slots are in; c: the
 * first of its CAP_SLOTS slots there; d: caps_shared's table (CN). */
static void caps_storm(struct worker *w)
{
    static const keel_word_t kinds[] = { KEEL_OBJ_ENDPOINT, KEEL_OBJ_NOTIFICATION,
                                         KEEL_OBJ_FRAME, KEEL_OBJ_UNTYPED };
    keel_word_t tbl = w->b, base = w->c, type, rights, badge;
    keel_word_t made[8];
    long e;

    while (!stopped() && !w->fail) {
        unsigned k = 1 + (unsigned)(rnd(&w->rng) % 8);
        for (unsigned j = 0; j < k; j++) {
            made[j] = kinds[rnd(&w->rng) % 4];
            e = keel_untyped_retype(w->a, made[j], made[j] == KEEL_OBJ_UNTYPED ? 12 : 0, tbl,
                                    base + j, 1);
            if (e)
                WFAIL(w, e, j);
        }
        for (unsigned j = 0; j < k; j++) {
            keel_word_t r = 1 + rnd(&w->rng) % KEEL_RIGHT_ALL, copy = base + 8 + j;
            int mint = made[j] == KEEL_OBJ_ENDPOINT || made[j] == KEEL_OBJ_NOTIFICATION;
            keel_word_t want_badge = mint ? ((unsigned long)w->id << 16 | j) + 1 : 0;
            if (made[j] == KEEL_OBJ_UNTYPED)
                continue; /* untyped capabilities are not copied */
            e = mint ? keel_cnode_mint(tbl, copy, tbl, base + j, r, want_badge)
                     : keel_cnode_copy(tbl, copy, tbl, base + j, r);
            if (e)
                WFAIL(w, e, j);
            e = keel_cnode_identify(tbl, copy, &type, &rights, &badge);
            if (e || type != made[j] || rights != r || badge != want_badge)
                WFAIL(w, type, made[j]);
            w->count2++;
        }
        /* The shared endpoint: a copy may vanish at any time (main revokes). */
        if (!keel_cnode_copy(tbl, base + 24, w->d, caps_shared, KEEL_RIGHT_READ))
            w->count3++;
        /* Revoke half the originals: their copies must go with them. */
        for (unsigned j = 0; j < k; j++) {
            if (rnd(&w->rng) & 1)
                continue;
            if ((e = keel_cnode_revoke(tbl, base + j)))
                WFAIL(w, e, j);
            if (keel_cnode_identify(tbl, base + 8 + j, &type, 0, 0) || type)
                WFAIL(w, type, j);
        }
        /* Everything else goes with the untyped; then all of it is free. */
        if ((e = keel_cnode_revoke(CN, w->a)))
            WFAIL(w, e, 0);
        for (unsigned j = 0; j < 16; j++) {
            if (keel_cnode_identify(tbl, base + j, &type, 0, 0) || type)
                WFAIL(w, type, j);
        }
        if ((e = keel_untyped_retype(w->a, KEEL_OBJ_UNTYPED, 18, tbl, base, 1)))
            WFAIL(w, e, 16); /* memory not returned */
        keel_cnode_delete(tbl, base);
        keel_cnode_delete(tbl, base + 24);
        w->count += k;
    }
}

static void caps_setup(void)
{
    caps_shared = new_obj(KEEL_OBJ_ENDPOINT, 0);
    caps_n = (int)(ncpus < 2 ? 2 : ncpus);
    for (int i = 0; i < caps_n; i++) {
        struct worker *w = w_spawn(caps_storm, pin_local ? i : -1, 0);
        w->a = new_obj(KEEL_OBJ_UNTYPED, 18); /* room for 8 endpoints of 16 KiB */
        w->d = CN;
        if (pin_local) {
            w->b = new_obj(KEEL_OBJ_CNODE, 6);
            w->c = 1;
        } else {
            w->b = CN;
            w->c = slot_alloc();
            for (int j = 1; j < CAP_SLOTS; j++)
                slot_alloc();
        }
        caps_w[i] = w;
    }
}

static unsigned long caps_progress(void)
{
    unsigned long n = 0;

    for (int i = 0; i < caps_n; i++)
        n += caps_w[i]->count;
    return n;
}

static int caps_check(unsigned long ms)
{
    unsigned long made = 0, copies = 0, shared = 0;
    keel_word_t type;
    int bad = 0;

    keel_cnode_revoke(CN, caps_shared);
    for (int i = 0; i < caps_n; i++) {
        struct worker *w = caps_w[i];
        if (w->fail) {
            printf("stress: caps FAILED: thread %d check at line %ld (%lu vs %lu)\n", i, w->fail,
                   w->fail_a, w->fail_b);
            bad = 1;
        }
        for (unsigned j = 0; j < CAP_SLOTS; j++) {
            if (keel_cnode_identify(w->b, w->c + j, &type, 0, 0) || type) {
                printf("stress: caps FAILED: thread %d slot %u still holds type %lu\n", i, j,
                       type);
                bad = 1;
            }
        }
        made += w->count;
        copies += w->count2;
        shared += w->count3;
    }
    if (!bad)
        printf("stress: caps ok %d threads (%s), %lu objects made and freed (%lu per s), %lu "
               "copies checked, %lu copies of a shared capability, every slot empty\n",
               caps_n, pin_local ? "own tables" : "shared table", made,
               made * 1000 / (ms ? ms : 1), copies, shared);
    return bad;
}

/* -- map/unmap with concurrent access ---------------------------------------------- */

static keel_word_t map_copy[MAP_PAGES]; /* mapped at MAP_VA, unmapped and remapped */
static keel_word_t map_fault_ep;
static struct worker *map_handler, *map_mapper, *map_acc[MAX_WORKERS];
static int map_nacc;

static volatile unsigned long *map_word(unsigned long base, unsigned i)
{
    return (volatile unsigned long *)(base + i * KEEL_PAGE_SIZE);
}

static void map_access(struct worker *w)
{
    while (!stopped()) {
        unsigned i = (unsigned)(rnd(&w->rng) % MAP_PAGES);
        __atomic_fetch_add(map_word(MAP_VA, i), 1, __ATOMIC_RELAXED);
        if (!(++w->count & 1023))
            keel_yield(); /* share the CPU with the message workloads */
    }
}

static void map_unmap_loop(struct worker *w)
{
    long e;

    while (!stopped()) {
        unsigned i = (unsigned)(rnd(&w->rng) % MAP_PAGES);
        if ((e = keel_frame_unmap(map_copy[i]))) {
            WFAIL(w, e, i);
            break;
        }
        /* From here no CPU may write through the old mapping. */
        unsigned long v1 = *map_word(ALIAS_VA, i);
        pause_loop(2000);
        unsigned long v2 = *map_word(ALIAS_VA, i);
        if (v1 != v2)
            WFAIL(w, v1, v2); /* a stale TLB entry was written through */
        e = keel_frame_map(map_copy[i], VS, MAP_VA + i * KEEL_PAGE_SIZE,
                           KEEL_RIGHT_READ | KEEL_RIGHT_WRITE);
        if (e) {
            WFAIL(w, e, i);
            break;
        }
        w->count++;
    }
}

/* Resumes accessors that touched an unmapped page. */
static void map_fault_handler(struct worker *w)
{
    keel_word_t badge, l, vec, addr;

    for (;;) {
        long e = ep_recv(w->a, 0, &badge, &l, &vec, &addr, 0, 0);
        if (e) {
            WFAIL(w, e, 0);
            break;
        }
        if (l == LABEL_QUIT)
            break;
        if (l != KEEL_LABEL_FAULT || vec != 14 || addr < MAP_VA ||
            addr >= MAP_VA + MAP_PAGES * KEEL_PAGE_SIZE || badge < 1 ||
            badge > (keel_word_t)map_nacc) {
            WFAIL(w, vec, addr);
            break;
        }
        w->count++;
        if ((e = keel_tcb_resume(map_acc[badge - 1]->tcb)))
            WFAIL(w, e, badge);
    }
}

static void map_setup(void)
{
    keel_word_t rw = KEEL_RIGHT_READ | KEEL_RIGHT_WRITE;

    setup_check(keel_pt_map(make_obj(KEEL_OBJ_PT, 0), VS, MAP_VA), "pt map");
    setup_check(keel_pt_map(make_obj(KEEL_OBJ_PT, 0), VS, ALIAS_VA), "pt map");
    for (unsigned i = 0; i < MAP_PAGES; i++) {
        keel_word_t f = new_obj(KEEL_OBJ_FRAME, 0);
        setup_check(keel_frame_map(f, VS, ALIAS_VA + i * KEEL_PAGE_SIZE, rw), "alias map");
        map_copy[i] = slot_alloc();
        setup_check(keel_cnode_copy(CN, map_copy[i], CN, f, KEEL_RIGHT_ALL), "copy");
        setup_check(keel_frame_map(map_copy[i], VS, MAP_VA + i * KEEL_PAGE_SIZE, rw), "map");
    }
    map_fault_ep = new_obj(KEEL_OBJ_ENDPOINT, 0);
    map_handler = w_spawn(map_fault_handler, -1, 0);
    map_handler->a = map_fault_ep;
    map_mapper = w_spawn(map_unmap_loop, 0, 0);
    map_nacc = (int)(ncpus < 2 ? 2 : ncpus);
    for (int i = 0; i < map_nacc; i++) {
        keel_word_t fe = slot_alloc();
        setup_check(keel_cnode_mint(CN, fe, CN, map_fault_ep, KEEL_RIGHT_WRITE,
                                    (keel_word_t)i + 1),
                    "mint");
        map_acc[i] = w_spawn(map_access, i + 1, fe);
    }
}

static unsigned long map_progress(void)
{
    return map_mapper->count;
}

static int map_check(void)
{
    unsigned long writes = 0, seen = 0;
    int bad = 0;

    for (unsigned i = 0; i < MAP_PAGES; i++)
        seen += *map_word(ALIAS_VA, i);
    for (int i = 0; i < map_nacc; i++)
        writes += map_acc[i]->count;
    if (map_mapper->fail) {
        printf("stress: map FAILED: mapper check at line %ld (%lu vs %lu)%s\n", map_mapper->fail,
               map_mapper->fail_a, map_mapper->fail_b,
               map_mapper->fail_a != map_mapper->fail_b ? "" : "");
        bad = 1;
    }
    if (map_handler->fail) {
        printf("stress: map FAILED: fault handler check at line %ld (%lu, 0x%lx)\n",
               map_handler->fail, map_handler->fail_a, map_handler->fail_b);
        bad = 1;
    }
    if (writes != seen) {
        printf("stress: map FAILED: %lu increments made, %lu found in memory\n", writes, seen);
        bad = 1;
    }
    if (!bad)
        printf("stress: map ok %lu unmap/map cycles with shootdowns, %lu faults served, %lu "
               "increments = %lu in memory, no write through a stale TLB entry\n",
               map_mapper->count, map_handler->count, writes, seen);
    return bad;
}

/* -- thread churn and migration ------------------------------------------------ */

struct churn {
    keel_word_t tcb, ep;
    unsigned long seq, mode, rng;
    volatile unsigned long spins;
};

static __attribute__((noreturn)) void churn_body(struct churn *c)
{
    if (c->mode) {
        for (;;)
            c->spins++; /* until deleted */
    }
    for (int k = 0; k < 3; k++) { /* migrate itself around */
        keel_tcb_set_affinity(c->tcb, rnd(&c->rng) % ncpus);
        c->spins++;
    }
    keel_tcb_set_affinity(c->tcb, (keel_word_t)-1);
    ep_send(c->ep, LABEL_DATA, c->seq, 0, 0, 0);
    for (;;)
        keel_tcb_suspend(c->tcb);
}

static struct worker *churn_w[MAX_WORKERS];
static struct churn churn_arg[MAX_WORKERS];
static int churn_n;

/* a: an untyped of exactly one TCB; b: slot for the thread; c: endpoint
 * for its report; n: its stack top.  count: threads made and destroyed;
 * count2: killed while running; count3: migrations. */
static void churn_loop(struct worker *w)
{
    struct churn *c = &churn_arg[w->id];
    keel_word_t l, w0;
    long e;

    while (!stopped() && !w->fail) {
        if ((e = keel_untyped_retype(w->a, KEEL_OBJ_TCB, 0, CN, w->b, 1))) {
            WFAIL(w, e, 0); /* the last thread's memory did not come back */
            break;
        }
        c->tcb = w->b;
        c->ep = w->c;
        c->seq++;
        c->mode = rnd(&w->rng) % 3 == 0;
        c->rng = rnd(&w->rng) | 1;
        c->spins = 0;
        long cpu = (long)(rnd(&w->rng) % (ncpus + 1)) - 1;
        if ((e = keel_tcb_configure(w->b, CN, VS, 0)) ||
            (e = keel_tcb_write_regs(w->b, (keel_word_t)churn_body, w->n, (keel_word_t)c)) ||
            (e = keel_tcb_set_affinity(w->b, (keel_word_t)cpu)) || (e = keel_tcb_resume(w->b))) {
            WFAIL(w, e, 1);
            break;
        }
        if (!c->mode) {
            e = ep_recv(w->c, 0, 0, &l, &w0, 0, 0, 0);
            if (e || l != LABEL_DATA || w0 != c->seq)
                WFAIL(w, w0, c->seq);
            w->count3 += 3;
        } else {
            for (long i = 0; i < 100000 && !c->spins; i++)
                keel_yield();
            if (!c->spins)
                WFAIL(w, 0, 2); /* never ran */
        }
        if ((e = keel_cnode_delete(CN, w->b)))
            WFAIL(w, e, 3);
        if (c->mode) {
            /* Deleted while running, maybe on another CPU: it must be
             * stopped everywhere by now. */
            unsigned long v = c->spins;
            pause_loop(3000);
            if (c->spins != v)
                WFAIL(w, v, c->spins);
            w->count2++;
        }
        w->count++;
    }
}

static void churn_setup(void)
{
    churn_n = 2;
    for (int i = 0; i < churn_n; i++) {
        struct worker *w = w_spawn(churn_loop, -1, 0);
        w->a = new_obj(KEEL_OBJ_UNTYPED, KEEL_OBJ_TCB_BITS);
        w->b = slot_alloc();
        w->c = new_obj(KEEL_OBJ_ENDPOINT, 0);
        w->n = new_stack(2);
        churn_w[i] = w;
    }
}

static unsigned long churn_progress(void)
{
    unsigned long n = 0;

    for (int i = 0; i < churn_n; i++)
        n += churn_w[i]->count;
    return n;
}

static int churn_check(void)
{
    unsigned long made = 0, killed = 0, moves = 0;
    int bad = 0;

    for (int i = 0; i < churn_n; i++) {
        struct worker *w = churn_w[i];
        if (w->fail) {
            printf("stress: churn FAILED: churner %d check at line %ld (%lu vs %lu)\n", i,
                   w->fail, w->fail_a, w->fail_b);
            bad = 1;
        }
        made += w->count;
        killed += w->count2;
        moves += w->count3;
    }
    if (!bad)
        printf("stress: churn ok %lu threads made and destroyed (memory reused each time), %lu "
               "deleted while running and stopped at once, %lu self-migrations\n",
               made, killed, moves);
    return bad;
}

/* -- the run ------------------------------------------------------------------------ */

static unsigned long cmd_num(const char *cmdline, const char *key, unsigned long dflt)
{
    char v[24];
    unsigned long n = 0;

    if (!cmdline_get(cmdline, key, v, sizeof(v)) || !v[0])
        return dflt;
    for (const char *p = v; *p >= '0' && *p <= '9'; p++)
        n = n * 10 + (unsigned long)(*p - '0');
    return n;
}

static int selected(const char *list, const char *name)
{
    size_t n = strlen(name);

    for (const char *p = list; *p;) {
        if (!strncmp(p, name, n) && (p[n] == ',' || !p[n]))
            return 1;
        while (*p && *p != ',')
            p++;
        if (*p == ',')
            p++;
    }
    return 0;
}

int stress_run(struct keel_bootinfo *bi)
{
    char list[64] = "ipc,storm,caps,map,churn,rpc", pin[16] = "spread";
    unsigned a, b;
    int failed = 0, total = 0;

    ncpus = bi->ncpus ? bi->ncpus : 1;
    unsigned long duration = cmd_num(bi->cmdline, "keel.duration", 5);
    seed = cmd_num(bi->cmdline, "keel.seed", 1);
    cmdline_get(bi->cmdline, "keel.stress", list, sizeof(list));
    cmdline_get(bi->cmdline, "keel.pin", pin, sizeof(pin));
    pin_local = !strcmp(pin, "local");
    inject = cmd_num(bi->cmdline, "keel.inject", 0);
    unsigned long pairs = cmd_num(bi->cmdline, "keel.pairs", ncpus >= 2 ? ncpus / 2 : 1);
    if (pairs < 1)
        pairs = 1;
    if (pairs > 8)
        pairs = 8;
    /* The TSC rate: from the command line (keel stress passes it), else
     * the hypervisor's timing leaf (where user-mode CPUID reaches it). */
    tsc_khz = cmd_num(bi->cmdline, "keel.tsc_khz", 0);
    cpuid(0x40000000, &a, &b);
    if (!tsc_khz && a >= 0x40000010 && a < 0x40000100) {
        cpuid(0x40000010, &a, &b);
        tsc_khz = a;
    }
    if (!tsc_khz) {
        tsc_khz = 2000000;
        printf("stress: no TSC frequency from the hypervisor; assuming 2 GHz\n");
    }

    suite_setup(bi);
    stress_ut = make_untyped(STRESS_UT_BITS);
    setup_check(keel_pt_map(make_obj(KEEL_OBJ_PT, 0), VS, STACK_VA), "pt map");
    int do_ipc = selected(list, "ipc"), do_storm = selected(list, "storm");
    int do_caps = selected(list, "caps"), do_map = selected(list, "map");
    int do_churn = selected(list, "churn"), do_rpc = selected(list, "rpc");
    if (do_ipc)
        ipc_setup(pairs);
    if (do_rpc)
        rpc_setup(pairs);
    if (do_storm)
        storm_setup();
    if (do_caps)
        caps_setup();
    if (do_map)
        map_setup();
    if (do_churn)
        churn_setup();
    printf("stress: seed %lu, %lu s on %lu cpus, workloads %s, %d threads\n", seed, duration,
           ncpus, list, nworkers);

    tick_ntfn = new_obj(KEEL_OBJ_NOTIFICATION, 0);
    /* Above every worker: woken, it preempts whoever runs on its CPU. */
    setup_check(keel_tcb_set_priority(KEEL_SLOT_TCB, 200), "set_priority");
    unsigned long t0 = now_ms(), shown = 0;
    next_tick_ms = t0 + 1000;
    end_ms = t0 + duration * 1000;
    for (int i = 0; i < nworkers; i++)
        setup_check(keel_tcb_resume(workers[i].tcb), "resume");
    while (!stopped()) {
        keel_notification_wait(tick_ntfn, 0);
        unsigned long t = now_ms();
        if (t - t0 >= (shown + 1) * 1000 && !stop) {
            shown = (t - t0) / 1000;
            char line[160];
            int n = snprintf(line, sizeof(line), "stress: progress %lus", shown);
            if (do_ipc)
                n += snprintf(line + n, sizeof(line) - (size_t)n, " ipc %lu", ipc_progress());
            if (do_storm)
                n += snprintf(line + n, sizeof(line) - (size_t)n, " storm %lu", storm_progress());
            if (do_caps)
                n += snprintf(line + n, sizeof(line) - (size_t)n, " caps %lu", caps_progress());
            if (do_map)
                n += snprintf(line + n, sizeof(line) - (size_t)n, " map %lu", map_progress());
            if (do_churn)
                n += snprintf(line + n, sizeof(line) - (size_t)n, " churn %lu", churn_progress());
            if (do_rpc)
                n += snprintf(line + n, sizeof(line) - (size_t)n, " rpc %lu", rpc_progress());
            printf("%s\n", line);
            if (do_caps) /* every copy of the shared capability vanishes at once */
                keel_cnode_revoke(CN, caps_shared);
        }
    }
    /* From here on it polls: back among the workers. */
    keel_tcb_set_priority(KEEL_SLOT_TCB, 128);
    unsigned long ran_ms = now_ms() - t0;

    /* Wait for every worker; the map fault handler last. */
    unsigned long deadline = now_ms() + GRACE_SECONDS * 1000ul;
    int hung = 0;
    for (int i = 0; i < nworkers; i++) {
        struct worker *w = &workers[i];
        if (do_map && w == map_handler)
            continue;
        while (!w->done && now_ms() < deadline) {
            pause_loop(2000);
            keel_yield();
        }
        if (!w->done) {
            printf("stress: worker %d did not finish (hang?)\n", i);
            hung = 1;
        }
    }
    if (do_map) {
        ep_send(map_fault_ep, LABEL_QUIT, 0, 0, 0, 0);
        while (!map_handler->done && now_ms() < deadline)
            keel_yield();
        if (!map_handler->done) {
            printf("stress: map fault handler did not finish (hang?)\n");
            hung = 1;
        }
    }
    if (do_ipc) {
        total++;
        failed += ipc_check(ran_ms);
    }
    if (do_storm) {
        total++;
        failed += storm_check();
    }
    if (do_caps) {
        total++;
        failed += caps_check(ran_ms);
    }
    if (do_map) {
        total++;
        failed += map_check();
    }
    if (do_churn) {
        total++;
        failed += churn_check();
    }
    if (do_rpc) {
        total++;
        failed += rpc_check(ran_ms);
    }
    if (hung) {
        total++;
        failed++;
        printf("stress: finish FAILED: some workers never finished\n");
    }

    /* Every object came from stress_ut: revoking it destroys them all, and
     * then all of it can be retyped again. */
    total++;
    keel_word_t again = slot_alloc();
    long e = keel_cnode_revoke(CN, stress_ut);
    if (!e)
        e = keel_untyped_retype(stress_ut, KEEL_OBJ_UNTYPED, STRESS_UT_BITS, CN, again, 1);
    if (e) {
        printf("stress: memory FAILED: the %u KiB region could not be retyped again (%ld)\n",
               1u << (STRESS_UT_BITS - 10), e);
        failed++;
    } else {
        printf("stress: memory ok every object revoked, the whole %u KiB region retyped again\n",
               1u << (STRESS_UT_BITS - 10));
        keel_cnode_delete(CN, again);
    }
    printf("stress: summary %d workloads, %d failed\n", total, failed);
    return failed != 0;
}
