/* Stress workloads of capabilities and memory: capability storms,
 * map/unmap under concurrent access, thread churn and migration (stress.c
 * runs them). */
#include "stress.h"

/* -- capability storms ------------------------------------------------------------ */

keel_word_t caps_shared; /* an endpoint every storm thread copies; revoked now and then */
static struct worker *caps_w[MAX_WORKERS];
static int caps_n;

/* Where a storm round's time goes (user-mode rdtsc around each call, which
 * is native and costs next to nothing beside a kernel call): cycles and
 * calls per phase, per thread; printed by caps_check. */
enum caps_phase { CP_RETYPE, CP_DERIVE, CP_IDENTIFY, CP_SHARED_COPY, CP_REVOKE_COPY,
                  CP_REVOKE_REGION, CP_RETYPE_REGION, CP_DELETE, CP_N };
static const char *const caps_phase_names[CP_N] = {
    "retype", "copy/mint", "identify", "shared copy", "revoke original",
    "revoke region", "retype region", "delete",
};
static unsigned long caps_cycles[MAX_WORKERS][CP_N], caps_calls[MAX_WORKERS][CP_N];

static inline void caps_time(struct worker *w, enum caps_phase p, unsigned long t0)
{
    caps_cycles[w->id][p] += rdtsc() - t0;
    caps_calls[w->id][p]++;
}

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
        unsigned long t0;
        for (unsigned j = 0; j < k; j++) {
            made[j] = kinds[rnd(&w->rng) % 4];
            t0 = rdtsc();
            e = keel_untyped_retype(w->a, made[j], made[j] == KEEL_OBJ_UNTYPED ? 12 : 0, tbl,
                                    base + j, 1);
            caps_time(w, CP_RETYPE, t0);
            if (e)
                WFAIL(w, e, j);
        }
        for (unsigned j = 0; j < k; j++) {
            keel_word_t r = 1 + rnd(&w->rng) % KEEL_RIGHT_ALL, copy = base + 8 + j;
            int mint = made[j] == KEEL_OBJ_ENDPOINT || made[j] == KEEL_OBJ_NOTIFICATION;
            keel_word_t want_badge = mint ? ((unsigned long)w->id << 16 | j) + 1 : 0;
            if (made[j] == KEEL_OBJ_UNTYPED)
                continue; /* untyped capabilities are not copied */
            t0 = rdtsc();
            e = mint ? keel_cnode_mint(tbl, copy, tbl, base + j, r, want_badge)
                     : keel_cnode_copy(tbl, copy, tbl, base + j, r);
            caps_time(w, CP_DERIVE, t0);
            if (e)
                WFAIL(w, e, j);
            t0 = rdtsc();
            e = keel_cnode_identify(tbl, copy, &type, &rights, &badge);
            caps_time(w, CP_IDENTIFY, t0);
            if (e || type != made[j] || rights != r || badge != want_badge)
                WFAIL(w, type, made[j]);
            w->count2++;
        }
        /* The shared endpoint: a copy may vanish at any time (main revokes). */
        t0 = rdtsc();
        if (!keel_cnode_copy(tbl, base + 24, w->d, caps_shared, KEEL_RIGHT_READ))
            w->count3++;
        caps_time(w, CP_SHARED_COPY, t0);
        /* Revoke half the originals: their copies must go with them. */
        for (unsigned j = 0; j < k; j++) {
            if (rnd(&w->rng) & 1)
                continue;
            t0 = rdtsc();
            e = keel_cnode_revoke(tbl, base + j);
            caps_time(w, CP_REVOKE_COPY, t0);
            if (e)
                WFAIL(w, e, j);
            if (keel_cnode_identify(tbl, base + 8 + j, &type, 0, 0) || type)
                WFAIL(w, type, j);
        }
        /* Everything else goes with the untyped; then all of it is free. */
        t0 = rdtsc();
        e = keel_cnode_revoke(CN, w->a);
        caps_time(w, CP_REVOKE_REGION, t0);
        if (e)
            WFAIL(w, e, 0);
        for (unsigned j = 0; j < 16; j++) {
            if (keel_cnode_identify(tbl, base + j, &type, 0, 0) || type)
                WFAIL(w, type, j);
        }
        t0 = rdtsc();
        e = keel_untyped_retype(w->a, KEEL_OBJ_UNTYPED, 18, tbl, base, 1);
        caps_time(w, CP_RETYPE_REGION, t0);
        if (e)
            WFAIL(w, e, 16); /* memory not returned */
        t0 = rdtsc();
        keel_cnode_delete(tbl, base);
        keel_cnode_delete(tbl, base + 24);
        caps_time(w, CP_DELETE, t0);
        caps_calls[w->id][CP_DELETE]++;
        w->count += k;
    }
}

void caps_setup(void)
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

unsigned long caps_progress(void)
{
    return workers_count(caps_w, caps_n);
}

int caps_check(unsigned long ms)
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
    for (int p = 0; p < CP_N; p++) {
        unsigned long cyc = 0, calls = 0;
        for (int i = 0; i < caps_n; i++) {
            cyc += caps_cycles[caps_w[i]->id][p];
            calls += caps_calls[caps_w[i]->id][p];
        }
        printf("stress: caps time %s: %lu calls, %lu us each, %lu ms in all\n",
               caps_phase_names[p], calls, calls ? cyc * 1000 / tsc_khz / calls : 0,
               cyc / tsc_khz);
    }
    if (!bad)
        printf("stress: caps ok %d threads (%s), %lu objects made and freed (%lu per s), %lu "
               "copies checked, %lu copies of a shared capability, every slot empty\n",
               caps_n, pin_local ? "own tables" : "shared table", made,
               made * 1000 / (ms ? ms : 1), copies, shared);
    return bad;
}

/* -- kernel calls on nothing shared ------------------------------------------------ */

/* Each thread identifies a capability in a table of its own (keel.pin=local;
 * else the shared root table) over and over: a kernel call per turn that
 * takes no lock but the objects lock shared, so its scaling is the most any
 * kernel-bound workload can get from the host (`scripts/bench --scaling`).
 * Not in the default list. */
static struct worker *calls_w[MAX_WORKERS];
static int calls_n;

static void calls_loop(struct worker *w)
{
    keel_word_t type = 0;

    while (!stopped() && !w->fail) {
        for (int i = 0; i < 64; i++) {
            long e = keel_cnode_identify(w->b, w->c, &type, 0, 0);
            if (e || type != KEEL_OBJ_ENDPOINT)
                WFAIL(w, e, type);
        }
        w->count += 64;
    }
}

void calls_setup(void)
{
    calls_n = (int)ncpus;
    for (int i = 0; i < calls_n; i++) {
        struct worker *w = w_spawn(calls_loop, pin_local ? i : -1, 0);
        w->b = pin_local ? new_obj(KEEL_OBJ_CNODE, 2) : CN;
        w->c = pin_local ? 1 : slot_alloc();
        setup_check(keel_untyped_retype(stress_ut, KEEL_OBJ_ENDPOINT, 0, w->b, w->c, 1),
                    "calls endpoint");
        calls_w[i] = w;
    }
}

unsigned long calls_progress(void)
{
    return workers_count(calls_w, calls_n);
}

int calls_check(unsigned long ms)
{
    unsigned long n = calls_progress();

    for (int i = 0; i < calls_n; i++) {
        struct worker *w = calls_w[i];
        if (w->fail) {
            printf("stress: calls FAILED: thread %d check at line %ld (%lu vs %lu)\n", i, w->fail,
                   w->fail_a, w->fail_b);
            return 1;
        }
    }
    printf("stress: calls ok %d threads (%s), %lu identify calls (%lu per s)\n", calls_n,
           pin_local ? "own tables" : "shared table", n, n * 1000 / (ms ? ms : 1));
    return 0;
}

/* -- map/unmap with concurrent access ---------------------------------------------- */

static keel_word_t map_copy[MAP_PAGES]; /* mapped at MAP_VA, unmapped and remapped */
keel_word_t map_fault_ep;
struct worker *map_handler, *map_mapper, *map_acc[MAX_WORKERS];
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

void map_setup(void)
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

unsigned long map_progress(void)
{
    return map_mapper->count;
}

int map_check(void)
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

void churn_setup(void)
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

unsigned long churn_progress(void)
{
    return workers_count(churn_w, churn_n);
}

int churn_check(void)
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

