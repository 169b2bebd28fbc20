/* Address spaces built from userland: vspace, PDPT, PD, PT and frame
 * objects, mapped and unmapped through their capabilities.  A mapping
 * belongs to one capability (cap.a = virtual address, cap.b = the vspace's
 * id); deleting that capability removes the mapping.
 *
 * Capabilities name a vspace by id, looked up in a registry, because a
 * vspace can be destroyed while objects are still mapped into it: their
 * capabilities then simply find no vspace.
 *
 * Locking: map and unmap run with the objects lock shared.  A paging
 * capability's mapping state (CAP_MAPPED, cap.a, cap.b) is guarded by one
 * of the mapping locks, chosen by the slot's address; the page tables of a
 * vspace by the vspace's lock, taken inside it.  Walks that only read the
 * tables (lookup, user_copy) take neither: no table is freed while any CPU
 * holds the objects lock shared, and entries are read and written whole. */
#include <keel/invoke.h>
#include <keel/sched.h>
#include <keel/string.h>

#define VSPACE_MAX 4096

static struct vspace *registry[VSPACE_MAX];
static u64 registry_gen[VSPACE_MAX];

#define MAPPING_LOCKS 64
static spinlock_t mapping_locks[MAPPING_LOCKS];

static spinlock_t *mapping_lock(const struct cap *c)
{
    return &mapping_locks[((uptr)c >> SLOT_BITS) % MAPPING_LOCKS];
}

/* For grace.c: an unmapped capability of a paging object or a frame is
 * deleted shared under its mapping lock, so a map that looked the slot up
 * before either finds it still there or sees its type 0 (map, unmap_cap). */
spinlock_t *cap_mapping_lock(const struct cap *c)
{
    return mapping_lock(c);
}

/* A vspace object is its top-level page table, then struct vspace (the
 * header the type table points at). */
struct vspace *vspace_from_cap(const struct cap *c)
{
    return (struct vspace *)(c->obj + KEEL_OBJ_VSPACE_HEADER);
}

/* id = generation << 12 | index; 0 is never a valid id. */
struct vspace *vspace_of_id(u64 id)
{
    u64 index = id & (VSPACE_MAX - 1);

    if (!id || !registry[index] || registry[index]->id != id)
        return NULL;
    return registry[index];
}

bool vspace_init(struct cap *c, u32 user_bits)
{
    uptr p = c->obj;
    struct vspace *vs = vspace_from_cap(c);

    for (u64 i = 1; i < VSPACE_MAX; i++) {
        if (!registry[i]) {
            registry[i] = vs;
            vs->id = (++registry_gen[i] << 12) | i;
            vs->hdr.type = KEEL_OBJ_VSPACE;
            arch_vspace_init((void *)p);
            return true;
        }
    }
    return false;
}

void vspace_destroy(struct kobj *o)
{
    struct vspace *vs = (struct vspace *)o;

    registry[vs->id & (VSPACE_MAX - 1)] = NULL;
    vs->id = 0;
    /* Threads bound to it hold capabilities to it, so none is left; CPUs
     * that ran them switched away when they stopped.  Flush anyway: the
     * tables' memory is about to be reused. */
    tlb_shootdown();
}

static void *vspace_root(struct vspace *vs)
{
    return (u8 *)vs - KEEL_OBJ_VSPACE_HEADER;
}

static u32 paging_level(u32 type)
{
    switch (type) {
    case KEEL_OBJ_PDPT:
        return 3;
    case KEEL_OBJ_PD:
        return 2;
    case KEEL_OBJ_PT:
        return 1;
    }
    return 0;
}

/* The shootdown is made holding the vspace's lock: nothing is mapped at
 * that address again before no CPU can still reach the old page. */
static long unmap_cap(struct cap *c)
{
    spinlock_t *ml = mapping_lock(c);

    obj_lock(ml, LOCK_MAPPING);
    if (!(c->flags & CAP_MAPPED)) {
        /* deleted shared since its lookup (grace.c): as if looked up after */
        long err = __atomic_load_n(&c->type, __ATOMIC_ACQUIRE) ? KEEL_E_NOT_MAPPED
                                                                : KEEL_E_INVALID_CAP;
        obj_unlock(ml, LOCK_MAPPING);
        return err;
    }
    struct vspace *vs = vspace_of_id(c->b);
    if (vs) {
        obj_lock(&vs->hdr.lock, LOCK_VSPACE);
        if (arch_unmap(vspace_root(vs), paging_level(c->type), c->a, arch_virt_to_phys((void *)c->obj)))
            tlb_shootdown();
        obj_unlock(&vs->hdr.lock, LOCK_VSPACE);
    }
    c->flags &= (u8)~CAP_MAPPED;
    c->a = c->b = 0;
    obj_unlock(ml, LOCK_MAPPING);
    return KEEL_E_OK;
}

void paging_cap_deleted(struct slot *s)
{
    if (s->cap.flags & CAP_MAPPED)
        unmap_cap(&s->cap);
}

/* A frame it no longer holds is neither mapped nor DMA-able. */
void frame_cap_deleted(struct slot *s)
{
    if (s->cap.flags & CAP_MAPPED)
        unmap_cap(&s->cap);
    if (s->cap.flags & CAP_IOMAPPED)
        iospace_frame_deleted(&s->cap);
}

static long map(struct invocation *inv, struct cap *c, u32 rights)
{
    struct cap *vcap = &inv->cap_arg[0]->cap;
    struct vspace *vs = vspace_from_cap(vcap);
    u64 vaddr = inv->arg[1];
    u32 level = paging_level(c->type);
    spinlock_t *ml = mapping_lock(c);
    long err;

    /* No frame reaches the last page of user space: a syscall instruction
     * in its last two bytes would return to KEEL_USER_TOP, which is not
     * canonical, and sysret to it faults in the kernel on Intel CPUs
     * (with the user's stack already loaded). */
    if (vaddr & (arch_level_size(level) - 1) || vaddr >= KEEL_USER_TOP ||
        (c->type == KEEL_OBJ_FRAME &&
         vaddr + arch_level_size(level) > KEEL_USER_TOP - KEEL_PAGE_SIZE))
        return c->flags & CAP_MAPPED ? KEEL_E_EXISTS : KEEL_E_INVALID_ARG;
    obj_lock(ml, LOCK_MAPPING);
    if (!__atomic_load_n(&c->type, __ATOMIC_ACQUIRE)) {
        err = KEEL_E_INVALID_CAP; /* deleted shared since its lookup (grace.c) */
    } else if (c->flags & CAP_MAPPED) {
        err = KEEL_E_EXISTS;
    } else {
        obj_lock(&vs->hdr.lock, LOCK_VSPACE);
        err = arch_map(vspace_root(vs), level, vaddr, arch_virt_to_phys((void *)c->obj), rights);
        obj_unlock(&vs->hdr.lock, LOCK_VSPACE);
        if (!err) {
            c->flags |= CAP_MAPPED;
            c->a = vaddr;
            c->b = vs->id;
        }
    }
    obj_unlock(ml, LOCK_MAPPING);
    return err;
}

long vspace_decode(struct invocation *inv)
{
    u32 flags = 0;
    u64 phys = 0;

    if (inv->label != KEEL_CALL_VSPACE_LOOKUP)
        return KEEL_E_UNKNOWN_CALL;
    if (inv->arg[0] >= KEEL_USER_TOP)
        return KEEL_E_INVALID_ARG;
    if (!arch_lookup(vspace_root(vspace_from_cap(&inv->slot->cap)), inv->arg[0], &phys, &flags))
        return KEEL_E_NOT_MAPPED;
    inv->res[0] = phys;
    inv->res[1] = flags;
    return KEEL_E_OK;
}

/* Page-table objects: PDPT, PD, PT. */
long paging_decode(struct invocation *inv)
{
    struct cap *c = &inv->slot->cap;

    switch (inv->label) {
    case KEEL_CALL_PDPT_MAP:
    case KEEL_CALL_PD_MAP:
    case KEEL_CALL_PT_MAP:
        return map(inv, c, KEEL_RIGHT_ALL);
    case KEEL_CALL_PDPT_UNMAP:
    case KEEL_CALL_PD_UNMAP:
    case KEEL_CALL_PT_UNMAP:
        return unmap_cap(c);
    }
    return KEEL_E_UNKNOWN_CALL;
}

long frame_decode(struct invocation *inv)
{
    struct cap *c = &inv->slot->cap;

    switch (inv->label) {
    case KEEL_CALL_FRAME_MAP: {
        u64 rights = inv->arg[2];
        if (rights > KEEL_RIGHT_ALL || !(rights & KEEL_RIGHT_READ))
            return KEEL_E_INVALID_ARG;
        if ((rights & c->rights) != rights)
            return KEEL_E_NO_RIGHTS;
        return map(inv, c, (u32)rights | (c->flags & CAP_DEVICE ? MAP_UNCACHED : 0));
    }
    case KEEL_CALL_FRAME_UNMAP:
        return unmap_cap(c);
    case KEEL_CALL_FRAME_INFO:
        obj_lock(mapping_lock(c), LOCK_MAPPING);
        inv->res[0] = arch_virt_to_phys((void *)c->obj);
        inv->res[1] = c->flags & CAP_MAPPED ? c->a : 0;
        obj_unlock(mapping_lock(c), LOCK_MAPPING);
        return KEEL_E_OK;
    }
    return KEEL_E_UNKNOWN_CALL;
}

/* Copies between kernel memory and a thread's memory by walking its page
 * tables: the kernel never dereferences a user pointer, so a bad one cannot
 * fault it.  False when any byte is not mapped with the access needed. */
static bool user_copy(struct tcb *t, u64 uaddr, u8 *kbuf, u64 len, bool to_user)
{
    struct vspace *vs = t->vspace.cap.type ? vspace_from_cap(&t->vspace.cap) : NULL;

    if (!vs || uaddr >= KEEL_USER_TOP || len > KEEL_USER_TOP - uaddr)
        return false;
    while (len) {
        u64 phys;
        u32 flags;
        u64 chunk = MIN(len, KEEL_PAGE_SIZE - (uaddr & (KEEL_PAGE_SIZE - 1)));
        if (!arch_lookup(vspace_root(vs), uaddr, &phys, &flags))
            return false;
        if (to_user && !(flags & KEEL_MAP_WRITE))
            return false;
        if (to_user)
            memcpy(arch_phys_to_virt(phys), kbuf, chunk);
        else
            memcpy(kbuf, arch_phys_to_virt(phys), chunk);
        kbuf += chunk;
        uaddr += chunk;
        len -= chunk;
    }
    return true;
}

u8 *user_page_writable(struct tcb *t, u64 page)
{
    struct vspace *vs = t->vspace.cap.type ? vspace_from_cap(&t->vspace.cap) : NULL;
    u64 phys;
    u32 flags;

    if (!vs || page >= KEEL_USER_TOP || !arch_lookup(vspace_root(vs), page, &phys, &flags) ||
        !(flags & KEEL_MAP_WRITE))
        return NULL;
    return arch_phys_to_virt(phys);
}

bool user_copy_in(struct tcb *t, void *dst, u64 uaddr, u64 len)
{
    return user_copy(t, uaddr, dst, len, false);
}

bool user_copy_out(struct tcb *t, u64 uaddr, const void *src, u64 len)
{
    return user_copy(t, uaddr, (u8 *)src, len, true);
}
