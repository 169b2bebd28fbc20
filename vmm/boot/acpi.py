"""ACPI tables for a hardware-reduced x86 guest: RSDP, XSDT, FADT, DSDT and MADT.

Everything is built as one blob placed at ``platform.ACPI_BASE`` (inside the
E820 ACPI region below 1 MiB, where the legacy RSDP scan also looks):

    RSDP (ACPI 2.0+) -> XSDT -> FACP (FADT, HW_REDUCED_ACPI) -> DSDT (\\_SB.COM1, COM2,
                                                                    VR00..VR07)
                             -> APIC (MADT: one LAPIC per vCPU, IOAPIC, ISO, NMI)

The DSDT describes the virtio-mmio slots as QEMU microvm and cloud-hypervisor
do (``LNRO0005`` devices with a memory and an interrupt resource), beside the
``virtio_mmio.device=`` command-line entries, so a guest may read either.

``parse_acpi`` is Keel's own reader of the same tables, used by the tests to
check what the guest will see.
"""

from __future__ import annotations

import struct
from collections.abc import Callable

from vmm import platform
from vmm.records import field, record

OEM_ID = b"KEEL  "
OEM_TABLE_ID = b"KEELVMM "
OEM_REVISION = 1
CREATOR_ID = b"KEEL"
CREATOR_REVISION = 1
HYPERVISOR_VENDOR = b"KEEL\0\0\0\0"

MAX_CPUS = 254  # xAPIC IDs 0..253 for vCPUs, the IOAPIC takes the next one

RSDP_SIGNATURE = b"RSD PTR "
RSDP_V1_LENGTH = 20
RSDP_LENGTH = 36
SDT_HEADER = struct.Struct("<4sIBB6s8sI4sI")  # signature .. creator revision: 36 bytes
FADT_LENGTH = 276
FADT_REVISION = 6
FADT_MINOR_REVISION = 0
FADT_HW_REDUCED_ACPI = 1 << 20
IAPC_VGA_NOT_PRESENT = 1 << 2
IAPC_CMOS_RTC_NOT_PRESENT = 1 << 5
MADT_REVISION = 5
MADT_PCAT_COMPAT = 1
MADT_LOCAL_APIC = 0
MADT_IO_APIC = 1
MADT_INTERRUPT_OVERRIDE = 2
MADT_LOCAL_APIC_NMI = 4
LAPIC_ENABLED = 1
COM1_PORT = 0x3F8
COM1_IRQ = 4
COM2_PORT = 0x2F8
COM2_IRQ = 3
ALIGN = 16
MAX_TABLE_LENGTH = platform.ACPI_SIZE


@record
class AcpiTables:
    rsdp_addr: int
    blob: bytes  # to be written at platform.ACPI_BASE
    tables: dict[str, int] = field(default_factory=dict)  # signature -> guest address


@record
class ParsedAcpi:
    tables: dict[str, int]  # signature -> address, including "RSDP"
    lapic_addr: int
    madt_flags: int
    lapics: list[tuple[int, int, int]]  # (apic_id, processor uid, enabled)
    ioapic: tuple[int, int, int]  # (id, address, gsi base)
    overrides: list[tuple[int, int, int]]  # (source irq, gsi, flags)
    nmis: list[tuple[int, int, int]]  # (processor uid, flags, lint)
    fadt_flags: int
    dsdt_addr: int


def checksum(data: bytes | bytearray) -> int:
    """The byte that makes ``data`` (with that byte as 0) sum to 0 mod 256."""
    return (-sum(data)) & 0xFF


def sdt(signature: bytes, revision: int, body: bytes) -> bytes:
    """A system description table: the 36-byte header, ``body``, checksum filled in."""
    table = bytearray(
        SDT_HEADER.pack(
            signature,
            SDT_HEADER.size + len(body),
            revision,
            0,
            OEM_ID,
            OEM_TABLE_ID,
            OEM_REVISION,
            CREATOR_ID,
            CREATOR_REVISION,
        )
        + body
    )
    table[9] = checksum(table)
    return bytes(table)


# -- AML (ACPI Machine Language), just what the DSDT needs ---------------------
AML_ZERO = 0x00
AML_NAME_OP = 0x08
AML_DWORD_PREFIX = 0x0C
AML_BYTE_PREFIX = 0x0A
AML_STRING_PREFIX = 0x0D
AML_SCOPE_OP = 0x10
AML_BUFFER_OP = 0x11
AML_EXT_PREFIX = 0x5B
AML_DEVICE_OP = 0x82
AML_ROOT_CHAR = 0x5C


def aml_pkg_length(content: int) -> bytes:
    """PkgLength for ``content`` bytes following it (the encoding counts itself)."""
    if content + 1 < 0x40:
        return bytes([content + 1])
    for extra in (1, 2, 3):
        total = content + 1 + extra
        if total < 1 << (4 + 8 * extra):
            lead = (extra << 6) | (total & 0xF)
            return bytes([lead]) + (total >> 4).to_bytes(extra, "little")
    raise ValueError(f"AML package of {content} bytes is too long")


def aml_name_seg(name: str) -> bytes:
    seg = name.encode("ascii")
    if not 1 <= len(seg) <= 4 or not (seg[:1].isupper() or seg[:1] == b"_"):
        raise ValueError(f"bad AML name segment {name!r}")
    return seg.ljust(4, b"_")


def aml_name_string(path: str) -> bytes:
    """``\\_SB`` or ``COM1`` (single segment, optionally rooted)."""
    if path.startswith("\\"):
        return bytes([AML_ROOT_CHAR]) + aml_name_seg(path[1:])
    return aml_name_seg(path)


def aml_integer(value: int) -> bytes:
    if value == 0:
        return bytes([AML_ZERO])
    if value <= 0xFF:
        return bytes([AML_BYTE_PREFIX, value])
    return bytes([AML_DWORD_PREFIX]) + value.to_bytes(4, "little")


def aml_string(text: str) -> bytes:
    return bytes([AML_STRING_PREFIX]) + text.encode("ascii") + b"\0"


def aml_name(name: str, value: bytes) -> bytes:
    return bytes([AML_NAME_OP]) + aml_name_string(name) + value


def aml_scope(path: str, body: bytes) -> bytes:
    content = aml_name_string(path) + body
    return bytes([AML_SCOPE_OP]) + aml_pkg_length(len(content)) + content


def aml_device(name: str, body: bytes) -> bytes:
    content = aml_name_string(name) + body
    return bytes([AML_EXT_PREFIX, AML_DEVICE_OP]) + aml_pkg_length(len(content)) + content


def aml_buffer(data: bytes) -> bytes:
    content = _buffer_size(len(data)) + data
    return bytes([AML_BUFFER_OP]) + aml_pkg_length(len(content)) + content


def _buffer_size(n: int) -> bytes:
    # BufferSize is a TermArg; a ByteConst even for 0 keeps iasl's disassembly tidy.
    if n <= 0xFF:
        return bytes([AML_BYTE_PREFIX, n])
    return bytes([AML_DWORD_PREFIX]) + n.to_bytes(4, "little")


def eisa_id(text: str) -> int:
    """The 32-bit compressed EISA ID of e.g. ``"PNP0501"`` (as EISAID() in ASL)."""
    if len(text) != 7 or not text[:3].isalpha() or not text[:3].isupper():
        raise ValueError(f"bad EISA id {text!r}")
    letters = 0
    for ch in text[:3]:
        letters = (letters << 5) | (ord(ch) - 0x40)
    product = int(text[3:], 16)
    return int.from_bytes(((letters << 16) | product).to_bytes(4, "big"), "little")


def resource_io(minimum: int, maximum: int, alignment: int, length: int) -> bytes:
    """A small I/O port descriptor, 16-bit decode."""
    return struct.pack("<BBHHBB", 0x47, 0x01, minimum, maximum, alignment, length)


def resource_irq_noflags(irq: int) -> bytes:
    return struct.pack("<BH", 0x22, 1 << irq)


def resource_memory32_fixed(base: int, length: int, writable: bool = True) -> bytes:
    """Memory32Fixed: large item 0x86, 9 bytes of data."""
    return struct.pack("<BHBII", 0x86, 9, 1 if writable else 0, base, length)


EXT_IRQ_CONSUMER = 1 << 0
EXT_IRQ_EDGE = 1 << 1


def resource_interrupt(gsi: int, edge: bool = True) -> bytes:
    """Extended Interrupt: large item 0x89, a consumer, active high, exclusive, one GSI."""
    flags = EXT_IRQ_CONSUMER | (EXT_IRQ_EDGE if edge else 0)
    return struct.pack("<BHBBI", 0x89, 6, flags, 1, gsi)


RESOURCE_END_TAG = bytes([0x79, 0x00])  # checksum 0: "treat as correct"
VIRTIO_MMIO_HID = "LNRO0005"  # virtio-mmio, as Linux's virtio_mmio driver matches it


def _aml_uart(name: str, uid: int, port: int, irq: int) -> bytes:
    crs = resource_io(port, port, 0, 8) + resource_irq_noflags(irq)
    return aml_device(
        name,
        aml_name("_HID", aml_integer(eisa_id("PNP0501")))
        + aml_name("_UID", aml_integer(uid))
        + aml_name("_CRS", aml_buffer(crs + RESOURCE_END_TAG)),
    )


def _aml_virtio(uid: int, base: int, size: int, gsi: int) -> bytes:
    crs = resource_memory32_fixed(base, size) + resource_interrupt(gsi)
    return aml_device(
        f"VR{uid:02X}",
        aml_name("_HID", aml_string(VIRTIO_MMIO_HID))
        + aml_name("_UID", aml_integer(uid))
        + aml_name("_CRS", aml_buffer(crs + RESOURCE_END_TAG)),
    )


def build_dsdt(com2: bool = False, virtio: tuple[tuple[int, int, int], ...] = ()) -> bytes:
    """COM1, COM2 when the machine has one, and a ``LNRO0005`` device for each
    virtio-mmio slot ``(base, size, gsi)`` (Keel's VMM pulses their lines: edge)."""
    body = _aml_uart("COM1", 0, COM1_PORT, COM1_IRQ)
    if com2:
        body += _aml_uart("COM2", 1, COM2_PORT, COM2_IRQ)
    for uid, (base, size, gsi) in enumerate(virtio):
        body += _aml_virtio(uid, base, size, gsi)
    return sdt(b"DSDT", 2, aml_scope("\\_SB", body))


# -- the fixed tables -------------------------------------------------------------
def build_fadt(dsdt_addr: int) -> bytes:
    body = bytearray(FADT_LENGTH - SDT_HEADER.size)

    def put(offset: int, fmt: str, value: int | bytes) -> None:
        struct.pack_into(fmt, body, offset - SDT_HEADER.size, value)

    put(40, "<I", dsdt_addr)  # DSDT (32-bit)
    put(109, "<H", IAPC_VGA_NOT_PRESENT | IAPC_CMOS_RTC_NOT_PRESENT)
    put(112, "<I", FADT_HW_REDUCED_ACPI)
    put(131, "<B", FADT_MINOR_REVISION)
    put(140, "<Q", dsdt_addr)  # X_DSDT
    put(268, "8s", HYPERVISOR_VENDOR)
    return sdt(b"FACP", FADT_REVISION, bytes(body))


def build_madt(ncpus: int) -> bytes:
    body = bytearray(struct.pack("<II", platform.LAPIC_ADDR, MADT_PCAT_COMPAT))
    for i in range(ncpus):
        body += struct.pack("<BBBBI", MADT_LOCAL_APIC, 8, i, i, LAPIC_ENABLED)
    body += struct.pack("<BBBBII", MADT_IO_APIC, 12, ncpus, 0, platform.IOAPIC_ADDR, 0)
    body += struct.pack("<BBBBIH", MADT_INTERRUPT_OVERRIDE, 10, 0, 0, 2, 0)
    body += struct.pack("<BBBHB", MADT_LOCAL_APIC_NMI, 6, 0xFF, 0, 1)
    return sdt(b"APIC", MADT_REVISION, bytes(body))


def build_xsdt(entries: list[int]) -> bytes:
    return sdt(b"XSDT", 1, b"".join(struct.pack("<Q", a) for a in entries))


def build_rsdp(xsdt_addr: int) -> bytes:
    rsdp = bytearray(
        struct.pack(
            "<8sB6sBIIQB3s", RSDP_SIGNATURE, 0, OEM_ID, 2, 0, RSDP_LENGTH, xsdt_addr, 0, b""
        )
    )
    rsdp[8] = checksum(rsdp[:RSDP_V1_LENGTH])
    rsdp[32] = checksum(rsdp)
    return bytes(rsdp)


def _align(value: int) -> int:
    return (value + ALIGN - 1) & ~(ALIGN - 1)


def build_acpi(
    ncpus: int, com2: bool = False, virtio: tuple[tuple[int, int, int], ...] = ()
) -> AcpiTables:
    """All tables for ``ncpus`` vCPUs (and COM2 if ``com2``, and the virtio-mmio
    slots ``(base, size, gsi)`` in ``virtio``), laid out from ``platform.ACPI_BASE``."""
    if not 1 <= ncpus <= MAX_CPUS:
        raise ValueError(f"ACPI tables support 1 to {MAX_CPUS} CPUs, not {ncpus}")
    base = platform.ACPI_BASE
    rsdp_addr = base
    xsdt_addr = _align(rsdp_addr + RSDP_LENGTH)
    xsdt_len = SDT_HEADER.size + 2 * 8
    fadt_addr = _align(xsdt_addr + xsdt_len)
    dsdt = build_dsdt(com2, virtio)
    dsdt_addr = _align(fadt_addr + FADT_LENGTH)
    madt = build_madt(ncpus)
    madt_addr = _align(dsdt_addr + len(dsdt))
    fadt = build_fadt(dsdt_addr)
    xsdt = build_xsdt([fadt_addr, madt_addr])
    assert len(xsdt) == xsdt_len
    placed = {
        "RSDP": (rsdp_addr, build_rsdp(xsdt_addr)),
        "XSDT": (xsdt_addr, xsdt),
        "FACP": (fadt_addr, fadt),
        "DSDT": (dsdt_addr, dsdt),
        "APIC": (madt_addr, madt),
    }
    blob = bytearray(madt_addr + len(madt) - base)
    if len(blob) > platform.ACPI_SIZE:
        raise ValueError(f"ACPI tables of {len(blob)} bytes overflow the ACPI region")
    for addr, data in placed.values():
        blob[addr - base : addr - base + len(data)] = data
    return AcpiTables(rsdp_addr, bytes(blob), {sig: addr for sig, (addr, _) in placed.items()})


# -- reading them back ---------------------------------------------------------------
Reader = Callable[[int, int], bytes]


def _read(read: Reader, addr: int, length: int, what: str) -> bytes:
    data = read(addr, length)
    if len(data) != length:
        raise ValueError(f"{what} at {addr:#x}: short read of {length} bytes")
    return data


def read_table(read: Reader, addr: int, signature: bytes | None = None) -> bytes:
    """One SDT with its header, length and checksum checked."""
    header = _read(read, addr, SDT_HEADER.size, "ACPI table header")
    sig, length = header[:4], struct.unpack_from("<I", header, 4)[0]
    name = sig.decode("ascii", "replace")
    if signature is not None and sig != signature:
        raise ValueError(f"table at {addr:#x} is {name!r}, expected {signature.decode()!r}")
    if not SDT_HEADER.size <= length <= MAX_TABLE_LENGTH:
        raise ValueError(f"{name} at {addr:#x}: bad length {length}")
    table = _read(read, addr, length, name)
    if sum(table) & 0xFF:
        raise ValueError(f"{name} at {addr:#x}: bad checksum")
    return table


def parse_acpi(read: Reader, rsdp_addr: int) -> ParsedAcpi:
    """Walk RSDP -> XSDT -> FADT/DSDT/MADT, validating each; ``ValueError`` if wrong."""
    rsdp = _read(read, rsdp_addr, RSDP_LENGTH, "RSDP")
    if rsdp[:8] != RSDP_SIGNATURE:
        raise ValueError(f"no RSDP signature at {rsdp_addr:#x}")
    if sum(rsdp[:RSDP_V1_LENGTH]) & 0xFF:
        raise ValueError("RSDP: bad checksum")
    revision, _rsdt, length, xsdt_addr = struct.unpack_from("<BIIQ", rsdp, 15)
    if revision < 2 or length != RSDP_LENGTH:
        raise ValueError(f"RSDP: revision {revision} length {length} is not ACPI 2.0+")
    if sum(rsdp) & 0xFF:
        raise ValueError("RSDP: bad extended checksum")
    tables = {"RSDP": rsdp_addr, "XSDT": xsdt_addr}
    xsdt = read_table(read, xsdt_addr, b"XSDT")
    if (len(xsdt) - SDT_HEADER.size) % 8:
        raise ValueError(f"XSDT: length {len(xsdt)} is not a whole number of entries")
    bodies: dict[str, bytes] = {}
    for (entry,) in struct.iter_unpack("<Q", xsdt[SDT_HEADER.size :]):
        table = read_table(read, entry)
        sig = table[:4].decode("ascii", "replace")
        if sig in tables:
            raise ValueError(f"XSDT lists {sig!r} twice")
        tables[sig] = entry
        bodies[sig] = table
    for sig in ("FACP", "APIC"):
        if sig not in bodies:
            raise ValueError(f"XSDT has no {sig} table")

    fadt = bodies["FACP"]
    if len(fadt) < FADT_LENGTH:
        raise ValueError(f"FACP: length {len(fadt)} is shorter than a revision 6 FADT")
    dsdt32 = struct.unpack_from("<I", fadt, 40)[0]
    fadt_flags = struct.unpack_from("<I", fadt, 112)[0]
    dsdt_addr = struct.unpack_from("<Q", fadt, 140)[0] or dsdt32
    if dsdt32 and dsdt32 != dsdt_addr:
        raise ValueError(f"FACP: DSDT {dsdt32:#x} and X_DSDT {dsdt_addr:#x} differ")
    read_table(read, dsdt_addr, b"DSDT")
    tables["DSDT"] = dsdt_addr

    madt = bodies["APIC"]
    if len(madt) < SDT_HEADER.size + 8:
        raise ValueError("APIC: too short")
    lapic_addr, madt_flags = struct.unpack_from("<II", madt, SDT_HEADER.size)
    lapics: list[tuple[int, int, int]] = []
    ioapics: list[tuple[int, int, int]] = []
    overrides: list[tuple[int, int, int]] = []
    nmis: list[tuple[int, int, int]] = []
    off = SDT_HEADER.size + 8
    while off < len(madt):
        if off + 2 > len(madt):
            raise ValueError(f"APIC: truncated entry at offset {off}")
        kind, size = madt[off], madt[off + 1]
        if size < 2 or off + size > len(madt):
            raise ValueError(f"APIC: entry at offset {off} has bad length {size}")
        entry = madt[off : off + size]
        expected = {
            MADT_LOCAL_APIC: 8,
            MADT_IO_APIC: 12,
            MADT_INTERRUPT_OVERRIDE: 10,
            MADT_LOCAL_APIC_NMI: 6,
        }.get(kind)
        if expected is not None and size != expected:
            raise ValueError(f"APIC: type {kind} entry at offset {off} has length {size}")
        if kind == MADT_LOCAL_APIC:
            uid, apic_id, flags = struct.unpack_from("<BBI", entry, 2)
            lapics.append((apic_id, uid, flags & LAPIC_ENABLED))
        elif kind == MADT_IO_APIC:
            ioapic_id, _, address, gsi_base = struct.unpack_from("<BBII", entry, 2)
            ioapics.append((ioapic_id, address, gsi_base))
        elif kind == MADT_INTERRUPT_OVERRIDE:
            _bus, source, gsi, flags = struct.unpack_from("<BBIH", entry, 2)
            overrides.append((source, gsi, flags))
        elif kind == MADT_LOCAL_APIC_NMI:
            uid, flags, lint = struct.unpack_from("<BHB", entry, 2)
            nmis.append((uid, flags, lint))
        off += size
    if not lapics:
        raise ValueError("APIC: no processor local APIC entries")
    if len(ioapics) != 1:
        raise ValueError(f"APIC: expected one I/O APIC, found {len(ioapics)}")
    return ParsedAcpi(
        tables=tables,
        lapic_addr=lapic_addr,
        madt_flags=madt_flags,
        lapics=lapics,
        ioapic=ioapics[0],
        overrides=overrides,
        nmis=nmis,
        fadt_flags=fadt_flags,
        dsdt_addr=dsdt_addr,
    )
