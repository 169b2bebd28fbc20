"""Batched completion and VIRTIO_F_EVENT_IDX through the transport (no KVM).

Hypothesis plays a driver against the transport with no worker thread: it
publishes requests in bursts (direct or through indirect tables), sometimes
kicks, sometimes reaps, moves its used event around, is snapshotted and
restored into a new transport (an interrupt in flight lost), and calls the
worker's ``service`` itself.  After every wake-up: every request published
so far is returned exactly once, at most one interrupt; the interrupt comes
exactly when the driver's used event lies in what was just published (or,
without the feature, when it did not set NO_INTERRUPT); the available event
says "kick me for the next one", so a driver that follows it never leaves a
request unserved; a restored transport raises one interrupt and looks at
its rings again, so no driver waits for an interrupt lost in the snapshot.
"""

from __future__ import annotations

import os
import struct
import threading
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.virtio.driver import Driver, Irqs, make_ram
from vmm.devices.virtio import blk, regs
from vmm.devices.virtio.blk import BlockDevice
from vmm.devices.virtio.console import ConsoleDevice
from vmm.devices.virtio.mmio import MmioTransport
from vmm.devices.virtio.queue import AVAIL_F_NO_INTERRUPT, need_event
from vmm.devices.virtio.rng import RngDevice
from vmm.memory import GuestMemory

QSIZE = 16


def _setup(event_idx: bool) -> tuple[Driver, MmioTransport, Irqs]:
    mem = make_ram()
    irqs = Irqs()
    t = MmioTransport(RngDevice(), mem, mem.contains, irqs, lambda _m: None)
    d = Driver(t, mem)
    accept = None if event_idx else ~regs.F_EVENT_IDX
    features = d.init([QSIZE], accept=accept)
    assert bool(features & regs.F_EVENT_IDX) == event_idx
    return d, t, irqs


def _u16(mem: GuestMemory, addr: int) -> int:
    value: int = struct.unpack("<H", mem.read(addr, 2))[0]
    return value


op_st = st.one_of(
    st.tuples(st.just("publish"), st.integers(1, 8)),
    st.tuples(st.just("publish_indirect"), st.integers(1, 8)),
    st.tuples(st.just("service"), st.just(0)),
    st.tuples(st.just("reap"), st.just(0)),
    st.tuples(st.just("event"), st.integers(0, 0xFFFF)),
    st.tuples(st.just("noint"), st.booleans()),
    st.tuples(st.just("snapshot"), st.just(0)),
)


@settings(max_examples=300, deadline=None)
@given(event_idx=st.booleans(), ops=st.lists(op_st, max_size=40), start=st.integers(0, 0xFFFF))
def test_fuzz_batches_and_events(event_idx: bool, ops: list[tuple[str, int]], start: int) -> None:
    d, t, irqs = _setup(event_idx)
    q = d.queues[0]
    mem = d.mem
    buf = d.alloc(QSIZE * 64, 64)
    avail_event_addr = q.used + 4 + 8 * QSIZE
    used_event = q.avail + 4 + 2 * QSIZE
    in_flight: set[int] = set()
    returned: list[int] = []
    next_head = 0
    kicks_owed = False  # the driver published past the available event: it must kick
    tables = d.alloc(QSIZE * 16, 16)  # one indirect table (of one descriptor) per head
    for op, arg in ops:
        if op in ("publish", "publish_indirect"):
            n = min(arg, QSIZE - len(in_flight))
            old = q.avail_idx
            for _ in range(n):
                while next_head in in_flight:
                    next_head = (next_head + 1) % QSIZE
                desc = struct.pack("<QIHH", buf + 64 * next_head, 64, 2, 0)
                if op == "publish_indirect":  # the same buffer, named by a table
                    mem.write(tables + 16 * next_head, desc)
                    desc = struct.pack("<QIHH", tables + 16 * next_head, 16, 4, 0)
                mem.write(q.desc + 16 * next_head, desc)
                in_flight.add(next_head)
                d.publish(0, next_head, kick=False)
            if n and (not event_idx or need_event(_u16(mem, avail_event_addr), q.avail_idx, old)):
                kicks_owed = True  # the kick would go to the eventfd; the worker serves it
        elif op == "service" or (op == "reap" and kicks_owed):
            before_irqs, before_used = irqs.count, _u16(mem, q.used + 2)
            event = _u16(mem, used_event)
            flags = _u16(mem, q.avail)
            t.service()
            after_used = _u16(mem, q.used + 2)
            # every request published so far is served in this one wake-up
            assert after_used == q.avail_idx
            assert irqs.count - before_irqs <= 1
            if after_used != before_used:
                if event_idx:
                    due = need_event(event, after_used, before_used)
                else:
                    due = not flags & AVAIL_F_NO_INTERRUPT
                assert (irqs.count - before_irqs == 1) == due
            else:
                assert irqs.count == before_irqs
            if event_idx:  # kick me for the very next request
                assert _u16(mem, avail_event_addr) == q.avail_idx
            kicks_owed = False
        elif op == "reap":
            for head, written in d.used(0):
                assert head in in_flight, f"request {head} completed twice"
                assert written == 64
                in_flight.discard(head)
                returned.append(head)
        elif op == "event":
            mem.write(used_event, struct.pack("<H", (start + arg) & 0xFFFF))
        elif op == "noint":
            mem.write(q.avail, struct.pack("<H", AVAIL_F_NO_INTERRUPT if arg else 0))
        elif op == "snapshot":  # saved, then restored into a fresh transport
            state = t.save_state()
            t.close()
            irqs = Irqs()  # what was signalled before may never have reached the guest
            t = MmioTransport(RngDevice(), mem, mem.contains, irqs, lambda _m: None)
            t.load_state(state)
            d.dev = t
            # One interrupt, spurious at worst: a driver waiting for the lost one wakes.
            assert irqs.count == 1
            kicks_owed = True  # the restored transport kicked itself: its worker looks
    t.service()
    for head, _ in d.used(0):
        assert head in in_flight, f"request {head} completed twice"
        in_flight.discard(head)
    assert not in_flight
    t.close()
    mem.close()


def test_blk_flushes_complete_after_the_batch_with_one_sync(tmp_path: Path) -> None:
    """A batch of write, flush, write, flush: the writes complete first, in
    order, then both flushes (one fdatasync); the data is in the image."""
    image = tmp_path / "disk.img"
    image.write_bytes(bytes(512 * 8))
    mem = make_ram()
    t = MmioTransport(BlockDevice(image), mem, mem.contains, Irqs(), lambda _m: None)
    d = Driver(t, mem)
    d.init([16])
    heads = []
    for n, kind in enumerate([blk.T_OUT, blk.T_FLUSH, blk.T_OUT, blk.T_FLUSH]):
        hdr, data, status = d.alloc(16), d.alloc(512, 512), d.alloc(1)
        mem.write(hdr, struct.pack("<IIQ", kind, 0, n))
        mem.write(data, bytes([0x40 + n]) * 512)
        bufs = [(hdr, 16, False)] + ([(data, 512, False)] if kind == blk.T_OUT else [])
        heads.append(d.submit(0, [*bufs, (status, 1, True)], kick=False))
    t.service()
    done = d.used(0)
    assert [h for h, _ in done] == [heads[0], heads[2], heads[1], heads[3]]
    assert all(written == 1 for _, written in done)
    assert image.read_bytes()[:512] == b"\x40" * 512
    assert image.read_bytes()[1024:1536] == b"\x42" * 512
    t.close()
    mem.close()


def test_requests_served_before_a_bad_chain_are_returned() -> None:
    """A round fills two receive buffers with console input, then meets a
    device-readable one: the device needs a reset, and the two it filled are
    in the used ring (each round is published even when it ends in error)."""
    mem = make_ram()
    dev = ConsoleDevice()
    t = MmioTransport(dev, mem, mem.contains, Irqs(), lambda _m: None)
    d = Driver(t, mem)
    d.init([8, 8])
    q = d.queues[0]
    buf = d.alloc(256, 64)
    for head, flags in ((0, 2), (1, 2), (2, 0)):  # the third is device-readable
        mem.write(q.desc + 16 * head, struct.pack("<QIHH", buf + 64 * head, 4, flags, 0))
        d.publish(0, head, kick=False)
    dev.feed(b"abcdefghijkl")
    t.service()
    assert t.status & regs.DEVICE_NEEDS_RESET
    assert d.used(0) == [(0, 4), (1, 4)]
    assert mem.read(buf, 4) == b"abcd" and mem.read(buf + 64, 4) == b"efgh"
    t.close()
    mem.close()


def test_blk_writes_start_write_out_and_a_flush_still_syncs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A batch of writes without a flush starts their write-out in the
    background (nothing waits for it); the flush of a later batch still makes
    them durable with its own fdatasync before it completes."""
    image = tmp_path / "disk.img"
    image.write_bytes(bytes(512 * 8))
    syncs: list[int] = []
    real_sync = os.fdatasync
    monkeypatch.setattr(os, "fdatasync", lambda fd: (syncs.append(fd), real_sync(fd))[1])
    mem = make_ram()
    dev = BlockDevice(image)
    t = MmioTransport(dev, mem, mem.contains, Irqs(), lambda _m: None)
    d = Driver(t, mem)
    d.init([16])

    def request(kind: int, sector: int) -> None:
        hdr, data, status = d.alloc(16), d.alloc(512, 512), d.alloc(1)
        mem.write(hdr, struct.pack("<IIQ", kind, 0, sector))
        mem.write(data, bytes([0x50 + sector]) * 512)
        bufs = [(hdr, 16, False)] + ([(data, 512, False)] if kind == blk.T_OUT else [])
        d.submit(0, [*bufs, (status, 1, True)], kick=False)

    assert dev.writeback is None  # no thread until something is written
    for sector in range(3):
        request(blk.T_OUT, sector)
    t.service()
    assert len(d.used(0)) == 3 and not syncs
    assert dev.writeback is not None
    deadline = time.monotonic() + 30
    while dev.writeback.started < 1:
        assert time.monotonic() < deadline, "the write-out was never started"
        time.sleep(0.01)
    request(blk.T_FLUSH, 0)
    t.service()
    assert d.used(0) == [(9, 1)] and syncs == [dev.fd]
    assert image.read_bytes()[:1536] == b"\x50" * 512 + b"\x51" * 512 + b"\x52" * 512
    t.close()
    assert dev.writeback is None and not any(
        th.name == "blk-writeback" for th in threading.enumerate()
    )
    mem.close()
