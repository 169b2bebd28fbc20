/* Finding devices (devices.h). */
#include "devices.h"
#include "spawn.h"

#define PROBE_VA 0x20110000ul

static inline unsigned char inb_port(unsigned short port)
{
    unsigned char v;
    __asm__ volatile("inb %1, %0" : "=a"(v) : "Nd"(port));
    return v;
}

static inline void outb_port(unsigned short port, unsigned char v)
{
    __asm__ volatile("outb %0, %1" : : "a"(v), "Nd"(port));
}

/* Its scratch register keeps what we write. */
int com2_present(void)
{
    keel_word_t io = slot_alloc();
    unsigned char v;

    if (keel_io_port_control_issue(KEEL_SLOT_IO_PORT_CONTROL, COM2_BASE, COM2_LAST, CN, io) ||
        keel_tcb_set_io_ports(KEEL_SLOT_TCB, io))
        return 0;
    outb_port(COM2_BASE + 7, 0x5a);
    v = inb_port(COM2_BASE + 7);
    keel_tcb_set_io_ports(KEEL_SLOT_TCB, 0);
    keel_cnode_delete(CN, io);
    return v == 0x5a;
}

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

struct keel_device_desc *find_virtio_device(unsigned int id, keel_word_t *regs)
{
    struct keel_bootinfo *bi = boot_info();

    for (unsigned long i = 0; i < bi->device_count; i++) {
        struct keel_device_desc *d = &bi->devices[i];
        *regs = slot_alloc();
        keel_cnode_revoke(CN, d->slot); /* devices sharing a page: start afresh */
        if (keel_untyped_retype(d->slot, KEEL_OBJ_FRAME, 0, CN, *regs, 1) ||
            map_frame(0, VS, *regs, PROBE_VA, KEEL_RIGHT_READ | KEEL_RIGHT_WRITE))
            continue;
        unsigned int found = ((volatile unsigned int *)(PROBE_VA + (d->paddr & 0xfff)))[2];
        keel_frame_unmap(*regs);
        if (found == id)
            return d;
    }
    return NULL;
}
