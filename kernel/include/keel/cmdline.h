#ifndef KEEL_CMDLINE_H
#define KEEL_CMDLINE_H

#include <keel/types.h>

/* Looks up "key=value" among the space-separated words of cmdline; copies
 * the value (truncated to size-1 bytes).  Words that are not key=value for
 * this key, such as virtio_mmio.device=... or console=ttyS0, are ignored. */
bool cmdline_get(const char *cmdline, const char *key, char *val, size_t size);

#endif
