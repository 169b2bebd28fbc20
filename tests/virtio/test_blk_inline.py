"""virtio-blk's inline path (the usual header + data + status request served
in ``BlockDevice.service`` itself) against the general ``_request``: hypothesis
sends the same three-buffer requests, well-formed or not, to two devices, one
with the inline path turned off, and every observable result must be the same:
status bytes, used lengths, error counts, guest memory and the image.  Some
requests share one data buffer and sectors overlap: memory and image must end
as requests served one after the other leave them.  No KVM.
"""

from __future__ import annotations

import struct
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from tests.virtio.driver import Driver, Irqs, make_ram
from vmm.devices.virtio import blk, regs
from vmm.devices.virtio.blk import BlockDevice
from vmm.devices.virtio.mmio import MmioTransport

SECTORS = 160
TYPES = [blk.T_IN, blk.T_OUT, blk.T_FLUSH, blk.T_GET_ID, 99]

# Layouts the device serves (a layout it refuses makes the whole queue need a
# reset, served by neither path: tests/virtio/test_queue.py has those): the
# header readable, the status writable, the data either way; a 15-byte header
# continues into readable data, a 17-byte one (or a 2-byte status) is not
# the usual layout either.
request = st.tuples(
    st.sampled_from(TYPES),
    st.integers(0, SECTORS + 2),  # sector, past the end sometimes
    st.sampled_from([15, 16, 16, 16, 17]),  # header buffer length
    st.just(False),  # header writable
    st.sampled_from([1, 511, 512, 4096, 32768, 65536]),  # data length
    st.booleans(),  # data writable
    st.sampled_from([1, 1, 1, 2]),  # status buffer length
    st.just(True),  # status writable
    st.booleans(),  # its data in the buffer the other such requests share
).filter(lambda r: r[2] >= 16 or not r[5])  # the header alone must be readable


def serve(image: Path, readonly: bool, inline: bool, reqs: list[tuple]) -> tuple:  # type: ignore[type-arg]
    mem = make_ram()
    dev = BlockDevice(image, readonly=readonly)
    dev.inline = inline
    logs: list[str] = []
    t = MmioTransport(dev, mem, mem.contains, Irqs(), logs.append)
    d = Driver(t, mem)
    d.init([64])
    start = d.heap
    shared = d.alloc(65536, 4096)
    for i, (type_, sector, h_len, h_w, d_len, d_w, s_len, s_w, share) in enumerate(reqs):
        hdr, status = d.alloc(h_len), d.alloc(s_len)
        buf = shared if share else d.alloc(d_len, 512)
        mem.write(hdr, struct.pack("<IIQ", type_, 0, sector)[:h_len].ljust(h_len, b"\x00"))
        if not share:
            mem.write(buf, bytes([i + 1]) * d_len)
        mem.write(status, b"\xee" * s_len)
        d.submit(0, [(hdr, h_len, h_w), (buf, d_len, d_w), (status, s_len, s_w)], kick=False)
    d.w32(0x50, 0)  # QueueNotify: served before the write returns
    used = d.used(0)
    out = (used, mem.read(start, d.heap - start), dev.errors, t.status, t.errors)
    assert len(used) == len(reqs) or t.status & regs.DEVICE_NEEDS_RESET  # each served once, or none
    t.close()
    mem.close()
    return out


@settings(max_examples=150, deadline=None)
@given(reqs=st.lists(request, min_size=1, max_size=12), readonly=st.booleans())
def test_inline_path_serves_as_the_general_one(
    tmp_path_factory,
    reqs: list[tuple],
    readonly: bool,  # type: ignore[no-untyped-def,type-arg]
) -> None:
    results = []
    for inline in (True, False):
        image = tmp_path_factory.mktemp("img") / "disk.img"
        image.write_bytes(bytes(range(256)) * 2 * SECTORS)
        results.append((serve(image, readonly, inline, reqs), image.read_bytes()))
    assert results[0] == results[1]


def test_a_writable_header_needs_reset_on_both_paths(tmp_path: Path) -> None:
    """Header, data and status all device-writable: no header to read (the
    three-buffer shape alone must not take the inline path)."""
    image = tmp_path / "disk.img"
    image.write_bytes(bytes(512 * SECTORS))
    for inline in (True, False):
        used, _, _, status, errors = serve(
            image, False, inline, [(blk.T_IN, 0, 16, True, 512, True, 1, True, False)]
        )
        assert not used and status & regs.DEVICE_NEEDS_RESET and errors == 1
