"""The PVH start_info hand-off (vmm.boot.pvh)."""

from __future__ import annotations

import struct
from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vmm import platform
from vmm.boot import pvh
from vmm.errors import ConfigError
from vmm.platform import MemoryRegion

MiB = 1 << 20


def guest_memory(chunks: list[tuple[int, bytes]]) -> Callable[[int, int], bytes]:
    mem = bytearray(0x10000)
    for addr, data in chunks:
        assert addr + len(data) <= len(mem)
        mem[addr : addr + len(data)] = data
    return lambda addr, length: bytes(mem[addr : addr + length])


def test_struct_sizes() -> None:
    assert pvh.START_INFO.size == 56
    assert pvh.MODLIST_ENTRY.size == 32
    assert pvh.MEMMAP_ENTRY.size == 24


def test_layout_of_a_typical_boot() -> None:
    memmap = platform.memory_map(256 * MiB)
    chunks = pvh.build_start_info(
        cmdline="keel.test=boot", rsdp_paddr=0xE0000, memmap=memmap, modules=[(0x8000000, 1234)]
    )
    (si_addr, si), (cl_addr, cl) = chunks
    assert si_addr == platform.START_INFO_ADDR and cl_addr == platform.CMDLINE_ADDR
    assert cl == b"keel.test=boot\0"
    fields = struct.unpack_from("<IIIIQQQQII", si)
    magic, version, flags, nr_modules, modlist, cmdline, rsdp, memmap_paddr, entries, res = fields
    assert (magic, version, flags, nr_modules) == (0x336EC578, 1, 0, 1)
    assert modlist == 0x1000 + 56 and modlist % 8 == 0
    assert (cmdline, rsdp) == (0x2000, 0xE0000)
    assert memmap_paddr == modlist + 32 and memmap_paddr % 8 == 0
    assert entries == len(memmap) and res == 0
    assert struct.unpack_from("<QQQQ", si, modlist - 0x1000) == (0x8000000, 1234, 0, 0)
    first = struct.unpack_from("<QQII", si, memmap_paddr - 0x1000)
    assert first == (0, platform.LOW_RAM_END, platform.E820_RAM, 0)
    assert len(si) == memmap_paddr - 0x1000 + 24 * len(memmap) <= 0x1000


def test_no_modules() -> None:
    chunks = pvh.build_start_info(
        cmdline="", rsdp_paddr=0xE0000, memmap=platform.memory_map(64 * MiB), modules=[]
    )
    info = pvh.parse_start_info(guest_memory(chunks), platform.START_INFO_ADDR)
    assert info.modules == [] and info.cmdline == ""
    assert struct.unpack_from("<Q", chunks[0][1], 16)[0] == 0  # modlist_paddr
    assert struct.unpack_from("<Q", chunks[0][1], 40)[0] == 0x1000 + 56  # memmap right after


regions = st.builds(
    MemoryRegion,
    st.integers(0, (1 << 64) - 1),
    st.integers(0, (1 << 64) - 1),
    st.sampled_from([platform.E820_RAM, platform.E820_RESERVED, platform.E820_ACPI]),
)
modules = st.tuples(st.integers(0, (1 << 64) - 1), st.integers(0, (1 << 64) - 1))


@given(
    cmdline=st.text(
        st.characters(exclude_characters="\0", exclude_categories=["Cs"]), max_size=300
    ),
    rsdp=st.integers(0, (1 << 64) - 1),
    memmap=st.lists(regions, max_size=40),
    mods=st.lists(modules, max_size=40),
)
def test_round_trip(
    cmdline: str, rsdp: int, memmap: list[MemoryRegion], mods: list[tuple[int, int]]
) -> None:
    chunks = pvh.build_start_info(cmdline=cmdline, rsdp_paddr=rsdp, memmap=memmap, modules=mods)
    assert chunks[0][0] + len(chunks[0][1]) <= platform.START_INFO_ADDR + 0x1000
    info = pvh.parse_start_info(guest_memory(chunks), platform.START_INFO_ADDR)
    assert info == pvh.StartInfo(cmdline, rsdp, memmap, mods)


def test_longest_command_line() -> None:
    text = "x" * (platform.CMDLINE_MAX - 1)
    chunks = pvh.build_start_info(cmdline=text, rsdp_paddr=0, memmap=[], modules=[])
    assert len(chunks[1][1]) == platform.CMDLINE_MAX
    assert pvh.parse_start_info(guest_memory(chunks), platform.START_INFO_ADDR).cmdline == text


@pytest.mark.parametrize(
    ("cmdline", "size"), [("x" * 4096, 4096), ("é" * 2048, 4096), ("y" * 10000, 10000)]
)
def test_command_line_too_long(cmdline: str, size: int) -> None:
    with pytest.raises(ConfigError) as err:
        pvh.build_start_info(cmdline=cmdline, rsdp_paddr=0, memmap=[], modules=[])
    assert str(err.value) == f"command line is {size} bytes; the limit is 4095"


def test_command_line_with_nul() -> None:
    with pytest.raises(ConfigError, match="NUL"):
        pvh.build_start_info(cmdline="a\0b", rsdp_paddr=0, memmap=[], modules=[])


def test_command_line_from_undecodable_argv() -> None:
    # sys.argv carries undecodable bytes as surrogate escapes; they pass through as bytes.
    chunks = pvh.build_start_info(cmdline="a\udcffb", rsdp_paddr=0, memmap=[], modules=[])
    assert chunks[1][1] == b"a\xffb\0"
    with pytest.raises(ConfigError, match="Unicode"):
        pvh.build_start_info(cmdline="\ud800", rsdp_paddr=0, memmap=[], modules=[])


def test_too_many_entries_for_the_page() -> None:
    memmap = [MemoryRegion(i << 12, 4096, 1) for i in range(200)]
    with pytest.raises(ConfigError, match="do not fit"):
        pvh.build_start_info(cmdline="", rsdp_paddr=0, memmap=memmap, modules=[])
    # The most that fit: (4096 - 56) / 24 = 168 memory map entries.
    pvh.build_start_info(cmdline="", rsdp_paddr=0, memmap=memmap[:168], modules=[])
    with pytest.raises(ConfigError):
        pvh.build_start_info(cmdline="", rsdp_paddr=0, memmap=memmap[:169], modules=[])


def test_parse_rejects_bad_magic() -> None:
    chunks = pvh.build_start_info(cmdline="", rsdp_paddr=0, memmap=[], modules=[])
    page = bytearray(chunks[0][1])
    page[0] ^= 0xFF
    with pytest.raises(ValueError, match="magic"):
        pvh.parse_start_info(guest_memory([(0x1000, bytes(page))]), 0x1000)
