#ifndef KEEL_SYSCALL_H
#define KEEL_SYSCALL_H

#include <keel/object.h>

/* Called by the architecture with the objects lock held shared (syscalls,
 * which upgrade when they must) or exclusive (faults).  args: the six
 * words, then (KEEL_SYS_REPLY_RECV only) the endpoint and the window. */
void syscall_handle(struct tcb *t, u64 nr, u64 cap, u64 label, const u64 *args);
/* How a system call takes the objects lock, and what its hold reads from
 * the entry on (grace.c, kernel_enter_shared) - one look at the call table
 * on every entry.  READS_ANY: exclusive from the start, rather than
 * failing shared and running again - batches, and kernel object calls that
 * delete, move or destroy (decided by the label; an endpoint invoked with
 * such a label just runs exclusive too).  Else shared: 0 (nothing read
 * yet) for a call marked "shared listed" in calls.tbl, whose list call_one
 * starts - nothing on the way from the entry to it reads a slot - and
 * READS_FRESH (any slot) for the rest. */
u32 syscall_label_reads(u64 label);

static inline u32 syscall_entry_reads(u64 nr, u64 label)
{
    if (nr == KEEL_SYS_BATCH)
        return READS_ANY;
    return nr == KEEL_SYS_INVOKE && label < KEEL_LABEL_USER ? syscall_label_reads(label)
                                                           : READS_FRESH;
}

/* The IPC fast path (fastpath.c) for a system call of this CPU's current
 * thread, whose registers are saved in its frame (the call's first two
 * arguments come as C's, straight from the registers; reply_recv's
 * endpoint and window are read from the frame): enters the kernel
 * (objects lock shared) and either switches to the other thread or, when
 * its preconditions do not hold (nothing was changed), serves the call
 * the general way (syscall_general, the architecture's).  Never returns.
 * fastpath.c preserves no register for its caller (kernel/build.mk). */
struct trap_frame;
extern void (*fastpath_call_fn)(u64 cptr, u64 label);
extern void (*fastpath_reply_recv_fn)(u64 reply, u64 err);
/* Picks the entry points' bodies for the number of CPUs (one CPU takes no
 * locks): once, before the first thread runs. */
void fastpath_init(void);

static inline __noreturn void fastpath_call(u64 cptr, u64 label)
{
    fastpath_call_fn(cptr, label);
    __builtin_unreachable();
}

static inline __noreturn void fastpath_reply_recv(u64 reply, u64 err)
{
    fastpath_reply_recv_fn(reply, err);
    __builtin_unreachable();
}
/* The capability fast path (capfast.c): cnode_copy and cnode_delete
 * (label), their arguments a0-a3 straight from the caller's registers; the
 * same contract, and capfast.c too preserves no register for its caller. */
__noreturn void fastpath_cnode(u64 cptr, u64 label, u64 a0, u64 a1, u64 a2, u64 a3);
__noreturn void syscall_general(struct trap_frame *f, struct tcb *t);
void thread_fault(struct tcb *t, u64 vector, u64 addr, u64 error, u64 pc);

/* The first user thread; its death ends the system. */
extern struct tcb *root_task;
/* Builds the root task from the initrd; false when there is no init. */
bool root_task_create(void);

#endif
