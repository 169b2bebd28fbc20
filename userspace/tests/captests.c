/* The in-guest suite: untyped memory and retype, capability tables (copy,
 * mint, move, delete, revoke), and how calls are decoded. */
#include "suite.h"

/* -- untyped and retype --------------------------------------------------- */

static int t_retype_each_type(void)
{
    static const keel_word_t types[] = { KEEL_OBJ_ENDPOINT, KEEL_OBJ_NOTIFICATION, KEEL_OBJ_TCB,
                                         KEEL_OBJ_FRAME, KEEL_OBJ_PT, KEEL_OBJ_PD,
                                         KEEL_OBJ_PDPT, KEEL_OBJ_VSPACE };
    for (unsigned i = 0; i < sizeof(types) / sizeof(types[0]); i++) {
        keel_word_t s = slot_alloc(), type, rights;
        OK(keel_untyped_retype(suite_untyped, types[i], 0, CN, s, 1));
        OK(keel_cnode_identify(CN, s, &type, &rights, 0));
        EXPECT(type == types[i] && rights == KEEL_RIGHT_ALL);
    }
    return 0;
}

static int t_retype_bad_type(void)
{
    keel_word_t s = slot_alloc();

    EXPECT_ERR(keel_untyped_retype(suite_untyped, 0, 0, CN, s, 1), KEEL_E_INVALID_ARG);
    EXPECT_ERR(keel_untyped_retype(suite_untyped, 99, 0, CN, s, 1), KEEL_E_INVALID_ARG);
    EXPECT_ERR(keel_untyped_retype(suite_untyped, KEEL_OBJ_CONSOLE, 0, CN, s, 1),
               KEEL_E_INVALID_ARG);
    return 0;
}

static int t_retype_bad_count(void)
{
    keel_word_t s = slot_alloc();

    EXPECT_ERR(keel_untyped_retype(suite_untyped, KEEL_OBJ_ENDPOINT, 0, CN, s, 0),
               KEEL_E_INVALID_ARG);
    EXPECT_ERR(keel_untyped_retype(suite_untyped, KEEL_OBJ_ENDPOINT, 0, CN, s, 100000),
               KEEL_E_INVALID_ARG);
    return 0;
}

static int t_retype_slot_occupied(void)
{
    keel_word_t s = make_obj(KEEL_OBJ_ENDPOINT, 0);

    EXPECT_ERR(keel_untyped_retype(suite_untyped, KEEL_OBJ_ENDPOINT, 0, CN, s, 1), KEEL_E_EXISTS);
    return 0;
}

static int t_retype_slot_out_of_range(void)
{
    keel_word_t last = (1ul << suite_boot->cnode_bits) - 1;

    EXPECT_ERR(keel_untyped_retype(suite_untyped, KEEL_OBJ_ENDPOINT, 0, CN, last, 2),
               KEEL_E_INVALID_ARG);
    EXPECT_ERR(keel_untyped_retype(suite_untyped, KEEL_OBJ_ENDPOINT, 0, CN, 0, 1),
               KEEL_E_INVALID_ARG);
    return 0;
}

static int t_retype_cnode_arg_wrong_type(void)
{
    keel_word_t ep = make_obj(KEEL_OBJ_ENDPOINT, 0);

    EXPECT_ERR(keel_untyped_retype(suite_untyped, KEEL_OBJ_ENDPOINT, 0, ep, 1, 1),
               KEEL_E_WRONG_TYPE);
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

    EXPECT_ERR(keel_untyped_retype(suite_untyped, KEEL_OBJ_CNODE, 0, CN, s, 1), KEEL_E_INVALID_ARG);
    EXPECT_ERR(keel_untyped_retype(suite_untyped, KEEL_OBJ_CNODE, 40, CN, s, 1),
               KEEL_E_INVALID_ARG);
    OK(keel_untyped_retype(suite_untyped, KEEL_OBJ_CNODE, 4, CN, s, 1));
    return 0;
}

static int t_retype_many(void)
{
    keel_word_t first = slot_alloc(), type;

    for (int i = 1; i < 16; i++)
        slot_alloc();
    OK(keel_untyped_retype(suite_untyped, KEEL_OBJ_NOTIFICATION, 0, CN, first, 16));
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

    OK(keel_untyped_retype(suite_untyped, KEEL_OBJ_ENDPOINT, 0, cn, 1, 7));
    EXPECT_ERR(keel_untyped_retype(suite_untyped, KEEL_OBJ_ENDPOINT, 0, cn, 7, 1), KEEL_E_EXISTS);
    EXPECT_ERR(keel_untyped_retype(suite_untyped, KEEL_OBJ_ENDPOINT, 0, cn, 8, 1),
               KEEL_E_INVALID_ARG);
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

/* Delete, move and revoke may run with the objects lock shared and leave a
 * slot in its grace period (kernel/core/grace.c): to users it is empty at
 * once, and free at once - a fill goes exclusive if it must. */
static int t_emptied_slot_refills_at_once(void)
{
    keel_word_t ep = make_obj(KEEL_OBJ_ENDPOINT, 0), a = slot_alloc(), b = slot_alloc();
    keel_word_t type, rights, badge;

    for (keel_word_t i = 1; i <= 20; i++) {
        OK(keel_cnode_copy(CN, a, CN, ep, KEEL_RIGHT_ALL));
        OK(keel_cnode_delete(CN, a));
        OK(keel_cnode_identify(CN, a, &type, 0, 0));
        EXPECT(type == 0);
        OK(keel_cnode_copy(CN, a, CN, ep, KEEL_RIGHT_READ));
        OK(keel_cnode_move(CN, b, CN, a));
        OK(keel_cnode_copy(CN, a, CN, ep, KEEL_RIGHT_ALL));
        OK(keel_cnode_revoke(CN, ep));
        OK(keel_cnode_identify(CN, a, &type, 0, 0));
        EXPECT(type == 0);
        OK(keel_cnode_identify(CN, b, &type, 0, 0));
        EXPECT(type == 0);
        OK(keel_cnode_mint(CN, b, CN, ep, KEEL_RIGHT_WRITE, i));
        OK(keel_cnode_identify(CN, b, &type, &rights, &badge));
        EXPECT(type == KEEL_OBJ_ENDPOINT && rights == KEEL_RIGHT_WRITE && badge == i);
        OK(keel_cnode_delete(CN, b));
    }
    OK(ep_send(ep, 1, 0, 0, 0, 0)); /* the object lived through it all */
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
    EXPECT_ERR(keel_untyped_retype(suite_untyped, KEEL_OBJ_ENDPOINT, 0, cn_ro, slot_alloc(), 1),
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

/* Copy and delete take the capability fast path (kernel/core/capfast.c)
 * when the CNode capabilities are in the caller's table with their rights
 * and the slots are inside their tables; every other case falls back to the
 * general path, with the same results: these are the fallbacks. */
static int t_copy_delete_fast_fallbacks(void)
{
    keel_word_t ep = make_obj(KEEL_OBJ_ENDPOINT, 0), n = make_obj(KEEL_OBJ_CNODE, 2);
    keel_word_t nt = make_obj(KEEL_OBJ_NOTIFICATION, 0);
    keel_word_t cn_ro = slot_alloc(), cn_wo = slot_alloc(), x = slot_alloc(), type, rights;
    keel_word_t in[KEEL_MSG_WORDS] = { x, CN, ep, KEEL_RIGHT_ALL }, out[KEEL_MSG_WORDS];

    OK(keel_cnode_copy(CN, cn_ro, CN, CN, KEEL_RIGHT_READ));
    OK(keel_cnode_copy(CN, cn_wo, CN, CN, KEEL_RIGHT_WRITE));
    EXPECT_ERR(keel_cnode_copy(cn_ro, x, CN, ep, KEEL_RIGHT_ALL), KEEL_E_NO_RIGHTS);
    EXPECT_ERR(keel_cnode_copy(CN, x, cn_wo, ep, KEEL_RIGHT_ALL), KEEL_E_NO_RIGHTS);
    EXPECT_ERR(keel_cnode_copy(CN, x, nt, ep, KEEL_RIGHT_ALL), KEEL_E_WRONG_TYPE);
    EXPECT_ERR(keel_cnode_copy(CN, x, slot_alloc(), ep, KEEL_RIGHT_ALL), KEEL_E_INVALID_CAP);
    EXPECT_ERR(keel_cnode_copy(CN, x, CN, 1ul << 40, KEEL_RIGHT_ALL), KEEL_E_INVALID_CAP);
    EXPECT_ERR(keel_cnode_copy(nt, x, CN, ep, KEEL_RIGHT_ALL), KEEL_E_WRONG_TYPE);
    EXPECT_ERR(keel_cnode_delete(cn_ro, x), KEEL_E_NO_RIGHTS);
    EXPECT_ERR(keel_cnode_delete(nt, x), KEEL_E_WRONG_TYPE);
    /* another table than the caller's, named by a capability in it */
    OK(keel_cnode_copy(n, 3, CN, ep, KEEL_RIGHT_READ));
    EXPECT_ERR(keel_cnode_copy(n, 4, CN, ep, KEEL_RIGHT_ALL), KEEL_E_INVALID_ARG);
    OK(keel_cnode_copy(CN, x, n, 3, KEEL_RIGHT_ALL));
    OK(keel_cnode_identify(CN, x, &type, &rights, 0));
    EXPECT(type == KEEL_OBJ_ENDPOINT && rights == KEEL_RIGHT_READ);
    OK(keel_cnode_delete(n, 3));
    OK(keel_cnode_delete(CN, x));
    /* the results: the error and six words 0, whichever path */
    for (unsigned i = 0; i < KEEL_MSG_WORDS; i++)
        out[i] = 0x5555;
    OK(keel_invoke(CN, KEEL_CALL_CNODE_COPY, in, out));
    for (unsigned i = 0; i < KEEL_MSG_WORDS; i++)
        EXPECT(out[i] == 0);
    /* the last capability to an object: its delete destroys it (exclusive) */
    OK(keel_cnode_delete(CN, x));
    OK(keel_cnode_delete(CN, ep));
    OK(keel_cnode_identify(CN, ep, &type, 0, 0));
    EXPECT(type == 0);
    EXPECT_ERR(keel_cnode_copy(CN, x, CN, ep, KEEL_RIGHT_ALL), KEEL_E_INVALID_CAP);
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

const struct test cap_tests[] = {
#define T(name) { #name, t_##name }
    T(retype_each_type), T(retype_bad_type), T(retype_bad_count), T(retype_slot_occupied),
    T(retype_slot_out_of_range), T(retype_cnode_arg_wrong_type), T(retype_out_of_memory),
    T(retype_too_big), T(retype_revoke_returns_memory), T(retype_delete_returns_memory),
    T(retype_children_keep_memory), T(retype_from_non_untyped), T(retype_cnode_sizes),
    T(retype_many), T(untyped_cannot_be_copied), T(retype_into_new_cnode), T(copy),
    T(copy_fewer_rights), T(rights_never_grow), T(copy_empty_source), T(copy_dest_occupied),
    T(copy_to_null_or_far_slot), T(mint_badge), T(mint_twice_refused), T(mint_frame_refused),
    T(move), T(move_keeps_derivation), T(move_errors), T(delete), T(revoke_children),
    T(revoked_cap_unusable), T(delete_parent_keeps_children), T(emptied_slot_refills_at_once),
    T(identify_errors),
    T(invalid_slots), T(unknown_label), T(wrong_object_type), T(missing_rights),
    T(console_read_errors), T(copy_delete_fast_fallbacks), T(bad_syscall_number), T(registers_preserved),
#undef T
};
const unsigned long cap_tests_count = sizeof(cap_tests) / sizeof(cap_tests[0]);
