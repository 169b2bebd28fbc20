"""How the gdb stub stops the guest at breakpoints and watchpoints: a strategy
chosen by probing the host's KVM when gdb connects (``probe``).

``kvm`` (the host has hardware breakpoints: ``KVM_CAP_GUEST_DEBUG_HW_BPS`` > 0,
a KVM on VMX or SVM)
    ``break`` writes an ``int3`` into guest memory and KVM reports the #BP
    (``KVM_GUESTDBG_USE_SW_BP``); ``hbreak``, ``watch`` and ``awatch`` program
    the debug registers DR0-DR3 and DR7 (``KVM_GUESTDBG_USE_HW_BP``).  The
    vCPUs run at full speed, in guest user mode as in the kernel.  x86 has no
    read-only data breakpoint, so ``rwatch`` is refused (use ``awatch``); a
    watched range is 1, 2, 4 or 8 bytes, aligned to its length.  With an int3
    armed every #BP comes to the VMM: one that is not ours (the guest's own
    int3) stops the guest as a plain SIGTRAP and is not handed back to it.
``single-step`` (no hardware breakpoints: this host's kvm_pvm, where an
``int3`` in guest supervisor code also ends in a KVM internal error)
    ``vmm.gdb.target`` single-steps every vCPU through kernel code and compares.

Only the hardware-breakpoint count is probed; a host that offers debug
registers is taken to intercept ``int3`` as well (every VMX and SVM KVM
does).  ``KEEL_GDB_BREAKPOINTS=single-step`` in the environment forces the
fallback on any host.  The ``kvm`` strategy cannot run on this machine: its
register encoding and its bookkeeping are unit-tested (tests/unit/test_gdb_hwdebug.py).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

from vmm.errors import ConfigError
from vmm.kvm.ffi import lib
from vmm.kvm.system import System

SIGTRAP = 5
DB_VECTOR, BP_VECTOR = 1, 3
INT3 = b"\xcc"
MAX_SLOTS = 4  # DR0-DR3

# gdb's Z packet kinds
SW_BREAK, HW_BREAK, WRITE_WATCH, READ_WATCH, ACCESS_WATCH = range(5)
# DR7's R/W field (bits 16 + 4n) and LEN field (bits 18 + 4n) for slot n
RW_EXEC, RW_WRITE, RW_ACCESS = 0b00, 0b01, 0b11
LEN_BITS = {1: 0b00, 2: 0b01, 8: 0b10, 4: 0b11}
STOP_REASON = {RW_EXEC: "hwbreak:;", RW_WRITE: "watch:{:x};", RW_ACCESS: "awatch:{:x};"}

ReadFn = Callable[[int, int, int], bytes]  # (thread, address, length) -> bytes
WriteFn = Callable[[int, int, bytes], bool]


class DebugRefused(Exception):
    """A breakpoint or watchpoint the strategy cannot set; the message says why."""


@dataclass(frozen=True)
class HwPoint:
    """What one debug register watches: R/W type, address, length."""

    rw: int
    addr: int
    length: int


def dr7(slots: list[HwPoint | None]) -> int:
    """DR7 for ``slots`` (index n is DRn): the global-enable bit Gn (bit 2n + 1),
    R/Wn and LENn; a free slot contributes nothing."""
    value = 0
    for n, point in enumerate(slots):
        if point is None:
            continue
        value |= 1 << (2 * n + 1)
        value |= point.rw << (16 + 4 * n)
        value |= LEN_BITS[point.length] << (18 + 4 * n)
    return value


def debugregs(slots: list[HwPoint | None]) -> tuple[int, ...]:
    """``kvm_guest_debug_arch.debugreg``: DR0-DR3 the addresses, [7] DR7."""
    addrs = [p.addr if p is not None else 0 for p in slots] + [0] * (MAX_SLOTS - len(slots))
    return (*addrs[:MAX_SLOTS], 0, 0, 0, dr7(slots))


def hw_point(kind: int, addr: int, length: int) -> HwPoint:
    """The debug register setting for gdb's Z ``kind``; DebugRefused if x86 has none."""
    if kind == HW_BREAK:
        return HwPoint(RW_EXEC, addr, 1)  # an instruction breakpoint has LEN 00
    if kind == READ_WATCH:
        raise DebugRefused("x86 debug registers cannot watch reads alone: use awatch "
                           "(reads and writes)")  # fmt: skip
    if length not in LEN_BITS:
        raise DebugRefused(f"watchpoint length {length} refused: a debug register "
                           "watches 1, 2, 4 or 8 bytes")  # fmt: skip
    if addr % length:
        raise DebugRefused(f"watchpoint at {addr:#x} refused: a {length}-byte range must be "
                           f"aligned to {length} bytes")  # fmt: skip
    return HwPoint(RW_WRITE if kind == WRITE_WATCH else RW_ACCESS, addr, length)


class KvmDebug:
    """Breakpoints and watchpoints through KVM guest debugging (``int3`` and DR0-DR7).
    ``read`` and ``write`` access guest memory by virtual address as gdb sees it."""

    name = "kvm"

    def __init__(self, hw_slots: int, read: ReadFn, write: WriteFn) -> None:
        self.slots: list[HwPoint | None] = [None] * min(hw_slots, MAX_SLOTS)
        self.saved: dict[int, bytes] = {}  # int3 address -> the byte it replaced
        self._read, self._write = read, write

    def describe(self) -> str:
        return (f"kvm (int3 breakpoints, {len(self.slots)} hardware debug registers "
                "for hbreak/watch/awatch)")  # fmt: skip

    def insert(self, kind: int, addr: int, length: int, thread: int) -> None:
        if kind == SW_BREAK:
            if addr in self.saved:
                return
            original = self._read(thread, addr, 1)
            if len(original) != 1 or not self._write(thread, addr, INT3):
                raise DebugRefused(f"breakpoint at {addr:#x} refused: the address is not mapped")
            self.saved[addr] = original
            return
        point = hw_point(kind, addr, length)
        if point in self.slots:
            return
        if None not in self.slots:
            raise DebugRefused(f"all {len(self.slots)} hardware debug registers are in use")
        self.slots[self.slots.index(None)] = point

    def remove(self, kind: int, addr: int, length: int, thread: int) -> None:
        if kind == SW_BREAK:
            original = self.saved.pop(addr, None)
            if original is not None:
                self._write(thread, addr, original)
            return
        try:
            point = hw_point(kind, addr, length)
        except DebugRefused:
            return
        if point in self.slots:
            self.slots[self.slots.index(point)] = None

    def clear(self, thread: int) -> None:
        """Every breakpoint out (detach): the int3 bytes give way to the originals."""
        for addr in list(self.saved):
            self.remove(SW_BREAK, addr, 1, thread)
        self.slots = [None] * len(self.slots)

    def arm(self) -> tuple[int, tuple[int, ...]]:
        """KVM_SET_GUEST_DEBUG's control flags and debug registers for a continue
        (0 and nothing when no breakpoint is set)."""
        control = 0
        if self.saved:
            control |= lib.KVM_GUESTDBG_ENABLE | lib.KVM_GUESTDBG_USE_SW_BP
        if any(p is not None for p in self.slots):
            control |= lib.KVM_GUESTDBG_ENABLE | lib.KVM_GUESTDBG_USE_HW_BP
            return control, debugregs(self.slots)
        return control, ()

    def stop_reason(self, exception: int, pc: int, dr6: int) -> str:
        """The stop packet's reason field for a debug exit: ``swbreak:;`` at one of
        our int3s, ``hwbreak:;`` or ``watch:ADDR;``/``awatch:ADDR;`` for the debug
        register DR6 names; empty for a trap that is none of ours."""
        if exception == BP_VECTOR and pc in self.saved:
            return "swbreak:;"
        if exception == DB_VECTOR:
            for n, point in enumerate(self.slots):
                if point is not None and dr6 & (1 << n):
                    return STOP_REASON[point.rw].format(point.addr)
        return ""


def probe(hw_bps: int) -> str:
    """The strategy for a host offering ``hw_bps`` hardware breakpoints."""
    forced = os.environ.get("KEEL_GDB_BREAKPOINTS", "")
    if forced not in ("", "single-step"):
        raise ConfigError(f"KEEL_GDB_BREAKPOINTS={forced!r}: the only choice is single-step")
    if forced == "single-step" or hw_bps <= 0:
        return "single-step"
    return "kvm"


def host_hw_bps(system: System) -> int:
    """KVM_CAP_GUEST_DEBUG_HW_BPS: how many hardware breakpoints the host offers."""
    return max(system.check_extension(lib.KVM_CAP_GUEST_DEBUG_HW_BPS), 0)


SINGLE_STEP_DESCRIPTION = ("single-step (this host's KVM has no hardware breakpoints: kernel "
                           "code only, watch compares values)")  # fmt: skip
