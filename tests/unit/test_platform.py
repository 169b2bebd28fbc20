"""The guest-physical memory map (vmm.platform)."""

from __future__ import annotations

import itertools
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vmm import platform
from vmm.errors import ConfigError
from vmm.platform import E820_ACPI, E820_RAM, E820_RESERVED, MemoryRegion

MiB = 1 << 20
GiB = 1 << 30


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("256M", 256 * MiB),
        ("256m", 256 * MiB),
        ("1G", GiB),
        ("1g", GiB),
        ("512MiB", 512 * MiB),
        ("512mib", 512 * MiB),
        ("2GB", 2 * GiB),
        ("1024k", 1024 << 10),
        ("1024KiB", 1024 << 10),
        ("1T", 1 << 40),
        ("33554432B", 32 * MiB),
        ("256", 256 * MiB),
        ("1.5G", 1536 * MiB),
        ("0.5g", 512 * MiB),
        ("0", 0),
        ("4096B", 4096),
        (" 64M ", 64 * MiB),
    ],
)
def test_parse_size_good(text: str, value: int) -> None:
    assert platform.parse_size(text) == value


@pytest.mark.parametrize(
    "text",
    ["", "lots", "M", "-1", "-256M", "1.5B", "0.3K", "1.", ".5G", "256X", "12 34", "1iB", "1e9",
     "0x100", "256MM", "9" * 5000],
)  # fmt: skip
def test_parse_size_bad(text: str) -> None:
    with pytest.raises(ConfigError) as err:
        platform.parse_size(text)
    msg = str(err.value)
    assert msg.startswith(f"bad memory size '{text}'")
    assert "K, M, G or T" in msg


@given(st.text(max_size=20))
def test_parse_size_never_crashes(text: str) -> None:
    try:
        assert platform.parse_size(text) >= 0
    except ConfigError:
        pass


HOST = 64 * GiB


def test_check_memory_size_accepts_sane_sizes() -> None:
    for size in (32 * MiB, 256 * MiB, 3 * GiB, 5 * GiB, HOST):
        platform.check_memory_size(size, HOST)


@pytest.mark.parametrize(
    ("size", "host", "needle"),
    [
        (16 * MiB, HOST, "guest memory 16 MiB is too small: at least 32 MiB"),
        (0, HOST, "too small"),
        (-4096, HOST, "too small"),
        (32 * MiB + 1, HOST, "multiple of 4 KiB"),
        (2 << 40, 4 << 40, "exceeds the maximum"),
        (100 << 40, 200 << 40, "memory"),
        (8 * GiB, 4 * GiB, "guest memory 8192 MiB exceeds this host's 4096 MiB"),
    ],
)
def test_check_memory_size_rejects(size: int, host: int, needle: str) -> None:
    with pytest.raises(ConfigError) as err:
        platform.check_memory_size(size, host)
    assert needle in str(err.value)
    assert "memory" in str(err.value)


def test_ram_slots() -> None:
    assert platform.ram_slots(256 * MiB) == [(0, 256 * MiB)]
    assert platform.ram_slots(3 * GiB) == [(0, 3 * GiB)]
    assert platform.ram_slots(4 * GiB) == [(0, 3 * GiB), (4 * GiB, GiB)]
    assert platform.ram_slots(8 * GiB) == [(0, 3 * GiB), (4 * GiB, 5 * GiB)]


def test_memory_map_small_guest() -> None:
    assert platform.memory_map(32 * MiB) == [
        MemoryRegion(0, 0x9FC00, E820_RAM),
        MemoryRegion(0x9FC00, 0xE0000 - 0x9FC00, E820_RESERVED),
        MemoryRegion(0xE0000, 0x20000, E820_ACPI),
        MemoryRegion(0x100000, 31 * MiB, E820_RAM),
        MemoryRegion(0xD0000000, 0x10000, E820_RESERVED),
        MemoryRegion(0xFEC00000, 0x1000, E820_RESERVED),
        MemoryRegion(0xFEE00000, 0x1000, E820_RESERVED),
    ]
    assert platform.usable_bytes(32 * MiB) == 31 * MiB + 0x9FC00


def test_memory_map_large_guest_moves_ram_above_4g() -> None:
    regions = platform.memory_map(6 * GiB)
    assert regions[-1] == MemoryRegion(4 * GiB, 3 * GiB, E820_RAM)
    assert MemoryRegion(0x100000, 3 * GiB - MiB, E820_RAM) in regions


def _overlaps(a: MemoryRegion, start: int, size: int) -> bool:
    return a.start < start + size and start < a.end


def check_map(size: int) -> None:
    regions = platform.memory_map(size)
    assert regions == sorted(regions, key=lambda r: r.start)
    for a, b in itertools.pairwise(regions):
        assert a.end <= b.start, (a, b)
    for r in regions:
        assert r.size > 0
        assert r.kind in (E820_RAM, E820_RESERVED, E820_ACPI)
    ram = [r for r in regions if r.kind == E820_RAM]
    assert sum(r.size for r in ram) == platform.usable_bytes(size)
    slots = platform.ram_slots(size)
    assert sum(s for _, s in slots) == size
    for r in ram:
        assert any(gpa <= r.start and r.end <= gpa + s for gpa, s in slots), r
        for start, length in (
            (platform.ACPI_BASE, platform.ACPI_SIZE),
            (platform.IOAPIC_ADDR, 0x1000),
            (platform.VIRTIO_MMIO_BASE, platform.VIRTIO_MMIO_SIZE),
            (platform.LAPIC_ADDR, 0x1000),
            (platform.MMIO_HOLE_START, platform.MMIO_HOLE_END - platform.MMIO_HOLE_START),
            (platform.LOW_RAM_END, platform.HIGH_RAM_START - platform.LOW_RAM_END),
        ):
            assert not _overlaps(r, start, length), (r, hex(start))
    # Everything the VMM writes before boot lies in RAM the guest is told about.
    for addr in (platform.START_INFO_ADDR, platform.CMDLINE_ADDR, platform.TRAMPOLINE_ADDR):
        assert any(r.start <= addr < r.end for r in ram)
    # The ACPI tables are backed by slot 0 although the map calls them ACPI.
    assert slots[0][0] == 0 and slots[0][1] >= platform.HIGH_RAM_START
    assert platform.usable_bytes(size) == size - (platform.HIGH_RAM_START - platform.LOW_RAM_END)


@pytest.mark.parametrize("size", [32 * MiB, 256 * MiB, 3 * GiB, 3 * GiB + 4096, 4 * GiB, 6 * GiB])
def test_memory_map_invariants(size: int) -> None:
    check_map(size)


@given(st.integers(platform.MIN_MEMORY >> 12, (64 * GiB) >> 12).map(lambda pages: pages << 12))
def test_memory_map_invariants_any_size(size: int) -> None:
    check_map(size)


def test_place_initrd_at_top_of_low_memory() -> None:
    addr = platform.place_initrd(256 * MiB, 5 * MiB + 123, 0x200000)
    assert addr % 4096 == 0
    assert addr + 5 * MiB + 123 <= 256 * MiB
    assert 256 * MiB - addr < 5 * MiB + 123 + 4096
    # Above 3 GiB the initrd still goes below the MMIO hole.
    big = platform.place_initrd(8 * GiB, 10 * MiB, 0x200000)
    assert big + 10 * MiB <= platform.MMIO_HOLE_START
    assert big == platform.MMIO_HOLE_START - 10 * MiB


@given(
    memory=st.integers(32, 8192).map(lambda m: m * MiB),
    length=st.integers(0, 64 * MiB),
    kernel_end=st.integers(platform.HIGH_RAM_START, 16 * MiB),
)
def test_place_initrd_property(memory: int, length: int, kernel_end: int) -> None:
    try:
        addr = platform.place_initrd(memory, length, kernel_end)
    except ConfigError as err:
        assert "does not fit" in str(err)
        assert (min(memory, platform.MMIO_HOLE_START) - length) < kernel_end + MiB + 8192
        return
    assert addr % 4096 == 0
    assert addr >= platform.page_align_up(kernel_end) + MiB
    assert addr + length <= min(memory, platform.MMIO_HOLE_START)


def test_place_initrd_does_not_fit() -> None:
    with pytest.raises(ConfigError) as err:
        platform.place_initrd(32 * MiB, 40 * MiB, 0x200000)
    assert "initrd of 40 MiB does not fit in guest memory 32 MiB" in str(err.value)
    with pytest.raises(ConfigError):
        platform.place_initrd(32 * MiB, 28 * MiB, 4 * MiB)  # collides with the kernel's slack


SIZE_PATTERN = re.compile(r"\s*(\d{1,24}(?:\.\d{1,9})?)\s*(?:([kmgt])(?:i?b)?|(b))?\s*", re.I)


@given(st.text(alphabet=" \t.0123456789kmgtKMGTiIbBx\u0131\u212a\u0660\u00b2", max_size=12))
def test_size_is_read_as_the_pattern_reads_it(text: str) -> None:
    """parse_size reads sizes without re (start-up time): as this pattern would."""
    m = SIZE_PATTERN.fullmatch(text)
    want = None
    if m is not None:
        number, unit, in_bytes = m.groups()
        whole, _, frac = number.partition(".")
        want = (whole, frac, "b" if in_bytes else (unit or "").lower())
    assert platform._size_parts(text) == want
