/* The kernel's debug console: an object like any other, named by a
 * capability the root task receives.  The kernel keeps the serial port;
 * user space reads whole lines the receive interrupt collected, and may
 * have a notification signalled when one is complete (one listener). */
#include <keel/console.h>
#include <keel/invoke.h>
#include <keel/sched.h>
#include <keel/string.h>

#define CONSOLE_WRITE_MAX 4096
#define CONSOLE_LINE_MAX 256

/* Protected by the kernel lock. */
static struct notification *listener;
static u64 listener_bits;

/* A line waiting is announced again at every receive interrupt, until the
 * reader takes it; only then is the objects lock taken (exclusive: the
 * listener's waiters and bound thread may change). */
void console_input(const char *buf, size_t len)
{
    if (!console_rx(buf, len))
        return;
    kernel_enter_exclusive();
    if (listener && console_line_ready())
        notification_raise(listener, listener_bits);
    kernel_leave();
}

bool console_notification_used(const struct notification *n)
{
    return listener == n;
}

void console_notification_gone(struct notification *n)
{
    if (listener == n)
        listener = NULL;
}

static long console_listen(struct invocation *inv)
{
    if (inv->arg[1] > 1)
        return KEEL_E_INVALID_ARG;
    if (!inv->arg[0]) {
        listener = NULL;
    } else {
        long err = 0;
        u64 bits;
        struct notification *n =
            notification_lookup(inv->caller, inv->arg[0], KEEL_RIGHT_WRITE, &bits, &err);
        if (!n)
            return err;
        listener = n;
        listener_bits = bits;
    }
    console_set_echo(inv->arg[1] != 0);
    if (listener && console_line_ready())
        notification_raise(listener, listener_bits); /* typed before it listened */
    return KEEL_E_OK;
}

long console_decode(struct invocation *inv)
{
    static char buf[CONSOLE_WRITE_MAX];

    switch (inv->label) {
    case KEEL_CALL_CONSOLE_WRITE:
        if (inv->arg[1] > CONSOLE_WRITE_MAX)
            return KEEL_E_INVALID_ARG;
        if (!user_copy_in(inv->caller, buf, inv->arg[0], inv->arg[1]))
            return KEEL_E_BAD_ADDRESS;
        console_write(buf, inv->arg[1]);
        return KEEL_E_OK;
    case KEEL_CALL_CONSOLE_READ: {
        char line[CONSOLE_LINE_MAX];
        if (inv->arg[1] > CONSOLE_LINE_MAX)
            return KEEL_E_INVALID_ARG;
        if (!console_line_ready())
            return KEEL_E_WOULD_BLOCK;
        /* check the buffer before taking the line, so a bad one loses nothing */
        memset(line, 0, inv->arg[1]);
        if (!user_copy_out(inv->caller, inv->arg[0], line, inv->arg[1]))
            return KEEL_E_BAD_ADDRESS;
        size_t n = console_take_line(line, inv->arg[1]);
        if (!user_copy_out(inv->caller, inv->arg[0], line, n))
            return KEEL_E_BAD_ADDRESS;
        inv->res[0] = n;
        return KEEL_E_OK;
    }
    case KEEL_CALL_CONSOLE_LISTEN:
        return console_listen(inv);
    case KEEL_CALL_CONSOLE_POWEROFF:
        if (inv->arg[0] > 0xff)
            return KEEL_E_INVALID_ARG;
        lockstat_print(); /* measuring builds (keel/lockstat.h) */
        cpu_tick_stats_print(); /* keel.tickstats */
        arch_exit((int)inv->arg[0]);
    }
    return KEEL_E_UNKNOWN_CALL;
}
