/* The 16550 UART on COM1: polled output in FIFO-sized bursts (one string
 * instruction each, which a hypervisor serves in a single exit), interrupt
 * driven input.  The device only: the core's console (kernel/core/
 * console.c) writes through arch_console_write, and the receive interrupt
 * (entry.c) hands what serial_read returns up in one call, console_input;
 * nothing here calls the core. */
#include <arch.h>

#include "x86.h"

#define COM1 0x3f8
#define RBR 0 /* receive buffer (read) */
#define THR 0 /* transmit holding (write) */
#define IER 1
#define FCR 2
#define LCR 3
#define MCR 4
#define LSR 5
#define LSR_DR 0x01
#define LSR_THRE 0x20
#define FIFO_SIZE 16
#define SPIN_LIMIT 100000 /* a missing UART must not hang the kernel */

static bool present;

void serial_init(void)
{
    outb(COM1 + IER, 0x00);
    outb(COM1 + LCR, 0x80); /* DLAB: divisor 1 = 115200 baud */
    outb(COM1 + 0, 0x01);
    outb(COM1 + 1, 0x00);
    outb(COM1 + LCR, 0x03); /* 8N1 */
    outb(COM1 + FCR, 0x07); /* FIFOs on and cleared */
    outb(COM1 + MCR, 0x0b); /* DTR, RTS, OUT2 (the interrupt gate on PCs) */
    present = inb(COM1 + LSR) != 0xff;
}

void serial_enable_rx(void)
{
    while (inb(COM1 + LSR) & LSR_DR)
        (void)inb(COM1 + RBR);
    outb(COM1 + IER, 0x01); /* received data available */
}

static void wait_thre(void)
{
    for (int i = 0; i < SPIN_LIMIT && !(inb(COM1 + LSR) & LSR_THRE); i++)
        arch_cpu_relax();
}

void arch_console_write(const char *s, size_t len)
{
    char burst[FIFO_SIZE];
    size_t n = 0;

    if (!present)
        return;
    for (size_t i = 0; i < len; i++) {
        if (s[i] == '\n')
            burst[n++] = '\r';
        burst[n++] = s[i];
        if (n >= FIFO_SIZE - 1 || i + 1 == len) {
            wait_thre();
            outsb(COM1 + THR, burst, n);
            n = 0;
        }
    }
}

size_t serial_read(char *buf, size_t size)
{
    size_t n = 0;

    while (n < size && (inb(COM1 + LSR) & LSR_DR))
        buf[n++] = (char)inb(COM1 + RBR);
    return n;
}
