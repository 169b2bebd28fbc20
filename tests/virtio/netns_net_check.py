"""Run inside a fresh network namespace by test_net.py: virtio-net against a TAP.

Creates the device (and so the TAP, through pyroute2), drives it with the
Python driver, sends a frame each way through an AF_PACKET socket on the TAP,
closes the device and checks the TAP is gone.  Prints "net ok" on success.
"""

from __future__ import annotations

import os
import socket
import struct
import time

from tests.virtio.driver import attach
from vmm.devices.virtio.net import F_MAC, HDR_SIZE, NetDevice

ETH_P_ALL = 0x0003
TAP = "keeltap7"


def frame(src: bytes, payload: bytes) -> bytes:
    return b"\xff" * 6 + src + struct.pack("!H", 0x88B5) + payload  # local experimental type


def main() -> None:
    try:  # keep IPv6 router solicitations off the new interface
        with open("/proc/sys/net/ipv6/conf/default/disable_ipv6", "w") as f:
            f.write("1")
    except OSError:
        pass
    dev = NetDevice(TAP, mac=bytes.fromhex("525400abcdef"))
    assert TAP in os.listdir("/sys/class/net")
    d, irqs, logs = attach(dev)
    assert d.r32(0x008) == 1
    features = d.init([16, 16])
    assert features & F_MAC
    assert d.dev.read(0x100, 6) == bytes.fromhex("525400abcdef")
    sniff = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    sniff.bind((TAP, 0))
    sniff.settimeout(5)

    host_frame = frame(b"\x02\x00\x00\x00\x00\x01", b"from the host" + bytes(40))
    sniff.send(host_frame)
    for _ in range(8):  # the host may send frames of its own first
        rx = d.alloc(2048)
        d.submit(0, [(rx, 2048, True)])
        ((_, length),) = d.wait_used(0)
        got = d.mem.read(rx, length)
        assert got[:HDR_SIZE] == struct.pack("<10xH", 1), got[:HDR_SIZE]
        if got[HDR_SIZE:] == host_frame:
            break
    else:
        raise AssertionError("the host's frame never arrived")

    guest_frame = frame(bytes.fromhex("525400abcdef"), b"from the guest" + bytes(40))
    tx = d.alloc(HDR_SIZE + len(guest_frame))
    d.mem.write(tx, bytes(HDR_SIZE) + guest_frame)
    d.submit(1, [(tx, HDR_SIZE + len(guest_frame), False)])
    d.wait_used(1)
    while True:
        data = sniff.recv(4096)
        if data == guest_frame:
            break

    # Frames go straight between the TAP and guest memory: one longer than the
    # buffer posted for it is dropped (the buffer comes back empty, nothing
    # written past it), and a buffer posted while the TAP is empty waits for
    # the next frame.
    small = d.alloc(64)
    d.mem.write(small, b"\xee" * 64)
    d.mem.write(small + 64, b"\xdd" * 16)
    sniff.send(frame(b"\x02\x00\x00\x00\x00\x01", b"too long" + bytes(100)))
    for _ in range(8):  # the host may send frames of its own first
        dropped = dev.dropped
        d.submit(0, [(small, 64, True)])
        ((_, length),) = d.wait_used(0)
        if length == 0:
            break
    else:
        raise AssertionError("the long frame never came back dropped")
    assert dev.dropped == dropped + 1
    assert d.mem.read(small + 64, 16) == b"\xdd" * 16
    rx = d.alloc(2048)
    d.submit(0, [(rx, 2048, True)])
    time.sleep(0.2)
    assert d.used(0) == []  # nothing on the TAP: the buffer stays posted
    fits = frame(b"\x02\x00\x00\x00\x00\x01", b"fits" + bytes(40))
    sniff.send(fits)
    for _ in range(8):
        ((_, length),) = d.wait_used(0)
        if d.mem.read(rx + HDR_SIZE, length - HDR_SIZE) == fits:
            break
        d.submit(0, [(rx, 2048, True)])
    else:
        raise AssertionError("the frame that fits never came")
    assert d.mem.read(rx, HDR_SIZE) == struct.pack("<10xH", 1)
    assert irqs.count >= 2 and not logs
    d.dev.close()
    assert TAP not in os.listdir("/sys/class/net")
    print("net ok")


if __name__ == "__main__":
    main()
