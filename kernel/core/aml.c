/* The bounded AML reader (keel/aml.h).  Grammar: ACPI 6.5, chapter 20.
 * Portable: it reads bytes, nothing of the machine. */
#include <keel/aml.h>

#define OP_ZERO 0x00
#define OP_ONE 0x01
#define OP_ALIAS 0x06
#define OP_NAME 0x08
#define OP_BYTE 0x0a
#define OP_WORD 0x0b
#define OP_DWORD 0x0c
#define OP_STRING 0x0d
#define OP_QWORD 0x0e
#define OP_SCOPE 0x10
#define OP_BUFFER 0x11
#define OP_PACKAGE 0x12
#define OP_VAR_PACKAGE 0x13
#define OP_METHOD 0x14
#define OP_EXTERNAL 0x15
#define OP_EXT 0x5b
#define OP_IF 0xa0
#define OP_ELSE 0xa1
#define OP_WHILE 0xa2
#define OP_ONES 0xff
#define EXT_MUTEX 0x01
#define EXT_EVENT 0x02
#define EXT_REVISION 0x30
#define EXT_OP_REGION 0x80
#define EXT_FIELD 0x81
#define EXT_DEVICE 0x82
#define EXT_PROCESSOR 0x83
#define EXT_POWER_RES 0x84
#define EXT_THERMAL_ZONE 0x85
#define EXT_INDEX_FIELD 0x86
#define EXT_BANK_FIELD 0x87

/* Objects looked at in one table, at most: a bound on the work. */
#define MAX_STEPS 100000

struct walk {
    struct aml_device *out;
    u64 max, found;
    u32 steps;
    bool bad;
};

static u32 le(const u8 *p, u32 n)
{
    u32 v = 0;

    for (u32 i = 0; i < n; i++)
        v |= (u32)p[i] << (8 * i);
    return v;
}

/* PkgLength at *p: on success *p is past it and *pkg_end where the package
 * (which the length counts from its own first byte) ends. */
static bool pkg_length(const u8 **p, const u8 *end, const u8 **pkg_end)
{
    const u8 *s = *p;

    if (s >= end)
        return false;
    u32 extra = *s >> 6;
    u64 len;
    if ((u64)(end - s) < 1 + extra)
        return false;
    if (!extra) {
        len = *s & 0x3f;
    } else {
        len = *s & 0x0f;
        for (u32 i = 0; i < extra; i++)
            len |= (u64)s[1 + i] << (4 + 8 * i);
    }
    if (len < 1 + extra || len > (u64)(end - s))
        return false;
    *pkg_end = s + len;
    *p = s + 1 + extra;
    return true;
}

static bool seg_ok(const u8 *s)
{
    if (!((s[0] >= 'A' && s[0] <= 'Z') || s[0] == '_'))
        return false;
    for (u32 i = 1; i < 4; i++) {
        if (!((s[i] >= 'A' && s[i] <= 'Z') || (s[i] >= '0' && s[i] <= '9') || s[i] == '_'))
            return false;
    }
    return true;
}

/* A NameString; its last segment (or zeros for the null name) in last. */
static bool name_string(const u8 **p, const u8 *end, u8 last[4])
{
    const u8 *s = *p;
    u32 segs;

    if (s < end && *s == '\\')
        s++;
    else
        while (s < end && *s == '^')
            s++;
    if (s >= end)
        return false;
    if (*s == 0) {
        last[0] = last[1] = last[2] = last[3] = 0;
        *p = s + 1;
        return true;
    }
    if (*s == 0x2e) {
        segs = 2;
        s++;
    } else if (*s == 0x2f) {
        if (end - s < 2 || s[1] == 0)
            return false;
        segs = s[1];
        s += 2;
    } else {
        segs = 1;
    }
    if ((u64)(end - s) < 4ul * segs)
        return false;
    for (u32 i = 0; i < segs; i++, s += 4) {
        if (!seg_ok(s))
            return false;
    }
    for (u32 i = 0; i < 4; i++)
        last[i] = (s - 4)[i];
    *p = s;
    return true;
}

/* An integer constant (the forms a BufferSize or region bound takes). */
static bool integer(const u8 **p, const u8 *end, u64 *v)
{
    const u8 *s = *p;
    static const u8 width[] = { [OP_BYTE] = 1, [OP_WORD] = 2, [OP_DWORD] = 4, [OP_QWORD] = 8 };

    if (s >= end)
        return false;
    if (*s == OP_ZERO || *s == OP_ONE || *s == OP_ONES) {
        *v = *s == OP_ONES ? ~0ul : *s;
        *p = s + 1;
        return true;
    }
    if (*s < OP_BYTE || *s > OP_QWORD || *s == OP_STRING)
        return false;
    u32 n = width[*s];
    if ((u64)(end - s) < 1 + n)
        return false;
    *v = le(s + 1, n > 4 ? 4 : n) | (n > 4 ? (u64)le(s + 5, 4) << 32 : 0);
    *p = s + 1 + n;
    return true;
}

static bool seg_is(const u8 seg[4], const char *name)
{
    for (u32 i = 0; i < 4; i++) {
        if (seg[i] != (u8)name[i])
            return false;
    }
    return true;
}

static const char hexdigit[] = "0123456789ABCDEF";

static void eisa_decode(u32 id, char hid[9])
{
    u32 v = (id >> 24) | ((id >> 8) & 0xff00) | ((id << 8) & 0xff0000) | (id << 24);

    hid[0] = (char)('@' + ((v >> 26) & 0x1f));
    hid[1] = (char)('@' + ((v >> 21) & 0x1f));
    hid[2] = (char)('@' + ((v >> 16) & 0x1f));
    for (u32 i = 0; i < 4; i++)
        hid[3 + i] = hexdigit[(v >> (12 - 4 * i)) & 0xf];
    hid[7] = 0;
}

/* A resource template: the first fixed memory range and the first
 * interrupt.  False if a descriptor runs past the buffer. */
static bool resources(const u8 *p, const u8 *end, struct aml_device *d)
{
    while (p < end) {
        u8 tag = *p;
        const u8 *data;
        u32 len;
        if (tag & 0x80) {
            if (end - p < 3)
                return false;
            len = le(p + 1, 2);
            data = p + 3;
        } else {
            len = tag & 7;
            data = p + 1;
        }
        if ((u64)(end - data) < len)
            return false;
        if (tag == 0x86 && len >= 9 && !d->has_mem) { /* Memory32Fixed */
            d->mem_base = le(data + 1, 4);
            d->mem_len = le(data + 5, 4);
            d->has_mem = 1;
        } else if (tag == 0x89 && len >= 6 && data[1] >= 1 && !d->has_irq) { /* Interrupt */
            d->irq = le(data + 2, 4);
            d->irq_level = !(data[0] & 2);
            d->irq_low = !!(data[0] & 4);
            d->has_irq = 1;
        } else if (!(tag & 0x80) && ((tag >> 3) & 0xf) == 4 && len >= 2 && !d->has_irq) {
            u32 mask = le(data, 2); /* IRQ: a mask of ISA lines, edge high by default */
            for (u32 i = 0; i < 16; i++) {
                if (mask & (1u << i)) {
                    d->irq = i;
                    d->has_irq = 1;
                    d->irq_level = len >= 3 && !(data[2] & 1);
                    d->irq_low = len >= 3 && !!(data[2] & 8);
                    break;
                }
            }
        } else if (!(tag & 0x80) && ((tag >> 3) & 0xf) == 0xf) {
            return true; /* end tag */
        }
        p = data + len;
    }
    return true;
}

/* A DataRefObject of Name(); what a device's _HID or _CRS says goes in d. */
static bool data_object(const u8 **p, const u8 *end, const u8 seg[4], struct aml_device *d)
{
    const u8 *s = *p, *pkg_end;
    u64 v;

    if (s >= end)
        return false;
    switch (*s) {
    case OP_STRING: {
        const u8 *str = s + 1, *q = str;
        while (q < end && *q)
            q++;
        if (q >= end)
            return false;
        if (d && seg_is(seg, "_HID") && q - str <= 8) {
            for (const u8 *c = str; c < q; c++)
                d->hid[c - str] = (char)*c;
            d->hid[q - str] = 0;
        }
        *p = q + 1;
        return true;
    }
    case OP_BUFFER: {
        s++;
        if (!pkg_length(&s, end, &pkg_end) || !integer(&s, pkg_end, &v))
            return false;
        if (d && seg_is(seg, "_CRS") && !resources(s, pkg_end, d))
            return false;
        *p = pkg_end;
        return true;
    }
    case OP_PACKAGE:
    case OP_VAR_PACKAGE:
        s++;
        if (!pkg_length(&s, end, &pkg_end))
            return false;
        *p = pkg_end;
        return true;
    case OP_EXT:
        if (end - s < 2 || s[1] != EXT_REVISION)
            return false;
        *p = s + 2;
        return true;
    default:
        if (!integer(&s, end, &v))
            return false;
        if (d && seg_is(seg, "_HID") && v <= 0xffffffffu)
            eisa_decode((u32)v, d->hid);
        *p = s;
        return true;
    }
}

/* A TermList from p to end; d is the device whose body it is, or null.
 * False if the AML is malformed (the walk is abandoned); an opcode this
 * reader does not know ends the list quietly. */
static bool term_list(struct walk *w, const u8 *p, const u8 *end, u32 depth,
                      struct aml_device *d)
{
    u8 seg[4];

    if (depth > AML_MAX_DEPTH)
        return false;
    while (p < end) {
        const u8 *pkg_end;
        if (++w->steps > MAX_STEPS)
            return false;
        u8 op = *p++;
        u8 ext = op == OP_EXT && p < end ? *p++ : 0;
        if (op == OP_EXT && !ext)
            return false;
        switch (op == OP_EXT ? 0x100 | ext : op) {
        case OP_SCOPE:
        case 0x100 | EXT_DEVICE: {
            if (!pkg_length(&p, end, &pkg_end) || !name_string(&p, pkg_end, seg))
                return false;
            if (op == OP_SCOPE) {
                if (!term_list(w, p, pkg_end, depth + 1, NULL))
                    return false;
            } else {
                struct aml_device dev = { .hid = { 0 } };
                if (!term_list(w, p, pkg_end, depth + 1, &dev))
                    return false;
                if (dev.hid[0]) {
                    if (w->found < w->max)
                        w->out[w->found] = dev;
                    w->found++;
                }
            }
            p = pkg_end;
            break;
        }
        case OP_NAME:
            if (!name_string(&p, end, seg) || !data_object(&p, end, seg, d))
                return false;
            break;
        case OP_METHOD:
        case OP_BUFFER:
        case OP_PACKAGE:
        case OP_VAR_PACKAGE:
        case OP_IF:
        case OP_ELSE:
        case OP_WHILE:
        case 0x100 | EXT_FIELD:
        case 0x100 | EXT_INDEX_FIELD:
        case 0x100 | EXT_BANK_FIELD:
        case 0x100 | EXT_PROCESSOR:
        case 0x100 | EXT_POWER_RES:
        case 0x100 | EXT_THERMAL_ZONE:
            if (!pkg_length(&p, end, &pkg_end))
                return false;
            p = pkg_end;
            break;
        case 0x100 | EXT_OP_REGION: {
            u64 v;
            if (!name_string(&p, end, seg) || p >= end)
                return false;
            p++; /* region space */
            if (!integer(&p, end, &v) || !integer(&p, end, &v))
                return true; /* computed bounds: not followed further */
            break;
        }
        case 0x100 | EXT_MUTEX:
            if (!name_string(&p, end, seg) || p >= end)
                return false;
            p++;
            break;
        case 0x100 | EXT_EVENT:
            if (!name_string(&p, end, seg))
                return false;
            break;
        case OP_ALIAS:
            if (!name_string(&p, end, seg) || !name_string(&p, end, seg))
                return false;
            break;
        case OP_EXTERNAL:
            if (!name_string(&p, end, seg) || end - p < 2)
                return false;
            p += 2;
            break;
        default:
            return true;
        }
    }
    return true;
}

long aml_find_devices(const u8 *aml, u64 len, struct aml_device *out, u64 max)
{
    struct walk w = { .out = out, .max = max };

    if (!term_list(&w, aml, aml + len, 0, NULL))
        return -1;
    return (long)w.found;
}
