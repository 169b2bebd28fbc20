/* keel.test=rng: find a virtio-rng device among those the kernel handed
 * over, start the user-space driver with only its capabilities, and ask it
 * for random bytes. */
#include "suite.h"

#define PROBE_VA 0x20110000ul

int rng_run(struct keel_bootinfo *bi);

int rng_run(struct keel_bootinfo *bi)
{
    for (unsigned long i = 0; i < bi->device_count; i++) {
        struct keel_device_desc *d = &bi->devices[i];
        keel_word_t regs = slot_alloc();
        keel_cnode_revoke(CN, d->slot); /* devices sharing a page: start afresh */
        if (keel_untyped_retype(d->slot, KEEL_OBJ_FRAME, 0, CN, regs, 1) ||
            keel_frame_map(regs, VS, PROBE_VA, KEEL_RIGHT_READ | KEEL_RIGHT_WRITE))
            continue;
        unsigned long off = d->paddr & 0xfff;
        unsigned int id = ((volatile unsigned int *)(PROBE_VA + off))[2];
        keel_frame_unmap(regs);
        printf("rng: device %lu at 0x%lx irq %lu has id %u\n", i, d->paddr, d->irq, id);
        if (id != 4)
            continue;
        keel_word_t irq = slot_alloc(), tcb;
        if (keel_irq_control_get(KEEL_SLOT_IRQ_CONTROL, d->irq, CN, irq)) {
            printf("rng: no irq %lu\n", d->irq);
            return 1;
        }
        keel_word_t ep = make_obj(KEEL_OBJ_ENDPOINT, 0);
        keel_word_t caps[5] = { ep, regs, irq, make_obj(KEEL_OBJ_NOTIFICATION, 0),
                                make_obj(KEEL_OBJ_FRAME, 0) };
        long err = spawn_program("virtio_rng", off, caps, 5, &tcb);
        if (err) {
            printf("rng: cannot start the driver: %ld\n", err);
            return 1;
        }
        keel_word_t in[KEEL_MSG_WORDS] = { 0 }, out[KEEL_MSG_WORDS], prev = 0;
        for (int round = 0; round < 4; round++) {
            err = keel_call(ep, KEEL_LABEL_USER + 1, in, out);
            if (err) {
                printf("rng: read failed: %ld\n", err);
                return 1;
            }
            if (out[0] == prev || (out[0] == 0 && out[1] == 0)) {
                printf("rng: bytes do not look random\n");
                return 1;
            }
            prev = out[0];
            printf("rng: %016lx%016lx\n", out[0], out[1]);
        }
        printf("rng: ok\n");
        return 0;
    }
    printf("rng: no virtio-rng device\n");
    return 1;
}
