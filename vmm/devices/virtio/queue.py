"""Split virtqueues (virtio 1.2, section 2.7), parsed from hostile guest memory.

Everything the guest wrote is checked before the device acts on it: ring
addresses and alignment, the available index (never more than a queue's worth
ahead of what the device consumed), every descriptor index, address and
length, chain length (at most the queue size), loops, buffers overlapping each
other, and direction (device-readable buffers come before device-writable
ones).  Indirect descriptors are not offered and are rejected.  Any violation
raises ``QueueError``; the transport then marks the device "needs reset".

``read_chain`` and ``available_heads`` are pure functions of a memory-read
callable, so they are fuzzed without a VM.  ``Virtqueue`` adds the device's
own state (next available slot, used index), which never comes from the guest.

DMA windows (``vmm.devices.iommu``): a queue given a ``DmaGuard`` checks every
access first -- ring reads and writes, each descriptor, each buffer -- and
touches no byte the guard refuses.  A refused ring access raises ``DmaFault``
(the device then needs a reset: it cannot even return the request); a request
whose descriptor or buffer is refused is returned to the driver by the queue
itself, with what the device's ``refuse`` hook wrote (0 bytes by default, a
block device writes an IOERR status when it may), and never reaches the device.
"""

from __future__ import annotations

import itertools
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from vmm.errors import KeelError

DESC_F_NEXT = 1
DESC_F_WRITE = 2
DESC_F_INDIRECT = 4
AVAIL_F_NO_INTERRUPT = 1
DESC_SIZE = 16
MAX_QUEUE_SIZE = 32768  # the split-queue limit

_DESC = struct.Struct("<QIHH")
_U16 = struct.Struct("<H")
_USED_ELEM = struct.Struct("<II")

Reader = Callable[[int, int], bytes]


class QueueError(KeelError):
    """The guest put something illegal in a virtqueue."""


class DmaFault(QueueError):
    """A ring access outside the device's DMA windows (already reported)."""


class DmaGuard(Protocol):
    """What a queue needs of a device's DMA windows (``vmm.devices.iommu.DmaWindows``)."""

    def allows(self, addr: int, length: int, write: bool) -> bool: ...

    def fault(self, addr: int, length: int, write: bool, what: str) -> None: ...


class GuestRam(Protocol):
    """What a virtqueue needs of guest memory (``vmm.memory.GuestMemory`` fits)."""

    def read(self, gpa: int, length: int) -> bytes: ...

    def write(self, gpa: int, data: bytes) -> None: ...

    def view(self, gpa: int, length: int) -> memoryview: ...


@dataclass(frozen=True, slots=True)
class Buffer:
    addr: int
    length: int
    writable: bool


@dataclass(frozen=True, slots=True)
class Chain:
    """One request: a descriptor chain starting at ``head``."""

    head: int
    buffers: tuple[Buffer, ...]
    refused: bool = False  # a descriptor or buffer lies outside the DMA windows
    cut: bool = False  # refused at a descriptor: ``buffers`` is only the part before it

    @property
    def readable(self) -> tuple[Buffer, ...]:
        return tuple(b for b in self.buffers if not b.writable)

    @property
    def writable(self) -> tuple[Buffer, ...]:
        return tuple(b for b in self.buffers if b.writable)


def _safe_read(read: Reader, addr: int, length: int, what: str) -> bytes:
    try:
        data = read(addr, length)
    except DmaFault:
        raise
    except KeelError as exc:
        raise QueueError(f"{what} at {addr:#x} is outside guest RAM") from exc
    if len(data) != length:
        raise QueueError(f"{what} at {addr:#x} is outside guest RAM")
    return data


def read_chain(
    read: Reader,
    in_ram: Callable[[int, int], bool],
    desc_table: int,
    queue_size: int,
    head: int,
    dma: DmaGuard | None = None,
) -> Chain:
    """Walk and validate the descriptor chain starting at ``head``.

    With ``dma``, a descriptor the device may not read ends the walk and a
    buffer it may not access (read for device-readable, write for writable)
    is reported; either way the chain comes back ``refused``, with the buffers
    that were read (none of them is to be touched but through the guard).
    """
    if not 0 <= head < queue_size:
        raise QueueError(f"head index {head} is beyond the queue size {queue_size}")
    buffers: list[Buffer] = []
    seen: set[int] = set()
    index = head
    seen_writable = False
    while True:
        if index in seen:
            raise QueueError(f"descriptor chain from {head} loops at {index}")
        if len(seen) >= queue_size:
            raise QueueError(f"descriptor chain from {head} is longer than the queue")
        seen.add(index)
        desc_addr = desc_table + index * DESC_SIZE
        if dma is not None and not dma.allows(desc_addr, DESC_SIZE, False):
            dma.fault(desc_addr, DESC_SIZE, False, f"descriptor {index} of request {head}")
            return Chain(head, tuple(buffers), refused=True, cut=True)
        raw = _safe_read(read, desc_addr, DESC_SIZE, "descriptor")
        addr, length, flags, nxt = _DESC.unpack(raw)
        if flags & DESC_F_INDIRECT:
            raise QueueError(f"descriptor {index}: indirect descriptors were not negotiated")
        if flags & ~(DESC_F_NEXT | DESC_F_WRITE):
            raise QueueError(f"descriptor {index}: unknown flags {flags:#x}")
        writable = bool(flags & DESC_F_WRITE)
        if seen_writable and not writable:
            raise QueueError(f"descriptor {index}: device-readable buffer after a writable one")
        seen_writable = writable
        if length == 0:
            raise QueueError(f"descriptor {index}: zero-length buffer")
        if not in_ram(addr, length):
            raise QueueError(
                f"descriptor {index}: buffer {addr:#x}+{length:#x} is outside guest RAM"
            )
        buffers.append(Buffer(addr, length, writable))
        if not flags & DESC_F_NEXT:
            break
        if nxt >= queue_size:
            raise QueueError(f"descriptor {index}: next index {nxt} is beyond the queue size")
        index = nxt
    _check_no_overlap(buffers, head)
    refused = False
    if dma is not None:
        for b in buffers:
            if not dma.allows(b.addr, b.length, b.writable):
                dma.fault(b.addr, b.length, b.writable, f"buffer of request {head}")
                refused = True
    return Chain(head, tuple(buffers), refused)


def _check_no_overlap(buffers: list[Buffer], head: int) -> None:
    if len(buffers) < 2:
        return
    ordered = sorted(buffers, key=lambda b: b.addr)
    for a, b in itertools.pairwise(ordered):
        if a.addr + a.length > b.addr:
            raise QueueError(f"descriptor chain from {head} has overlapping buffers at {b.addr:#x}")


def _check_ahead(avail_idx: int, next_avail: int, queue_size: int) -> int:
    pending = (avail_idx - next_avail) & 0xFFFF
    if pending > queue_size:
        raise QueueError(
            f"available index {avail_idx} is {pending} ahead of {next_avail}, "
            f"more than the queue size {queue_size}"
        )
    return pending


def available_heads(
    read: Reader, driver_area: int, queue_size: int, next_avail: int
) -> tuple[int, list[int]]:
    """The new available index and the heads the driver published since ``next_avail``."""
    avail_idx = _U16.unpack(_safe_read(read, driver_area + 2, 2, "available index"))[0]
    pending = _check_ahead(avail_idx, next_avail, queue_size)
    if pending == 0:
        return avail_idx, []
    heads = []
    for i in range(pending):
        slot = (next_avail + i) % queue_size
        heads.append(_U16.unpack(_safe_read(read, driver_area + 4 + 2 * slot, 2, "ring"))[0])
    return avail_idx, heads


def ring_sizes(queue_size: int) -> tuple[int, int, int]:
    """Bytes of the descriptor table, driver area and device area (no event index)."""
    return DESC_SIZE * queue_size, 4 + 2 * queue_size, 4 + 8 * queue_size


def check_layout(
    in_ram: Callable[[int, int], bool],
    size: int,
    max_size: int,
    desc: int,
    driver: int,
    device: int,
) -> None:
    """Validate a queue's size and ring addresses as the driver set them up."""
    if not 0 < size <= max_size or size & (size - 1):
        raise QueueError(f"queue size {size} is not a power of two up to {max_size}")
    d_len, a_len, u_len = ring_sizes(size)
    for name, addr, length, align in (
        ("descriptor table", desc, d_len, 16),
        ("driver area", driver, a_len, 2),
        ("device area", device, u_len, 4),
    ):
        if addr % align:
            raise QueueError(f"{name} at {addr:#x} is not {align}-byte aligned")
        if not in_ram(addr, length):
            raise QueueError(f"{name} {addr:#x}+{length:#x} is outside guest RAM")


Refuse = Callable[[Chain, DmaGuard], int]


def _refuse_nothing(chain: Chain, dma: DmaGuard) -> int:
    return 0


class Virtqueue:
    """One ready split virtqueue: the guest's rings plus the device's own indexes."""

    def __init__(
        self,
        mem: GuestRam,
        in_ram: Callable[[int, int], bool],
        size: int,
        desc: int,
        driver: int,
        device: int,
        dma: DmaGuard | None = None,
        refuse: Refuse = _refuse_nothing,
    ) -> None:
        self.mem = mem
        self.in_ram = in_ram
        self.size = size
        self.desc = desc
        self.driver = driver
        self.device = device
        self.dma = dma
        self.refuse = refuse
        self.next_avail = 0
        self.used_idx = 0  # ours: never read back from the guest
        self.refused = 0  # requests returned refused since the transport last looked
        self.requests = 0  # chains returned to the driver (vmm.metrics)
        self.bytes = 0  # bytes the device reported written into them

    def _ring(self, addr: int, length: int, write: bool, what: str) -> None:
        """Raise DmaFault unless the device may access this part of a ring."""
        if self.dma is not None and not self.dma.allows(addr, length, write):
            self.dma.fault(addr, length, write, what)
            raise DmaFault(f"{what} at {addr:#x} is outside the device's DMA windows")

    def _read_ring(self, addr: int, length: int, what: str) -> bytes:
        self._ring(addr, length, False, what)
        return _safe_read(self.mem.read, addr, length, what)

    def _chain(self, head: int) -> Chain | None:
        """The validated chain at ``head``, or None when it was refused (and returned)."""
        chain = read_chain(self.mem.read, self.in_ram, self.desc, self.size, head, self.dma)
        if not chain.refused or self.dma is None:
            return chain
        self.push(head, self.refuse(chain, self.dma))
        self.refused += 1
        return None

    def pop_all(self) -> list[Chain]:
        """Every chain published since the last call, validated."""
        def read(addr: int, length: int) -> bytes:
            return self._read_ring(addr, length, "available ring")

        _, heads = available_heads(read, self.driver, self.size, self.next_avail)
        chains = []
        for h in heads:
            chain = self._chain(h)
            self.next_avail = (self.next_avail + 1) & 0xFFFF
            if chain is not None:
                chains.append(chain)
        return chains

    def pop(self) -> Chain | None:
        """The next published chain, validated, or None when the driver has none."""
        while self.has_available():
            slot = self.next_avail % self.size
            raw = self._read_ring(self.driver + 4 + 2 * slot, 2, "ring")
            chain = self._chain(_U16.unpack(raw)[0])
            self.next_avail = (self.next_avail + 1) & 0xFFFF
            if chain is not None:
                return chain
        return None

    def has_available(self) -> bool:
        raw = self._read_ring(self.driver + 2, 2, "available index")
        avail_idx: int = _U16.unpack(raw)[0]
        _check_ahead(avail_idx, self.next_avail, self.size)
        return avail_idx != self.next_avail

    def push(self, head: int, written: int) -> None:
        """Return a chain to the driver: element first, then the index (x86 is TSO)."""
        slot = self.used_idx % self.size
        elem = self.device + 4 + 8 * slot
        self._ring(elem, 8, True, "used ring")
        self._ring(self.device + 2, 2, True, "used index")
        self.mem.write(elem, _USED_ELEM.pack(head, written))
        self.used_idx = (self.used_idx + 1) & 0xFFFF
        self.mem.write(self.device + 2, _U16.pack(self.used_idx))
        self.requests += 1
        self.bytes += written

    def take_refused(self) -> int:
        n, self.refused = self.refused, 0
        return n

    def wants_interrupt(self) -> bool:
        if self.dma is not None and not self.dma.allows(self.driver, 2, False):
            return True  # cannot read the flags: interrupt, which is always allowed
        flags: int = _U16.unpack(self.mem.read(self.driver, 2))[0]
        return not flags & AVAIL_F_NO_INTERRUPT


def gather(mem: GuestRam, buffers: tuple[Buffer, ...] | list[Buffer]) -> bytes:
    return b"".join(mem.read(b.addr, b.length) for b in buffers)


def scatter(mem: GuestRam, buffers: tuple[Buffer, ...] | list[Buffer], data: bytes) -> int:
    """Copy ``data`` into writable buffers in order; returns bytes written."""
    done = 0
    for b in buffers:
        if done >= len(data):
            break
        part = data[done : done + b.length]
        mem.write(b.addr, part)
        done += len(part)
    return done
