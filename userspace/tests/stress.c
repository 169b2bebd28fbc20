/* keel.test=stress: SMP stress workloads with invariant checks.
 *
 * Command line: keel.duration=SECONDS (default 5), keel.seed=N (default 1),
 * keel.stress=ipc,storm,caps,map,churn,rpc,revoke (default: all; also calls,
 * kernel calls on nothing shared, stress_mem.c), keel.pairs=N
 * (IPC pairs and RPC servers, default one per two CPUs),
 * keel.pin=spread|local (spread: each IPC pair across two CPUs, each RPC
 * server and its two clients on three, and the capability storms on the
 * shared root table; local: each pair on one CPU, each storm thread on its
 * own CPU with its own table - the scaling benchmark's set-up).
 *
 * Every workload runs as threads in the test program's address space, made from one
 * untyped region; when time is up the main thread stops them, checks each
 * workload's invariants and prints "stress: NAME ok ..." or
 * "stress: NAME FAILED ...", then revokes the region and retypes all of it
 * again to prove every object's memory came back, and ends with
 * "stress: summary N workloads, M failed".  Progress is printed about every
 * second. */
#include "stress.h"

static void cpuid(unsigned leaf, unsigned *a, unsigned *b)
{
    unsigned c = 0, d;

    __asm__ volatile("cpuid" : "=a"(*a), "=b"(*b), "+c"(c), "=d"(d) : "a"(leaf));
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
    char list[64] = "ipc,storm,caps,map,churn,rpc,revoke", pin[16] = "spread";
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
    int do_revoke = selected(list, "revoke"), do_calls = selected(list, "calls");
    if (do_ipc)
        ipc_setup(pairs);
    if (do_rpc)
        rpc_setup(pairs);
    if (do_storm)
        storm_setup();
    if (do_calls)
        calls_setup();
    if (do_caps)
        caps_setup();
    if (do_map)
        map_setup();
    if (do_churn)
        churn_setup();
    if (do_revoke)
        revoke_setup();
    printf("stress: seed %lu, %lu s on %lu cpus, workloads %s, %d threads\n", seed, duration,
           ncpus, list, nworkers);

    tick_ntfn = new_obj(KEEL_OBJ_NOTIFICATION, 0);
    /* Above every worker: woken, it preempts whoever runs on its CPU. */
    setup_check(keel_tcb_set_priority(KEEL_SLOT_TCB, 200, KEEL_SLOT_TCB), "set_priority");
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
            if (do_calls)
                n += snprintf(line + n, sizeof(line) - (size_t)n, " calls %lu", calls_progress());
            if (do_map)
                n += snprintf(line + n, sizeof(line) - (size_t)n, " map %lu", map_progress());
            if (do_churn)
                n += snprintf(line + n, sizeof(line) - (size_t)n, " churn %lu", churn_progress());
            if (do_rpc)
                n += snprintf(line + n, sizeof(line) - (size_t)n, " rpc %lu", rpc_progress());
            if (do_revoke)
                n += snprintf(line + n, sizeof(line) - (size_t)n, " revoke %lu",
                              revoke_progress());
            printf("%s\n", line);
            if (do_caps) /* every copy of the shared capability vanishes at once */
                keel_cnode_revoke(CN, caps_shared);
        }
    }
    /* From here on it polls: back among the workers. */
    keel_tcb_set_priority(KEEL_SLOT_TCB, 128, KEEL_SLOT_TCB);
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
    if (do_calls) {
        total++;
        failed += calls_check(ran_ms);
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
    if (do_revoke) {
        total++;
        failed += revoke_check();
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

