"""virtio-blk's C path (vmm/kvm/blkfast.c: the usual header + data + status
request parsed and served in C) against the Python path: hypothesis builds a
batch of requests, well-formed or not, then corrupts descriptors and
available-ring entries (flags, lengths, addresses outside RAM or across the
table, next indexes past the queue, loops, overlapping buffers, headers of
every type), with the IOMMU enforcing windows that leave some buffers
unreadable or unwritable, or with no IOMMU; two devices serve the same batch,
one with the C path off, and everything observable must be the same: used
entries, guest memory, the image, error and refusal counts, the device's
status and the reason it needs a reset.  No KVM.
"""

from __future__ import annotations

import struct
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from tests.virtio.driver import RAM, Driver, Irqs, make_ram
from vmm.devices.iommu import Iommu
from vmm.devices.virtio import blk
from vmm.devices.virtio.blk import BlockDevice
from vmm.devices.virtio.mmio import MmioTransport

SECTORS = 160
QSIZE = 16
TYPES = [blk.T_IN, blk.T_IN, blk.T_OUT, blk.T_FLUSH, blk.T_GET_ID, 99]

request = st.tuples(
    st.sampled_from(TYPES),
    st.integers(0, SECTORS + 2),  # sector, past the end sometimes
    st.sampled_from([512, 4096, 4096, 1000, 65536]),  # data length
    st.booleans(),  # data writable
    st.booleans(),  # its data in the buffer the other such requests share
)
# (descriptor, field, value): what the corruption does to the table.
corruption = st.tuples(
    st.integers(0, QSIZE - 1),
    st.sampled_from(["flags", "len", "addr", "alias", "next"]),
    st.integers(0, 15),
)


def serve(image: Path, fast: bool, dma: str, reqs: list[tuple], corrupt: list[tuple],  # type: ignore[type-arg]
          heads: list[int], unmapped: list[int], avail_idx: int | None = None
          ) -> tuple:  # type: ignore[type-arg]  # fmt: skip
    mem = make_ram()
    dev = BlockDevice(image)
    dev.fast = fast
    logs: list[str] = []
    t = MmioTransport(dev, mem, mem.contains, Irqs(), logs.append)
    iommu = None
    if dma != "none":
        iommu = Iommu(lambda _m: None)
        t.dma = iommu.attach(0xD000E000, "test", t.lock)
    d = Driver(t, mem)
    d.init([QSIZE])
    q = d.queues[0]
    start = d.heap
    shared = d.alloc(65536, 4096)
    addrs = [q.desc, q.desc + 8, q.avail, q.used, RAM - 8, RAM, RAM + 4096, shared, shared + 100,
             (1 << 64) - 8]  # fmt: skip
    for i, (type_, sector, d_len, d_w, share) in enumerate(reqs):
        hdr, status = d.alloc(16), d.alloc(1)
        buf = shared if share else d.alloc(d_len, 512)
        addrs += [hdr, buf, status]
        mem.write(hdr, struct.pack("<IIQ", type_, 0, sector))
        if not share:
            mem.write(buf, bytes([i + 1]) * d_len)
        mem.write(status, b"\xee")
        d.submit(0, [(hdr, 16, False), (buf, d_len, d_w), (status, 1, True)], kick=False)
    for index, field, value in corrupt:
        at = q.desc + 16 * index
        addr, length, flags, nxt = struct.unpack("<QIHH", mem.read(at, 16))
        if field == "flags":
            flags = value & 7
        elif field == "len":
            length = [0, 1, 15, 16, 17, 512, 4096, 1 << 31][value % 8]
        elif field == "addr":
            addr = addrs[value % len(addrs)]
        elif field == "alias":  # a neighbour's buffer: in the same chain, mostly
            other = q.desc + 16 * ((index + 1 + value % 2) % QSIZE)
            addr = struct.unpack("<Q", mem.read(other, 8))[0] + value // 2 % 2
        else:
            nxt = value  # past QSIZE sometimes; itself sometimes (a loop)
        mem.write(at, struct.pack("<QIHH", addr, length, flags, nxt))
    for slot, head in enumerate(heads[: len(reqs)]):
        mem.write(q.avail + 4 + 2 * slot, struct.pack("<H", head))
    if avail_idx is not None:
        mem.write(q.avail + 2, struct.pack("<H", avail_idx))
    if iommu is not None and t.dma is not None:
        for page in range(q.desc & ~0xFFF, d.heap + 0x1000, 0x1000):
            if page // 0x1000 % 64 not in unmapped:
                t.dma.map(page, 0x1000, 3)
            elif page // 0x1000 % 2:
                t.dma.map(page, 0x1000, 1)  # readable only
        t.dma.enforcing = dma == "enforcing"
    d.w32(0x50, 0)  # QueueNotify: served before the write returns
    used = d.used(0)
    out = (used, mem.read(start, d.heap - start), dev.errors, t.status, t.errors,
           t.needs_reset_reason, t.counters())  # fmt: skip
    t.close()
    mem.close()
    return out


@settings(max_examples=200, deadline=None)
@given(
    reqs=st.lists(request, min_size=1, max_size=QSIZE // 3),
    corrupt=st.lists(corruption, max_size=3),
    heads=st.lists(
        st.sampled_from([0, 0, 3, 6, 9, 12, 1, QSIZE - 1, QSIZE, 0xFFFF]),
        min_size=QSIZE,
        max_size=QSIZE,
    ),
    keep_heads=st.booleans(),
    dma=st.sampled_from(["none", "open", "enforcing"]),
    unmapped=st.lists(st.integers(0, 63), max_size=3),
)
def test_the_c_path_serves_as_the_python_one(
    tmp_path_factory,  # type: ignore[no-untyped-def]
    reqs: list[tuple],  # type: ignore[type-arg]
    corrupt: list[tuple],  # type: ignore[type-arg]
    heads: list[int],
    keep_heads: bool,
    dma: str,
    unmapped: list[int],
) -> None:
    if keep_heads:
        heads = [3 * i for i in range(len(reqs))]  # the heads as submitted
    results = []
    for fast in (True, False):
        image = tmp_path_factory.mktemp("img") / "disk.img"
        image.write_bytes(bytes(range(256)) * 2 * SECTORS)
        out = serve(image, fast, dma, reqs, corrupt, heads, unmapped)
        results.append((out, image.read_bytes()))
    assert results[0] == results[1]


def test_the_c_path_takes_the_usual_requests(tmp_path: Path) -> None:
    """Well-formed reads and writes, the IOMMU enforcing: C serves them all
    (Python sees none), and the data lands."""
    image = tmp_path / "disk.img"
    image.write_bytes(bytes(range(256)) * 2 * SECTORS)
    seen: list[int] = []
    orig = BlockDevice._serve_chain

    def spy(self, q, head, buffers, flushes):  # type: ignore[no-untyped-def]
        seen.append(head)
        orig(self, q, head, buffers, flushes)

    BlockDevice._serve_chain = spy  # type: ignore[method-assign]
    try:
        reqs = [(blk.T_IN, 8 * i, 4096, True, False) for i in range(4)]
        reqs.append((blk.T_OUT, 0, 512, False, False))
        used, _, errors, _, _, reason, counters = serve(
            image, True, "enforcing", reqs, [], [3 * i for i in range(5)], []
        )
    finally:
        BlockDevice._serve_chain = orig  # type: ignore[method-assign]
    assert not seen and not errors and not reason
    assert used == [(0, 4097), (3, 4097), (6, 4097), (9, 4097), (12, 1)]
    assert counters["requests"] == 5
    assert image.read_bytes()[:512] == bytes([5]) * 512  # request 5's buffer, written


def test_a_buffer_that_wraps_the_address_space_is_left_to_python(tmp_path: Path) -> None:
    """A header at 2**64 - 8: its end wraps to 8, which a careless range check
    would find inside RAM.  Both paths refuse the queue with the same reason."""
    outs = []
    for fast in (True, False):
        image = tmp_path / f"disk{fast}.img"
        image.write_bytes(bytes(512 * SECTORS))
        reqs = [(blk.T_IN, 0, 512, True, False)]
        outs.append(serve(image, fast, "none", reqs, [(0, "addr", 9)], [0], []))
    assert outs[0] == outs[1]
    assert "outside guest RAM" in outs[0][5]


def test_an_available_index_more_than_a_queue_ahead_is_left_to_python(tmp_path: Path) -> None:
    """The driver's index a queue and one ahead (and half the index space):
    C takes nothing (it would read past its array), Python refuses the queue."""
    for avail_idx in (QSIZE + 1, 0x8000, 0xFFFF):
        outs = []
        for fast in (True, False):
            image = tmp_path / f"disk{fast}.img"
            image.write_bytes(bytes(512 * SECTORS))
            reqs = [(blk.T_IN, 0, 512, True, False)]
            outs.append(serve(image, fast, "none", reqs, [], [0], [], avail_idx))
        assert outs[0] == outs[1]
        assert not outs[0][0] and "ahead" in outs[0][5]
