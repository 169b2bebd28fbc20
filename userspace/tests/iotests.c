/* The in-guest suite: interrupt handler and I/O-port capabilities. */
#include "suite.h"

/* -- interrupts ------------------------------------------------------------------------ */

static int t_irq_handler_capabilities(void)
{
    keel_word_t h = slot_alloc(), n = make_obj(KEEL_OBJ_NOTIFICATION, 0);

    EXPECT_ERR(keel_irq_control_get(KEEL_SLOT_IRQ_CONTROL, 4, CN, h), KEEL_E_INVALID_ARG);
    EXPECT_ERR(keel_irq_control_get(KEEL_SLOT_IRQ_CONTROL, 0, CN, h), KEEL_E_INVALID_ARG);
    EXPECT_ERR(keel_irq_control_get(KEEL_SLOT_IRQ_CONTROL, 99, CN, h), KEEL_E_INVALID_ARG);
    OK(keel_irq_control_get(KEEL_SLOT_IRQ_CONTROL, 11, CN, h));
    EXPECT_ERR(keel_irq_control_get(KEEL_SLOT_IRQ_CONTROL, 11, CN, slot_alloc()), KEEL_E_EXISTS);
    EXPECT_ERR(keel_irq_handler_ack(h), KEEL_E_BAD_STATE); /* nothing bound */
    EXPECT_ERR(keel_irq_handler_set_notification(h, h), KEEL_E_WRONG_TYPE);
    OK(keel_irq_handler_set_notification(h, n));
    OK(keel_irq_handler_ack(h));
    EXPECT_ERR(keel_cnode_copy(CN, slot_alloc(), CN, h, KEEL_RIGHT_ALL), KEEL_E_INVALID_ARG);
    EXPECT_ERR(keel_irq_handler_ack(n), KEEL_E_WRONG_TYPE);
    OK(keel_cnode_delete(CN, h)); /* frees the line */
    OK(keel_irq_control_get(KEEL_SLOT_IRQ_CONTROL, 11, CN, h));
    OK(keel_cnode_delete(CN, n)); /* its notification may go first */
    EXPECT_ERR(keel_irq_handler_ack(h), KEEL_E_BAD_STATE);
    OK(keel_cnode_delete(CN, h));
    return 0;
}

/* -- I/O ports -------------------------------------------------------------------------- */

/* Waits for the go-ahead (b), then writes port c. */
static void body_port_write(struct thread *t)
{
    while (!*(volatile keel_word_t *)&t->b)
        keel_yield();
    __asm__ volatile("outb %%al, %%dx" : : "a"(0), "d"((unsigned short)t->c));
    t->value = 1;
}

static long port_thread(struct thread *t, keel_word_t port, keel_word_t ep)
{
    t->b = 0;
    t->c = port;
    t->value = 0;
    return spawn(t, body_port_write, ep);
}

static int t_io_port_capabilities(void)
{
    keel_word_t p = slot_alloc(), q = slot_alloc(), ep = make_obj(KEEL_OBJ_ENDPOINT, 0), state;
    struct thread ok, denied, kept, late;
    struct keel_msg m;

    EXPECT_ERR(keel_io_port_control_issue(KEEL_SLOT_IO_PORT_CONTROL, 0x3f8, 0x3ff, CN, p),
               KEEL_E_INVALID_ARG); /* the kernel's console */
    EXPECT_ERR(keel_io_port_control_issue(KEEL_SLOT_IO_PORT_CONTROL, 0x510, 0x500, CN, p),
               KEEL_E_INVALID_ARG);
    EXPECT_ERR(keel_io_port_control_issue(KEEL_SLOT_IO_PORT_CONTROL, 0, 0x10000, CN, p),
               KEEL_E_INVALID_ARG);
    OK(keel_io_port_control_issue(KEEL_SLOT_IO_PORT_CONTROL, 0x510, 0x51f, CN, p));
    EXPECT_ERR(keel_tcb_set_io_ports(KEEL_SLOT_TCB, ep), KEEL_E_WRONG_TYPE);
    /* a thread given the range writes to it */
    OK(port_thread(&ok, 0x518, ep));
    OK(keel_tcb_set_io_ports(ok.tcb, p));
    ok.b = 1;
    EXPECT(wait_done(&ok) && ok.value == 1);
    /* a port outside its range faults */
    OK(port_thread(&denied, 0x520, ep));
    OK(keel_tcb_set_io_ports(denied.tcb, p));
    denied.b = 1;
    OK(keel_recv(ep, 0, 0, &m));
    EXPECT(m.label == KEEL_LABEL_FAULT && m.w[0] == 13 && denied.value == 0);
    /* deleting the original capability leaves the thread's own copy */
    OK(port_thread(&kept, 0x510, ep));
    OK(keel_tcb_set_io_ports(kept.tcb, p));
    OK(keel_cnode_delete(CN, p));
    kept.b = 1;
    EXPECT(wait_done(&kept) && kept.value == 1);
    /* revoking takes it away */
    OK(keel_io_port_control_issue(KEEL_SLOT_IO_PORT_CONTROL, 0x510, 0x51f, CN, q));
    OK(port_thread(&late, 0x511, ep));
    OK(keel_tcb_set_io_ports(late.tcb, q));
    OK(keel_cnode_revoke(CN, q));
    late.b = 1;
    OK(keel_recv(ep, 0, 0, &m));
    EXPECT(m.w[0] == 13 && late.value == 0);
    OK(keel_tcb_state(late.tcb, &state));
    EXPECT(state == KEEL_THREAD_FAULTED);
    OK(keel_cnode_delete(CN, late.tcb));
    OK(keel_cnode_delete(CN, denied.tcb));
    return 0;
}

/* Every range the kernel keeps (kernel/core/ioport.c), written out here on
 * purpose: a range dropped from the kernel's list makes this test fail.
 * Each is refused whole, by its first and last port alone and by a range
 * around it; the ports just outside it can be issued. */
static const struct {
    unsigned short first, last;
} reserved_ports[] = {
    { 0x20, 0x21 }, { 0x40, 0x43 }, { 0x61, 0x61 }, { 0x70, 0x71 },
    { 0x80, 0x80 }, { 0xa0, 0xa1 }, { 0xf4, 0xf7 }, { 0x3f8, 0x3ff },
};

static int t_io_ports_reserved_ranges(void)
{
    keel_word_t p = slot_alloc();

    for (unsigned i = 0; i < sizeof(reserved_ports) / sizeof(reserved_ports[0]); i++) {
        keel_word_t f = reserved_ports[i].first, l = reserved_ports[i].last;
        keel_word_t refused[][2] = { { f, l }, { f, f }, { l, l }, { f - 1, l + 1 },
                                     { f - 1, f }, { l, l + 1 } };

        for (unsigned j = 0; j < sizeof(refused) / sizeof(refused[0]); j++) {
            long err = keel_io_port_control_issue(KEEL_SLOT_IO_PORT_CONTROL, refused[j][0],
                                                  refused[j][1], CN, p);
            if (err != KEEL_E_INVALID_ARG) {
                printf("ktest: FAIL %s: ports %#lx-%#lx gave %ld\n", suite_current,
                       refused[j][0], refused[j][1], err);
                return 1;
            }
        }
        OK(keel_io_port_control_issue(KEEL_SLOT_IO_PORT_CONTROL, f - 1, f - 1, CN, p));
        OK(keel_cnode_delete(CN, p));
        OK(keel_io_port_control_issue(KEEL_SLOT_IO_PORT_CONTROL, l + 1, l + 1, CN, p));
        OK(keel_cnode_delete(CN, p));
    }
    return 0;
}

/* The exit device (0xf4-0xf7) ends the run with the value written there, a
 * forged pass included: no thread may reach it.  A thread given the ports
 * on both sides of it faults on 0xf4 and the run goes on. */
static int t_io_ports_exit_device_unreachable(void)
{
    keel_word_t below = slot_alloc(), above = slot_alloc(), ep = make_obj(KEEL_OBJ_ENDPOINT, 0);
    struct thread t[2];
    struct keel_msg m;

    EXPECT_ERR(keel_io_port_control_issue(KEEL_SLOT_IO_PORT_CONTROL, 0xf0, 0xff, CN, below),
               KEEL_E_INVALID_ARG);
    OK(keel_io_port_control_issue(KEEL_SLOT_IO_PORT_CONTROL, 0xf0, 0xf3, CN, below));
    OK(keel_io_port_control_issue(KEEL_SLOT_IO_PORT_CONTROL, 0xf8, 0xff, CN, above));
    for (int i = 0; i < 2; i++) {
        OK(port_thread(&t[i], 0xf4 + 3 * i, ep)); /* 0xf4, then 0xf7 */
        OK(keel_tcb_set_io_ports(t[i].tcb, i ? above : below));
        t[i].b = 1;
        OK(keel_recv(ep, 0, 0, &m));
        EXPECT(m.label == KEEL_LABEL_FAULT && m.w[0] == 13 && t[i].value == 0);
        OK(keel_cnode_delete(CN, t[i].tcb));
    }
    OK(keel_cnode_delete(CN, below));
    OK(keel_cnode_delete(CN, above));
    OK(keel_cnode_delete(CN, ep));
    return 0;
}

const struct test io_tests[] = {
#define T(name) { #name, t_##name }
    T(irq_handler_capabilities), T(io_port_capabilities), T(io_ports_reserved_ranges),
    T(io_ports_exit_device_unreachable),
#undef T
};
const unsigned long io_tests_count = sizeof(io_tests) / sizeof(io_tests[0]);
