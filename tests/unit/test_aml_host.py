"""The kernel's AML reader (kernel/core/aml.c) in the host build of the core.

It reads Keel's own DSDT (vmm.boot.acpi) and one shaped as QEMU microvm's
(compiled here by iasl from ASL: a GED with an OperationRegion, a Field and a
Method, a power button, virtio-mmio devices, an _S5 package); malformed AML
is rejected, not trusted; random damage never makes it read outside the table
(the library is built with UBSan, every call checked).
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vmm.boot import acpi

ROOT = Path(__file__).resolve().parents[2]
LIB = ROOT / "build" / "host" / "libkeelcore.so"

CDEF = """
struct aml_device {
    char hid[9];
    uint8_t has_mem, has_irq, irq_level, irq_low;
    uint32_t irq;
    uint64_t mem_base, mem_len;
};
long aml_find_devices(const uint8_t *aml, uint64_t len, struct aml_device *out, uint64_t max);
"""

SLOTS = tuple((0xD0000000 + i * 0x1000, 0x200, 16 + i) for i in range(8))

QEMU_LIKE_ASL = """
DefinitionBlock ("", "DSDT", 2, "BOCHS ", "BXPC    ", 0x00000001)
{
    Scope (_SB)
    {
        Device (COM1)
        {
            Name (_HID, EisaId ("PNP0501"))
            Name (_UID, One)
            Name (_STA, 0x0F)
            Name (_CRS, ResourceTemplate ()
            {
                IO (Decode16, 0x03F8, 0x03F8, 0x00, 0x08, )
                IRQNoFlags () {4}
            })
        }
        Device (GED)
        {
            Name (_HID, "ACPI0013")
            Name (_UID, "GED")
            Name (_CRS, ResourceTemplate ()
            {
                Interrupt (ResourceConsumer, Edge, ActiveHigh, Exclusive, ,, ) {9}
            })
            OperationRegion (EREG, SystemMemory, 0xFEA00000, 0x04)
            Field (EREG, DWordAcc, NoLock, WriteAsZeros) { ESEL, 32 }
            Method (_EVT, 1, Serialized)
            {
                Local0 = ESEL
                If (((Local0 & 0x02) == 0x02)) { Notify (PWRB, 0x80) }
            }
        }
        Device (PWRB)
        {
            Name (_HID, "PNP0C0C")
            Name (_UID, Zero)
        }
        Device (VR22)
        {
            Name (_HID, "LNRO0005")
            Name (_UID, 0x16)
            Name (_CCA, One)
            Name (_CRS, ResourceTemplate ()
            {
                Memory32Fixed (ReadWrite, 0xFEB02C00, 0x00000200, )
                Interrupt (ResourceConsumer, Level, ActiveHigh, Exclusive, ,, ) {46}
            })
        }
        Device (VR23)
        {
            Name (_HID, "LNRO0005")
            Name (_UID, 0x17)
            Name (_CCA, One)
            Name (_CRS, ResourceTemplate ()
            {
                Memory32Fixed (ReadWrite, 0xFEB02E00, 0x00000200, )
                Interrupt (ResourceConsumer, Level, ActiveHigh, Exclusive, ,, ) {47}
            })
        }
    }
    Scope (\\)
    {
        Name (_S5, Package (0x04) { 0x05, Zero, Zero, Zero })
    }
}
"""


class Aml:
    def __init__(self, ffi: Any, lib: Any) -> None:
        self.ffi, self.lib = ffi, lib

    def devices(self, table: bytes, body: bool = False, max_out: int = 16) -> list[dict[str, Any]]:
        """The devices of a whole table (or with ``body`` of bare AML); [] → none;
        raises ValueError when the reader rejects it."""
        aml = table if body else table[36:]
        buf = self.ffi.new("uint8_t[]", aml or b"\0")
        out = self.ffi.new("struct aml_device[]", max_out)
        n = self.lib.aml_find_devices(buf, len(aml), out, max_out)
        if n < 0:
            raise ValueError("rejected")
        return [
            {
                "hid": self.ffi.string(out[i].hid).decode(),
                "mem": (out[i].mem_base, out[i].mem_len) if out[i].has_mem else None,
                "irq": (out[i].irq, bool(out[i].irq_level), bool(out[i].irq_low))
                if out[i].has_irq else None,
            }
            for i in range(min(n, max_out))
        ]  # fmt: skip


@pytest.fixture(scope="module")
def aml() -> Iterator[Aml]:
    if not LIB.exists():
        pytest.fail(f"{LIB} is missing: run 'make host-lib'")
    import cffi

    ffi = cffi.FFI()
    ffi.cdef(CDEF)
    yield Aml(ffi, ffi.dlopen(str(LIB)))


def keel_dsdt() -> bytes:
    return acpi.build_dsdt(com2=True, virtio=SLOTS)


def test_reads_keels_dsdt(aml: Aml) -> None:
    found = aml.devices(keel_dsdt())
    assert [d["hid"] for d in found] == ["PNP0501", "PNP0501"] + ["LNRO0005"] * 8
    assert found[0]["irq"] == (4, False, False) and found[1]["irq"] == (3, False, False)
    for d, (base, size, gsi) in zip(found[2:], SLOTS, strict=True):
        assert d["mem"] == (base, size) and d["irq"] == (gsi, False, False)


@pytest.fixture(scope="module")
def qemu_like(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    iasl = shutil.which("iasl")
    if iasl is None:
        pytest.skip("iasl (acpica-tools) is not installed")
    d = tmp_path_factory.mktemp("asl")
    (d / "dsdt.asl").write_text(QEMU_LIKE_ASL)
    proc = subprocess.run([iasl, "-p", "dsdt", "dsdt.asl"], cwd=d, capture_output=True,
                          text=True, timeout=60)  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return (d / "dsdt.aml").read_bytes()


def test_reads_a_dsdt_shaped_as_qemu_microvms(aml: Aml, qemu_like: bytes) -> None:
    found = aml.devices(qemu_like)
    hids = [d["hid"] for d in found]
    assert hids == ["PNP0501", "ACPI0013", "PNP0C0C", "LNRO0005", "LNRO0005"]
    assert found[3]["mem"] == (0xFEB02C00, 0x200) and found[3]["irq"] == (46, True, False)
    assert found[4]["mem"] == (0xFEB02E00, 0x200) and found[4]["irq"] == (47, True, False)
    assert found[1]["irq"] == (9, False, False) and found[2]["irq"] is None


def test_more_devices_than_room_are_counted(aml: Aml) -> None:
    table = keel_dsdt()
    buf = aml.ffi.new("uint8_t[]", table[36:])
    out = aml.ffi.new("struct aml_device[]", 3)
    assert aml.lib.aml_find_devices(buf, len(table) - 36, out, 3) == 10


def pkg(body: bytes) -> bytes:
    return acpi.aml_pkg_length(len(body)) + body


@pytest.mark.parametrize(
    "body",
    [
        b"\x10\x7f\\_SB_",  # a scope longer than the table
        b"\x10" + pkg(b"\\_s!_"),  # a bad name segment
        b"\x5b\x82" + pkg(b"DEV0\x08_HID\x0d" + b"LNRO0005"),  # an unterminated string
        b"\x5b",  # an extended opcode cut short
        b"\x5b\x82" + pkg(b"DEV0\x08_CRS\x11" + pkg(b"\x0a\x0c\x86\x09\x00\x01\x00")),
        b"\x08\x2f\x05ABCD",  # a multi-segment name past the end
        b"\x10" + pkg(b"\\_SB_\x10\x05\x2e"),  # a nested scope cut inside its name
    ],
)
def test_malformed_aml_is_rejected(aml: Aml, body: bytes) -> None:
    with pytest.raises(ValueError):
        aml.devices(body, body=True)


def test_nesting_is_bounded(aml: Aml) -> None:
    body = b""
    for _ in range(40):
        body = b"\x10" + pkg(b"ABCD" + body)
    with pytest.raises(ValueError):
        aml.devices(body, body=True)


def test_unknown_opcodes_end_a_list_quietly(aml: Aml) -> None:
    """Code the reader cannot step over (a Store at the top level here) stops it
    where it is: what came before is kept."""
    device = acpi.aml_device("DEV0", acpi.aml_name("_HID", acpi.aml_string("LNRO0005")))
    body = device + b"\x70\x01\x60" + device
    assert [d["hid"] for d in aml.devices(body, body=True)] == ["LNRO0005"]


def test_every_truncation_is_handled(aml: Aml, qemu_like: bytes) -> None:
    body = qemu_like[36:]
    for n in range(len(body)):
        try:
            aml.devices(body[:n], body=True)
        except ValueError:
            pass


@given(st.data())
@settings(max_examples=400, deadline=None)
def test_random_damage_never_reads_outside(aml: Aml, data: st.DataObject) -> None:
    body = bytearray(keel_dsdt()[36:])
    for _ in range(data.draw(st.integers(1, 6))):
        where = data.draw(st.integers(0, len(body) - 1))
        body[where] = data.draw(st.sampled_from([0, 0xFF, 0x5B, 0x82, 0x10, 0x2F, 0x40, 0xC0]) |
                                st.integers(0, 255))  # fmt: skip
    try:
        found = aml.devices(bytes(body), body=True)
    except ValueError:
        return
    assert len(found) <= 16
    for d in found:
        assert len(d["hid"]) <= 8

