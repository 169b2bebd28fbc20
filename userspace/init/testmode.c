/* Handing the machine to the test program (testmode.h). */
#include "../lib/spawn.h"
#include "testmode.h"

long tests_start(void)
{
    struct keel_bootinfo *bi = boot_info();
    struct process p;
    long err;

    if ((err = process_load(0, "tests", (unsigned)bi->cnode_bits, KEEL_STACK_PAGES, &p)))
        return err;
    const void *boot_data[1] = { bi }, *initrd[1] = { (const void *)KEEL_INITRD_VADDR };
    unsigned long boot_len[1] = { sizeof(*bi) }, initrd_len[1] = { bi->initrd_size };
    if ((err = process_map_copy(0, &p, KEEL_BOOTINFO_VADDR, boot_data, boot_len, 1)) ||
        (err = process_map_copy(0, &p, KEEL_INITRD_VADDR, initrd, initrd_len, 1)))
        return err;
    /* Its console may read and power off, as ours. */
    if ((err = keel_cnode_delete(p.cnode, KEEL_SLOT_CONSOLE)) ||
        (err = process_give(&p, KEEL_SLOT_CONSOLE, KEEL_SLOT_CONSOLE, KEEL_RIGHT_ALL)))
        return err;
    for (keel_word_t s = KEEL_SLOT_IRQ_CONTROL; s <= KEEL_SLOT_IO_SPACE_CONTROL; s++) {
        if ((err = process_give(&p, s, s, KEEL_RIGHT_ALL)))
            return err;
    }
    for (unsigned long i = 0; i < bi->device_count; i++) {
        keel_word_t s = bi->devices[i].slot, type = 0;
        keel_cnode_identify(p.cnode, s, &type, 0, 0); /* devices can share a page */
        if (!type && (err = process_give(&p, s, s, KEEL_RIGHT_ALL)))
            return err;
    }
    /* Our priority ceiling: it may set any priority, as the root task may. */
    if ((err = keel_tcb_set_mcp(p.tcb, KEEL_PRIO_TOP, KEEL_SLOT_TCB)))
        return err;
    /* Last: our memory, the untyped our objects for it came from among it. */
    for (unsigned long i = 0; i < bi->untyped_count; i++) {
        keel_word_t s = KEEL_SLOT_FIRST_UNTYPED + i;
        if ((err = process_give(&p, s, s, KEEL_RIGHT_ALL)))
            return err;
    }
    return process_start(&p, KEEL_BOOTINFO_VADDR, 0);
}
