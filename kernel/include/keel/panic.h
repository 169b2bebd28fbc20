#ifndef KEEL_PANIC_H
#define KEEL_PANIC_H

#include <keel/types.h>

/* Prints "keel: panic: <message>" and exits with KEEL_EXIT_FAIL. */
__noreturn void panic(const char *fmt, ...) __printf(1, 2);

#endif
