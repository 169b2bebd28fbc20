"""virtio-net (ID 1) backed by a host TAP interface.

The VMM creates the TAP with pyroute2 (and removes it on detach) unless the
named interface already exists, in which case it is used and left in place.
No offloads are offered, so the 12-byte virtio_net_hdr (VERSION_1 layout,
with num_buffers) is all zeros: it is stripped on transmit and prepended on
receive, and the TAP carries plain Ethernet frames (IFF_NO_PI, no vnet header).
Receive runs when the TAP is readable *and* the driver has posted buffers;
the worker polls the TAP only while receive buffers are available.

A snapshot saves the TAP's name and the MAC (the restored device is the same
one) and the frames the host sent that the guest has not received: they are
read off the TAP into ``pending`` (served before the TAP), since the TAP's
queue is gone once the process that had it open ends.
"""

from __future__ import annotations

import binascii  # not base64, which imports re: ~3 ms of each start
import os
import struct
from collections import deque

from vmm.devices.virtio.device import ID_NET, VirtioDevice
from vmm.devices.virtio.queue import QueueError, Virtqueue, scatter, views
from vmm.errors import ConfigError
from vmm.kvm.ffi import ffi, lib

TYPE_CHECKING = False  # typing costs ~4 ms of each start (vmm/records.py)
if TYPE_CHECKING:
    from typing import Any

F_MAC = 1 << 5
HDR_SIZE = 12
RECEIVEQ = 0
TRANSMITQ = 1
MAX_FRAME = 65536 + HDR_SIZE
TAP_PREFIX = "keeltap"
_RX_HEADER = struct.pack("<10xH", 1)  # no offloads; num_buffers = 1
PENDING_LIMIT = 1024  # host frames a snapshot keeps (more are dropped, as a full queue would)


def _iproute() -> Any:
    # Lazy: importing pyroute2 takes 140-340 ms here (python -X importtime), and
    # every `keel run` imports this module through the device registry.
    from pyroute2 import IPRoute

    return IPRoute()


def _free_tap_name() -> str:
    existing = set(os.listdir("/sys/class/net"))
    for i in range(1000):
        name = f"{TAP_PREFIX}{i}"
        if name not in existing:
            return name
    raise ConfigError("no free TAP interface name")


def _default_mac(name: str) -> bytes:
    """A stable locally administered unicast address derived from the TAP name."""
    # Lazy: hashlib (OpenSSL) costs about 2.7 ms of every `keel run` start-up
    # (python -X importtime), and only a net device without a MAC needs it.
    import hashlib

    digest = hashlib.sha256(name.encode()).digest()
    return bytes([0x52, 0x54, 0x00, *digest[:3]])


class NetDevice(VirtioDevice):
    device_id = ID_NET
    kind = "net"
    num_queues = 2
    queue_max = 256

    def __init__(self, tap: str | None = None, mac: bytes | None = None) -> None:
        name = tap or _free_tap_name()
        if len(name.encode()) >= 16 or "/" in name:
            raise ConfigError(f"bad TAP interface name {name!r}")
        self.created = False
        try:
            with _iproute() as ipr:
                if not ipr.link_lookup(ifname=name):
                    ipr.link("add", ifname=name, kind="tuntap", mode="tap")
                    self.created = True
                fd = int(lib.keel_tap_open(ffi.new("char[]", name.encode())))
                if fd < 0:
                    raise ConfigError(f"cannot attach to TAP {name!r}: {os.strerror(-fd)}")
                self.fd = fd
                ipr.link("set", index=ipr.link_lookup(ifname=name)[0], state="up")
        except ConfigError:
            self._remove_tap(name)
            raise
        except Exception as exc:  # pyroute2's NetlinkError and friends
            self._remove_tap(name)
            raise ConfigError(f"cannot create TAP {name!r}: {exc}") from None
        super().__init__(name)
        self.tap = name
        self.mac = mac or _default_mac(name)
        self._rx_ready = False
        self.dropped = 0
        self.pending: deque[bytes] = deque()  # host frames read off the TAP, not yet received
        self._spill = memoryview(bytearray(MAX_FRAME))  # where a frame too long for its buffer ends

    def _remove_tap(self, name: str) -> None:
        if getattr(self, "fd", -1) >= 0:
            os.close(self.fd)
            self.fd = -1
        if self.created:
            try:
                with _iproute() as ipr:
                    for index in ipr.link_lookup(ifname=name):
                        ipr.link("del", index=index)
            except Exception:
                pass
            self.created = False

    def device_features(self) -> int:
        return F_MAC

    def config(self) -> bytes:
        return self.mac + struct.pack("<H", 1)  # mac, status (link up; F_STATUS not offered)

    def wake_fds(self) -> list[int]:
        return [self.fd] if self._rx_ready and self.fd >= 0 else []

    def service(self, queues: list[Virtqueue | None]) -> bool:
        """Every frame the driver queued goes to the TAP, and every frame waiting
        on the TAP into a receive buffer while there are both (the transport
        publishes the used rings once and interrupts once for the round).  Frames
        move between the TAP and views of guest memory: nothing is copied on the
        way but by the kernel."""
        used = False
        tx = queues[TRANSMITQ]
        if tx is not None:
            for out in tx.pop_all():
                if out.writable:
                    raise QueueError(f"net transmit {out.head}: device-writable buffer")
                length = sum(b.length for b in out.buffers) - HDR_SIZE
                if length > 0:
                    try:
                        os.writev(self.fd, views(self.mem, out.buffers, HDR_SIZE, length))
                    except OSError:
                        self.dropped += 1
                tx.push(out.head, 0)
                used = True
        rx = queues[RECEIVEQ]
        self._rx_ready = False
        while rx is not None and (chain := rx.pop()) is not None:
            if chain.readable:
                raise QueueError(f"net receive {chain.head}: device-readable buffer")
            room = sum(b.length for b in chain.buffers) - HDR_SIZE
            if self.pending:
                packet = _RX_HEADER + self.pending.popleft()
                if room < len(packet) - HDR_SIZE:
                    self.dropped += 1
                    rx.push(chain.head, 0)
                else:
                    rx.push(chain.head, scatter(self.mem, chain.buffers, packet))
                used = True
                continue
            # Past the chain's room, a frame runs into the spill buffer: too long.
            into = views(self.mem, chain.buffers, HDR_SIZE, room) if room > 0 else []
            try:
                got = os.readv(self.fd, [*into, self._spill])
            except OSError:  # BlockingIOError: no frame now
                rx.put_back()
                self._rx_ready = True  # buffers wait for a frame: poll the TAP
                break
            if got > max(room, 0):
                self.dropped += 1
                rx.push(chain.head, 0)
            else:
                at = 0
                for v in views(self.mem, chain.buffers, 0, HDR_SIZE):
                    v[:] = _RX_HEADER[at : at + len(v)]
                    at += len(v)
                rx.push(chain.head, HDR_SIZE + got)
            used = True
        return used

    def close(self) -> None:
        self._remove_tap(self.tap)

    def save_state(self) -> dict[str, object]:
        """The frames waiting on the TAP are read into ``pending`` (this process
        serves them first if it resumes) and saved with it."""
        while self.fd >= 0:
            try:
                frame = os.read(self.fd, MAX_FRAME)
            except OSError:  # BlockingIOError: none left
                break
            if len(self.pending) < PENDING_LIMIT:
                self.pending.append(frame)
            else:
                self.dropped += 1
        return {"pending": [binascii.b2a_base64(f, newline=False).decode() for f in self.pending],
                "dropped": self.dropped}  # fmt: skip

    def load_state(self, state: dict[str, object]) -> None:
        frames = state.get("pending", [])
        assert isinstance(frames, list)
        self.pending = deque(binascii.a2b_base64(str(f), strict_mode=True) for f in frames)
        self.dropped = int(state.get("dropped", 0))  # type: ignore[call-overload]

    def restore_options(self) -> dict[str, object]:
        return {"tap": self.tap, "mac": ":".join(f"{b:02x}" for b in self.mac)}

    def describe(self) -> dict[str, object]:
        return {**super().describe(), "mac": ":".join(f"{b:02x}" for b in self.mac)}


def parse_mac(text: str) -> bytes:
    parts = text.split(":")
    try:
        mac = bytes(int(p, 16) for p in parts)
    except ValueError:
        mac = b""
    if len(mac) != 6 or any(len(p) != 2 for p in parts):
        raise ConfigError(f"bad MAC address {text!r}: expected six hex pairs, a:b:c:d:e:f")
    return mac


def create(tap: str | None = None, mac: str | None = None) -> NetDevice:
    """The registry's factory: ``mac`` in the a:b:c:d:e:f notation."""
    return NetDevice(tap, parse_mac(mac) if mac else None)
