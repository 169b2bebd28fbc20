/* A small, bounded reader of ACPI Machine Language: the Device objects of a
 * DSDT with their _HID and the memory and interrupt of their _CRS.  It
 * evaluates nothing; it walks the declarations (Scope, Device, Name and the
 * objects it can step over by their length) and stops a list at an opcode
 * it does not know.  The table is firmware input: every length is checked
 * against the bytes there are, nesting and work are bounded, and a table
 * whose structure is broken is rejected as a whole. */
#ifndef KEEL_AML_H
#define KEEL_AML_H

#include <keel/types.h>

#define AML_MAX_DEPTH 16

struct aml_device {
    char hid[9];     /* _HID as a string ("LNRO0005"), an EISA id decoded ("PNP0501") */
    u8 has_mem;      /* a Memory32Fixed resource */
    u8 has_irq;      /* an Interrupt or IRQ resource */
    u8 irq_level;    /* level triggered (else edge) */
    u8 irq_low;      /* active low (else high) */
    u32 irq;         /* the first interrupt: a GSI */
    u64 mem_base, mem_len;
};

/* Walks the AML of a definition block (the table after its 36-byte header)
 * and stores up to max devices that have a _HID; returns how many it found
 * (it may be more than max: the rest are counted, not stored), or -1 if
 * the AML is malformed. */
long aml_find_devices(const u8 *aml, u64 len, struct aml_device *out, u64 max);

#endif
