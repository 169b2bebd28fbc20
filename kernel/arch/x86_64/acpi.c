/* ACPI: just enough to find the CPUs and interrupt controllers (the MADT)
 * and the virtio-mmio devices of the DSDT (the AML reader, keel/aml.h).
 * Tables are firmware input: every length and checksum is checked before a
 * field is used. */
#include <arch.h>
#include <keel/aml.h>
#include <keel/cpu.h>
#include <keel/printk.h>
#include <keel/string.h>

#include "x86.h"

struct rsdp {
    char signature[8];
    u8 checksum;
    char oem_id[6];
    u8 revision;
    u32 rsdt;
    u32 length; /* revision >= 2 */
    u64 xsdt;
    u8 ext_checksum;
    u8 reserved[3];
} __packed;

struct sdt_header {
    char signature[4];
    u32 length;
    u8 revision;
    u8 checksum;
    char oem_id[6];
    char oem_table_id[8];
    u32 oem_revision;
    u32 creator_id;
    u32 creator_revision;
} __packed;

struct madt {
    struct sdt_header h;
    u32 lapic_addr;
    u32 flags;
} __packed;

#define MADT_LAPIC 0
#define MADT_IOAPIC 1
#define MADT_ISO 2
#define MADT_LAPIC_OVERRIDE 5
#define MADT_X2APIC 9
#define LAPIC_ENABLED 1
#define LAPIC_ONLINE_CAPABLE 2

/* Tables live below 4 GiB on every machine Keel boots on; the boot direct
 * map covers exactly that. */
static const void *map(u64 phys, u64 len)
{
    if (phys == 0 || phys + len > DIRECT_MAP_SIZE || phys + len < phys)
        return NULL;
    return arch_phys_to_virt(phys);
}

static bool checksum_ok(const void *p, u32 len)
{
    const u8 *b = p;
    u8 sum = 0;

    for (u32 i = 0; i < len; i++)
        sum += b[i];
    return sum == 0;
}

static const struct rsdp *rsdp_at(u64 phys)
{
    const struct rsdp *r = map(phys, sizeof(*r));

    if (!r || memcmp(r->signature, "RSD PTR ", 8) || !checksum_ok(r, 20))
        return NULL;
    if (r->revision >= 2 && (r->length < sizeof(*r) || !checksum_ok(r, sizeof(*r))))
        return NULL;
    return r;
}

static const struct rsdp *rsdp_scan(u64 base, u64 len)
{
    for (u64 p = base; p + sizeof(struct rsdp) <= base + len; p += 16) {
        const struct rsdp *r = rsdp_at(p);
        if (r)
            return r;
    }
    return NULL;
}

static const struct sdt_header *sdt_at(u64 phys)
{
    const struct sdt_header *h = map(phys, sizeof(*h));

    if (!h || h->length < sizeof(*h) || h->length > 0x100000 || !map(phys, h->length))
        return NULL;
    return checksum_ok(h, h->length) ? h : NULL;
}

static const struct sdt_header *find_table(const struct rsdp *r, const char *sig)
{
    bool x = r->revision >= 2 && r->xsdt;
    const struct sdt_header *root = sdt_at(x ? r->xsdt : r->rsdt);
    u32 width = x ? 8 : 4;

    if (!root)
        return NULL;
    u32 n = (root->length - sizeof(*root)) / width;
    const u8 *entries = (const u8 *)(root + 1);
    for (u32 i = 0; i < n; i++) {
        u64 phys = 0;
        memcpy(&phys, entries + i * width, width);
        const struct sdt_header *h = sdt_at(phys);
        if (h && !memcmp(h->signature, sig, 4))
            return h;
    }
    return NULL;
}

static void add_cpu(u32 apic_id, u32 bsp_id)
{
    if (apic_id == bsp_id || apic_id > 255)
        return; /* the BSP is cpus[0]; xAPIC mode reaches IDs below 256 */
    if (cpu_count >= MAX_CPUS) {
        printk("keel: cpu with apic id %u ignored: at most %u cpus\n", apic_id, MAX_CPUS);
        return;
    }
    cpus[cpu_count].index = cpu_count;
    cpus[cpu_count].hw_id = apic_id;
    cpu_count++;
}

#define FADT_DSDT 40
#define FADT_X_DSDT 140
#define MAX_FW_DEVICES 16
#define MAX_AML_DEVICES 64

static struct arch_fw_device fw_devices[MAX_FW_DEVICES];
static u32 fw_device_count;
/* The GSIs (below 64) of those devices, and which of them the DSDT says
 * are level-triggered and active low (QEMU's virtio-mmio lines are level:
 * the line stays up while the device's interrupt status is set). */
static u64 fw_gsis, fw_level, fw_low;
static struct aml_device aml_devices[MAX_AML_DEVICES];
static const struct rsdp *acpi_rsdp; /* found by acpi_init */

/* The LNRO0005 (virtio-mmio) devices of the DSDT, with a memory range and
 * an interrupt each.  A DSDT whose AML is malformed gives none. */
static void read_dsdt(const struct rsdp *r)
{
    const struct sdt_header *fadt = find_table(r, "FACP");
    u64 phys = 0;
    u32 dsdt32 = 0;

    if (!fadt || fadt->length < FADT_DSDT + 4)
        return;
    memcpy(&dsdt32, (const u8 *)fadt + FADT_DSDT, 4);
    phys = dsdt32;
    if (fadt->length >= FADT_X_DSDT + 8)
        memcpy(&phys, (const u8 *)fadt + FADT_X_DSDT, 8);
    if (!phys)
        phys = dsdt32;
    const struct sdt_header *dsdt = sdt_at(phys);
    if (!dsdt || memcmp(dsdt->signature, "DSDT", 4))
        return;
    long n = aml_find_devices((const u8 *)(dsdt + 1), dsdt->length - sizeof(*dsdt), aml_devices,
                              MAX_AML_DEVICES);
    if (n < 0) {
        printk("keel: acpi: the DSDT is malformed: its devices are not used\n");
        return;
    }
    for (long i = 0; i < n && i < MAX_AML_DEVICES && fw_device_count < MAX_FW_DEVICES; i++) {
        const struct aml_device *d = &aml_devices[i];
        if (memcmp(d->hid, "LNRO0005", 9) || !d->has_mem || !d->has_irq)
            continue;
        fw_devices[fw_device_count++] = (struct arch_fw_device){ d->mem_base, d->mem_len, d->irq };
        if (d->irq < 64) {
            fw_gsis |= 1ul << d->irq;
            fw_level |= (u64)d->irq_level << d->irq;
            fw_low |= (u64)d->irq_low << d->irq;
        }
        printk("keel: acpi: virtio-mmio at 0x%lx, gsi %u %s-triggered, active %s\n", d->mem_base,
               d->irq, d->irq_level ? "level" : "edge", d->irq_low ? "low" : "high");
    }
}

bool acpi_gsi_trigger(u32 gsi, bool *level, bool *low)
{
    if (gsi >= 64 || !(fw_gsis >> gsi & 1))
        return false;
    *level = fw_level >> gsi & 1;
    *low = fw_low >> gsi & 1;
    return true;
}

/* Reads the DSDT on the first call only: walking AML is tens of
 * milliseconds of emulated instructions on a kvm_pvm host, so the core asks
 * only when the command line announced no device. */
u32 arch_firmware_virtio_devices(struct arch_fw_device *out, u32 max)
{
    static bool read;

    if (!read && acpi_rsdp)
        read_dsdt(acpi_rsdp);
    read = true;
    u32 n = MIN(max, fw_device_count);

    for (u32 i = 0; i < n; i++)
        out[i] = fw_devices[i];
    return n;
}

bool acpi_init(u64 rsdp_hint, struct madt_info *out)
{
    const struct rsdp *r = rsdp_hint ? rsdp_at(rsdp_hint) : NULL;

    if (!r) {
        const u16 *ebda_seg = map(0x40e, 2);
        if (ebda_seg && *ebda_seg)
            r = rsdp_scan((u64)*ebda_seg << 4, 1024);
        if (!r)
            r = rsdp_scan(0xe0000, 0x20000);
    }
    if (!r) {
        printk("keel: no ACPI RSDP found\n");
        return false;
    }
    const struct madt *m = (const struct madt *)find_table(r, "APIC");
    if (!m || m->h.length < sizeof(*m)) {
        printk("keel: no valid ACPI MADT\n");
        return false;
    }
    for (u32 i = 0; i < 16; i++) {
        out->isa_gsi[i] = i;
        out->isa_flags[i] = 0;
    }
    out->lapic_phys = m->lapic_addr;
    out->ioapic_count = 0;
    out->cpus_listed = 0;

    /* The LAPIC address may be overridden; needed before reading our ID. */
    const u8 *p = (const u8 *)(m + 1), *end = (const u8 *)m + m->h.length;
    for (const u8 *e = p; e + 2 <= end && e[1] >= 2 && e + e[1] <= end; e += e[1]) {
        if (e[0] == MADT_LAPIC_OVERRIDE && e[1] >= 12)
            memcpy(&out->lapic_phys, e + 4, 8);
    }
    lapic_init_mmio(out->lapic_phys);
    u32 bsp = lapic_id();
    cpus[0].index = 0;
    cpus[0].hw_id = bsp;
    cpu_count = 1;

    for (const u8 *e = p; e + 2 <= end && e[1] >= 2 && e + e[1] <= end; e += e[1]) {
        switch (e[0]) {
        case MADT_LAPIC: {
            u32 flags;
            if (e[1] < 8)
                break;
            memcpy(&flags, e + 4, 4);
            if (flags & (LAPIC_ENABLED | LAPIC_ONLINE_CAPABLE)) {
                out->cpus_listed++;
                add_cpu(e[3], bsp);
            }
            break;
        }
        case MADT_X2APIC: {
            u32 id, flags;
            if (e[1] < 16)
                break;
            memcpy(&id, e + 4, 4);
            memcpy(&flags, e + 8, 4);
            if (flags & (LAPIC_ENABLED | LAPIC_ONLINE_CAPABLE)) {
                out->cpus_listed++;
                add_cpu(id, bsp);
            }
            break;
        }
        case MADT_IOAPIC:
            if (e[1] >= 12 && out->ioapic_count < MAX_IOAPICS) {
                u32 addr, gsi;
                memcpy(&addr, e + 4, 4);
                memcpy(&gsi, e + 8, 4);
                out->ioapic_phys[out->ioapic_count] = addr;
                out->ioapic_gsi_base[out->ioapic_count++] = gsi;
            }
            break;
        case MADT_ISO:
            if (e[1] >= 10 && e[2] == 0 && e[3] < 16) {
                memcpy(&out->isa_gsi[e[3]], e + 4, 4);
                memcpy(&out->isa_flags[e[3]], e + 8, 2);
            }
            break;
        }
    }
    acpi_rsdp = r;
    return true;
}
