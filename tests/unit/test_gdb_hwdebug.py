"""The gdb stub's KVM strategy without KVM: the DR7 encoding (enable, R/W and
LEN fields per slot), what the debug registers can and cannot watch, the int3
bookkeeping, and how a debug exit becomes a stop reason.  This host's KVM
(kvm_pvm) offers no hardware breakpoints, so the strategy itself never runs
here: these tests are what checks it."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from vmm.errors import ConfigError
from vmm.gdb import hwdebug
from vmm.gdb.hwdebug import DebugRefused, HwPoint, KvmDebug, dr7, hw_point
from vmm.gdb.target import DebugTarget, Refused
from vmm.kvm.exits import DebugExit
from vmm.kvm.ffi import lib
from vmm.machine import State
from vmm.memory import GuestMemoryError


def test_dr7_per_slot_enable_type_and_length() -> None:
    assert dr7([None, None, None, None]) == 0
    # slot 0, instruction breakpoint: G0 only (R/W0 = 00, LEN0 = 00)
    assert dr7([HwPoint(hwdebug.RW_EXEC, 0x1000, 1)]) == 0b10
    # slot 1, 4-byte write watch: G1 (bit 3), R/W1 = 01 (bits 20-21), LEN1 = 11 (bits 22-23)
    assert dr7([None, HwPoint(hwdebug.RW_WRITE, 0x2000, 4)]) == (1 << 3) | (0b01 << 20) | (
        0b11 << 22
    )
    # slot 3, 8-byte access watch: G3 (bit 7), R/W3 = 11 (bits 28-29), LEN3 = 10 (bits 30-31)
    value = dr7([None, None, None, HwPoint(hwdebug.RW_ACCESS, 0x3000, 8)])
    assert value == (1 << 7) | (0b11 << 28) | (0b10 << 30)
    # slot 2, 2-byte write watch: LEN2 = 01 (bits 26-27)
    assert dr7([None, None, HwPoint(hwdebug.RW_WRITE, 0x10, 2)]) == (1 << 5) | (0b01 << 24) | (
        0b01 << 26
    )
    # no local-enable bits: the guest's own DR7 use is not KVM's business here
    full = dr7([HwPoint(hwdebug.RW_ACCESS, 0, 4)] * 4)
    assert full & 0x55 == 0 and full & 0xAA == 0xAA


def test_debugregs_puts_addresses_in_dr0_to_dr3_and_dr7_last() -> None:
    slots: list[HwPoint | None] = [None, HwPoint(hwdebug.RW_WRITE, 0xFFFF_8000_0010_0008, 8)]
    regs = hwdebug.debugregs(slots)
    assert len(regs) == 8
    assert regs[:4] == (0, 0xFFFF_8000_0010_0008, 0, 0)
    assert regs[4:7] == (0, 0, 0)
    assert regs[7] == dr7(slots)


def test_what_a_debug_register_watches() -> None:
    assert hw_point(hwdebug.HW_BREAK, 0x401003, 1) == HwPoint(hwdebug.RW_EXEC, 0x401003, 1)
    assert hw_point(hwdebug.WRITE_WATCH, 0x1000, 8).rw == hwdebug.RW_WRITE
    assert hw_point(hwdebug.ACCESS_WATCH, 0x1002, 2).rw == hwdebug.RW_ACCESS
    with pytest.raises(DebugRefused, match="cannot watch reads alone"):
        hw_point(hwdebug.READ_WATCH, 0x1000, 4)
    with pytest.raises(DebugRefused, match="1, 2, 4 or 8 bytes"):
        hw_point(hwdebug.WRITE_WATCH, 0x1000, 16)
    with pytest.raises(DebugRefused, match="aligned to 4 bytes"):
        hw_point(hwdebug.WRITE_WATCH, 0x1002, 4)


class _Memory:
    def __init__(self) -> None:
        self.bytes = {0x1000 + i: 0x90 for i in range(16)}

    def read(self, thread: int, addr: int, length: int) -> bytes:
        return bytes(self.bytes[a] for a in range(addr, addr + length) if a in self.bytes)

    def write(self, thread: int, addr: int, data: bytes) -> bool:
        if any(a not in self.bytes for a in range(addr, addr + len(data))):
            return False
        for i, b in enumerate(data):
            self.bytes[addr + i] = b
        return True


def test_int3_breakpoints_patch_and_restore_memory() -> None:
    mem = _Memory()
    kvm = KvmDebug(4, mem.read, mem.write)
    assert kvm.arm() == (0, ())
    kvm.insert(hwdebug.SW_BREAK, 0x1004, 1, 1)
    kvm.insert(hwdebug.SW_BREAK, 0x1004, 1, 1)  # gdb may insert twice: the original stays
    assert mem.bytes[0x1004] == 0xCC and kvm.saved == {0x1004: b"\x90"}
    control, regs = kvm.arm()
    assert control == lib.KVM_GUESTDBG_ENABLE | lib.KVM_GUESTDBG_USE_SW_BP and regs == ()
    assert kvm.stop_reason(hwdebug.BP_VECTOR, 0x1004, 0) == "swbreak:;"
    assert kvm.stop_reason(hwdebug.BP_VECTOR, 0x1008, 0) == ""  # the guest's own int3
    with pytest.raises(DebugRefused, match="not mapped"):
        kvm.insert(hwdebug.SW_BREAK, 0x9000, 1, 1)
    kvm.remove(hwdebug.SW_BREAK, 0x1004, 1, 1)
    assert mem.bytes[0x1004] == 0x90 and not kvm.saved
    kvm.insert(hwdebug.SW_BREAK, 0x1001, 1, 1)
    kvm.clear(1)  # detach
    assert all(b == 0x90 for b in mem.bytes.values()) and kvm.arm() == (0, ())


def test_debug_registers_fill_free_and_report_which_fired() -> None:
    mem = _Memory()
    kvm = KvmDebug(4, mem.read, mem.write)
    kvm.insert(hwdebug.HW_BREAK, 0x401000, 1, 1)
    kvm.insert(hwdebug.WRITE_WATCH, 0x2000, 8, 1)
    kvm.insert(hwdebug.ACCESS_WATCH, 0x3004, 4, 1)
    kvm.insert(hwdebug.WRITE_WATCH, 0x2000, 8, 1)  # already set: no second register
    kvm.insert(hwdebug.HW_BREAK, 0x402000, 1, 1)
    with pytest.raises(DebugRefused, match="all 4 hardware debug registers are in use"):
        kvm.insert(hwdebug.HW_BREAK, 0x403000, 1, 1)
    control, regs = kvm.arm()
    assert control == lib.KVM_GUESTDBG_ENABLE | lib.KVM_GUESTDBG_USE_HW_BP
    assert regs[:4] == (0x401000, 0x2000, 0x3004, 0x402000)
    # DR6 bits 0-3 say which register fired
    assert kvm.stop_reason(hwdebug.DB_VECTOR, 0x401000, 0b0001) == "hwbreak:;"
    assert kvm.stop_reason(hwdebug.DB_VECTOR, 0x401234, 0b0010) == "watch:2000;"
    assert kvm.stop_reason(hwdebug.DB_VECTOR, 0x401234, 0b0100) == "awatch:3004;"
    assert kvm.stop_reason(hwdebug.DB_VECTOR, 0x401234, 0) == ""
    kvm.remove(hwdebug.WRITE_WATCH, 0x2000, 8, 1)
    kvm.insert(hwdebug.HW_BREAK, 0x403000, 1, 1)  # the freed register is used again
    assert kvm.arm()[1][1] == 0x403000
    assert KvmDebug(2, mem.read, mem.write).describe().startswith("kvm (int3 breakpoints, 2 ")


def test_strategy_follows_the_probed_breakpoint_count(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KEEL_GDB_BREAKPOINTS", raising=False)
    assert hwdebug.probe(0) == "single-step"  # this host: kvm_pvm
    assert hwdebug.probe(4) == "kvm"
    monkeypatch.setenv("KEEL_GDB_BREAKPOINTS", "single-step")
    assert hwdebug.probe(4) == "single-step"
    monkeypatch.setenv("KEEL_GDB_BREAKPOINTS", "int3")
    with pytest.raises(ConfigError, match="the only choice is single-step"):
        hwdebug.probe(4)


# -- DebugTarget wired to the KVM strategy, with a fake machine -----------------------------
class _Vcpu:
    def __init__(self, index: int) -> None:
        self.index = index
        self.debug: tuple[int, tuple[int, ...]] | None = None
        self.rip = 0x1000
        self.shadow = 0  # an STI's interrupt shadow
        self.mp = int(lib.KVM_MP_STATE_RUNNABLE)

    def set_guest_debug(self, control: int, debugreg: tuple[int, ...] = ()) -> None:
        self.debug = (control, debugreg)

    def mp_state(self) -> int:
        return self.mp

    def set_mp_state(self, mp_state: int) -> None:
        self.mp = mp_state

    def get_regs(self) -> dict[str, int]:
        return {"rip": self.rip}

    def set_regs(self, rip: int) -> None:
        self.rip = rip

    def get_sregs(self) -> SimpleNamespace:
        return SimpleNamespace(cs=SimpleNamespace(selector=0x8))

    def clear_interrupt_shadow(self) -> None:
        self.shadow = 0


class _Ram:
    def __init__(self) -> None:
        self.data = bytearray(b"\x90" * 0x2000)

    def read(self, gpa: int, length: int) -> bytes:
        if gpa + length > len(self.data):
            raise GuestMemoryError(f"{gpa:#x}")
        return bytes(self.data[gpa : gpa + length])

    def write(self, gpa: int, data: bytes) -> None:
        self.data[gpa : gpa + len(data)] = data


def _target(hw_bps: int) -> tuple[object, list[_Vcpu], _Ram, list[str]]:
    vcpus = [_Vcpu(0), _Vcpu(1)]
    events: list[str] = []
    runner = SimpleNamespace(slots=[SimpleNamespace(vcpu=v) for v in vcpus], debug_hook=None,
                             debug_exclusive=None, debug_prepare=None,
                             request_pause=lambda: events.append("pause"))  # fmt: skip
    ram = _Ram()
    system = SimpleNamespace(check_extension=lambda cap: hw_bps)
    kernel = SimpleNamespace(segments=(SimpleNamespace(paddr=0x1000),), end=0x2000)
    machine = SimpleNamespace(runner=runner, kernel=kernel,
                              guest=SimpleNamespace(system=system), guest_memory=ram,
                              state=State.RUNNING, result=None)  # fmt: skip
    target = DebugTarget(machine)  # type: ignore[arg-type]
    target.physical = True  # the fake has no page tables
    return target, vcpus, ram, events


def test_debug_target_arms_kvm_and_reports_its_traps(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KEEL_GDB_BREAKPOINTS", raising=False)
    target, vcpus, ram, events = _target(4)
    t: Any = target
    assert t.strategy().startswith("kvm (int3 breakpoints, 4 hardware debug registers")
    t.insert(0, 0x1000, 1, 1)  # break: an int3 in memory
    t.insert(2, 0x1808, 8, 1)  # watch: DR0
    assert ram.data[0x1000] == 0xCC and not t.breakpoints and not t.watchpoints
    t.resume()
    want = lib.KVM_GUESTDBG_ENABLE | lib.KVM_GUESTDBG_USE_SW_BP | lib.KVM_GUESTDBG_USE_HW_BP
    for v in vcpus:
        assert v.debug == (want, hwdebug.debugregs([HwPoint(hwdebug.RW_WRITE, 0x1808, 8)]))
    assert t.runner.debug_hook == t._on_kvm_debug and t.runner.debug_exclusive is None
    t.runner.debug_hook(t.runner.slots[1], DebugExit(hwdebug.DB_VECTOR, 0x1234, 0b0001))
    assert events == ["pause"] and t._stop.thread == 2 and t._stop.extra == "watch:1808;"
    with pytest.raises(Refused, match="cannot watch reads alone"):
        t.insert(3, 0x1808, 8, 1)  # rwatch: Refused, with the reason
    t.remove(0, 0x1000, 1, 1)
    assert ram.data[0x1000] == 0x90
    t.insert(0, 0x1004, 1, 1)
    t.detach()  # every int3 out, no guest debugging left on
    assert ram.data[0x1004] == 0x90 and all(v.debug == (0, ()) for v in vcpus)
    assert t.runner.debug_hook is None


def test_debug_target_keeps_single_step_without_hardware_breakpoints(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("KEEL_GDB_BREAKPOINTS", raising=False)
    target, vcpus, _, _ = _target(0)
    t: Any = target
    assert t.kvm is None and t.strategy().startswith("single-step")
    t.insert(0, 0xFFFF_FFFF_8010_0000, 1, 1)
    t.resume()
    want = lib.KVM_GUESTDBG_ENABLE | lib.KVM_GUESTDBG_SINGLESTEP
    assert all(v.debug == (want, ()) for v in vcpus) and t.runner.debug_hook == t._on_debug


def test_the_stub_executes_a_hlt_instead_of_single_stepping_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A HLT single-stepped by kvm_pvm leaves the vCPU running with the halt
    still pending (it halted later, anywhere): the stub executes it itself."""
    monkeypatch.delenv("KEEL_GDB_BREAKPOINTS", raising=False)
    target, vcpus, ram, _ = _target(0)
    t: Any = target
    slots = t.runner.slots
    ram.data[0x1234] = 0xF4  # hlt
    vcpus[0].rip, vcpus[0].shadow = 0x1234, 1  # after an sti
    vcpus[1].rip = 0x1300
    t.insert(2, 0x1800, 8, 1)  # a watchpoint: the continue single-steps
    t.resume()
    assert t.runner.debug_prepare == t._prepare_step
    for slot in slots:
        t.runner.debug_prepare(slot)
    halted = int(lib.KVM_MP_STATE_HALTED)
    assert (vcpus[0].rip, vcpus[0].shadow, vcpus[0].mp) == (0x1235, 0, halted)
    assert (vcpus[1].rip, vcpus[1].mp) == (0x1300, int(lib.KVM_MP_STATE_RUNNABLE))
    # a halted vCPU's step lasts until an interrupt: it steps beside the others
    assert not t._exclusive(slots[0]) and t._exclusive(slots[1])
    t.runner.debug_prepare(slots[0])  # still halted: nothing more to execute
    assert vcpus[0].rip == 0x1235
    t._on_debug(slots[0], DebugExit(hwdebug.DB_VECTOR, 0x1100, 0))  # woken: its handler
    assert t._exclusive(slots[0])
    # gdb's stepi over a hlt: executed the same way, without entering the guest
    vcpus[1].rip = 0x1234
    assert t.step(2).thread == 2
    assert (vcpus[1].rip, vcpus[1].mp) == (0x1235, halted)
    t.detach()
    assert t.runner.debug_prepare is None
