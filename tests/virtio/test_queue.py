"""The split-virtqueue parser against hostile guest memory (no KVM).

Hand-made malformed queues for each rule, and hypothesis feeding arbitrary
bytes as descriptor tables and rings: the parser either returns a chain that
satisfies every invariant or raises QueueError - never anything else.
"""

from __future__ import annotations

import itertools
import struct

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from vmm.devices.virtio.queue import (
    DESC_F_INDIRECT,
    DESC_F_NEXT,
    DESC_F_WRITE,
    QueueError,
    available_heads,
    check_layout,
    need_event,
    read_chain,
)

RAM_SIZE = 0x10000
DESC = 0x1000


class Ram:
    def __init__(self, size: int = RAM_SIZE) -> None:
        self.buf = bytearray(size)

    def contains(self, addr: int, length: int) -> bool:
        return addr >= 0 and length >= 0 and addr + length <= len(self.buf)

    def read(self, addr: int, length: int) -> bytes:
        if not self.contains(addr, length):
            raise QueueError("outside")  # what GuestMemory raises is a KeelError too
        return bytes(self.buf[addr : addr + length])

    def desc(self, index: int, addr: int, length: int, flags: int = 0, nxt: int = 0) -> None:
        struct.pack_into("<QIHH", self.buf, DESC + 16 * index, addr, length, flags, nxt)


def chain(ram: Ram, head: int = 0, size: int = 8):  # type: ignore[no-untyped-def]
    return read_chain(ram.read, ram.contains, DESC, size, head)


def test_good_chain() -> None:
    ram = Ram()
    ram.desc(0, 0x4000, 16, DESC_F_NEXT, 3)
    ram.desc(3, 0x5000, 512, DESC_F_NEXT | DESC_F_WRITE, 5)
    ram.desc(5, 0x6000, 1, DESC_F_WRITE)
    c = chain(ram)
    assert [b.addr for b in c.buffers] == [0x4000, 0x5000, 0x6000]
    assert len(c.readable) == 1 and len(c.writable) == 2


@pytest.mark.parametrize(
    ("setup", "needle"),
    [
        (lambda r: r.desc(0, RAM_SIZE - 8, 16), "outside guest RAM"),
        (lambda r: r.desc(0, 1 << 60, 16), "outside guest RAM"),
        (lambda r: r.desc(0, 0x4000, 0), "zero-length"),
        (lambda r: r.desc(0, 0x4000, 16, DESC_F_INDIRECT), "indirect"),
        (lambda r: r.desc(0, 0x4000, 16, 0x80), "unknown flags"),
        (lambda r: r.desc(0, 0x4000, 16, DESC_F_NEXT, 0), "loops"),
        (lambda r: (r.desc(0, 0x4000, 16, DESC_F_NEXT, 1), r.desc(1, 0x5000, 16, DESC_F_NEXT, 0)),
         "loops"),
        (lambda r: r.desc(0, 0x4000, 16, DESC_F_NEXT, 9), "beyond the queue"),
        (lambda r: (r.desc(0, 0x4000, 16, DESC_F_NEXT | DESC_F_WRITE, 1), r.desc(1, 0x5000, 16)),
         "readable buffer after a writable"),
        (lambda r: (r.desc(0, 0x4000, 16, DESC_F_NEXT, 1), r.desc(1, 0x4008, 16)), "overlapping"),
    ],
)  # fmt: skip
def test_malformed_chains(setup, needle) -> None:  # type: ignore[no-untyped-def]
    ram = Ram()
    setup(ram)
    with pytest.raises(QueueError, match=needle):
        chain(ram)


def test_descriptor_table_outside_ram() -> None:
    ram = Ram()
    with pytest.raises(QueueError, match="outside guest RAM"):
        read_chain(ram.read, ram.contains, RAM_SIZE - 8, 8, 0)


def test_head_beyond_queue() -> None:
    with pytest.raises(QueueError, match="beyond the queue size"):
        chain(Ram(), head=8)


def test_available_index_too_far_ahead() -> None:
    ram = Ram()
    struct.pack_into("<HH", ram.buf, 0x2000, 0, 9)
    with pytest.raises(QueueError, match="ahead"):
        available_heads(ram.read, 0x2000, 8, 0)
    struct.pack_into("<HH", ram.buf, 0x2000, 0, 3)  # wraps: 3 - 65534 = 5 pending
    idx, heads = available_heads(ram.read, 0x2000, 8, 65534)
    assert idx == 3 and len(heads) == 5


@pytest.mark.parametrize(
    ("size", "desc", "needle"),
    [(0, DESC, "power of two"), (6, DESC, "power of two"), (512, DESC, "power of two"),
     (8, DESC + 8, "aligned"), (8, RAM_SIZE - 16, "outside")],
)  # fmt: skip
def test_layout_checks(size: int, desc: int, needle: str) -> None:
    ram = Ram()
    with pytest.raises(QueueError, match=needle):
        check_layout(ram.contains, size, 256, desc, 0x2000, 0x3000)


# Valid-looking descriptors just past the table (indices 8 and 9, at
# addresses no table entry of the test uses): a chain that reaches one was
# let past the queue's bounds.
DECOY = 0xE000


def _desc(addr: int, length: int, flags: int = 0, nxt: int = 0) -> bytes:
    return struct.pack("<QIHH", addr, length, flags, nxt)


_QUIET = _desc(0x4000, 16) + bytes(16 * 7)  # descriptor 0 alone, the rest zero
# The bug classes the random tables must not leave to chance: a next index
# past the table (8, 9), and heads past it.
KNOWN_TABLES = [
    (_desc(0x4000, 16, DESC_F_NEXT, 9) + bytes(16 * 7), 0, False),
    (_desc(0x4000, 16, DESC_F_NEXT, 8) + bytes(16 * 7), 0, False),
    (_desc(0x4000, 16, DESC_F_NEXT, 1) + _desc(0x5000, 16, DESC_F_NEXT, 8) + bytes(16 * 6), 0,
     False),
    (_QUIET, 8, False),
    (_QUIET, 9, False),
]  # fmt: skip


def assert_sound_chain(ram: Ram, c) -> None:  # type: ignore[no-untyped-def]
    """What any chain the queue accepts must be: every buffer non-empty and in
    RAM, the readable ones before the writable ones, no two overlapping."""
    seen_w = False
    for b in c.buffers:
        assert b.length > 0 and ram.contains(b.addr, b.length)
        assert b.writable or not seen_w
        seen_w = b.writable
    spans = sorted((b.addr, b.addr + b.length) for b in c.buffers)
    assert all(a[1] <= b[0] for a, b in itertools.pairwise(spans))


def _with_known_tables(f):  # type: ignore[no-untyped-def]
    for table, head, small in KNOWN_TABLES:
        f = example(table=table, head=head, small_addrs=small)(f)
    return f


@settings(max_examples=1000, deadline=None)
@given(
    table=st.binary(min_size=16 * 8, max_size=16 * 8),
    head=st.integers(0, 9),
    small_addrs=st.booleans(),
)
@_with_known_tables
def test_fuzz_descriptor_tables(table: bytes, head: int, small_addrs: bool) -> None:
    ram = Ram()
    if small_addrs:  # make addresses land in RAM often, so deep chains are explored
        table = b"".join(
            struct.pack("<QIHH", a % DECOY, ln % 0x800, f & 7, n % 10)
            for a, ln, f, n in struct.iter_unpack("<QIHH", table)
        )
    ram.buf[DESC : DESC + len(table)] = table
    ram.desc(8, DECOY, 16)
    ram.desc(9, DECOY + 0x100, 16)
    try:
        c = chain(ram, head)
    except QueueError:
        return
    assert 1 <= len(c.buffers) <= 8
    assert all(b.addr < DECOY for b in c.buffers), "a descriptor past the table was used"
    assert_sound_chain(ram, c)


@settings(max_examples=500, deadline=None)
@given(ring=st.binary(min_size=4 + 16, max_size=4 + 16), next_avail=st.integers(0, 0xFFFF))
@example(ring=struct.pack("<HH", 0, 9) + bytes(16), next_avail=0)  # one past the queue size
def test_fuzz_available_ring(ring: bytes, next_avail: int) -> None:
    ram = Ram()
    ram.buf[0x2000 : 0x2000 + len(ring)] = ring
    try:
        idx, heads = available_heads(ram.read, 0x2000, 8, next_avail)
    except QueueError:
        return
    assert len(heads) == (idx - next_avail) & 0xFFFF <= 8


@settings(max_examples=300, deadline=None)
@given(table=st.binary(min_size=16 * 8, max_size=16 * 8), head=st.integers(0, 7))
def test_fuzz_table_view_reads_as_the_piecewise_path(table: bytes, head: int) -> None:
    """The batch path (descriptors read from one view of the whole table)
    accepts and refuses exactly what the descriptor-by-descriptor path does."""
    ram = Ram()
    table = b"".join(
        struct.pack("<QIHH", a % RAM_SIZE, ln % 0x800, f & 7, n % 9)
        for a, ln, f, n in struct.iter_unpack("<QIHH", table)
    )
    ram.buf[DESC : DESC + len(table)] = table
    results = []
    for view in (None, memoryview(ram.buf)[DESC : DESC + 16 * 8]):
        try:
            results.append(read_chain(ram.read, ram.contains, DESC, 8, head, None, view))
        except QueueError as exc:
            results.append(str(exc))
    assert results[0] == results[1]


@pytest.mark.parametrize(
    ("event", "new", "old", "due"),
    [(0, 1, 0, True), (5, 6, 5, True), (5, 10, 0, True), (5, 5, 0, False), (10, 10, 5, False),
     (0xFFFF, 0, 0xFFFF, True), (0xFFFE, 2, 0xFFFD, True), (3, 3, 3, False)],
)  # fmt: skip
def test_need_event(event: int, new: int, old: int, due: bool) -> None:
    assert need_event(event, new, old) is due


# -- indirect descriptors (VIRTIO_F_INDIRECT_DESC) ------------------------------------------
TABLE = 0x8000  # an indirect table of up to 8 entries; decoys just after it


def ichain(ram: Ram, head: int = 0, size: int = 8):  # type: ignore[no-untyped-def]
    return read_chain(ram.read, ram.contains, DESC, size, head, indirect=True)


def itable(ram: Ram, index: int, addr: int, length: int, flags: int = 0, nxt: int = 0) -> None:
    struct.pack_into("<QIHH", ram.buf, TABLE + 16 * index, addr, length, flags, nxt)


def test_indirect_chain() -> None:
    """A direct header, then a descriptor naming a table of data and status (the
    WRITE flag of the indirect descriptor itself is ignored, as virtio asks)."""
    ram = Ram()
    ram.desc(0, 0x4000, 16, DESC_F_NEXT, 5)
    ram.desc(5, TABLE, 32, DESC_F_INDIRECT | DESC_F_WRITE)
    itable(ram, 0, 0x5000, 512, DESC_F_NEXT | DESC_F_WRITE, 1)
    itable(ram, 1, 0x6000, 1, DESC_F_WRITE)
    c = ichain(ram)
    assert [(b.addr, b.length, b.writable) for b in c.buffers] == [
        (0x4000, 16, False), (0x5000, 512, True), (0x6000, 1, True)]  # fmt: skip
    ram.desc(0, TABLE, 16, DESC_F_INDIRECT)  # a table of one, alone in the ring
    itable(ram, 0, 0x5000, 512)
    assert ichain(ram).buffers == ((0x5000, 512, False),)


@pytest.mark.parametrize(
    ("setup", "needle"),
    [
        (lambda r: r.desc(0, TABLE, 16, DESC_F_INDIRECT | DESC_F_NEXT, 1), "indirect and NEXT"),
        (lambda r: r.desc(0, TABLE, 24, DESC_F_INDIRECT), "indirect table of 24 bytes"),
        (lambda r: r.desc(0, TABLE, 0, DESC_F_INDIRECT), "indirect table of 0 bytes"),
        (lambda r: r.desc(0, TABLE, 16 * 9, DESC_F_INDIRECT), "at most the queue size"),
        (lambda r: r.desc(0, RAM_SIZE - 16, 32, DESC_F_INDIRECT), "outside guest RAM"),
        (lambda r: r.desc(0, 1 << 63, 16, DESC_F_INDIRECT), "outside guest RAM"),
        (lambda r: (r.desc(0, TABLE, 32, DESC_F_INDIRECT),
                    itable(r, 0, 0x4000, 16, DESC_F_NEXT, 1), itable(r, 1, TABLE, 16, 4)),
         "indirect again"),
        (lambda r: (r.desc(0, TABLE, 32, DESC_F_INDIRECT),
                    itable(r, 0, 0x4000, 16, DESC_F_NEXT, 0)), "loops"),
        (lambda r: (r.desc(0, TABLE, 32, DESC_F_INDIRECT),
                    itable(r, 0, 0x4000, 16, DESC_F_NEXT, 1),
                    itable(r, 1, 0x5000, 16, DESC_F_NEXT, 0)), "loops"),
        (lambda r: (r.desc(0, TABLE, 32, DESC_F_INDIRECT),
                    itable(r, 0, 0x4000, 16, DESC_F_NEXT, 2)), "beyond the indirect table"),
        (lambda r: (r.desc(0, 0x4000, 16, DESC_F_NEXT | DESC_F_WRITE, 1),
                    r.desc(1, TABLE, 16, DESC_F_INDIRECT), itable(r, 0, 0x5000, 16)),
         "readable buffer after a writable"),
        (lambda r: (r.desc(0, 0x4000, 16, DESC_F_NEXT, 1), r.desc(1, TABLE, 16, DESC_F_INDIRECT),
                    itable(r, 0, 0x4008, 16)), "overlapping"),
        (lambda r: (r.desc(0, TABLE, 16, DESC_F_INDIRECT), itable(r, 0, 0x4000, 0)), "zero-length"),
        (lambda r: (r.desc(0, TABLE, 16, DESC_F_INDIRECT), itable(r, 0, RAM_SIZE - 8, 16)),
         "outside guest RAM"),
        (lambda r: (r.desc(0, TABLE, 16, DESC_F_INDIRECT), itable(r, 0, 0x4000, 16, 0x80)),
         "unknown flags"),
        (lambda r: (r.desc(0, 0x3000, 16, DESC_F_NEXT, 1), r.desc(1, TABLE, 128, DESC_F_INDIRECT),
                    *(itable(r, i, 0x4000 + 0x100 * i, 16, DESC_F_NEXT, i + 1) for i in range(7)),
                    itable(r, 7, 0x4800, 16)), "longer than the queue size"),
    ],
)  # fmt: skip
def test_malformed_indirect_chains(setup, needle) -> None:  # type: ignore[no-untyped-def]
    ram = Ram()
    setup(ram)
    with pytest.raises(QueueError, match=needle):
        ichain(ram)


class Windows:
    """A DMA guard allowing one range (read and write), recording faults."""

    def __init__(self, base: int, end: int) -> None:
        self.base, self.end = base, end
        self.faults: list[tuple[int, int, bool, str]] = []

    def allows(self, addr: int, length: int, write: bool) -> bool:
        return self.base <= addr and addr + length <= self.end

    def fault(self, addr: int, length: int, write: bool, what: str) -> None:
        self.faults.append((addr, length, write, what))


def test_indirect_table_outside_the_dma_windows_is_refused_unread() -> None:
    ram = Ram()
    ram.desc(0, 0x4000, 16, DESC_F_NEXT, 1)
    ram.desc(1, TABLE, 32, DESC_F_INDIRECT)
    reads: list[tuple[int, int]] = []

    def read(addr: int, length: int) -> bytes:
        reads.append((addr, length))
        return ram.read(addr, length)

    dma = Windows(0, TABLE + 16)  # half the table
    c = read_chain(read, ram.contains, DESC, 8, 0, dma, None, True)
    assert c.refused and c.cut and c.buffers == ((0x4000, 16, False),)
    assert dma.faults == [(TABLE, 32, False, "indirect table of request 0")]
    assert not [r for r in reads if r[0] >= TABLE], "the table was read"


@settings(max_examples=1000, deadline=None)
@given(
    table=st.binary(min_size=16 * 8, max_size=16 * 8),
    ring=st.binary(min_size=16, max_size=16),
    small_addrs=st.booleans(),
    view=st.booleans(),
)
@example(table=_desc(0x4000, 16, DESC_F_NEXT, 8) + bytes(16 * 7), ring=_desc(TABLE, 128, 4),
         small_addrs=False, view=False)  # next one past the table: the decoy
@example(table=_desc(0x4000, 16, DESC_F_NEXT, 1) + bytes(16 * 7), ring=_desc(TABLE, 16, 4),
         small_addrs=False, view=True)  # next 1 in a table of one: the decoy
def test_fuzz_indirect_tables(table: bytes, ring: bytes, small_addrs: bool, view: bool) -> None:
    """Arbitrary indirect tables (and ring descriptors naming them): the parser
    returns a chain that keeps every rule or raises QueueError, and never
    uses an entry past the table's stated length (decoys lie just after it)."""
    ram = Ram()
    if small_addrs:
        table = b"".join(
            struct.pack("<QIHH", a % DECOY, ln % 0x800, f & 7, n % 10)
            for a, ln, f, n in struct.iter_unpack("<QIHH", table)
        )
        a, ln, f, n = struct.unpack("<QIHH", ring)
        ring = struct.pack("<QIHH", TABLE + 16 * (a % 2), 16 * (ln % 10), (f & 7) | 4, n % 8)
    ram.buf[TABLE : TABLE + len(table)] = table
    addr, length = struct.unpack_from("<QI", ring)
    end = addr + length  # the table as the ring descriptor states it ends here
    if 0 <= end <= RAM_SIZE - 32:
        struct.pack_into("<QIHH", ram.buf, end, DECOY, 16, 0, 0)
        struct.pack_into("<QIHH", ram.buf, end + 16, DECOY + 0x100, 16, 0, 0)
    ram.buf[DESC : DESC + 16] = ring
    tview = memoryview(ram.buf)[DESC : DESC + 16 * 8] if view else None
    try:
        c = read_chain(ram.read, ram.contains, DESC, 8, 0, None, tview, True)
    except QueueError:
        return
    assert 1 <= len(c.buffers) <= 8
    assert all(b.addr < DECOY for b in c.buffers), "an entry past the table was used"
    assert_sound_chain(ram, c)


@pytest.mark.parametrize("pair", [(0, 1), (0, 2), (1, 2)])
@pytest.mark.parametrize("size", [3, 5])
def test_every_pair_of_a_chain_is_checked_for_overlap(pair: tuple[int, int], size: int) -> None:
    """Three buffers (the usual request, checked inline) and five (sorted): any
    two that share a byte refuse the chain."""
    ram = Ram()
    addrs = [0x4000 + 0x1000 * i for i in range(size)]
    addrs[pair[1]] = addrs[pair[0]] + 0x7F  # inside the other's 0x80 bytes
    for i, addr in enumerate(addrs):
        last = i == size - 1
        ram.desc(i, addr, 0x80, (0 if last else DESC_F_NEXT) | DESC_F_WRITE, i + 1)
    with pytest.raises(QueueError, match="overlapping"):
        chain(ram)
    addrs[pair[1]] = addrs[pair[0]] + 0x80  # touching is not overlapping
    flags = (0 if pair[1] == size - 1 else DESC_F_NEXT) | DESC_F_WRITE
    ram.desc(pair[1], addrs[pair[1]], 0x80, flags, pair[1] + 1)
    assert len(chain(ram).buffers) == size
