/* What happens when a user thread enters the kernel: system calls and
 * faults.  The architecture saves the registers in the TCB, takes the
 * kernel lock and calls these; then sched_exit_kernel() decides who runs. */
#include <keel/console.h>
#include <keel/exit.h>
#include <keel/invoke.h>
#include <keel/printk.h>
#include <keel/sched.h>
#include <keel/syscall.h>

struct tcb *root_task;

void syscall_handle(struct tcb *t, u64 nr, u64 cap, u64 label, const u64 *args)
{
    u64 none[KEEL_MSG_WORDS] = { 0 };

    switch (nr) {
    case KEEL_SYS_INVOKE: {
        struct invocation inv = { .caller = t, .label = label };
        long err = 0;
        for (u32 i = 0; i < KEEL_MSG_WORDS; i++)
            inv.arg[i] = args[i];
        inv.slot = tcb_lookup_slot(t, cap, &err);
        if (inv.slot)
            err = invoke(&inv);
        zombies_reap();
        /* The caller may have deleted itself; a blocked caller gets its
         * results from whoever wakes it. */
        if (t->hdr.type == KEEL_OBJ_TCB && !inv.blocked)
            arch_tcb_set_results(t, err, inv.res);
        break;
    }
    case KEEL_SYS_YIELD:
        sched_yield();
        arch_tcb_set_results(t, KEEL_E_OK, none);
        break;
    case KEEL_SYS_NULL:
        arch_tcb_set_results(t, KEEL_E_OK, none);
        break;
    default:
        arch_tcb_set_results(t, KEEL_E_UNKNOWN_CALL, none);
    }
}

void thread_fault(struct tcb *t, u64 vector, u64 addr, u64 error, u64 pc)
{
    t->fault[0] = vector;
    t->fault[1] = addr;
    t->fault[2] = error;
    t->fault[3] = pc;
    thread_stop(t);
    if (endpoint_send_fault(t))
        return;
    t->state = THREAD_INACTIVE;
    printk("keel: thread %lu: unhandled fault, vector %lu at pc 0x%lx, address 0x%lx, "
           "error 0x%lx; thread stopped\n",
           t->id, vector, pc, addr, error);
    if (t == root_task) {
        printk("keel: the root task died\n");
        arch_exit(KEEL_EXIT_FAIL);
    }
}
