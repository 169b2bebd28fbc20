/* The kernel's debug console: output serialized by one lock, input as one
 * line at a time collected from the architecture's receive interrupt. */
#ifndef KEEL_CONSOLE_H
#define KEEL_CONSOLE_H

#include <keel/types.h>

/* Writes len bytes atomically with respect to other console writers. */
void console_write(const char *s, size_t len);
/* Called from the receive interrupt for every byte received. */
void console_rx_char(char c);
/* In echo mode received bytes are written back (the interactive idle). */
void console_set_echo(bool on);
/* Blocks (halting between interrupts) until one line has arrived; copies it
 * without its terminator. */
void console_read_line(char *buf, size_t size);
/* For user space (the console object): whether a line has arrived, and
 * taking it (at most size bytes, no terminator; the rest is dropped). */
bool console_line_ready(void);
size_t console_take_line(char *buf, size_t size);
/* The receive interrupt found a complete line: tell the listener.  Called
 * with the kernel lock held. */
void console_input_arrived(void);
/* Panic path: make the console usable by this CPU whatever state the lock is
 * in, since the CPU may have faulted while holding it. */
void console_panic_take(void);

#endif
