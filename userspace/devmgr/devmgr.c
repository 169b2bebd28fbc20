/* The device manager: a process of its own, started by init (or by the
 * services tests) with only what it hands out and needs (devmgr.h: the
 * device memory, the interrupt, I/O-port and io_space controls, an untyped
 * pool for its drivers, the name service's registering endpoint, a copy of
 * the boot information and of the driver programs).
 *
 * - It holds the only copy of the name service's endpoint that may
 *   register names.
 * - It finds devices: the virtio-mmio entries of the command line, the
 *   hotplug controller (docs/hotplug.md) whose interrupt (GSI 5) it takes,
 *   and a 16550 UART at COM2 (0x2f8, IRQ 3) if one answers there.
 * - For each device of a known type it starts a driver process with
 *   exactly that device's capabilities: a copy of the register frame, the
 *   interrupt handler, a notification, DMA frames (a virtio device), or an
 *   I/O-port capability for its eight ports, the interrupt handler and a
 *   notification (the UART).  The whole process (its
 *   address space, capability table, thread, endpoint, frames) is made
 *   from one untyped of the driver's own, so that revoking that untyped
 *   takes the process down and returns all its memory; the same untyped
 *   and the same slots serve the next driver of the device.
 * - It registers the driver's endpoint under the device's name.  Killing a
 *   driver (DM_KILL) stops its thread, resets a virtio device through the
 *   manager's own frame of its registers (so nothing is DMAed into memory
 *   about to be reused) or revokes the UART's I/O-port capability (the
 *   driver's copy and its thread's port range go), revokes the untyped
 *   (every client's copy of the
 *   endpoint goes with it: calls in flight fail with KEEL_E_REVOKED) and
 *   starts a new driver under the same name.  A device detached while the
 *   guest runs has its driver stopped the same way and its name withdrawn.
 *
 * It serves devmgr.h on its endpoint; the hotplug interrupt reaches it
 * through the notification bound to its thread. */
#include "devmgr.h"
#include "../lib/devices.h"
#include "../lib/spawn.h"
#include "../lib/virtio.h"

#define DRIVER_UT_BITS 18 /* 256 KiB: one driver's whole process */
#define DRIVER_SLOTS 96
#define REGS_VA 0x20140000ul /* the manager's view of device registers, a page each */
#define DM_WINDOW_SLOTS 4

#define HP_MAGIC 0x00
#define HP_SLOT_COUNT 0x08
#define HP_SLOT_STRIDE 0x0c
#define HP_SLOT_BASE_LOW 0x10
#define HP_SLOT_BASE_HIGH 0x14
#define HP_PRESENT 0x20
#define HP_CHANGED 0x24
#define HP_ACK 0x28
#define HP_EJECTED 0x2c
#define HP_SLOT_SEL 0x30
#define HP_MAGIC_VALUE 0x4350484b

/* The devices we have drivers for.  A virtio driver is started with its
 * endpoint, the register frame, the interrupt handler, a notification, dma
 * frames and the device's io_space (driver.h: DRV_SLOT_*); the UART driver
 * with its endpoint, an I/O-port capability, the interrupt handler and a
 * notification (userspace/drivers/uart.c). */
static const struct driver_kind {
    unsigned type; /* virtio DeviceID, or DM_TYPE_UART */
    const char *stem;
    unsigned dma;
    int numbered; /* names are stem0, stem1, ...; else the stem alone */
} kinds[] = {
    { 2, "blk", DRV_DMA_FRAMES, 1 },
    { 4, "rng", 1, 1 },
    { 1, "net", DRV_DMA_FRAMES, 1 }, /* queue frames, 8 receive, 7 transmit */
    { 3, "hvc", 5, 1 },     /* queue frames and buffers */
    { DM_TYPE_UART, "console", 0, 0 },
};

#define UART_KIND (&kinds[sizeof(kinds) / sizeof(kinds[0]) - 1])

struct device {
    char name[NS_NAME_MAX + 1];
    const struct driver_kind *kind;
    unsigned desc;  /* index in bootinfo.devices (virtio) */
    int hot_slot;   /* the hotplug controller's slot, or -1 */
    volatile unsigned int *regs; /* the manager's mapping (virtio), or null */
    keel_word_t gsi, arg;        /* its line, the driver's argument */
    keel_word_t irq;             /* slot of the interrupt handler, until the driver has it */
    keel_word_t ut, slots;       /* the driver's memory and slots */
    keel_word_t tcb;
    keel_word_t fault; /* our endpoint, badged for this driver's faults */
    keel_word_t io;    /* the device's io_space (DMA windows) or I/O ports, kept while present */
    unsigned long starts;
    int state;
};

static struct keel_bootinfo *bi;
static struct device devs[DM_MAX];
static keel_word_t page_frame[KEEL_MAX_DEVICES]; /* the manager's frame of each device page */
static keel_word_t hp_ntfn, hp_irq, held_reply;
static const keel_word_t ns_admin = DM_SLOT_NAMES, dm_ep = DM_SLOT_ENDPOINT;
static volatile unsigned int *hp; /* the hotplug controller, or null */
static unsigned long hp_desc, slot_base, slot_stride, slot_count;
static unsigned long events, wait_after;
static int waiting;

static unsigned int rd(volatile unsigned int *r, unsigned off)
{
    return r[off / 4];
}

/* The manager's frame and mapping of bootinfo device i's registers;
 * devices sharing a page (QEMU's transports) share the frame. */
static volatile unsigned int *device_regs(unsigned i)
{
    unsigned j = 0;

    while (bi->devices[j].slot != bi->devices[i].slot)
        j++;
    if (!page_frame[j]) {
        keel_word_t f = slot_alloc();
        keel_cnode_revoke(CN, bi->devices[j].slot);
        if (keel_untyped_retype(bi->devices[j].slot, KEEL_OBJ_FRAME, 0, CN, f, 1) ||
            map_frame(0, VS, f, REGS_VA + j * KEEL_PAGE_SIZE, KEEL_RIGHT_READ | KEEL_RIGHT_WRITE))
            return 0;
        page_frame[j] = f;
    }
    page_frame[i] = page_frame[j];
    return (volatile unsigned int *)(REGS_VA + j * KEEL_PAGE_SIZE + (bi->devices[i].paddr & 0xfff));
}

static int name_taken(const char *name)
{
    for (int i = 0; i < DM_MAX; i++) {
        if (devs[i].state != DM_FREE && !strcmp(devs[i].name, name))
            return 1;
    }
    return 0;
}

/* The first free name of the kind: blk0, blk1, ... (or the stem alone) */
static void pick_name(char *out, const struct driver_kind *kind)
{
    if (!kind->numbered) {
        snprintf(out, NS_NAME_MAX + 1, "%s", kind->stem);
        return;
    }
    for (int n = 0;; n++) {
        snprintf(out, NS_NAME_MAX + 1, "%s%d", kind->stem, n);
        if (!name_taken(out))
            return;
    }
}

static long ns_register(struct device *d, keel_word_t ep)
{
    keel_word_t in[KEEL_MSG_WORDS] = { 0 }, out[KEEL_MSG_WORDS];

    ns_pack(d->name, in);
    in[2] = ep;
    return keel_call(ns_admin, NS_REGISTER, in, out);
}

static void ns_withdraw(struct device *d)
{
    keel_word_t in[KEEL_MSG_WORDS] = { 0 }, out[KEEL_MSG_WORDS];

    ns_pack(d->name, in);
    keel_call(ns_admin, NS_WITHDRAW, in, out);
}

#define FAULT_BADGE (1ul << 40)

static keel_word_t fault_badge(const struct device *d)
{
    return FAULT_BADGE | (keel_word_t)(d - devs) << 32 | (d->starts & 0xffffffff);
}

/* Takes the driver's process down: its I/O ports (the UART's: our
 * capability's children, including its thread's port range), then
 * everything made from its untyped. */
static void stop_process(struct device *d)
{
    if (!d->regs)
        keel_cnode_revoke(CN, d->io);
    keel_cnode_revoke(CN, d->ut);
}

/* Starts d's driver from its own untyped; registers its name. */
static long start_driver(struct device *d)
{
    struct obj_alloc a = { d->ut, d->slots, d->slots + DRIVER_SLOTS };
    keel_word_t caps[DRV_SLOT_IO_SPACE - DRV_SLOT_SERVICE + 1] = { 0 };
    struct process proc;
    unsigned ncaps = 4, frames = d->kind->dma;
    long err;

    /* A line has one handler capability: it moves to the driver, and comes
     * back free when the driver's capability table is destroyed. */
    keel_cnode_delete(CN, d->irq);
    if ((err = keel_irq_control_get(KEEL_SLOT_IRQ_CONTROL, d->gsi, CN, d->irq)))
        goto fail;
    caps[0] = a.next++;
    caps[1] = d->regs ? page_frame[d->desc] : d->io; /* the UART: its ports */
    caps[2] = d->irq;
    caps[3] = a.next++;
    if ((err = keel_untyped_retype(d->ut, KEEL_OBJ_ENDPOINT, 0, CN, caps[0], 1)) ||
        (err = keel_untyped_retype(d->ut, KEEL_OBJ_NOTIFICATION, 0, CN, caps[3], 1)) ||
        (frames && (err = keel_untyped_retype(d->ut, KEEL_OBJ_FRAME, 0, CN, a.next, frames))))
        goto fail;
    if (d->regs) {
        for (unsigned i = 0; i < frames; i++)
            caps[ncaps++] = a.next++;
        /* Its copy of the io_space goes with its capability table; the
         * windows it makes belong to its frames, so a killed driver's DMA
         * ends with it. */
        ncaps = DRV_SLOT_IO_SPACE - DRV_SLOT_SERVICE;
        caps[ncaps++] = d->io;
    }
    /* Its faults come to us, badged with who and which start it was: a
     * fault still queued from a driver since replaced is recognised. */
    d->starts++;
    keel_cnode_delete(CN, d->fault);
    if ((err = keel_cnode_mint(CN, d->fault, CN, dm_ep, KEEL_RIGHT_WRITE,
                               fault_badge(d))) ||
        (err = spawn_process_from(&a, dm_program(d->kind->type), d->arg, caps, ncaps, d->fault,
                                  &proc)))
        goto fail;
    d->tcb = proc.tcb;
    if ((err = ns_register(d, caps[0])))
        goto fail;
    d->state = DM_RUNNING;
    if (d->regs)
        printf("devmgr: %s: %s started (device at 0x%lx, irq %lu)\n", d->name,
               dm_program(d->kind->type), bi->devices[d->desc].paddr, d->gsi);
    else
        printf("devmgr: %s: %s started (ports 0x%x-0x%x, irq %lu)\n", d->name,
               dm_program(d->kind->type), COM2_BASE, COM2_LAST, d->gsi);
    return 0;
fail:
    printf("devmgr: %s: cannot start %s: %ld\n", d->name, dm_program(d->kind->type), err);
    stop_process(d);
    ns_withdraw(d); /* clients waiting for a new driver are told: none */
    d->state = DM_FAILED;
    return err;
}

/* Stops d's driver and frees everything it was given. */
static void stop_driver(struct device *d, int reset)
{
    keel_tcb_suspend(d->tcb);
    if (reset && d->regs)
        d->regs[VIRTIO_STATUS / 4] = 0; /* the device lets go of the driver's memory */
    stop_process(d);
}

static long kill_driver(struct device *d)
{
    if (d->state == DM_FREE)
        return KEEL_E_INVALID_ARG;
    printf("devmgr: %s: killing its driver\n", d->name);
    stop_driver(d, 1);
    return start_driver(d);
}

/* A free record for a device of kind on line gsi, with the driver's
 * untyped and slots (kept from a device that went before); null if the
 * table is full. */
static struct device *new_device(const struct driver_kind *kind, keel_word_t gsi)
{
    struct device *d = 0;

    for (int k = 0; k < DM_MAX && !d; k++) {
        if (devs[k].state == DM_FREE)
            d = &devs[k];
    }
    if (!d)
        return 0;
    d->kind = kind;
    pick_name(d->name, kind);
    d->gsi = gsi;
    d->hot_slot = -1;
    d->regs = 0;
    if (!d->ut) {
        d->ut = make_untyped(DRIVER_UT_BITS);
        d->slots = slot_alloc_range(DRIVER_SLOTS);
    }
    if (!d->irq) {
        d->irq = slot_alloc();
        d->fault = slot_alloc();
        d->io = slot_alloc();
    }
    return d;
}

/* A record for bootinfo device i if it is one we drive. */
static struct device *add_device(unsigned i, int hot_slot)
{
    volatile unsigned int *regs = device_regs(i);
    struct device *d;

    if (!regs || rd(regs, VIRTIO_MAGIC) != 0x74726976)
        return 0;
    unsigned vid = rd(regs, VIRTIO_DEVICE_ID);
    const struct driver_kind *kind = 0;
    for (unsigned k = 0; k < sizeof(kinds) / sizeof(kinds[0]); k++) {
        if (kinds[k].type == vid)
            kind = &kinds[k];
    }
    if (!kind || !(d = new_device(kind, bi->devices[i].irq)))
        return 0;
    d->desc = i;
    d->hot_slot = hot_slot;
    d->regs = regs;
    d->arg = DRV_ARG(DRV_MODE_SERVICE, bi->devices[i].paddr);
    long err = keel_io_space_control_issue(KEEL_SLOT_IO_SPACE_CONTROL, bi->devices[i].paddr, CN,
                                           d->io);
    if (err) {
        printf("devmgr: %s: no io_space for the device: %ld\n", d->name, err);
        d->state = DM_FAILED;
        return d;
    }
    start_driver(d);
    return d;
}

/* The 16550 at COM2, if it answers: its driver gets an I/O-port capability
 * derived from ours, so revoking ours takes its ports away. */
static void add_uart(void)
{
    struct device *d;

    if (!com2_present() || !(d = new_device(UART_KIND, COM2_IRQ)))
        return;
    d->arg = COM2_BASE;
    long err = keel_io_port_control_issue(KEEL_SLOT_IO_PORT_CONTROL, COM2_BASE, COM2_LAST, CN,
                                          d->io);
    if (err) {
        printf("devmgr: %s: no I/O ports for the UART: %ld\n", d->name, err);
        d->state = DM_FAILED;
        return;
    }
    start_driver(d);
}

static void remove_device(struct device *d)
{
    if (d->state == DM_RUNNING)
        stop_driver(d, 1); /* reset: the device, still there, lets go of our memory */
    ns_withdraw(d);
    keel_cnode_delete(CN, d->irq);
    keel_cnode_delete(CN, d->io); /* the last one: the device's table is cleared */
    printf("devmgr: %s: device removed, driver stopped\n", d->name);
    d->state = DM_FREE;
}

/* The bootinfo device at slot i of the hotplug controller. */
static long slot_desc(unsigned slot)
{
    unsigned long base = slot_base + slot * slot_stride;

    for (unsigned i = 0; i < bi->device_count; i++) {
        if (bi->devices[i].paddr == base)
            return i;
    }
    return -1;
}

/* Serves one reading of CHANGED; 0 once the controller is quiet.  A slot
 * no longer PRESENT has its driver stopped and its device reset, then is
 * reported EJECTED: the VMM waits for that before it frees the slot. */
static int hotplug_event(void)
{
    unsigned int changed = rd(hp, HP_CHANGED);

    if (!changed)
        return 0;
    hp[HP_ACK / 4] = changed; /* before acting: a later change sets it again */
    unsigned int present = rd(hp, HP_PRESENT), ejected = 0;
    for (unsigned s = 0; s < slot_count; s++) {
        if (!(changed & (1u << s)))
            continue;
        for (int k = 0; k < DM_MAX; k++) {
            if (devs[k].state != DM_FREE && devs[k].hot_slot == (int)s)
                remove_device(&devs[k]);
        }
        long i = slot_desc(s);
        if (!(present & (1u << s)))
            ejected |= 1u << s;
        else if (i >= 0 && !add_device((unsigned)i, (int)s))
            printf("devmgr: slot %u: no driver for its device\n", s);
    }
    if (ejected)
        hp[HP_EJECTED / 4] = ejected;
    events++;
    return 1;
}

static void answer_waiter(void)
{
    keel_word_t res[KEEL_MSG_WORDS] = { events };

    if (waiting && events > wait_after) {
        keel_reply(held_reply, KEEL_E_OK, res);
        waiting = 0;
    }
}

static struct device *find(const keel_word_t *w)
{
    char name[NS_NAME_MAX + 1];

    if (!w[0])
        return w[1] < DM_MAX && devs[w[1]].state != DM_FREE ? &devs[w[1]] : 0;
    ns_unpack(w, name);
    for (int k = 0; k < DM_MAX; k++) {
        if (devs[k].state != DM_FREE && !strcmp(devs[k].name, name))
            return &devs[k];
    }
    return 0;
}

/* A driver's thread faulted: it is stopped like a killed one and another
 * takes its place. */
static void driver_faulted(const struct keel_msg *m)
{
    keel_word_t i = (m->badge >> 32) & 0xff;

    if (!(m->badge & FAULT_BADGE) || i >= DM_MAX)
        return;
    struct device *d = &devs[i];
    if (d->state != DM_RUNNING || m->badge != fault_badge(d))
        return; /* from a driver already gone */
    printf("devmgr: %s: its driver faulted (vector %lu at 0x%lx); restarting it\n", d->name,
           m->w[0], m->w[3]);
    kill_driver(d);
}

/* Points the driver at address 0, where nothing is mapped. */
static long crash_driver(struct device *d)
{
    long err = keel_tcb_suspend(d->tcb);

    if (!err)
        err = keel_tcb_write_regs(d->tcb, 0, 0, 0);
    if (!err)
        err = keel_tcb_resume(d->tcb);
    return err;
}

static void dm_serve(void)
{
    keel_word_t window = slot_alloc_range(DM_WINDOW_SLOTS);

    for (;;) {
        struct keel_msg m;
        keel_word_t res[KEEL_MSG_WORDS] = { 0 };
        long err = KEEL_E_OK;

        if (keel_recv(dm_ep, 0, window, &m))
            continue;
        if (m.label == KEEL_LABEL_NOTIFY) {
            /* Unmasked first, then CHANGED re-read until it is quiet: a
             * change after the last read raises a new interrupt. */
            keel_irq_handler_ack(hp_irq);
            while (hp && hotplug_event())
                ;
            answer_waiter();
            continue;
        }
        struct device *d;
        if ((m.label & KEEL_LABEL_MASK) == KEEL_LABEL_FAULT) {
            driver_faulted(&m);
            continue;
        }
        switch (m.label & KEEL_LABEL_MASK) {
        case DM_LIST:
            if (m.w[0] >= DM_MAX)
                err = KEEL_E_INVALID_ARG;
            else if ((d = &devs[m.w[0]])->state != DM_FREE) {
                ns_pack(d->name, res);
                res[2] = (keel_word_t)d->state;
                res[3] = d->starts;
                res[4] = d->kind->type;
                res[5] = d->gsi;
            }
            break;
        case DM_KILL:
            d = find(m.w);
            err = d ? kill_driver(d) : KEEL_E_INVALID_ARG;
            res[0] = d ? d->starts : 0;
            break;
        case DM_CRASH:
            d = find(m.w);
            err = d && d->state == DM_RUNNING ? crash_driver(d) : KEEL_E_INVALID_ARG;
            break;
        case DM_WAIT:
            if ((m.info & KEEL_INFO_REPLY) && !waiting) {
                keel_cnode_move(CN, held_reply, CN, window);
                waiting = 1;
                wait_after = m.w[0];
                answer_waiter();
                continue;
            }
            err = KEEL_E_BAD_STATE;
            break;
        default:
            err = KEEL_E_UNKNOWN_CALL;
        }
        if (m.info & KEEL_INFO_REPLY)
            keel_reply(window, err, res);
    }
}

/* The hotplug controller, if the kernel announced one (keel.hotplug=, after
 * the virtio devices): the device whose registers start with its magic. */
static void hotplug_setup(void)
{
    for (unsigned i = 0; i < bi->device_count; i++) {
        volatile unsigned int *r = device_regs(i);
        if (!r || rd(r, HP_MAGIC) != HP_MAGIC_VALUE)
            continue;
        hp_irq = slot_alloc();
        if (keel_irq_control_get(KEEL_SLOT_IRQ_CONTROL, bi->devices[i].irq, CN, hp_irq) ||
            keel_irq_handler_set_notification(hp_irq, hp_ntfn)) {
            printf("devmgr: hotplug interrupt %lu unavailable\n", bi->devices[i].irq);
            return;
        }
        hp = r;
        hp_desc = i;
        slot_count = rd(r, HP_SLOT_COUNT);
        slot_stride = rd(r, HP_SLOT_STRIDE);
        slot_base = rd(r, HP_SLOT_BASE_LOW) | (unsigned long)rd(r, HP_SLOT_BASE_HIGH) << 32;
        hp[HP_ACK / 4] = rd(r, HP_CHANGED); /* what is there now is found below */
        printf("devmgr: hotplug controller with %lu slots, irq %lu\n", slot_count,
               bi->devices[i].irq);
        return;
    }
}

long keel_main(keel_word_t arg);
long keel_main(keel_word_t arg)
{
    bi = boot_info();
    objects_init(bi->first_free, DM_SLOT_POOL);
    held_reply = slot_alloc();
    hp_ntfn = make_obj(KEEL_OBJ_NOTIFICATION, 0);
    hotplug_setup();
    for (unsigned i = 0; i < bi->device_count; i++) {
        if (hp && i == hp_desc)
            continue;
        int hot = -1;
        for (unsigned s = 0; hp && s < slot_count; s++) {
            if (slot_desc(s) == (long)i)
                hot = (int)s;
        }
        add_device(i, hot);
    }
    add_uart();
    if (keel_tcb_bind_notification(KEEL_SLOT_TCB, hp_ntfn))
        printf("devmgr: cannot take the hotplug notification\n");
    dm_serve();
    return 0;
}
