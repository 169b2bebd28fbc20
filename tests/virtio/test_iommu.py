"""The paravirtual IOMMU (vmm/devices/iommu.py, docs/iommu.md) without KVM.

The window checker on its own; its register interface; hypothesis driving
the rng and block device models through a queue whose memory records every
access, with random windows and random (often hostile) descriptors: every
byte read lies in a readable window, every byte that changes in a writable
one, whatever the guest wrote; and the transport end to end with the
Linux-style test driver: a refused request fails (IOERR for a disk), is
counted and logged, and the device keeps serving good requests.
"""

from __future__ import annotations

import struct
import tempfile
import threading
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.virtio.driver import Driver, attach
from vmm.devices import iommu as io
from vmm.devices.iommu import DmaWindows, Iommu
from vmm.devices.virtio import blk, regs
from vmm.devices.virtio.blk import BlockDevice
from vmm.devices.virtio.queue import DESC_F_NEXT, DESC_F_WRITE, QueueError, Virtqueue
from vmm.devices.virtio.rng import RngDevice

R, W, RW = io.ACCESS_READ, io.ACCESS_WRITE, io.ACCESS_READ | io.ACCESS_WRITE
BASE = 0xD0000000


def windows(*wins: tuple[int, int, int], enforcing: bool = True) -> DmaWindows:
    d = DmaWindows("dev0", enforcing, lambda _m: None)
    for base, length, access in wins:
        assert d.map(base, length, access) == io.RESULT_OK
    return d


# -- the window checker ---------------------------------------------------------------
def test_allows_needs_every_byte_and_the_right_access() -> None:
    d = windows((0x1000, 0x1000, R), (0x2000, 0x1000, RW), (0x4000, 0x1000, W))
    assert d.allows(0x1000, 0x1000, False) and not d.allows(0x1000, 1, True)
    assert d.allows(0x1800, 0x1000, False)  # across two touching windows
    assert not d.allows(0x1800, 0x1000, True)  # the first is read-only
    assert not d.allows(0x2800, 0x1000, False)  # runs into the hole at 0x3000
    assert d.allows(0x4000, 0x1000, True) and not d.allows(0x4000, 1, False)
    assert not d.allows(0x0FFF, 2, False) and not d.allows(0x5000, 1, True)
    assert d.allows(0x1000, 0, False)  # nothing to access
    assert windows(enforcing=False).allows(0x1234, 99, True)  # not enforcing: as before


def test_overlapping_grants_allow_their_union() -> None:
    # a read grant of three pages, a write grant of the middle one inside it
    d = windows((0x1000, 0x3000, R), (0x2000, 0x1000, W))
    assert d.allows(0x1000, 0x3000, False)  # reads the whole range
    assert d.allows(0x2000, 0x1000, True)  # writes where the write grant is
    assert not d.allows(0x1800, 0x1000, True) and not d.allows(0x2800, 0x1000, True)
    assert d.unmap(0x2000, 0x1000, W) == io.RESULT_OK
    assert not d.allows(0x2000, 1, True) and d.allows(0x2000, 1, False)


def test_unmap_removes_exactly_one_grant() -> None:
    d = windows((0x1000, 0x1000, RW), (0x2000, 0x1000, RW), (0x2000, 0x1000, R))
    assert d.unmap(0x2000, 0x1000, RW) == io.RESULT_OK
    assert d.windows == [(0x1000, 0x1000, RW), (0x2000, 0x1000, R)]  # the read grant stays
    assert not d.allows(0x2000, 1, True) and d.allows(0x2000, 1, False)
    assert d.unmap(0x2000, 0x1000, RW) == io.RESULT_NOT_FOUND
    assert d.unmap(0x1000, 0x800, RW) == io.RESULT_NOT_FOUND  # only a whole window
    assert d.windows == [(0x1000, 0x1000, RW), (0x2000, 0x1000, R)]
    d.clear()
    assert d.windows == [] and not d.allows(0x1000, 1, False)


def test_bad_windows_and_a_full_table() -> None:
    d = windows()
    assert d.map(0x1000, 0, R) == io.RESULT_BAD_WINDOW
    assert d.map(0x1000, 0x1000, 0) == io.RESULT_BAD_WINDOW
    assert d.map(0x1000, 0x1000, 8) == io.RESULT_BAD_WINDOW
    assert d.map(io.ADDR_LIMIT - 0x1000, 0x2000, R) == io.RESULT_BAD_WINDOW
    for i in range(io.MAX_WINDOWS):
        assert d.map(i * 0x1000, 0x1000, R) == io.RESULT_OK
    assert d.map(0x10000000, 0x1000, R) == io.RESULT_FULL


def test_removal_waits_for_the_request_in_progress() -> None:
    barrier = threading.RLock()
    d = DmaWindows("dev0", True, lambda _m: None, barrier)
    d.map(0x1000, 0x1000, RW)
    done = threading.Event()
    with barrier:  # a request in progress (the transport's worker holds its lock)
        t = threading.Thread(target=lambda: (d.unmap(0x1000, 0x1000, RW), done.set()))
        t.start()
        time.sleep(0.1)
        assert not done.is_set() and d.allows(0x1000, 8, True)
    t.join(5)
    assert done.is_set() and not d.allows(0x1000, 8, True)


def test_faults_are_counted_logged_and_the_log_is_bounded() -> None:
    logs: list[str] = []
    unit = Iommu(logs.append)
    d = unit.attach(BASE, "rng0")
    unit.write(io.REG_CONTROL, io.CONTROL_ENABLE.to_bytes(4, "little"))
    for i in range(io.LOGGED_FAULTS + 5):
        d.fault(0x5000 + i, 16, True, "buffer of request 0")
    assert d.faults == unit.total_faults == io.LOGGED_FAULTS + 5
    fault_lines = [m for m in logs if "outside its windows" in m]
    assert len(fault_lines) == io.LOGGED_FAULTS
    assert "rng0: DMA write 0x5000+0x10" in fault_lines[0]


# -- registers ------------------------------------------------------------------------
class Regs:
    def __init__(self, unit: Iommu) -> None:
        self.unit = unit

    def r(self, off: int) -> int:
        return int.from_bytes(self.unit.read(off, 4), "little")

    def w(self, off: int, value: int) -> None:
        self.unit.write(off, value.to_bytes(4, "little"))

    def cmd(self, cmd: int, device: int, addr: int = 0, length: int = 0, access: int = 0) -> int:
        for off, v in ((io.REG_DEVICE_LOW, device), (io.REG_ADDR_LOW, addr),
                       (io.REG_LEN_LOW, length)):  # fmt: skip
            self.w(off, v & 0xFFFFFFFF)
            self.w(off + 4, v >> 32)
        self.w(io.REG_ACCESS, access)
        self.w(io.REG_COMMAND, cmd)
        return self.r(io.REG_RESULT)


def test_register_interface() -> None:
    unit = Iommu(lambda _m: None)
    regs = Regs(unit)
    assert regs.r(io.REG_MAGIC) == io.IOMMU_MAGIC and regs.r(io.REG_VERSION) == 1
    assert regs.r(io.REG_MAX_WINDOWS) == io.MAX_WINDOWS
    assert unit.cmdline() == "keel.iommu=0x100@0xd000e000"
    d = unit.attach(BASE, "disk0")
    assert not d.enforcing  # before the guest enables it: as without an IOMMU
    regs.w(io.REG_DEVICE_LOW, BASE)
    assert regs.r(io.REG_DEVICE_STATE) == io.STATE_PRESENT
    regs.w(io.REG_CONTROL, io.CONTROL_ENABLE)
    assert regs.r(io.REG_CONTROL) == io.CONTROL_ENABLE
    assert regs.r(io.REG_DEVICE_STATE) == io.STATE_PRESENT | io.STATE_ENFORCING
    assert regs.cmd(io.CMD_MAP, BASE, 0x1_2345_6000, 0x1000, RW) == io.RESULT_OK
    assert d.windows == [(0x1_2345_6000, 0x1000, RW)]
    assert regs.r(io.REG_WINDOW_COUNT) == 1
    assert regs.cmd(io.CMD_MAP, BASE + 0x1000, 0x1000, 0x1000, R) == io.RESULT_NO_DEVICE
    assert regs.cmd(io.CMD_MAP, BASE, 0x1000, 0, R) == io.RESULT_BAD_WINDOW
    assert regs.cmd(99, BASE) == io.RESULT_BAD_COMMAND
    assert regs.cmd(io.CMD_UNMAP, BASE, 0x1_2345_6000, 0x1000, R) == io.RESULT_NOT_FOUND
    assert regs.cmd(io.CMD_UNMAP, BASE, 0x1_2345_6000, 0x1000, RW) == io.RESULT_OK
    assert d.windows == []
    d.fault(0x7000, 4, True, "test")
    regs.w(io.REG_DEVICE_LOW, BASE)
    assert regs.r(io.REG_FAULTS) == 1 and regs.r(io.REG_TOTAL_FAULTS) == 1
    assert regs.r(io.REG_FAULT_ADDR_LOW) == 0x7000 and regs.r(io.REG_FAULT_INFO) == io.FAULT_WRITE
    assert unit.read(io.REG_MAGIC, 2) == b"\x00\x00"  # 32-bit accesses only
    # A device attached after the guest enabled the IOMMU starts enforcing an empty table.
    fresh = unit.attach(BASE + 0x1000, "rng0")
    assert fresh.enforcing and fresh.windows == [] and not fresh.allows(0x1000, 1, False)
    # So does a device that replaces another in the same slot.
    unit.detach(BASE)
    again = unit.attach(BASE, "disk1")
    assert again.windows == [] and again.faults == 0


# -- random windows and descriptors against the device models -------------------------
RAM_SIZE = 0x10000
QSIZE = 8
DESC, AVAIL, USED = 0x1000, 0x1100, 0x1200  # rings in the page at 0x1000


class RecordingRam:
    """Guest memory that records every access the device side makes."""

    def __init__(self) -> None:
        self.buf = bytearray(RAM_SIZE)
        self.reads: list[tuple[int, int]] = []
        self.writes: list[tuple[int, int]] = []
        self.views: list[tuple[int, int]] = []

    def _check(self, gpa: int, length: int) -> None:
        if gpa < 0 or length < 0 or gpa + length > RAM_SIZE:
            raise QueueError("outside")

    def read(self, gpa: int, length: int) -> bytes:
        self._check(gpa, length)
        self.reads.append((gpa, length))
        return bytes(self.buf[gpa : gpa + length])

    def write(self, gpa: int, data: bytes) -> None:
        self._check(gpa, len(data))
        self.writes.append((gpa, len(data)))
        self.buf[gpa : gpa + len(data)] = data

    def view(self, gpa: int, length: int) -> memoryview:
        self._check(gpa, length)
        self.views.append((gpa, length))
        return memoryview(self.buf)[gpa : gpa + length]

    def contains(self, gpa: int, length: int) -> bool:
        return gpa >= 0 and length >= 0 and gpa + length <= RAM_SIZE


def _covered(d: DmaWindows, addr: int, length: int, write: bool) -> bool:
    d.enforcing = True
    return d.allows(addr, length, write)


window_st = st.tuples(
    st.integers(0, RAM_SIZE // 0x100 - 1).map(lambda p: p * 0x100),
    st.integers(1, 0x40).map(lambda n: n * 0x100),
    st.sampled_from([R, W, RW]),
)
buffer_st = st.tuples(
    st.integers(0x2000, RAM_SIZE - 1), st.integers(1, 0x1200), st.booleans(), st.booleans()
)  # address, length, device-writable, granted (a window made for it, with the right access)
request_st = st.lists(buffer_st, min_size=1, max_size=3)
ring_access_st = st.sampled_from([0, R, W, RW, RW, RW])
# Each part of the rings in a window of its own, so each ring access is
# checked apart: the descriptor table, the available ring's flags and index,
# its entries, the used ring's flags and index, its entries.
RING_PARTS = ((DESC, 16 * QSIZE), (AVAIL, 4), (AVAIL + 4, 2 * QSIZE), (USED, 4),
              (USED + 4, 8 * QSIZE))  # fmt: skip


@pytest.fixture(scope="module")
def image() -> object:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "disk.img"
        path.write_bytes(bytes(range(256)) * 2 * 16)  # 16 sectors
        yield path


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow,
          HealthCheck.function_scoped_fixture])  # fmt: skip
@given(
    kind=st.sampled_from(["rng", "blk"]),
    wins=st.lists(window_st, max_size=4),
    rings=st.tuples(*[ring_access_st] * len(RING_PARTS)),
    requests=st.lists(request_st, min_size=1, max_size=4),
    header=st.tuples(st.sampled_from([blk.T_IN, blk.T_OUT, blk.T_FLUSH, blk.T_GET_ID, 7]),
                     st.integers(0, 20)),
    fill=st.integers(0, 255),
)  # fmt: skip
def test_nothing_outside_the_windows_is_ever_touched(
    image: Path,
    kind: str,
    wins: list[tuple[int, int, int]],
    rings: tuple[int, ...],
    requests: list[list[tuple[int, int, bool, bool]]],
    header: tuple[int, int],
    fill: int,
) -> None:
    ram = RecordingRam()
    ram.buf[:] = bytes([fill]) * RAM_SIZE
    dma = windows(*wins)
    for (base, length), access in zip(RING_PARTS, rings, strict=True):
        if access:
            dma.map(base, length, access)
    # The driver's side: descriptors, available ring (not recorded: the guest wrote them).
    slot = 0
    for n, bufs in enumerate(requests):
        bufs = sorted(bufs, key=lambda b: b[2])  # device-readable ones first
        if kind == "blk":
            struct.pack_into("<IIQ", ram.buf, 0x1F00 + 16 * n, header[0], 0, header[1])
            bufs = [(0x1F00 + 16 * n, 16, False, True), *bufs]
        head = slot
        for i, (addr, length, writable, granted) in enumerate(bufs):
            last = i == len(bufs) - 1
            flags = (0 if last else DESC_F_NEXT) | (DESC_F_WRITE if writable else 0)
            struct.pack_into("<QIHH", ram.buf, DESC + 16 * (slot % QSIZE),
                             addr, length, flags, (slot + 1) % QSIZE)  # fmt: skip
            if granted:
                dma.map(addr, length, W if writable else R)
            slot += 1
        struct.pack_into("<H", ram.buf, AVAIL + 4 + 2 * n, head % QSIZE)
        if slot > QSIZE:
            break
    struct.pack_into("<H", ram.buf, AVAIL + 2, len(requests))
    before = bytes(ram.buf)

    device = RngDevice() if kind == "rng" else BlockDevice(image, readonly=True)
    try:
        device.activate(ram, 0)
        q = Virtqueue(ram, ram.contains, QSIZE, DESC, AVAIL, USED, dma, device.refuse)
        try:
            device.service([q])
            q.publish()  # the transport's round publishes what the device pushed
        except QueueError:
            pass  # a malformed queue or a refused ring access: the device needs a reset
    finally:
        device.close()

    for addr, length in ram.reads:
        assert _covered(dma, addr, length, False), f"read {addr:#x}+{length:#x}"
    for addr, length in ram.writes:
        assert _covered(dma, addr, length, True), f"write {addr:#x}+{length:#x}"
    for addr, length in ram.views:
        assert _covered(dma, addr, length, False) or _covered(dma, addr, length, True)
    for addr in range(RAM_SIZE):
        if ram.buf[addr] != before[addr]:
            assert _covered(dma, addr, 1, True), f"byte {addr:#x} changed outside the windows"


def _one_rng_request(parts: tuple[int, ...]) -> tuple[RecordingRam, DmaWindows, bytes, bool]:
    """One 16-byte entropy request, each ring part (RING_PARTS) granted the
    access given; returns the memory, the windows, the memory before, and
    whether the queue was found broken (the device then needs a reset)."""
    ram = RecordingRam()
    dma = windows((0x4000, 0x1000, W))  # the request's buffer
    for (base, length), access in zip(RING_PARTS, parts, strict=True):
        if access:
            dma.map(base, length, access)
    struct.pack_into("<QIHH", ram.buf, DESC, 0x4000, 16, DESC_F_WRITE, 0)
    struct.pack_into("<HHH", ram.buf, AVAIL, 0, 1, 0)
    before = bytes(ram.buf)
    device = RngDevice()
    broken = False
    try:
        device.activate(ram, 0)
        q = Virtqueue(ram, ram.contains, QSIZE, DESC, AVAIL, USED, dma, device.refuse)
        try:
            device.service([q])
            q.publish()  # the transport's round publishes what the device pushed
        except QueueError:
            broken = True
    finally:
        device.close()
    return ram, dma, before, broken


@pytest.mark.parametrize(
    ("parts", "what"),
    [((R, R, R, RW, R), "used ring entry"),  # the index writable, the entries not
     ((R, R, R, R, RW), "used index"),  # the entries writable, the index not
     ((R, R, 0, RW, RW), "available entries"),  # the index readable, the entries not
     ((R, 0, R, RW, RW), "available index"),
     ((0, R, R, RW, RW), "descriptor table")],
)  # fmt: skip
def test_each_ring_part_is_checked_apart(parts: tuple[int, ...], what: str) -> None:
    """The examples the random test above must not miss: a ring whose index
    and entries lie in different windows, one of them without the access
    needed.  The device stops (needs a reset), or for a descriptor it may not
    read returns the request unserved, and writes nothing outside its
    windows; with every part granted the same request is served."""
    ram, dma, before, broken = _one_rng_request(parts)
    if what == "descriptor table":  # refused: returned with nothing written
        assert not broken
        assert struct.unpack_from("<HHII", ram.buf, USED) == (0, 1, 0, 0)
        assert ram.buf[0x4000:0x4010] == before[0x4000:0x4010]
    else:
        assert broken, what
    for addr in range(RAM_SIZE):
        if ram.buf[addr] != before[addr]:
            assert _covered(dma, addr, 1, True), f"{what}: byte {addr:#x} changed"
    for addr, length in ram.reads:
        assert _covered(dma, addr, length, False), f"{what}: read {addr:#x}+{length:#x}"
    assert dma.faults >= 1
    ram, dma, before, broken = _one_rng_request((R, R, R, RW, RW))
    assert not broken and dma.faults == 0
    assert struct.unpack_from("<HHII", ram.buf, USED) == (0, 1, 0, 16)


# -- the transport end to end ---------------------------------------------------------
def _blk_with_iommu(path: Path) -> tuple[Driver, Iommu, DmaWindows, list[str]]:
    unit = Iommu(lambda _m: None)
    drv, _irqs, logs = attach(BlockDevice(path))
    dma = unit.attach(BASE, "disk0", drv.dev.lock)
    dma._log = logs.append
    drv.dev.dma = dma
    Regs(unit).w(io.REG_CONTROL, io.CONTROL_ENABLE)
    return drv, unit, dma, logs


def test_blk_request_outside_the_windows_fails_with_ioerr(tmp_path: Path) -> None:
    path = tmp_path / "disk.img"
    path.write_bytes(b"\x11" * 512 * 8)
    drv, unit, dma, logs = _blk_with_iommu(path)
    drv.init([16])
    dma.map(0x100000, 0x1000, RW)  # the rings (the test driver's heap starts there)
    hdr, status = drv.alloc(16), drv.alloc(1)
    secret = 0x300000  # memory the driver was not given
    drv.mem.write(secret, b"\x99" * 1024)
    drv.mem.write(hdr, struct.pack("<IIQ", blk.T_IN, 0, 0))
    drv.submit(0, [(hdr, 16, False), (secret, 512, True), (status, 1, True)])
    ((_, written),) = drv.wait_used(0)
    assert written == 1 and drv.mem.read(status, 1) == bytes([blk.S_IOERR])
    assert drv.mem.read(secret, 1024) == b"\x99" * 1024
    assert dma.faults == 1 and unit.total_faults == 1
    assert any("disk0: DMA write 0x300000+0x200 outside its windows" in m for m in logs)
    # The device still serves a request inside its windows.
    buf = drv.alloc(512, 512)
    dma.map(buf & ~0xFFF, 0x1000, RW)
    drv.submit(0, [(hdr, 16, False), (buf, 512, True), (status, 1, True)])
    drv.wait_used(0)
    assert drv.mem.read(status, 1) == bytes([blk.S_OK])
    assert drv.mem.read(buf, 512) == b"\x11" * 512
    assert not drv.dev.status & regs.DEVICE_NEEDS_RESET
    drv.dev.close()


def test_rings_outside_the_windows_need_a_reset(tmp_path: Path) -> None:
    path = tmp_path / "disk.img"
    path.write_bytes(bytes(512 * 8))
    drv, _unit, dma, _logs = _blk_with_iommu(path)
    drv.init([16])
    hdr, status = drv.alloc(16), drv.alloc(1)
    drv.submit(0, [(hdr, 16, False), (status, 1, True)])
    deadline = time.monotonic() + 5
    while not drv.dev.status & regs.DEVICE_NEEDS_RESET:
        assert time.monotonic() < deadline
        time.sleep(0.002)
    assert "DMA windows" in drv.dev.needs_reset_reason
    assert dma.faults == 1
    assert drv.used(0) == []  # nothing was written back
    drv.dev.close()


def test_keel_devices_dma_column() -> None:
    from vmm.client import _dma_column

    assert _dma_column({"dma_enforcing": False, "dma_windows": 3}) == "open"
    assert _dma_column({"dma_enforcing": True, "dma_windows": 2, "dma_faults": 5}) == "2win/5fault"
    assert _dma_column({}) == "open"  # a device not wired yet (machine not started)
