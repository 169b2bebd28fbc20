/* Starting a process from a program in the initrd: a new address space
 * built page by page from the ELF file, a capability table of its own, and
 * a thread.  Everything is made from the suite's untyped memory, or from
 * an untyped of the caller's (spawn_program_from): revoking that one
 * capability then takes the whole process down and returns its memory. */
#include "suite.h"

#define SCRATCH_VA 0x201f0000ul /* a page of our own, for filling frames */
#define CHILD_STACK_TOP 0x7fff0000ul
#define CHILD_STACK_PAGES 4
#define CHILD_CNODE_BITS 6

extern struct keel_bootinfo *suite_boot;

struct elf_ehdr {
    unsigned char ident[16];
    unsigned short type, machine;
    unsigned int version;
    unsigned long entry, phoff, shoff;
    unsigned int flags;
    unsigned short ehsize, phentsize, phnum, shentsize, shnum, shstrndx;
} __attribute__((packed));

struct elf_phdr {
    unsigned int type, flags;
    unsigned long offset, vaddr, paddr, filesz, memsz, align;
} __attribute__((packed));

static unsigned long hex8(const char *p)
{
    unsigned long v = 0;

    for (int i = 0; i < 8; i++) {
        char c = p[i];
        v = v << 4 | (unsigned long)(c <= '9' ? c - '0' : (c | 0x20) - 'a' + 10);
    }
    return v;
}

static const unsigned char *cpio_find(const char *name, unsigned long *len)
{
    const char *base = (const char *)KEEL_INITRD_VADDR;
    unsigned long off = 0, size = suite_boot->initrd_size;

    while (off + 110 <= size && !memcmp(base + off, "07070", 5)) {
        unsigned long filesize = hex8(base + off + 54), namesize = hex8(base + off + 94);
        const char *n = base + off + 110;
        unsigned long data = (off + 110 + namesize + 3) & ~3ul;
        if (!strcmp(n, "TRAILER!!!"))
            break;
        if (!strcmp(n, name)) {
            *len = filesize;
            return (const unsigned char *)base + data;
        }
        off = (data + filesize + 3) & ~3ul;
    }
    return NULL;
}

/* An object from a's untyped into a's next slot (the suite's when a is
 * null); 0 when there is no room. */
static keel_word_t obj(struct obj_alloc *a, keel_word_t type, keel_word_t bits)
{
    if (!a)
        return make_obj(type, bits);
    if (a->next >= a->end)
        return 0;
    keel_word_t s = a->next++;
    return keel_untyped_retype(a->ut, type, bits, CN, s, 1) ? 0 : s;
}

/* Maps a frame, making whatever paging levels are missing. */
static long map_in(struct obj_alloc *a, keel_word_t vs, keel_word_t frame, keel_word_t va,
                   keel_word_t rights)
{
    for (int tries = 0; tries < 4; tries++) {
        long err = keel_frame_map(frame, vs, va, rights);
        if (err != KEEL_E_NO_TABLE)
            return err;
        keel_word_t t = obj(a, KEEL_OBJ_PDPT, 0);
        if (!t || keel_pdpt_map(t, vs, va & ~((1ul << 39) - 1)))
            keel_cnode_delete(CN, t);
        t = obj(a, KEEL_OBJ_PD, 0);
        if (!t || keel_pd_map(t, vs, va & ~((1ul << 30) - 1)))
            keel_cnode_delete(CN, t);
        t = obj(a, KEEL_OBJ_PT, 0);
        if (!t || keel_pt_map(t, vs, va & ~((1ul << 21) - 1)))
            keel_cnode_delete(CN, t);
    }
    return KEEL_E_NO_TABLE;
}

long spawn_program(const char *name, keel_word_t arg, const keel_word_t *caps, unsigned ncaps,
                   keel_word_t *tcb_out)
{
    struct process p;
    long err = spawn_process_from(0, name, arg, caps, ncaps, 0, &p);

    *tcb_out = p.tcb;
    return err;
}

long spawn_process(const char *name, keel_word_t arg, const keel_word_t *caps, unsigned ncaps,
                   keel_word_t fault_ep, struct process *out)
{
    return spawn_process_from(0, name, arg, caps, ncaps, fault_ep, out);
}

/* Loads name from the initrd into a new process made from a's memory (0:
 * init's own), its capabilities in slots 5.. and its faults sent to fault_ep
 * (0: none); *out names its thread, capability table and address space. */
long spawn_process_from(struct obj_alloc *a, const char *name, keel_word_t arg,
                        const keel_word_t *caps, unsigned ncaps, keel_word_t fault_ep,
                        struct process *out)
{
    unsigned long len;
    const unsigned char *img = cpio_find(name, &len);
    const struct elf_ehdr *eh = (const void *)img;
    long err;

    if (!img || len < sizeof(*eh) || memcmp(eh->ident, "\177ELF", 4))
        return KEEL_E_INVALID_ARG;
    *out = (struct process){ 0, 0, 0 };
    keel_word_t vs = obj(a, KEEL_OBJ_VSPACE, 0);
    if (!vs)
        return KEEL_E_NO_MEMORY;
    const struct elf_phdr *ph = (const void *)(img + eh->phoff);
    for (unsigned i = 0; i < eh->phnum; i++) {
        if (ph[i].type != 1 || !ph[i].memsz)
            continue;
        keel_word_t rights = KEEL_RIGHT_READ | (ph[i].flags & 2 ? KEEL_RIGHT_WRITE : 0) |
                             (ph[i].flags & 1 ? KEEL_RIGHT_EXEC : 0);
        unsigned long start = ph[i].vaddr & ~0xffful;
        unsigned long end = (ph[i].vaddr + ph[i].memsz + 0xfff) & ~0xffful;
        for (unsigned long va = start; va < end; va += KEEL_PAGE_SIZE) {
            keel_word_t f = obj(a, KEEL_OBJ_FRAME, 0);
            if (!f)
                return KEEL_E_NO_MEMORY;
            if ((err = keel_frame_map(f, VS, SCRATCH_VA, KEEL_RIGHT_READ | KEEL_RIGHT_WRITE)))
                return err;
            unsigned long lo = va > ph[i].vaddr ? va : ph[i].vaddr;
            unsigned long hi = va + KEEL_PAGE_SIZE;
            if (hi > ph[i].vaddr + ph[i].filesz)
                hi = ph[i].vaddr + ph[i].filesz;
            if (lo < hi)
                memcpy((char *)SCRATCH_VA + (lo - va), img + ph[i].offset + (lo - ph[i].vaddr),
                       hi - lo);
            keel_frame_unmap(f);
            if ((err = map_in(a, vs, f, va, rights)))
                return err;
        }
    }
    for (int i = 1; i <= CHILD_STACK_PAGES; i++) {
        keel_word_t f = obj(a, KEEL_OBJ_FRAME, 0);
        if (!f)
            return KEEL_E_NO_MEMORY;
        if ((err = map_in(a, vs, f, CHILD_STACK_TOP - i * KEEL_PAGE_SIZE,
                          KEEL_RIGHT_READ | KEEL_RIGHT_WRITE)))
            return err;
    }
    keel_word_t cn = obj(a, KEEL_OBJ_CNODE, CHILD_CNODE_BITS), tcb = obj(a, KEEL_OBJ_TCB, 0);
    if (!cn || !tcb)
        return KEEL_E_NO_MEMORY;
    if ((err = keel_cnode_copy(cn, KEEL_SLOT_CNODE, CN, cn, KEEL_RIGHT_ALL)) ||
        (err = keel_cnode_copy(cn, KEEL_SLOT_VSPACE, CN, vs, KEEL_RIGHT_ALL)) ||
        (err = keel_cnode_copy(cn, KEEL_SLOT_TCB, CN, tcb, KEEL_RIGHT_ALL)) ||
        (err = keel_cnode_copy(cn, KEEL_SLOT_CONSOLE, CN, KEEL_SLOT_CONSOLE, KEEL_RIGHT_WRITE)))
        return err;
    for (unsigned i = 0; i < ncaps; i++) {
        if (!caps[i]) /* slot 0 is never a capability: leave that one empty */
            continue;
        err = keel_cnode_copy(cn, 5 + i, CN, caps[i], KEEL_RIGHT_ALL);
        if (err == KEEL_E_INVALID_ARG) /* untyped memory cannot be copied: it moves */
            err = keel_cnode_move(cn, 5 + i, CN, caps[i]);
        if (err)
            return err;
    }
    *out = (struct process){ tcb, cn, vs };
    if ((err = keel_tcb_configure(tcb, cn, vs, fault_ep)) ||
        (err = keel_tcb_write_regs(tcb, eh->entry, CHILD_STACK_TOP - 8, arg)) ||
        (err = keel_tcb_resume(tcb)))
        return err;
    return KEEL_E_OK;
}

/* Stops a process and deletes every capability it held: calls it was
 * answering end with KEEL_E_REVOKED, its interrupt line is free again.
 * (The frames of its image and stack stay with us.) */
void process_kill(struct process *p)
{
    keel_tcb_suspend(p->tcb);
    keel_word_t objs[3] = { p->tcb, p->cnode, p->vspace };
    for (int i = 0; i < 3; i++) {
        keel_cnode_revoke(CN, objs[i]); /* the copies it held, the thread's bindings */
        keel_cnode_delete(CN, objs[i]);
    }
}

/* The device's io_space (its DMA windows), for its driver; 0 on failure. */
keel_word_t make_io_space(const struct keel_device_desc *d)
{
    keel_word_t io = slot_alloc();
    long err = keel_io_space_control_issue(KEEL_SLOT_IO_SPACE_CONTROL, d->paddr, CN, io);

    if (err) {
        printf("init: no io_space for the device at 0x%lx: %ld\n", d->paddr, err);
        return 0;
    }
    return io;
}

#define PROBE_VA 0x20110000ul

/* The first device the kernel announced whose virtio DeviceID is id: a frame
 * of its registers is made in *regs (unmapped) and its description returned. */
struct keel_device_desc *find_virtio_device(unsigned int id, keel_word_t *regs)
{
    for (unsigned long i = 0; i < suite_boot->device_count; i++) {
        struct keel_device_desc *d = &suite_boot->devices[i];
        *regs = slot_alloc();
        keel_cnode_revoke(CN, d->slot); /* devices sharing a page: start afresh */
        if (keel_untyped_retype(d->slot, KEEL_OBJ_FRAME, 0, CN, *regs, 1) ||
            keel_frame_map(*regs, VS, PROBE_VA, KEEL_RIGHT_READ | KEEL_RIGHT_WRITE))
            continue;
        unsigned int found = ((volatile unsigned int *)(PROBE_VA + (d->paddr & 0xfff)))[2];
        keel_frame_unmap(*regs);
        if (found == id)
            return d;
    }
    return NULL;
}
