/* The debug console: one lock around the device, and a small line buffer
 * filled by the receive interrupt. */
#include <arch.h>
#include <keel/console.h>
#include <keel/spinlock.h>
#include <keel/string.h>

static spinlock_t console_lock = SPINLOCK_INIT;

#define RX_SIZE 256
static char rx_buf[RX_SIZE];
static volatile u32 rx_len;
static volatile bool rx_line_ready;
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

/* Interrupt context, on the CPU the serial interrupt is routed to. */
static void rx_char(char c)
{
    if (echo) {
        if (c == '\r' || c == '\n')
            console_write("\r\n", 2);
        else if (c == 0x7f || c == '\b') {
            if (rx_len && !rx_line_ready)
                console_write("\b \b", 3);
        } else
            console_write(&c, 1);
    }
    if (rx_line_ready)
        return; /* the reader has not taken the previous line yet: drop */
    if (c == '\r' || c == '\n') {
        rx_line_ready = true;
    } else if (c == 0x7f || c == '\b') {
        if (rx_len)
            rx_len--;
    } else if (rx_len < RX_SIZE - 1) {
        rx_buf[rx_len++] = c;
    }
}

bool console_rx(const char *buf, size_t len)
{
    for (size_t i = 0; i < len; i++)
        rx_char(buf[i]);
    return rx_line_ready;
}

bool console_line_ready(void)
{
    return rx_line_ready;
}

size_t console_take_line(char *buf, size_t size)
{
    size_t n = MIN((size_t)rx_len, size);

    memcpy(buf, rx_buf, n);
    rx_len = 0;
    __atomic_store_n(&rx_line_ready, false, __ATOMIC_RELEASE); /* the interrupt may fill again */
    return n;
}

void console_read_line(char *buf, size_t size)
{
    for (;;) {
        arch_irq_disable();
        if (rx_line_ready)
            break;
        arch_idle(); /* enables interrupts atomically with the halt */
    }
    size_t n = MIN((size_t)rx_len, size ? size - 1 : 0);
    memcpy(buf, rx_buf, n);
    if (size)
        buf[n] = 0;
    rx_len = 0;
    rx_line_ready = false;
    arch_irq_enable();
}
