"""A Linux-style virtio-mmio driver in Python, for testing device models without KVM.

It follows the initialisation sequence of the spec (and of Linux's
virtio_mmio.c): reset, ACKNOWLEDGE, DRIVER, read features, write the accepted
ones, FEATURES_OK and read it back, set up each queue (size, ring addresses,
ready), DRIVER_OK.  Requests are placed in guest RAM exactly as a driver does.
"""

from __future__ import annotations

import struct
import time
from dataclasses import dataclass, field

from vmm.devices.virtio import regs
from vmm.devices.virtio.device import VirtioDevice
from vmm.devices.virtio.mmio import MmioTransport
from vmm.memory import GuestMemory

RAM = 4 << 20


def make_ram() -> GuestMemory:
    return GuestMemory([(0, RAM)])


@dataclass
class Irqs:
    count: int = 0

    def __call__(self) -> None:
        self.count += 1


@dataclass
class DriverQueue:
    size: int
    desc: int
    avail: int
    used: int
    next_free: int = 0
    avail_idx: int = 0
    last_used: int = 0


@dataclass
class Driver:
    dev: MmioTransport
    mem: GuestMemory
    heap: int = 0x100000
    queues: dict[int, DriverQueue] = field(default_factory=dict)
    features: int = 0

    # -- registers ---------------------------------------------------------------------
    def r32(self, off: int) -> int:
        return int.from_bytes(self.dev.read(off, 4), "little")

    def w32(self, off: int, value: int) -> None:
        self.dev.write(off, value.to_bytes(4, "little"))

    def alloc(self, size: int, align: int = 16) -> int:
        self.heap = (self.heap + align - 1) & ~(align - 1)
        addr = self.heap
        self.heap += size
        return addr

    # -- initialisation ----------------------------------------------------------------------
    def init(self, queue_sizes: list[int], accept: int | None = None) -> int:
        assert self.r32(regs.MAGIC_VALUE) == regs.MAGIC
        assert self.r32(regs.VERSION_REG) == 2
        self.w32(regs.STATUS, 0)
        self.w32(regs.STATUS, regs.ACKNOWLEDGE)
        self.w32(regs.STATUS, regs.ACKNOWLEDGE | regs.DRIVER)
        features = 0
        for sel in (0, 1):
            self.w32(regs.DEVICE_FEATURES_SEL, sel)
            features |= self.r32(regs.DEVICE_FEATURES) << (32 * sel)
        if accept is not None:
            features &= accept
        for sel in (0, 1):
            self.w32(regs.DRIVER_FEATURES_SEL, sel)
            self.w32(regs.DRIVER_FEATURES, (features >> (32 * sel)) & 0xFFFFFFFF)
        status = regs.ACKNOWLEDGE | regs.DRIVER | regs.FEATURES_OK
        self.w32(regs.STATUS, status)
        if not self.r32(regs.STATUS) & regs.FEATURES_OK:
            return -1
        self.features = features
        for i, size in enumerate(queue_sizes):
            self.setup_queue(i, size)
        self.w32(regs.STATUS, status | regs.DRIVER_OK)
        return features

    def setup_queue(self, index: int, size: int) -> None:
        self.w32(regs.QUEUE_SEL, index)
        assert self.r32(regs.QUEUE_READY) == 0
        assert self.r32(regs.QUEUE_NUM_MAX) >= size
        q = DriverQueue(size, self.alloc(16 * size), self.alloc(6 + 2 * size, 2),
                        self.alloc(6 + 8 * size, 4))  # fmt: skip
        self.w32(regs.QUEUE_NUM, size)
        for off, addr in ((regs.QUEUE_DESC_LOW, q.desc), (regs.QUEUE_DRIVER_LOW, q.avail),
                          (regs.QUEUE_DEVICE_LOW, q.used)):  # fmt: skip
            self.w32(off, addr & 0xFFFFFFFF)
            self.w32(off + 4, addr >> 32)
        self.w32(regs.QUEUE_READY, 1)
        self.queues[index] = q

    # -- requests ---------------------------------------------------------------------------
    def submit(self, qi: int, buffers: list[tuple[int, int, bool]], kick: bool = True) -> int:
        """Chain ``(addr, length, writable)`` buffers into descriptors and publish them."""
        q = self.queues[qi]
        head = q.next_free
        for n, (addr, length, writable) in enumerate(buffers):
            i = (head + n) % q.size
            last = n == len(buffers) - 1
            flags = (0 if last else 1) | (2 if writable else 0)
            nxt = (i + 1) % q.size
            self.mem.write(q.desc + 16 * i, struct.pack("<QIHH", addr, length, flags, nxt))
        q.next_free = (head + len(buffers)) % q.size
        self.publish(qi, head, kick)
        return head

    def submit_indirect(
        self, qi: int, buffers: list[tuple[int, int, bool]], kick: bool = True, table: int = 0
    ) -> int:
        """The same request as ``submit``, as one ring descriptor naming a table of
        them (VIRTIO_F_INDIRECT_DESC), written at ``table`` (or allocated)."""
        table = table or self.alloc(16 * len(buffers))
        for n, (addr, length, writable) in enumerate(buffers):
            last = n == len(buffers) - 1
            flags = (0 if last else 1) | (2 if writable else 0)
            self.mem.write(table + 16 * n, struct.pack("<QIHH", addr, length, flags, n + 1))
        q = self.queues[qi]
        head = q.next_free
        self.mem.write(q.desc + 16 * head, struct.pack("<QIHH", table, 16 * len(buffers), 4, 0))
        q.next_free = (head + 1) % q.size
        self.publish(qi, head, kick)
        return head

    def publish(self, qi: int, head: int, kick: bool = True) -> None:
        q = self.queues[qi]
        self.mem.write(q.avail + 4 + 2 * (q.avail_idx % q.size), struct.pack("<H", head))
        q.avail_idx = (q.avail_idx + 1) & 0xFFFF
        self.mem.write(q.avail + 2, struct.pack("<H", q.avail_idx))
        if kick:
            self.w32(regs.QUEUE_NOTIFY, qi)

    def used(self, qi: int) -> list[tuple[int, int]]:
        q = self.queues[qi]
        idx = struct.unpack("<H", self.mem.read(q.used + 2, 2))[0]
        out = []
        while q.last_used != idx:
            slot = q.last_used % q.size
            out.append(struct.unpack("<II", self.mem.read(q.used + 4 + 8 * slot, 8)))
            q.last_used = (q.last_used + 1) & 0xFFFF
        if self.features & regs.F_EVENT_IDX:  # interrupt me for the next one, as Linux does
            self.mem.write(q.avail + 4 + 2 * q.size, struct.pack("<H", q.last_used))
        return out

    def wait_used(self, qi: int, count: int = 1, timeout: float = 5) -> list[tuple[int, int]]:
        got: list[tuple[int, int]] = []
        deadline = time.monotonic() + timeout
        while len(got) < count:
            got += self.used(qi)
            if len(got) >= count:
                break
            if time.monotonic() > deadline:
                raise AssertionError(f"queue {qi}: {len(got)} of {count} buffers came back")
            time.sleep(0.002)
        return got


def attach(device: VirtioDevice, mem: GuestMemory | None = None) -> tuple[Driver, Irqs, list[str]]:
    """A transport around ``device`` with its worker running, and a driver for it."""
    mem = mem or make_ram()
    irqs = Irqs()
    logs: list[str] = []
    transport = MmioTransport(device, mem, mem.contains, irqs, logs.append)
    transport.start_worker()
    return Driver(transport, mem), irqs, logs
