/* The architecture interface implemented over plain memory, and a small
 * harness the Python tests drive through cffi: one capability table, a
 * calling thread, and untyped memory from the host's heap. */
#include <arch.h>
#include <keel/console.h>
#include <keel/cpu.h>
#include <keel/invoke.h>
#include <keel/sched.h>
#include <keel/string.h>

#include "harness.h"

void *aligned_alloc(size_t align, size_t size);
void free(void *p);
__noreturn void abort(void);

struct cpu cpus[MAX_CPUS];
u32 cpu_count = 1;
u32 host_cpu; /* the CPU the harness runs a call as (host_invoke_on; harness.h) */

void *host_cpu_self(void)
{
    return &cpus[host_cpu];
}

void arch_zero_object(void *p, u64 len)
{
    memset(p, 0, len);
}

u64 arch_virt_to_phys(const void *p)
{
    return (u64)p;
}

void *arch_phys_to_virt(u64 phys)
{
    return (void *)phys;
}

void arch_tcb_init(struct tcb *t)
{
    memset(&t->arch, 0, sizeof(t->arch));
}

void arch_tcb_set_entry(struct tcb *t, u64 pc, u64 sp, u64 arg)
{
    t->arch.pc = pc;
    t->arch.sp = sp;
    t->arch.arg = arg;
}

void arch_tcb_restart_syscall(struct tcb *t)
{
    (void)t;
}

void arch_tcb_syscall_to_recv(struct tcb *t, u64 ep, u64 window)
{
    (void)t;
    (void)ep;
    (void)window;
}

void arch_tcb_get_regs(const struct tcb *t, u64 *pc, u64 *sp, u64 *ret)
{
    *pc = t->arch.pc;
    *sp = t->arch.sp;
    *ret = t->arch.result[0];
}

void arch_tcb_set_results(struct tcb *t, long err, const u64 *res)
{
    t->arch.result[0] = (u64)err;
    for (int i = 0; i < 6; i++)
        t->arch.result[i + 1] = res[i];
}

void arch_tcb_set_recv(struct tcb *t, long err, u64 badge, u64 label, const u64 *w, u64 info)
{
    arch_tcb_set_results(t, err, w);
    t->arch.arg = badge ^ label ^ info;
}

void arch_fpu_save(struct tcb *t)
{
    (void)t;
}

bool arch_thread_can_run(struct tcb *t)
{
    return t->vspace.cap.type == KEEL_OBJ_VSPACE;
}

void arch_enter_user(struct tcb *t)
{
    (void)t;
    abort();
}

void arch_idle_wait(void)
{
}

void arch_leave_user_space(void)
{
}

void arch_flush_user_tlb(void)
{
}

void arch_send_tlb_ipi(struct cpu *c)
{
    (void)c;
}

void arch_wake_cpu(struct cpu *c)
{
    (void)c;
}

void arch_wait_halt(void)
{
}

void arch_timer_every(u32 n)
{
    (void)n;
}

void cpu_tick_stats_print(void)
{
}

void arch_kick_cpu(struct cpu *c)
{
    (void)c;
}

void arch_exit(int code)
{
    (void)code;
    abort();
}

/* Page tables: the same four-level radix tree as x86-64, without the
 * hardware bits that do not matter here. */
#define E_PRESENT 1ul
#define E_ADDR (~0xffful)

u64 arch_level_size(u32 level)
{
    return 1ul << (12 + 9 * level);
}

static u32 index_at(u64 vaddr, u32 level)
{
    return (vaddr >> (12 + 9 * level)) & 511;
}

void arch_vspace_init(void *root)
{
    (void)root;
}

static u64 *walk(void *root, u32 level, u64 vaddr)
{
    u64 *table = root;

    for (u32 l = PAGING_LEVELS - 1; l > level; l--) {
        u64 e = table[index_at(vaddr, l)];
        if (!(e & E_PRESENT))
            return NULL;
        table = (u64 *)(e & E_ADDR);
    }
    return table;
}

long arch_map(void *root, u32 level, u64 vaddr, u64 phys, u32 rights)
{
    u64 *table = walk(root, level, vaddr);

    if (!table)
        return KEEL_E_NO_TABLE;
    u64 *e = &table[index_at(vaddr, level)];
    if (*e & E_PRESENT)
        return KEEL_E_EXISTS;
    *e = phys | E_PRESENT | ((u64)rights << 1);
    return KEEL_E_OK;
}

bool arch_unmap(void *root, u32 level, u64 vaddr, u64 phys)
{
    u64 *table = walk(root, level, vaddr);

    if (!table)
        return false;
    u64 *e = &table[index_at(vaddr, level)];
    if (!(*e & E_PRESENT) || (*e & E_ADDR) != phys)
        return false;
    *e = 0;
    return true;
}

bool arch_lookup(void *root, u64 vaddr, u64 *phys, u32 *flags)
{
    u64 *table = walk(root, 0, vaddr);

    if (!table || !(table[index_at(vaddr, 0)] & E_PRESENT))
        return false;
    *phys = (table[index_at(vaddr, 0)] & E_ADDR) | (vaddr & 0xfff);
    *flags = KEEL_MAP_PRESENT;
    return true;
}

/* Stubs for what only the real kernel has. */
void console_write(const char *s, size_t len)
{
    (void)s;
    (void)len;
}

/* No serial port: nothing is ever typed. */
bool console_rx(const char *buf, size_t len)
{
    (void)buf;
    (void)len;
    return false;
}

void console_set_echo(bool on)
{
    (void)on;
}

bool console_line_ready(void)
{
    return false;
}

size_t console_take_line(char *buf, size_t size)
{
    (void)buf;
    (void)size;
    return 0;
}

/* -- the harness ------------------------------------------------------------ */

#define ROOT_BITS 8

static struct cnode *root;
static struct tcb *caller;
static void *memory[2];

/* A world: a root capability table whose slot 1 is itself, slot 2 an
 * untyped region of 2^ut_bits bytes, and a thread to make calls as. */
int host_world_create(u32 ut_bits)
{
    u64 cn_size = 1ul << (ROOT_BITS + SLOT_BITS);

    root = aligned_alloc(cn_size, cn_size);
    caller = aligned_alloc(4096, 1ul << KEEL_OBJ_TCB_BITS);
    memory[0] = root;
    memory[1] = aligned_alloc(1ul << ut_bits, 1ul << ut_bits);
    if (!root || !caller || !memory[1])
        return -1;
    memset(root, 0, cn_size);
    memset(caller, 0, 1ul << KEEL_OBJ_TCB_BITS);
    root->hdr.type = KEEL_OBJ_CNODE;
    root->size_bits = ROOT_BITS;
    tcb_setup(caller);
    struct slot *slots = (struct slot *)root;
    struct cap c = { .type = KEEL_OBJ_CNODE, .rights = KEEL_RIGHT_ALL, .size_bits = ROOT_BITS,
                     .obj = (uptr)root };
    slot_insert_child(NULL, &slots[1], &c);
    slot_insert_child(&slots[1], &caller->cspace, &c);
    c = (struct cap){ .type = KEEL_OBJ_UNTYPED, .rights = KEEL_RIGHT_ALL,
                      .size_bits = (u8)ut_bits, .obj = (uptr)memory[1] };
    slot_insert_child(NULL, &slots[2], &c);
    return 0;
}

void host_world_destroy(void)
{
    if (!root)
        return;
    /* io_spaces live in the kernel's own table, which outlives a world. */
    for (u64 i = 1; i < (1ul << ROOT_BITS); i++) {
        struct slot *s = (struct slot *)root + i;
        if (s->cap.type == KEEL_OBJ_IO_SPACE)
            slot_delete(s);
    }
    zombies_reap();
    free(memory[1]);
    free(root);
    free(caller);
    root = NULL;
}

long host_invoke(u64 cap, u64 label, const u64 *args, u64 *res)
{
    struct invocation inv = { .caller = caller, .label = label, .arg = args, .res = res };
    long err = 0;

    for (int i = 0; i < KEEL_MSG_WORDS; i++)
        res[i] = 0;
    reads_begin(this_cpu(), call_describe(label)); /* as syscall.c's call_one */
    inv.slot = tcb_lookup_slot(caller, cap, &err);
    if (inv.slot)
        err = invoke(&inv);
    reads_any(this_cpu());
    if (!kernel_shared()) {
        zombies_reap();
        grace_exclusive(); /* the harness runs it with no CPU reading */
    }
    return err;
}

/* CPUs for the grace-period tests: a call runs as one of n CPUs holding
 * the objects lock shared (host_enter, as objlock.c's kernel_enter: the
 * announcement, then the epoch) or exclusive (host_invoke with none in). */
void host_cpus(u32 n)
{
    cpu_count = n;
    host_cpu = 0;
    for (u32 i = 0; i < MAX_CPUS; i++) {
        cpus[i].index = i;
        cpus[i].reading = 0;
        cpus[i].kmode = KMODE_NONE;
    }
}

/* CPU cpu enters the kernel, its hold reading `reads` from the start
 * (kernel_enter_shared): READS_FRESH for a call until call_one looks at
 * it, 0 for a listed call (syscall_entry_reads) or an interrupt. */
void host_enter_as(u32 cpu, u32 reads)
{
    cpus[cpu].reads_n = reads;
    cpus[cpu].reading = 1;
    cpus[cpu].epoch = grace_epoch;
    cpus[cpu].kmode = KMODE_SHARED;
}

void host_enter(u32 cpu)
{
    host_enter_as(cpu, READS_FRESH);
}

/* CPU cpu, in the kernel, looks slot index up: as a call that lists what
 * it reads (grace.c: the first thing its hold does, or after other listed
 * reads), or as one that does not (from then on it reads any slot). */
void host_hold(u32 cpu, u64 index, bool listed)
{
    long err;

    host_cpu = cpu;
    if (listed)
        reads_listed(&cpus[cpu]);
    else
        reads_any(&cpus[cpu]);
    tcb_lookup_slot(caller, index, &err); /* as a call looks it up: listed */
    host_cpu = 0;
}

void host_leave(u32 cpu)
{
    cpus[cpu].reading = 0;
    cpus[cpu].kmode = KMODE_NONE;
}

long host_invoke_on(u32 cpu, u64 cap, u64 label, const u64 *args, u64 *res)
{
    host_cpu = cpu;
    long err = host_invoke(cap, label, args, res);
    host_cpu = 0;
    return err;
}

/* The harness's thread calls and waits: a reply capability naming it in
 * slot index, as a receive makes one (endpoint.c). */
void host_reply_cap(u64 index)
{
    make_reply_cap((struct slot *)root + index, caller);
}

/* The slot the harness's thread's reply capability is in (0: none). */
u64 host_reply_slot(void)
{
    struct slot *s = caller->reply_slot;

    return s ? (u64)(s - (struct slot *)root) : 0;
}

/* The object at obj made as a type: its reference count and its type (0:
 * destroyed); -1 and -1 when the type has no header (or is 0). */
void host_object_type(u64 obj, u64 type, u64 *out)
{
    struct cap c = { .type = (u8)type, .obj = obj };
    struct kobj *o = type ? cap_kobj(&c) : NULL;

    out[0] = o ? o->refs : (u64)-1;
    out[1] = o ? o->type : (u64)-1;
}

/* The capability in a slot as a CPU that looked it up still reads it,
 * whatever its type now, the reference count of the object it names
 * (-1: no header) and that object's type (0: destroyed; a region's revoke
 * drops counts to 0 before the grace period, the destruction after it). */
void host_slot_body(u64 index, u64 type, u64 *out)
{
    struct slot *s = (struct slot *)root + index;

    out[0] = s->cap.type;
    out[1] = s->cap.rights;
    out[2] = s->cap.badge;
    out[3] = s->cap.obj;
    out[4] = s->retired;
    host_object_type(s->cap.obj, type, out + 5);
}

struct host_slot {
    u64 type, rights, badge, obj, size_bits, used, refs;
    s64 parent; /* slot index in the root table, -1 none, -2 elsewhere */
    u64 children;
    u64 flags;
    u64 io, io_live; /* frames: the io_space mapped into, and whether it still exists */
    u64 retired;     /* emptied shared, in its grace period (grace.c) */
};

static s64 index_of(const struct slot *s)
{
    struct slot *slots = (struct slot *)root;

    if (!s)
        return -1;
    if (s >= slots && s < slots + (1ul << ROOT_BITS))
        return s - slots;
    return -2;
}

u64 host_slot_count(void)
{
    return 1ul << ROOT_BITS;
}

/* Checks the links around one slot; 0 when consistent. */
int host_slot_check(u64 index)
{
    struct slot *s = (struct slot *)root + index;

    if (!s->cap.type)
        return (s->parent || s->child || s->next || s->prev) ? 1 : 0;
    if (s->prev && s->prev->next != s)
        return 2;
    if (s->next && s->next->prev != s)
        return 3;
    if (!s->prev && s->parent && s->parent->child != s)
        return 4;
    for (struct slot *c = s->child; c; c = c->next) {
        if (c->parent != s)
            return 5;
    }
    /* its family's lock guards it (sched.h): the one its parent heads */
    if (s->cap.type != KEEL_OBJ_REPLY &&
        s->family != (s->parent ? children_family(s->parent) : FAMILY_ROOT))
        return 6;
    return 0;
}

void host_slot_info(u64 index, struct host_slot *out)
{
    struct slot *s = (struct slot *)root + index;
    struct kobj *o = s->cap.type ? cap_kobj(&s->cap) : NULL;

    out->type = s->cap.type;
    out->rights = s->cap.rights;
    out->badge = s->cap.badge;
    out->obj = s->cap.obj;
    out->size_bits = s->cap.size_bits;
    out->used = s->cap.type == KEEL_OBJ_UNTYPED ? s->cap.a : 0;
    out->refs = o ? o->refs : 0;
    out->parent = index_of(s->parent);
    out->children = 0;
    for (struct slot *c = s->child; c; c = c->next)
        out->children++;
    out->flags = s->cap.flags;
    out->io = s->cap.io;
    out->io_live = s->cap.io && iospace_id_live(s->cap.io);
    out->retired = s->retired;
}

/* Puts the io_space control capability (the root task's slot 7) in a slot. */
void host_give_io_space_control(u64 index)
{
    struct cap c = { .type = KEEL_OBJ_IO_SPACE_CONTROL, .rights = KEEL_RIGHT_ALL };

    slot_insert_child(NULL, (struct slot *)root + index, &c);
}

u32 arch_firmware_virtio_devices(struct arch_fw_device *out, u32 max)
{
    (void)out;
    (void)max;
    return 0;
}

bool arch_irq_available(u32 gsi)
{
    return gsi > 4 && gsi < IRQ_LINES;
}

void arch_irq_enable_line(u32 gsi, bool on)
{
    (void)gsi;
    (void)on;
}

/* A call on the slot at index made by a CPU that looked it up, and passed
 * invoke's checks, before another CPU emptied it (grace.c): the decode
 * hook of type runs on the slot as it is now.  Capability arguments are
 * looked up afresh. */
long host_decode_held(u32 cpu, u64 index, u64 type, u64 label, const u64 *args, u64 *res)
{
    struct invocation inv = { .caller = caller, .label = label, .arg = args, .res = res };
    const struct call_desc *d = call_describe(label);
    long err = KEEL_E_OK;

    host_cpu = cpu;
    for (int i = 0; i < KEEL_MSG_WORDS; i++)
        res[i] = 0;
    inv.slot = (struct slot *)root + index;
    for (u32 i = 0; d && i < d->nargs && !err; i++) {
        if (d->args[i].type && !(inv.cap_arg[i] = tcb_lookup_slot(caller, inv.arg[i], &err)))
            break;
    }
    if (!err)
        err = object_types[type].decode(&inv);
    host_cpu = 0;
    return err;
}
