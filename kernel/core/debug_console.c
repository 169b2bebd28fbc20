/* The kernel's debug console: an object like any other, named by a
 * capability the root task receives. */
#include <keel/console.h>
#include <keel/invoke.h>

#define CONSOLE_WRITE_MAX 4096

long decode_console(struct invocation *inv)
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
    case KEEL_CALL_CONSOLE_POWEROFF:
        if (inv->arg[0] > 0xff)
            return KEEL_E_INVALID_ARG;
        arch_exit((int)inv->arg[0]);
    }
    return KEEL_E_UNKNOWN_CALL;
}
