/* keel.test=entry: user code that jumps to the kernel's syscall entry
 * point instead of executing syscall (tests/boot/test_syscall_entry.py
 * gives its address as keel.syscall_entry=0x...).  The fetch faults on
 * the kernel page at that address, which is also what kvm_pvm makes of
 * every real syscall (asm/x86_64/entry.S, trap_from_user), so the kernel
 * serves it as one - with RCX (the return address) and R11 (RFLAGS) of
 * the user's choosing.  Neither may give user code what syscall could
 * not: IOPL 3 or interrupts off (RFLAGS), or a return to an address that
 * is not a user one (where iret would fault in the kernel). */
#include "suite.h"

int entry_run(void);

static unsigned long syscall_entry;

#define RFLAGS_IF 0x200ul
#define RFLAGS_IOPL 0x3000ul

/* The floor call by a jump with R11 = rflags: the RFLAGS user mode comes
 * back with (read below the red zone). */
static unsigned long jump_floor(unsigned long rflags)
{
    register unsigned long rax __asm__("rax") = KEEL_SYS_FLOOR;
    register unsigned long r11 __asm__("r11") = rflags;
    unsigned long out;

    __asm__ volatile("leaq 1f(%%rip), %%rcx\n\t"
                     "jmp *%[entry]\n"
                     "1:\tsubq $128, %%rsp\n\t"
                     "pushfq\n\t"
                     "popq %[out]\n\t"
                     "addq $128, %%rsp"
                     : [out] "=&r"(out), "+r"(rax), "+r"(r11)
                     : [entry] "r"(syscall_entry)
                     : "rcx", "memory", "cc");
    return out;
}

static int t_entry_jump_keeps_rflags_safe(void)
{
    unsigned long got = jump_floor(RFLAGS_IOPL | 2); /* IOPL 3, interrupts off */

    EXPECT((got & RFLAGS_IOPL) == 0 && (got & RFLAGS_IF));
    return 0;
}

/* Jumps to the entry with RCX = a kernel address, then a non-canonical
 * one: each a page fault at the entry point for the thread (its fault
 * endpoint hears it), never the kernel's. */
static void body_jump_bad_return(struct thread *t)
{
    register unsigned long rax __asm__("rax") = KEEL_SYS_FLOOR;
    register unsigned long rcx __asm__("rcx") = t->c;
    register unsigned long r11 __asm__("r11") = 0x202;

    __asm__ volatile("jmp *%3" : "+r"(rax), "+r"(rcx), "+r"(r11) : "r"(syscall_entry) : "memory");
    t->value = 1; /* not reached */
}

static int t_entry_jump_to_a_kernel_return_address_faults(void)
{
    static const unsigned long bad[] = { 0xffffffff80100000ul, 0x8000000000000000ul };

    for (unsigned i = 0; i < 2; i++) {
        keel_word_t ep = make_obj(KEEL_OBJ_ENDPOINT, 0);
        struct thread t = { .c = bad[i] };
        struct keel_msg m;

        OK(spawn(&t, body_jump_bad_return, ep));
        OK(keel_recv(ep, 0, 0, &m));
        EXPECT(m.label == KEEL_LABEL_FAULT && m.w[0] == 14 && m.w[1] == syscall_entry &&
               t.value == 0);
        OK(keel_cnode_delete(CN, t.tcb));
        OK(keel_cnode_delete(CN, ep));
    }
    return 0;
}

static const struct test entry_tests[] = {
    { "entry_jump_keeps_rflags_safe", t_entry_jump_keeps_rflags_safe },
    { "entry_jump_to_a_kernel_return_address_faults",
      t_entry_jump_to_a_kernel_return_address_faults },
};

int entry_run(void)
{
    char v[24] = "";
    unsigned passed = 0, failed = 0;

    cmdline_get(suite_boot->cmdline, "keel.syscall_entry", v, sizeof(v));
    for (const char *p = v[0] == '0' && v[1] == 'x' ? v + 2 : v; *p; p++) {
        unsigned d = *p >= 'a' ? (unsigned)(*p - 'a' + 10) : (unsigned)(*p - '0');
        syscall_entry = syscall_entry * 16 + d;
    }
    if (!syscall_entry) {
        printf("ktest: keel.test=entry needs keel.syscall_entry=0x...\n");
        return 1;
    }
    run_table(entry_tests, sizeof(entry_tests) / sizeof(entry_tests[0]), &passed, &failed);
    printf("ktest: %u passed, %u failed\n", passed, failed);
    return failed != 0;
}
