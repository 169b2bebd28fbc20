/* Starting a process from a program in the initrd (spawn.h). */
#include "spawn.h"

#define SCRATCH_VA 0x201f0000ul /* a page of our own, for filling frames */

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

/* The cpio entry (header, name and data) of the file name, or null. */
static const char *entry_of(const char *name, unsigned long *entry_len, unsigned long *data_off,
                            unsigned long *file_len)
{
    const char *base = (const char *)KEEL_INITRD_VADDR;
    unsigned long off = 0, size = boot_info()->initrd_size;

    while (off + 110 <= size && !memcmp(base + off, "07070", 5)) {
        unsigned long filesize = hex8(base + off + 54), namesize = hex8(base + off + 94);
        const char *n = base + off + 110;
        unsigned long data = (off + 110 + namesize + 3) & ~3ul;
        unsigned long next = (data + filesize + 3) & ~3ul;
        if (!strcmp(n, "TRAILER!!!"))
            break;
        if (!strcmp(n, name)) {
            *entry_len = next - off;
            *data_off = data - off;
            *file_len = filesize;
            return base + off;
        }
        off = next;
    }
    return NULL;
}

const unsigned char *initrd_find(const char *name, unsigned long *len)
{
    unsigned long entry_len, data_off;
    const char *e = entry_of(name, &entry_len, &data_off, len);

    return e ? (const unsigned char *)e + data_off : NULL;
}

const void *initrd_entry(const char *name, unsigned long *len)
{
    unsigned long data_off, file_len;

    return entry_of(name, len, &data_off, &file_len);
}

/* A fresh frame of a's, filled through our scratch page by fill. */
static keel_word_t filled_frame(struct obj_alloc *a, long *err,
                                void (*fill)(char *page, void *ctx), void *ctx)
{
    keel_word_t f = obj_make(a, KEEL_OBJ_FRAME, 0);

    if (!f) {
        *err = KEEL_E_NO_MEMORY;
        return 0;
    }
    if ((*err = map_frame(0, VS, f, SCRATCH_VA, KEEL_RIGHT_READ | KEEL_RIGHT_WRITE)))
        return 0;
    fill((char *)SCRATCH_VA, ctx);
    keel_frame_unmap(f);
    return f;
}

struct seg_fill {
    const struct elf_phdr *ph;
    const unsigned char *img;
    unsigned long va;
};

static void fill_segment(char *page, void *ctx)
{
    const struct seg_fill *s = ctx;
    unsigned long lo = s->va > s->ph->vaddr ? s->va : s->ph->vaddr;
    unsigned long hi = s->va + KEEL_PAGE_SIZE;

    if (hi > s->ph->vaddr + s->ph->filesz)
        hi = s->ph->vaddr + s->ph->filesz;
    if (lo < hi)
        memcpy(page + (lo - s->va), s->img + s->ph->offset + (lo - s->ph->vaddr), hi - lo);
}

long process_load(struct obj_alloc *a, const char *name, unsigned cnode_bits,
                  unsigned stack_pages, struct process *out)
{
    unsigned long len;
    const unsigned char *img = initrd_find(name, &len);
    const struct elf_ehdr *eh = (const void *)img;
    long err;

    *out = (struct process){ 0, 0, 0, 0 };
    if (!img || len < sizeof(*eh) || memcmp(eh->ident, "\177ELF", 4))
        return KEEL_E_INVALID_ARG;
    keel_word_t vs = obj_make(a, KEEL_OBJ_VSPACE, 0);
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
            struct seg_fill s = { &ph[i], img, va };
            keel_word_t f = filled_frame(a, &err, fill_segment, &s);
            if (!f)
                return err;
            if ((err = map_frame(a, vs, f, va, rights)))
                return err;
        }
    }
    for (unsigned i = 1; i <= stack_pages; i++) {
        keel_word_t f = obj_make(a, KEEL_OBJ_FRAME, 0);
        if (!f)
            return KEEL_E_NO_MEMORY;
        if ((err = map_frame(a, vs, f, SPAWN_STACK_TOP - i * KEEL_PAGE_SIZE,
                             KEEL_RIGHT_READ | KEEL_RIGHT_WRITE)))
            return err;
    }
    keel_word_t cn = obj_make(a, KEEL_OBJ_CNODE, cnode_bits), tcb = obj_make(a, KEEL_OBJ_TCB, 0);
    if (!cn || !tcb)
        return KEEL_E_NO_MEMORY;
    if ((err = keel_cnode_copy(cn, KEEL_SLOT_CNODE, CN, cn, KEEL_RIGHT_ALL)) ||
        (err = keel_cnode_copy(cn, KEEL_SLOT_VSPACE, CN, vs, KEEL_RIGHT_ALL)) ||
        (err = keel_cnode_copy(cn, KEEL_SLOT_TCB, CN, tcb, KEEL_RIGHT_ALL)) ||
        (err = keel_cnode_copy(cn, KEEL_SLOT_CONSOLE, CN, KEEL_SLOT_CONSOLE, KEEL_RIGHT_WRITE)))
        return err;
    *out = (struct process){ tcb, cn, vs, eh->entry };
    return KEEL_E_OK;
}

long process_give(struct process *p, keel_word_t slot, keel_word_t cap, keel_word_t rights)
{
    long err = keel_cnode_copy(p->cnode, slot, CN, cap, rights);

    if (err == KEEL_E_INVALID_ARG) /* untyped memory cannot be copied: it moves */
        err = keel_cnode_move(p->cnode, slot, CN, cap);
    return err;
}

struct copy_fill {
    const void *const *data;
    const unsigned long *len;
    unsigned n, seg;
    unsigned long off; /* into data[seg] */
};

/* The next page of the concatenation of the segments. */
static void fill_copy(char *page, void *ctx)
{
    struct copy_fill *c = ctx;
    unsigned long done = 0;

    while (done < KEEL_PAGE_SIZE && c->seg < c->n) {
        unsigned long k = c->len[c->seg] - c->off;
        if (k > KEEL_PAGE_SIZE - done)
            k = KEEL_PAGE_SIZE - done;
        memcpy(page + done, (const char *)c->data[c->seg] + c->off, k);
        done += k;
        c->off += k;
        if (c->off == c->len[c->seg]) {
            c->seg++;
            c->off = 0;
        }
    }
    memset(page + done, 0, KEEL_PAGE_SIZE - done);
}

long process_map_copy(struct obj_alloc *a, struct process *p, keel_word_t va,
                      const void *const *data, const unsigned long *len, unsigned n)
{
    struct copy_fill c = { data, len, n, 0, 0 };
    unsigned long total = 0;
    long err;

    for (unsigned i = 0; i < n; i++)
        total += len[i];
    for (unsigned long off = 0; off < total; off += KEEL_PAGE_SIZE) {
        keel_word_t f = filled_frame(a, &err, fill_copy, &c);
        if (!f)
            return err;
        if ((err = map_frame(a, p->vspace, f, va + off, KEEL_RIGHT_READ)))
            return err;
    }
    return KEEL_E_OK;
}

long process_start(struct process *p, keel_word_t arg, keel_word_t fault_ep)
{
    long err;

    if ((err = keel_tcb_configure(p->tcb, p->cnode, p->vspace, fault_ep)) ||
        (err = keel_tcb_write_regs(p->tcb, p->entry, SPAWN_STACK_TOP - 8, arg)) ||
        (err = keel_tcb_resume(p->tcb)))
        return err;
    return KEEL_E_OK;
}

long spawn_process_from(struct obj_alloc *a, const char *name, keel_word_t arg,
                        const keel_word_t *caps, unsigned ncaps, keel_word_t fault_ep,
                        struct process *out)
{
    long err = process_load(a, name, SPAWN_CNODE_BITS, SPAWN_STACK_PAGES, out);

    if (err)
        return err;
    for (unsigned i = 0; i < ncaps; i++) {
        if (caps[i] && (err = process_give(out, 5 + i, caps[i], KEEL_RIGHT_ALL)))
            return err;
    }
    return process_start(out, arg, fault_ep);
}

long spawn_process(const char *name, keel_word_t arg, const keel_word_t *caps, unsigned ncaps,
                   keel_word_t fault_ep, struct process *out)
{
    return spawn_process_from(0, name, arg, caps, ncaps, fault_ep, out);
}

long spawn_program(const char *name, keel_word_t arg, const keel_word_t *caps, unsigned ncaps,
                   keel_word_t *tcb_out)
{
    struct process p;
    long err = spawn_process_from(0, name, arg, caps, ncaps, 0, &p);

    *tcb_out = p.tcb;
    return err;
}

void process_kill(struct process *p)
{
    keel_tcb_suspend(p->tcb);
    keel_word_t objs[3] = { p->tcb, p->cnode, p->vspace };
    for (int i = 0; i < 3; i++) {
        keel_cnode_revoke(CN, objs[i]); /* the copies it held, the thread's bindings */
        keel_cnode_delete(CN, objs[i]);
    }
}
