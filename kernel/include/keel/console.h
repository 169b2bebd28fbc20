/* The kernel's debug console: output serialized by one lock, input as one
 * line at a time collected from the architecture's receive interrupt.
 * Output goes down to the architecture (arch_console_write); input comes
 * up from it in one call, console_input. */
#ifndef KEEL_CONSOLE_H
#define KEEL_CONSOLE_H

#include <keel/types.h>

/* Writes len bytes atomically with respect to other console writers. */
void console_write(const char *s, size_t len);
/* The architecture's receive interrupt, with the bytes received (any
 * number, 0 included), without the objects lock (debug_console.c): they
 * are buffered (console_rx) and a listener is told of a complete line. */
void console_input(const char *buf, size_t len);
/* Buffers received bytes (echoing them in echo mode) in a 1 KiB ring, so
 * lines typed (or pasted) faster than they are read are kept in order;
 * true while a complete line waits to be taken (console.c). */
bool console_rx(const char *buf, size_t len);
/* In echo mode received bytes are written back (the interactive idle). */
void console_set_echo(bool on);
/* Blocks (halting between interrupts) until one line has arrived; copies it
 * without its terminator. */
void console_read_line(char *buf, size_t size);
/* For user space (the console object): whether a line has arrived, and
 * taking it (at most size bytes, no terminator; the rest is dropped). */
bool console_line_ready(void);
size_t console_take_line(char *buf, size_t size);
/* Panic path: make the console usable by this CPU whatever state the lock is
 * in, since the CPU may have faulted while holding it. */
void console_panic_take(void);

#endif
