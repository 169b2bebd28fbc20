"""The guest-physical memory map: the single source of truth for where things go.

    [0, 0x9fc00)             RAM (start_info page, command line, AP trampoline, boot GDT)
    [0x9fc00, 0xe0000)       reserved (EBDA / legacy video / option ROMs)
    [0xe0000, 0x100000)      ACPI tables (RSDP, XSDT, FADT, DSDT, MADT)
    [1 MiB, min(mem, 3 GiB)) RAM: kernel, initrd at the top
    [3 GiB, 4 GiB)           MMIO hole: virtio-mmio slots and hotplug controller
                             (0xd0000000, 64 KiB), IOAPIC, LAPIC, KVM's TSS pages
    [4 GiB, ...)             the rest of RAM when the guest has more than 3 GiB

KVM backs the whole of [0, 1 MiB) with RAM in slot 0; the E820-style map given
to the guest is what marks parts of it reserved.
"""

from __future__ import annotations

from vmm.errors import ConfigError
from vmm.records import record

KiB = 1 << 10
MiB = 1 << 20
GiB = 1 << 30
TiB = 1 << 40
PAGE_SIZE = 4 * KiB

START_INFO_ADDR = 0x1000  # hvm_start_info, then the module list and the memory map
CMDLINE_ADDR = 0x2000
CMDLINE_MAX = 4096  # bytes including the terminating NUL
TRAMPOLINE_ADDR = 0x8000  # ordinary RAM; the kernel copies its AP trampoline there
LOW_RAM_END = 0x9FC00
ACPI_BASE = 0xE0000
ACPI_SIZE = 0x20000
HIGH_RAM_START = 0x100000
MMIO_HOLE_START = 0xC0000000
MMIO_HOLE_END = 1 << 32
VIRTIO_MMIO_BASE = 0xD0000000  # virtio-mmio slots, 4 KiB apart (vmm/devices/hotplug.py)
HOTPLUG_MMIO_BASE = VIRTIO_MMIO_BASE + 0xF000  # the hotplug controller (docs/hotplug.md)
IOMMU_MMIO_BASE = VIRTIO_MMIO_BASE + 0xE000  # the paravirtual IOMMU (docs/iommu.md)
VIRTIO_MMIO_SIZE = 0x10000  # slots and controller together
IOAPIC_ADDR = 0xFEC00000
LAPIC_ADDR = 0xFEE00000
KVM_TSS_ADDR = 0xFFFBD000  # three pages
KVM_IDENTITY_MAP_ADDR = 0xFFFBC000  # one page
MIN_MEMORY = 32 * MiB
MAX_MEMORY = 1 * TiB
INITRD_SLACK = 1 * MiB  # free space kept between the kernel's end and the initrd

# hvm_memmap_table_entry / E820 types
E820_RAM = 1
E820_RESERVED = 2
E820_ACPI = 3


@record(frozen=True)
class MemoryRegion:
    start: int
    size: int
    kind: int

    @property
    def end(self) -> int:
        return self.start + self.size


_SHIFTS = {"k": 10, "m": 20, "g": 30, "t": 40}


def _size_parts(text: str) -> tuple[str, str, str] | None:
    """(whole digits, fraction digits, unit) of ``text``, read as the pattern
    ``\\s*(\\d{1,24}(?:\\.\\d{1,9})?)\\s*(?:([kmgt])(?:i?b)?|(b))?\\s*`` would
    (ignoring case); the unit is "b" for bytes, "" for none.  Written out
    rather than with re: every `keel run` reads a size, and re (with enum)
    costs about 3 ms of its start-up (python -X importtime)."""
    t = text.strip()
    n = 0
    while n < len(t) and t[n].isdecimal():
        n += 1
    whole, rest, frac = t[:n], t[n:], ""
    if rest[:1] == ".":
        n = 1
        while n < len(rest) and rest[n].isdecimal():
            n += 1
        frac, rest = rest[1:n], rest[n:]
        if not frac:
            return None
    if not 1 <= len(whole) <= 24 or len(frac) > 9:
        return None
    rest = rest.lstrip()
    unit = rest[:1].lower()
    if unit in ("k", "m", "g", "t"):
        suffix = rest[1:]
        if suffix[:1] in ("i", "I", "\u0131"):  # ignoring case, as re does: also dotless i
            suffix = suffix[1:]
            if suffix[:1] not in ("b", "B"):
                return None
        if suffix[:1] in ("b", "B"):
            suffix = suffix[1:]
        return (whole, frac, unit) if not suffix else None
    if unit == "b":
        return (whole, frac, "b") if len(rest) == 1 else None
    return (whole, frac, "") if not rest else None


def parse_size(text: str) -> int:
    """``"256"`` (MiB, as QEMU and Firecracker read it), ``"256M"``, ``"1.5G"``,
    ``"512MiB"``, ``"1024k"``, ``"4096B"`` (bytes) -> bytes (0 is returned, and
    refused by ``check_memory_size`` with the minimum)."""
    parts = _size_parts(text)
    if parts is not None:
        whole, frac, unit = parts
        shift = 0 if unit == "b" else _SHIFTS[unit or "m"]
        scaled = (int(whole + frac) << shift) // 10 ** len(frac)
        if (int(whole + frac) << shift) % 10 ** len(frac) == 0:
            return int(scaled)
    raise ConfigError(
        f"bad memory size '{text}': expected MiB or a number with a K, M, G or T suffix "
        "(e.g. 256, 512M, 1.5G; a B suffix: bytes)"
    )


def _mib(size: int) -> str:
    if size % MiB == 0:
        return f"{size // MiB} MiB"
    return f"{size / MiB:.2f} MiB"


def check_memory_size(size: int, host_total: int) -> None:
    """Reject a guest memory size the VMM cannot or should not give."""
    if size < MIN_MEMORY:
        raise ConfigError(f"guest memory {_mib(size)} is too small: at least {_mib(MIN_MEMORY)}")
    if size % PAGE_SIZE:
        raise ConfigError(f"guest memory of {size} bytes is not a multiple of 4 KiB")
    if size > MAX_MEMORY:
        raise ConfigError(f"guest memory {_mib(size)} exceeds the maximum of {_mib(MAX_MEMORY)}")
    if size > host_total:
        raise ConfigError(f"guest memory {_mib(size)} exceeds this host's {_mib(host_total)}")


def ram_slots(size: int) -> list[tuple[int, int]]:
    """KVM memory slots ``(gpa, size)``; RAM above 3 GiB moves past the MMIO hole."""
    slots = [(0, min(size, MMIO_HOLE_START))]
    if size > MMIO_HOLE_START:
        slots.append((MMIO_HOLE_END, size - MMIO_HOLE_START))
    return slots


def memory_map(size: int) -> list[MemoryRegion]:
    """The E820-style map handed to the guest: sorted and non-overlapping."""
    if size < HIGH_RAM_START:
        raise ConfigError(f"guest memory {_mib(size)} is too small for the memory map")
    low_top = min(size, MMIO_HOLE_START)
    regions = [
        MemoryRegion(0, LOW_RAM_END, E820_RAM),
        MemoryRegion(LOW_RAM_END, ACPI_BASE - LOW_RAM_END, E820_RESERVED),
        MemoryRegion(ACPI_BASE, ACPI_SIZE, E820_ACPI),
    ]
    if low_top > HIGH_RAM_START:
        regions.append(MemoryRegion(HIGH_RAM_START, low_top - HIGH_RAM_START, E820_RAM))
    regions.append(MemoryRegion(VIRTIO_MMIO_BASE, VIRTIO_MMIO_SIZE, E820_RESERVED))
    regions.append(MemoryRegion(IOAPIC_ADDR, PAGE_SIZE, E820_RESERVED))
    regions.append(MemoryRegion(LAPIC_ADDR, PAGE_SIZE, E820_RESERVED))
    if size > MMIO_HOLE_START:
        regions.append(MemoryRegion(MMIO_HOLE_END, size - MMIO_HOLE_START, E820_RAM))
    return regions


def usable_bytes(size: int) -> int:
    """How much of the guest's memory the map offers as RAM."""
    return sum(r.size for r in memory_map(size) if r.kind == E820_RAM)


def page_align_up(value: int) -> int:
    return (value + PAGE_SIZE - 1) & ~(PAGE_SIZE - 1)


def place_initrd(memory: int, length: int, kernel_end: int) -> int:
    """The page-aligned address for an initrd: as high as possible below 3 GiB/top of RAM."""
    if length < 0:
        raise ConfigError(f"bad initrd length {length}")
    top = min(memory, MMIO_HOLE_START)
    floor = page_align_up(kernel_end) + INITRD_SLACK
    addr = (top - length) & ~(PAGE_SIZE - 1)
    if addr < floor:
        raise ConfigError(
            f"initrd of {_mib(length)} does not fit in guest memory {_mib(memory)} "
            f"(it must lie between {floor:#x} and {top:#x}, above the kernel)"
        )
    return addr
