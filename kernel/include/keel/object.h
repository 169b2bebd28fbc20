/* Kernel objects and the capabilities that name them.
 *
 * Every object lives in memory a user retyped from untyped memory; the
 * kernel allocates nothing on a user's behalf after boot.  A capability is
 * (object, rights, badge) stored in a slot of a capability table (a CNode
 * object, or one of the slots embedded in a thread).  Slots form the
 * derivation tree: a copy, a mint or an object made by retype is a child of
 * the slot it came from, and revoke deletes every descendant.
 *
 * Locking (sched.h has the order): object lifetimes end only under the
 * objects lock held exclusive; holding it shared, a CPU may use any object
 * it reaches through a capability and takes that object's own lock
 * (kobj.lock) for what the object's comment says it protects.  Slots and
 * the derivation tree change exclusive, or shared under the capability
 * lock; a slot emptied shared keeps its contents until a grace period has
 * passed (grace.c), so a CPU that looked it up before sees it whole.
 */
#ifndef KEEL_OBJECT_H
#define KEEL_OBJECT_H

#include <arch.h>
#include <keel/abi.h>
#include <keel/cpu.h>
#include <keel/spinlock.h>
#include <keel/types.h>

struct cap {
    u8 type;      /* KEEL_OBJ_*; 0 = empty slot */
    u8 rights;    /* KEEL_RIGHT_* */
    u8 size_bits; /* untyped region, cnode slot count */
    u8 flags;     /* CAP_* below */
    u32 io;       /* frames: id of the io_space the frame is mapped into (CAP_IOMAPPED) */
    uptr obj;     /* kernel virtual address of the object (untyped: region) */
    u64 badge;    /* endpoint and notification capabilities */
    u64 a;        /* untyped: bytes used; paging objects and frames: mapped vaddr */
    u64 b;        /* paging objects and frames: id of the vspace mapped into */
};

#define CAP_MAPPED 1 /* paging objects and frames: cap.a/cap.b hold the mapping */
#define CAP_DEVICE 2 /* untyped and frames: device memory (not RAM, never zeroed,
                      * mapped uncached) */
#define CAP_RESERVED 4 /* on an empty slot (type 0): a retype running with the
                        * objects lock shared will fill it (untyped.c) */
#define CAP_IOMAPPED 8 /* frames: a DMA window of the io_space cap.io (iospace.c), */
#define CAP_IO_READ 16 /* which the device may read */
#define CAP_IO_WRITE 32 /* and/or write */
#define CAP_IO_FLAGS (CAP_IOMAPPED | CAP_IO_READ | CAP_IO_WRITE)
#define CAP_PENDING 64 /* on a retired slot: its object waits in a region revoke's
                        * pending list (grace.c), which reads the slot until
                        * the revoke is finished: not reclaimed before */

struct slot {
    struct cap cap;
    /* Derivation tree. */
    struct slot *parent;
    struct slot *child; /* first child */
    struct slot *next;  /* siblings */
    struct slot *prev;
    struct tcb *owner; /* for the slots embedded in a thread: that thread */
    /* Emptied with the objects lock shared (grace.c): the grace epoch it
     * was emptied in, until it may be filled again; else 0. */
    u64 retired;
    /* The derivation family whose lock guards the slot's links (sched.h:
     * the capability locks): the region (cap.obj) of the nearest untyped
     * capability above it, FAMILY_ROOT if none; written when it is filled. */
    u64 family;
    u64 pad[4];
};

_Static_assert(sizeof(struct slot) == 128, "slot size");
#define SLOT_BITS 7

/* Objects with bookkeeping start with this header; the object is destroyed
 * when the last capability to it is deleted. */
struct kobj {
    u32 type;
    u32 refs;
    struct kobj *zombie_next; /* on the destruction list */
    spinlock_t lock;          /* the object's lock (sched.h: classes 3-5) */
    u32 lock_pad;
};

/* A CNode of 2^n slots is 2^(n+7) bytes; slot 0 holds the header, so slot
 * number 0 is never a valid capability (the null slot). */
struct cnode {
    struct kobj hdr;
    u32 size_bits;
};

enum thread_state {
    THREAD_INACTIVE = KEEL_THREAD_INACTIVE,
    THREAD_RUNNABLE = KEEL_THREAD_RUNNABLE,
    THREAD_BLOCKED = KEEL_THREAD_BLOCKED,
    THREAD_FAULTED = KEEL_THREAD_FAULTED,
};

struct endpoint;

/* hdr.lock (thread lock): state and cpu while a wake-up and the exit path
 * of the CPU running it may meet (sched.c); blocked_on, wait_kind and
 * recv_window are written by the thread itself while it blocks, under the
 * lock of what it blocks on, and by whoever pops it from that list. */
struct tcb {
    struct kobj hdr;
    u32 state;           /* enum thread_state */
    s32 cpu;             /* CPU running it, or -1 */
    struct tcb *rq_next; /* run queue or an endpoint's wait list */
    struct tcb *rq_prev;
    void *blocked_on;    /* endpoint or notification while BLOCKED */
    u32 wait_kind;       /* WAIT_* */
    u32 queued;          /* on a run queue: that CPU's index + 1 (sched.c) */
    u8 prio;             /* 0..255, higher runs first (sched.c) */
    u8 slice;            /* timer ticks left of its time slice */
    s16 affinity;        /* the one CPU it may run on, or -1 for any */
    s16 last_cpu;        /* where it ran last, or -1 */
    u8 mcp;              /* maximum controlled priority: the most it lets set (tcb.c) */
    u8 sched_pad;
    u64 fault[4];        /* pending fault message (vector, address, error, rip) */
    u64 id;              /* for messages and the console */
    struct slot cspace;  /* its capability table (a cnode capability) */
    struct slot vspace;  /* its address space */
    struct slot fault_ep;
    struct slot io_ports; /* an io_port capability: the ports it may use */
    /* Messaging: written by exclusive holders, and by shared ones only as
     * the waiting lists above allow. */
    struct slot *reply_slot;  /* the one reply capability naming this thread */
    u64 recv_window;          /* while blocked in recv: first slot for caps */
    struct notification *bound; /* signals also end a recv */
    struct endpoint *room_ep;   /* asked to be told when ep has room */
    struct tcb *room_next;
    struct arch_tcb arch; /* registers and FPU state */
};

_Static_assert(sizeof(struct tcb) <= (1u << KEEL_OBJ_TCB_BITS), "tcb size");

#define WAIT_NONE 0
#define WAIT_RECV 1     /* endpoint_recv */
#define WAIT_FAULT 2    /* fault message waiting for room in the queue */
#define WAIT_NTFN 3
#define WAIT_REPLY 4    /* made a call; waits for its reply capability's use */

/* A queued message.  Capabilities travelling with it live in its own
 * slots (children of the sender's), so revoking the sender's capability
 * reaches them in flight; a call's reply capability likewise. */
#define MSG_CAPS 3

struct message {
    u64 badge;
    u64 label; /* as sent, capability mask included */
    u64 w[KEEL_MSG_WORDS];
    u32 ncaps;
    u8 cap_word[MSG_CAPS]; /* the word each capability stood in */
    u8 has_reply;
    struct slot caps[MSG_CAPS];
    struct slot reply;
};

#define EP_QUEUE_LEN 16

/* Everything but hdr.type/refs under hdr.lock (shared holders). */
struct endpoint {
    struct kobj hdr;
    u32 head, count;
    struct tcb *receivers; /* threads blocked in recv, FIFO */
    struct tcb *senders;   /* faulted threads waiting for room, FIFO */
    struct tcb *room;      /* senders to tell when there is room */
    struct message queue[EP_QUEUE_LEN];
};

/* word and waiters under hdr.lock (shared holders); bound changes only
 * under the exclusive objects lock. */
struct notification {
    struct kobj hdr;
    u64 word;
    struct tcb *waiters;
    struct tcb *bound; /* a thread whose recv this also ends */
};

/* A vspace object is 8 KiB: the top-level page table, then this.  Its
 * page tables are changed under hdr.lock (shared holders). */
struct vspace {
    struct kobj hdr;
    u64 id;       /* registry id; capabilities of mapped objects name it */
};

/* cap.c */
extern u64 kernel_ids;
/* The capability locks (sched.h): CAPS_STRIPES spinlocks, a family's or a
 * slot's chosen by hashing its key (caps_stripe), taken only by shared
 * holders, several in ascending order (caps_lock_pair, struct caps_hold). */
#define CAPS_STRIPES 256
#define FAMILY_ROOT 0ul
extern spinlock_t caps_stripes[CAPS_STRIPES];
static inline u32 caps_stripe(u64 key)
{
    return (u32)((key * 0x9e3779b97f4a7c15ul) >> 56);
}
/* The family of the capabilities derived from s: an untyped capability
 * heads one (its region), any other's children are in its own. */
static inline u64 children_family(const struct slot *s)
{
    return s->cap.type == KEEL_OBJ_UNTYPED ? s->cap.obj : s->family;
}
/* A slot being emptied shared (grace.c), until its grace epoch is known:
 * nothing may fill it. */
#define SLOT_RETIRING (~0ul)
/* Empty, not reserved, and past its grace period if it was emptied with
 * the objects lock shared: then reclaimed here (grace.c).  Under the
 * capability locks, or exclusive. */
bool slot_reclaim(struct slot *s);
static inline bool slot_is_free(struct slot *s)
{
    return !s->cap.type && !(s->cap.flags & CAP_RESERVED) && (!s->retired || slot_reclaim(s));
}
/* A slot this CPU is about to read (grace.c: the slots a call reads).
 * While its call lists what it reads, the slot joins cpu.reads; the
 * exchange that publishes it is a full barrier, so the slot's type is read
 * after a fill looking at the list could see it there.  One slot more than
 * the list holds, and the call reads "any slot". */
static inline __attribute__((always_inline)) void slot_listed(struct slot *s)
{
    struct cpu *c = this_cpu();
    u32 n = c->reads_n;

    if (n > READS_MAX)
        return; /* not listing: any slot counts as read */
    if (n < READS_MAX)
        c->reads[n] = s;
    __atomic_exchange_n(&c->reads_n, n < READS_MAX ? n + 1 : READS_ANY, __ATOMIC_SEQ_CST);
}
/* The slot at index of a capability table, or NULL; not listed. */
static inline struct slot *cnode_slot_unlisted(const struct cap *cnode, u64 index)
{
    if (cnode->type != KEEL_OBJ_CNODE || index == 0 || index >= (1ul << cnode->size_bits))
        return NULL;
    return (struct slot *)cnode->obj + index;
}
/* The slot at index of a capability table, or NULL, listed as read
 * (inline: every call looks up its capability). */
static inline struct slot *cnode_slot(const struct cap *cnode, u64 index)
{
    struct slot *s = cnode_slot_unlisted(cnode, index);

    if (s)
        slot_listed(s);
    return s;
}
struct slot *tcb_lookup_slot(struct tcb *t, u64 cptr, long *err);
/* Whether a looked-up slot holds a capability of type want: KEEL_E_OK, or
 * the error.  The type is read once.  With the objects lock shared a delete
 * or revoke on another CPU may empty the slot after its lookup (grace.c):
 * that reads as the capability gone, KEEL_E_INVALID_CAP, as if the lookup
 * had come just after it - never as a capability of another type. */
static inline long slot_type_check(const struct slot *s, u8 want)
{
    u8 type = __atomic_load_n(&s->cap.type, __ATOMIC_ACQUIRE);

    return type == want ? KEEL_E_OK : type ? KEEL_E_WRONG_TYPE : KEEL_E_INVALID_CAP;
}
bool cap_is_derivable(const struct cap *c);
void slot_insert_child(struct slot *parent, struct slot *child, const struct cap *cap);
/* Copy (mint: with badge) src into dst, rights masked; the slots looked
 * up (NULL: out of range).  Under the capability locks, or exclusive. */
long slot_derive(struct slot *dst, struct slot *src, u64 rights, bool mint, u64 badge);
void slot_move(struct slot *dst, struct slot *src);
void slot_delete(struct slot *s);
void slot_revoke(struct slot *s);
/* cap.c's tree surgery, shared with grace.c: s leaves the tree (its
 * children move up); dst takes src's place in it. */
void slot_unlink(struct slot *s);
void slot_relink(struct slot *dst);
/* grace.c: delete, move and revoke with the objects lock shared, under the
 * capability locks; KEEL_E_RETRY (nothing changed) when the operation may
 * destroy an object or needs a type's hook: then it runs exclusive. */
long slot_delete_shared(struct slot *s);
long slot_move_shared(struct slot *dst, struct slot *src);
long slot_revoke_shared(struct slot *s);
/* Does the IRQ table or the console's listener point at n?  Read-only:
 * those change only exclusive (notification.c: notification_destroy_idle). */
bool irq_notification_used(const struct notification *n);
bool console_notification_used(const struct notification *n);
/* A receive window's slots are made free before a wait (endpoint.c,
 * fastpath.c): KEEL_E_GRACE when one is still in its grace period. */
long window_reclaim(struct tcb *t, u64 window);
/* The fast path's look: a window out of range, or a slot of it retired. */
static inline bool window_unready(struct tcb *t, u64 window)
{
    struct slot *w = cnode_slot_unlisted(&t->cspace.cap, window);

    return !w || !cnode_slot_unlisted(&t->cspace.cap, window + MSG_CAPS) ||
           (w[0].retired | w[1].retired | w[2].retired | w[3].retired);
}
void obj_ref(const struct cap *c);
void zombies_reap(void);
/* Objects whose last capability went away, to destroy (cap.c; exclusive). */
extern struct kobj *zombies;
static inline void zombies_reap_pending(void)
{
    if (zombies)
        zombies_reap();
}
struct kobj *cap_kobj(const struct cap *c);

/* The per-type hooks cap.c calls are in the operations table
 * (keel/objtype.h, keel/types_gen.h). */
/* Takes a thread off what it waits on: an endpoint (recv, fault, reply)
 * or a notification. */
void endpoint_cancel_wait(struct tcb *t);
/* endpoint.c, for the IPC fast path (fastpath.c) too: a reply capability
 * for caller in dst, and a receiver's free window slot (NULL if none);
 * both under the capability locks when shared. */
void make_reply_cap(struct slot *dst, struct tcb *caller);
struct slot *window_slot(struct tcb *r, u64 window, u32 i);
void notification_cancel_wait(struct tcb *t);
/* Sends t's pending fault to its fault endpoint; false if it has none. */
bool endpoint_send_fault(struct tcb *t);
/* Messaging system calls (endpoint.c). */
long endpoint_call(struct tcb *t, struct slot *ep, u64 label, const u64 *w, bool *blocked);
long endpoint_send(struct tcb *t, struct slot *ep, u64 label, const u64 *w);
long endpoint_recv(struct tcb *t, struct slot *ep, u64 flags, u64 window, bool *blocked);
long reply_invoke(struct tcb *t, struct slot *reply, u64 err, const u64 *res);
void tcb_cancel_room_wait(struct tcb *t);
void caller_revoke_wait(struct tcb *caller);
void ep_admit_faults(struct endpoint *ep);
/* irq.c: interrupts delivered to user drivers. */
void irq_deliver(u32 gsi);
/* GSIs a driver may take: two IOAPICs of 24 pins (QEMU microvm puts its
 * virtio-mmio transports on the second, GSI 24-47) and room to spare. */
#define IRQ_LINES 64

/* notification.c */
void notification_raise(struct notification *n, u64 bits);
void notification_unbind(struct tcb *t);
/* The notification capability in the caller's slot, with the right needed;
 * NULL with *err set otherwise.  *bits: what raising it signals (its badge,
 * or bit 0 for an unbadged capability). */
struct notification *notification_lookup(struct tcb *caller, u64 slot, u8 rights, u64 *bits,
                                         long *err);
/* Copying to a thread's memory; false when not mapped writable. */
bool user_copy_out(struct tcb *t, u64 uaddr, const void *src, u64 len);
/* A thread in zeroed memory (tcb_init, the retype hook, calls it). */
void tcb_setup(struct tcb *t);

/* iospace.c: DMA windows programmed into the paravirtual IOMMU. */
bool iospace_init(void *regs);
void iospace_frame_deleted(struct cap *c);
bool iospace_id_live(u32 id); /* for the host tests */

/* untyped.c */
u32 object_bits(u32 type, u32 user_bits);
long untyped_make_objects(struct slot *ut, u32 type, u32 bits, struct slot **dst, u32 count);

/* vspace.c */
struct vspace *vspace_of_id(u64 id);
/* The lock of a paging or frame capability's mapping state (sched.h: 2). */
spinlock_t *cap_mapping_lock(const struct cap *c);
struct vspace *vspace_from_cap(const struct cap *c);
u64 vspace_pml4_phys(struct vspace *vs);
bool vspace_register(struct vspace *vs);

/* Copying to and from a thread's address space; false if any byte of the
 * range is not mapped with the access needed. */
bool user_copy_in(struct tcb *t, void *dst, u64 uaddr, u64 len);
/* The kernel's view of the page of t's address space at page (aligned) if
 * it is mapped user-writable, else NULL; it stays this page's memory until
 * a mapping goes away anywhere (tlb_generation moves, sched.h). */
u8 *user_page_writable(struct tcb *t, u64 page);

#endif
