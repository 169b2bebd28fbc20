"""Virtio-mmio device slots and the hotplug controller that announces changes.

virtio-mmio has no hotplug of its own, so the VMM reserves ``SLOT_COUNT``
register windows at fixed addresses (``VirtioSlot``), each with its own
interrupt line.  An empty slot answers as a virtio-mmio device with ID 0,
which drivers skip.  Filling or emptying a slot at run time sets its bit in
the controller's CHANGED register and raises the controller's interrupt; the
guest reads PRESENT, probes or removes the slot's driver, and acknowledges.
The register interface is documented in docs/hotplug.md; keep the two in step.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from vmm import platform
from vmm.devices.bus import Device
from vmm.devices.virtio.regs import MAGIC, MAGIC_VALUE, VENDOR, VENDOR_ID, VERSION, VERSION_REG

SLOT_COUNT = 8
SLOT_STRIDE = 0x1000
SLOT_SIZE = 0x200  # the register window announced to the guest (Linux's convention)
SLOT_GSIS = tuple(range(16, 16 + SLOT_COUNT))  # IOAPIC pins 16-23: no ISA device there
HOTPLUG_GSI = 5
HOTPLUG_SIZE = 0x100

HOTPLUG_MAGIC = 0x4350484B  # "KHPC"
HOTPLUG_VERSION = 1

# Controller registers: 32-bit, little-endian.
REG_MAGIC = 0x00
REG_VERSION = 0x04
REG_SLOT_COUNT = 0x08
REG_SLOT_STRIDE = 0x0C
REG_SLOT_BASE_LOW = 0x10
REG_SLOT_BASE_HIGH = 0x14
REG_SLOT_SIZE = 0x18
REG_PRESENT = 0x20
REG_CHANGED = 0x24
REG_ACK = 0x28
REG_EJECTED = 0x2C
REG_SLOT_SEL = 0x30
REG_SLOT_GSI = 0x34
REG_SLOT_DEVICE_ID = 0x38


class EmptySlot:
    """An empty slot: a valid virtio-mmio register block with device ID 0, which
    drivers skip."""

    def read(self, offset: int, size: int) -> bytes:
        value = {MAGIC_VALUE: MAGIC, VERSION_REG: VERSION, VENDOR: VENDOR_ID}.get(offset, 0)
        return (value & ((1 << (8 * size)) - 1)).to_bytes(size, "little")

    def write(self, offset: int, data: bytes) -> None:
        pass


_PLACEHOLDER = EmptySlot()


def slot_base(index: int) -> int:
    return platform.VIRTIO_MMIO_BASE + index * SLOT_STRIDE


class VirtioSlot:
    """One fixed register window; its occupant is swapped in one reference store,
    so a vCPU thread always sees either the old device or the new one."""

    metrics_name = "slot"

    def __init__(self, index: int) -> None:
        self.index = index
        self.base = slot_base(index)
        self.gsi = SLOT_GSIS[index]
        self.occupant: Device = _PLACEHOLDER
        self.device_id = 0

    @property
    def empty(self) -> bool:
        return self.occupant is _PLACEHOLDER

    def fill(self, occupant: Device, device_id: int) -> None:
        self.device_id = device_id
        self.occupant = occupant

    def clear(self) -> None:
        self.occupant = _PLACEHOLDER
        self.device_id = 0

    def read(self, offset: int, size: int) -> bytes:
        return self.occupant.read(offset, size)

    def write(self, offset: int, data: bytes) -> None:
        self.occupant.write(offset, data)

    def cmdline(self) -> str:
        """The Linux/QEMU-microvm announcement of this slot."""
        return f"virtio_mmio.device={SLOT_SIZE:#x}@{self.base:#x}:{self.gsi}"


class HotplugController:
    """CHANGED coalesces: any number of changes to a slot before the guest reads
    CHANGED is one set bit, and the guest re-reads CHANGED until it is 0.

    A removal the guest takes part in (``request_eject``) leaves the device in
    its slot, no longer PRESENT, until the guest writes the slot's bit to
    EJECTED: then ``on_ejected`` is called (from the vCPU thread) with the mask."""

    metrics_name = "hotplug"

    def __init__(self, slots: list[VirtioSlot], signal_irq: Callable[[], None] | None) -> None:
        self.slots = slots
        self.signal_irq = signal_irq
        self.on_ejected: Callable[[int], None] | None = None
        self._lock = threading.Lock()
        self.changed = 0
        self.ejecting = 0
        self.slot_sel = 0
        self.events = 0  # slot changes announced (vmm.metrics)
        # The guest has served the controller (written ACK): it takes part in removals.
        self.listening = False

    def save_state(self) -> dict[str, int]:
        with self._lock:
            return {"changed": self.changed, "slot_sel": self.slot_sel, "events": self.events,
                    "listening": int(self.listening)}  # fmt: skip

    def load_state(self, state: dict[str, int]) -> None:
        with self._lock:
            self.changed, self.slot_sel = int(state["changed"]), int(state["slot_sel"])
            self.events = int(state["events"])
            self.listening = bool(state.get("listening", 0))
            pending = bool(self.changed) and self.listening
        if pending and self.signal_irq is not None:
            self.signal_irq()  # its interrupt may have been lost in flight (virtio's load_state)

    def present(self) -> int:
        return sum(1 << s.index for s in self.slots if not s.empty) & ~self.ejecting

    def slot_changed(self, index: int) -> None:
        """A slot was filled or emptied while the guest runs."""
        with self._lock:
            self.changed |= 1 << index
            self.events += 1
        if self.signal_irq is not None:
            self.signal_irq()

    def request_eject(self, index: int) -> None:
        """Ask the guest to release slot ``index``: it reads as not PRESENT."""
        with self._lock:
            self.ejecting |= 1 << index
        self.slot_changed(index)

    def ejected(self, index: int) -> None:
        """The slot's removal is complete (released by the guest, or forced)."""
        with self._lock:
            self.ejecting &= ~(1 << index)

    def read(self, offset: int, size: int) -> bytes:
        with self._lock:
            value = self._read_reg(offset) if size == 4 else 0
        return value.to_bytes(4, "little")[:size].ljust(size, b"\x00")

    def _read_reg(self, offset: int) -> int:
        sel = self.slots[self.slot_sel] if self.slot_sel < len(self.slots) else None
        regs = {
            REG_MAGIC: HOTPLUG_MAGIC,
            REG_VERSION: HOTPLUG_VERSION,
            REG_SLOT_COUNT: len(self.slots),
            REG_SLOT_STRIDE: SLOT_STRIDE,
            REG_SLOT_BASE_LOW: platform.VIRTIO_MMIO_BASE & 0xFFFFFFFF,
            REG_SLOT_BASE_HIGH: platform.VIRTIO_MMIO_BASE >> 32,
            REG_SLOT_SIZE: SLOT_SIZE,
            REG_PRESENT: self.present(),
            REG_CHANGED: self.changed,
            REG_SLOT_SEL: self.slot_sel,
            REG_SLOT_GSI: sel.gsi if sel is not None else 0,
            REG_SLOT_DEVICE_ID: sel.device_id if sel is not None else 0,
        }
        return regs.get(offset, 0)

    def write(self, offset: int, data: bytes) -> None:
        if len(data) != 4:
            return
        value = int.from_bytes(data, "little")
        with self._lock:
            if offset == REG_ACK:
                self.changed &= ~value
                self.listening = True
            elif offset == REG_SLOT_SEL:
                self.slot_sel = value
            elif offset == REG_EJECTED:
                value &= self.ejecting
            if offset != REG_EJECTED:
                return
        if value and self.on_ejected is not None:
            self.on_ejected(value)

    def cmdline(self) -> str:
        return f"keel.hotplug={HOTPLUG_SIZE:#x}@{platform.HOTPLUG_MMIO_BASE:#x}:{HOTPLUG_GSI}"
