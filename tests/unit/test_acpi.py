"""ACPI tables (vmm.boot.acpi): Keel's own parser, then ACPICA's iasl as a referee."""

from __future__ import annotations

import itertools
import re
import shutil
import struct
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from vmm import platform
from vmm.boot import acpi

NCPUS = [1, 2, 4, 64, 254]
SDT_SIGNATURES = ["XSDT", "FACP", "DSDT", "APIC"]


def guest(tables: acpi.AcpiTables) -> bytearray:
    mem = bytearray(platform.HIGH_RAM_START)
    mem[platform.ACPI_BASE : platform.ACPI_BASE + len(tables.blob)] = tables.blob
    return mem


def reader(mem: bytearray) -> Callable[[int, int], bytes]:
    return lambda addr, length: bytes(mem[addr : addr + length])


def table_bytes(tables: acpi.AcpiTables, sig: str) -> bytes:
    off = tables.tables[sig] - platform.ACPI_BASE
    length = (
        acpi.RSDP_LENGTH if sig == "RSDP" else struct.unpack_from("<I", tables.blob, off + 4)[0]
    )
    return tables.blob[off : off + length]


@pytest.mark.parametrize("ncpus", NCPUS)
def test_parse_back(ncpus: int) -> None:
    tables = acpi.build_acpi(ncpus)
    assert tables.rsdp_addr == platform.ACPI_BASE and tables.rsdp_addr % 16 == 0
    assert len(tables.blob) <= platform.ACPI_SIZE
    parsed = acpi.parse_acpi(reader(guest(tables)), tables.rsdp_addr)
    assert parsed.tables == tables.tables
    assert parsed.lapic_addr == platform.LAPIC_ADDR
    assert parsed.madt_flags == acpi.MADT_PCAT_COMPAT
    assert parsed.lapics == [(i, i, 1) for i in range(ncpus)]
    assert parsed.ioapic == (ncpus, platform.IOAPIC_ADDR, 0)
    assert parsed.overrides == [(0, 2, 0)]
    assert parsed.nmis == [(0xFF, 0, 1)]
    assert parsed.fadt_flags & acpi.FADT_HW_REDUCED_ACPI
    assert parsed.dsdt_addr == tables.tables["DSDT"]


@pytest.mark.parametrize("ncpus", NCPUS)
def test_every_table_is_well_formed(ncpus: int) -> None:
    tables = acpi.build_acpi(ncpus)
    rsdp = table_bytes(tables, "RSDP")
    assert rsdp[:8] == b"RSD PTR " and rsdp[9:15] == b"KEEL  " and rsdp[15] == 2
    assert sum(rsdp[:20]) % 256 == 0 and sum(rsdp) % 256 == 0
    assert struct.unpack_from("<IIQ", rsdp, 16) == (0, 36, tables.tables["XSDT"])
    spans = []
    for sig in SDT_SIGNATURES:
        table = table_bytes(tables, sig)
        addr = tables.tables[sig]
        assert table[:4] == sig.encode()
        assert table[10:16] == b"KEEL  " and table[16:24] == b"KEELVMM " and table[28:32] == b"KEEL"
        assert sum(table) % 256 == 0, sig
        assert addr % 8 == 0, sig
        spans.append((addr, addr + len(table)))
    spans.append((tables.rsdp_addr, tables.rsdp_addr + 36))
    spans.sort()
    for (_, end), (start, _) in itertools.pairwise(spans):
        assert end <= start
    xsdt = table_bytes(tables, "XSDT")
    assert list(struct.unpack_from("<2Q", xsdt, 36)) == [
        tables.tables["FACP"],
        tables.tables["APIC"],
    ]


def test_fadt_fields() -> None:
    tables = acpi.build_acpi(2)
    fadt = table_bytes(tables, "FACP")
    assert len(fadt) == 276 and fadt[8] == 6 and fadt[131] == 0
    dsdt = tables.tables["DSDT"]
    assert struct.unpack_from("<I", fadt, 40)[0] == dsdt
    assert struct.unpack_from("<Q", fadt, 140)[0] == dsdt
    assert struct.unpack_from("<I", fadt, 112)[0] & (1 << 20)
    assert fadt[268:276] == b"KEEL\0\0\0\0"


@pytest.mark.parametrize("ncpus", [0, -1, 255, 1000])
def test_bad_cpu_counts(ncpus: int) -> None:
    with pytest.raises(ValueError):
        acpi.build_acpi(ncpus)


@pytest.mark.parametrize("ncpus", [1, 4, 254])
def test_corrupting_any_byte_is_detected(ncpus: int) -> None:
    tables = acpi.build_acpi(ncpus)
    clean = guest(tables)
    step = 1 if ncpus < 64 else 7
    for sig in ["RSDP", *SDT_SIGNATURES]:
        addr = tables.tables[sig]
        for off in range(0, len(table_bytes(tables, sig)), step):
            mem = bytearray(clean)
            mem[addr + off] ^= 0x41
            with pytest.raises(ValueError):
                acpi.parse_acpi(reader(mem), tables.rsdp_addr)


def test_parse_rejects_garbage() -> None:
    mem = bytearray(platform.HIGH_RAM_START)
    with pytest.raises(ValueError, match="RSDP"):
        acpi.parse_acpi(reader(mem), platform.ACPI_BASE)
    with pytest.raises(ValueError, match="short read"):
        acpi.parse_acpi(reader(mem), len(mem) - 10)


def test_parse_rejects_a_consistent_but_wrong_madt() -> None:
    """A MADT entry with a bad length, checksum fixed up: caught by the structure checks."""
    tables = acpi.build_acpi(2)
    mem = guest(tables)
    madt = tables.tables["APIC"]
    mem[madt + 44 + 1] = 0xFF  # first entry's length runs past the table
    mem[madt + 9] = 0
    mem[madt + 9] = (-sum(mem[madt : madt + len(table_bytes(tables, "APIC"))])) & 0xFF
    with pytest.raises(ValueError, match="APIC: entry"):
        acpi.parse_acpi(reader(mem), tables.rsdp_addr)


# -- AML -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("content", "encoded"),
    [
        (0, b"\x01"),
        (62, b"\x3f"),
        (63, b"\x41\x04"),  # 65 = 0x41: low nibble 1, next byte 0x04
        (0x200, b"\x42\x20"),
        (0xFFD, b"\x4f\xff"),
        (0xFFE, b"\x81\x00\x01"),
        (0x12345, b"\x88\x34\x12"),
    ],
)
def test_pkg_length(content: int, encoded: bytes) -> None:
    assert acpi.aml_pkg_length(content) == encoded
    lead = encoded[0]
    nbytes = (lead >> 6) + 1
    total = lead & 63 if nbytes == 1 else lead & 15 | int.from_bytes(encoded[1:], "little") << 4
    assert len(encoded) == nbytes and total == content + nbytes


def test_eisa_id() -> None:
    assert acpi.eisa_id("PNP0501") == 0x0105D041
    assert acpi.eisa_id("PNP0A03") == 0x030AD041
    with pytest.raises(ValueError):
        acpi.eisa_id("pnp0501")


def test_dsdt_aml() -> None:
    dsdt = acpi.build_dsdt()
    body = dsdt[36:]
    assert body[0] == 0x10 and body[2:7] == b"\\_SB_"
    assert body[1] == len(body) - 1  # the scope's one-byte PkgLength covers the rest
    assert b"\x5b\x82" in body and b"COM1" in body
    assert b"\x08_HID\x0c" + struct.pack("<I", 0x0105D041) in body
    assert b"\x47\x01\xf8\x03\xf8\x03\x00\x08\x22\x10\x00\x79\x00" in body


def test_dsdt_with_com2() -> None:
    body = acpi.build_dsdt(com2=True)[36:]
    assert body[0] == 0x10 and b"COM1" in body and b"COM2" in body
    assert b"\x47\x01\xf8\x02\xf8\x02\x00\x08\x22\x08\x00\x79\x00" in body  # 0x2f8, IRQ 3
    tables = acpi.build_acpi(2, com2=True)
    assert b"COM2" in table_bytes(tables, "DSDT")
    assert b"COM2" not in table_bytes(acpi.build_acpi(2), "DSDT")


# -- ACPICA's iasl ----------------------------------------------------------------------
IASL = shutil.which("iasl")
needs_iasl = pytest.mark.skipif(IASL is None, reason="iasl (acpica-tools) is not installed")
CLEAN_OUTPUT_WORDS = ["Incorrect", "Invalid", "Warning", "Error", "Unknown", "****"]


def iasl(cwd: Path, *args: str) -> str:
    assert IASL is not None
    proc = subprocess.run(
        [IASL, *args], cwd=cwd, capture_output=True, text=True, timeout=60, check=False
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output
    return output


def squeeze(text: str) -> str:
    return re.sub(r"[ \t]+", " ", text)


def disassemble(tmp_path: Path, name: str, data: bytes) -> str:
    (tmp_path / f"{name}.dat").write_bytes(data)
    output = iasl(tmp_path, "-d", f"{name}.dat")
    dsl = (tmp_path / f"{name}.dsl").read_text()
    for word in CLEAN_OUTPUT_WORDS:
        assert word not in output, output
        assert word not in dsl, dsl
    return squeeze(dsl)


def recompiles_identically(tmp_path: Path, name: str, original: bytes) -> None:
    """iasl's data-table compiler turns the disassembly back into the same table (it
    writes its own creator ID, hence its own checksum)."""
    iasl(tmp_path, "-p", f"{name}-again", f"{name}.dsl")
    again = (tmp_path / f"{name}-again.aml").read_bytes()
    assert len(again) == len(original)
    differ = [i for i, (a, b) in enumerate(zip(again, original, strict=True)) if a != b]
    assert set(differ) <= {9, *range(28, 36)}, differ


@needs_iasl
@pytest.mark.parametrize("ncpus", [1, 4, 254])
def test_iasl_accepts_every_table(tmp_path: Path, ncpus: int) -> None:
    tables = acpi.build_acpi(ncpus)
    addr = tables.tables

    apic = disassemble(tmp_path, "apic", table_bytes(tables, "APIC"))
    assert "Local Apic Address : FEE00000" in apic
    assert "PC-AT Compatibility : 1" in apic
    assert apic.count("Subtable Type : 00 [Processor Local APIC]") == ncpus
    assert apic.count("Processor Enabled : 1") == ncpus
    assert f"Local Apic ID : {ncpus - 1:02X}" in apic
    assert "Subtable Type : 01 [I/O APIC]" in apic
    assert f"I/O Apic ID : {ncpus:02X}" in apic and "Address : FEC00000" in apic
    assert "Subtable Type : 02 [Interrupt Source Override]" in apic
    assert "Interrupt : 00000002" in apic
    assert "Subtable Type : 04 [Local APIC NMI]" in apic
    assert "Interrupt Input LINT : 01" in apic
    recompiles_identically(tmp_path, "apic", table_bytes(tables, "APIC"))

    facp = disassemble(tmp_path, "facp", table_bytes(tables, "FACP"))
    assert "Revision : 06" in facp and "FADT Minor Revision : 00" in facp
    assert "Hardware Reduced (V5) : 1" in facp
    assert f"DSDT Address : {addr['DSDT']:08X}" in facp
    assert f"DSDT Address : {addr['DSDT']:016X}" in facp
    assert "Hypervisor ID : 000000004C45454B" in facp  # "KEEL\0\0\0\0"
    recompiles_identically(tmp_path, "facp", table_bytes(tables, "FACP"))

    xsdt = disassemble(tmp_path, "xsdt", table_bytes(tables, "XSDT"))
    assert f"ACPI Table Address 0 : {addr['FACP']:016X}" in xsdt
    assert f"ACPI Table Address 1 : {addr['APIC']:016X}" in xsdt
    recompiles_identically(tmp_path, "xsdt", table_bytes(tables, "XSDT"))

    dsdt = disassemble(tmp_path, "dsdt", table_bytes(tables, "DSDT"))
    assert 'DefinitionBlock ("", "DSDT", 2, "KEEL ", "KEELVMM ", 0x00000001)' in dsdt
    assert "Scope (\\_SB)" in dsdt and "Device (COM1)" in dsdt
    assert 'Name (_HID, EisaId ("PNP0501")' in dsdt
    assert "Name (_UID, Zero)" in dsdt
    assert "IO (Decode16,\n 0x03F8, // Range Minimum\n 0x03F8, // Range Maximum" in dsdt
    assert "0x08, // Length" in dsdt
    assert "IRQNoFlags ()\n {4}" in dsdt
    # ... and compiles again without complaint.
    iasl(tmp_path, "-p", "dsdt-again", "dsdt.dsl")


@needs_iasl
def test_iasl_reads_com2(tmp_path: Path) -> None:
    dsdt = disassemble(tmp_path, "dsdt", table_bytes(acpi.build_acpi(1, com2=True), "DSDT"))
    assert "Device (COM1)" in dsdt and "Device (COM2)" in dsdt
    assert "Name (_UID, 0x01)" in dsdt
    assert "IO (Decode16,\n 0x02F8, // Range Minimum\n 0x02F8, // Range Maximum" in dsdt
    assert "IRQNoFlags ()\n {3}" in dsdt
    iasl(tmp_path, "-p", "dsdt-again", "dsdt.dsl")


@needs_iasl
def test_iasl_builds_the_same_rsdp(tmp_path: Path) -> None:
    """iasl cannot disassemble a lone RSDP, but compiles one from a data-table source,
    computing both checksums itself: it must come out byte for byte as Keel's."""
    tables = acpi.build_acpi(4)
    source = "\n".join(
        [
            '[0008] Signature : "RSD PTR "',
            "[0001] Checksum : 00",
            '[0006] Oem ID : "KEEL  "',
            "[0001] Revision : 02",
            "[0004] RSDT Address : 00000000",
            "[0004] Length : 00000024",
            f"[0008] XSDT Address : {tables.tables['XSDT']:016X}",
            "[0001] Extended Checksum : 00",
            "[0003] Reserved : 000000",
            "",
        ]
    )
    (tmp_path / "rsdp.asl").write_text(source)
    output = iasl(tmp_path, "rsdp.asl")
    assert "0 Errors, 0 Warnings" in output, output
    assert (tmp_path / "rsdp.aml").read_bytes() == table_bytes(tables, "RSDP")


SLOTS = tuple((0xD0000000 + i * 0x1000, 0x200, 16 + i) for i in range(8))


def test_dsdt_describes_virtio_slots() -> None:
    tables = acpi.build_acpi(2, virtio=SLOTS)
    body = table_bytes(tables, "DSDT")
    assert body.count(b"\x08_HID\x0dLNRO0005\x00") == 8
    assert struct.pack("<BHBII", 0x86, 9, 1, 0xD0003000, 0x200) in body
    assert struct.pack("<BHBBI", 0x89, 6, 3, 1, 19) in body
    assert b"VR07" in body and b"VR08" not in body
    parsed = acpi.parse_acpi(lambda a, n: tables.blob[a - acpi.platform.ACPI_BASE :][:n],
                             tables.rsdp_addr)  # fmt: skip
    assert parsed.dsdt_addr == tables.tables["DSDT"]


@needs_iasl
def test_iasl_reads_the_virtio_devices(tmp_path: Path) -> None:
    """The LNRO0005 devices as ACPICA reads them: what QEMU microvm and
    cloud-hypervisor describe, and what Linux's virtio_mmio driver matches."""
    tables = acpi.build_acpi(1, virtio=SLOTS)
    dsdt = disassemble(tmp_path, "dsdt", table_bytes(tables, "DSDT"))
    assert dsdt.count('Name (_HID, "LNRO0005")') == 8
    for i, (base, size, gsi) in enumerate(SLOTS):
        assert f"Device (VR{i:02X})" in dsdt
        assert f"Memory32Fixed (ReadWrite,\n 0x{base:08X}, // Address Base\n" \
               f" 0x{size:08X}, // Address Length" in dsdt  # fmt: skip
        assert "Interrupt (ResourceConsumer, Edge, ActiveHigh, Exclusive, ,, )\n" \
               f" {{\n 0x{gsi:08X},\n }}" in dsdt  # fmt: skip
    iasl(tmp_path, "-p", "dsdt-again", "dsdt.dsl")
