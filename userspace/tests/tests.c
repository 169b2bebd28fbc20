/* The in-guest test suite: every kernel call with good and bad arguments.
 * Each test prints "ktest: ok NAME" or "ktest: FAIL NAME: why"; the last
 * line is "ktest: N passed, M failed". */
#include "suite.h"

const char *suite_current;
static struct keel_bootinfo *boot;
struct keel_bootinfo *suite_boot;
static keel_word_t work_ut; /* the untyped the tests allocate from */
keel_word_t suite_untyped;

#define STACKS_VA 0x10000000ul  /* thread stacks, one page table */
#define TEST_VA 0x20000000ul    /* frame tests, one page table */
#define NO_TABLE_VA 0x30000000ul /* no page table here */
#define WAIT_LIMIT 200000

/* Plain messages: user labels (kernel call labels would carry
 * capabilities), four words, nothing transferred. */
long ep_send(keel_word_t ep, keel_word_t label, keel_word_t w0, keel_word_t w1,
                    keel_word_t w2, keel_word_t w3)
{
    return keel_send(ep, KEEL_LABEL_USER + label, w0, w1, w2, w3, 0, 0);
}

long ep_recv(keel_word_t ep, keel_word_t flags, keel_word_t *badge, keel_word_t *label,
                    keel_word_t *w0, keel_word_t *w1, keel_word_t *w2, keel_word_t *w3)
{
    struct keel_msg m;
    long err = keel_recv(ep, flags, 0, &m);

    if (badge)
        *badge = m.badge;
    if (label)
        *label = m.label >= KEEL_LABEL_USER ? m.label - KEEL_LABEL_USER : m.label;
    if (w0)
        *w0 = m.w[0];
    if (w1)
        *w1 = m.w[1];
    if (w2)
        *w2 = m.w[2];
    if (w3)
        *w3 = m.w[3];
    return err;
}

void suite_setup(struct keel_bootinfo *bi)
{
    unsigned long best = 0;

    boot = bi;
    suite_boot = bi;
    for (unsigned long i = 1; i < bi->untyped_count; i++) {
        if (bi->untyped[i].size_bits > bi->untyped[best].size_bits)
            best = i;
    }
    work_ut = KEEL_SLOT_FIRST_UNTYPED + best;
    suite_untyped = work_ut;
    objects_init(bi->first_free, work_ut);
    keel_word_t pt = make_obj(KEEL_OBJ_PT, 0);
    keel_pt_map(pt, VS, STACKS_VA);
    pt = make_obj(KEEL_OBJ_PT, 0);
    keel_pt_map(pt, VS, TEST_VA);
}

/* -- threads -------------------------------------------------------------- */

static keel_word_t stack_next = STACKS_VA;

void thread_start(struct thread *t);
void thread_start(struct thread *t)
{
    t->fn(t);
    t->done = 1;
    for (;;)
        keel_tcb_suspend(t->tcb);
}

long spawn(struct thread *t, void (*fn)(struct thread *), keel_word_t fault_ep)
{
    keel_word_t top;
    long err;

    t->fn = fn;
    t->done = 0;
    t->tcb = make_obj(KEEL_OBJ_TCB, 0);
    stack_next += KEEL_PAGE_SIZE; /* guard page */
    for (int i = 0; i < 4; i++) {
        map_new_frame(stack_next, KEEL_RIGHT_READ | KEEL_RIGHT_WRITE);
        stack_next += KEEL_PAGE_SIZE;
    }
    top = stack_next - 8;
    if ((err = keel_tcb_configure(t->tcb, CN, VS, fault_ep)))
        return err;
    if ((err = keel_tcb_write_regs(t->tcb, (keel_word_t)thread_start, top, (keel_word_t)t)))
        return err;
    return keel_tcb_resume(t->tcb);
}

/* Waits until t is blocked in the kernel (in recv, a call, a wait). */
int wait_blocked(struct thread *t)
{
    keel_word_t state = 0;

    for (long i = 0; i < WAIT_LIMIT; i++) {
        if (keel_tcb_state(t->tcb, &state) == KEEL_E_OK && state == KEEL_THREAD_BLOCKED)
            return 1;
        keel_yield();
    }
    return 0;
}

int wait_done(struct thread *t)
{
    for (long i = 0; i < WAIT_LIMIT && !t->done; i++)
        keel_yield();
    return t->done != 0;
}

/* -- untyped and retype --------------------------------------------------- */

static int t_retype_each_type(void)
{
    static const keel_word_t types[] = { KEEL_OBJ_ENDPOINT, KEEL_OBJ_NOTIFICATION, KEEL_OBJ_TCB,
                                         KEEL_OBJ_FRAME, KEEL_OBJ_PT, KEEL_OBJ_PD,
                                         KEEL_OBJ_PDPT, KEEL_OBJ_VSPACE };
    for (unsigned i = 0; i < sizeof(types) / sizeof(types[0]); i++) {
        keel_word_t s = slot_alloc(), type, rights;
        OK(keel_untyped_retype(work_ut, types[i], 0, CN, s, 1));
        OK(keel_cnode_identify(CN, s, &type, &rights, 0));
        EXPECT(type == types[i] && rights == KEEL_RIGHT_ALL);
    }
    return 0;
}

static int t_retype_bad_type(void)
{
    keel_word_t s = slot_alloc();

    EXPECT_ERR(keel_untyped_retype(work_ut, 0, 0, CN, s, 1), KEEL_E_INVALID_ARG);
    EXPECT_ERR(keel_untyped_retype(work_ut, 99, 0, CN, s, 1), KEEL_E_INVALID_ARG);
    EXPECT_ERR(keel_untyped_retype(work_ut, KEEL_OBJ_CONSOLE, 0, CN, s, 1), KEEL_E_INVALID_ARG);
    return 0;
}

static int t_retype_bad_count(void)
{
    keel_word_t s = slot_alloc();

    EXPECT_ERR(keel_untyped_retype(work_ut, KEEL_OBJ_ENDPOINT, 0, CN, s, 0), KEEL_E_INVALID_ARG);
    EXPECT_ERR(keel_untyped_retype(work_ut, KEEL_OBJ_ENDPOINT, 0, CN, s, 100000),
               KEEL_E_INVALID_ARG);
    return 0;
}

static int t_retype_slot_occupied(void)
{
    keel_word_t s = make_obj(KEEL_OBJ_ENDPOINT, 0);

    EXPECT_ERR(keel_untyped_retype(work_ut, KEEL_OBJ_ENDPOINT, 0, CN, s, 1), KEEL_E_EXISTS);
    return 0;
}

static int t_retype_slot_out_of_range(void)
{
    keel_word_t last = (1ul << boot->cnode_bits) - 1;

    EXPECT_ERR(keel_untyped_retype(work_ut, KEEL_OBJ_ENDPOINT, 0, CN, last, 2),
               KEEL_E_INVALID_ARG);
    EXPECT_ERR(keel_untyped_retype(work_ut, KEEL_OBJ_ENDPOINT, 0, CN, 0, 1), KEEL_E_INVALID_ARG);
    return 0;
}

static int t_retype_cnode_arg_wrong_type(void)
{
    keel_word_t ep = make_obj(KEEL_OBJ_ENDPOINT, 0);

    EXPECT_ERR(keel_untyped_retype(work_ut, KEEL_OBJ_ENDPOINT, 0, ep, 1, 1), KEEL_E_WRONG_TYPE);
    return 0;
}

static int t_retype_out_of_memory(void)
{
    keel_word_t small = make_untyped(12), s = slot_alloc(), s2 = slot_alloc();

    slot_alloc();
    EXPECT_ERR(keel_untyped_retype(small, KEEL_OBJ_FRAME, 0, CN, s, 2), KEEL_E_NO_MEMORY);
    OK(keel_untyped_retype(small, KEEL_OBJ_FRAME, 0, CN, s, 1));
    EXPECT_ERR(keel_untyped_retype(small, KEEL_OBJ_FRAME, 0, CN, s2, 1), KEEL_E_NO_MEMORY);
    EXPECT_ERR(keel_untyped_retype(small, KEEL_OBJ_ENDPOINT, 0, CN, s2, 1), KEEL_E_NO_MEMORY);
    return 0;
}

static int t_retype_too_big(void)
{
    keel_word_t small = make_untyped(12), s = slot_alloc();

    EXPECT_ERR(keel_untyped_retype(small, KEEL_OBJ_UNTYPED, 13, CN, s, 1), KEEL_E_NO_MEMORY);
    EXPECT_ERR(keel_untyped_retype(small, KEEL_OBJ_VSPACE, 0, CN, s, 1), KEEL_E_NO_MEMORY);
    return 0;
}

static int t_retype_revoke_returns_memory(void)
{
    keel_word_t small = make_untyped(14), first = slot_alloc();

    for (int i = 1; i < 4; i++)
        slot_alloc();
    for (int round = 0; round < 3; round++) {
        OK(keel_untyped_retype(small, KEEL_OBJ_FRAME, 0, CN, first, 4));
        EXPECT_ERR(keel_untyped_retype(small, KEEL_OBJ_FRAME, 0, CN, slot_alloc(), 1),
                   KEEL_E_NO_MEMORY);
        OK(keel_cnode_revoke(CN, small));
    }
    return 0;
}

static int t_retype_delete_returns_memory(void)
{
    keel_word_t small = make_untyped(13), a = slot_alloc(), b = slot_alloc();

    OK(keel_untyped_retype(small, KEEL_OBJ_VSPACE, 0, CN, a, 1));
    EXPECT_ERR(keel_untyped_retype(small, KEEL_OBJ_FRAME, 0, CN, b, 1), KEEL_E_NO_MEMORY);
    OK(keel_cnode_delete(CN, a));
    OK(keel_untyped_retype(small, KEEL_OBJ_VSPACE, 0, CN, a, 1));
    return 0;
}

static int t_retype_children_keep_memory(void)
{
    keel_word_t small = make_untyped(12), f = slot_alloc(), copy = slot_alloc(), g = slot_alloc();

    OK(keel_untyped_retype(small, KEEL_OBJ_FRAME, 0, CN, f, 1));
    OK(keel_cnode_copy(CN, copy, CN, f, KEEL_RIGHT_ALL));
    OK(keel_cnode_delete(CN, f));
    /* the copy still names the frame: its memory is not free */
    EXPECT_ERR(keel_untyped_retype(small, KEEL_OBJ_FRAME, 0, CN, g, 1), KEEL_E_NO_MEMORY);
    OK(keel_cnode_delete(CN, copy));
    OK(keel_untyped_retype(small, KEEL_OBJ_FRAME, 0, CN, g, 1));
    return 0;
}

static int t_retype_from_non_untyped(void)
{
    keel_word_t n = make_obj(KEEL_OBJ_NOTIFICATION, 0);

    EXPECT_ERR(keel_untyped_retype(n, KEEL_OBJ_ENDPOINT, 0, CN, slot_alloc(), 1),
               KEEL_E_WRONG_TYPE);
    return 0;
}

static int t_retype_cnode_sizes(void)
{
    keel_word_t s = slot_alloc();

    EXPECT_ERR(keel_untyped_retype(work_ut, KEEL_OBJ_CNODE, 0, CN, s, 1), KEEL_E_INVALID_ARG);
    EXPECT_ERR(keel_untyped_retype(work_ut, KEEL_OBJ_CNODE, 40, CN, s, 1), KEEL_E_INVALID_ARG);
    OK(keel_untyped_retype(work_ut, KEEL_OBJ_CNODE, 4, CN, s, 1));
    return 0;
}

static int t_retype_many(void)
{
    keel_word_t first = slot_alloc(), type;

    for (int i = 1; i < 16; i++)
        slot_alloc();
    OK(keel_untyped_retype(work_ut, KEEL_OBJ_NOTIFICATION, 0, CN, first, 16));
    for (int i = 0; i < 16; i++) {
        OK(keel_cnode_identify(CN, first + i, &type, 0, 0));
        EXPECT(type == KEEL_OBJ_NOTIFICATION);
    }
    return 0;
}

static int t_untyped_cannot_be_copied(void)
{
    keel_word_t u = make_untyped(12);

    EXPECT_ERR(keel_cnode_copy(CN, slot_alloc(), CN, u, KEEL_RIGHT_ALL), KEEL_E_INVALID_ARG);
    EXPECT_ERR(keel_cnode_mint(CN, slot_alloc(), CN, u, KEEL_RIGHT_ALL, 5), KEEL_E_INVALID_ARG);
    return 0;
}

static int t_retype_into_new_cnode(void)
{
    keel_word_t cn = make_obj(KEEL_OBJ_CNODE, 3), type;

    OK(keel_untyped_retype(work_ut, KEEL_OBJ_ENDPOINT, 0, cn, 1, 7));
    EXPECT_ERR(keel_untyped_retype(work_ut, KEEL_OBJ_ENDPOINT, 0, cn, 7, 1), KEEL_E_EXISTS);
    EXPECT_ERR(keel_untyped_retype(work_ut, KEEL_OBJ_ENDPOINT, 0, cn, 8, 1), KEEL_E_INVALID_ARG);
    OK(keel_cnode_identify(cn, 7, &type, 0, 0));
    EXPECT(type == KEEL_OBJ_ENDPOINT);
    return 0;
}

/* -- capability tables ---------------------------------------------------- */

static int t_copy(void)
{
    keel_word_t ep = make_obj(KEEL_OBJ_ENDPOINT, 0), c = slot_alloc(), type, rights;

    OK(keel_cnode_copy(CN, c, CN, ep, KEEL_RIGHT_ALL));
    OK(keel_cnode_identify(CN, c, &type, &rights, 0));
    EXPECT(type == KEEL_OBJ_ENDPOINT && rights == KEEL_RIGHT_ALL);
    OK(ep_send(c, 1, 2, 3, 4, 5));
    keel_word_t label;
    OK(ep_recv(ep, KEEL_RECV_NONBLOCK, 0, &label, 0, 0, 0, 0));
    EXPECT(label == 1);
    return 0;
}

static int t_copy_fewer_rights(void)
{
    keel_word_t ep = make_obj(KEEL_OBJ_ENDPOINT, 0), c = slot_alloc(), rights;

    OK(keel_cnode_copy(CN, c, CN, ep, KEEL_RIGHT_READ));
    OK(keel_cnode_identify(CN, c, 0, &rights, 0));
    EXPECT(rights == KEEL_RIGHT_READ);
    return 0;
}

static int t_rights_never_grow(void)
{
    keel_word_t ep = make_obj(KEEL_OBJ_ENDPOINT, 0), ro = slot_alloc(), again = slot_alloc();
    keel_word_t rights;

    OK(keel_cnode_copy(CN, ro, CN, ep, KEEL_RIGHT_READ));
    OK(keel_cnode_copy(CN, again, CN, ro, KEEL_RIGHT_ALL));
    OK(keel_cnode_identify(CN, again, 0, &rights, 0));
    EXPECT(rights == KEEL_RIGHT_READ);
    EXPECT_ERR(keel_cnode_copy(CN, slot_alloc(), CN, ep, 0x100), KEEL_E_INVALID_ARG);
    return 0;
}

static int t_copy_empty_source(void)
{
    EXPECT_ERR(keel_cnode_copy(CN, slot_alloc(), CN, slot_alloc(), KEEL_RIGHT_ALL),
               KEEL_E_INVALID_CAP);
    return 0;
}

static int t_copy_dest_occupied(void)
{
    keel_word_t a = make_obj(KEEL_OBJ_ENDPOINT, 0), b = make_obj(KEEL_OBJ_ENDPOINT, 0);

    EXPECT_ERR(keel_cnode_copy(CN, b, CN, a, KEEL_RIGHT_ALL), KEEL_E_EXISTS);
    return 0;
}

static int t_copy_to_null_or_far_slot(void)
{
    keel_word_t a = make_obj(KEEL_OBJ_ENDPOINT, 0);

    EXPECT_ERR(keel_cnode_copy(CN, 0, CN, a, KEEL_RIGHT_ALL), KEEL_E_INVALID_ARG);
    EXPECT_ERR(keel_cnode_copy(CN, 1ul << 40, CN, a, KEEL_RIGHT_ALL), KEEL_E_INVALID_ARG);
    return 0;
}

static int t_mint_badge(void)
{
    keel_word_t ep = make_obj(KEEL_OBJ_ENDPOINT, 0), m = slot_alloc(), badge, got;

    OK(keel_cnode_mint(CN, m, CN, ep, KEEL_RIGHT_ALL, 0x77));
    OK(keel_cnode_identify(CN, m, 0, 0, &badge));
    EXPECT(badge == 0x77);
    OK(ep_send(m, 9, 0, 0, 0, 0));
    OK(ep_recv(ep, KEEL_RECV_NONBLOCK, &got, 0, 0, 0, 0, 0));
    EXPECT(got == 0x77);
    return 0;
}

static int t_mint_twice_refused(void)
{
    keel_word_t ep = make_obj(KEEL_OBJ_ENDPOINT, 0), m = slot_alloc();

    OK(keel_cnode_mint(CN, m, CN, ep, KEEL_RIGHT_ALL, 1));
    EXPECT_ERR(keel_cnode_mint(CN, slot_alloc(), CN, m, KEEL_RIGHT_ALL, 2), KEEL_E_INVALID_ARG);
    return 0;
}

static int t_mint_frame_refused(void)
{
    keel_word_t f = make_obj(KEEL_OBJ_FRAME, 0);

    EXPECT_ERR(keel_cnode_mint(CN, slot_alloc(), CN, f, KEEL_RIGHT_ALL, 3), KEEL_E_INVALID_ARG);
    return 0;
}

static int t_move(void)
{
    keel_word_t ep = make_obj(KEEL_OBJ_ENDPOINT, 0), d = slot_alloc(), type;

    OK(keel_cnode_move(CN, d, CN, ep));
    EXPECT_ERR(keel_cnode_identify(CN, ep, &type, 0, 0), KEEL_E_OK);
    EXPECT(type == 0);
    OK(keel_cnode_identify(CN, d, &type, 0, 0));
    EXPECT(type == KEEL_OBJ_ENDPOINT);
    OK(ep_send(d, 1, 0, 0, 0, 0));
    return 0;
}

static int t_move_keeps_derivation(void)
{
    keel_word_t ep = make_obj(KEEL_OBJ_ENDPOINT, 0), child = slot_alloc(), d = slot_alloc();
    keel_word_t type;

    OK(keel_cnode_copy(CN, child, CN, ep, KEEL_RIGHT_ALL));
    OK(keel_cnode_move(CN, d, CN, ep));
    OK(keel_cnode_revoke(CN, d));
    OK(keel_cnode_identify(CN, child, &type, 0, 0));
    EXPECT(type == 0);
    return 0;
}

static int t_move_errors(void)
{
    keel_word_t a = make_obj(KEEL_OBJ_ENDPOINT, 0), b = make_obj(KEEL_OBJ_ENDPOINT, 0);

    EXPECT_ERR(keel_cnode_move(CN, b, CN, a), KEEL_E_EXISTS);
    EXPECT_ERR(keel_cnode_move(CN, slot_alloc(), CN, slot_alloc()), KEEL_E_INVALID_CAP);
    EXPECT_ERR(keel_cnode_move(CN, 0, CN, a), KEEL_E_INVALID_ARG);
    return 0;
}

static int t_delete(void)
{
    keel_word_t ep = make_obj(KEEL_OBJ_ENDPOINT, 0);

    OK(keel_cnode_delete(CN, ep));
    EXPECT_ERR(ep_send(ep, 1, 0, 0, 0, 0), KEEL_E_INVALID_CAP);
    OK(keel_cnode_delete(CN, ep)); /* deleting an empty slot is not an error */
    EXPECT_ERR(keel_cnode_delete(CN, 1ul << 40), KEEL_E_INVALID_ARG);
    return 0;
}

static int t_revoke_children(void)
{
    keel_word_t ep = make_obj(KEEL_OBJ_ENDPOINT, 0), c1 = slot_alloc(), c2 = slot_alloc();
    keel_word_t gc = slot_alloc(), type;

    OK(keel_cnode_copy(CN, c1, CN, ep, KEEL_RIGHT_ALL));
    OK(keel_cnode_mint(CN, c2, CN, ep, KEEL_RIGHT_WRITE, 5));
    OK(keel_cnode_copy(CN, gc, CN, c1, KEEL_RIGHT_READ));
    OK(keel_cnode_revoke(CN, ep));
    OK(keel_cnode_identify(CN, c1, &type, 0, 0));
    EXPECT(type == 0);
    OK(keel_cnode_identify(CN, c2, &type, 0, 0));
    EXPECT(type == 0);
    OK(keel_cnode_identify(CN, gc, &type, 0, 0));
    EXPECT(type == 0);
    OK(ep_send(ep, 1, 0, 0, 0, 0)); /* the revoked one itself stays */
    return 0;
}

static int t_revoked_cap_unusable(void)
{
    keel_word_t ep = make_obj(KEEL_OBJ_ENDPOINT, 0), c = slot_alloc();

    OK(keel_cnode_copy(CN, c, CN, ep, KEEL_RIGHT_ALL));
    OK(keel_cnode_revoke(CN, ep));
    EXPECT_ERR(ep_send(c, 1, 0, 0, 0, 0), KEEL_E_INVALID_CAP);
    EXPECT_ERR(keel_cnode_revoke(CN, c), KEEL_E_INVALID_CAP);
    return 0;
}

static int t_delete_parent_keeps_children(void)
{
    keel_word_t ep = make_obj(KEEL_OBJ_ENDPOINT, 0), c = slot_alloc();

    OK(keel_cnode_copy(CN, c, CN, ep, KEEL_RIGHT_ALL));
    OK(keel_cnode_delete(CN, ep));
    OK(ep_send(c, 1, 0, 0, 0, 0));
    return 0;
}

static int t_identify_errors(void)
{
    EXPECT_ERR(keel_cnode_identify(CN, 0, 0, 0, 0), KEEL_E_INVALID_ARG);
    EXPECT_ERR(keel_cnode_identify(CN, 1ul << 30, 0, 0, 0), KEEL_E_INVALID_ARG);
    return 0;
}

/* -- decoding ------------------------------------------------------------- */

static int t_invalid_slots(void)
{
    EXPECT_ERR(ep_send(0, 1, 0, 0, 0, 0), KEEL_E_INVALID_CAP);
    EXPECT_ERR(ep_send(1ul << 20, 1, 0, 0, 0, 0), KEEL_E_INVALID_CAP);
    EXPECT_ERR(ep_send(~0ul, 1, 0, 0, 0, 0), KEEL_E_INVALID_CAP);
    EXPECT_ERR(ep_send(slot_alloc(), 1, 0, 0, 0, 0), KEEL_E_INVALID_CAP);
    return 0;
}

static int t_unknown_label(void)
{
    keel_word_t in[KEEL_MSG_WORDS] = { 0 };

    EXPECT_ERR(keel_invoke(CN, 0, in, 0), KEEL_E_UNKNOWN_CALL);
    EXPECT_ERR(keel_invoke(CN, KEEL_NCALLS, in, 0), KEEL_E_UNKNOWN_CALL);
    EXPECT_ERR(keel_invoke(CN, ~0ul, in, 0), KEEL_E_UNKNOWN_CALL);
    return 0;
}

static int t_wrong_object_type(void)
{
    keel_word_t n = make_obj(KEEL_OBJ_NOTIFICATION, 0);

    EXPECT_ERR(keel_tcb_resume(n), KEEL_E_WRONG_TYPE);
    EXPECT_ERR(keel_frame_unmap(n), KEEL_E_WRONG_TYPE);
    EXPECT_ERR(keel_cnode_delete(n, 1), KEEL_E_WRONG_TYPE);
    EXPECT_ERR(keel_send(n, KEEL_LABEL_USER, 0, 0, 0, 0, 0, 0), KEEL_E_WRONG_TYPE);
    EXPECT_ERR(keel_recv(n, 0, 0, 0), KEEL_E_WRONG_TYPE);
    return 0;
}

static int t_missing_rights(void)
{
    keel_word_t ep = make_obj(KEEL_OBJ_ENDPOINT, 0), ro = slot_alloc(), wo = slot_alloc();
    keel_word_t cn_ro = slot_alloc();

    OK(keel_cnode_copy(CN, ro, CN, ep, KEEL_RIGHT_READ));
    OK(keel_cnode_copy(CN, wo, CN, ep, KEEL_RIGHT_WRITE));
    EXPECT_ERR(ep_send(ro, 1, 0, 0, 0, 0), KEEL_E_NO_RIGHTS);
    EXPECT_ERR(ep_recv(wo, KEEL_RECV_NONBLOCK, 0, 0, 0, 0, 0, 0), KEEL_E_NO_RIGHTS);
    OK(keel_cnode_copy(CN, cn_ro, CN, CN, KEEL_RIGHT_READ));
    EXPECT_ERR(keel_cnode_delete(cn_ro, ep), KEEL_E_NO_RIGHTS);
    EXPECT_ERR(keel_untyped_retype(work_ut, KEEL_OBJ_ENDPOINT, 0, cn_ro, slot_alloc(), 1),
               KEEL_E_NO_RIGHTS);
    return 0;
}

/* Console input (the shell's): nothing typed reads as would_block; bad
 * arguments are refused; reading takes the read right, powering off every
 * right. */
static int t_console_read_errors(void)
{
    keel_word_t n = make_obj(KEEL_OBJ_NOTIFICATION, 0), ep = make_obj(KEEL_OBJ_ENDPOINT, 0);
    keel_word_t wo = slot_alloc(), got = 99;
    char line[64];

    EXPECT_ERR(keel_console_read(KEEL_SLOT_CONSOLE, (keel_word_t)line, sizeof(line), &got),
               KEEL_E_WOULD_BLOCK);
    EXPECT_ERR(keel_console_read(KEEL_SLOT_CONSOLE, (keel_word_t)line, 100000, &got),
               KEEL_E_INVALID_ARG);
    EXPECT_ERR(keel_console_listen(KEEL_SLOT_CONSOLE, ep, 0), KEEL_E_WRONG_TYPE);
    EXPECT_ERR(keel_console_listen(KEEL_SLOT_CONSOLE, n, 2), KEEL_E_INVALID_ARG);
    EXPECT_ERR(keel_console_listen(KEEL_SLOT_CONSOLE, 4095, 0), KEEL_E_INVALID_CAP);
    OK(keel_console_listen(KEEL_SLOT_CONSOLE, n, 0));
    OK(keel_cnode_delete(CN, n)); /* the console forgets a notification that is gone */
    OK(keel_console_listen(KEEL_SLOT_CONSOLE, 0, 0));
    OK(keel_cnode_copy(CN, wo, CN, KEEL_SLOT_CONSOLE, KEEL_RIGHT_WRITE));
    EXPECT_ERR(keel_console_read(wo, (keel_word_t)line, sizeof(line), &got), KEEL_E_NO_RIGHTS);
    EXPECT_ERR(keel_console_listen(wo, 0, 0), KEEL_E_NO_RIGHTS);
    /* Powering off takes every right: a write-only copy (what programs
     * other than init get) cannot.  Were it allowed, the machine would stop
     * here with a failure code. */
    EXPECT_ERR(keel_console_poweroff(wo, 0x33), KEEL_E_NO_RIGHTS);
    OK(keel_cnode_delete(CN, wo));
    return 0;
}

static int t_bad_syscall_number(void)
{
    EXPECT_ERR(keel_syscall(77, 0, 0, 0, 0), KEEL_E_UNKNOWN_CALL);
    EXPECT_ERR(keel_syscall(KEEL_SYS_NULL, 0, 0, 0, 0), KEEL_E_OK);
    EXPECT_ERR(keel_syscall(KEEL_SYS_FLOOR, 0, 0, 0, 0), KEEL_E_OK);
    return 0;
}

static int t_registers_preserved(void)
{
    register unsigned long r14 __asm__("r14") = 0x1414;
    register unsigned long r15 __asm__("r15") = 0x1515;
    register unsigned long rbx __asm__("rbx") = 0xbbbb;

    __asm__ volatile("" : "+r"(r14), "+r"(r15), "+r"(rbx));
    keel_syscall(KEEL_SYS_NULL, 0, 0, 0, 0);
    keel_yield();
    __asm__ volatile("" : "+r"(r14), "+r"(r15), "+r"(rbx));
    EXPECT(r14 == 0x1414 && r15 == 0x1515 && rbx == 0xbbbb);
    return 0;
}

/* -- endpoints and notifications ------------------------------------------- */

static int t_send_recv(void)
{
    keel_word_t ep = make_obj(KEEL_OBJ_ENDPOINT, 0), b, l, w0, w1, w2, w3;

    OK(ep_send(ep, 10, 11, 12, 13, 14));
    OK(ep_recv(ep, 0, &b, &l, &w0, &w1, &w2, &w3));
    EXPECT(b == 0 && l == 10 && w0 == 11 && w1 == 12 && w2 == 13 && w3 == 14);
    return 0;
}

static int t_recv_nonblock_empty(void)
{
    keel_word_t ep = make_obj(KEEL_OBJ_ENDPOINT, 0);

    EXPECT_ERR(ep_recv(ep, KEEL_RECV_NONBLOCK, 0, 0, 0, 0, 0, 0), KEEL_E_WOULD_BLOCK);
    EXPECT_ERR(ep_recv(ep, 0x80, 0, 0, 0, 0, 0, 0), KEEL_E_INVALID_ARG);
    return 0;
}

static int t_queue_full(void)
{
    keel_word_t ep = make_obj(KEEL_OBJ_ENDPOINT, 0), l;
    int sent = 0;

    while (ep_send(ep, (keel_word_t)sent, 0, 0, 0, 0) == KEEL_E_OK && sent < 100)
        sent++;
    EXPECT(sent == 16);
    EXPECT_ERR(ep_send(ep, 99, 0, 0, 0, 0), KEEL_E_FULL);
    for (int i = 0; i < sent; i++) {
        OK(ep_recv(ep, KEEL_RECV_NONBLOCK, 0, &l, 0, 0, 0, 0));
        EXPECT(l == (keel_word_t)i); /* FIFO, nothing lost */
    }
    OK(ep_send(ep, 1, 0, 0, 0, 0)); /* room again */
    return 0;
}

static int t_notification(void)
{
    keel_word_t n = make_obj(KEEL_OBJ_NOTIFICATION, 0), a = slot_alloc(), b = slot_alloc();
    keel_word_t bits;

    OK(keel_notification_poll(n, &bits));
    EXPECT(bits == 0);
    OK(keel_cnode_mint(CN, a, CN, n, KEEL_RIGHT_WRITE, 0x1));
    OK(keel_cnode_mint(CN, b, CN, n, KEEL_RIGHT_WRITE, 0x4));
    OK(keel_notification_signal(a));
    OK(keel_notification_signal(b));
    OK(keel_notification_signal(a));
    OK(keel_notification_wait(n, &bits));
    EXPECT(bits == 0x5);
    OK(keel_notification_poll(n, &bits));
    EXPECT(bits == 0);
    EXPECT_ERR(keel_notification_wait(a, 0), KEEL_E_NO_RIGHTS);
    return 0;
}

/* -- threads --------------------------------------------------------------- */

static void body_set_value(struct thread *t)
{
    t->value = 42;
}

static int t_thread_runs(void)
{
    struct thread t;

    OK(spawn(&t, body_set_value, 0));
    EXPECT(wait_done(&t));
    EXPECT(t.value == 42);
    return 0;
}

static void body_echo(struct thread *t)
{
    keel_word_t l, w0;

    if (ep_recv(t->a, 0, 0, &l, &w0, 0, 0, 0) == KEEL_E_OK)
        ep_send(t->b, l + 1, w0 * 2, 0, 0, 0);
}

static int t_thread_blocking_recv(void)
{
    struct thread t;
    keel_word_t l, w0;

    t.a = make_obj(KEEL_OBJ_ENDPOINT, 0);
    t.b = make_obj(KEEL_OBJ_ENDPOINT, 0);
    OK(spawn(&t, body_echo, 0));
    EXPECT(wait_blocked(&t)); /* in recv */
    OK(ep_send(t.a, 7, 21, 0, 0, 0));
    OK(ep_recv(t.b, 0, 0, &l, &w0, 0, 0, 0));
    EXPECT(l == 8 && w0 == 42);
    EXPECT(wait_done(&t));
    return 0;
}

static void body_wait_ntfn(struct thread *t)
{
    keel_word_t bits = 0;

    keel_notification_wait(t->a, &bits);
    t->value = (long)bits;
}

static int t_thread_notification_wakeup(void)
{
    struct thread t;

    t.a = make_obj(KEEL_OBJ_NOTIFICATION, 0);
    t.value = 0;
    OK(spawn(&t, body_wait_ntfn, 0));
    EXPECT(wait_blocked(&t));
    OK(keel_notification_signal(t.a));
    EXPECT(wait_done(&t));
    EXPECT(t.value == 1);
    return 0;
}

static void body_spin(struct thread *t)
{
    while (!*(volatile keel_word_t *)&t->b)
        t->value++;
}

static int t_thread_suspend_resume(void)
{
    struct thread t;
    keel_word_t state;

    t.b = 0;
    t.value = 0;
    OK(spawn(&t, body_spin, 0));
    for (long i = 0; i < WAIT_LIMIT && t.value == 0; i++)
        keel_yield();
    EXPECT(t.value > 0);
    OK(keel_tcb_suspend(t.tcb));
    OK(keel_tcb_state(t.tcb, &state));
    EXPECT(state == KEEL_THREAD_INACTIVE);
    long v = t.value;
    for (int i = 0; i < 20; i++)
        keel_yield();
    EXPECT(t.value == v); /* really stopped */
    OK(keel_tcb_resume(t.tcb));
    for (long i = 0; i < WAIT_LIMIT && t.value == v; i++)
        keel_yield();
    EXPECT(t.value != v);
    t.b = 1;
    EXPECT(wait_done(&t));
    return 0;
}

static int t_thread_bad_registers(void)
{
    keel_word_t tcb = make_obj(KEEL_OBJ_TCB, 0);

    OK(keel_tcb_configure(tcb, CN, VS, 0));
    EXPECT_ERR(keel_tcb_write_regs(tcb, 0xffff800000000000ul, 0x1000, 0), KEEL_E_INVALID_ARG);
    EXPECT_ERR(keel_tcb_write_regs(tcb, 0x1000, 0x8000000000000000ul, 0), KEEL_E_INVALID_ARG);
    EXPECT_ERR(keel_tcb_write_regs(KEEL_SLOT_TCB, 0x400000, 0x1000, 0), KEEL_E_BAD_STATE);
    return 0;
}

static int t_thread_unconfigured(void)
{
    keel_word_t tcb = make_obj(KEEL_OBJ_TCB, 0), state;

    EXPECT_ERR(keel_tcb_resume(tcb), KEEL_E_BAD_STATE);
    OK(keel_tcb_state(tcb, &state));
    EXPECT(state == KEEL_THREAD_INACTIVE);
    EXPECT_ERR(keel_tcb_configure(tcb, VS, VS, 0), KEEL_E_WRONG_TYPE);
    EXPECT_ERR(keel_tcb_configure(tcb, CN, VS, CN), KEEL_E_WRONG_TYPE);
    EXPECT_ERR(keel_tcb_configure(tcb, CN, VS, slot_alloc()), KEEL_E_INVALID_CAP);
    return 0;
}

static void body_fpu(struct thread *t)
{
    unsigned long mine = (unsigned long)t->value, seen;

    __asm__ volatile("movq %0, %%xmm7" : : "r"(mine));
    for (int i = 0; i < 200; i++) {
        keel_yield();
        __asm__ volatile("movq %%xmm7, %0" : "=r"(seen));
        if (seen != mine) {
            t->value = -1;
            return;
        }
    }
}

static int t_fpu_state_per_thread(void)
{
    struct thread a, b;
    unsigned long mine = 0x1234567812345678ul, seen;

    a.value = 0x1111;
    b.value = 0x2222;
    __asm__ volatile("movq %0, %%xmm7" : : "r"(mine));
    OK(spawn(&a, body_fpu, 0));
    OK(spawn(&b, body_fpu, 0));
    EXPECT(wait_done(&a) && wait_done(&b));
    __asm__ volatile("movq %%xmm7, %0" : "=r"(seen));
    EXPECT(a.value == 0x1111 && b.value == 0x2222);
    EXPECT(seen == mine);
    return 0;
}

static int t_read_regs(void)
{
    keel_word_t tcb = make_obj(KEEL_OBJ_TCB, 0), pc, sp, rax;

    OK(keel_tcb_configure(tcb, CN, VS, 0));
    OK(keel_tcb_write_regs(tcb, 0x401000, 0x7000, 5));
    OK(keel_tcb_read_regs(tcb, &pc, &sp, &rax));
    EXPECT(pc == 0x401000 && sp == 0x7000);
    return 0;
}

/* -- faults ---------------------------------------------------------------- */

#define FAULT_VA (TEST_VA + 0x100000)
static volatile unsigned long *const fault_ptr = (volatile unsigned long *)FAULT_VA;

static void body_touch(struct thread *t)
{
    *fault_ptr = 0xfeed;
    t->value = (long)*fault_ptr;
}

static int t_fault_delivered_and_resumed(void)
{
    struct thread t;
    keel_word_t ep = make_obj(KEEL_OBJ_ENDPOINT, 0), fep = slot_alloc();
    keel_word_t badge, label, vec, addr, err, pc;

    OK(keel_cnode_mint(CN, fep, CN, ep, KEEL_RIGHT_WRITE, 0xbad));
    t.value = 0;
    OK(spawn(&t, body_touch, fep));
    OK(ep_recv(ep, 0, &badge, &label, &vec, &addr, &err, &pc));
    EXPECT(label == KEEL_LABEL_FAULT && badge == 0xbad);
    EXPECT(vec == 14 && addr == FAULT_VA && (err & 2)); /* a write */
    keel_word_t state;
    OK(keel_tcb_state(t.tcb, &state));
    EXPECT(state == KEEL_THREAD_FAULTED);
    keel_word_t f = map_new_frame(FAULT_VA, KEEL_RIGHT_READ | KEEL_RIGHT_WRITE);
    OK(keel_tcb_resume(t.tcb));
    EXPECT(wait_done(&t));
    EXPECT(t.value == 0xfeed);
    OK(keel_cnode_delete(CN, f));
    return 0;
}

static void body_ud(struct thread *t)
{
    (void)t;
    __asm__ volatile("ud2");
}

static int t_fault_kill(void)
{
    struct thread t;
    keel_word_t ep = make_obj(KEEL_OBJ_ENDPOINT, 0), vec, pc, state;

    OK(spawn(&t, body_ud, ep));
    OK(ep_recv(ep, 0, 0, 0, &vec, 0, 0, &pc));
    EXPECT(vec == 6);
    EXPECT(pc >= (keel_word_t)body_ud && pc < (keel_word_t)body_ud + 64);
    OK(keel_tcb_suspend(t.tcb));
    OK(keel_tcb_state(t.tcb, &state));
    EXPECT(state == KEEL_THREAD_INACTIVE);
    OK(keel_cnode_delete(CN, t.tcb));
    return 0;
}

static void body_kernel_access(struct thread *t)
{
    t->value = (long)*(volatile unsigned long *)0xffffffff80100000ul;
}

static int t_fault_on_kernel_memory(void)
{
    struct thread t;
    keel_word_t ep = make_obj(KEEL_OBJ_ENDPOINT, 0), vec, addr;

    OK(spawn(&t, body_kernel_access, ep));
    OK(ep_recv(ep, 0, 0, 0, &vec, &addr, 0, 0));
    EXPECT(vec == 14 && addr == 0xffffffff80100000ul);
    OK(keel_cnode_delete(CN, t.tcb));
    return 0;
}

static void body_privileged(struct thread *t)
{
    (void)t;
    __asm__ volatile("cli; hlt");
}

static int t_fault_privileged_instruction(void)
{
    struct thread t;
    keel_word_t ep = make_obj(KEEL_OBJ_ENDPOINT, 0), vec;

    OK(spawn(&t, body_privileged, ep));
    OK(ep_recv(ep, 0, 0, 0, &vec, 0, 0, 0));
    EXPECT(vec == 13);
    OK(keel_cnode_delete(CN, t.tcb));
    return 0;
}

static int t_fault_without_handler(void)
{
    struct thread t;
    keel_word_t state = 99;

    OK(spawn(&t, body_ud, 0));
    for (long i = 0; i < WAIT_LIMIT; i++) {
        OK(keel_tcb_state(t.tcb, &state));
        if (state == KEEL_THREAD_INACTIVE)
            break;
        keel_yield();
    }
    EXPECT(state == KEEL_THREAD_INACTIVE);
    return 0;
}

static void body_recv_forever(struct thread *t)
{
    t->value = ep_recv(t->a, 0, 0, 0, 0, 0, 0, 0);
}

static int t_delete_endpoint_wakes_receiver(void)
{
    struct thread t;

    t.a = make_obj(KEEL_OBJ_ENDPOINT, 0);
    t.value = -1;
    OK(spawn(&t, body_recv_forever, 0));
    EXPECT(wait_blocked(&t));
    OK(keel_cnode_delete(CN, t.a));
    EXPECT(wait_done(&t));
    EXPECT(t.value == KEEL_E_REVOKED);
    return 0;
}

static int t_delete_running_thread(void)
{
    struct thread t;
    keel_word_t small = make_untyped(12), tcb = slot_alloc();

    t.b = 0;
    t.value = 0;
    OK(spawn(&t, body_spin, 0));
    for (long i = 0; i < WAIT_LIMIT && t.value == 0; i++)
        keel_yield();
    EXPECT(t.value > 0);
    OK(keel_cnode_delete(CN, t.tcb)); /* the last capability: it is destroyed */
    long v = t.value;
    for (int i = 0; i < 20; i++)
        keel_yield();
    EXPECT(t.value == v);
    /* its memory can be used again */
    OK(keel_untyped_retype(small, KEEL_OBJ_TCB, 0, CN, tcb, 1));
    return 0;
}

/* -- address spaces ---------------------------------------------------------- */

static int t_map_frame(void)
{
    keel_word_t va = TEST_VA + 0x1000, phys, flags, paddr;
    keel_word_t f = map_new_frame(va, KEEL_RIGHT_READ | KEEL_RIGHT_WRITE);

    *(volatile unsigned long *)va = 0x5a5a;
    EXPECT(*(volatile unsigned long *)va == 0x5a5a);
    OK(keel_vspace_lookup(VS, va + 8, &phys, &flags));
    OK(keel_frame_info(f, &paddr, 0));
    EXPECT(phys == paddr + 8);
    EXPECT((flags & KEEL_MAP_WRITE) && !(flags & KEEL_MAP_EXEC));
    return 0;
}

static int t_map_errors(void)
{
    keel_word_t f = make_obj(KEEL_OBJ_FRAME, 0), g = make_obj(KEEL_OBJ_FRAME, 0);
    keel_word_t rw = KEEL_RIGHT_READ | KEEL_RIGHT_WRITE;

    OK(keel_frame_map(f, VS, TEST_VA + 0x2000, rw));
    EXPECT_ERR(keel_frame_map(g, VS, TEST_VA + 0x2000, rw), KEEL_E_EXISTS);
    EXPECT_ERR(keel_frame_map(f, VS, TEST_VA + 0x3000, rw), KEEL_E_EXISTS);
    EXPECT_ERR(keel_frame_map(g, VS, NO_TABLE_VA, rw), KEEL_E_NO_TABLE);
    EXPECT_ERR(keel_frame_map(g, VS, TEST_VA + 0x3001, rw), KEEL_E_INVALID_ARG);
    EXPECT_ERR(keel_frame_map(g, VS, 0xffff800000000000ul, rw), KEEL_E_INVALID_ARG);
    EXPECT_ERR(keel_frame_map(g, VS, TEST_VA + 0x3000, KEEL_RIGHT_WRITE), KEEL_E_INVALID_ARG);
    EXPECT_ERR(keel_frame_map(g, VS, TEST_VA + 0x3000, 0x100), KEEL_E_INVALID_ARG);
    EXPECT_ERR(keel_frame_map(g, KEEL_SLOT_CNODE, TEST_VA + 0x3000, rw), KEEL_E_WRONG_TYPE);
    return 0;
}

static int t_map_rights_limited_by_cap(void)
{
    keel_word_t f = make_obj(KEEL_OBJ_FRAME, 0), ro = slot_alloc(), flags, phys;

    OK(keel_cnode_copy(CN, ro, CN, f, KEEL_RIGHT_READ));
    EXPECT_ERR(keel_frame_map(ro, VS, TEST_VA + 0x4000, KEEL_RIGHT_READ | KEEL_RIGHT_WRITE),
               KEEL_E_NO_RIGHTS);
    OK(keel_frame_map(ro, VS, TEST_VA + 0x4000, KEEL_RIGHT_READ));
    OK(keel_vspace_lookup(VS, TEST_VA + 0x4000, &phys, &flags));
    EXPECT(!(flags & KEEL_MAP_WRITE));
    return 0;
}

static void body_write_ro(struct thread *t)
{
    *(volatile unsigned long *)(TEST_VA + 0x5000) = 1;
    t->value = 1;
}

static int t_readonly_mapping_enforced(void)
{
    struct thread t;
    keel_word_t ep = make_obj(KEEL_OBJ_ENDPOINT, 0), vec, addr, err;

    map_new_frame(TEST_VA + 0x5000, KEEL_RIGHT_READ);
    t.value = 0;
    OK(spawn(&t, body_write_ro, ep));
    OK(ep_recv(ep, 0, 0, 0, &vec, &addr, &err, 0));
    EXPECT(vec == 14 && addr == TEST_VA + 0x5000 && (err & 1) && (err & 2));
    EXPECT(t.value == 0);
    OK(keel_cnode_delete(CN, t.tcb));
    return 0;
}

static int t_unmap(void)
{
    keel_word_t va = TEST_VA + 0x6000, f = map_new_frame(va, KEEL_RIGHT_READ), mapped;

    OK(keel_frame_info(f, 0, &mapped));
    EXPECT(mapped == va);
    OK(keel_frame_unmap(f));
    EXPECT_ERR(keel_vspace_lookup(VS, va, 0, 0), KEEL_E_NOT_MAPPED);
    EXPECT_ERR(keel_frame_unmap(f), KEEL_E_NOT_MAPPED);
    OK(keel_frame_map(f, VS, va, KEEL_RIGHT_READ)); /* and again */
    return 0;
}

static int t_delete_unmaps(void)
{
    keel_word_t va = TEST_VA + 0x7000, f = map_new_frame(va, KEEL_RIGHT_READ);

    OK(keel_cnode_delete(CN, f));
    EXPECT_ERR(keel_vspace_lookup(VS, va, 0, 0), KEEL_E_NOT_MAPPED);
    return 0;
}

static int t_revoke_unmaps_copies(void)
{
    keel_word_t f = make_obj(KEEL_OBJ_FRAME, 0), c = slot_alloc();
    keel_word_t rw = KEEL_RIGHT_READ | KEEL_RIGHT_WRITE, p1, p2;

    OK(keel_frame_map(f, VS, TEST_VA + 0x8000, rw));
    OK(keel_cnode_copy(CN, c, CN, f, KEEL_RIGHT_ALL));
    OK(keel_frame_map(c, VS, TEST_VA + 0x9000, rw)); /* one frame, two addresses */
    *(volatile unsigned long *)(TEST_VA + 0x8000) = 0x77;
    EXPECT(*(volatile unsigned long *)(TEST_VA + 0x9000) == 0x77);
    OK(keel_vspace_lookup(VS, TEST_VA + 0x8000, &p1, 0));
    OK(keel_vspace_lookup(VS, TEST_VA + 0x9000, &p2, 0));
    EXPECT(p1 == p2);
    OK(keel_cnode_revoke(CN, f));
    EXPECT_ERR(keel_vspace_lookup(VS, TEST_VA + 0x9000, 0, 0), KEEL_E_NOT_MAPPED);
    OK(keel_vspace_lookup(VS, TEST_VA + 0x8000, 0, 0));
    return 0;
}

static int t_table_map_errors(void)
{
    keel_word_t pt = make_obj(KEEL_OBJ_PT, 0), pd = make_obj(KEEL_OBJ_PD, 0);

    EXPECT_ERR(keel_pt_map(pt, VS, TEST_VA), KEEL_E_EXISTS);
    EXPECT_ERR(keel_pt_map(pt, VS, NO_TABLE_VA + 0x1000), KEEL_E_INVALID_ARG);
    EXPECT_ERR(keel_pd_map(pd, VS, 0), KEEL_E_EXISTS);
    EXPECT_ERR(keel_pt_unmap(pt), KEEL_E_NOT_MAPPED);
    EXPECT_ERR(keel_vspace_lookup(VS, 0xffff800000000000ul, 0, 0), KEEL_E_INVALID_ARG);
    return 0;
}

static int t_unmap_table_hides_frames(void)
{
    keel_word_t pt = make_obj(KEEL_OBJ_PT, 0), va = NO_TABLE_VA + 0x200000;
    keel_word_t f = make_obj(KEEL_OBJ_FRAME, 0);

    OK(keel_pt_map(pt, VS, va));
    OK(keel_frame_map(f, VS, va, KEEL_RIGHT_READ));
    OK(keel_vspace_lookup(VS, va, 0, 0));
    OK(keel_pt_unmap(pt));
    EXPECT_ERR(keel_vspace_lookup(VS, va, 0, 0), KEEL_E_NOT_MAPPED);
    OK(keel_frame_unmap(f)); /* its mapping went with the table */
    return 0;
}

/* A thread in an address space of its own, built from nothing. */
static int t_new_address_space(void)
{
    keel_word_t vs = make_obj(KEEL_OBJ_VSPACE, 0), pdpt = make_obj(KEEL_OBJ_PDPT, 0);
    keel_word_t pd = make_obj(KEEL_OBJ_PD, 0), pt = make_obj(KEEL_OBJ_PT, 0);
    keel_word_t code = make_obj(KEEL_OBJ_FRAME, 0), code_here = slot_alloc();
    keel_word_t tcb = make_obj(KEEL_OBJ_TCB, 0), ep = make_obj(KEEL_OBJ_ENDPOINT, 0);
    keel_word_t vec, pc, addr;
    const keel_word_t base = 0x400000, scratch = TEST_VA + 0xa000;

    EXPECT_ERR(keel_pd_map(pd, vs, 0), KEEL_E_NO_TABLE); /* no PDPT yet */
    OK(keel_pdpt_map(pdpt, vs, 0));
    EXPECT_ERR(keel_pdpt_map(pdpt, vs, 1ul << 39), KEEL_E_EXISTS); /* mapped once */
    OK(keel_pd_map(pd, vs, 0));
    OK(keel_pt_map(pt, vs, base));
    /* the program: ud2, written through a mapping in our own space */
    OK(keel_frame_map(code, VS, scratch, KEEL_RIGHT_READ | KEEL_RIGHT_WRITE));
    *(volatile unsigned short *)scratch = 0x0b0f;
    OK(keel_frame_unmap(code));
    OK(keel_cnode_copy(CN, code_here, CN, code, KEEL_RIGHT_READ | KEEL_RIGHT_EXEC));
    OK(keel_frame_map(code_here, vs, base, KEEL_RIGHT_READ | KEEL_RIGHT_EXEC));
    EXPECT_ERR(keel_vspace_lookup(vs, scratch, 0, 0), KEEL_E_NOT_MAPPED);
    OK(keel_tcb_configure(tcb, CN, vs, ep));
    OK(keel_tcb_write_regs(tcb, base, 0, 0));
    OK(keel_tcb_resume(tcb));
    OK(ep_recv(ep, 0, 0, 0, &vec, &addr, 0, &pc));
    EXPECT(vec == 6 && pc == base);
    OK(keel_cnode_delete(CN, tcb));
    OK(keel_cnode_delete(CN, vs)); /* mapped objects outlive it harmlessly */
    EXPECT_ERR(keel_frame_unmap(code_here), KEEL_E_OK);
    OK(keel_pt_unmap(pt));
    return 0;
}

static const struct test tests[] = {
#define T(name) { #name, t_##name }
    T(retype_each_type), T(retype_bad_type), T(retype_bad_count), T(retype_slot_occupied),
    T(retype_slot_out_of_range), T(retype_cnode_arg_wrong_type), T(retype_out_of_memory),
    T(retype_too_big), T(retype_revoke_returns_memory), T(retype_delete_returns_memory),
    T(retype_children_keep_memory), T(retype_from_non_untyped), T(retype_cnode_sizes),
    T(retype_many), T(untyped_cannot_be_copied), T(retype_into_new_cnode),
    T(copy), T(copy_fewer_rights), T(rights_never_grow), T(copy_empty_source),
    T(copy_dest_occupied), T(copy_to_null_or_far_slot), T(mint_badge), T(mint_twice_refused),
    T(mint_frame_refused), T(move), T(move_keeps_derivation), T(move_errors), T(delete),
    T(revoke_children), T(revoked_cap_unusable), T(delete_parent_keeps_children),
    T(identify_errors), T(invalid_slots), T(unknown_label), T(wrong_object_type),
    T(missing_rights), T(console_read_errors), T(bad_syscall_number), T(registers_preserved),
    T(send_recv), T(recv_nonblock_empty), T(queue_full), T(notification),
    T(thread_runs), T(thread_blocking_recv), T(thread_notification_wakeup),
    T(thread_suspend_resume), T(thread_bad_registers), T(thread_unconfigured),
    T(fpu_state_per_thread), T(read_regs),
    T(fault_delivered_and_resumed), T(fault_kill), T(fault_on_kernel_memory),
    T(fault_privileged_instruction), T(fault_without_handler),
    T(delete_endpoint_wakes_receiver), T(delete_running_thread),
    T(map_frame), T(map_errors), T(map_rights_limited_by_cap), T(readonly_mapping_enforced),
    T(unmap), T(delete_unmaps), T(revoke_unmaps_copies), T(table_map_errors),
    T(unmap_table_hides_frames), T(new_address_space),
#undef T
};

void run_table(const struct test *t, unsigned long n, unsigned *passed, unsigned *failed)
{
    for (unsigned long i = 0; i < n; i++) {
        suite_current = t[i].name;
        if (t[i].fn() == 0) {
            printf("ktest: ok %s\n", t[i].name);
            (*passed)++;
        } else {
            (*failed)++;
        }
    }
}

#define VIRTIO_NET_DEVICE 1
int net_run(void);
/* ARP and pings with the host at 10.0.2.2 through the virtio-net driver,
 * which is then killed and started again (drvtests.c). */
static const struct test net_tests[] = { { "net_loopback", net_run } };

int suite_run(void)
{
    unsigned passed = 0, failed = 0;
    unsigned long n = sizeof(tests) / sizeof(tests[0]);

    printf("ktest: running %lu tests\n", n + msg_tests_count);
    run_table(tests, n, &passed, &failed);
    run_table(msg_tests, msg_tests_count, &passed, &failed);
    /* Device tests, when the machine has the devices.  The UART tests start
     * and kill drivers of their own on COM2, so they go first; the services
     * tests start the device manager, whose drivers stay until power-off. */
    int com2 = com2_present();
    if (com2)
        run_table(drv_tests, drv_tests_count, &passed, &failed);
    else
        printf("ktest: no 16550 at COM2: %lu driver tests not run\n", drv_tests_count);
    /* Before the services tests: the device manager takes every device. */
    keel_word_t regs;
    if (find_virtio_device(VIRTIO_NET_DEVICE, &regs)) {
        keel_cnode_delete(CN, regs);
        run_table(net_tests, 1, &passed, &failed);
    } else {
        printf("ktest: no virtio-net: 1 net test not run\n");
    }
    const char *missing = svc_tests_missing();
    if (missing)
        printf("ktest: no %s: %lu services tests not run\n", missing,
               svc_tests_count + svc_console_tests_count);
    else
        svc_run(com2, &passed, &failed);
    printf("ktest: %u passed, %u failed\n", passed, failed);
    return failed != 0;
}
