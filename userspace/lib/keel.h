/* The user-space library: kernel call stubs (generated from
 * kernel/calls.tbl), formatted output on the kernel console, and the few
 * string functions a freestanding program needs. */
#ifndef KEEL_USER_H
#define KEEL_USER_H

#include <keel/abi.h>
#include <keel/stubs_gen.h>
#include <keel/syscall.h>

typedef unsigned long size_t;
typedef unsigned long uint64_t;
typedef unsigned int uint32_t;
typedef unsigned char uint8_t;
typedef __builtin_va_list va_list;
#define va_start(ap, last) __builtin_va_start(ap, last)
#define va_arg(ap, type) __builtin_va_arg(ap, type)
#define va_end(ap) __builtin_va_end(ap)
#define NULL ((void *)0)

void *memcpy(void *dst, const void *src, size_t n);
void *memset(void *dst, int c, size_t n);
int memcmp(const void *a, const void *b, size_t n);
size_t strlen(const char *s);
int strcmp(const char *a, const char *b);
int strncmp(const char *a, const char *b, size_t n);

int vsnprintf(char *buf, size_t size, const char *fmt, va_list ap);
int snprintf(char *buf, size_t size, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
int printf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void puts_raw(const char *s, size_t len);

/* The console capability printf writes to (the root task's by default). */
extern keel_cap_t keel_console;
__attribute__((noreturn)) void keel_exit(long code);

/* Finds "key=value" in a command line. */
int cmdline_get(const char *cmdline, const char *key, char *val, size_t size);

static inline unsigned long rdtsc(void)
{
    unsigned int lo, hi;
    __asm__ volatile("rdtsc" : "=a"(lo), "=d"(hi));
    return ((unsigned long)hi << 32) | lo;
}

#endif
