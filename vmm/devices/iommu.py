"""The Keel paravirtual IOMMU: per-device DMA windows, checked on every virtqueue access.

There is no address translation.  Each virtio device (named by the
guest-physical base of its virtio-mmio register block) has a table of
*windows*, guest-physical ranges it may read, write or both.  While the
device is *enforcing*, every access its transport makes to guest memory on
the guest's behalf -- descriptor table, available and used rings, every
buffer a descriptor points at -- must lie inside windows with the access
needed (``DmaWindows.allows``), or it is refused before any byte moves and
counted as a *fault* (``DmaWindows.fault``): a counter the guest reads back,
and a line in the VMM's log.

Nothing is enforced until the guest sets ENABLE, so a guest that does not
know this device behaves as before.  Once it did, every device is enforcing
and a device attached later starts with an empty table: it can do no DMA
until windows are granted.  The register interface is documented in
docs/iommu.md; keep the two in step.

Removing windows waits for the device's request in progress (the
transport's lock, ``DmaWindows.barrier``), so once UNMAP or CLEAR has
returned to the guest no access checked against the old table is still
running: a revoked frame is never touched again.
"""

from __future__ import annotations

import bisect
import threading
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext

from vmm import platform

IOMMU_MAGIC = 0x4D4F494B  # "KIOM"
IOMMU_VERSION = 1
IOMMU_SIZE = 0x100
MAX_WINDOWS = 256
LOGGED_FAULTS = 8  # per device; the counter keeps counting after that

# Registers: 32-bit, little-endian.
REG_MAGIC = 0x00
REG_VERSION = 0x04
REG_CONTROL = 0x08
REG_MAX_WINDOWS = 0x0C
REG_DEVICE_LOW = 0x10
REG_DEVICE_HIGH = 0x14
REG_DEVICE_STATE = 0x18
REG_WINDOW_COUNT = 0x1C
REG_ADDR_LOW = 0x20
REG_ADDR_HIGH = 0x24
REG_LEN_LOW = 0x28
REG_LEN_HIGH = 0x2C
REG_ACCESS = 0x30
REG_COMMAND = 0x34
REG_RESULT = 0x38
REG_FAULTS = 0x40
REG_FAULT_ADDR_LOW = 0x44
REG_FAULT_ADDR_HIGH = 0x48
REG_FAULT_INFO = 0x4C
REG_TOTAL_FAULTS = 0x50

CONTROL_ENABLE = 1
STATE_PRESENT = 1
STATE_ENFORCING = 2
ACCESS_READ = 1  # the device may read the window (driver-to-device data, rings it reads)
ACCESS_WRITE = 2  # the device may write it (device-to-driver data, the used ring)
FAULT_WRITE = 1  # FAULT_INFO: the last refused access was a write

CMD_MAP = 1
CMD_UNMAP = 2
CMD_CLEAR = 3
CMD_ENFORCE = 4

RESULT_OK = 0
RESULT_NO_DEVICE = 1
RESULT_BAD_WINDOW = 2
RESULT_FULL = 3
RESULT_BAD_COMMAND = 4
RESULT_NOT_FOUND = 5

ADDR_LIMIT = 1 << 52  # x86-64 physical addresses


class DmaWindows:
    """One device's window table and fault record.

    ``_lock`` protects the table and the counters; ``barrier`` (the device's
    transport lock, held while it serves requests) is taken around any change
    that removes access, so removal waits for the request in progress.
    """

    def __init__(
        self,
        name: str,
        enforcing: bool,
        log: Callable[[str], None],
        barrier: AbstractContextManager[object] | None = None,
    ) -> None:
        self.name = name
        self.enforcing = enforcing
        self._log = log
        self.barrier: AbstractContextManager[object] = barrier or nullcontext()
        self._lock = threading.Lock()
        self._windows: list[tuple[int, int, int]] = []  # (base, end, access), sorted by base
        # Per access bit, the union of the windows that grant it as merged
        # runs (starts, ends): what allows() searches.  Rebuilt whole under
        # _lock on every change and swapped in with one assignment, so the
        # device's path reads it without taking the lock.
        self._cover: dict[int, tuple[list[int], list[int]]] = {}
        self._rebuild()
        self.faults = 0
        self.last_fault = (0, 0, False)  # address, length, write
        self.on_fault: Callable[[], None] | None = None  # the IOMMU's total counter

    @property
    def windows(self) -> list[tuple[int, int, int]]:
        """(base, length, access) of every window, by base."""
        with self._lock:
            return [(b, e - b, a) for b, e, a in self._windows]

    def allows(self, addr: int, length: int, write: bool) -> bool:
        """Whether the device may make this access (every byte, with the right needed)."""
        if not self.enforcing:
            return True
        if length <= 0 or addr < 0:
            return length == 0
        starts, ends = self._cover[ACCESS_WRITE if write else ACCESS_READ]
        i = bisect.bisect_right(starts, addr) - 1
        return i >= 0 and addr + length <= ends[i]

    def covers(self) -> tuple[tuple[list[int], list[int]], tuple[list[int], list[int]]] | None:
        """None when every access is allowed (not enforcing), else the merged runs
        (starts, ends) readable and writable, which ``allows`` searches: a
        caller checking several accesses (a descriptor chain's buffers) makes
        one call.  The runs are swapped whole on a change, never changed in
        place; a removal waits for ``barrier``, which the device holds while it
        serves, so they stay valid for the request in hand."""
        if not self.enforcing:
            return None
        cover = self._cover
        return cover[ACCESS_READ], cover[ACCESS_WRITE]

    def _rebuild(self) -> None:
        """Caller holds _lock (or is the constructor)."""
        cover: dict[int, tuple[list[int], list[int]]] = {}
        for bit in (ACCESS_READ, ACCESS_WRITE):
            starts: list[int] = []
            ends: list[int] = []
            for base, end, access in self._windows:  # by base
                if not access & bit:
                    continue
                if ends and base <= ends[-1]:  # overlapping or adjacent: one run
                    ends[-1] = max(ends[-1], end)
                else:
                    starts.append(base)
                    ends.append(end)
            cover[bit] = (starts, ends)
        self._cover = cover

    def fault(self, addr: int, length: int, write: bool, what: str) -> None:
        """Record a refused access (the caller refused it before touching memory)."""
        with self._lock:
            self.faults += 1
            self.last_fault = (addr, length, write)
            count = self.faults
        if self.on_fault is not None:
            self.on_fault()
        if count <= LOGGED_FAULTS:
            more = " (further faults are only counted)" if count == LOGGED_FAULTS else ""
            self._log(
                f"keel: iommu: {self.name}: DMA {'write' if write else 'read'} "
                f"{addr:#x}+{length:#x} outside its windows ({what}), refused{more}"
            )

    def map(self, base: int, length: int, access: int) -> int:
        if (
            length <= 0
            or base < 0
            or base + length > ADDR_LIMIT
            or not access
            or access & ~(ACCESS_READ | ACCESS_WRITE)
        ):
            return RESULT_BAD_WINDOW
        with self._lock:
            if len(self._windows) >= MAX_WINDOWS:
                return RESULT_FULL
            self._windows.append((base, base + length, access))
            self._windows.sort()
            self._rebuild()
        return RESULT_OK

    def unmap(self, base: int, length: int, access: int) -> int:
        """Remove one window that is exactly (base, length, access).

        Exact, so that two grants of the same memory (the kernel makes one
        per frame capability) are taken back one at a time, each with its
        own access: removing one never leaves the other with more."""
        window = (base, base + length, access)
        with self.barrier, self._lock:
            if window not in self._windows:
                return RESULT_NOT_FOUND
            self._windows.remove(window)
            self._rebuild()
        return RESULT_OK

    def clear(self) -> None:
        with self.barrier, self._lock:
            self._windows = []
            self._rebuild()

    def describe(self) -> dict[str, object]:
        return {"dma_enforcing": self.enforcing, "dma_windows": len(self._windows),
                "dma_faults": self.faults}  # fmt: skip


class Iommu:
    """The register block at ``platform.IOMMU_MMIO_BASE`` and every device's table."""

    metrics_name = "iommu"

    def __init__(self, log: Callable[[str], None]) -> None:
        self._log = log
        self._lock = threading.Lock()
        self.enabled = False
        self._domains: dict[int, DmaWindows] = {}
        self.total_faults = 0
        # Called (outside the lock) for every refused access: device id, address,
        # length, whether it was a write.
        self.on_refused: Callable[[str, int, int, bool], None] | None = None
        self.device = 0
        self.addr = 0
        self.length = 0
        self.access = 0
        self.result = RESULT_OK

    # -- devices (the machine, on attach and detach) ----------------------------------------
    def attach(
        self, base: int, name: str, barrier: AbstractContextManager[object] | None = None
    ) -> DmaWindows:
        """A fresh (empty) table for the device now at ``base``."""
        with self._lock:
            domain = DmaWindows(name, self.enabled, self._log, barrier)
            domain.on_fault = lambda: self._count_fault(domain)
            self._domains[base] = domain
        return domain

    def detach(self, base: int) -> None:
        with self._lock:
            self._domains.pop(base, None)

    def _count_fault(self, domain: DmaWindows) -> None:
        with self._lock:
            self.total_faults += 1
        if self.on_refused is not None:
            addr, length, write = domain.last_fault
            self.on_refused(domain.name, addr, length, write)

    def cmdline(self) -> str:
        return f"keel.iommu={IOMMU_SIZE:#x}@{platform.IOMMU_MMIO_BASE:#x}"

    # -- registers (vCPU threads) -----------------------------------------------------------
    def read(self, offset: int, size: int) -> bytes:
        with self._lock:
            value = self._read_reg(offset) if size == 4 else 0
        return value.to_bytes(4, "little")[:size].ljust(size, b"\x00")

    def _read_reg(self, offset: int) -> int:
        domain = self._domains.get(self.device)
        fault_addr, _, fault_write = domain.last_fault if domain else (0, 0, False)
        regs = {
            REG_MAGIC: IOMMU_MAGIC,
            REG_VERSION: IOMMU_VERSION,
            REG_CONTROL: CONTROL_ENABLE if self.enabled else 0,
            REG_MAX_WINDOWS: MAX_WINDOWS,
            REG_DEVICE_LOW: self.device & 0xFFFFFFFF,
            REG_DEVICE_HIGH: self.device >> 32,
            REG_DEVICE_STATE: (
                (STATE_PRESENT | (STATE_ENFORCING if domain.enforcing else 0)) if domain else 0
            ),
            REG_WINDOW_COUNT: len(domain.windows) if domain else 0,
            REG_ADDR_LOW: self.addr & 0xFFFFFFFF,
            REG_ADDR_HIGH: self.addr >> 32,
            REG_LEN_LOW: self.length & 0xFFFFFFFF,
            REG_LEN_HIGH: self.length >> 32,
            REG_ACCESS: self.access,
            REG_RESULT: self.result,
            REG_FAULTS: (domain.faults & 0xFFFFFFFF) if domain else 0,
            REG_FAULT_ADDR_LOW: fault_addr & 0xFFFFFFFF,
            REG_FAULT_ADDR_HIGH: fault_addr >> 32,
            REG_FAULT_INFO: FAULT_WRITE if fault_write else 0,
            REG_TOTAL_FAULTS: self.total_faults & 0xFFFFFFFF,
        }
        return regs.get(offset, 0)

    def write(self, offset: int, data: bytes) -> None:
        if len(data) != 4:
            return  # 32-bit accesses only
        value = int.from_bytes(data, "little")
        if offset == REG_COMMAND:
            self._command(value)  # takes the locks it needs itself
            return
        with self._lock:
            if offset == REG_CONTROL:
                self._set_enabled(bool(value & CONTROL_ENABLE))
            elif offset in (REG_DEVICE_LOW, REG_DEVICE_HIGH):
                self.device = _set_half(self.device, value, offset == REG_DEVICE_HIGH)
            elif offset in (REG_ADDR_LOW, REG_ADDR_HIGH):
                self.addr = _set_half(self.addr, value, offset == REG_ADDR_HIGH)
            elif offset in (REG_LEN_LOW, REG_LEN_HIGH):
                self.length = _set_half(self.length, value, offset == REG_LEN_HIGH)
            elif offset == REG_ACCESS:
                self.access = value

    def _set_enabled(self, on: bool) -> None:
        """Caller holds ``_lock``.  Enabling makes every device enforce its table."""
        if on == self.enabled:
            return
        self.enabled = on
        for domain in self._domains.values():
            domain.enforcing = on
        self._log(f"keel: iommu: {'enabled' if on else 'disabled'} by the guest")

    def _command(self, cmd: int) -> None:
        with self._lock:
            domain = self._domains.get(self.device)
            addr, length, access = self.addr, self.length, self.access
        if cmd not in (CMD_MAP, CMD_UNMAP, CMD_CLEAR, CMD_ENFORCE):
            result = RESULT_BAD_COMMAND
        elif domain is None:
            result = RESULT_NO_DEVICE
        elif cmd == CMD_MAP:
            result = domain.map(addr, length, access)
        elif cmd == CMD_UNMAP:
            result = domain.unmap(addr, length, access)  # waits for the request in progress
        elif cmd == CMD_CLEAR:
            domain.clear()
            result = RESULT_OK
        else:
            domain.enforcing = True
            result = RESULT_OK
        with self._lock:
            self.result = result

    def describe(self) -> dict[str, object]:
        with self._lock:
            return {"enabled": self.enabled, "total_faults": self.total_faults}

    # -- snapshots (vmm.snapshot) -------------------------------------------------------
    def save_state(self) -> dict[str, object]:
        with self._lock:
            domains = {f"{base:#x}": {"windows": d.windows, "enforcing": d.enforcing,
                                      "faults": d.faults}
                       for base, d in self._domains.items()}  # fmt: skip
            return {"enabled": self.enabled, "total_faults": self.total_faults,
                    "regs": [self.device, self.addr, self.length, self.access, self.result],
                    "domains": domains}  # fmt: skip

    def load_state(self, state: dict[str, object]) -> None:
        """After the devices are attached again: their windows, faults and registers."""
        domains = state["domains"]
        assert isinstance(domains, dict)
        with self._lock:
            self.enabled = bool(state["enabled"])
            self.total_faults = int(str(state["total_faults"]))
            regs = state["regs"]
            assert isinstance(regs, list)
            self.device, self.addr, self.length, self.access, self.result = map(int, regs)
            for base, saved in domains.items():
                domain = self._domains.get(int(base, 16))
                if domain is None:
                    continue
                for wbase, length, access in saved["windows"]:
                    domain.map(int(wbase), int(length), int(access))
                domain.enforcing = bool(saved["enforcing"])
                domain.faults = int(saved["faults"])


def _set_half(value: int, data: int, high: bool) -> int:
    if high:
        return (value & 0xFFFFFFFF) | (data << 32)
    return (value & ~0xFFFFFFFF) | data
