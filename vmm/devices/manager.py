"""The device manager: virtio devices in hotplug slots, their transports and wiring.

Devices live in fixed slots (``vmm.devices.hotplug``) that exist from the
start, so devices can be attached before boot as well as while the guest
runs.  ``attach`` makes a device of a kind named in ``vmm.devices.registry``;
once the VM exists (``wire_all``) each device gets its virtio-mmio transport,
an ioeventfd on QueueNotify, an irqfd for its slot's interrupt line, a DMA
table in the paravirtual IOMMU and a worker thread, and slot changes are
announced to the guest through the hotplug controller.

``lock`` (re-entrant) serialises attach, detach and wiring; the caller
checks the machine's state under it.

Removal while the guest runs is guest-acknowledged once the guest serves the
hotplug controller (its device manager wrote ACK): ``detach`` marks the
device *removing* and asks the guest to release it; the device keeps working
until the guest writes its slot to EJECTED, then it is closed and its slot
freed (``AttachedDevice.released``).  ``detach(force=True)`` removes at once
(a surprise removal).  Events (``on_event``): ``DEVICE_ATTACHED``,
``DEVICE_BOUND`` (its driver set DRIVER_OK), ``DEVICE_DELETED``.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable

from vmm import platform
from vmm.devices import registry
from vmm.devices.bus import Bus
from vmm.devices.hotplug import (
    HOTPLUG_GSI,
    HOTPLUG_SIZE,
    SLOT_COUNT,
    SLOT_SIZE,
    SLOT_STRIDE,
    HotplugController,
    VirtioSlot,
)
from vmm.devices.iommu import IOMMU_SIZE, DmaWindows, Iommu
from vmm.devices.virtio.device import VirtioDevice
from vmm.devices.virtio.mmio import MmioTransport
from vmm.devices.virtio.regs import QUEUE_NOTIFY
from vmm.errors import ConfigError, KeelError
from vmm.kvm.vm import Vm
from vmm.memory import GuestMemory

TYPE_CHECKING = False  # typing costs ~4 ms of each start (vmm/records.py)
if TYPE_CHECKING:
    from typing import Any


class AttachedDevice:
    """A virtio device in a slot; ``transport`` exists once the VM does."""

    def __init__(self, ident: str, device: VirtioDevice, slot: VirtioSlot) -> None:
        self.id = ident
        self.device = device
        self.slot = slot
        self.transport: MmioTransport | None = None
        self.options: dict[str, Any] = {}  # as attached (a snapshot attaches it again)
        self.bound = threading.Event()  # a guest driver set DRIVER_OK
        self.released = threading.Event()  # gone from its slot
        self.removing = False

    def describe(self) -> dict[str, Any]:
        info: dict[str, Any] = {"id": self.id, "slot": self.slot.index}
        info.update(self.device.describe())
        info.update(base=f"{self.slot.base:#x}", irq=self.slot.gsi, state="ok",
                    bound=self.bound.is_set())  # fmt: skip
        if self.removing:
            info["state"] = "removing"
        if self.transport is not None and isinstance(self.transport.dma, DmaWindows):
            info.update(self.transport.dma.describe())
        if self.transport is not None and self.transport.needs_reset_reason:
            info["state"] = "needs-reset"
            info["reason"] = self.transport.needs_reset_reason
        return info


class _Unwired:
    """A filled slot before the VM exists (nothing can read it yet)."""

    def read(self, offset: int, size: int) -> bytes:
        return b"\xff" * size

    def write(self, offset: int, data: bytes) -> None:
        pass


class DeviceManager:
    def __init__(self, mmio: Bus, log: Callable[[str], None]) -> None:
        self.lock = threading.RLock()
        self._log = log
        self.iommu = Iommu(log)
        self.slots = [VirtioSlot(i) for i in range(SLOT_COUNT)]
        self.hotplug = HotplugController(self.slots, None)
        self.hotplug.on_ejected = self._ejected
        self.on_event: Callable[[str, dict[str, Any]], None] = lambda _n, _d: None
        for slot in self.slots:
            mmio.register(slot.base, SLOT_STRIDE, slot)
        mmio.register(platform.HOTPLUG_MMIO_BASE, HOTPLUG_SIZE, self.hotplug)
        mmio.register(platform.IOMMU_MMIO_BASE, IOMMU_SIZE, self.iommu)
        self._attached: dict[str, AttachedDevice] = {}
        self._vm: Vm | None = None
        self._mem: GuestMemory | None = None
        self._paused = False
        self._irq_fds: list[int] = []
        self._irq_signals: list[Callable[[], None]] = []
        self.irq_counts: dict[int, int] = {}  # interrupts signalled, by GSI (vmm.metrics)

    # -- what scripts see -----------------------------------------------------------
    def attach(
        self, kind: str, options: dict[str, Any], slot_index: int | None = None,
        ident: str | None = None,
    ) -> str:
        """A device of ``kind`` (see ``registry.KINDS``); returns its id, e.g. disk0.
        ``slot_index`` and ``ident`` (a restored snapshot) place it as it was."""
        spec = registry.lookup(kind)
        with self.lock:
            device = spec.create(**spec.parse(options))
            try:
                if slot_index is not None:
                    slot = self.slots[slot_index] if self.slots[slot_index].empty else None
                else:
                    slot = next((s for s in self.slots if s.empty), None)
                if slot is None:
                    raise ConfigError(f"all {len(self.slots)} virtio slots are in use")
                n = 0
                while f"{device.kind}{n}" in self._attached:
                    n += 1
                entry = AttachedDevice(ident or f"{device.kind}{n}", device, slot)
                entry.options = dict(options)
                if self._vm is not None:
                    self._wire(entry)
            except BaseException:
                device.close()
                raise
            self._attached[entry.id] = entry
            slot.fill(entry.transport or _Unwired(), device.device_id)
            if self._vm is not None:
                self.hotplug.slot_changed(slot.index)
            self.on_event("DEVICE_ATTACHED", {"id": entry.id, "kind": spec.name})
            return entry.id

    def detach(self, ident: str, force: bool = False) -> AttachedDevice:
        """Remove a device, named by its id or its backing (image path, TAP name).

        Without ``force``, a guest that serves the hotplug controller is asked
        to release it first: the returned entry's ``released`` is set once it did."""
        with self.lock:
            entry = self.find(ident)
            if force or self._vm is None or not self.hotplug.listening:
                self._remove(entry, notify=not entry.removing)
            elif not entry.removing:
                entry.removing = True
                self.hotplug.request_eject(entry.slot.index)
            return entry

    def _remove(self, entry: AttachedDevice, notify: bool) -> None:
        entry.slot.clear()
        del self._attached[entry.id]
        self._close_entry(entry)
        self.hotplug.ejected(entry.slot.index)
        if self._vm is not None and notify:
            self.hotplug.slot_changed(entry.slot.index)
        entry.released.set()
        self.on_event("DEVICE_DELETED", {"id": entry.id})

    def _ejected(self, mask: int) -> None:
        """The guest released the devices of the slots in ``mask`` (a vCPU thread)."""
        with self.lock:
            for entry in list(self._attached.values()):
                if entry.removing and mask & (1 << entry.slot.index):
                    self._remove(entry, notify=False)

    def describe(self) -> list[dict[str, Any]]:
        with self.lock:
            return [e.describe() for e in sorted(self._attached.values(), key=lambda e: e.id)]

    def find(self, ident: str) -> AttachedDevice:
        with self.lock:
            if ident in self._attached:
                return self._attached[ident]
            for entry in self._attached.values():
                backing = entry.device.backing
                if backing in (ident, os.path.realpath(ident)) or (
                    backing and os.path.realpath(backing) == os.path.realpath(ident)
                ):
                    return entry
        raise ConfigError(f"no attached device {ident!r}")

    def slot_resources(self) -> tuple[tuple[int, int, int], ...]:
        """``(base, size, gsi)`` of every slot, as the DSDT describes them."""
        return tuple((s.base, SLOT_SIZE, s.gsi) for s in self.slots)

    def cmdline(self) -> list[str]:
        """The announcements on the guest's command line: every slot, filled or not
        (a slot filled later is then already the guest's to use; an empty one reads
        DeviceID 0 and is skipped), the hotplug controller and the IOMMU."""
        parts = [s.cmdline() for s in self.slots]
        return [*parts, self.hotplug.cmdline(), self.iommu.cmdline()]

    def pause(self) -> None:
        """Freeze every worker's access to guest memory (the vCPUs are parked)."""
        with self.lock:
            self._paused = True
            self._each_transport(lambda t: t.pause())

    def resume(self) -> None:
        with self.lock:
            self._paused = False
            self._each_transport(lambda t: t.resume())

    # -- wiring to the VM -----------------------------------------------------------
    def wire_all(self, vm: Vm, mem: GuestMemory) -> None:
        """At build: one irqfd per slot and for the controller, then every boot-time device."""
        with self.lock:
            self._vm, self._mem = vm, mem
            for gsi in [s.gsi for s in self.slots] + [HOTPLUG_GSI]:
                self._irq_signals.append(self._irq_signal(vm, gsi))
            self.hotplug.signal_irq = self._irq_signals[-1]
            for entry in self._attached.values():
                self._wire(entry)
                assert entry.transport is not None
                entry.slot.fill(entry.transport, entry.device.device_id)

    def close(self) -> None:
        """Stop every worker and release every device (before guest memory goes)."""
        with self.lock:
            for entry in list(self._attached.values()):
                entry.slot.clear()
                try:
                    self._close_entry(entry)
                except (OSError, KeelError):
                    pass
            for entry in self._attached.values():
                entry.released.set()
            self._attached.clear()
            for fd in self._irq_fds:
                try:
                    os.close(fd)
                except OSError:
                    pass
            self._irq_fds.clear()
            self._irq_signals.clear()

    def _each_transport(self, action: Callable[[MmioTransport], None]) -> None:
        for entry in self._attached.values():
            if entry.transport is not None:
                action(entry.transport)

    def _wire(self, entry: AttachedDevice) -> None:
        """Give a device its transport, ioeventfd and worker (the VM exists)."""
        assert self._mem is not None and self._vm is not None
        transport = MmioTransport(
            entry.device, self._mem, self._mem.contains,
            self._irq_signals[entry.slot.index], self._log, entry.id,
        )  # fmt: skip
        try:
            self._vm.ioeventfd(transport.kick_fd, entry.slot.base + QUEUE_NOTIFY, 4)
        except KeelError:
            pass  # without ioeventfd a kick is an MMIO exit the transport also handles
        transport.dma = self.iommu.attach(entry.slot.base, entry.id, transport.lock)
        transport.paused = self._paused

        def bound(entry: AttachedDevice = entry) -> None:
            if not entry.bound.is_set():
                entry.bound.set()
                self.on_event("DEVICE_BOUND", {"id": entry.id})

        transport.on_driver_ok = bound
        transport.start_worker()
        entry.transport = transport

    def _close_entry(self, entry: AttachedDevice) -> None:
        transport, entry.transport = entry.transport, None
        self.iommu.detach(entry.slot.base)
        if transport is None:
            entry.device.close()
            return
        if self._vm is not None and self._vm.fd >= 0:
            try:
                self._vm.ioeventfd(
                    transport.kick_fd, entry.slot.base + QUEUE_NOTIFY, 4, deassign=True
                )
            except KeelError:
                pass
        transport.close()

    def _irq_signal(self, vm: Vm, gsi: int) -> Callable[[], None]:
        """An edge on ``gsi``: an irqfd write, or a KVM_IRQ_LINE pulse without irqfd."""
        fd = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
        self._irq_fds.append(fd)
        counts = self.irq_counts
        counts[gsi] = 0
        try:
            vm.irqfd(fd, gsi)
        except KeelError:

            def pulse() -> None:
                counts[gsi] += 1
                vm.irq_line(gsi, 1)
                vm.irq_line(gsi, 0)

            return pulse

        def signal() -> None:
            counts[gsi] += 1
            os.eventfd_write(fd, 1)

        return signal

    def save_state(self) -> dict[str, Any]:
        """Every device (kind, options, slot, transport), the controller, the IOMMU."""
        with self.lock:
            devices = []
            for entry in sorted(self._attached.values(), key=lambda e: e.slot.index):
                options = {**entry.options, **entry.device.restore_options()}
                devices.append({"id": entry.id, "kind": registry.lookup(entry.device.kind).name,
                                "options": options, "slot": entry.slot.index,
                                "transport": entry.transport.save_state()
                                if entry.transport is not None else None})  # fmt: skip
            return {"devices": devices, "hotplug": self.hotplug.save_state(),
                    "iommu": self.iommu.save_state()}  # fmt: skip

    def load_state(self, state: dict[str, Any]) -> None:
        """After ``wire_all`` of the devices a snapshot attached again."""
        with self.lock:
            self.hotplug.load_state(state["hotplug"])
            self.iommu.load_state(state["iommu"])
            for saved in state["devices"]:
                entry = self._attached[saved["id"]]
                if entry.transport is not None and saved["transport"] is not None:
                    entry.transport.load_state(saved["transport"])

    def counters(self) -> dict[str, dict[str, int]]:
        """Per device: requests served, bytes returned, errors, DMA refusals (vmm.metrics)."""
        with self.lock:
            entries = sorted(self._attached.values(), key=lambda e: e.id)
            return {e.id: e.transport.counters() for e in entries if e.transport is not None}
