/* The host harness's grace periods (grace.c) on simulated CPUs: a region's
 * revoke finished on a way out of the kernel, after a wait, or as
 * syscall_handle runs it; what a CPU's fill waits for; the epochs. */
#include <keel/cpu.h>
#include <keel/sched.h>

#include "harness.h"

/* fn as CPU cpu in the kernel, shared; if it upgraded (grace_finish does
 * when a type's hook must run: grace_exclusive finished the revoke), the
 * exclusive hold ends with it. */
static void as_cpu(u32 cpu, void (*fn)(void))
{
    host_enter(cpu);
    host_cpu = cpu;
    fn();
    if (cpus[cpu].kmode == KMODE_EXCLUSIVE)
        objects_writer = 0;
    host_cpu = 0;
    host_leave(cpu);
}

/* Step 2 of a region's revoke (grace.c), as syscall_handle runs it after
 * its wait: the harness has let every CPU in the kernel leave. */
void host_grace_finish(u32 cpu)
{
    as_cpu(cpu, grace_finish);
}

/* CPU cpu on its way out of the kernel (sched.c): finishes its pending
 * region revoke if the grace period is over, whoever else is in the kernel
 * (the harness's CPUs hold nothing that needs the finish to upgrade: no
 * thread waits on an object, and a mapped capability is no region's). */
void host_grace_finish_due(u32 cpu)
{
    as_cpu(cpu, grace_finish_due);
}

/* A wait in the kernel polls the watchdog every 256 turns (wait.c); in the
 * harness no other CPU moves while one waits, so the poll during
 * host_grace_wait_finish lets the CPU waited for leave, as the wait lasts
 * until it does, and notes it: the one kernel_regrace names (grace_wait),
 * else (an upgrade draining the readers) every CPU in the kernel. */
static bool host_waiting;
static u32 host_waited;

/* A capability lock (sched.h) another CPU holds: host_hold_caps_lock takes
 * the one a key hashes to; a wait for it is noted and lets it go, as its
 * holder would (no other CPU moves while one waits). */
static s32 host_caps_held = -1;
static bool host_caps_waited;

void host_hold_caps_lock(u64 key)
{
    host_caps_held = (s32)caps_stripe(key);
    spin_trylock(&caps_stripes[host_caps_held]);
    host_caps_waited = false;
}

/* Did a call wait for it since?  It is held again for the next. */
bool host_caps_lock_waited(void)
{
    bool waited = host_caps_waited;

    spin_trylock(&caps_stripes[host_caps_held]);
    host_caps_waited = false;
    return waited;
}

void host_release_caps_lock(void)
{
    if (host_caps_held >= 0)
        spin_unlock(&caps_stripes[host_caps_held]);
    host_caps_held = -1;
}

void watchdog_poll(void)
{
    u32 named = cpus[host_cpu].grace_wait;

    if (host_caps_held >= 0 && caps_stripes[host_caps_held].locked) {
        host_caps_waited = true;
        spin_unlock(&caps_stripes[host_caps_held]);
    }
    if (!host_waiting)
        return;
    for (u32 i = 0; i < cpu_count; i++) {
        if (i != host_cpu && cpus[i].reading && (!named || i == named - 1)) {
            host_waited |= 1u << i;
            host_leave(i);
        }
    }
}

/* grace_wait_finish on cpu (syscall_handle's KEEL_E_FINISH): the CPUs its
 * wait had to let leave, as a bit mask (0: it waited for none). */
u32 host_grace_wait_finish(u32 cpu)
{
    host_waiting = true;
    host_waited = 0;
    as_cpu(cpu, grace_wait_finish);
    host_waiting = false;
    return host_waited;
}

/* After a KEEL_E_GRACE on cpu: the slot its fill waits for, or 0 when a
 * pending region revoke holds it (syscall_handle then has this CPU's
 * finished: grace_wait_finish). */
u64 host_grace_slot(u32 cpu)
{
    return (u64)cpus[cpu].grace_slot;
}

/* grace.c's epoch and the last stamp known past, and a CPU's epoch. */
void host_grace_epochs(u32 cpu, u64 *out)
{
    out[0] = grace_epoch;
    out[1] = grace_done;
    out[2] = cpus[cpu].epoch;
}

