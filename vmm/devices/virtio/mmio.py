"""The virtio-mmio transport, version 2 (virtio 1.2, section 4.2.2).

One ``MmioTransport`` is the register block of one device model.  The guest's
register accesses arrive from vCPU threads through the MMIO bus; queue work
runs in the transport's worker thread, woken by the kick eventfd (which KVM
signals directly through an ioeventfd on QueueNotify, so a kick does not stop
the vCPU) and interrupts go out through ``signal_irq`` (an irqfd under KVM).
A device with ``serve_on_notify`` (virtio-blk) has no ioeventfd: the kick is
an MMIO exit and the vCPU thread serves the queues itself before it returns
to the guest, one exit instead of a thread hand-off (on a loaded host the
worker's wake-up waited for a CPU, up to milliseconds); the worker still
serves what a resume, a snapshot restore or a round limit hands it.

One wake-up of the worker serves every request available, in rounds: the
device consumes what the driver published, each queue publishes its used
index once for the round, and the next round looks again (with
VIRTIO_F_EVENT_IDX the driver does not kick while rounds go on, since the
available event already covers what it adds); after a round that returned
buffers, one interrupt if the driver asked for one (its used event, or the
NO_INTERRUPT flag).

A queue the guest corrupted puts the device into DEVICE_NEEDS_RESET: it stops
serving queues, raises a configuration-change interrupt, and logs one line;
only a reset (Status = 0) brings it back.  ``_lock`` protects every register
and queue; the worker holds it while it services queues.

With ``dma`` (the device's table in the paravirtual IOMMU, vmm.devices.iommu)
every queue checks its accesses against the device's DMA windows; the IOMMU
takes ``lock`` before removing a window, so a removal waits for the request
in progress.
"""

from __future__ import annotations

import os
import select
import threading
from collections.abc import Callable

from vmm.devices.virtio.device import VirtioDevice
from vmm.devices.virtio.queue import DmaGuard, GuestRam, QueueError, Virtqueue, check_layout
from vmm.devices.virtio.regs import (
    CONFIG,
    CONFIG_GENERATION,
    DEVICE_FEATURES,
    DEVICE_FEATURES_SEL,
    DEVICE_ID,
    DEVICE_NEEDS_RESET,
    DRIVER_FEATURES,
    DRIVER_FEATURES_SEL,
    DRIVER_OK,
    F_EVENT_IDX,
    F_INDIRECT_DESC,
    F_VERSION_1,
    FEATURES_OK,
    INT_CONFIG_CHANGE,
    INT_USED_BUFFER,
    INTERRUPT_ACK,
    INTERRUPT_STATUS,
    MAGIC,
    MAGIC_VALUE,
    QUEUE_DESC_HIGH,
    QUEUE_DESC_LOW,
    QUEUE_DEVICE_HIGH,
    QUEUE_DEVICE_LOW,
    QUEUE_DRIVER_HIGH,
    QUEUE_DRIVER_LOW,
    QUEUE_NOTIFY,
    QUEUE_NUM,
    QUEUE_NUM_MAX,
    QUEUE_READY,
    QUEUE_SEL,
    SHM_LEN_HIGH,
    SHM_LEN_LOW,
    STATUS,
    VENDOR,
    VENDOR_ID,
    VERSION,
    VERSION_REG,
)

# A wake-up serves at most this many rounds, then kicks itself so that other
# work (a pause, a stop) gets the lock in between.
MAX_ROUNDS = 64

# A full memory barrier (a locked instruction in pthreads): the available event
# the device wrote must be visible before it reads the available index again,
# or a driver reading the old event would skip its kick (store-load order is
# the one x86 does not keep).
_FENCE = threading.Lock()


def _fence() -> None:
    with _FENCE:
        pass


class _QueueRegs:
    __slots__ = ("desc", "device", "driver", "num", "ready")

    def __init__(self, num_max: int) -> None:
        self.num = num_max
        self.ready = 0
        self.desc = self.driver = self.device = 0


def _set_half(value: int, data: int, high: bool) -> int:
    if high:
        return (value & 0xFFFFFFFF) | (data << 32)
    return (value & ~0xFFFFFFFF) | data


class MmioTransport:
    def __init__(
        self,
        device: VirtioDevice,
        mem: GuestRam,
        in_ram: Callable[[int, int], bool],
        signal_irq: Callable[[], None],
        log: Callable[[str], None],
        name: str = "",
    ) -> None:
        self.device = device
        self.mem = mem
        self.in_ram = in_ram
        self._signal_irq = signal_irq
        self._log = log
        self.name = name or device.kind
        self._lock = threading.RLock()
        self.kick_fd = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
        self._stop_fd = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
        self._worker: threading.Thread | None = None
        self.needs_reset_reason = ""
        self.paused = False
        self.dma: DmaGuard | None = None
        # Counters of queues already gone (reset, taken back); live ones keep their own.
        self._done_requests = 0
        self._done_bytes = 0
        self.errors = 0  # queues found corrupt (needs reset)
        self.queues: list[Virtqueue | None] = []
        self.on_driver_ok: Callable[[], None] | None = None  # the guest bound a driver
        self._reset_registers()

    @property
    def lock(self) -> threading.RLock:
        """Held while the device serves requests (and around every register access)."""
        return self._lock

    def _reset_registers(self) -> None:
        self.status = 0
        self.interrupt_status = 0
        self.device_features_sel = 0
        self.driver_features_sel = 0
        self.driver_features = 0
        self.queue_sel = 0
        self.config_generation = 0
        self.queue_regs = [_QueueRegs(self.device.queue_max) for _ in range(self.device.num_queues)]
        for queue in self.queues:
            self._retire(queue)
        self.queues = [None] * self.device.num_queues

    def _retire(self, queue: Virtqueue | None) -> None:
        if queue is not None:
            self._done_requests += queue.requests
            self._done_bytes += queue.bytes

    def counters(self) -> dict[str, int]:
        """Requests returned to the driver, bytes written into its buffers, errors
        (corrupt queues and failed requests), requests refused by the DMA windows."""
        with self._lock:
            live = [q for q in self.queues if q is not None]
            dma_faults = getattr(self.dma, "faults", 0)
            return {
                "requests": self._done_requests + sum(q.requests for q in live),
                "bytes": self._done_bytes + sum(q.bytes for q in live),
                "errors": self.errors + self.device.errors,
                "dma_refusals": dma_faults,
            }

    # -- registers (vCPU threads) -------------------------------------------------------
    @property
    def features(self) -> int:
        return self.device.device_features() | F_VERSION_1 | F_EVENT_IDX | F_INDIRECT_DESC

    def read(self, offset: int, size: int) -> bytes:
        with self._lock:
            if offset >= CONFIG:
                cfg = self.device.config()
                start = offset - CONFIG
                return (cfg[start : start + size] + b"\x00" * size)[:size]
            value = self._read_reg(offset) if size == 4 else 0
        return value.to_bytes(4, "little")[:size] if size <= 4 else value.to_bytes(size, "little")

    def _read_reg(self, offset: int) -> int:
        q = self.queue_regs[self.queue_sel] if self.queue_sel < len(self.queue_regs) else None
        if offset == MAGIC_VALUE:
            return MAGIC
        if offset == VERSION_REG:
            return VERSION
        if offset == DEVICE_ID:
            return self.device.device_id
        if offset == VENDOR:
            return VENDOR_ID
        if offset == DEVICE_FEATURES:
            return (self.features >> (32 * self.device_features_sel)) & 0xFFFFFFFF
        if offset == QUEUE_NUM_MAX:
            return self.device.queue_max if q is not None else 0
        if offset == QUEUE_READY:
            return q.ready if q is not None else 0
        if offset == INTERRUPT_STATUS:
            return self.interrupt_status
        if offset == STATUS:
            return self.status
        if offset == CONFIG_GENERATION:
            return self.config_generation
        if offset in (SHM_LEN_LOW, SHM_LEN_HIGH):
            return 0xFFFFFFFF  # no shared memory regions
        return 0

    def write(self, offset: int, data: bytes) -> None:
        if offset >= CONFIG:
            with self._lock:
                self.device.write_config(offset - CONFIG, bytes(data))
            return
        if len(data) != 4:
            return  # the spec requires 32-bit accesses to the registers
        value = int.from_bytes(data, "little")
        if offset == QUEUE_NOTIFY:
            if self.device.serve_on_notify:
                self.serve()  # this thread (a vCPU's exit) does the work
            else:
                self.kick()  # no lock: the worker does the work
            return
        with self._lock:
            self._write_reg(offset, value)

    def _write_reg(self, offset: int, value: int) -> None:
        q = self.queue_regs[self.queue_sel] if self.queue_sel < len(self.queue_regs) else None
        if offset == DEVICE_FEATURES_SEL:
            self.device_features_sel = value
        elif offset == DRIVER_FEATURES_SEL:
            self.driver_features_sel = value
        elif offset == DRIVER_FEATURES:
            if self.status & FEATURES_OK or self.driver_features_sel > 1:
                return
            shift = 32 * self.driver_features_sel
            self.driver_features = (self.driver_features & ~(0xFFFFFFFF << shift)) | (
                value << shift
            )
        elif offset == QUEUE_SEL:
            self.queue_sel = value
        elif offset == INTERRUPT_ACK:
            self.interrupt_status &= ~value
        elif offset == STATUS:
            self._write_status(value)
        elif q is not None and not q.ready:
            if offset == QUEUE_NUM:
                q.num = value
            elif offset == QUEUE_READY:
                self._queue_ready(self.queue_sel, q, value)
            elif offset in (QUEUE_DESC_LOW, QUEUE_DESC_HIGH):
                q.desc = _set_half(q.desc, value, offset == QUEUE_DESC_HIGH)
            elif offset in (QUEUE_DRIVER_LOW, QUEUE_DRIVER_HIGH):
                q.driver = _set_half(q.driver, value, offset == QUEUE_DRIVER_HIGH)
            elif offset in (QUEUE_DEVICE_LOW, QUEUE_DEVICE_HIGH):
                q.device = _set_half(q.device, value, offset == QUEUE_DEVICE_HIGH)
        elif q is not None and offset == QUEUE_READY and value == 0:
            q.ready = 0  # the driver may take a queue back
            self._retire(self.queues[self.queue_sel])
            self.queues[self.queue_sel] = None

    def _queue_ready(self, index: int, q: _QueueRegs, value: int) -> None:
        if value != 1:
            return
        event_idx = bool(self.driver_features & F_EVENT_IDX)
        indirect = bool(self.driver_features & F_INDIRECT_DESC)
        try:
            check_layout(
                self.in_ram, q.num, self.device.queue_max, q.desc, q.driver, q.device, event_idx
            )
        except QueueError as exc:
            self._needs_reset(f"queue {index}: {exc}")
            return
        q.ready = 1
        self.queues[index] = Virtqueue(
            self.mem, self.in_ram, q.num, q.desc, q.driver, q.device, self.dma,
            self.device.refuse, event_idx, indirect,
        )  # fmt: skip

    def _write_status(self, value: int) -> None:
        if value == 0:
            self.device.reset()
            self.needs_reset_reason = ""
            self._reset_registers()
            return
        new = value & ~self.status
        if new & FEATURES_OK:
            offered = self.features
            if self.driver_features & ~offered or not self.driver_features & F_VERSION_1:
                value &= ~FEATURES_OK  # refused: the driver reads Status back and sees it
        if new & DRIVER_OK and not self.status & DEVICE_NEEDS_RESET:
            self.device.activate(self.mem, self.driver_features)
            self.kick()  # buffers may already be waiting
            if self.on_driver_ok is not None:
                self.on_driver_ok()
        self.status = value | (self.status & DEVICE_NEEDS_RESET)

    def _needs_reset(self, reason: str) -> None:
        """Caller holds ``_lock``."""
        if self.status & DEVICE_NEEDS_RESET:
            return
        self.status |= DEVICE_NEEDS_RESET
        self.needs_reset_reason = reason
        self.errors += 1
        self._log(f"keel: virtio {self.name}: bad queue, device needs reset: {reason}")
        if self.status & DRIVER_OK:
            self.interrupt_status |= INT_CONFIG_CHANGE
            self._signal_irq()

    # -- queue work (the worker thread) ---------------------------------------------------
    def kick(self) -> None:
        os.eventfd_write(self.kick_fd, 1)

    def service(self) -> None:
        """Let the device consume whatever is available, round after round while it
        makes progress; one interrupt at the end if the driver wants one."""
        with self._lock:
            if self.paused or self.status & DEVICE_NEEDS_RESET or not self.status & DRIVER_OK:
                return
            queues = [q for q in self.queues if q is not None]
            try:
                for q in queues:
                    q.begin()
                self._rounds(queues)
            except QueueError as exc:
                for q in queues:  # what the round served before the bad chain is returned
                    try:
                        if q.published != q.used_idx:
                            q.publish()
                    except QueueError:
                        pass  # the used ring itself is refused (already reported)
                self._needs_reset(str(exc))
            finally:
                for q in queues:
                    q.end()

    def _rounds(self, queues: list[Virtqueue]) -> None:
        """Rounds until one finds nothing, each published and interrupted for if
        the driver asked.  (Polling on for a while after progress, rather than
        sleeping until a kick, was tried: on this shared 2-core host it cost more
        than it saved, 100 and 500 µs alike.)"""
        for rounds in range(1, MAX_ROUNDS + 1):
            progress = self.device.service(self.queues)
            for q in queues:
                q.publish()
            _fence()
            if sum(q.take_refused() for q in queues) or progress:
                if [q.interrupt_due() for q in queues].count(True):  # each queue looks
                    self.interrupt_status |= INT_USED_BUFFER
                    self._signal_irq()
                if rounds == MAX_ROUNDS:
                    self.kick()  # more may be waiting: come back after the others
                continue
            return

    # -- snapshots (vmm.snapshot) ---------------------------------------------------------
    _STATE = ("status", "interrupt_status", "device_features_sel", "driver_features_sel",
              "driver_features", "queue_sel", "config_generation", "needs_reset_reason",
              "_done_requests", "_done_bytes", "errors")  # fmt: skip

    def save_state(self) -> dict[str, object]:
        """Registers, every queue's addresses and both ring indexes (call paused)."""
        with self._lock:
            state: dict[str, object] = {name: getattr(self, name) for name in self._STATE}
            state["queues"] = [
                {"num": q.num, "ready": q.ready, "desc": q.desc, "driver": q.driver,
                 "device": q.device,
                 "next_avail": live.next_avail if live else 0,
                 "used_idx": live.used_idx if live else 0,
                 "published": live.published if live else 0}
                for q, live in zip(self.queue_regs, self.queues, strict=True)
            ]  # fmt: skip
            state["model"] = self.device.save_state()
            return state

    def load_state(self, state: dict[str, object]) -> None:
        """The state ``save_state`` gave, on a fresh transport of the same device."""
        queues = state["queues"]
        assert isinstance(queues, list) and len(queues) == len(self.queue_regs)
        with self._lock:
            for name in self._STATE:
                setattr(self, name, type(getattr(self, name))(state[name]))
            model = state.get("model") or {}
            assert isinstance(model, dict)
            self.device.load_state(model)
            for index, (regs, saved) in enumerate(zip(self.queue_regs, queues, strict=True)):
                regs.num, regs.desc = int(saved["num"]), int(saved["desc"])
                regs.driver, regs.device = int(saved["driver"]), int(saved["device"])
                if saved["ready"]:
                    self._queue_ready(index, regs, 1)
                    queue = self.queues[index]
                    if queue is not None:
                        queue.next_avail = int(saved["next_avail"])
                        queue.used_idx = int(saved["used_idx"])
                        queue.published = int(saved.get("published", queue.used_idx))
                        queue.signalled = queue.published
            if self.status & DRIVER_OK and not self.status & DEVICE_NEEDS_RESET:
                self.device.activate(self.mem, self.driver_features)
                if any(q is not None for q in self.queues):
                    # An interrupt signalled just before the pause may still have been
                    # on its way into the interrupt controller (KVM injects an irqfd's
                    # IOAPIC pin from a work queue) when the snapshot saved it: one
                    # more, spurious at worst, so no driver waits for a lost one.
                    self.interrupt_status |= INT_USED_BUFFER
                    self._signal_irq()
        self.kick()  # requests the guest queued before the snapshot (kicks went to the
        # old process's eventfd): the worker looks at every available ring again

    def pause(self) -> None:
        """Stop touching guest memory; returns once a request in progress is done."""
        with self._lock:
            self.paused = True

    def resume(self) -> None:
        with self._lock:
            self.paused = False
        self.kick()  # serve what the guest queued before the pause

    def start_worker(self) -> None:
        if self._worker is None:
            self._worker = threading.Thread(
                target=self._work, name=f"virtio-{self.name}", daemon=True
            )
            self._worker.start()

    def _work(self) -> None:
        poller = select.poll()
        registered: set[int] = set()
        for fd in (self.kick_fd, self._stop_fd):
            poller.register(fd, select.POLLIN)
        while True:
            # Paused (a snapshot, `keel pause`): host input waits for the resume's kick
            # instead of waking this loop again and again.
            wanted = set(self.device.wake_fds()) if not self.paused else set()
            for fd in wanted - registered:
                poller.register(fd, select.POLLIN)
            for fd in registered - wanted:
                poller.unregister(fd)
            registered = wanted
            events = poller.poll()
            if any(fd == self._stop_fd for fd, _ in events):
                return
            if any(fd == self.kick_fd for fd, _ in events):
                try:
                    os.eventfd_read(self.kick_fd)
                except BlockingIOError:
                    pass
            self.serve()

    def serve(self) -> None:
        """``service``, with a device-model bug turned into "needs reset" (it must
        kill neither the VMM nor the thread: the worker, or the vCPU that kicked)."""
        try:
            self.service()
        except Exception as exc:
            with self._lock:
                self._needs_reset(f"internal error: {exc!r}")

    def close(self) -> None:
        """Stop the worker and release the device's host resources."""
        if self._worker is not None:
            os.eventfd_write(self._stop_fd, 1)
            self._worker.join(5)
            self._worker = None
        with self._lock:
            self.device.close()
        for fd in (self.kick_fd, self._stop_fd):
            try:
                os.close(fd)
            except OSError:
                pass
        self.kick_fd = self._stop_fd = -1
