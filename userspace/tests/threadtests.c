/* The in-guest suite: endpoints and notifications, threads, and faults
 * delivered to their handlers. */
#include "suite.h"

/* -- endpoints and notifications ------------------------------------------- */

static int t_send_recv(void)
{
    keel_word_t ep = make_obj(KEEL_OBJ_ENDPOINT, 0), b, l, w0, w1, w2, w3;

    OK(ep_send(ep, 10, 11, 12, 13, 14));
    OK(ep_recv(ep, 0, &b, &l, &w0, &w1, &w2, &w3));
    EXPECT(b == 0 && l == 10 && w0 == 11 && w1 == 12 && w2 == 13 && w3 == 14);
    return 0;
}

static int t_recv_nonblock_empty(void)
{
    keel_word_t ep = make_obj(KEEL_OBJ_ENDPOINT, 0);

    EXPECT_ERR(ep_recv(ep, KEEL_RECV_NONBLOCK, 0, 0, 0, 0, 0, 0), KEEL_E_WOULD_BLOCK);
    EXPECT_ERR(ep_recv(ep, 0x80, 0, 0, 0, 0, 0, 0), KEEL_E_INVALID_ARG);
    return 0;
}

static int t_queue_full(void)
{
    keel_word_t ep = make_obj(KEEL_OBJ_ENDPOINT, 0), l;
    int sent = 0;

    while (ep_send(ep, (keel_word_t)sent, 0, 0, 0, 0) == KEEL_E_OK && sent < 100)
        sent++;
    EXPECT(sent == 16);
    EXPECT_ERR(ep_send(ep, 99, 0, 0, 0, 0), KEEL_E_FULL);
    for (int i = 0; i < sent; i++) {
        OK(ep_recv(ep, KEEL_RECV_NONBLOCK, 0, &l, 0, 0, 0, 0));
        EXPECT(l == (keel_word_t)i); /* FIFO, nothing lost */
    }
    OK(ep_send(ep, 1, 0, 0, 0, 0)); /* room again */
    return 0;
}

static int t_notification(void)
{
    keel_word_t n = make_obj(KEEL_OBJ_NOTIFICATION, 0), a = slot_alloc(), b = slot_alloc();
    keel_word_t bits;

    OK(keel_notification_poll(n, &bits));
    EXPECT(bits == 0);
    OK(keel_cnode_mint(CN, a, CN, n, KEEL_RIGHT_WRITE, 0x1));
    OK(keel_cnode_mint(CN, b, CN, n, KEEL_RIGHT_WRITE, 0x4));
    OK(keel_notification_signal(a));
    OK(keel_notification_signal(b));
    OK(keel_notification_signal(a));
    OK(keel_notification_wait(n, &bits));
    EXPECT(bits == 0x5);
    OK(keel_notification_poll(n, &bits));
    EXPECT(bits == 0);
    EXPECT_ERR(keel_notification_wait(a, 0), KEEL_E_NO_RIGHTS);
    return 0;
}

/* -- threads --------------------------------------------------------------- */

static void body_set_value(struct thread *t)
{
    t->value = 42;
}

static int t_thread_runs(void)
{
    struct thread t;

    OK(spawn(&t, body_set_value, 0));
    EXPECT(wait_done(&t));
    EXPECT(t.value == 42);
    return 0;
}

static void body_echo(struct thread *t)
{
    keel_word_t l, w0;

    if (ep_recv(t->a, 0, 0, &l, &w0, 0, 0, 0) == KEEL_E_OK)
        ep_send(t->b, l + 1, w0 * 2, 0, 0, 0);
}

static int t_thread_blocking_recv(void)
{
    struct thread t;
    keel_word_t l, w0;

    t.a = make_obj(KEEL_OBJ_ENDPOINT, 0);
    t.b = make_obj(KEEL_OBJ_ENDPOINT, 0);
    OK(spawn(&t, body_echo, 0));
    EXPECT(wait_blocked(&t)); /* in recv */
    OK(ep_send(t.a, 7, 21, 0, 0, 0));
    OK(ep_recv(t.b, 0, 0, &l, &w0, 0, 0, 0));
    EXPECT(l == 8 && w0 == 42);
    EXPECT(wait_done(&t));
    return 0;
}

static void body_wait_ntfn(struct thread *t)
{
    keel_word_t bits = 0;

    keel_notification_wait(t->a, &bits);
    t->value = (long)bits;
}

static int t_thread_notification_wakeup(void)
{
    struct thread t;

    t.a = make_obj(KEEL_OBJ_NOTIFICATION, 0);
    t.value = 0;
    OK(spawn(&t, body_wait_ntfn, 0));
    EXPECT(wait_blocked(&t));
    OK(keel_notification_signal(t.a));
    EXPECT(wait_done(&t));
    EXPECT(t.value == 1);
    return 0;
}

static void body_spin(struct thread *t)
{
    while (!*(volatile keel_word_t *)&t->b)
        t->value++;
}

static int t_thread_suspend_resume(void)
{
    struct thread t;
    keel_word_t state;

    t.b = 0;
    t.value = 0;
    OK(spawn(&t, body_spin, 0));
    for (long i = 0; i < WAIT_LIMIT && t.value == 0; i++)
        keel_yield();
    EXPECT(t.value > 0);
    OK(keel_tcb_suspend(t.tcb));
    OK(keel_tcb_state(t.tcb, &state));
    EXPECT(state == KEEL_THREAD_INACTIVE);
    long v = t.value;
    for (int i = 0; i < 20; i++)
        keel_yield();
    EXPECT(t.value == v); /* really stopped */
    OK(keel_tcb_resume(t.tcb));
    for (long i = 0; i < WAIT_LIMIT && t.value == v; i++)
        keel_yield();
    EXPECT(t.value != v);
    t.b = 1;
    EXPECT(wait_done(&t));
    return 0;
}

static int t_thread_bad_registers(void)
{
    keel_word_t tcb = make_obj(KEEL_OBJ_TCB, 0);

    OK(keel_tcb_configure(tcb, CN, VS, 0));
    EXPECT_ERR(keel_tcb_write_regs(tcb, 0xffff800000000000ul, 0x1000, 0), KEEL_E_INVALID_ARG);
    EXPECT_ERR(keel_tcb_write_regs(tcb, 0x1000, 0x8000000000000000ul, 0), KEEL_E_INVALID_ARG);
    EXPECT_ERR(keel_tcb_write_regs(KEEL_SLOT_TCB, 0x400000, 0x1000, 0), KEEL_E_BAD_STATE);
    return 0;
}

static int t_thread_unconfigured(void)
{
    keel_word_t tcb = make_obj(KEEL_OBJ_TCB, 0), state;

    EXPECT_ERR(keel_tcb_resume(tcb), KEEL_E_BAD_STATE);
    OK(keel_tcb_state(tcb, &state));
    EXPECT(state == KEEL_THREAD_INACTIVE);
    EXPECT_ERR(keel_tcb_configure(tcb, VS, VS, 0), KEEL_E_WRONG_TYPE);
    EXPECT_ERR(keel_tcb_configure(tcb, CN, VS, CN), KEEL_E_WRONG_TYPE);
    EXPECT_ERR(keel_tcb_configure(tcb, CN, VS, slot_alloc()), KEEL_E_INVALID_CAP);
    return 0;
}

static void body_fpu(struct thread *t)
{
    unsigned long mine = (unsigned long)t->value, seen;

    __asm__ volatile("movq %0, %%xmm7" : : "r"(mine));
    for (int i = 0; i < 200; i++) {
        keel_yield();
        __asm__ volatile("movq %%xmm7, %0" : "=r"(seen));
        if (seen != mine) {
            t->value = -1;
            return;
        }
    }
}

static int t_fpu_state_per_thread(void)
{
    struct thread a, b;
    unsigned long mine = 0x1234567812345678ul, seen;

    a.value = 0x1111;
    b.value = 0x2222;
    __asm__ volatile("movq %0, %%xmm7" : : "r"(mine));
    OK(spawn(&a, body_fpu, 0));
    OK(spawn(&b, body_fpu, 0));
    EXPECT(wait_done(&a) && wait_done(&b));
    __asm__ volatile("movq %%xmm7, %0" : "=r"(seen));
    EXPECT(a.value == 0x1111 && b.value == 0x2222);
    EXPECT(seen == mine);
    return 0;
}

static int t_read_regs(void)
{
    keel_word_t tcb = make_obj(KEEL_OBJ_TCB, 0), pc, sp, rax;

    OK(keel_tcb_configure(tcb, CN, VS, 0));
    OK(keel_tcb_write_regs(tcb, 0x401000, 0x7000, 5));
    OK(keel_tcb_read_regs(tcb, &pc, &sp, &rax));
    EXPECT(pc == 0x401000 && sp == 0x7000);
    return 0;
}

/* -- faults ---------------------------------------------------------------- */

#define FAULT_VA (TEST_VA + 0x100000)
static volatile unsigned long *const fault_ptr = (volatile unsigned long *)FAULT_VA;

static void body_touch(struct thread *t)
{
    *fault_ptr = 0xfeed;
    t->value = (long)*fault_ptr;
}

static int t_fault_delivered_and_resumed(void)
{
    struct thread t;
    keel_word_t ep = make_obj(KEEL_OBJ_ENDPOINT, 0), fep = slot_alloc();
    keel_word_t badge, label, vec, addr, err, pc;

    OK(keel_cnode_mint(CN, fep, CN, ep, KEEL_RIGHT_WRITE, 0xbad));
    t.value = 0;
    OK(spawn(&t, body_touch, fep));
    OK(ep_recv(ep, 0, &badge, &label, &vec, &addr, &err, &pc));
    EXPECT(label == KEEL_LABEL_FAULT && badge == 0xbad);
    EXPECT(vec == 14 && addr == FAULT_VA && (err & 2)); /* a write */
    keel_word_t state;
    OK(keel_tcb_state(t.tcb, &state));
    EXPECT(state == KEEL_THREAD_FAULTED);
    keel_word_t f = map_new_frame(FAULT_VA, KEEL_RIGHT_READ | KEEL_RIGHT_WRITE);
    OK(keel_tcb_resume(t.tcb));
    EXPECT(wait_done(&t));
    EXPECT(t.value == 0xfeed);
    OK(keel_cnode_delete(CN, f));
    return 0;
}

static void body_ud(struct thread *t)
{
    (void)t;
    __asm__ volatile("ud2");
}

static int t_fault_kill(void)
{
    struct thread t;
    keel_word_t ep = make_obj(KEEL_OBJ_ENDPOINT, 0), vec, pc, state;

    OK(spawn(&t, body_ud, ep));
    OK(ep_recv(ep, 0, 0, 0, &vec, 0, 0, &pc));
    EXPECT(vec == 6);
    EXPECT(pc >= (keel_word_t)body_ud && pc < (keel_word_t)body_ud + 64);
    OK(keel_tcb_suspend(t.tcb));
    OK(keel_tcb_state(t.tcb, &state));
    EXPECT(state == KEEL_THREAD_INACTIVE);
    OK(keel_cnode_delete(CN, t.tcb));
    return 0;
}

static void body_kernel_access(struct thread *t)
{
    t->value = (long)*(volatile unsigned long *)0xffffffff80100000ul;
}

static int t_fault_on_kernel_memory(void)
{
    struct thread t;
    keel_word_t ep = make_obj(KEEL_OBJ_ENDPOINT, 0), vec, addr;

    OK(spawn(&t, body_kernel_access, ep));
    OK(ep_recv(ep, 0, 0, 0, &vec, &addr, 0, 0));
    EXPECT(vec == 14 && addr == 0xffffffff80100000ul);
    OK(keel_cnode_delete(CN, t.tcb));
    return 0;
}

static void body_privileged(struct thread *t)
{
    (void)t;
    __asm__ volatile("cli; hlt");
}

static int t_fault_privileged_instruction(void)
{
    struct thread t;
    keel_word_t ep = make_obj(KEEL_OBJ_ENDPOINT, 0), vec;

    OK(spawn(&t, body_privileged, ep));
    OK(ep_recv(ep, 0, 0, 0, &vec, 0, 0, 0));
    EXPECT(vec == 13);
    OK(keel_cnode_delete(CN, t.tcb));
    return 0;
}

static int t_fault_without_handler(void)
{
    struct thread t;
    keel_word_t state = 99;

    OK(spawn(&t, body_ud, 0));
    for (long i = 0; i < WAIT_LIMIT; i++) {
        OK(keel_tcb_state(t.tcb, &state));
        if (state == KEEL_THREAD_INACTIVE)
            break;
        keel_yield();
    }
    EXPECT(state == KEEL_THREAD_INACTIVE);
    return 0;
}

static void body_recv_forever(struct thread *t)
{
    t->value = ep_recv(t->a, 0, 0, 0, 0, 0, 0, 0);
}

static int t_delete_endpoint_wakes_receiver(void)
{
    struct thread t;

    t.a = make_obj(KEEL_OBJ_ENDPOINT, 0);
    t.value = -1;
    OK(spawn(&t, body_recv_forever, 0));
    EXPECT(wait_blocked(&t));
    OK(keel_cnode_delete(CN, t.a));
    EXPECT(wait_done(&t));
    EXPECT(t.value == KEEL_E_REVOKED);
    return 0;
}

static int t_delete_running_thread(void)
{
    struct thread t;
    keel_word_t small = make_untyped(12), tcb = slot_alloc();

    t.b = 0;
    t.value = 0;
    OK(spawn(&t, body_spin, 0));
    for (long i = 0; i < WAIT_LIMIT && t.value == 0; i++)
        keel_yield();
    EXPECT(t.value > 0);
    OK(keel_cnode_delete(CN, t.tcb)); /* the last capability: it is destroyed */
    long v = t.value;
    for (int i = 0; i < 20; i++)
        keel_yield();
    EXPECT(t.value == v);
    /* its memory can be used again */
    OK(keel_untyped_retype(small, KEEL_OBJ_TCB, 0, CN, tcb, 1));
    return 0;
}

/* -- the priority ceiling (maximum controlled priority) ----------------------------- */

static void body_raise_self(struct thread *t)
{
    /* Holding only its own thread capability, it tries for the top. */
    t->value = keel_tcb_set_priority(t->tcb, KEEL_PRIO_TOP, t->tcb);
    t->a = (keel_word_t)keel_tcb_set_mcp(t->tcb, KEEL_PRIO_TOP, t->tcb);
}

static int t_priority_ceiling(void)
{
    struct thread t;
    keel_word_t idle = make_obj(KEEL_OBJ_TCB, 0), ep = make_obj(KEEL_OBJ_ENDPOINT, 0);

    /* A new thread's ceiling is 0: with its own capability as the
     * authority it may only go down to 0. */
    EXPECT_ERR(keel_tcb_set_priority(idle, 1, idle), KEEL_E_NO_RIGHTS);
    EXPECT_ERR(keel_tcb_set_mcp(idle, 1, idle), KEEL_E_NO_RIGHTS);
    OK(keel_tcb_set_priority(idle, 0, idle));
    OK(keel_tcb_set_mcp(idle, 0, idle));
    /* The root thread's ceiling is the top: it may give any. */
    OK(keel_tcb_set_mcp(idle, 100, KEEL_SLOT_TCB));
    OK(keel_tcb_set_priority(idle, 100, idle));
    EXPECT_ERR(keel_tcb_set_priority(idle, 101, idle), KEEL_E_NO_RIGHTS);
    EXPECT_ERR(keel_tcb_set_mcp(idle, 101, idle), KEEL_E_NO_RIGHTS); /* nor raise its own */
    OK(keel_tcb_set_mcp(idle, 50, idle));                           /* lower it, yes */
    EXPECT_ERR(keel_tcb_set_priority(idle, 100, idle), KEEL_E_NO_RIGHTS);
    OK(keel_tcb_set_priority(idle, KEEL_PRIO_TOP, KEEL_SLOT_TCB));
    OK(keel_tcb_set_mcp(idle, KEEL_PRIO_TOP, KEEL_SLOT_TCB));
    /* bad arguments */
    EXPECT_ERR(keel_tcb_set_priority(idle, KEEL_PRIO_TOP + 1, KEEL_SLOT_TCB), KEEL_E_INVALID_ARG);
    EXPECT_ERR(keel_tcb_set_mcp(idle, KEEL_PRIO_TOP + 1, KEEL_SLOT_TCB), KEEL_E_INVALID_ARG);
    EXPECT_ERR(keel_tcb_set_priority(idle, 0, ep), KEEL_E_WRONG_TYPE);
    EXPECT_ERR(keel_tcb_set_mcp(idle, 0, slot_alloc()), KEEL_E_INVALID_CAP);
    /* A running thread with its own capability cannot raise itself. */
    t.a = 0;
    OK(spawn(&t, body_raise_self, 0));
    EXPECT(wait_done(&t));
    EXPECT_ERR(t.value, KEEL_E_NO_RIGHTS);
    EXPECT_ERR((long)t.a, KEEL_E_NO_RIGHTS);
    return 0;
}

const struct test thread_tests[] = {
#define T(name) { #name, t_##name }
    T(send_recv), T(recv_nonblock_empty), T(queue_full), T(notification), T(thread_runs),
    T(thread_blocking_recv), T(thread_notification_wakeup), T(thread_suspend_resume),
    T(thread_bad_registers), T(thread_unconfigured), T(fpu_state_per_thread), T(read_regs),
    T(fault_delivered_and_resumed), T(fault_kill), T(fault_on_kernel_memory),
    T(fault_privileged_instruction), T(fault_without_handler), T(delete_endpoint_wakes_receiver),
    T(delete_running_thread), T(priority_ceiling),
#undef T
};
const unsigned long thread_tests_count = sizeof(thread_tests) / sizeof(thread_tests[0]);
