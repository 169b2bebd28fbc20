"""The hotplug controller's registers (docs/hotplug.md), without KVM."""

from __future__ import annotations

import pytest

from vmm.devices import hotplug
from vmm.devices.hotplug import EmptySlot, HotplugController, VirtioSlot
from vmm.devices.virtio.net import NetDevice
from vmm.errors import ConfigError


def r32(dev: HotplugController, off: int) -> int:
    return int.from_bytes(dev.read(off, 4), "little")


def w32(dev: HotplugController, off: int, value: int) -> None:
    dev.write(off, value.to_bytes(4, "little"))


def test_registers_describe_the_slots() -> None:
    slots = [VirtioSlot(i) for i in range(hotplug.SLOT_COUNT)]
    irqs: list[int] = []
    c = HotplugController(slots, lambda: irqs.append(1))
    assert r32(c, hotplug.REG_MAGIC) == 0x4350484B
    assert c.read(hotplug.REG_MAGIC, 4) == b"KHPC"
    assert r32(c, hotplug.REG_VERSION) == 1
    assert r32(c, hotplug.REG_SLOT_COUNT) == 8
    assert r32(c, hotplug.REG_SLOT_STRIDE) == 0x1000
    assert r32(c, hotplug.REG_SLOT_BASE_LOW) == 0xD0000000
    assert r32(c, hotplug.REG_SLOT_BASE_HIGH) == 0
    assert r32(c, hotplug.REG_SLOT_SIZE) == 0x200
    assert r32(c, hotplug.REG_PRESENT) == 0
    slots[3].fill(EmptySlot(), 2)
    c.slot_changed(3)
    assert irqs == [1]
    assert r32(c, hotplug.REG_PRESENT) == 0b1000
    assert r32(c, hotplug.REG_CHANGED) == 0b1000
    w32(c, hotplug.REG_SLOT_SEL, 3)
    assert r32(c, hotplug.REG_SLOT_GSI) == 19
    assert r32(c, hotplug.REG_SLOT_DEVICE_ID) == 2
    w32(c, hotplug.REG_ACK, 0b1000)
    assert r32(c, hotplug.REG_CHANGED) == 0
    w32(c, hotplug.REG_SLOT_SEL, 99)
    assert r32(c, hotplug.REG_SLOT_GSI) == 0
    assert c.read(hotplug.REG_MAGIC, 2) == b"\x00\x00"  # only 32-bit accesses
    assert r32(c, 0x80) == 0


def test_slot_gsis_avoid_legacy_lines() -> None:
    used = {*hotplug.SLOT_GSIS, hotplug.HOTPLUG_GSI}
    assert len(used) == hotplug.SLOT_COUNT + 1
    assert not used & {0, 1, 2, 4, 8, 12} and max(used) < 24


def test_slot_announcement() -> None:
    assert VirtioSlot(2).cmdline() == "virtio_mmio.device=0x200@0xd0002000:18"


@pytest.mark.parametrize("name", ["a" * 16, "bad/name"])
def test_bad_tap_names_are_refused(name: str) -> None:
    with pytest.raises(ConfigError, match="bad TAP interface name"):
        NetDevice(name)


def test_changes_coalesce_and_a_removal_waits_for_ejected() -> None:
    slots = [VirtioSlot(i) for i in range(hotplug.SLOT_COUNT)]
    irqs: list[int] = []
    ejected: list[int] = []
    c = HotplugController(slots, lambda: irqs.append(1))
    c.on_ejected = ejected.append
    slots[1].fill(EmptySlot(), 4)
    c.slot_changed(1)
    c.slot_changed(1)  # two changes before the guest reads: one bit
    assert r32(c, hotplug.REG_CHANGED) == 0b10 and len(irqs) == 2
    assert not c.listening
    w32(c, hotplug.REG_ACK, 0b10)
    assert c.listening and r32(c, hotplug.REG_CHANGED) == 0
    c.request_eject(1)  # the device stays, no longer PRESENT
    assert r32(c, hotplug.REG_PRESENT) == 0 and r32(c, hotplug.REG_CHANGED) == 0b10
    assert not slots[1].empty
    w32(c, hotplug.REG_EJECTED, 0b110)  # only slots being removed count
    assert ejected == [0b10]
    c.ejected(1)
    slots[1].clear()
    w32(c, hotplug.REG_EJECTED, 0b10)  # again: nothing is being removed
    assert ejected == [0b10]
