#include <arch.h>
#include <keel/console.h>
#include <keel/exit.h>
#include <keel/panic.h>
#include <keel/printk.h>

void panic(const char *fmt, ...)
{
    char buf[PRINTK_MAX];
    va_list ap;

    arch_irq_disable();
    va_start(ap, fmt);
    vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    console_panic_take();
    printk("keel: panic: %s\n", buf);
    arch_exit(KEEL_EXIT_FAIL);
}
