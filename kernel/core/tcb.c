/* Threads: configure, registers, resume, suspend, and their lifetime. */
#include <keel/cpu.h>
#include <keel/invoke.h>
#include <keel/sched.h>
#include <keel/string.h>

_Static_assert(SCHED_PRIO_LEVELS == KEEL_PRIO_TOP + 1 && SCHED_PRIO_DEFAULT == KEEL_PRIO_DEFAULT,
               "the priorities of kernel/uapi/keel/abi.h");

void tcb_setup(struct tcb *t)
{
    t->hdr.type = KEEL_OBJ_TCB;
    t->cpu = -1;
    t->prio = SCHED_PRIO_DEFAULT;
    t->affinity = -1;
    t->last_cpu = -1;
    t->state = THREAD_INACTIVE;
    t->id = __atomic_fetch_add(&kernel_ids, 1, __ATOMIC_RELAXED); /* retype may run shared */
    t->cspace.owner = t->vspace.owner = t->fault_ep.owner = t->io_ports.owner = t;
    arch_tcb_init(t);
}

bool tcb_init(struct cap *c, u32 user_bits)
{
    tcb_setup((struct tcb *)c->obj);
    return true;
}

/* Takes t off whatever it waits on. */
static void tcb_unblock(struct tcb *t)
{
    if (t->wait_kind == WAIT_NTFN && t->blocked_on)
        notification_cancel_wait(t);
    else if (t->state == THREAD_BLOCKED || (t->state == THREAD_FAULTED && t->blocked_on))
        endpoint_cancel_wait(t);
    t->recv_window = 0;
    t->blocked_on = NULL;
    t->wait_kind = WAIT_NONE;
}

void tcb_destroy(struct kobj *o)
{
    struct tcb *t = (struct tcb *)o;

    thread_stop(t);
    tcb_unblock(t);
    tcb_cancel_room_wait(t);
    notification_unbind(t);
    t->state = THREAD_INACTIVE;
    slot_delete(&t->cspace);
    slot_delete(&t->vspace);
    slot_delete(&t->fault_ep);
    slot_delete(&t->io_ports);
    t->hdr.type = 0;
}

/* One of the thread's own slots was emptied (cap.c): losing its address
 * space stops it; losing its I/O ports takes effect at once, not at its
 * next kernel entry. */
void tcb_binding_deleted(struct slot *s)
{
    struct tcb *t = s->owner;

    if (s == &t->vspace) {
        thread_stop(t);
        tcb_unblock(t);
        t->state = THREAD_INACTIVE;
    } else if (s == &t->io_ports && t->state == THREAD_RUNNABLE && t->cpu >= 0) {
        thread_stop(t);
        sched_make_runnable(t);
    }
}

static void set_binding(struct tcb *t, struct slot *dst, struct slot *src)
{
    struct cap c = src->cap;
    struct tcb *owner = dst->owner;

    dst->owner = NULL; /* replacing a binding is not losing it */
    slot_delete(dst);
    dst->owner = owner;
    c.flags &= (u8)~CAP_MAPPED;
    c.a = c.b = 0;
    slot_insert_child(src, dst, &c);
}

static long configure(struct invocation *inv, struct tcb *t)
{
    struct slot *fault = NULL;

    if (inv->arg[2]) {
        long err = 0;
        fault = tcb_lookup_slot(inv->caller, inv->arg[2], &err);
        if (!fault)
            return err;
        if ((err = slot_type_check(fault, KEEL_OBJ_ENDPOINT)))
            return err;
        if (!(fault->cap.rights & KEEL_RIGHT_WRITE))
            return KEEL_E_NO_RIGHTS;
    }
    /* invoke: cannot fail from here on */
    thread_stop(t);
    set_binding(t, &t->cspace, inv->cap_arg[0]);
    set_binding(t, &t->vspace, inv->cap_arg[1]);
    if (fault)
        set_binding(t, &t->fault_ep, fault);
    else
        slot_delete(&t->fault_ep);
    if (t->state == THREAD_RUNNABLE)
        sched_make_runnable(t);
    return KEEL_E_OK;
}

static bool canonical_user(u64 addr)
{
    return addr < KEEL_USER_TOP;
}

long tcb_decode(struct invocation *inv)
{
    struct tcb *t = (struct tcb *)inv->slot->cap.obj;

    switch (inv->label) {
    case KEEL_CALL_TCB_CONFIGURE:
        return configure(inv, t);
    case KEEL_CALL_TCB_WRITE_REGS:
        if (!canonical_user(inv->arg[0]) || !canonical_user(inv->arg[1]))
            return KEEL_E_INVALID_ARG;
        if (t == inv->caller)
            return KEEL_E_BAD_STATE; /* its registers are the call's results */
        thread_stop(t);
        arch_tcb_set_entry(t, inv->arg[0], inv->arg[1], inv->arg[2]);
        if (t->state == THREAD_RUNNABLE)
            sched_make_runnable(t);
        return KEEL_E_OK;
    case KEEL_CALL_TCB_READ_REGS:
        if (t != inv->caller)
            thread_stop(t);
        arch_tcb_get_regs(t, &inv->res[0], &inv->res[1], &inv->res[2]);
        if (t != inv->caller && t->state == THREAD_RUNNABLE)
            sched_make_runnable(t);
        return KEEL_E_OK;
    case KEEL_CALL_TCB_RESUME:
        if (!t->cspace.cap.type || !t->vspace.cap.type)
            return KEEL_E_BAD_STATE;
        if (t->state == THREAD_BLOCKED)
            return KEEL_E_BAD_STATE;
        tcb_unblock(t);
        sched_make_runnable(t);
        return KEEL_E_OK;
    case KEEL_CALL_TCB_SUSPEND:
        thread_stop(t);
        tcb_unblock(t);
        t->state = THREAD_INACTIVE;
        return KEEL_E_OK;
    case KEEL_CALL_TCB_STATE:
        inv->res[0] = t->state;
        return KEEL_E_OK;
    case KEEL_CALL_TCB_BIND_NOTIFICATION: {
        struct notification *n = NULL;
        if (inv->arg[0]) {
            long err = 0;
            n = notification_lookup(inv->caller, inv->arg[0], KEEL_RIGHT_READ, NULL, &err);
            if (!n)
                return err;
            if (n->bound && n->bound != t)
                return KEEL_E_BAD_STATE; /* one thread per notification */
        }
        notification_unbind(t);
        if (n) {
            t->bound = n;
            t->bound->bound = t;
        }
        return KEEL_E_OK;
    }
    case KEEL_CALL_TCB_SET_AFFINITY: {
        /* -1 (any word with the top bit set) lets the thread run anywhere. */
        s64 cpu = (s64)inv->arg[0];
        if (cpu < 0)
            cpu = -1;
        else if ((u64)cpu >= cpu_count || READ_ONCE(cpus[cpu].state) != CPU_ONLINE)
            return KEEL_E_INVALID_ARG;
        sched_set_affinity(t, (s32)cpu);
        return KEEL_E_OK;
    }
    case KEEL_CALL_TCB_SET_PRIORITY:
    case KEEL_CALL_TCB_SET_MCP: {
        /* A priority or MCP no higher than the authority thread's MCP: a
         * thread holding only its own capability cannot raise itself above
         * what it was allowed. */
        const struct tcb *authority = (const struct tcb *)inv->cap_arg[1]->cap.obj;
        if (inv->arg[0] >= SCHED_PRIO_LEVELS)
            return KEEL_E_INVALID_ARG;
        if (inv->arg[0] > READ_ONCE(authority->mcp))
            return KEEL_E_NO_RIGHTS;
        if (inv->label == KEEL_CALL_TCB_SET_MCP)
            WRITE_ONCE(t->mcp, (u8)inv->arg[0]);
        else
            sched_set_priority(t, (u32)inv->arg[0]);
        return KEEL_E_OK;
    }
    case KEEL_CALL_TCB_SET_IO_PORTS: {
        struct slot *ps = NULL;
        if (inv->arg[0]) {
            long err = 0;
            ps = tcb_lookup_slot(inv->caller, inv->arg[0], &err);
            if (!ps)
                return err;
            if ((err = slot_type_check(ps, KEEL_OBJ_IO_PORT)))
                return err;
        }
        /* A thread that runs now picks its new ports up when it next
         * enters user mode: stop it so that is before its next instruction. */
        bool was_runnable = t->state == THREAD_RUNNABLE;
        if (t != inv->caller)
            thread_stop(t);
        slot_delete(&t->io_ports);
        if (ps)
            slot_insert_child(ps, &t->io_ports, &ps->cap);
        if (t != inv->caller && was_runnable)
            sched_make_runnable(t);
        return KEEL_E_OK;
    }
    }
    return KEEL_E_UNKNOWN_CALL;
}
