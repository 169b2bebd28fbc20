/* 16550 UART driver: an unprivileged process holding exactly its device's
 * capabilities, serving the stream protocol of userspace/lib/driver.h.
 *
 *   slot 5  endpoint it serves
 *   slot 6  an I/O-port capability for the UART's eight ports
 *   slot 7  the interrupt handler of its line
 *   slot 8  a notification the interrupt signals
 *
 * Its argument: the UART's first port, or'ed with DRV_ARG_TEST_HOOKS to
 * honour DRV_FAULT_INJECT and DRV_ARG_UART_LOOPBACK to set the chip's
 * loopback mode (what it sends comes back in, interrupts and all: tests
 * without anyone on the line).  The kernel keeps COM1 (its console) for itself,
 * so this drives another port, COM2 at 0x2f8 on IRQ 3 under Keel's VMM.
 *
 * Receiving is interrupt-driven only: the interrupt drains the chip into a
 * queue that reads take from; when the queue is full the receive interrupt
 * is switched off (the chip and the host hold what follows) until a read
 * makes room.  Writing fills the 16-byte transmit FIFO each time the line
 * status says it is empty. */
#include "serve.h"

#define IO_CAP 6
#define IRQ_CAP 7
#define NTFN_CAP 8

#define RBR_THR 0 /* DLL with DLAB */
#define IER 1     /* DLM with DLAB */
#define FCR 2
#define LCR 3
#define MCR 4
#define LSR 5
#define SCR 7

#define IER_RDI 0x01
#define LCR_8N1 0x03
#define LCR_DLAB 0x80
#define MCR_DTR_RTS_OUT2 0x0b /* OUT2 gates the interrupt on PCs */
#define MCR_LOOP 0x10
#define FCR_ENABLE_CLEAR 0x07
#define LSR_DR 0x01
#define LSR_THRE 0x20
#define FIFO_SIZE 16
#define COM1_LSR 0x3fd /* the kernel's console: never ours */

static unsigned short base;
static int test_hooks;
static struct bytering rx;
static unsigned char ier;

static inline unsigned char inb(unsigned short reg)
{
    unsigned char v;
    __asm__ volatile("inb %1, %0" : "=a"(v) : "Nd"((unsigned short)(base + reg)));
    return v;
}

static inline void outb(unsigned short reg, unsigned char v)
{
    __asm__ volatile("outb %0, %1" : : "a"(v), "Nd"((unsigned short)(base + reg)));
}

static void set_ier(unsigned char v)
{
    if (v != ier)
        outb(IER, ier = v);
}

/* Takes what the chip holds, as long as there is room. */
static void drain(void)
{
    while (bytering_room(&rx) && (inb(LSR) & LSR_DR)) {
        unsigned char c = inb(RBR_THR);
        bytering_put(&rx, &c, 1);
    }
    /* Full: stop the receive interrupt (its level would stay up) until a
     * read makes room; re-enabling it then raises the line again. */
    set_ier(bytering_room(&rx) ? IER_RDI : 0);
}

static void uart_interrupt(void)
{
    /* Unmask first: data arriving after the drain raises a new edge. */
    keel_irq_handler_ack(IRQ_CAP);
    drain();
}

static long uart_read(struct drv_req *r)
{
    unsigned long n = bytering_get(&rx, r->buf, r->len);

    if (n && !ier)
        drain(); /* room again: take what waited in the chip */
    return (long)n;
}

static long uart_write(struct drv_req *r)
{
    for (unsigned long done = 0; done < r->len;) {
        for (unsigned long spins = 0; !(inb(LSR) & LSR_THRE); spins++) {
            if (spins > 100000)
                return -KEEL_E_BAD_STATE; /* the transmitter never empties */
            if (spins > 100)
                keel_yield();
        }
        for (unsigned i = 0; i < FIFO_SIZE && done < r->len; i++)
            outb(RBR_THR, r->buf[done++]);
    }
    return (long)r->len;
}

static long uart_other(struct keel_msg *m, keel_word_t res[KEEL_MSG_WORDS])
{
    if ((m->label & KEEL_LABEL_MASK) == DRV_FAULT_INJECT && test_hooks &&
        m->w[0] == DRV_INJECT_STRAY_PORT) {
        printf("uart: touching port 0x%x, outside my range\n", COM1_LSR);
        unsigned char v;
        __asm__ volatile("inb %1, %0" : "=a"(v) : "Nd"((unsigned short)COM1_LSR));
        res[0] = v; /* never reached: the kernel stops this thread */
        return KEEL_E_OK;
    }
    return KEEL_E_UNKNOWN_CALL;
}

static const struct serve_ops ops = {
    .name = "uart",
    .kind = DRV_KIND_STREAM,
    .read = uart_read,
    .write = uart_write,
    .interrupt = uart_interrupt,
    .other = uart_other,
};

long keel_main(keel_word_t arg);

long keel_main(keel_word_t arg)
{
    long err;

    base = (unsigned short)arg;
    test_hooks = !!(arg & DRV_ARG_TEST_HOOKS);
    if ((err = keel_tcb_set_io_ports(KEEL_SLOT_TCB, IO_CAP)) ||
        (err = keel_irq_handler_set_notification(IRQ_CAP, NTFN_CAP)) ||
        (err = serve_bind(NTFN_CAP)))
        serve_fail("uart", "setup failed", err);
    outb(SCR, 0x5a);
    if (inb(SCR) != 0x5a)
        serve_fail("uart", "no 16550 at this port", base);
    outb(IER, 0);
    outb(LCR, LCR_DLAB);
    outb(RBR_THR, 1); /* divisor 1: 115200 baud */
    outb(IER, 0);
    outb(LCR, LCR_8N1);
    outb(FCR, FCR_ENABLE_CLEAR);
    outb(MCR, MCR_DTR_RTS_OUT2 | (arg & DRV_ARG_UART_LOOPBACK ? MCR_LOOP : 0));
    drain(); /* also switches the receive interrupt on */
    serve_run(&ops);
}
