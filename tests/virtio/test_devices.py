"""Each device model driven by a Linux-style driver sequence over the MMIO registers
(tests/virtio/driver.py), with the transport's worker thread running: no KVM."""

from __future__ import annotations

import os
import struct
import time
from pathlib import Path

import pytest

from tests.virtio.driver import Driver, Irqs, attach, make_ram
from vmm.devices.hotplug import EmptySlot
from vmm.devices.virtio import blk, regs
from vmm.devices.virtio.blk import BlockDevice
from vmm.devices.virtio.console import ConsoleDevice
from vmm.devices.virtio.mmio import MmioTransport
from vmm.devices.virtio.rng import RngDevice
from vmm.errors import ConfigError

SECTOR = 512


def wait_status(d: Driver, bit: int, timeout: float = 5) -> int:
    deadline = time.monotonic() + timeout
    while not (status := d.r32(regs.STATUS)) & bit:
        assert time.monotonic() < deadline, f"status {status:#x} never got {bit:#x}"
        time.sleep(0.002)
    return status


def blk_request(
    d: Driver, type_: int, sector: int, data: bytes | int, indirect: bool = False
) -> tuple[int, bytes]:
    """One request; ``data`` is bytes to write or a length to read. Returns status, data."""
    hdr = d.alloc(16)
    d.mem.write(hdr, struct.pack("<IIQ", type_, 0, sector))
    status = d.alloc(1)
    bufs = [(hdr, 16, False)]
    length = data if isinstance(data, int) else len(data)
    buf = d.alloc(max(length, 1))
    if isinstance(data, bytes) and data:
        d.mem.write(buf, data)
        bufs.append((buf, length, False))
    elif length:
        bufs.append((buf, length, True))
    bufs.append((status, 1, True))
    if indirect:
        d.submit_indirect(0, bufs)
    else:
        d.submit(0, bufs)
    ((_, _written),) = d.wait_used(0)
    got = d.mem.read(buf, length) if isinstance(data, int) else b""
    return d.mem.read(status, 1)[0], got


@pytest.fixture
def image(tmp_path: Path) -> Path:
    path = tmp_path / "disk.img"
    path.write_bytes(bytes(range(256)) * 2 * 64)  # 64 sectors
    return path


def test_placeholder_slot_reads_as_no_device() -> None:
    p = EmptySlot()
    assert int.from_bytes(p.read(regs.MAGIC_VALUE, 4), "little") == regs.MAGIC
    assert int.from_bytes(p.read(regs.DEVICE_ID, 4), "little") == 0


def test_blk_identity_features_and_config(image: Path) -> None:
    d, _, _ = attach(BlockDevice(image, readonly=True))
    assert d.r32(regs.DEVICE_ID) == 2
    features = d.init([16])
    assert features & regs.F_VERSION_1 and features & blk.F_RO and features & blk.F_FLUSH
    assert int.from_bytes(d.dev.read(regs.CONFIG, 8), "little") == 64
    d.dev.close()


def test_driver_without_version_1_is_refused(image: Path) -> None:
    d, _, _ = attach(BlockDevice(image))
    assert d.init([16], accept=0xFFFFFFFF) == -1
    d.dev.close()


def test_blk_read_write_flush_get_id(image: Path) -> None:
    d, irqs, logs = attach(BlockDevice(image))
    d.init([16])
    status, data = blk_request(d, blk.T_IN, 2, 2 * SECTOR)
    assert status == blk.S_OK and data == image.read_bytes()[1024:2048]
    assert irqs.count >= 1 and d.r32(regs.INTERRUPT_STATUS) & regs.INT_USED_BUFFER
    d.w32(regs.INTERRUPT_ACK, regs.INT_USED_BUFFER)
    assert d.r32(regs.INTERRUPT_STATUS) == 0
    assert blk_request(d, blk.T_OUT, 63, b"\xab" * SECTOR)[0] == blk.S_OK
    assert blk_request(d, blk.T_FLUSH, 0, 0)[0] == blk.S_OK
    assert image.read_bytes()[63 * SECTOR :] == b"\xab" * SECTOR
    status, ident = blk_request(d, blk.T_GET_ID, 0, 20)
    assert status == blk.S_OK and ident.rstrip(b"\0") == b"disk.img"
    assert blk_request(d, 99, 0, 0)[0] == blk.S_UNSUPP
    assert not logs
    d.dev.close()


def test_blk_requests_through_indirect_tables(image: Path) -> None:
    """VIRTIO_F_INDIRECT_DESC is offered; requests whose descriptors are in a
    table serve as the same requests in the ring do."""
    d, _, logs = attach(BlockDevice(image))
    assert d.init([16]) & regs.F_INDIRECT_DESC
    status, data = blk_request(d, blk.T_IN, 2, 2 * SECTOR, indirect=True)
    assert status == blk.S_OK and data == image.read_bytes()[1024:2048]
    assert blk_request(d, blk.T_OUT, 5, b"\xcd" * SECTOR, indirect=True)[0] == blk.S_OK
    assert blk_request(d, blk.T_FLUSH, 0, 0, indirect=True)[0] == blk.S_OK
    assert image.read_bytes()[5 * SECTOR : 6 * SECTOR] == b"\xcd" * SECTOR
    assert not logs
    d.dev.close()


def test_blk_indirect_table_without_the_feature_needs_reset(image: Path) -> None:
    """A driver that did not accept the feature and names a table anyway: a
    corrupt queue (needs reset), the image untouched."""
    before = image.read_bytes()
    d, _, logs = attach(BlockDevice(image))
    d.init([16], accept=~regs.F_INDIRECT_DESC)
    hdr, status = d.alloc(16), d.alloc(1)
    d.mem.write(hdr, struct.pack("<IIQ", blk.T_OUT, 0, 0))
    d.submit_indirect(0, [(hdr, 16, False), (d.alloc(SECTOR), SECTOR, False), (status, 1, True)])
    wait_status(d, regs.DEVICE_NEEDS_RESET)
    assert "not negotiated" in logs[0]
    d.dev.close()
    assert image.read_bytes() == before


def test_blk_kick_is_served_before_the_notify_write_returns(image: Path) -> None:
    """virtio-blk serves a kick in the thread that made it (a vCPU's MMIO exit):
    the request is complete when the QueueNotify write returns, without a worker."""
    mem = make_ram()
    t = MmioTransport(BlockDevice(image), mem, mem.contains, Irqs(), lambda _m: None)
    d = Driver(t, mem)  # (no worker thread started)
    d.init([16])
    hdr, buf, status = d.alloc(16), d.alloc(SECTOR), d.alloc(1)
    d.mem.write(hdr, struct.pack("<IIQ", blk.T_IN, 0, 1))
    d.submit(0, [(hdr, 16, False), (buf, SECTOR, True), (status, 1, True)])
    assert d.used(0) == [(0, SECTOR + 1)]
    assert d.mem.read(buf, SECTOR) == image.read_bytes()[SECTOR : 2 * SECTOR]
    t.close()
    mem.close()


def test_blk_model_error_in_a_kick_needs_reset_not_a_crash(image: Path) -> None:
    """A device-model bug met while serving a kick in the vCPU's thread marks the
    device "needs reset" and returns to the guest; it does not raise into the vCPU."""
    dev = BlockDevice(image)
    d, _, logs = attach(dev)
    d.init([16])

    def broken(queues: object) -> bool:
        raise RuntimeError("model bug")

    dev.service = broken  # type: ignore[method-assign]
    hdr = d.alloc(16)
    d.submit(0, [(hdr, 16, False), (d.alloc(1), 1, True)])  # returns: no exception
    assert d.r32(regs.STATUS) & regs.DEVICE_NEEDS_RESET
    assert "internal error" in logs[0] and "model bug" in logs[0]
    d.dev.close()


def test_blk_never_touches_outside_the_image(image: Path) -> None:
    before = image.read_bytes()
    d, _, _ = attach(BlockDevice(image))
    d.init([16])
    assert blk_request(d, blk.T_OUT, 64, b"x" * SECTOR)[0] == blk.S_IOERR
    assert blk_request(d, blk.T_OUT, 63, b"x" * 2 * SECTOR)[0] == blk.S_IOERR
    assert blk_request(d, blk.T_OUT, 2**64 - 1, b"x" * SECTOR)[0] == blk.S_IOERR
    assert blk_request(d, blk.T_OUT, 0, b"x" * 100)[0] == blk.S_IOERR
    assert blk_request(d, blk.T_IN, 64, SECTOR)[0] == blk.S_IOERR
    d.dev.close()
    assert image.read_bytes() == before and len(before) == 64 * SECTOR


def test_blk_readonly_rejects_writes(image: Path) -> None:
    before = image.read_bytes()
    d, _, _ = attach(BlockDevice(image, readonly=True))
    d.init([16])
    assert blk_request(d, blk.T_OUT, 0, b"x" * SECTOR)[0] == blk.S_IOERR
    assert blk_request(d, blk.T_IN, 0, SECTOR)[0] == blk.S_OK
    d.dev.close()
    assert image.read_bytes() == before


def test_blk_missing_image_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"nope\.img"):
        BlockDevice(tmp_path / "nope.img")


def test_rng_fills_buffers() -> None:
    d, _, _ = attach(RngDevice())
    assert d.r32(regs.DEVICE_ID) == 4
    d.init([8])
    buf = d.alloc(64)
    d.submit(0, [(buf, 64, True)])
    assert d.wait_used(0) == [(0, 64)]
    assert d.mem.read(buf, 64) != bytes(64)
    d.dev.close()


def test_console_output_and_input() -> None:
    dev = ConsoleDevice()
    d, _, _ = attach(dev)
    assert d.r32(regs.DEVICE_ID) == 3
    d.init([8, 8])
    rx = d.alloc(32)
    d.submit(0, [(rx, 32, True)])
    out = d.alloc(16)
    d.mem.write(out, b"hello, host\n")
    d.submit(1, [(out, 12, False)])
    d.wait_used(1)
    assert dev.console.wait_for("hello, host", 5)
    assert dev.feed(b"typed") == 5
    assert d.wait_used(0) == [(0, 5)]
    assert d.mem.read(rx, 5) == b"typed"
    d.dev.close()


@pytest.mark.parametrize("kind", ["outside", "loop", "direction", "avail"])
def test_bad_queue_needs_reset_and_reset_recovers(kind: str, image: Path) -> None:
    d, irqs, logs = attach(RngDevice())
    d.init([8])
    q = d.queues[0]
    if kind == "outside":
        d.submit(0, [(0xF_0000_0000, 64, True)])
    elif kind == "loop":
        d.mem.write(q.desc, struct.pack("<QIHH", 0x200000, 64, 3, 0))
        d.publish(0, 0)
    elif kind == "direction":
        d.submit(0, [(0x200000, 64, False)])
    else:
        d.mem.write(q.avail + 2, struct.pack("<H", 200))
        d.w32(regs.QUEUE_NOTIFY, 0)
    status = wait_status(d, regs.DEVICE_NEEDS_RESET)
    assert status & regs.DRIVER_OK
    assert d.r32(regs.INTERRUPT_STATUS) & regs.INT_CONFIG_CHANGE and irqs.count == 1
    assert len(logs) == 1 and "needs reset" in logs[0]
    d.w32(regs.STATUS, 0)
    assert d.r32(regs.STATUS) == 0
    d.queues.clear()
    d.init([8])  # the device works again after the reset
    buf = d.alloc(8)
    d.submit(0, [(buf, 8, True)])
    assert d.wait_used(0) == [(0, 8)]
    d.dev.close()


def test_queue_rings_outside_ram_need_reset() -> None:
    d, _, logs = attach(RngDevice())
    d.w32(regs.STATUS, regs.ACKNOWLEDGE | regs.DRIVER)
    d.w32(regs.QUEUE_SEL, 0)
    d.w32(regs.QUEUE_NUM, 8)
    d.w32(regs.QUEUE_DESC_HIGH, 0x10)
    d.w32(regs.QUEUE_READY, 1)
    assert d.r32(regs.QUEUE_READY) == 0
    assert d.r32(regs.STATUS) & regs.DEVICE_NEEDS_RESET
    assert "descriptor table" in logs[0]
    d.dev.close()


def test_blk_request_without_status_byte_needs_reset(image: Path) -> None:
    before = image.read_bytes()
    d, _, _ = attach(BlockDevice(image))
    d.init([16])
    hdr = d.alloc(16)
    d.mem.write(hdr, struct.pack("<IIQ", blk.T_OUT, 0, 0))
    d.submit(0, [(hdr, 16, False), (d.alloc(SECTOR), SECTOR, False)])
    wait_status(d, regs.DEVICE_NEEDS_RESET)
    d.dev.close()
    assert image.read_bytes() == before


def test_worker_stops_on_close() -> None:
    d, _, _ = attach(RngDevice())
    fd = d.dev.kick_fd
    d.dev.close()
    with pytest.raises(OSError):
        os.fstat(fd)


def test_paused_transport_leaves_guest_memory_alone() -> None:
    d, _, _ = attach(RngDevice())
    d.init([8])
    d.dev.pause()
    buf = d.alloc(16)
    d.submit(0, [(buf, 16, True)])
    time.sleep(0.05)
    assert d.used(0) == [] and d.mem.read(buf, 16) == bytes(16)
    d.dev.resume()
    assert d.wait_used(0) == [(0, 16)]
    d.dev.close()


def test_paused_transport_does_not_spin_on_waiting_host_input() -> None:
    """Host input that arrives while the transport is paused (a snapshot pauses it)
    waits for the resume with the worker asleep: its loop turns once per wake-up,
    not over and over on an input descriptor that stays readable."""
    dev = ConsoleDevice()
    d, _, _ = attach(dev)
    d.init([8, 8])
    turns = 0
    service = d.dev.service

    def counted() -> None:
        nonlocal turns
        turns += 1
        service()

    d.dev.service = counted  # type: ignore[method-assign]
    d.dev.pause()
    assert dev.feed(b"typed while paused") == 18
    d.dev.kick()
    time.sleep(0.2)  # a spinning worker turns thousands of times meanwhile
    assert turns <= 3
    rx = d.alloc(32)
    d.submit(0, [(rx, 32, True)])
    d.dev.resume()
    assert d.wait_used(0) == [(0, 18)]
    assert d.mem.read(rx, 18) == b"typed while paused"
    d.dev.close()
