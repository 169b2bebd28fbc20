/* A program's own slots and objects: a slot allocator over its capability
 * table and an object factory over one untyped capability of its own.
 * Every program that makes objects (init, the device manager, the tests)
 * sets it up once with objects_init. */
#ifndef KEEL_OBJECTS_H
#define KEEL_OBJECTS_H

#include "keel.h"

#define CN KEEL_SLOT_CNODE
#define VS KEEL_SLOT_VSPACE

/* Slots from first on are free; objects come from the untyped in slot ut. */
void objects_init(keel_word_t first, keel_word_t ut);
keel_word_t objects_untyped(void);

keel_word_t slot_alloc(void);
keel_word_t slot_alloc_range(keel_word_t n); /* n consecutive slots: the first */

/* These end the program (exit code 0x11) when memory or slots run out: a
 * program that cannot make its objects cannot go on. */
keel_word_t make_obj(keel_word_t type, keel_word_t bits);
keel_word_t make_untyped(unsigned bits);
keel_word_t map_new_frame(keel_word_t vaddr, keel_word_t rights);

/* Objects made from one untyped into a range of slots [next, end): a
 * process made this way goes when that untyped is revoked. */
struct obj_alloc {
    keel_word_t ut, next, end;
};

/* An object from a (the program's own factory when a is null) in a fresh
 * slot; 0 when there is no room. */
keel_word_t obj_make(struct obj_alloc *a, keel_word_t type, keel_word_t bits);

/* Maps frame at va in vs, making the paging levels that are missing from a
 * (or the program's own factory). */
long map_frame(struct obj_alloc *a, keel_word_t vs, keel_word_t frame, keel_word_t va,
               keel_word_t rights);

#endif
