"""Guest-virtual to guest-physical translation by walking the guest's page tables.

The debugger reads and writes memory the way the vCPU would see it: through
the paging mode its control registers select (none, 32-bit, PAE, 4-level or
5-level long mode).  ``read`` reads guest-physical memory (8 bytes of a table
entry at a time); a missing table or a non-present entry gives None, never an
exception, because the addresses come from a person at a gdb prompt.
"""

from __future__ import annotations

from collections.abc import Callable

CR0_PG = 1 << 31
CR4_PSE = 1 << 4
CR4_PAE = 1 << 5
CR4_LA57 = 1 << 12
EFER_LMA = 1 << 10
PRESENT = 1
LARGE = 1 << 7
ADDR_MASK = 0x000F_FFFF_FFFF_F000

Reader = Callable[[int, int], bytes | None]


def _entry(read: Reader, addr: int, size: int) -> int | None:
    raw = read(addr, size)
    return None if raw is None else int.from_bytes(raw, "little")


def translate(read: Reader, vaddr: int, cr0: int, cr3: int, cr4: int, efer: int) -> int | None:
    """The guest-physical address of ``vaddr``, or None when it is not mapped."""
    if not cr0 & CR0_PG:
        return vaddr & 0xFFFF_FFFF if not efer & EFER_LMA else vaddr
    if efer & EFER_LMA:
        levels = 5 if cr4 & CR4_LA57 else 4
        table = cr3 & ADDR_MASK
        for level in range(levels, 0, -1):
            shift = 12 + 9 * (level - 1)
            entry = _entry(read, table + 8 * ((vaddr >> shift) & 0x1FF), 8)
            if entry is None or not entry & PRESENT:
                return None
            if level == 1 or (level in (2, 3) and entry & LARGE):
                base = entry & ADDR_MASK & ~((1 << shift) - 1)
                return base | (vaddr & ((1 << shift) - 1))
            table = entry & ADDR_MASK
        return None
    vaddr &= 0xFFFF_FFFF
    if cr4 & CR4_PAE:
        pdpte = _entry(read, (cr3 & 0xFFFF_FFE0) + 8 * (vaddr >> 30), 8)
        if pdpte is None or not pdpte & PRESENT:
            return None
        pde = _entry(read, (pdpte & ADDR_MASK) + 8 * ((vaddr >> 21) & 0x1FF), 8)
        if pde is None or not pde & PRESENT:
            return None
        if pde & LARGE:
            return (pde & ADDR_MASK & ~0x1F_FFFF) | (vaddr & 0x1F_FFFF)
        pte = _entry(read, (pde & ADDR_MASK) + 8 * ((vaddr >> 12) & 0x1FF), 8)
        if pte is None or not pte & PRESENT:
            return None
        return (pte & ADDR_MASK) | (vaddr & 0xFFF)
    pde = _entry(read, (cr3 & 0xFFFF_F000) + 4 * (vaddr >> 22), 4)
    if pde is None or not pde & PRESENT:
        return None
    if pde & LARGE and cr4 & CR4_PSE:
        return (pde & 0xFFC0_0000) | ((pde & 0x1FE000) << 19) | (vaddr & 0x3F_FFFF)
    pte = _entry(read, (pde & 0xFFFF_F000) + 4 * ((vaddr >> 12) & 0x3FF), 4)
    if pte is None or not pte & PRESENT:
        return None
    return (pte & 0xFFFF_F000) | (vaddr & 0xFFF)
