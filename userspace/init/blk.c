/* keel.test=blkbench: start the virtio-blk driver in benchmark mode on the
 * first block device and wait for its verdict. */
#include "suite.h"

#define PROBE_VA 0x20112000ul

int blk_run(struct keel_bootinfo *bi);

int blk_run(struct keel_bootinfo *bi)
{
    for (unsigned long i = 0; i < bi->device_count; i++) {
        struct keel_device_desc *d = &bi->devices[i];
        keel_word_t regs = slot_alloc();
        keel_cnode_revoke(CN, d->slot);
        if (keel_untyped_retype(d->slot, KEEL_OBJ_FRAME, 0, CN, regs, 1) ||
            keel_frame_map(regs, VS, PROBE_VA, KEEL_RIGHT_READ | KEEL_RIGHT_WRITE))
            continue;
        unsigned long off = d->paddr & 0xfff;
        unsigned int id = ((volatile unsigned int *)(PROBE_VA + off))[2];
        keel_frame_unmap(regs);
        if (id != 2)
            continue;
        keel_word_t ep = make_obj(KEEL_OBJ_ENDPOINT, 0), caps[21], tcb;
        caps[0] = ep;
        caps[1] = regs;
        caps[2] = make_obj(KEEL_OBJ_NOTIFICATION, 0); /* slots 7 and 8: unused here */
        caps[3] = make_obj(KEEL_OBJ_NOTIFICATION, 0);
        for (int f = 0; f < 17; f++)
            caps[4 + f] = make_obj(KEEL_OBJ_FRAME, 0);
        long err = spawn_program("virtio_blk", off, caps, 21, &tcb);
        if (err) {
            printf("blk: cannot start the driver: %ld\n", err);
            return 1;
        }
        keel_word_t verdict;
        if (ep_recv(ep, 0, 0, 0, &verdict, 0, 0, 0))
            return 1;
        return verdict != 0;
    }
    printf("blk: no virtio-blk device\n");
    return 1;
}
