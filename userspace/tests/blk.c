/* keel.test=blkbench: start the virtio-blk driver in benchmark mode on the
 * first block device and wait for its verdict. */
#include "suite.h"

int blk_run(void);

int blk_run(void)
{
    keel_word_t regs;
    struct keel_device_desc *d = find_virtio_device(2, &regs);

    if (!d) {
        printf("blk: no virtio-blk device\n");
        return 1;
    }
    unsigned long off = d->paddr & 0xfff;
    keel_word_t ep = make_obj(KEEL_OBJ_ENDPOINT, 0), caps[22], tcb;
    caps[0] = ep;
    caps[1] = regs;
    caps[2] = make_obj(KEEL_OBJ_NOTIFICATION, 0); /* slots 7 and 8: unused here */
    caps[3] = make_obj(KEEL_OBJ_NOTIFICATION, 0);
    for (int f = 0; f < 17; f++)
        caps[4 + f] = make_obj(KEEL_OBJ_FRAME, 0);
    if (!(caps[21] = make_io_space(d)))
        return 1;
    long err = spawn_program("virtio_blk", off, caps, 22, &tcb);
    if (err) {
        printf("blk: cannot start the driver: %ld\n", err);
        return 1;
    }
    keel_word_t verdict;
    if (ep_recv(ep, 0, 0, 0, &verdict, 0, 0, 0))
        return 1;
    return verdict != 0;
}
