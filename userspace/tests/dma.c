/* keel.test=dma: DMA confinement with the rng driver, under Keel's IOMMU.
 *
 * The driver holds its queue frame and a spare frame, both mapped into its
 * device's io_space.  We ask it to point the device at a frame of ours it
 * was never given: the request must fail, the IOMMU count the fault, and
 * our frame stay as it was; good requests keep working.  Then we take the
 * spare frame away (revoke): the window goes with it, so the device can no
 * longer write there even though the driver still knows the address.  The
 * io_space calls' errors are checked on the way, and at the end the
 * io_space is destroyed, which leaves the device no window at all (the
 * host test looks).  Prints "dma: ok". */
#include "suite.h"

#define VICTIM_VA 0x20130000ul
#define SPARE_VA 0x20131000ul
#define CHUNK 48
#define PATTERN_VICTIM 0xa5
#define PATTERN_SPARE 0x5a

int dma_run(void);

static int all_bytes(unsigned long va, unsigned char v)
{
    for (unsigned long i = 0; i < 4096; i++) {
        if (((volatile unsigned char *)va)[i] != v)
            return 0;
    }
    return 1;
}

/* One request to the driver; the kernel error, the device's length in *len. */
static long ask(keel_word_t ep, unsigned long op, keel_word_t w0, keel_word_t *len)
{
    keel_word_t in[KEEL_MSG_WORDS] = { w0 }, out[KEEL_MSG_WORDS] = { 0 };
    long err = keel_call(ep, KEEL_LABEL_USER + op, in, out);

    *len = out[0];
    return err;
}

static unsigned long faults(keel_word_t io)
{
    keel_word_t device = 0, present = 0, count = 0;

    if (keel_io_space_info(io, &device, &present, &count) || !present)
        return ~0ul;
    return count;
}

static int bad_calls(keel_word_t io, struct keel_device_desc *d, keel_word_t regs)
{
    keel_word_t f = make_obj(KEEL_OBJ_FRAME, 0), copy = slot_alloc(), ro = slot_alloc();

    suite_current = "dma_bad_calls";
    /* one io_space per device; only device addresses */
    EXPECT_ERR(keel_io_space_control_issue(KEEL_SLOT_IO_SPACE_CONTROL, d->paddr, CN, slot_alloc()),
               KEEL_E_EXISTS);
    EXPECT_ERR(keel_io_space_control_issue(KEEL_SLOT_IO_SPACE_CONTROL, 0x100000, CN, slot_alloc()),
               KEEL_E_INVALID_ARG);
    /* rights: some, and only read/write, and no more than the frame has */
    EXPECT_ERR(keel_io_space_map(io, f, 0), KEEL_E_INVALID_ARG);
    EXPECT_ERR(keel_io_space_map(io, f, KEEL_RIGHT_EXEC), KEEL_E_INVALID_ARG);
    OK(keel_cnode_copy(CN, ro, CN, f, KEEL_RIGHT_READ));
    EXPECT_ERR(keel_io_space_map(io, ro, KEEL_RIGHT_WRITE), KEEL_E_NO_RIGHTS);
    /* device memory is not a DMA target; a non-frame is not a frame */
    EXPECT_ERR(keel_io_space_map(io, regs, KEEL_RIGHT_READ), KEEL_E_INVALID_ARG);
    EXPECT_ERR(keel_io_space_map(io, KEEL_SLOT_CNODE, KEEL_RIGHT_READ), KEEL_E_WRONG_TYPE);
    EXPECT_ERR(keel_io_space_map(KEEL_SLOT_CNODE, f, KEEL_RIGHT_READ), KEEL_E_WRONG_TYPE);
    /* a window belongs to one capability; a copy of it is not mapped */
    EXPECT_ERR(keel_io_space_unmap(io, f), KEEL_E_NOT_MAPPED);
    OK(keel_io_space_map(io, f, KEEL_RIGHT_READ | KEEL_RIGHT_WRITE));
    EXPECT_ERR(keel_io_space_map(io, f, KEEL_RIGHT_READ), KEEL_E_EXISTS);
    OK(keel_cnode_copy(CN, copy, CN, f, KEEL_RIGHT_ALL));
    EXPECT_ERR(keel_io_space_unmap(io, copy), KEEL_E_NOT_MAPPED);
    OK(keel_io_space_unmap(io, f));
    EXPECT_ERR(keel_io_space_unmap(io, f), KEEL_E_NOT_MAPPED);
    OK(keel_io_space_map(io, copy, KEEL_RIGHT_READ));
    OK(keel_cnode_delete(CN, copy)); /* the window goes with it */
    EXPECT_ERR(keel_io_space_unmap(io, copy), KEEL_E_INVALID_CAP);
    printf("ktest: ok dma_bad_calls\n");
    return 0;
}

int dma_run(void)
{
    keel_word_t ep, io, len, regs;
    keel_word_t victim = map_new_frame(VICTIM_VA, KEEL_RIGHT_READ | KEEL_RIGHT_WRITE);
    keel_word_t spare = map_new_frame(SPARE_VA, KEEL_RIGHT_READ | KEEL_RIGHT_WRITE);
    keel_word_t victim_pa = 0;

    suite_current = "dma";
    memset((void *)VICTIM_VA, PATTERN_VICTIM, 4096);
    memset((void *)SPARE_VA, PATTERN_SPARE, 4096);
    OK(keel_frame_info(victim, &victim_pa, 0));
    OK(rng_start(spare, &ep, &io));
    unsigned long f0 = faults(io);
    EXPECT(f0 != ~0ul); /* the Keel IOMMU is there and knows the device */

    /* good requests work: into its queue frame, into the spare frame */
    OK(ask(ep, 1, 0, &len));
    OK(ask(ep, 3, 0, &len));
    EXPECT(len == CHUNK && !all_bytes(SPARE_VA, PATTERN_SPARE));
    EXPECT(faults(io) == f0);

    /* a frame it was not given: refused, reported, untouched */
    EXPECT_ERR(ask(ep, 2, victim_pa, &len), KEEL_E_BAD_STATE);
    EXPECT(len == 0);
    EXPECT(faults(io) == f0 + 1);
    EXPECT(all_bytes(VICTIM_VA, PATTERN_VICTIM));
    OK(ask(ep, 1, 0, &len)); /* the device still works */
    printf("dma: outside access refused (fault %lu), device still works\n", faults(io));

    /* revoke the spare frame: the driver's copy, and its window, go */
    memset((void *)SPARE_VA, PATTERN_SPARE, 4096);
    OK(keel_cnode_revoke(CN, spare));
    EXPECT_ERR(ask(ep, 3, 0, &len), KEEL_E_BAD_STATE);
    EXPECT(len == 0);
    EXPECT(faults(io) == f0 + 2);
    EXPECT(all_bytes(SPARE_VA, PATTERN_SPARE));
    OK(ask(ep, 1, 0, &len));
    printf("dma: revoked frame no longer reachable (fault %lu)\n", faults(io));

    struct keel_device_desc *d = find_virtio_device(4, &regs);
    EXPECT(d != 0);
    if (bad_calls(io, d, regs))
        return 1;

    /* Destroying the io_space (all its capabilities, the driver's too)
     * empties the device's table; the device can have a new one. */
    suite_current = "dma_destroy";
    OK(keel_cnode_revoke(CN, io));
    OK(keel_cnode_delete(CN, io));
    keel_word_t again = slot_alloc();
    OK(keel_io_space_control_issue(KEEL_SLOT_IO_SPACE_CONTROL, d->paddr, CN, again));
    OK(keel_cnode_delete(CN, again));
    printf("dma: ok\n");
    return 0;
}
