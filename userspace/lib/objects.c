/* The program's slot allocator and object factory (objects.h). */
#include "objects.h"

static keel_word_t next_slot;
static keel_word_t work_ut;

void objects_init(keel_word_t first, keel_word_t ut)
{
    next_slot = first;
    work_ut = ut;
}

keel_word_t objects_untyped(void)
{
    return work_ut;
}

/* Atomic: a program's threads allocate too. */
keel_word_t slot_alloc(void)
{
    return __atomic_fetch_add(&next_slot, 1, __ATOMIC_RELAXED);
}

keel_word_t slot_alloc_range(keel_word_t n)
{
    return __atomic_fetch_add(&next_slot, n, __ATOMIC_RELAXED);
}

keel_word_t make_obj(keel_word_t type, keel_word_t bits)
{
    keel_word_t s = slot_alloc();
    long err = keel_untyped_retype(work_ut, type, bits, CN, s, 1);

    if (err) {
        printf("objects: retype of type %lu failed: %ld\n", type, err);
        keel_exit(0x11);
    }
    return s;
}

keel_word_t make_untyped(unsigned bits)
{
    return make_obj(KEEL_OBJ_UNTYPED, bits);
}

keel_word_t map_new_frame(keel_word_t vaddr, keel_word_t rights)
{
    keel_word_t f = make_obj(KEEL_OBJ_FRAME, 0);
    long err = map_frame(0, VS, f, vaddr, rights);

    if (err) {
        printf("objects: map at 0x%lx failed: %ld\n", vaddr, err);
        keel_exit(0x11);
    }
    return f;
}

keel_word_t obj_make(struct obj_alloc *a, keel_word_t type, keel_word_t bits)
{
    if (!a)
        return make_obj(type, bits);
    if (a->next >= a->end)
        return 0;
    keel_word_t s = a->next++;
    return keel_untyped_retype(a->ut, type, bits, CN, s, 1) ? 0 : s;
}

long map_frame(struct obj_alloc *a, keel_word_t vs, keel_word_t frame, keel_word_t va,
               keel_word_t rights)
{
    for (int tries = 0; tries < 4; tries++) {
        long err = keel_frame_map(frame, vs, va, rights);
        if (err != KEEL_E_NO_TABLE)
            return err;
        keel_word_t t = obj_make(a, KEEL_OBJ_PDPT, 0);
        if (!t || keel_pdpt_map(t, vs, va & ~((1ul << 39) - 1)))
            keel_cnode_delete(CN, t);
        t = obj_make(a, KEEL_OBJ_PD, 0);
        if (!t || keel_pd_map(t, vs, va & ~((1ul << 30) - 1)))
            keel_cnode_delete(CN, t);
        t = obj_make(a, KEEL_OBJ_PT, 0);
        if (!t || keel_pt_map(t, vs, va & ~((1ul << 21) - 1)))
            keel_cnode_delete(CN, t);
    }
    return KEEL_E_NO_TABLE;
}
