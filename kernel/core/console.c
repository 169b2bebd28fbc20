/* The debug console: one lock around the device, and a ring of typed
 * lines filled by the receive interrupt. */
#include <arch.h>
#include <keel/console.h>
#include <keel/spinlock.h>
#include <keel/string.h>

static spinlock_t console_lock = SPINLOCK_INIT;

/* Typed input: a ring the receive interrupt fills (the only writer of
 * rx_head and rx_line_start) and readers empty line by line (the only
 * writers of rx_tail).  Characters before rx_line_start form complete
 * lines, each ended by '\n'; a line being typed can still be edited. */
#define RX_SIZE 1024 /* a power of two */
#define RX_LINE_MAX 255
static char rx_ring[RX_SIZE];
static volatile u32 rx_head, rx_tail, rx_line_start, rx_lines;
static volatile bool echo;

void console_write(const char *s, size_t len)
{
    unsigned long flags = spin_lock_irqsave(&console_lock);
    arch_console_write(s, len);
    spin_unlock_irqrestore(&console_lock, flags);
}

void console_panic_take(void)
{
    /* Give the holder a moment to finish its line, then take over. */
    for (int i = 0; i < 1000000 && !spin_trylock(&console_lock); i++)
        arch_cpu_relax();
    spin_unlock(&console_lock);
}

void console_set_echo(bool on)
{
    echo = on;
}

static u32 rx_free(void)
{
    return RX_SIZE - (rx_head - __atomic_load_n(&rx_tail, __ATOMIC_ACQUIRE));
}

/* Interrupt context, on the CPU the serial interrupt is routed to. */
static void rx_char(char c)
{
    static bool after_cr;
    u32 typed = rx_head - rx_line_start;

    if (c == '\n' && after_cr) {
        after_cr = false;
        return; /* "\r\n" ends one line */
    }
    after_cr = c == '\r';
    if (echo) {
        if (c == '\r' || c == '\n')
            console_write("\r\n", 2);
        else if (c == 0x7f || c == '\b') {
            if (typed)
                console_write("\b \b", 3);
        } else
            console_write(&c, 1);
    }
    if (c == '\r' || c == '\n') {
        if (!rx_free()) {
            rx_head = rx_line_start; /* no room even for the end: the line is lost */
            return;
        }
        rx_ring[rx_head % RX_SIZE] = '\n';
        rx_line_start = rx_head + 1;
        __atomic_store_n(&rx_head, rx_head + 1, __ATOMIC_RELEASE);
        __atomic_add_fetch(&rx_lines, 1, __ATOMIC_RELEASE);
    } else if (c == 0x7f || c == '\b') {
        if (typed)
            rx_head--;
    } else if (typed < RX_LINE_MAX && rx_free() > 1) { /* one slot kept for the end */
        rx_ring[rx_head % RX_SIZE] = c;
        rx_head++;
    }
}

bool console_rx(const char *buf, size_t len)
{
    for (size_t i = 0; i < len; i++)
        rx_char(buf[i]);
    return console_line_ready();
}

bool console_line_ready(void)
{
    return __atomic_load_n(&rx_lines, __ATOMIC_ACQUIRE) != 0;
}

/* The oldest complete line, without its end, cut to size bytes; the caller
 * has seen console_line_ready().  Readers are serialised by their callers. */
size_t console_take_line(char *buf, size_t size)
{
    u32 tail = rx_tail;
    size_t n = 0;

    for (;; tail++) {
        char c = rx_ring[tail % RX_SIZE];
        if (c == '\n')
            break;
        if (n < size)
            buf[n++] = c;
    }
    __atomic_store_n(&rx_tail, tail + 1, __ATOMIC_RELEASE);
    __atomic_sub_fetch(&rx_lines, 1, __ATOMIC_RELEASE);
    return n;
}

void console_read_line(char *buf, size_t size)
{
    for (;;) {
        arch_irq_disable();
        if (console_line_ready())
            break;
        arch_idle(); /* enables interrupts atomically with the halt */
    }
    size_t n = console_take_line(buf, size ? size - 1 : 0);
    if (size)
        buf[n] = 0;
    arch_irq_enable();
}
