"""The gdb stub's page walk and its target description, without KVM."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from vmm.gdb import regs
from vmm.gdb.paging import CR0_PG, CR4_LA57, CR4_PAE, CR4_PSE, EFER_LMA, translate

P, W, LARGE = 1, 2, 0x80


class Ram:
    """Sparse guest-physical memory of 8-byte (or 4-byte) table entries."""

    def __init__(self) -> None:
        self.words: dict[int, int] = {}

    def put(self, addr: int, value: int) -> None:
        self.words[addr] = value

    def read(self, addr: int, length: int) -> bytes | None:
        if addr >= 1 << 40:
            return None
        return self.words.get(addr, 0).to_bytes(8, "little")[:length]


LONG = dict(cr0=CR0_PG | 1, cr4=CR4_PAE, efer=EFER_LMA)


def test_no_paging_is_identity() -> None:
    ram = Ram()
    assert translate(ram.read, 0x100123, 1, 0, 0, 0) == 0x100123


def test_four_level_walk_with_4k_2m_and_1g_pages() -> None:
    ram = Ram()
    va = 0xFFFF_FFFF_8010_47A0  # kmain
    pml4, pdpt, pd, pt = 0x1000, 0x2000, 0x3000, 0x4000
    ram.put(pml4 + 8 * ((va >> 39) & 0x1FF), pdpt | P | W)
    ram.put(pdpt + 8 * ((va >> 30) & 0x1FF), pd | P | W)
    ram.put(pd + 8 * ((va >> 21) & 0x1FF), pt | P | W)
    ram.put(pt + 8 * ((va >> 12) & 0x1FF), 0x104000 | P)
    assert translate(ram.read, va, cr3=pml4, **LONG) == 0x1047A0
    # the same 2 MiB region as a large page
    ram.put(pd + 8 * ((va >> 21) & 0x1FF), 0x200000 | P | LARGE)
    assert translate(ram.read, va, cr3=pml4, **LONG) == 0x200000 + (va & 0x1F_FFFF)
    # and the 1 GiB region above it
    ram.put(pdpt + 8 * ((va >> 30) & 0x1FF), 0x4000_0000 | P | LARGE)
    assert translate(ram.read, va, cr3=pml4, **LONG) == 0x4000_0000 + (va & 0x3FFF_FFFF)


def test_unmapped_and_unreadable_tables_give_none() -> None:
    ram = Ram()
    assert translate(ram.read, 0x400000, cr3=0x1000, **LONG) is None  # not present
    ram.put(0x1000, (1 << 41) | P)  # a table outside RAM
    assert translate(ram.read, 0x1000, cr3=0x1000, **LONG) is None


def test_five_level_walk() -> None:
    ram = Ram()
    va = 0x0123_4567_8000
    tables = [0x1000, 0x2000, 0x3000, 0x4000, 0x5000]
    for level, (table, nxt) in enumerate(zip(tables, [*tables[1:], 0x9000], strict=True)):
        shift = 12 + 9 * (4 - level)
        ram.put(table + 8 * ((va >> shift) & 0x1FF), nxt | P)
    five = dict(LONG, cr4=CR4_PAE | CR4_LA57)
    assert translate(ram.read, va | 0x12, cr3=0x1000, **five) == 0x9012


def test_32_bit_and_pae_walks() -> None:
    ram = Ram()
    ram.put(0x1000 + 4 * (0x00C0_1000 >> 22), 0x2000 | P)
    ram.put(0x2000 + 4 * ((0x00C0_1000 >> 12) & 0x3FF), 0x7000 | P)
    assert translate(ram.read, 0x00C0_1234, CR0_PG, 0x1000, 0, 0) == 0x7234
    ram.put(0x1000 + 4 * 1, 0x0040_0000 | P | LARGE)  # a 4 MiB page with PSE
    assert translate(ram.read, 0x0040_0010, CR0_PG, 0x1000, CR4_PSE, 0) == 0x0040_0010
    pae = Ram()
    pae.put(0x1000, 0x2000 | P)  # PDPTE 0
    pae.put(0x2000 + 8 * 2, 0x0060_0000 | P | LARGE)  # a 2 MiB page
    assert translate(pae.read, 0x0040_0042, CR0_PG, 0x1000, CR4_PAE, 0) == 0x0060_0042


def test_target_description_numbers_every_register_in_order() -> None:
    root = ET.fromstring(regs.TARGET_XML.split("\n", 2)[2])
    found = [(r.get("name"), int(r.get("regnum", -1)), int(r.get("bitsize", 0)))
             for r in root.iter("reg")]  # fmt: skip
    assert [n for n, _, _ in found] == [name for name, *_ in regs.LAYOUT]
    assert [i for _, i, _ in found] == list(range(len(regs.LAYOUT)))
    assert found[regs.INDEX["rip"]] == ("rip", 16, 64)
    assert found[regs.INDEX["gs_base"]][0] == "gs_base"
    assert {f.get("name") for f in root.iter("feature")} >= {"org.gnu.gdb.i386.core",
                                                            "org.gnu.gdb.i386.sse"}
