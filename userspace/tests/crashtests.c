/* keel.test=blkwrites: a disk client that writes and flushes for ever,
 * for the host's crash-consistency test (tests/boot/test_crash.py kills
 * the VMM with SIGKILL at a random moment and checks the image).  Through
 * the device manager's virtio-blk driver, round r writes 4 KiB block
 * r % BLKW_BLOCKS (from BLKW_FIRST on) filled with the words
 * BLKW_MAGIC ^ r << 20 ^ i, flushes, and only then prints
 * "blkw: flushed r": a round the host saw printed must be on the image. */
#include "../devmgr/devmgr.h"
#include "../lib/start.h"
#include "suite.h"

#define BLKW_VA 0x20200000ul
#define BLKW_FIRST 64   /* blocks before it are never written */
#define BLKW_BLOCKS 256 /* nor after BLKW_FIRST + BLKW_BLOCKS */
#define BLKW_MAGIC 0x6b65656c626c6b77ul

int blkwrites_run(void);

int blkwrites_run(void)
{
    struct services svc;
    struct service s;
    unsigned long done;
    keel_word_t in[KEEL_MSG_WORDS] = { 0 }, out[KEEL_MSG_WORDS];

    if (services_start(&svc))
        return 1;
    memset(&s, 0, sizeof(s));
    s.ns = svc.names;
    s.inbox = make_obj(KEEL_OBJ_ENDPOINT, 0);
    s.window = slot_alloc_range(4);
    s.buf = (unsigned char *)BLKW_VA;
    s.frame = map_new_frame(BLKW_VA, KEEL_RIGHT_READ | KEEL_RIGHT_WRITE);
    ns_pack("blk0", s.name);
    OK(service_connect(&s));
    printf("blkw: writing\n");
    for (unsigned long r = 0;; r++) {
        unsigned long block = BLKW_FIRST + r % BLKW_BLOCKS, *w = (unsigned long *)s.buf;
        for (unsigned i = 0; i < 512; i++)
            w[i] = BLKW_MAGIC ^ r << 20 ^ i;
        OK(service_io(&s, DRV_WRITE, 4096, block * 4096, 0, &done));
        EXPECT(done == 4096);
        OK(service_call(&s, DRV_FLUSH, in, out));
        printf("blkw: flushed %lu\n", r);
    }
}
