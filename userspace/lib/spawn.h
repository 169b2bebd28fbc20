/* Processes from programs in the initrd.
 *
 * A process gets a new address space built page by page from the ELF file,
 * a capability table of its own and a thread; the standard slots (its own
 * table, address space, thread and the console's write right) and then the
 * capabilities it is given, from slot 5 on.  Everything is made from the
 * program's own factory (objects.h), or from an obj_alloc of the caller's:
 * revoking that one untyped then takes the whole process down and returns
 * its memory.
 *
 * The initrd is read at KEEL_INITRD_VADDR, the size from the boot
 * information at KEEL_BOOTINFO_VADDR: the root task's, or the copy of them
 * a process was given (process_map_copy). */
#ifndef KEEL_SPAWN_H
#define KEEL_SPAWN_H

#include "objects.h"

#define SPAWN_CNODE_BITS 6
#define SPAWN_STACK_PAGES 4
#define SPAWN_STACK_TOP 0x7fff0000ul

static inline struct keel_bootinfo *boot_info(void)
{
    return (struct keel_bootinfo *)KEEL_BOOTINFO_VADDR;
}

/* A process: our capabilities to its thread, table and address space. */
struct process {
    keel_word_t tcb, cnode, vspace;
    keel_word_t entry;
};

/* The file name of the initrd, or null. */
const unsigned char *initrd_find(const char *name, unsigned long *len);
/* Its whole cpio entry, which copied after others makes a smaller initrd. */
const void *initrd_entry(const char *name, unsigned long *len);

/* Loads name into a new process (not started) with a table of 2^cnode_bits
 * slots and stack_pages of stack below SPAWN_STACK_TOP. */
long process_load(struct obj_alloc *a, const char *name, unsigned cnode_bits,
                  unsigned stack_pages, struct process *out);
/* Our capability cap into the process's slot: a copy with rights, or, for
 * untyped memory (which cannot be copied), the capability itself. */
long process_give(struct process *p, keel_word_t slot, keel_word_t cap, keel_word_t rights);
/* Fresh frames at va in the process, read-only, holding the len bytes at
 * each of data[0..n) one after the other. */
long process_map_copy(struct obj_alloc *a, struct process *p, keel_word_t va,
                      const void *const *data, const unsigned long *len, unsigned n);
/* Starts its thread at the program's entry with arg, faults sent to
 * fault_ep (a slot of ours; 0: none). */
long process_start(struct process *p, keel_word_t arg, keel_word_t fault_ep);

/* All in one: a standard process with caps[0..ncaps) in slots 5.. (a 0
 * leaves that slot empty), from a's memory (0: the program's own). */
long spawn_process_from(struct obj_alloc *a, const char *name, keel_word_t arg,
                        const keel_word_t *caps, unsigned ncaps, keel_word_t fault_ep,
                        struct process *out);
long spawn_process(const char *name, keel_word_t arg, const keel_word_t *caps, unsigned ncaps,
                   keel_word_t fault_ep, struct process *out);
long spawn_program(const char *name, keel_word_t arg, const keel_word_t *caps, unsigned ncaps,
                   keel_word_t *tcb_out);

/* Stops a process and deletes every capability it held: calls it was
 * answering end with KEEL_E_REVOKED, its interrupt line is free again.
 * (The frames of its image and stack stay with us.) */
void process_kill(struct process *p);

#endif
