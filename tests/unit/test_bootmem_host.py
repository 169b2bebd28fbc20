"""The boot allocator (kernel/core/bootmem.c) in the host build of the core.

bootmem_alloc steps over an obstacle (a reserved range, the kernel image, a
module) at once.  It used to try one page after another, about 100
instructions each; under a KVM that emulates kernel code that search over the
kernel image was 66 ms of a 2-vCPU boot.  Against random memory maps, images,
modules and allocation sequences, it hands out exactly what the page-by-page
search did, and examines a handful of candidates per allocation, not one per
page.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

ROOT = Path(__file__).resolve().parents[2]
LIB = ROOT / "build" / "host" / "libkeelcore.so"

CDEF = """
struct mem_region { uint64_t base; uint64_t size; uint32_t type; };
struct boot_module { uint64_t base; uint64_t size; };
struct boot_info {
    char cmdline[1024];
    struct mem_region mem[128];
    uint32_t nmem;
    struct boot_module modules[16];
    uint32_t nmodules;
    uint64_t kernel_start;
    uint64_t kernel_end;
};
void bootmem_init(const struct boot_info *bi);
uint64_t bootmem_alloc(uint64_t size, uint64_t align);
extern uint64_t bootmem_probes;
"""

RAM, RESERVED = 1, 2
MiB, PAGE = 1 << 20, 4096
LOW_LIMIT = MiB


@pytest.fixture(scope="module")
def core() -> Iterator[tuple[Any, Any]]:
    if not LIB.exists():
        pytest.fail(f"{LIB} is missing: run 'make host-lib'")
    cffi = pytest.importorskip("cffi")
    ffi = cffi.FFI()
    ffi.cdef(CDEF)
    yield ffi, ffi.dlopen(str(LIB))


def _align_up(x: int, a: int) -> int:
    return (x + a - 1) & ~(a - 1)


def _overlaps(a: int, alen: int, b: int, blen: int) -> bool:
    return a < b + blen and b < a + alen


class PageByPage:
    """The allocator as it was: one page further after every refused candidate."""

    def __init__(self, mem: list[tuple[int, int, int]], image: tuple[int, int],
                 modules: list[tuple[int, int]]) -> None:  # fmt: skip
        self.mem, self.image, self.modules = mem, image, modules
        self.region, self.next, self.probes = 0, 0, 0

    def free(self, base: int, size: int) -> bool:
        if base < LOW_LIMIT:
            return False
        in_ram = False
        for b, s, t in self.mem:
            if t == RAM and b <= base and base + size <= b + s:
                in_ram = True
            elif t != RAM and _overlaps(base, size, b, s):
                return False
        start, end = self.image
        if not in_ram or _overlaps(base, size, start, end - start):
            return False
        return not any(_overlaps(base, size, b, s) for b, s in self.modules)

    def alloc(self, size: int, align: int) -> int:
        while self.region < len(self.mem):
            b, s, t = self.mem[self.region]
            if t == RAM:
                self.next = max(self.next, b)
                while _align_up(self.next, align) + size <= min(b + s, 1 << 32):
                    base = _align_up(self.next, align)
                    self.probes += 1
                    if self.free(base, size):
                        self.next = base + size
                        return base
                    self.next = base + PAGE
            self.region += 1
        return 0


@st.composite
def layouts(draw: st.DrawFn) -> tuple[list[tuple[int, int, int]], tuple[int, int],
                                      list[tuple[int, int]]]:  # fmt: skip
    """A PVH-like memory map (low RAM, the legacy hole, RAM from 1 MiB with a few
    reserved ranges cut out of it), the kernel image at 1 MiB, and modules."""
    top = draw(st.integers(16, 512)) * MiB
    cuts = sorted(draw(st.sets(st.integers(2 * MiB // PAGE, top // PAGE - 1), max_size=6)))
    mem = [(0, 0x9FC00, RAM), (0x9FC00, MiB - 0x9FC00, RESERVED)]
    start, kind = MiB, RAM
    for cut in [c * PAGE for c in cuts] + [top]:
        if cut > start:
            mem.append((start, cut - start, kind))
            start, kind = cut, RESERVED if kind == RAM else RAM
    image = (MiB, MiB + draw(st.integers(PAGE, 8 * MiB)))
    modules = [
        (base, draw(st.integers(1, 4 * MiB)))
        for base in draw(st.lists(st.integers(MiB, top - PAGE), max_size=3))
    ]  # fmt: skip
    return mem, image, modules


allocations = st.lists(
    st.tuples(st.integers(1, 64 * 1024), st.sampled_from([PAGE, 2 * PAGE, 16 * PAGE, 64 * 1024])),
    min_size=1, max_size=8,
)  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(layout=layouts(), wanted=allocations)
def test_same_allocations_as_page_by_page_in_few_probes(
    core: tuple[Any, Any], layout: Any, wanted: list[tuple[int, int]]
) -> None:
    ffi, lib = core
    mem, image, modules = layout
    bi = ffi.new("struct boot_info *")
    bi.nmem = len(mem)
    for i, (b, s, t) in enumerate(mem):
        bi.mem[i].base, bi.mem[i].size, bi.mem[i].type = b, s, t
    bi.nmodules = len(modules)
    for i, (b, s) in enumerate(modules):
        bi.modules[i].base, bi.modules[i].size = b, s
    bi.kernel_start, bi.kernel_end = image
    lib.bootmem_init(bi)
    lib.bootmem_probes = 0
    model = PageByPage(mem, image, modules)
    for size, align in wanted:
        assert lib.bootmem_alloc(size, align) == model.alloc(size, align)
    # Each probe steps past an obstacle (a reserved range, the image, a module or
    # an allocation made before) or ends an allocation.
    assert lib.bootmem_probes <= len(wanted) * (len(mem) + len(modules) + 2) + len(wanted)


def test_the_search_over_a_large_image_is_short(core: tuple[Any, Any]) -> None:
    """The 2-vCPU boot's case: the first allocation after a 3 MiB image."""
    ffi, lib = core
    bi = ffi.new("struct boot_info *")
    layout = [(0, 0x9FC00, RAM), (0x9FC00, MiB - 0x9FC00, RESERVED), (MiB, 255 * MiB, RAM)]
    bi.nmem = len(layout)
    for i, (b, s, t) in enumerate(layout):
        bi.mem[i].base, bi.mem[i].size, bi.mem[i].type = b, s, t
    bi.kernel_start, bi.kernel_end = MiB, 4 * MiB + 0x123
    lib.bootmem_init(bi)
    lib.bootmem_probes = 0
    assert lib.bootmem_alloc(16384, PAGE) == 4 * MiB + PAGE
    assert lib.bootmem_probes <= 4  # page by page: 770
