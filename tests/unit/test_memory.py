"""Guest RAM (vmm.memory): memory mapped from a snapshot's file is RAM to every
check, exactly as memory mapped anonymously at boot."""

from __future__ import annotations

import os
from pathlib import Path

from vmm import platform
from vmm.devices.virtio.queue import check_layout
from vmm.memory import GuestMemory

MIB = 1 << 20


def _from_file(path: Path, slots: list[tuple[int, int]]) -> GuestMemory:
    offsets, offset = [], 0
    for gpa, size in slots:
        offsets.append((gpa, size, offset))
        offset += size
    with open(path, "wb") as f:
        f.truncate(offset)
    fd = os.open(path, os.O_RDONLY)
    try:
        return GuestMemory.from_file(offsets, fd)
    finally:
        os.close(fd)


def test_memory_from_a_file_contains_what_its_slots_hold(tmp_path: Path) -> None:
    """The restore of a snapshot maps RAM from a file; ``contains`` (the check on
    every virtio ring and buffer) once denied all of it, so a restored guest's
    disk needed a reset and its driver waited for ever."""
    slots = platform.ram_slots(256 * MIB)
    booted, restored = GuestMemory(slots), _from_file(tmp_path / "memory", slots)
    try:
        for gpa, size in slots:
            for mem in (booted, restored):
                assert mem.contains(gpa, size)
                assert mem.contains(gpa + size - 16, 16)
                assert not mem.contains(gpa + size - 8, 16)
        assert booted.size == restored.size == sum(size for _, size in slots)
        # The rings a driver set up before the snapshot are still acceptable after it.
        check_layout(restored.contains, 128, 256, 0x4845000, 0x4846000, 0x4847000, True)
    finally:
        booted.close()
        restored.close()
    assert not restored.contains(slots[0][0], 16)  # closed: nothing is RAM any more
