/* Starting the name service and the device manager (start.h). */
#include "start.h"
#include "../devmgr/devmgr.h"

#define NS_UT_BITS 17
#define NS_SLOTS 32

/* What the device manager may start: its initrd holds these only. */
static const char *const driver_programs[] = {
    "uart", "virtio_console", "virtio_net", "virtio_blk", "virtio_rng",
};
#define NPROGRAMS (sizeof(driver_programs) / sizeof(driver_programs[0]))

/* The name service from an untyped of its own; *admin: its endpoint
 * badged for registering. */
static long start_names(struct services *s, keel_word_t *admin)
{
    struct obj_alloc ns = { make_untyped(NS_UT_BITS), slot_alloc_range(NS_SLOTS), 0 };
    long err;

    ns.end = ns.next + NS_SLOTS;
    keel_word_t ep = ns.next++;
    if ((err = keel_untyped_retype(ns.ut, KEEL_OBJ_ENDPOINT, 0, CN, ep, 1)) ||
        (err = spawn_process_from(&ns, "nameserv", 0, &ep, 1, 0, &s->ns)))
        return err;
    *admin = slot_alloc();
    s->names = slot_alloc();
    if ((err = keel_cnode_mint(CN, *admin, CN, ep, KEEL_RIGHT_WRITE | KEEL_RIGHT_GRANT,
                               NS_BADGE_ADMIN)))
        return err;
    return keel_cnode_copy(CN, s->names, CN, ep, KEEL_RIGHT_WRITE | KEEL_RIGHT_GRANT);
}

static struct keel_bootinfo dm_boot; /* its copy, before it is copied into its frames */

static long start_devmgr(struct services *s, keel_word_t admin)
{
    const struct keel_bootinfo *bi = boot_info();
    struct process *p = &s->dm;
    const void *prog[NPROGRAMS];
    unsigned long len[NPROGRAMS];
    unsigned n = 0;
    long err;

    if ((err = process_load(0, "devmgr", DM_CNODE_BITS, SPAWN_STACK_PAGES, p)))
        return err;
    dm_boot = *bi;
    dm_boot.cnode_bits = DM_CNODE_BITS;
    dm_boot.first_free = DM_SLOT_FIRST_FREE;
    dm_boot.untyped_count = 0; /* its memory is the pool */
    dm_boot.initrd_size = 0;
    for (unsigned i = 0; i < NPROGRAMS; i++) {
        if ((prog[n] = initrd_entry(driver_programs[i], &len[n])))
            dm_boot.initrd_size += len[n++];
    }
    /* Devices sharing a page (QEMU's transports) share its capability. */
    for (unsigned i = 0; i < bi->device_count; i++) {
        unsigned j = 0;
        while (bi->devices[j].slot != bi->devices[i].slot)
            j++;
        dm_boot.devices[i].slot = DM_SLOT_FIRST_DEVICE + j;
    }
    const void *boot_data[1] = { &dm_boot };
    unsigned long boot_len[1] = { sizeof(dm_boot) };
    if ((err = process_map_copy(0, p, KEEL_BOOTINFO_VADDR, boot_data, boot_len, 1)) ||
        (err = process_map_copy(0, p, KEEL_INITRD_VADDR, prog, len, n)))
        return err;
    s->devmgr = make_obj(KEEL_OBJ_ENDPOINT, 0);
    if ((err = process_give(p, KEEL_SLOT_IRQ_CONTROL, KEEL_SLOT_IRQ_CONTROL, KEEL_RIGHT_ALL)) ||
        (err = process_give(p, KEEL_SLOT_IO_PORT_CONTROL, KEEL_SLOT_IO_PORT_CONTROL,
                            KEEL_RIGHT_ALL)) ||
        (err = process_give(p, KEEL_SLOT_IO_SPACE_CONTROL, KEEL_SLOT_IO_SPACE_CONTROL,
                            KEEL_RIGHT_ALL)) ||
        (err = process_give(p, DM_SLOT_ENDPOINT, s->devmgr, KEEL_RIGHT_ALL)) ||
        (err = process_give(p, DM_SLOT_POOL, make_untyped(DM_POOL_BITS), KEEL_RIGHT_ALL)))
        return err;
    /* The registering endpoint moves: the manager holds its only copy. */
    if ((err = keel_cnode_move(p->cnode, DM_SLOT_NAMES, CN, admin)))
        return err;
    for (unsigned i = 0; i < bi->device_count; i++) {
        if (dm_boot.devices[i].slot == DM_SLOT_FIRST_DEVICE + i &&
            (err = process_give(p, DM_SLOT_FIRST_DEVICE + i, bi->devices[i].slot,
                                KEEL_RIGHT_ALL)))
            return err;
    }
    if ((err = process_start(p, 0, 0)))
        return err;
    /* It serves its endpoint once its drivers are started and named. */
    keel_word_t in[KEEL_MSG_WORDS] = { 0 }, out[KEEL_MSG_WORDS];
    err = keel_call(s->devmgr, DM_LIST, in, out);
    return err == KEEL_E_INVALID_ARG ? KEEL_E_OK : err;
}

long services_start(struct services *out)
{
    keel_word_t admin;
    long err = start_names(out, &admin);

    if (err) {
        printf("init: cannot start the name service: %ld\n", err);
        return err;
    }
    if ((err = start_devmgr(out, admin)))
        printf("init: cannot start the device manager: %ld\n", err);
    return err;
}
