/* kmain: the portable boot sequence, every CPU's way into its idle loop,
 * and the boot-time self tests selected with keel.test= on the command line. */
#include <arch.h>
#include <keel/boot.h>
#include <keel/bootmem.h>
#include <keel/cmdline.h>
#include <keel/console.h>
#include <keel/cpu.h>
#include <keel/exit.h>
#include <keel/object.h>
#include <keel/panic.h>
#include <keel/printk.h>
#include <keel/sched.h>
#include <keel/string.h>
#include <keel/syscall.h>

#define AP_BOOT_TIMEOUT_US 5000000ul
#define TIMER_TEST_TIMEOUT_US 20000000ul

struct boot_info boot_info;

__noreturn void kmain(struct hvm_start_info *si);

/* keel.iommu=<size>@<base>: Keel's paravirtual IOMMU (docs/iommu.md).  Only
 * an address in the MMIO hole is believed: a bad command line must not make
 * the kernel write to RAM. */
static void iommu_setup(void)
{
    char val[40];
    u64 base = 0;

    if (!cmdline_get(boot_info.cmdline, "keel.iommu", val, sizeof(val)))
        return;
    const char *p = strstr_simple(val, "@0x");
    for (p = p ? p + 3 : ""; *p; p++) {
        u32 d = *p >= '0' && *p <= '9' ? (u32)(*p - '0') : (u32)((*p | 0x20) - 'a' + 10);
        if (d > 15 || base >> 60)
            break;
        base = base << 4 | d;
    }
    if (base < 0xc0000000ul || base >= 0xfec00000ul || base & 0xfff) {
        printk("keel: iommu: ignoring keel.iommu=%s (not a page in the MMIO hole)\n", val);
        return;
    }
    if (iospace_init(arch_phys_to_virt(base)))
        printk("keel: iommu at 0x%lx: DMA confined to io_space windows\n", base);
    else
        printk("keel: iommu: no Keel IOMMU at 0x%lx (bad magic): DMA is not confined\n", base);
}

/* keel.waitspin=N: turns a wait in the kernel spins before it halts until
 * kicked (wait.c); 0, never.  For measuring (docs/benchmarks.md). */
static void waitspin_setup(void)
{
    char val[12];
    u32 n = 0;

    if (!cmdline_get(boot_info.cmdline, "keel.waitspin", val, sizeof(val)))
        return;
    for (const char *p = val; *p >= '0' && *p <= '9' && n < 100000000; p++)
        n = n * 10 + (u32)(*p - '0');
    wait_spins_before_halt = n;
}

/* The first console line: the command line, its device announcements
 * (one per virtio-mmio slot the VMM offers) counted rather than echoed.
 * Every byte on the serial console costs here (a port write the VMM
 * serves), and echoing them all was 12 ms of a 47 ms boot. */
static void boot_banner(const char *cmdline)
{
    static const char dev[] = "virtio_mmio.device=";
    u32 devices = 0;

    console_write("keel: booting (cmdline \"", 24);
    for (const char *p = cmdline, *sep = ""; *p;) {
        while (*p == ' ')
            p++;
        const char *word = p;
        while (*p && *p != ' ')
            p++;
        if (p == word)
            break;
        if ((size_t)(p - word) > sizeof(dev) - 1 && !strncmp(word, dev, sizeof(dev) - 1)) {
            devices++;
            continue;
        }
        console_write(sep, strlen(sep));
        console_write(word, (size_t)(p - word));
        sep = " ";
    }
    printk("\", %u virtio-mmio device slots)\n", devices);
}

static u32 start_secondaries(void)
{
    for (u32 i = 1; i < cpu_count; i++) {
        u64 stack = bootmem_alloc(KSTACK_SIZE, 4096);
        if (!stack)
            panic("no memory for the kernel stack of cpu %u", i);
        cpus[i].stack_top = (uptr)arch_phys_to_virt(stack) + KSTACK_SIZE;
        __atomic_store_n(&cpus[i].state, CPU_STARTING, __ATOMIC_RELEASE);
    }
    arch_start_secondaries();

    u64 deadline = arch_time_us() + AP_BOOT_TIMEOUT_US;
    u32 online;
    for (;;) {
        /* The boot CPU halts between looks instead of spinning: each AP sends it
         * a wake-up when it is online (cpu_secondary_main), the timer at the
         * latest a tick later.  A spinning vCPU kept its host core busy while
         * the APs waited for theirs, and lost its place to other work on the
         * host by the time they were done.  Interrupts are off from the look to
         * the halt (sti takes effect with hlt), so no wake-up is missed. */
        arch_irq_disable();
        online = 0;
        bool waiting = false;
        for (u32 i = 0; i < cpu_count; i++) {
            u32 st = __atomic_load_n(&cpus[i].state, __ATOMIC_ACQUIRE);
            online += st == CPU_ONLINE;
            waiting |= st == CPU_STARTING || st == CPU_BOOTING;
        }
        if (!waiting)
            break;
        if (arch_time_us() > deadline) {
            for (u32 i = 0; i < cpu_count; i++) {
                u32 st = CPU_STARTING;
                if (__atomic_compare_exchange_n(&cpus[i].state, &st, CPU_FAILED, false,
                                                __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE))
                    printk("keel: cpu %u (apic %u) did not start\n", i, cpus[i].hw_id);
            }
            deadline = ~0ul; /* CPUs already booting get to finish */
        }
        arch_idle();
    }
    arch_irq_enable();
    return online;
}

static __noreturn void test_timer(void)
{
    u64 deadline = arch_time_us() + TIMER_TEST_TIMEOUT_US;

    while (cpus_timer_ok() < cpu_count) {
        if (arch_time_us() > deadline) {
            for (u32 i = 0; i < cpu_count; i++)
                printk("keel: cpu %u: %lu timer ticks\n", i, READ_ONCE(cpus[i].ticks));
            printk("keel: timer failed: %u of %u cpus ticking\n", cpus_timer_ok(), cpu_count);
            arch_exit(KEEL_EXIT_FAIL);
        }
        arch_cpu_relax();
    }
    printk("keel: timer ok %u cpus\n", cpu_count);
    arch_exit(KEEL_EXIT_PASS);
}

static __noreturn void test_serial(void)
{
    char line[128];

    printk("keel: serial ready\n");
    console_read_line(line, sizeof(line));
    printk("keel: serial rx %s\n", line);
    arch_exit(KEEL_EXIT_PASS);
}

static __noreturn void test_fault(void)
{
    printk("keel: writing to an unmapped address\n");
    *(volatile u64 *)0xdead0000000ul = 1;
    panic("the write to an unmapped address did not fault");
}

/* The interactive console of `make run`: a few commands, anything else is
 * echoed back. */
static __noreturn void monitor(void)
{
    char line[128];

    printk("keel: ready. Commands: help, cpus, ticks, panic, exit\n");
    console_set_echo(true);
    for (;;) {
        printk("keel> ");
        console_read_line(line, sizeof(line));
        if (!strcmp(line, "exit")) {
            printk("keel: bye\n");
            arch_exit(KEEL_EXIT_PASS);
        } else if (!strcmp(line, "panic")) {
            panic("requested from the console");
        } else if (!strcmp(line, "cpus") || !strcmp(line, "ticks")) {
            for (u32 i = 0; i < cpu_count; i++)
                printk("cpu %u: apic %u, state %u, %lu timer ticks\n", i, cpus[i].hw_id,
                       cpus[i].state, READ_ONCE(cpus[i].ticks));
        } else if (!strcmp(line, "help")) {
            printk("help: this text; cpus/ticks: per-cpu state; panic: test the panic path;"
                   " exit: power off\n");
        } else if (line[0]) {
            printk("you typed: %s\n", line);
        }
    }
}

static bool is_kernel_test(const char *name)
{
    static const char *const tests[] = { "boot", "timer", "serial", "fault", "triple" };

    for (u32 i = 0; i < ARRAY_SIZE(tests); i++) {
        if (!strcmp(name, tests[i]))
            return true;
    }
    return false;
}

__noreturn void kmain(struct hvm_start_info *si)
{
    struct arch_platform plat;
    char test[32];

    arch_early_init(si, &boot_info);
    boot_banner(boot_info.cmdline);
    bootmem_init(&boot_info);
    printk("keel: memory %lu MiB usable\n", bootmem_ram_bytes(&boot_info) >> 20);

    arch_platform_init(&plat);
    printk("keel: %u cpus in MADT, lapic timer %u Hz\n", plat.cpus_in_firmware, plat.timer_hz);
    printk("keel: cpu 0 online (apic %u)\n", cpus[0].hw_id);
    __atomic_store_n(&cpus[0].state, CPU_ONLINE, __ATOMIC_RELEASE);

    u32 online = start_secondaries();
    printk("keel: smp ready %u cpus\n", online);

    bool have_test = cmdline_get(boot_info.cmdline, "keel.test", test, sizeof(test));
    if (!have_test || !is_kernel_test(test)) {
        /* Everything else is user space's: init reads the command line. */
        iommu_setup();
        waitspin_setup();
        char flag[4];
        cpu_tick_stats = cmdline_get(boot_info.cmdline, "keel.tickstats", flag, sizeof(flag));
        if (root_task_create())
            sched_start_all();
        if (!have_test)
            monitor();
    }
    if (!strcmp(test, "boot"))
        arch_exit(online == cpu_count ? KEEL_EXIT_PASS : KEEL_EXIT_FAIL);
    if (!strcmp(test, "timer"))
        test_timer();
    if (!strcmp(test, "serial"))
        test_serial();
    if (!strcmp(test, "fault"))
        test_fault();
    if (!strcmp(test, "triple"))
        arch_triple_fault();
    printk("keel: unknown test %s; keel.test= takes boot timer serial fault triple "
           "(with an initrd: suite stress and its other tests)\n", test);
    arch_exit(KEEL_EXIT_FAIL);
}

/* -- starting: every CPU enters its idle loop ------------------------------ */

static volatile u32 sched_started;

__noreturn void cpu_secondary_main(void)
{
    struct cpu *c = this_cpu();

    printk("keel: cpu %u online (apic %u)\n", c->index, c->hw_id);
    __atomic_store_n(&c->state, CPU_ONLINE, __ATOMIC_RELEASE);
    arch_wake_cpu(&cpus[0]); /* the boot CPU halts until its APs are up */
    for (;;) {
        arch_irq_disable();
        if (READ_ONCE(sched_started))
            sched_idle();
        arch_idle();
    }
}

void sched_start_all(void)
{
    fastpath_init(); /* the number of CPUs is known */
    __atomic_store_n(&sched_started, 1, __ATOMIC_RELEASE);
    for (u32 i = 1; i < cpu_count; i++) {
        if (READ_ONCE(cpus[i].state) == CPU_ONLINE)
            arch_wake_cpu(&cpus[i]);
    }
    arch_irq_disable();
    sched_idle();
}
