#ifndef KEEL_PRINTK_H
#define KEEL_PRINTK_H

#include <keel/types.h>

/* Longest text one printk call emits atomically; longer output is cut. */
#define PRINTK_MAX 512

/* Formats into a buffer first and then writes it to the console in one
 * locked operation, so lines from different CPUs never interleave.
 * Supported: %d %i %u %x %X %p %s %c %%, flags '0' '-', a width, and the
 * length modifiers l, ll, z. */
void printk(const char *fmt, ...) __printf(1, 2);
int vsnprintf(char *buf, size_t size, const char *fmt, va_list ap);
int snprintf(char *buf, size_t size, const char *fmt, ...) __printf(3, 4);

#endif
