/* The revoke-while-in-use workload (stress.c runs it): capabilities revoked,
 * deleted and moved while other CPUs look them up, copy them and send
 * through them.  With the objects lock shared these run under the
 * capability lock and a slot emptied meanwhile is reused only after a
 * grace period (kernel/core/grace.c); this checks what users see of it.
 *
 * A revoker thread, round after round (round r): mints the endpoint with
 * badge r into a slot P, copies P into REV_PUBLIC public slots, lets them
 * be used, revokes P (every copy, and every copy of a copy, goes), deletes
 * P, and checks the public slots are empty - then fills them again at once
 * (slots still in their grace period).  User threads on every CPU pick
 * public slots at random and identify them, send through them, copy them
 * into slots of their own, move those copies and delete them.  A receiver
 * takes every message.
 *
 * Each round also copies a frame into a public slot F and revokes the
 * frame, while the user threads map F (each at its own address) and unmap
 * it: a copy mapped nowhere is revoked with the objects lock shared, one
 * mapped goes exclusive and loses its mapping (kernel/core/grace.c), so
 * after the revoke no user address maps the frame, whichever came first.
 *
 * Invariants: every call returns success or the error its race explains
 * (the capability went: KEEL_E_INVALID_CAP; a full queue); a capability
 * seen is always whole - the endpoint's type, the rights it was given, a
 * badge of a round that began (never a mix of two capabilities, never a
 * reused slot's stranger); every message sent arrives, with such a badge;
 * when time is up every public and private slot is empty. */
#include "stress.h"

#define REV_PUBLIC 8
#define REV_OWN 2
#define REV_RIGHTS (KEEL_RIGHT_READ | KEEL_RIGHT_WRITE)

static keel_word_t rev_ep;                  /* the original: never revoked */
static keel_word_t rev_pub[REV_PUBLIC];     /* copies of P, revoked each round */
static volatile unsigned long rev_round;    /* badge of the current round */
static keel_word_t rev_frame, rev_fpub;     /* a frame, and its copy users map */
static volatile unsigned long rev_maps;     /* maps of rev_fpub that succeeded */
static struct worker *rev_w[MAX_WORKERS], *rev_rx, *rev_revoker;
static int rev_n;

static void revoker(struct worker *w)
{
    keel_word_t p = w->a, type;
    long e;

    while (!stopped() && !w->fail) {
        unsigned long r = rev_round + 1;
        if ((e = keel_cnode_mint(CN, p, CN, rev_ep, REV_RIGHTS, r)))
            WFAIL(w, e, r);
        __atomic_store_n(&rev_round, r, __ATOMIC_RELEASE);
        for (int j = 0; j < REV_PUBLIC; j++) {
            if ((e = keel_cnode_copy(CN, rev_pub[j], CN, p, KEEL_RIGHT_ALL)))
                WFAIL(w, e, j); /* emptied by the last round: free again */
        }
        keel_yield();
        pause_loop(2000);
        if ((e = keel_cnode_revoke(CN, p)) || (e = keel_cnode_delete(CN, p)))
            WFAIL(w, e, r);
        for (int j = 0; j < REV_PUBLIC; j++) {
            if (keel_cnode_identify(CN, rev_pub[j], &type, 0, 0) || type)
                WFAIL(w, type, j); /* a copy outlived the revoke */
        }
        if ((e = keel_cnode_copy(CN, rev_fpub, CN, rev_frame, REV_RIGHTS)))
            WFAIL(w, e, r);
        keel_yield();
        pause_loop(500);
        if ((e = keel_cnode_revoke(CN, rev_frame)))
            WFAIL(w, e, r);
        for (int i = 0; i < rev_n; i++) {
            e = keel_vspace_lookup(VS, REV_VA + (keel_word_t)i * KEEL_PAGE_SIZE, 0, 0);
            if (e != KEEL_E_NOT_MAPPED)
                WFAIL(w, e, i); /* a mapping outlived its capability */
        }
        w->count++;
    }
}

/* A capability seen in a public slot or copied from one: whole. */
static int rev_whole(keel_word_t type, keel_word_t rights, keel_word_t badge, keel_word_t want)
{
    return type == KEEL_OBJ_ENDPOINT && rights == want && badge >= 1 &&
           badge <= __atomic_load_n(&rev_round, __ATOMIC_ACQUIRE);
}

/* a, b: this thread's own slots. */
static void rev_user(struct worker *w)
{
    keel_word_t type, rights, badge;
    long e;

    while (!stopped() && !w->fail) {
        keel_word_t pub = rev_pub[rnd(&w->rng) % REV_PUBLIC];
        switch (rnd(&w->rng) % 5) {
        case 0:
            e = keel_cnode_identify(CN, pub, &type, &rights, &badge);
            if (e || (type && !rev_whole(type, rights, badge, REV_RIGHTS)))
                WFAIL(w, e ? (unsigned long)e : badge, type);
            break;
        case 1:
            e = ep_send(pub, LABEL_DATA, (keel_word_t)w->id, 0, 0, 0);
            if (!e)
                w->count2++;
            else if (e != KEEL_E_INVALID_CAP && e != KEEL_E_FULL)
                WFAIL(w, e, pub);
            break;
        case 2: {
            keel_word_t r = 1 + rnd(&w->rng) % KEEL_RIGHT_ALL;
            e = keel_cnode_copy(CN, w->a, CN, pub, r);
            if (e && e != KEEL_E_INVALID_CAP)
                WFAIL(w, e, pub);
            if (e)
                break;
            /* Revoked with P at any moment: whole, or gone. */
            e = keel_cnode_move(CN, w->b, CN, w->a);
            if (e && e != KEEL_E_INVALID_CAP)
                WFAIL(w, e, w->b);
            e = keel_cnode_identify(CN, w->b, &type, &rights, &badge);
            if (e || (type && !rev_whole(type, rights, badge, REV_RIGHTS & r)))
                WFAIL(w, e ? (unsigned long)e : badge, type);
            if ((e = keel_cnode_delete(CN, w->b)))
                WFAIL(w, e, w->b);
            w->count3++;
            break;
        }
        case 3:
            /* F may be revoked, mapped by another thread, or a new copy. */
            e = keel_frame_map(rev_fpub, VS, w->c, KEEL_RIGHT_READ);
            if (!e)
                __atomic_fetch_add(&rev_maps, 1, __ATOMIC_RELAXED);
            else if (e != KEEL_E_INVALID_CAP && e != KEEL_E_EXISTS)
                WFAIL(w, e, w->c);
            e = keel_frame_unmap(rev_fpub);
            if (e && e != KEEL_E_INVALID_CAP && e != KEEL_E_NOT_MAPPED)
                WFAIL(w, e, w->c);
            break;
        default:
            keel_yield();
        }
        w->count++;
    }
    keel_cnode_delete(CN, w->a);
    keel_cnode_delete(CN, w->b);
    while ((e = ep_send(rev_ep, LABEL_DONE, 0, 0, 0, 0)) == KEEL_E_FULL)
        keel_yield();
    if (e)
        WFAIL(w, e, 0);
}

static void rev_recv(struct worker *w)
{
    keel_word_t badge, l, w0;
    unsigned long done = 0;

    while (done < w->n) {
        long e = ep_recv(rev_ep, 0, &badge, &l, &w0, 0, 0, 0);
        if (e) {
            WFAIL(w, e, 0);
            break;
        }
        if (l == LABEL_DONE && badge == 0) {
            done++;
            continue;
        }
        if (l != LABEL_DATA || badge < 1 || badge > rev_round)
            WFAIL(w, badge, l);
        w->count++;
    }
}

void revoke_setup(void)
{
    rev_ep = new_obj(KEEL_OBJ_ENDPOINT, 0);
    rev_frame = new_obj(KEEL_OBJ_FRAME, 0);
    rev_fpub = slot_alloc();
    setup_check(keel_pt_map(new_obj(KEEL_OBJ_PT, 0), VS, REV_VA), "pt map");
    for (int j = 0; j < REV_PUBLIC; j++)
        rev_pub[j] = slot_alloc();
    rev_n = (int)(ncpus < 2 ? 2 : ncpus);
    rev_rx = w_spawn(rev_recv, 0, 0);
    rev_rx->n = (unsigned long)rev_n;
    rev_revoker = w_spawn(revoker, 1, 0);
    rev_revoker->a = slot_alloc();
    for (int i = 0; i < rev_n; i++) {
        struct worker *w = w_spawn(rev_user, i, 0);
        w->a = slot_alloc();
        w->b = slot_alloc();
        w->c = REV_VA + (keel_word_t)i * KEEL_PAGE_SIZE;
        rev_w[i] = w;
    }
}

unsigned long revoke_progress(void)
{
    return rev_revoker->count;
}

static int rev_failed(const char *who, int i, struct worker *w)
{
    if (!w->fail)
        return 0;
    printf("stress: revoke FAILED: %s %d check at line %ld (%lu vs %lu)\n", who, i, w->fail,
           w->fail_a, w->fail_b);
    return 1;
}

int revoke_check(void)
{
    unsigned long sent = 0, used = 0, copies = 0;
    keel_word_t type;
    int bad = rev_failed("revoker", 0, rev_revoker) | rev_failed("receiver", 0, rev_rx);

    for (int i = 0; i < rev_n; i++) {
        struct worker *w = rev_w[i];
        bad |= rev_failed("user", i, w);
        sent += w->count2;
        used += w->count;
        copies += w->count3;
        keel_word_t own[REV_OWN] = { w->a, w->b };
        for (int j = 0; j < REV_OWN; j++) {
            if (keel_cnode_identify(CN, own[j], &type, 0, 0) || type) {
                printf("stress: revoke FAILED: user %d slot %lu still holds type %lu\n", i,
                       own[j], type);
                bad = 1;
            }
        }
    }
    keel_cnode_revoke(CN, rev_ep);
    for (int j = 0; j < REV_PUBLIC; j++) {
        if (keel_cnode_identify(CN, rev_pub[j], &type, 0, 0) || type) {
            printf("stress: revoke FAILED: public slot %d holds type %lu\n", j, type);
            bad = 1;
        }
    }
    if (keel_cnode_identify(CN, rev_fpub, &type, 0, 0) || type) {
        printf("stress: revoke FAILED: the frame's public copy holds type %lu\n", type);
        bad = 1;
    }
    if (sent != rev_rx->count) {
        printf("stress: revoke FAILED: %lu sent, %lu received\n", sent, rev_rx->count);
        bad = 1;
    }
    if (!bad)
        printf("stress: revoke ok %lu rounds revoked while %d threads used them: %lu uses, "
               "%lu copies moved and deleted, %lu sent = %lu received, %lu maps of a frame "
               "copy revoked, every slot empty\n",
               rev_revoker->count, rev_n, used, copies, sent, rev_rx->count, rev_maps);
    return bad;
}
