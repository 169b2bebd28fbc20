/* Values written to the exit device (QEMU's isa-debug-exit convention, port
 * 0xf4).  QEMU exits with (value << 1) | 1, so PASS gives 33 and FAIL 35;
 * Keel's VMM maps PASS to 0 and anything else to the same non-zero status. */
#ifndef KEEL_EXIT_H
#define KEEL_EXIT_H

#define KEEL_EXIT_PASS 0x10
#define KEEL_EXIT_FAIL 0x11

#endif
