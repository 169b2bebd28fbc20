"""Guest RAM: anonymous host mappings registered with KVM as memory slots.

Every access from the VMM goes through ``view``/``read``/``write``, which
check that the whole range lies inside one slot: a guest-supplied address is
hostile input and an out-of-range one raises ``GuestMemoryError`` instead of
touching host memory.
"""

from __future__ import annotations

import mmap

from vmm.errors import KeelError
from vmm.kvm.ffi import ffi

TYPE_CHECKING = False  # typing costs ~4 ms of each start (vmm/records.py)
if TYPE_CHECKING:
    from typing import Any

# MAP_NORESERVE: a large guest costs host memory only for pages it touches.
_MAP_NORESERVE = getattr(mmap, "MAP_NORESERVE", 0x4000)


class GuestMemoryError(KeelError):
    """A guest-physical range that is not entirely inside guest RAM."""


class GuestMemory:
    def __init__(self, slots: list[tuple[int, int]]) -> None:
        self._ffi = ffi
        self.slots: list[tuple[int, int, mmap.mmap, memoryview, Any]] = []
        # (first, end) of each slot: ``contains`` is on every virtio buffer's path.
        # Kept by ``_add`` alone, beside ``slots``: a slot added any other way
        # would be RAM that ``contains`` denies (a restored snapshot's rings).
        self._ranges: list[tuple[int, int]] = []
        self._views: list[tuple[int, int, memoryview]] = []  # (first, end, view), for ``view``
        self._hosts: list[tuple[int, int, int]] = []  # (first, end, host address), for ``host``
        for gpa, size in slots:
            mm = mmap.mmap(
                -1,
                size,
                flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | _MAP_NORESERVE,
                prot=mmap.PROT_READ | mmap.PROT_WRITE,
            )
            self._add(gpa, size, mm)

    def _add(self, gpa: int, size: int, mm: mmap.mmap) -> None:
        self.slots.append((gpa, size, mm, memoryview(mm), ffi.from_buffer(mm)))
        self._ranges.append((gpa, gpa + size))
        self._views.append((gpa, gpa + size, self.slots[-1][3]))
        self._hosts.append((gpa, gpa + size, int(ffi.cast("uintptr_t", self.slots[-1][4]))))

    @classmethod
    def from_file(cls, slots: list[tuple[int, int, int]], fd: int) -> GuestMemory:
        """RAM mapped from a snapshot's memory file, slot by slot at the given file
        offsets, privately: pages are read when the guest touches them, and what the
        guest writes stays in this process (two restores are two clones)."""
        mem = cls([])
        for gpa, size, offset in slots:
            mm = mmap.mmap(fd, size, flags=mmap.MAP_PRIVATE | _MAP_NORESERVE,
                           prot=mmap.PROT_READ | mmap.PROT_WRITE, offset=offset)  # fmt: skip
            mem._add(gpa, size, mm)
        return mem

    @property
    def size(self) -> int:
        return sum(size for _, size, _, _, _ in self.slots)

    def host_address(self, index: int) -> int:
        """Host virtual address of slot ``index`` (for KVM_SET_USER_MEMORY_REGION)."""
        return int(self._ffi.cast("uintptr_t", self.slots[index][4]))

    def view(self, gpa: int, length: int) -> memoryview:
        """A writable view of ``[gpa, gpa + length)``; it must lie in one slot."""
        if gpa < 0 or length < 0:
            raise GuestMemoryError(f"bad guest range {gpa:#x}+{length:#x}")
        end = gpa + length
        for base, last, view in self._views:  # (every virtio buffer's path: kept short)
            if base <= gpa and end <= last:
                return view[gpa - base : end - base]
        raise GuestMemoryError(f"guest range {gpa:#x}+{length:#x} is outside guest RAM")

    def host(self, gpa: int, length: int) -> int:
        """The host address of ``[gpa, gpa + length)``, which must lie in one slot
        (for C code that moves data in place; valid while the memory is open)."""
        if gpa < 0 or length < 0:
            raise GuestMemoryError(f"bad guest range {gpa:#x}+{length:#x}")
        end = gpa + length
        for base, last, host in self._hosts:
            if base <= gpa and end <= last:
                return host + gpa - base
        raise GuestMemoryError(f"guest range {gpa:#x}+{length:#x} is outside guest RAM")

    def host_ranges(self) -> list[tuple[int, int, int]]:
        """(first, end, host address) of every slot: what ``host`` and ``contains`` use."""
        return list(self._hosts)

    def contains(self, gpa: int, length: int) -> bool:
        """True when ``[gpa, gpa + length)`` lies inside one RAM slot."""
        if gpa < 0 or length < 0:
            return False
        end = gpa + length
        for first, last in self._ranges:  # noqa: SIM110 (a loop: any() and a generator cost 2x)
            if first <= gpa and end <= last:
                return True
        return False

    def read(self, gpa: int, length: int) -> bytes:
        return bytes(self.view(gpa, length))

    def write(self, gpa: int, data: bytes) -> None:
        self.view(gpa, len(data))[:] = data

    def close(self) -> None:
        for _, _, mm, view, buf in self.slots:
            view.release()
            self._ffi.release(buf)
            mm.close()
        self.slots.clear()
        self._ranges.clear()
        self._views.clear()
        self._hosts.clear()
