#ifndef KEEL_CPIO_H
#define KEEL_CPIO_H

#include <keel/types.h>

bool cpio_find(const u8 *base, u64 size, const char *name, const u8 **data, u64 *len);

#endif
