"""Split virtqueues (virtio 1.2, section 2.7), parsed from hostile guest memory.

Everything the guest wrote is checked before the device acts on it: ring
addresses and alignment, the available index (never more than a queue's worth
ahead of what the device consumed), every descriptor index, address and
length, chain length (at most the queue size), loops, buffers overlapping each
other, and direction (device-readable buffers come before device-writable
ones).  Indirect descriptors (VIRTIO_RING_F_INDIRECT_DESC) are accepted once
negotiated, their tables checked as strictly as the ring's.  Any violation
raises ``QueueError``; the transport then marks the device "needs reset".

``read_chain`` and ``available_heads`` are pure functions of a memory-read
callable, so they are fuzzed without a VM.  ``Virtqueue`` adds the device's
own state (next available slot, used index), which never comes from the guest.

Batches: ``push`` fills a used-ring element; ``publish`` then writes the used
index once for everything pushed since (and, with VIRTIO_F_EVENT_IDX, the
available event: "kick me once you publish past here"); ``interrupt_due``
says whether the driver asked to hear about what was published since it was
last asked (its used event, or the NO_INTERRUPT flag without the feature).

DMA windows (``vmm.devices.iommu``): a queue given a ``DmaGuard`` checks every
access first -- ring reads and writes, each descriptor, each buffer -- and
touches no byte the guard refuses.  ``begin`` (once per batch) checks each
ring area as a whole, which covers every ring and descriptor access of the
batch (windows cannot shrink during one: the IOMMU takes the transport's lock
to remove one); an area not wholly allowed is accessed piece by piece, each
piece checked.  Buffers are checked one by one, always.  A refused ring access raises ``DmaFault``
(the device then needs a reset: it cannot even return the request); a request
whose descriptor or buffer is refused is returned to the driver by the queue
itself, with what the device's ``refuse`` hook wrote (0 bytes by default, a
block device writes an IOERR status when it may), and never reaches the device.
"""

from __future__ import annotations

import itertools
import struct
from bisect import bisect_right as _bisect
from collections.abc import Callable

from vmm.errors import KeelError

TYPE_CHECKING = False  # typing costs ~4 ms of each start (vmm/records.py)
if TYPE_CHECKING:
    from typing import NamedTuple, Protocol
else:
    from vmm.records import NamedTuple, Protocol

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

# Named tuples made without their Python-level ``__new__`` (the chain walk
# makes four per request; the same objects, a third of the cost).
_new = tuple.__new__
Covers = tuple[tuple[list[int], list[int]], tuple[list[int], list[int]]]
_ASK: Covers = (([], []), ([], []))  # a guard without ``covers``: ask ``allows`` each time


class QueueError(KeelError):
    """The guest put something illegal in a virtqueue."""


class DmaFault(QueueError):
    """A ring access outside the device's DMA windows (already reported)."""


class DmaGuard(Protocol):
    """What a queue needs of a device's DMA windows (``vmm.devices.iommu.DmaWindows``)."""

    def allows(self, addr: int, length: int, write: bool) -> bool: ...

    def fault(self, addr: int, length: int, write: bool, what: str) -> None: ...

    # Optional (``vmm.devices.iommu.DmaWindows.covers``): None when every access
    # is allowed, else the (starts, ends) runs readable and writable, which
    # ``allows`` searches, for a caller that checks several accesses at once.
    # def covers(self) -> tuple[tuple[list[int], list[int]], ...] | None: ...


class GuestRam(Protocol):
    """What a virtqueue needs of guest memory (``vmm.memory.GuestMemory`` fits)."""

    def read(self, gpa: int, length: int) -> bytes: ...

    def write(self, gpa: int, data: bytes) -> None: ...

    def view(self, gpa: int, length: int) -> memoryview: ...


class Buffer(NamedTuple):
    addr: int
    length: int
    writable: bool


class Chain(NamedTuple):
    """One request: a descriptor chain starting at ``head``."""

    head: int
    buffers: tuple[Buffer, ...]
    refused: bool = False  # a descriptor or buffer lies outside the DMA windows
    cut: bool = False  # refused at a descriptor: ``buffers`` is only the part before it

    @property
    def split(self) -> int:
        """How many buffers are device-readable (they come first)."""
        for i, b in enumerate(self.buffers):
            if b.writable:
                return i
        return len(self.buffers)

    @property
    def readable(self) -> tuple[Buffer, ...]:
        return self.buffers[: self.split]

    @property
    def writable(self) -> tuple[Buffer, ...]:
        return self.buffers[self.split :]


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
    table: memoryview | None = None,
    indirect: bool = False,
) -> Chain:
    """Walk and validate the descriptor chain starting at ``head``.

    With ``dma``, a descriptor the device may not read ends the walk and a
    buffer it may not access (read for device-readable, write for writable)
    is reported; either way the chain comes back ``refused``, with the buffers
    that were read (none of them is to be touched but through the guard).
    ``table``: the whole descriptor table, already checked against ``dma``
    and guest RAM (``Virtqueue.begin``); descriptors are then read from it.
    ``indirect`` (VIRTIO_RING_F_INDIRECT_DESC negotiated): the chain may end
    in a descriptor naming a table of descriptors in guest memory, which
    then continues the chain (virtio 1.2, 2.7.5.3): the table is checked
    (whole entries, at most ``queue_size`` of them, in guest RAM and, with
    ``dma``, readable as a whole) and copied once, so the guest cannot
    change it under the walk; no descriptor in it may be indirect again.
    """
    if not 0 <= head < queue_size:
        raise QueueError(f"head index {head} is beyond the queue size {queue_size}")
    buffers: list[Buffer] = []
    append = buffers.append
    index = head
    seen_writable = False
    unpack = _DESC.unpack_from
    # Every descriptor of a table is visited at most once in a chain without a
    # loop, so more visits than entries is a loop (cheaper than a set of indexes).
    bound = queue_size
    visits = 0
    in_table = False  # walking an indirect table (a copy: ``table`` is bytes then)
    source: memoryview | bytes | None = table
    while True:
        visits += 1
        if visits > bound:
            raise QueueError(f"descriptor chain from {head} loops at {index}")
        if source is not None:
            addr, length, flags, nxt = unpack(source, index * DESC_SIZE)
        else:
            desc_addr = desc_table + index * DESC_SIZE
            if dma is not None and not dma.allows(desc_addr, DESC_SIZE, False):
                dma.fault(desc_addr, DESC_SIZE, False, f"descriptor {index} of request {head}")
                return Chain(head, tuple(buffers), refused=True, cut=True)
            raw = _safe_read(read, desc_addr, DESC_SIZE, "descriptor")
            addr, length, flags, nxt = unpack(raw)
        if flags & ~(DESC_F_NEXT | DESC_F_WRITE):
            if flags & ~(DESC_F_NEXT | DESC_F_WRITE | DESC_F_INDIRECT):
                raise QueueError(f"descriptor {index}: unknown flags {flags:#x}")
            if not indirect:
                raise QueueError(f"descriptor {index}: indirect descriptors were not negotiated")
            if in_table:
                raise QueueError(f"descriptor {index} of an indirect table is indirect again")
            if flags & DESC_F_NEXT:
                raise QueueError(f"descriptor {index}: indirect and NEXT together")
            entries = length // DESC_SIZE
            if length % DESC_SIZE or not 0 < entries <= queue_size:
                raise QueueError(
                    f"descriptor {index}: indirect table of {length} bytes (whole "
                    f"descriptors, at most the queue size {queue_size})"
                )
            if not in_ram(addr, length):
                raise QueueError(
                    f"descriptor {index}: indirect table {addr:#x}+{length:#x} is outside guest RAM"
                )
            if dma is not None and not dma.allows(addr, length, False):
                dma.fault(addr, length, False, f"indirect table of request {head}")
                return Chain(head, tuple(buffers), refused=True, cut=True)
            source = _safe_read(read, addr, length, "indirect table")
            in_table = True
            index, bound, visits = 0, entries, 0
            continue
        writable = flags >= DESC_F_WRITE  # (only NEXT and WRITE are left)
        if seen_writable and not writable:
            raise QueueError(f"descriptor {index}: device-readable buffer after a writable one")
        seen_writable = writable
        if not length:
            raise QueueError(f"descriptor {index}: zero-length buffer")
        if not in_ram(addr, length):
            raise QueueError(
                f"descriptor {index}: buffer {addr:#x}+{length:#x} is outside guest RAM"
            )
        append(_new(Buffer, (addr, length, writable)))
        if not flags & DESC_F_NEXT:
            break
        if nxt >= bound:
            what = "the indirect table's size" if in_table else "the queue size"
            raise QueueError(f"descriptor {index}: next index {nxt} is beyond {what}")
        index = nxt
    if len(buffers) > queue_size:  # (direct descriptors, then an indirect table's)
        raise QueueError(f"descriptor chain from {head} is longer than the queue size")
    n = len(buffers)
    if n == 3:  # the usual request: its three pairs here, the message from the check
        (a0, l0, _), (a1, l1, _), (a2, l2, _) = buffers
        if (
            (a0 < a1 + l1 and a1 < a0 + l0)
            or (a0 < a2 + l2 and a2 < a0 + l0)
            or (a1 < a2 + l2 and a2 < a1 + l1)
        ):
            _check_no_overlap(buffers, head)
    elif n > 1:
        _check_no_overlap(buffers, head)
    if dma is not None:
        # One call for the chain's covers instead of one per buffer (a guard
        # without ``covers`` is asked buffer by buffer).
        covers_of = getattr(dma, "covers", None)
        covers = covers_of() if covers_of is not None else _ASK
        if covers is not None:
            refused = False
            for addr, length, writable in buffers:
                if covers is _ASK:
                    ok = dma.allows(addr, length, writable)
                else:
                    starts, ends = covers[writable]
                    i = _bisect(starts, addr) - 1
                    ok = i >= 0 and addr + length <= ends[i]
                if not ok:
                    dma.fault(addr, length, writable, f"buffer of request {head}")
                    refused = True
            if refused:
                return _new(Chain, (head, tuple(buffers), True, False))
    return _new(Chain, (head, tuple(buffers), False, False))


def _check_no_overlap(buffers: list[Buffer], head: int) -> None:
    n = len(buffers)
    if n <= 4:  # the usual requests: every pair, without sorting
        for i in range(n - 1):
            a_addr, a_len, _ = buffers[i]
            for j in range(i + 1, n):
                b_addr, b_len, _ = buffers[j]
                if a_addr < b_addr + b_len and b_addr < a_addr + a_len:
                    at = max(a_addr, b_addr)
                    raise QueueError(
                        f"descriptor chain from {head} has overlapping buffers at {at:#x}"
                    )
        return
    ordered = sorted(buffers)  # by address first (a Buffer is a tuple)
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


def ring_sizes(queue_size: int, event_idx: bool = False) -> tuple[int, int, int]:
    """Bytes of the descriptor table, driver area and device area (the event
    index adds the used event after the available ring and the available event
    after the used ring)."""
    extra = 2 if event_idx else 0
    return DESC_SIZE * queue_size, 4 + 2 * queue_size + extra, 4 + 8 * queue_size + extra


def need_event(event: int, new: int, old: int) -> bool:
    """Whether moving an index from ``old`` to ``new`` passes ``event`` (virtio 1.2, 2.7.10)."""
    return ((new - event - 1) & 0xFFFF) < ((new - old) & 0xFFFF)


def check_layout(
    in_ram: Callable[[int, int], bool],
    size: int,
    max_size: int,
    desc: int,
    driver: int,
    device: int,
    event_idx: bool = False,
) -> None:
    """Validate a queue's size and ring addresses as the driver set them up."""
    if not 0 < size <= max_size or size & (size - 1):
        raise QueueError(f"queue size {size} is not a power of two up to {max_size}")
    d_len, a_len, u_len = ring_sizes(size, event_idx)
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
        event_idx: bool = False,
        indirect: bool = False,
    ) -> None:
        self.mem = mem
        self.in_ram = in_ram
        self.size = size
        self.desc = desc
        self.driver = driver
        self.device = device
        self.dma = dma
        self.refuse = refuse
        self.event_idx = event_idx
        self.indirect = indirect
        self.next_avail = 0
        self.used_idx = 0  # ours: never read back from the guest
        self.published = 0  # the used index the guest can see
        self.signalled = 0  # the used index when interrupt_due last looked
        self.refused = 0  # requests returned refused since the transport last looked
        self.requests = 0  # chains returned to the driver (vmm.metrics)
        self.bytes = 0  # bytes the device reported written into them
        d_len, a_len, u_len = ring_sizes(size, event_idx)
        self._areas = ((desc, d_len, False), (driver, a_len, False), (device, u_len, True))
        # This batch's views of the three areas (None: access piece by piece, checked).
        self._table: memoryview | None = None
        self._avail: memoryview | None = None
        self._used: memoryview | None = None
        self.batches = 0  # ``begin`` calls: what a device set up for one batch is good for it

    def begin(self) -> None:
        """Start a batch: check each ring area as a whole against the DMA windows
        and take a view of each area allowed (guest RAM: checked at set-up)."""
        self.batches += 1
        views: list[memoryview | None] = []
        for addr, length, write in self._areas:
            if self.dma is not None and not self.dma.allows(addr, length, write):
                views.append(None)
            else:
                views.append(self.mem.view(addr, length))
        self._table, self._avail, self._used = views

    def end(self) -> None:
        """End a batch: release the views (guest memory may go once nothing uses it);
        accesses are checked piece by piece until the next ``begin``."""
        for view in (self._table, self._avail, self._used):
            if view is not None:
                view.release()
        self._table = self._avail = self._used = None

    def _ring(self, addr: int, length: int, write: bool, what: str) -> None:
        """Raise DmaFault unless the device may access this part of a ring."""
        if self.dma is not None and not self.dma.allows(addr, length, write):
            self.dma.fault(addr, length, write, what)
            raise DmaFault(f"{what} at {addr:#x} is outside the device's DMA windows")

    def _read_ring(self, addr: int, length: int, what: str) -> bytes:
        self._ring(addr, length, False, what)
        return _safe_read(self.mem.read, addr, length, what)

    def _avail_u16(self, offset: int, what: str) -> int:
        if self._avail is not None:
            value: int = _U16.unpack_from(self._avail, offset)[0]
            return value
        raw = self._read_ring(self.driver + offset, 2, what)
        value = _U16.unpack(raw)[0]
        return value

    def _chain(self, head: int) -> Chain | None:
        """The validated chain at ``head``, or None when it was refused (and returned)."""
        chain = read_chain(
            self.mem.read, self.in_ram, self.desc, self.size, head, self.dma, self._table,
            self.indirect,
        )  # fmt: skip
        if not chain.refused or self.dma is None:
            return chain
        self.push(head, self.refuse(chain, self.dma))
        self.refused += 1
        return None

    def pop_all(self) -> list[Chain]:
        """Every chain published since the last call, validated."""
        avail = self._avail
        if avail is None or self._table is None:  # piece by piece, each access checked
            return self._pop_all_checked()
        # The batch's views (``begin``): the ring and table were checked as wholes.
        size, nxt = self.size, self.next_avail
        pending = _check_ahead(_U16.unpack_from(avail, 2)[0], nxt, size)
        chains: list[Chain] = []
        if not pending:
            return chains
        unpack, read, in_ram = _U16.unpack_from, self.mem.read, self.in_ram
        desc, dma, table, indirect = self.desc, self.dma, self._table, self.indirect
        for _ in range(pending):
            head = unpack(avail, 4 + 2 * (nxt % size))[0]
            chain = read_chain(read, in_ram, desc, size, head, dma, table, indirect)
            nxt = self.next_avail = (nxt + 1) & 0xFFFF
            if not chain.refused or dma is None:
                chains.append(chain)
            else:
                self.push(head, self.refuse(chain, dma))
                self.refused += 1
        return chains

    def _pop_all_checked(self) -> list[Chain]:
        avail_idx = self._avail_u16(2, "available index")
        pending = _check_ahead(avail_idx, self.next_avail, self.size)
        chains = []
        for _ in range(pending):
            slot = self.next_avail % self.size
            chain = self._chain(self._avail_u16(4 + 2 * slot, "ring"))
            self.next_avail = (self.next_avail + 1) & 0xFFFF
            if chain is not None:
                chains.append(chain)
        return chains

    def pop(self) -> Chain | None:
        """The next published chain, validated, or None when the driver has none."""
        while self.has_available():
            slot = self.next_avail % self.size
            chain = self._chain(self._avail_u16(4 + 2 * slot, "ring"))
            self.next_avail = (self.next_avail + 1) & 0xFFFF
            if chain is not None:
                return chain
        return None

    def put_back(self) -> None:
        """The chain ``pop`` returned last goes back, unused: the next ``pop``
        returns it again (a device with nothing for a buffer yet)."""
        self.next_avail = (self.next_avail - 1) & 0xFFFF

    def has_available(self) -> bool:
        avail_idx = self._avail_u16(2, "available index")
        _check_ahead(avail_idx, self.next_avail, self.size)
        return avail_idx != self.next_avail

    def push(self, head: int, written: int) -> None:
        """Fill the next used-ring element; the guest sees it at ``publish``."""
        slot = self.used_idx % self.size
        if self._used is not None:
            _USED_ELEM.pack_into(self._used, 4 + 8 * slot, head, written)
        else:
            elem = self.device + 4 + 8 * slot
            self._ring(elem, 8, True, "used ring")
            self.mem.write(elem, _USED_ELEM.pack(head, written))
        self.used_idx = (self.used_idx + 1) & 0xFFFF
        self.requests += 1
        self.bytes += written

    def publish(self) -> None:
        """Make every pushed element visible with one used-index write (after the
        elements: x86 is TSO), then, with the event index, ask for a kick as soon
        as the driver publishes past what was consumed."""
        if self.published != self.used_idx:
            if self._used is not None:
                _U16.pack_into(self._used, 2, self.used_idx)
            else:
                self._ring(self.device + 2, 2, True, "used index")
                self.mem.write(self.device + 2, _U16.pack(self.used_idx))
            self.published = self.used_idx
        if self.event_idx:
            offset = 4 + 8 * self.size
            if self._used is not None:
                _U16.pack_into(self._used, offset, self.next_avail)
            else:
                self._ring(self.device + offset, 2, True, "available event")
                self.mem.write(self.device + offset, _U16.pack(self.next_avail))

    def take_refused(self) -> int:
        n, self.refused = self.refused, 0
        return n

    def interrupt_due(self) -> bool:
        """Whether the driver wants an interrupt for what was published since the
        last call (call after ``publish``).  A field the device may not read means
        an interrupt, which is always allowed."""
        old, new = self.signalled, self.published
        if old == new:
            return False
        self.signalled = new
        offset = 4 + 2 * self.size if self.event_idx else 0
        dma = self.dma
        if (
            self._avail is None
            and dma is not None
            and not dma.allows(self.driver + offset, 2, False)
        ):
            return True
        if self.event_idx:
            return need_event(self._avail_u16(offset, "used event"), new, old)
        return not self._avail_u16(0, "available flags") & AVAIL_F_NO_INTERRUPT


def views(mem: GuestRam, buffers: tuple[Buffer, ...], skip: int, length: int) -> list[memoryview]:
    """Guest-memory views covering ``length`` bytes of ``buffers`` after the first
    ``skip`` (buffers of a validated chain: their DMA windows were checked)."""
    out = []
    for b in buffers:
        if length <= 0:
            break
        if skip >= b.length:
            skip -= b.length
            continue
        n = min(b.length - skip, length)
        out.append(mem.view(b.addr + skip, n))
        length -= n
        skip = 0
    return out


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
