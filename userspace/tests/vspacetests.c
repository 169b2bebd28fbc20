/* The in-guest suite: address spaces, page tables and frame mappings. */
#include "suite.h"

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
    /* the last user page: a syscall at its end would return to a
     * non-canonical address (vspace.c) */
    EXPECT_ERR(keel_frame_map(g, VS, KEEL_USER_TOP - KEEL_PAGE_SIZE, rw), KEEL_E_INVALID_ARG);
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

const struct test vspace_tests[] = {
#define T(name) { #name, t_##name }
    T(map_frame), T(map_errors), T(map_rights_limited_by_cap), T(readonly_mapping_enforced),
    T(unmap), T(delete_unmaps), T(revoke_unmaps_copies), T(table_map_errors),
    T(unmap_table_hides_frames), T(new_address_space),
#undef T
};
const unsigned long vspace_tests_count = sizeof(vspace_tests) / sizeof(vspace_tests[0]);
