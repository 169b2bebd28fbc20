/* Stress workloads of messaging: IPC ping-pong, calls and replies across
 * CPUs, a message storm into a full queue (stress.c runs them). */
#include "stress.h"

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

void ipc_setup(unsigned long pairs)
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

unsigned long ipc_progress(void)
{
    unsigned long n = 0;

    for (int i = 0; i < ipc_pairs; i++)
        n += ipc_w[2 * i]->count;
    return n;
}

int ipc_check(unsigned long secs_ms)
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

/* a: the endpoint; b: the first of its receive window's slots; c: a slot
 * every other reply capability is moved to and answered from, as a device
 * server keeps a request to answer later (the move runs shared, grace.c). */
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
        keel_word_t from = w->b;
        if (w->count & 1) {
            if ((e = keel_cnode_move(CN, w->c, CN, w->b))) {
                WFAIL(w, e, w->count);
                break;
            }
            from = w->c;
        }
        if ((e = keel_reply(from, 0, res))) {
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

void rpc_setup(unsigned long servers)
{
    rpc_servers = (int)servers;
    for (int i = 0; i < rpc_servers; i++) {
        keel_word_t ep = new_obj(KEEL_OBJ_ENDPOINT, 0), win = slot_alloc();
        for (int j = 0; j < KEEL_MSG_CAPS; j++)
            slot_alloc();
        struct worker *srv = w_spawn(rpc_serve, pin_local ? i : 3 * i, 0);
        srv->a = ep;
        srv->b = win;
        srv->c = slot_alloc();
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

unsigned long rpc_progress(void)
{
    unsigned long n = 0;

    for (int i = 0; i < rpc_servers; i++)
        n += rpc_w[i * (RPC_CLIENTS + 1)]->count;
    return n;
}

int rpc_check(unsigned long ms)
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

void storm_setup(void)
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

unsigned long storm_progress(void)
{
    return storm_rx->count;
}

int storm_check(void)
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

