/* keel.test=rng: find a virtio-rng device among those the kernel handed
 * over, start the user-space driver with only its capabilities, and ask it
 * for random bytes. */
#include "suite.h"
#include "../lib/driver.h"

int rng_run(void);

long rng_start(keel_word_t spare, keel_word_t *ep, keel_word_t *io)
{
    keel_word_t regs;
    struct keel_device_desc *d = find_virtio_device(4, &regs);

    if (!d) {
        printf("rng: no virtio-rng device\n");
        return KEEL_E_INVALID_ARG;
    }
    unsigned long off = d->paddr & 0xfff;
    printf("rng: device at 0x%lx irq %lu\n", d->paddr, d->irq);
    keel_word_t irq = slot_alloc(), tcb;
    long err = keel_irq_control_get(KEEL_SLOT_IRQ_CONTROL, d->irq, CN, irq);
    if (err) {
        printf("rng: no irq %lu\n", d->irq);
        return err;
    }
    if (!(*io = make_io_space(d)))
        return KEEL_E_BAD_STATE;
    *ep = make_obj(KEEL_OBJ_ENDPOINT, 0);
    /* The standard driver slots (driver.h): the ring frame and the spare
     * are its first two DMA frames, the io_space after all of them. */
    keel_word_t caps[DRV_SLOT_IO_SPACE - DRV_SLOT_SERVICE + 1] = {
        *ep, regs, irq, make_obj(KEEL_OBJ_NOTIFICATION, 0), make_obj(KEEL_OBJ_FRAME, 0),
        spare ? spare : make_obj(KEEL_OBJ_FRAME, 0),
    };
    caps[DRV_SLOT_IO_SPACE - DRV_SLOT_SERVICE] = *io;
    err = spawn_program("virtio_rng", off, caps, DRV_SLOT_IO_SPACE - DRV_SLOT_SERVICE + 1, &tcb);
    if (err)
        printf("rng: cannot start the driver: %ld\n", err);
    return err;
}

int rng_run(void)
{
    keel_word_t ep, io;

    if (rng_start(0, &ep, &io))
        return 1;
    keel_word_t in[KEEL_MSG_WORDS] = { 0 }, out[KEEL_MSG_WORDS], prev = 0;
    for (int round = 0; round < 4; round++) {
        long err = keel_call(ep, KEEL_LABEL_USER + 1, in, out);
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
    /* Reported, not judged here: the answer depends on the line's trigger
     * mode (tests/boot/test_user_drivers.py asks it of QEMU's level lines). */
    if (keel_call(ep, KEEL_LABEL_USER + 4, in, out) == KEEL_E_OK)
        printf("rng: a completion while the line was masked: %s\n",
               (long)out[0] == 1 ? "interrupt after unmask"
               : out[0] == 0    ? "no interrupt after unmask"
                                : "device did not complete");
    printf("rng: ok\n");
    return 0;
}
