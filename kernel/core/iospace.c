/* DMA spaces: what a device may read and write in memory.
 *
 * The root task holds the io_space control capability and issues, per
 * device (named by the physical base of its register block), one io_space
 * object; it gives a capability to it to that device's driver.  The driver
 * maps frame capabilities it holds into the io_space: the frame becomes a
 * DMA window of the device, identity-mapped (the device uses the frame's
 * physical address, which the driver learns from frame_info), readable
 * and/or writable by the device.  A window belongs to the frame capability
 * that was mapped (flag CAP_IOMAPPED, cap.io = the io_space's id), as a
 * page mapping does: deleting that capability -- or revoking anything it was
 * derived from, or destroying the driver's capability table that holds it --
 * removes the window, so a frame the driver no longer holds is never
 * DMA-able.  Destroying the io_space (its last capability deleted) removes
 * all its windows.  Copies of a mapped frame capability are not mapped; a
 * copy mapped as well is a second window, taken back on its own (the IOMMU
 * removes exactly the window, access included, that a capability made).
 *
 * The windows are enforced by the paravirtual IOMMU of Keel's VMM
 * (docs/iommu.md), announced on the command line as keel.iommu=<size>@<base>.
 * The kernel enables it at boot, which makes every device -- also those
 * attached later -- unable to do DMA outside the windows granted here.
 * Without one (QEMU) io_spaces are bookkeeping only and every call behaves
 * the same, so drivers need no second path.
 *
 * io_space objects live in a static table (there is one per device at most,
 * and a device is not memory a user could supply); cap.obj points at the
 * entry, whose header counts the capabilities like any other object's.
 * The table is protected by the kernel lock, like every capability; the
 * register block by iommu_lock (a window change is a sequence of register
 * writes), innermost.
 */
#include <keel/invoke.h>
#include <keel/spinlock.h>

#define IOSPACE_MAX 64

/* Registers (docs/iommu.md), 32 bits wide. */
#define IOMMU_MAGIC 0x4d4f494bu /* "KIOM" */
#define REG_MAGIC 0x00
#define REG_CONTROL 0x08
#define REG_DEVICE_LOW 0x10
#define REG_DEVICE_HIGH 0x14
#define REG_DEVICE_STATE 0x18
#define REG_ADDR_LOW 0x20
#define REG_ADDR_HIGH 0x24
#define REG_LEN_LOW 0x28
#define REG_LEN_HIGH 0x2c
#define REG_ACCESS 0x30
#define REG_COMMAND 0x34
#define REG_RESULT 0x38
#define REG_FAULTS 0x40
#define CONTROL_ENABLE 1
#define STATE_PRESENT 1
#define ACCESS_READ 1
#define ACCESS_WRITE 2
#define CMD_MAP 1
#define CMD_UNMAP 2
#define CMD_CLEAR 3
#define RESULT_OK 0
#define RESULT_NO_DEVICE 1
#define RESULT_FULL 3

/* Device register blocks are in the MMIO hole below the IOAPIC. */
#define DEVICE_MIN 0xc0000000ul
#define DEVICE_MAX 0xfec00000ul

struct io_space {
    struct kobj hdr; /* refs: capabilities naming it; 0 = a free entry */
    u64 device;      /* physical base of the device's register block */
    u32 id;          /* generation << 8 | index; frames mapped into it name it */
};

static struct io_space spaces[IOSPACE_MAX];
static u32 generation[IOSPACE_MAX];

static volatile u32 *iommu;          /* the register block, NULL without one */
static spinlock_t iommu_lock = SPINLOCK_INIT;
static u64 selected = ~0ul;          /* cached DEVICE and LEN registers, under iommu_lock */
static u64 length_set = ~0ul;

static u32 rd(u32 off)
{
    return iommu[off / 4];
}

static void wr(u32 off, u32 v)
{
    iommu[off / 4] = v;
}

/* Called once at boot, before any user code: checks the device and turns
 * enforcement on for every device.  False when it is not Keel's IOMMU. */
bool iospace_init(void *regs)
{
    volatile u32 *r = regs;

    if (r[REG_MAGIC / 4] != IOMMU_MAGIC)
        return false;
    iommu = r;
    wr(REG_CONTROL, CONTROL_ENABLE);
    return true;
}

static void select_device(u64 device)
{
    if (device != selected) {
        wr(REG_DEVICE_LOW, (u32)device);
        wr(REG_DEVICE_HIGH, (u32)(device >> 32));
        selected = device;
    }
}

/* One command on a device's table; the IOMMU's result code. */
static u32 iommu_command(u64 device, u32 cmd, u64 addr, u64 len, u32 access)
{
    if (!iommu)
        return RESULT_OK;
    spin_lock(&iommu_lock);
    select_device(device);
    if (cmd != CMD_CLEAR) {
        wr(REG_ADDR_LOW, (u32)addr);
        wr(REG_ADDR_HIGH, (u32)(addr >> 32));
        if (len != length_set) {
            wr(REG_LEN_LOW, (u32)len);
            wr(REG_LEN_HIGH, (u32)(len >> 32));
            length_set = len;
        }
        wr(REG_ACCESS, access);
    }
    wr(REG_COMMAND, cmd);
    u32 result = rd(REG_RESULT);
    spin_unlock(&iommu_lock);
    return result;
}

static struct io_space *space_of_id(u32 id)
{
    u32 index = id & (IOSPACE_MAX - 1);

    if (!id || spaces[index].id != id || !spaces[index].hdr.refs)
        return NULL;
    return &spaces[index];
}

bool iospace_id_live(u32 id)
{
    return space_of_id(id) != NULL;
}

void iospace_destroy(struct kobj *o)
{
    struct io_space *s = (struct io_space *)o;

    iommu_command(s->device, CMD_CLEAR, 0, 0, 0);
    s->id = 0; /* frames still marked as mapped into it now find nothing */
}

void iospace_frame_deleted(struct cap *c)
{
    struct io_space *s = space_of_id(c->io);
    u32 access = (c->flags & CAP_IO_READ ? ACCESS_READ : 0) |
                 (c->flags & CAP_IO_WRITE ? ACCESS_WRITE : 0);

    if (s)
        iommu_command(s->device, CMD_UNMAP, arch_virt_to_phys((void *)c->obj), KEEL_PAGE_SIZE,
                      access);
    c->flags &= (u8)~CAP_IO_FLAGS;
    c->io = 0;
}

static long issue(struct invocation *inv)
{
    u64 device = inv->arg[0];
    struct slot *dst = cnode_slot(&inv->cap_arg[1]->cap, inv->arg[2]);
    u32 free = 0;

    if (device < DEVICE_MIN || device >= DEVICE_MAX || device & 3 || !dst)
        return KEEL_E_INVALID_ARG;
    if (dst->cap.type)
        return KEEL_E_EXISTS;
    for (u32 i = 1; i < IOSPACE_MAX; i++) {
        if (spaces[i].hdr.refs && spaces[i].device == device)
            return KEEL_E_EXISTS; /* one per device: its windows are the device's */
        if (!spaces[i].hdr.refs && !spaces[i].id && !free) /* not even a zombie */
            free = i;
    }
    if (!free)
        return KEEL_E_NO_MEMORY;
    struct io_space *s = &spaces[free];
    s->hdr.type = KEEL_OBJ_IO_SPACE;
    s->hdr.zombie_next = NULL;
    s->device = device;
    s->id = (++generation[free] << 8) | free;
    /* A fresh object starts from an empty table, whatever an earlier one left. */
    iommu_command(device, CMD_CLEAR, 0, 0, 0);
    struct cap c = { .type = KEEL_OBJ_IO_SPACE, .rights = KEEL_RIGHT_ALL, .obj = (uptr)s };
    slot_insert_child(inv->slot, dst, &c);
    return KEEL_E_OK;
}

static long map(struct invocation *inv, struct io_space *s)
{
    struct cap *f = &inv->cap_arg[0]->cap;
    u64 rights = inv->arg[1];
    u32 access = (rights & KEEL_RIGHT_READ ? ACCESS_READ : 0) |
                 (rights & KEEL_RIGHT_WRITE ? ACCESS_WRITE : 0);

    if (!access || rights & ~(u64)(KEEL_RIGHT_READ | KEEL_RIGHT_WRITE))
        return KEEL_E_INVALID_ARG;
    if ((f->rights & rights) != rights)
        return KEEL_E_NO_RIGHTS; /* the device gets no more than the driver has */
    if (f->flags & CAP_DEVICE)
        return KEEL_E_INVALID_ARG; /* device memory is not a DMA target */
    if (f->flags & CAP_IOMAPPED) {
        if (space_of_id(f->io))
            return KEEL_E_EXISTS; /* a window belongs to one capability */
        f->flags &= (u8)~CAP_IO_FLAGS; /* its io_space is gone */
    }
    switch (iommu_command(s->device, CMD_MAP, arch_virt_to_phys((void *)f->obj), KEEL_PAGE_SIZE,
                          access)) {
    case RESULT_OK:
        break;
    case RESULT_NO_DEVICE:
        return KEEL_E_BAD_STATE; /* no device there (now) */
    case RESULT_FULL:
        return KEEL_E_NO_MEMORY;
    default:
        return KEEL_E_INVALID_ARG;
    }
    f->flags |= CAP_IOMAPPED | (access & ACCESS_READ ? CAP_IO_READ : 0) |
                (access & ACCESS_WRITE ? CAP_IO_WRITE : 0);
    f->io = s->id;
    return KEEL_E_OK;
}

static long info(struct invocation *inv, struct io_space *s)
{
    inv->res[0] = s->device;
    inv->res[1] = 0;
    inv->res[2] = 0;
    if (iommu) {
        spin_lock(&iommu_lock);
        select_device(s->device);
        inv->res[1] = rd(REG_DEVICE_STATE) & STATE_PRESENT;
        inv->res[2] = rd(REG_FAULTS);
        spin_unlock(&iommu_lock);
    }
    return KEEL_E_OK;
}

long iospace_decode(struct invocation *inv)
{
    struct io_space *s = (struct io_space *)inv->slot->cap.obj;

    switch (inv->label) {
    case KEEL_CALL_IO_SPACE_CONTROL_ISSUE:
        return issue(inv);
    case KEEL_CALL_IO_SPACE_MAP:
        return map(inv, s);
    case KEEL_CALL_IO_SPACE_UNMAP: {
        struct cap *f = &inv->cap_arg[0]->cap;
        if (!(f->flags & CAP_IOMAPPED) || f->io != s->id)
            return KEEL_E_NOT_MAPPED;
        iospace_frame_deleted(f);
        return KEEL_E_OK;
    }
    case KEEL_CALL_IO_SPACE_INFO:
        return info(inv, s);
    }
    return KEEL_E_UNKNOWN_CALL;
}
