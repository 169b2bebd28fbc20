/* Tests of the stream and packet drivers (keel.test=uart, vconsole, net):
 * init starts each driver with only its device's capabilities and uses it
 * as a client would, through the protocol of userspace/lib/driver.h.  The
 * host side (pytest) types on the device and checks what comes out of it.
 * Lines starting "drv: FAIL" name what went wrong. */
#include "../lib/driver.h"
#include "netpkt.h"
#include "suite.h"

#define CLIENT_VA 0x201c0000ul /* client buffers: one page per open (up to 0x201f0000) */
#define CLIENT_PAGES 48

#define CHECK(cond)                                                                            \
    do {                                                                                       \
        if (!(cond)) {                                                                         \
            printf("drv: FAIL %s (line %d)\n", #cond, __LINE__);                              \
            return 1;                                                                          \
        }                                                                                      \
    } while (0)

#define CHECK_ERR(call, want)                                                                  \
    do {                                                                                       \
        long _got = (call);                                                                    \
        if (_got != (long)(want)) {                                                            \
            printf("drv: FAIL %s gave %ld, expected %ld (line %d)\n", #call, _got,           \
                   (long)(want), __LINE__);                                                    \
            return 1;                                                                          \
        }                                                                                      \
    } while (0)

/* A client of one driver: its endpoint and a shared buffer page. */
struct client {
    keel_word_t ep, frame, handle;
    unsigned char *buf;
};

static unsigned long client_pages;

static long drv_call(keel_word_t ep, keel_word_t label, keel_word_t w0, keel_word_t w1,
                     keel_word_t w2, keel_word_t w3, keel_word_t w4, keel_word_t *r0)
{
    keel_word_t in[KEEL_MSG_WORDS] = { w0, w1, w2, w3, w4, 0 }, out[KEEL_MSG_WORDS] = { 0 };
    long err = keel_call(ep, label, in, out);

    if (r0)
        *r0 = out[0];
    return err;
}

/* A new buffer page shared with the driver behind ep. */
static long client_open(struct client *c, keel_word_t ep)
{
    if (client_pages == CLIENT_PAGES)
        return KEEL_E_NO_MEMORY;
    c->ep = ep;
    c->buf = (unsigned char *)(CLIENT_VA + client_pages * KEEL_PAGE_SIZE);
    c->frame = map_new_frame((keel_word_t)c->buf, KEEL_RIGHT_READ | KEEL_RIGHT_WRITE);
    client_pages++;
    return drv_call(ep, DRV_OPEN, c->frame, 0, 0, 0, 0, &c->handle);
}

static long client_write(struct client *c, const void *data, unsigned long len,
                         keel_word_t *done)
{
    memcpy(c->buf, data, len);
    return drv_call(c->ep, DRV_WRITE, c->handle, 0, len, 0, 0, done);
}

/* Reads from a stream until a line ends (CR or LF); the line without it. */
static long read_line(struct client *c, char *line, unsigned long size)
{
    unsigned long got = 0;

    for (;;) {
        keel_word_t n;
        long err = drv_call(c->ep, DRV_READ, c->handle, 0, 256, 0, DRV_WAIT, &n);
        if (err)
            return err;
        for (unsigned long i = 0; i < n; i++) {
            char ch = (char)c->buf[i];
            if (ch == '\r' || ch == '\n') {
                if (!got)
                    continue; /* the rest of a CR LF */
                line[got] = 0;
                return 0;
            }
            if (got + 1 < size)
                line[got++] = ch;
        }
    }
}

/* Protocol errors every stream driver answers the same way. */
static int check_stream_protocol(keel_word_t ep, struct client *c)
{
    keel_word_t r0 = 0, kind = 0, out[KEEL_MSG_WORDS], in[KEEL_MSG_WORDS] = { 0 };

    CHECK_ERR(keel_call(ep, DRV_INFO, in, out), KEEL_E_OK);
    kind = out[0];
    CHECK(kind == DRV_KIND_STREAM);
    CHECK_ERR(drv_call(ep, DRV_OPEN & ~KEEL_LABEL_CAPS(1), 0, 0, 0, 0, 0, 0),
              KEEL_E_INVALID_ARG); /* no frame */
    CHECK_ERR(drv_call(ep, DRV_READ, c->handle + 1, 0, 1, 0, 0, 0), KEEL_E_INVALID_ARG);
    CHECK_ERR(drv_call(ep, DRV_READ, 99, 0, 1, 0, 0, 0), KEEL_E_INVALID_ARG);
    CHECK_ERR(drv_call(ep, DRV_WRITE, c->handle, 4000, 97, 0, 0, 0), KEEL_E_INVALID_ARG);
    CHECK_ERR(drv_call(ep, DRV_WRITE, c->handle, ~0ul, 2, 0, 0, 0), KEEL_E_INVALID_ARG);
    CHECK_ERR(drv_call(ep, DRV_READ, c->handle, 0, 1, 0, 0x80, 0), KEEL_E_INVALID_ARG);
    CHECK_ERR(drv_call(ep, DRV_WRITE, c->handle, 0, 4, 0, DRV_MANY, 0), KEEL_E_INVALID_ARG);
    CHECK_ERR(drv_call(ep, DRV_READ, c->handle, 0, 64, 0, 0, &r0), KEEL_E_OK);
    CHECK(r0 == 0); /* nothing typed yet, and no DRV_WAIT */
    CHECK_ERR(drv_call(ep, DRV_FAULT_INJECT + 1, 0, 0, 0, 0, 0, 0), KEEL_E_UNKNOWN_CALL);
    /* a call dressed as its interrupt, a send with a capability and no one
     * to answer: neither leaves anything behind that would block later calls */
    CHECK_ERR(drv_call(ep, KEEL_LABEL_NOTIFY, 0, 0, 0, 0, 0, 0), KEEL_E_UNKNOWN_CALL);
    CHECK_ERR(keel_send(ep, DRV_OPEN, c->frame, 0, 0, 0, 0, 0), KEEL_E_OK);
    CHECK_ERR(drv_call(ep, DRV_FLUSH, c->handle, 0, 0, 0, 0, 0), KEEL_E_OK);
    /* another client (another badge) cannot use or close our handle */
    keel_word_t other = slot_alloc();
    struct client d;
    CHECK_ERR(keel_cnode_mint(CN, other, CN, ep, KEEL_RIGHT_ALL, 0x77), KEEL_E_OK);
    CHECK_ERR(drv_call(other, DRV_READ, c->handle, 0, 1, 0, 0, 0), KEEL_E_INVALID_ARG);
    CHECK_ERR(drv_call(other, DRV_CLOSE, c->handle, 0, 0, 0, 0, 0), KEEL_E_INVALID_ARG);
    /* its own handle works until it closes it */
    CHECK_ERR(client_open(&d, other), KEEL_E_OK);
    CHECK(d.handle != c->handle);
    CHECK_ERR(drv_call(other, DRV_READ, d.handle, 0, 1, 0, 0, &r0), KEEL_E_OK);
    CHECK_ERR(drv_call(other, DRV_CLOSE, d.handle, 0, 0, 0, 0, 0), KEEL_E_OK);
    CHECK_ERR(drv_call(other, DRV_READ, d.handle, 0, 1, 0, 0, 0), KEEL_E_INVALID_ARG);
    /* a client that takes its page back loses the handle; the driver goes on */
    CHECK_ERR(client_open(&d, other), KEEL_E_OK);
    CHECK_ERR(keel_cnode_revoke(CN, d.frame), KEEL_E_OK);
    CHECK_ERR(drv_call(other, DRV_READ, d.handle, 0, 1, 0, 0, 0), KEEL_E_REVOKED);
    CHECK_ERR(drv_call(other, DRV_READ, d.handle, 0, 1, 0, 0, 0), KEEL_E_INVALID_ARG);
    CHECK_ERR(drv_call(ep, DRV_READ, c->handle, 0, 1, 0, 0, &r0), KEEL_E_OK);
    return 0;
}

/* -- 16550 UART ------------------------------------------------------------------------ */

struct uart {
    keel_word_t ep, fault;
    struct process proc;
};

/* Starts the UART driver on COM2 with nothing but its ports and its line;
 * flags: DRV_ARG_* for its argument. */
static int uart_start(struct uart *u, keel_word_t flags)
{
    keel_word_t io = slot_alloc(), irq = slot_alloc();

    CHECK_ERR(keel_io_port_control_issue(KEEL_SLOT_IO_PORT_CONTROL, COM2_BASE, COM2_LAST, CN, io),
              KEEL_E_OK);
    CHECK_ERR(keel_irq_control_get(KEEL_SLOT_IRQ_CONTROL, COM2_IRQ, CN, irq), KEEL_E_OK);
    keel_word_t caps[4] = { u->ep, io, irq, make_obj(KEEL_OBJ_NOTIFICATION, 0) };
    CHECK_ERR(spawn_process("uart", COM2_BASE | flags, caps, 4, u->fault, &u->proc), KEEL_E_OK);
    keel_cnode_delete(CN, io); /* the driver's copy is the only one left */
    return 0;
}

static void body_stray_port(struct thread *t)
{
    t->value = drv_call(t->a, DRV_FAULT_INJECT, DRV_INJECT_STRAY_PORT, 0, 0, 0, 0, 0);
}

/* A driver thread touching a port outside its range is stopped and its
 * fault reaches init; init kills it (its capabilities go, the call it never
 * answered ends) and starts a new one on the same endpoint (its line is
 * free again). */
static int uart_stray_and_restart(struct uart *u, keel_word_t flags)
{
    struct keel_msg m;
    struct thread stray;
    keel_word_t state;

    stray.a = u->ep;
    CHECK_ERR(spawn(&stray, body_stray_port, 0), KEEL_E_OK);
    CHECK_ERR(keel_recv(u->fault, 0, 0, &m), KEEL_E_OK);
    CHECK(m.label == KEEL_LABEL_FAULT && m.w[0] == 13);
    CHECK_ERR(keel_tcb_state(u->proc.tcb, &state), KEEL_E_OK);
    CHECK(state == KEEL_THREAD_FAULTED);
    printf("uart: driver stopped: vector %lu at 0x%lx\n", m.w[0], m.w[3]);
    process_kill(&u->proc);
    CHECK(wait_done(&stray) && stray.value == KEEL_E_REVOKED);
    return uart_start(u, flags);
}

/* Writes a line through the driver, then reads one typed on the host. */
static int uart_line_each_way(struct client *c, const char *out, const char *prompt)
{
    char line[128];
    keel_word_t done = 0;

    CHECK_ERR(client_write(c, out, strlen(out), &done), KEEL_E_OK);
    CHECK(done == strlen(out));
    printf("uart: %s\n", prompt);
    CHECK_ERR(read_line(c, line, sizeof(line)), KEEL_E_OK);
    printf("uart: read '%s'\n", line);
    return 0;
}

int uart_run(void);

int uart_run(void)
{
    struct uart u = { make_obj(KEEL_OBJ_ENDPOINT, 0), make_obj(KEEL_OBJ_ENDPOINT, 0), { 0 } };
    struct client c;

    if (uart_start(&u, DRV_ARG_TEST_HOOKS))
        return 1;
    CHECK_ERR(client_open(&c, u.ep), KEEL_E_OK);
    if (check_stream_protocol(u.ep, &c) ||
        uart_line_each_way(&c, "uart: hello through the driver\r\n", "type a line on COM2"))
        return 1;
    if (uart_stray_and_restart(&u, DRV_ARG_TEST_HOOKS))
        return 1;
    CHECK_ERR(client_open(&c, u.ep), KEEL_E_OK);
    if (uart_line_each_way(&c, "uart: after the restart\r\n", "type another line on COM2"))
        return 1;
    printf("uart: ok\n");
    return 0;
}

/* In the suite (when the machine has a COM2): the driver with the chip in
 * loopback mode, so what it sends comes back through its interrupt. */

/* FIFO-sized writes, each read back whole (DRV_WAIT: the interrupt brings it). */
static int uart_loopback(struct client *c, unsigned rounds)
{
    for (unsigned r = 0; r < rounds; r++) {
        unsigned char sent[16];
        keel_word_t n = 0;
        for (unsigned i = 0; i < sizeof(sent); i++)
            sent[i] = (unsigned char)(r * 16 + i);
        CHECK_ERR(client_write(c, sent, sizeof(sent), &n), KEEL_E_OK);
        CHECK(n == sizeof(sent));
        for (unsigned got = 0; got < sizeof(sent); got += (unsigned)n) {
            CHECK_ERR(drv_call(c->ep, DRV_READ, c->handle, 0, sizeof(sent) - got, 0, DRV_WAIT, &n),
                      KEEL_E_OK);
            CHECK(n && !memcmp(c->buf, sent + got, n));
        }
    }
    return 0;
}

static void body_wait_read(struct thread *t)
{
    t->value = drv_call(t->a, DRV_READ, t->b, 0, 16, 0, DRV_WAIT, 0);
}

static int t_uart_driver_interrupts(void)
{
    struct uart u = { make_obj(KEEL_OBJ_ENDPOINT, 0), make_obj(KEEL_OBJ_ENDPOINT, 0), { 0 } };
    struct client c;
    struct thread gone;

    if (uart_start(&u, DRV_ARG_UART_LOOPBACK))
        return 1;
    EXPECT_ERR(client_open(&c, u.ep), KEEL_E_OK);
    if (check_stream_protocol(u.ep, &c) || uart_loopback(&c, 8))
        return 1;
    /* A reader that goes away while it waits takes nothing with it. */
    gone.a = u.ep;
    gone.b = c.handle;
    OK(spawn(&gone, body_wait_read, 0));
    EXPECT(wait_blocked(&gone));
    OK(drv_call(u.ep, DRV_INFO, 0, 0, 0, 0, 0, 0)); /* answered after its read was held */
    OK(keel_tcb_suspend(gone.tcb));
    if (uart_loopback(&c, 1))
        return 1;
    OK(keel_cnode_delete(CN, gone.tcb));
    EXPECT_ERR(drv_call(u.ep, DRV_FAULT_INJECT, DRV_INJECT_STRAY_PORT, 0, 0, 0, 0, 0),
               KEEL_E_UNKNOWN_CALL); /* not started for tests */
    process_kill(&u.proc);
    return 0;
}

static int t_uart_driver_stray_port(void)
{
    struct uart u = { make_obj(KEEL_OBJ_ENDPOINT, 0), make_obj(KEEL_OBJ_ENDPOINT, 0), { 0 } };
    struct client c;

    if (uart_start(&u, DRV_ARG_UART_LOOPBACK | DRV_ARG_TEST_HOOKS) ||
        uart_stray_and_restart(&u, DRV_ARG_UART_LOOPBACK))
        return 1;
    EXPECT_ERR(client_open(&c, u.ep), KEEL_E_OK);
    if (uart_loopback(&c, 2))
        return 1;
    process_kill(&u.proc);
    return 0;
}

const struct test drv_tests[] = {
    { "uart_driver_interrupts", t_uart_driver_interrupts },
    { "uart_driver_stray_port", t_uart_driver_stray_port },
};
const unsigned long drv_tests_count = sizeof(drv_tests) / sizeof(drv_tests[0]);

/* -- virtio drivers ---------------------------------------------------------------------- */

/* Starts prog on the first virtio device of the given id with nothing but
 * its registers, its interrupt line, a notification, the 17 frames every
 * virtio driver is given (slots 9-25; it uses as many as it needs) and the
 * device's io_space (slot 26), in which it lets the device at those frames. */
#define VIRTIO_DRV_FRAMES 17

static int virtio_start(const char *prog, unsigned int id, keel_word_t ep, struct process *p)
{
    return virtio_start_mode(prog, id, 0, ep, p);
}

int virtio_start_mode(const char *prog, unsigned int id, unsigned long mode, keel_word_t ep,
                      struct process *p)
{
    keel_word_t regs, irq = slot_alloc(), io, caps[5 + VIRTIO_DRV_FRAMES];
    struct keel_device_desc *d = find_virtio_device(id, &regs);

    if (!d) {
        printf("drv: no virtio device of id %u\n", id);
        return 1;
    }
    CHECK_ERR(keel_irq_control_get(KEEL_SLOT_IRQ_CONTROL, d->irq, CN, irq), KEEL_E_OK);
    caps[0] = ep;
    caps[1] = regs;
    caps[2] = irq;
    caps[3] = make_obj(KEEL_OBJ_NOTIFICATION, 0);
    for (unsigned i = 0; i < VIRTIO_DRV_FRAMES; i++)
        caps[4 + i] = make_obj(KEEL_OBJ_FRAME, 0);
    CHECK((io = caps[4 + VIRTIO_DRV_FRAMES] = make_io_space(d)) != 0);
    CHECK_ERR(spawn_process(prog, DRV_ARG(mode, d->paddr), caps, 5 + VIRTIO_DRV_FRAMES, 0, p),
              KEEL_E_OK);
    /* The driver's copy is the only one left: killing it takes the io_space
     * (and so every window) away, and a new driver gets a new one. */
    keel_cnode_delete(CN, io);
    return 0;
}

#define VCON_BULK 6000

int vcon_run(void);

int vcon_run(void)
{
    keel_word_t ep = make_obj(KEEL_OBJ_ENDPOINT, 0), done = 0;
    struct process p;
    struct client c;
    char line[128];
    static const char hello[] = "vcon: hello through the driver\n";

    if (virtio_start("virtio_console", 3, ep, &p))
        return 1;
    CHECK_ERR(client_open(&c, ep), KEEL_E_OK);
    if (check_stream_protocol(ep, &c))
        return 1;
    CHECK_ERR(client_write(&c, hello, sizeof(hello) - 1, &done), KEEL_E_OK);
    CHECK(done == sizeof(hello) - 1);
    /* a whole page in one write */
    for (unsigned i = 0; i < KEEL_PAGE_SIZE; i++)
        c.buf[i] = (unsigned char)(i % 64 == 63 ? '\n' : 'a' + i % 26);
    CHECK_ERR(drv_call(ep, DRV_WRITE, c.handle, 0, KEEL_PAGE_SIZE, 0, 0, &done), KEEL_E_OK);
    CHECK(done == KEEL_PAGE_SIZE);
    printf("vcon: type a line on the console\n");
    CHECK_ERR(read_line(&c, line, sizeof(line)), KEEL_E_OK);
    printf("vcon: read '%s'\n", line);
    /* more than the driver queues: the device holds the rest until it is read */
    printf("vcon: send %d bytes\n", VCON_BULK);
    for (unsigned long got = 0; got < VCON_BULK;) {
        keel_word_t n;
        CHECK_ERR(drv_call(ep, DRV_READ, c.handle, 0, 1000, 0, DRV_WAIT, &n), KEEL_E_OK);
        for (unsigned long i = 0; i < n; i++, got++) {
            if (c.buf[i] != (unsigned char)('0' + got % 10)) {
                printf("drv: FAIL byte %lu is %u\n", got, c.buf[i]);
                return 1;
            }
        }
    }
    printf("vcon: read %d bytes in order\n", VCON_BULK);
    /* Killed and started again, a driver resets the device and goes on. */
    static const char again[] = "vcon: after the restart\n";
    process_kill(&p);
    if (virtio_start("virtio_console", 3, ep, &p))
        return 1;
    CHECK_ERR(client_open(&c, ep), KEEL_E_OK);
    CHECK_ERR(client_write(&c, again, sizeof(again) - 1, &done), KEEL_E_OK);
    CHECK(done == sizeof(again) - 1);
    printf("vcon: ok\n");
    return 0;
}

/* -- virtio-net: ARP and ICMP echo with the host on the other end of the TAP -------------- */

#define PINGS 8

/* Reads frames (waiting for each) until one `want` accepts; answers ARP
 * requests for our address on the way, since the host may ask. */
static int net_wait_for(struct client *c, const unsigned char *mac,
                        int (*want)(const unsigned char *f, unsigned long len, void *arg), void *arg)
{
    static unsigned char frame[1514];

    for (int frames = 0; frames < 1000; frames++) {
        keel_word_t n = 0, sent;
        CHECK_ERR(drv_call(c->ep, DRV_READ, c->handle, 0, 1514, 0, DRV_WAIT, &n), KEEL_E_OK);
        CHECK(n >= 14 && n <= 1514);
        memcpy(frame, c->buf, n);
        if (want(frame, n, arg))
            return 0;
        if (n >= 42 && get16(frame + 12) == 0x0806 && get16(frame + 20) == 1 &&
            get32(frame + 38) == GUEST_IP) {
            unsigned long len = arp_frame(c->buf, 2, mac, frame + 22, get32(frame + 28));
            CHECK_ERR(drv_call(c->ep, DRV_WRITE, c->handle, 0, len, 0, 0, &sent), KEEL_E_OK);
        }
    }
    printf("drv: FAIL the frame never came\n");
    return 1;
}

static int net_marker; /* keel.test=netsnap: wait halfway for the host's frame (a snapshot's) */

static int is_marker(const unsigned char *f, unsigned long len, void *arg)
{
    return len >= 27 && get16(f + 12) == 0x88b5 && !memcmp(f + 14, "keel-snapshot", 13);
}

int net_run(void)
{
    keel_word_t ep = make_obj(KEEL_OBJ_ENDPOINT, 0), out[KEEL_MSG_WORDS], in[KEEL_MSG_WORDS] = { 0 };
    keel_word_t sent = 0;
    unsigned char mac[6], host_mac[6];
    struct process p;
    struct client c;

    if (virtio_start("virtio_net", 1, ep, &p))
        return 1;
    CHECK_ERR(client_open(&c, ep), KEEL_E_OK);
    CHECK_ERR(keel_call(ep, DRV_INFO, in, out), KEEL_E_OK);
    CHECK(out[0] == DRV_KIND_PACKET);
    CHECK_ERR(keel_call(ep, DRV_ADDRESS, in, out), KEEL_E_OK);
    memcpy(mac, &out[0], 6);
    printf("net: mac %02x:%02x:%02x:%02x:%02x:%02x\n", mac[0], mac[1], mac[2], mac[3], mac[4],
           mac[5]);
    CHECK_ERR(drv_call(ep, DRV_WRITE, c.handle, 0, 13, 0, 0, 0), KEEL_E_INVALID_ARG);
    CHECK_ERR(drv_call(ep, DRV_WRITE, c.handle, 0, 1515, 0, 0, 0), KEEL_E_INVALID_ARG);

    /* DRV_MANY: records too short for an Ethernet header or running past the
     * range are refused whole; the ARP request goes twice in one write. */
    static unsigned char arp[64];
    unsigned long len = arp_frame(arp, 1, mac, 0, HOST_IP), two;
    CHECK_ERR(drv_call(ep, DRV_WRITE, c.handle, 0, drv_frame_put(c.buf, arp, 13), 0, DRV_MANY, 0),
              KEEL_E_INVALID_ARG);
    CHECK_ERR(drv_call(ep, DRV_WRITE, c.handle, 0, drv_frame_put(c.buf, arp, len) - 1, 0, DRV_MANY,
                       0), KEEL_E_INVALID_ARG);
    two = drv_frame_put(c.buf, arp, len);
    two += drv_frame_put(c.buf + two, arp, len);
    CHECK_ERR(drv_call(ep, DRV_WRITE, c.handle, 0, two, 0, DRV_MANY, &sent), KEEL_E_OK);
    CHECK(sent == two);
    if (net_wait_for(&c, mac, is_arp_reply, host_mac))
        return 1;
    printf("net: host %02x:%02x:%02x:%02x:%02x:%02x\n", host_mac[0], host_mac[1], host_mac[2],
           host_mac[3], host_mac[4], host_mac[5]);
    for (unsigned seq = 1; seq <= PINGS; seq++) {
        struct echo e = { seq, 16 + (seq - 1) * 200 }; /* up to a 1472-byte frame */
        len = ping_frame(c.buf, mac, host_mac, seq, e.payload);
        CHECK_ERR(drv_call(ep, DRV_WRITE, c.handle, 0, len, 0, 0, &sent), KEEL_E_OK);
        if (net_wait_for(&c, mac, is_echo_reply, &e))
            return 1;
        printf("net: echo reply %u, %u bytes\n", seq, e.payload);
        if (net_marker && seq == PINGS / 2) {
            printf("net: waiting for the host's frame\n");
            if (net_wait_for(&c, mac, is_marker, 0))
                return 1;
            printf("net: the host's frame came\n");
        }
    }
    /* Killed and started again, a driver resets the device and goes on. */
    process_kill(&p);
    if (virtio_start("virtio_net", 1, ep, &p))
        return 1;
    CHECK_ERR(client_open(&c, ep), KEEL_E_OK);
    struct echo e = { PINGS + 1, 100 };
    len = ping_frame(c.buf, mac, host_mac, e.seq, e.payload);
    CHECK_ERR(drv_call(ep, DRV_WRITE, c.handle, 0, len, 0, 0, &sent), KEEL_E_OK);
    if (net_wait_for(&c, mac, is_echo_reply, &e))
        return 1;
    printf("net: echo reply after a restart\n");
    process_kill(&p); /* the device (and its io_space) free for who comes next */
    printf("net: ok\n");
    return 0;
}

int netsnap_run(void);
int netsnap_run(void)
{
    net_marker = 1;
    return net_run();
}
