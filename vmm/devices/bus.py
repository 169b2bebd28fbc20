"""Port-I/O and MMIO buses: address ranges mapped to small device objects.

A device implements ``read(offset, size) -> bytes`` and
``write(offset, data)``; the bus turns an absolute address into the device
and the offset inside its range.  Accesses nobody claims are answered
harmlessly (reads return all-ones, as a floating bus does; writes are
dropped) and logged once per address, so a guest probing hardware can never
crash the VMM.
"""

from __future__ import annotations

import bisect
import sys
from collections.abc import Callable

TYPE_CHECKING = False  # typing costs ~4 ms of each start (vmm/records.py)
if TYPE_CHECKING:
    from typing import Protocol
else:
    from vmm.records import Protocol


class Device(Protocol):
    def read(self, offset: int, size: int) -> bytes: ...

    def write(self, offset: int, data: bytes) -> None: ...


class BusError(ValueError):
    """A registration overlaps an existing range or is empty."""


def _log_stderr(message: str) -> None:
    sys.stderr.write(message + "\n")


class Bus:
    """A sorted set of non-overlapping ``[base, base + length)`` ranges."""

    def __init__(self, name: str, log: Callable[[str], None] = _log_stderr) -> None:
        self.name = name
        self._starts: list[int] = []
        self._ranges: list[tuple[int, int, Device]] = []
        self._unclaimed_seen: set[int] = set()
        self._log = log

    def register(self, base: int, length: int, device: Device) -> None:
        if length <= 0:
            raise BusError(f"{self.name} bus: empty range at {base:#x}")
        i = bisect.bisect_right(self._starts, base)
        if i > 0:
            prev_base, prev_len, _ = self._ranges[i - 1]
            if prev_base + prev_len > base:
                raise BusError(f"{self.name} bus: {base:#x} overlaps a device at {prev_base:#x}")
        if i < len(self._ranges) and base + length > self._ranges[i][0]:
            raise BusError(
                f"{self.name} bus: {base:#x}+{length:#x} overlaps a device at "
                f"{self._ranges[i][0]:#x}"
            )
        self._starts.insert(i, base)
        self._ranges.insert(i, (base, length, device))

    def unregister(self, device: Device) -> None:
        for i, (_, _, dev) in enumerate(self._ranges):
            if dev is device:
                del self._starts[i]
                del self._ranges[i]
                return
        raise BusError(f"{self.name} bus: device not registered")

    def find(self, addr: int) -> tuple[Device, int] | None:
        """The device claiming ``addr`` and the offset into its range."""
        i = bisect.bisect_right(self._starts, addr) - 1
        if i >= 0:
            base, length, device = self._ranges[i]
            if addr < base + length:
                return device, addr - base
        return None

    def read(self, addr: int, size: int) -> bytes:
        hit = self.find(addr)
        if hit is None:
            self._unclaimed(addr, "read")
            return b"\xff" * size
        device, offset = hit
        data = device.read(offset, size)
        if len(data) != size:  # a device bug must not corrupt the vCPU's answer
            data = (data + b"\xff" * size)[:size]
        return data

    def write(self, addr: int, data: bytes) -> None:
        hit = self.find(addr)
        if hit is None:
            self._unclaimed(addr, "write")
            return
        device, offset = hit
        device.write(offset, data)

    def write_string(self, addr: int, data: bytes, size: int) -> None:
        """A string instruction (``rep outs``): ``len(data) // size`` writes.

        A device that sets ``takes_strings`` gets them in one call (the UART
        transmitter takes a whole burst); any other gets one call per item.
        """
        hit = self.find(addr)
        if hit is None:
            self._unclaimed(addr, "write")
            return
        device, offset = hit
        if size == 1 and getattr(device, "takes_strings", False):
            device.write(offset, data)
            return
        for i in range(0, len(data) - size + 1, size):
            device.write(offset, data[i : i + size])

    def _unclaimed(self, addr: int, what: str) -> None:
        if addr not in self._unclaimed_seen and len(self._unclaimed_seen) < 256:
            self._unclaimed_seen.add(addr)
            self._log(f"keel: guest {what} of unclaimed {self.name} address {addr:#x} ignored")
