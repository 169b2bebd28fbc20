"""The Xen PVH boot hand-off: ``struct hvm_start_info`` and what it points to,
and the entry state (32-bit protected mode on a flat boot GDT) vCPU 0 starts in.

Layout (xen/include/public/arch-x86/hvm/start_info.h, version 1), all in the
one page at ``platform.START_INFO_ADDR``: the start_info itself, then the module
list, then the memory map, each 8-byte aligned.  The command line, NUL
terminated, is at ``platform.CMDLINE_ADDR``.
"""

from __future__ import annotations

import struct
from collections.abc import Callable

from vmm import platform
from vmm.errors import ConfigError
from vmm.platform import MemoryRegion
from vmm.records import field, record

TYPE_CHECKING = False  # typing costs ~4 ms of each start (vmm/records.py)
if TYPE_CHECKING:
    from typing import Any

if TYPE_CHECKING:
    from vmm.kvm.vcpu import Vcpu

HVM_START_MAGIC = 0x336EC578
HVM_START_VERSION = 1

# magic, version, flags, nr_modules, modlist_paddr, cmdline_paddr, rsdp_paddr,
# memmap_paddr, memmap_entries, reserved
START_INFO = struct.Struct("<IIIIQQQQII")
MODLIST_ENTRY = struct.Struct("<QQQQ")  # paddr, size, cmdline_paddr, reserved
MEMMAP_ENTRY = struct.Struct("<QQII")  # addr, size, type, reserved
START_INFO_PAGE = 0x1000

assert START_INFO.size == 56 and MODLIST_ENTRY.size == 32 and MEMMAP_ENTRY.size == 24


@record
class StartInfo:
    cmdline: str
    rsdp_paddr: int
    memmap: list[MemoryRegion] = field(default_factory=list)
    modules: list[tuple[int, int]] = field(default_factory=list)


def _align8(value: int) -> int:
    return (value + 7) & ~7


def encode_cmdline(cmdline: str) -> bytes:
    """The NUL-terminated UTF-8 command line, or ``ConfigError``."""
    if "\0" in cmdline:
        raise ConfigError("command line contains a NUL character")
    try:
        data = cmdline.encode("utf-8", errors="surrogateescape")
    except UnicodeEncodeError:
        raise ConfigError("command line is not valid Unicode text") from None
    if len(data) + 1 > platform.CMDLINE_MAX:
        raise ConfigError(
            f"command line is {len(data)} bytes; the limit is {platform.CMDLINE_MAX - 1}"
        )
    return data + b"\0"


def build_start_info(
    *,
    cmdline: str,
    rsdp_paddr: int,
    memmap: list[MemoryRegion],
    modules: list[tuple[int, int]],
) -> list[tuple[int, bytes]]:
    """The ``(guest address, bytes)`` chunks to write into guest memory before boot."""
    cmdline_bytes = encode_cmdline(cmdline)
    base = platform.START_INFO_ADDR
    modlist_addr = _align8(base + START_INFO.size)
    memmap_addr = _align8(modlist_addr + MODLIST_ENTRY.size * len(modules))
    end = memmap_addr + MEMMAP_ENTRY.size * len(memmap)
    if end > base + START_INFO_PAGE:
        raise ConfigError(
            f"{len(modules)} modules and {len(memmap)} memory map entries do not fit in "
            f"the {START_INFO_PAGE}-byte start_info page"
        )
    page = bytearray(end - base)
    START_INFO.pack_into(
        page,
        0,
        HVM_START_MAGIC,
        HVM_START_VERSION,
        0,
        len(modules),
        modlist_addr if modules else 0,
        platform.CMDLINE_ADDR,
        rsdp_paddr,
        memmap_addr if memmap else 0,
        len(memmap),
        0,
    )
    for i, (paddr, size) in enumerate(modules):
        MODLIST_ENTRY.pack_into(
            page, modlist_addr - base + i * MODLIST_ENTRY.size, paddr, size, 0, 0
        )
    for i, region in enumerate(memmap):
        off = memmap_addr - base + i * MEMMAP_ENTRY.size
        MEMMAP_ENTRY.pack_into(page, off, region.start, region.size, region.kind, 0)
    return [(base, bytes(page)), (platform.CMDLINE_ADDR, cmdline_bytes)]


def parse_start_info(read: Callable[[int, int], bytes], addr: int) -> StartInfo:
    """Decode a start_info from guest memory (``read(gpa, length)``); ``ValueError`` if bad."""
    raw = _read(read, addr, START_INFO.size)
    (
        magic,
        version,
        _flags,
        nr_modules,
        modlist_paddr,
        cmdline_paddr,
        rsdp_paddr,
        memmap_paddr,
        memmap_entries,
        _reserved,
    ) = START_INFO.unpack(raw)
    if magic != HVM_START_MAGIC:
        raise ValueError(f"start_info at {addr:#x}: bad magic {magic:#x}")
    if version < 1:
        raise ValueError(f"start_info at {addr:#x}: version {version} has no memory map")
    cmdline = ""
    if cmdline_paddr:
        text = _read(read, cmdline_paddr, platform.CMDLINE_MAX)
        nul = text.find(b"\0")
        if nul < 0:
            raise ValueError(f"command line at {cmdline_paddr:#x} is not NUL-terminated")
        cmdline = text[:nul].decode("utf-8", errors="surrogateescape")
    modules: list[tuple[int, int]] = []
    if nr_modules:
        table = _read(read, modlist_paddr, nr_modules * MODLIST_ENTRY.size)
        for paddr, size, _, _ in MODLIST_ENTRY.iter_unpack(table):
            modules.append((paddr, size))
    memmap: list[MemoryRegion] = []
    if memmap_entries:
        table = _read(read, memmap_paddr, memmap_entries * MEMMAP_ENTRY.size)
        for start, size, kind, _ in MEMMAP_ENTRY.iter_unpack(table):
            memmap.append(MemoryRegion(start, size, kind))
    return StartInfo(cmdline, rsdp_paddr, memmap, modules)


def _read(read: Callable[[int, int], bytes], addr: int, length: int) -> bytes:
    data = read(addr, length)
    if len(data) != length:
        raise ValueError(f"short read of {length} bytes at {addr:#x}")
    return data


BOOT_GDT_ADDR = 0x500  # a flat GDT for the PVH entry state (the kernel loads its own)

# A flat GDT: null, 32-bit code (0x08), data (0x10), and a 32-bit TSS (0x18)
# at base 0 limit 0x67 - the descriptors the PVH entry state below names.
BOOT_GDT = b"".join(
    v.to_bytes(8, "little") for v in (0, 0x00CF9B000000FFFF, 0x00CF93000000FFFF, 0x00008B0000000067)
)


def set_entry_state(vcpu: Vcpu, entry: int) -> None:
    """The Xen PVH entry state: 32-bit protected mode, paging off, EBX = start_info.
    The boot GDT must already be in guest memory at ``BOOT_GDT_ADDR``."""
    sregs = vcpu.get_sregs()

    def flat(seg: Any, selector: int, type_: int) -> None:
        seg.base, seg.limit, seg.selector, seg.type = 0, 0xFFFFFFFF, selector, type_
        seg.present, seg.dpl, seg.db, seg.s, seg.l, seg.g, seg.avl, seg.unusable = (
            1, 0, 1, 1, 0, 1, 0, 0,
        )  # fmt: skip

    flat(sregs.cs, 0x08, 0xB)
    for seg in (sregs.ds, sregs.es, sregs.fs, sregs.gs, sregs.ss):
        flat(seg, 0x10, 0x3)
    tr = sregs.tr
    tr.base, tr.limit, tr.selector, tr.type = 0, 0x67, 0x18, 0xB
    tr.present, tr.dpl, tr.db, tr.s, tr.l, tr.g, tr.unusable = 1, 0, 0, 0, 0, 0, 0
    sregs.gdt.base, sregs.gdt.limit = BOOT_GDT_ADDR, len(BOOT_GDT) - 1
    sregs.cr0 = 0x11  # PE | ET
    sregs.cr3 = sregs.cr4 = sregs.efer = 0
    vcpu.set_sregs(sregs)
    vcpu.set_regs(
        rip=entry, rbx=platform.START_INFO_ADDR, rflags=0x2,
        rsp=0, rax=0, rcx=0, rdx=0, rsi=0, rdi=0,
    )  # fmt: skip
