"""``DebugTarget``: a machine as gdb drives it: stop, step, continue, registers,
memory, breakpoints and watchpoints.

All-stop: while gdb looks, every vCPU is parked (``Machine.pause``).  A
single step runs one vCPU for one instruction from the debugger's own thread
(``KVM_GUESTDBG_SINGLESTEP``; port and MMIO exits on the way are served from
the buses as usual); the others stay parked.

Breakpoints and watchpoints: where KVM offers no hardware breakpoints
(``KVM_CAP_GUEST_DEBUG_HW_BPS`` is 0) and a software ``int3`` in guest
supervisor code ends in a KVM internal error (kvm_pvm), a continue with
breakpoints or watchpoints armed single-steps every vCPU in its own thread
and stops all of them when one is about to execute a breakpoint's address,
or when a watched range changed value.  While a watchpoint is armed, each
vCPU's step and the check after it run alone (the runner's ``debug_lock``),
so the vCPU reported is the one whose instruction changed the value (a halted
vCPU or one not yet started steps beside the others, as its step lasts until
an interrupt, but checks alone).  That covers kernel code only: in
guest user mode a single-step trap goes to the guest, not to the VMM, so
breakpoints in user space are refused with a message, as are read and
access watchpoints (they need debug registers).  Where the host offers
hardware breakpoints, ``vmm.gdb.hwdebug`` serves them through KVM instead
(``strategy``: "kvm" or "single-step", probed when gdb connects).

A ``hlt`` is never single-stepped by KVM: the stub executes it itself (the
vCPU's pc past it, out of an ``sti``'s interrupt shadow, halted until an
interrupt: ``_execute_hlt``), in a step as in a stepping continue.  The host's
KVM (kvm_pvm, whose emulator runs guest supervisor code) ends a single step
over a ``hlt`` before it halts the vCPU and keeps the halt pending: the vCPU
does not halt there, and halts after the first instruction it executes
without single-stepping, wherever that is - in an interrupt handler, with
interrupts off, it never woke again (tests/boot/test_gdb.py, the idle vCPU
tests; the boot CPU waiting for its APs with ``sti; hlt`` hung half of the
gdb sessions of that test).
"""

from __future__ import annotations

import signal
import threading
from dataclasses import dataclass

from vmm.gdb import hwdebug, regs
from vmm.gdb.paging import translate
from vmm.kvm import exits
from vmm.kvm.ffi import lib
from vmm.kvm.vcpu import Vcpu
from vmm.machine import Machine, State
from vmm.memory import GuestMemoryError
from vmm.vcpu_runner import (
    KICK_SIGNAL,
    STATUS_GUEST_CRASH,
    ExitResult,
    VcpuSlot,
    describe_exit,
    handle_exit,
)

SIGINT, SIGTRAP = 2, 5
KERNEL_HALF = 0xFFFF_8000_0000_0000
HLT = b"\xf4"
STEP_TIMEOUT = 2.0  # a step that does not finish (a vCPU never started) is given up
NOT_STARTED = (lib.KVM_MP_STATE_UNINITIALIZED, lib.KVM_MP_STATE_INIT_RECEIVED)


class Refused(Exception):
    """A request this host or this stub cannot serve; the message says why."""


@dataclass
class Stop:
    """Why the guest stopped: gdb's thread id (vCPU index + 1), signal, and the
    stop reason's extra fields (``swbreak:;``, ``watch:ADDR;``)."""

    thread: int
    signal: int = SIGTRAP
    extra: str = ""


class _Watch:
    __slots__ = ("gpa", "value")

    def __init__(self, gpa: int, value: bytes | None) -> None:
        self.gpa, self.value = gpa, value


class DebugTarget:
    def __init__(self, machine: Machine) -> None:
        self.machine = machine
        self.runner = machine.runner
        self.breakpoints: set[int] = set()
        # (address, length) -> the watched range's guest-physical address, last value
        self.watchpoints: dict[tuple[int, int], _Watch] = {}
        self.physical = False  # memory packets address guest-physical memory
        self.last = Stop(1)
        self._stop: Stop | None = None
        self._stopped = threading.Event()
        # While stepping: each started vCPU's next pc, the vCPUs halted (their
        # next step lasts until an interrupt), and kernel pages translated
        self._next_pc: dict[int, int] = {}
        self._halted: set[int] = set()
        self._code_pages: dict[int, int | None] = {}
        image = machine.kernel
        low = min((s.paddr for s in image.segments), default=0)
        self._kernel_low = (low, image.end)
        hw_bps = hwdebug.host_hw_bps(machine.guest.system)
        self.kvm: hwdebug.KvmDebug | None = None
        if hwdebug.probe(hw_bps) == "kvm":
            self.kvm = hwdebug.KvmDebug(hw_bps, self.read_memory, self.write_memory)

    def strategy(self) -> str:
        """How breakpoints are served here (gdb's ``monitor breakpoints``)."""
        return self.kvm.describe() if self.kvm is not None else hwdebug.SINGLE_STEP_DESCRIPTION

    # -- threads ----------------------------------------------------------------------
    def threads(self) -> list[int]:
        return [slot.vcpu.index + 1 for slot in self.runner.slots]

    def slot(self, thread: int) -> VcpuSlot:
        slots = self.runner.slots
        if thread <= 0:
            return slots[self.last.thread - 1]
        if thread > len(slots):
            raise Refused(f"no thread {thread}: the guest has {len(slots)} vCPUs")
        return slots[thread - 1]

    def describe(self, thread: int) -> str:
        vcpu = self.slot(thread).vcpu
        state = {lib.KVM_MP_STATE_RUNNABLE: "runnable", lib.KVM_MP_STATE_HALTED: "halted"}.get(
            vcpu.mp_state(), "not started"
        )
        return f"vCPU {vcpu.index} ({state})"

    # -- stopping and going -------------------------------------------------------------
    def halt(self) -> None:
        """Park every vCPU (the machine is then paused) and wait until they are."""
        if self.machine.state is State.RUNNING:
            self.machine.pause()
        with self.runner.lock:
            while not self.runner.all_parked() and self.machine.result is None:
                self.runner.lock.wait(0.05)

    def resume(self) -> None:
        """Continue every vCPU; stepping them when breakpoints or watchpoints are armed."""
        self._stop = None
        self._stopped.clear()
        stepping = bool(self.breakpoints or self.watchpoints)
        for (_, length), watch in self.watchpoints.items():
            watch.value = self._read_phys(watch.gpa, length)
        control = lib.KVM_GUESTDBG_ENABLE | lib.KVM_GUESTDBG_SINGLESTEP if stepping else 0
        debugreg: tuple[int, ...] = ()
        if self.kvm is not None:
            control, debugreg = self.kvm.arm()
        self._next_pc.clear()
        self._halted.clear()
        self._code_pages.clear()
        for slot in self.runner.slots:
            slot.vcpu.set_guest_debug(control, debugreg)
            if not stepping:
                continue
            mp_state = slot.vcpu.mp_state()
            if mp_state not in NOT_STARTED:
                self._next_pc[slot.vcpu.index] = slot.vcpu.get_regs()["rip"]
            if mp_state == lib.KVM_MP_STATE_HALTED:
                self._halted.add(slot.vcpu.index)
        hook = self._on_kvm_debug if self.kvm is not None else self._on_debug
        self.runner.debug_hook = hook if control else None
        self.runner.debug_prepare = self._prepare_step if stepping else None
        self.runner.debug_exclusive = self._exclusive if self.watchpoints else None
        if self.machine.state is State.PAUSED:
            self.machine.resume()

    def interrupt(self) -> None:
        """Ctrl-C from gdb: stop everything, reported as SIGINT."""
        self._report(Stop(self.last.thread, SIGINT))

    def wait(self, timeout: float) -> Stop | None:
        """The stop that ended a continue, once every vCPU is parked; None on timeout."""
        if not self._stopped.wait(timeout):
            return None
        self.halt()
        assert self._stop is not None
        self.last = self._stop
        return self._stop

    def step(self, thread: int) -> Stop:
        """Execute one instruction on one vCPU (the others stay parked)."""
        slot = self.slot(thread)
        vcpu = slot.vcpu
        self.last = Stop(vcpu.index + 1)
        if vcpu.mp_state() in NOT_STARTED:
            return self.last  # nothing to step before the guest starts this vCPU
        if self._at_hlt(vcpu.index + 1, vcpu.get_regs()["rip"]):
            _execute_hlt(vcpu)  # the step is done: the vCPU halted past the hlt
            return self.last
        me = threading.get_ident()
        timer = threading.Timer(STEP_TIMEOUT, _kick, (vcpu, me))
        vcpu.set_guest_debug(lib.KVM_GUESTDBG_ENABLE | lib.KVM_GUESTDBG_SINGLESTEP)
        vcpu.clear_exit_request()
        timer.start()
        try:
            while True:
                ex = vcpu.run()
                kind = type(ex)
                if kind is exits.DebugExit:
                    break
                if kind is exits.InterruptedExit:
                    if not timer.is_alive():
                        break
                    continue
                left = handle_exit(ex, self.machine.pio, self.machine.mmio)
                if left is not None:
                    reason = f"{describe_exit(left)} on vCPU {vcpu.index}"
                    self.machine.stop(ExitResult(STATUS_GUEST_CRASH, reason))
                    break
                if self.machine.result is not None:
                    break  # the guest reported its verdict through the exit port
        finally:
            timer.cancel()
            vcpu.set_guest_debug(0)
            vcpu.request_exit()  # parked again: its thread clears this on resume
        return self.last

    def detach(self) -> None:
        """Forget every breakpoint and let the guest run on."""
        self.breakpoints.clear()
        self.watchpoints.clear()
        if self.kvm is not None:
            self.kvm.clear(self.last.thread)
        self.resume()

    def release(self) -> None:
        """gdb went away without detaching: stop what may be running (a breakpoint
        may have parked the vCPUs meanwhile), then let the guest run on without
        breakpoints, never stopped for a debugger that is not there."""
        if self.machine.result is None:
            self.halt()
            self.detach()

    def _prepare_step(self, slot: VcpuSlot) -> None:
        """Before a continuing vCPU's step (its own thread): a hlt is executed here,
        never single-stepped by KVM (the module's docstring says why)."""
        index = slot.vcpu.index
        pc = self._next_pc.get(index)
        if pc is None or index in self._halted:
            return
        if self._at_hlt(index + 1, pc):
            _execute_hlt(slot.vcpu)
            self._halted.add(index)

    def _at_hlt(self, thread: int, pc: int) -> bool:
        """Whether the vCPU's next instruction, at pc, is a hlt in kernel code."""
        if not self._kernel_code(pc):
            return False
        page = pc & ~0xFFF
        base = self._code_pages.get(page, -1)
        if base == -1:
            base = self._translate(thread, page)
            if page >= KERNEL_HALF:  # the same in every address space: kept till resume
                self._code_pages[page] = base
        if base is None or self._read_phys(base | (pc & 0xFFF), 1) != HLT:
            return False
        return not self.slot(thread).vcpu.get_sregs().cs.selector & 3  # CPL 0

    def _exclusive(self, slot: VcpuSlot) -> bool:
        """Whether this vCPU's next step runs alone (the runner's debug_lock): yes,
        unless it has not started (its first step waits for a startup IPI) or is
        halted (its step lasts until an interrupt).  So the vCPU after whose step
        a watched value changed is the vCPU that changed it."""
        index = slot.vcpu.index
        return index in self._next_pc and index not in self._halted

    def _on_debug(self, slot: VcpuSlot, ex: exits.DebugExit) -> None:
        """A step of a continuing vCPU (its own thread): stop at a breakpoint or
        when a watched range changed."""
        self._next_pc[slot.vcpu.index] = ex.pc
        self._halted.discard(slot.vcpu.index)  # it ran an instruction: it woke
        if ex.pc in self.breakpoints:
            self._report(Stop(slot.vcpu.index + 1, SIGTRAP, "swbreak:;"))
            return
        for (addr, length), watch in self.watchpoints.items():
            now = self._read_phys(watch.gpa, length)
            if now != watch.value:
                watch.value = now
                self._report(Stop(slot.vcpu.index + 1, SIGTRAP, f"watch:{addr:x};"))
                return

    def _on_kvm_debug(self, slot: VcpuSlot, ex: exits.DebugExit) -> None:
        """A KVM breakpoint or watchpoint trap (a vCPU's own thread); a trap that is
        none of ours (the guest's own int3) stops the guest too, as a plain SIGTRAP."""
        assert self.kvm is not None
        reason = self.kvm.stop_reason(ex.exception, ex.pc, ex.dr6)
        self._report(Stop(slot.vcpu.index + 1, SIGTRAP, reason))

    def _report(self, stop: Stop) -> None:
        if self._stop is None:
            self._stop = stop
            self.runner.request_pause()
            self._stopped.set()

    # -- registers ----------------------------------------------------------------------
    def registers(self, thread: int) -> list[bytes]:
        vcpu = self.slot(thread).vcpu
        return regs.read_all(vcpu.get_regs(), vcpu.get_sregs(), vcpu.get_fpu())

    def write_register(self, thread: int, index: int, data: bytes) -> None:
        """General registers, rip and eflags are written; others are read-only here
        (a write to them is accepted and has no effect, as gdb writes all at once)."""
        if not 0 <= index < len(regs.LAYOUT):
            raise Refused(f"no register {index}")
        name = regs.LAYOUT[index][0]
        value = int.from_bytes(data, "little")
        vcpu = self.slot(thread).vcpu
        if name in regs.WRITABLE_GPRS:
            vcpu.set_regs(**{name: value})
        elif name == "eflags":
            vcpu.set_regs(rflags=value | 2)

    # -- memory -------------------------------------------------------------------------
    def _read_phys(self, gpa: int, length: int) -> bytes | None:
        try:
            return self.machine.guest_memory.read(gpa, length)
        except GuestMemoryError:
            return None

    def _translate(self, thread: int, vaddr: int) -> int | None:
        if self.physical:
            return vaddr
        s = self.slot(thread).vcpu.get_sregs()
        return translate(self._read_phys, vaddr, s.cr0, s.cr3, s.cr4, s.efer)

    def _pieces(self, thread: int, addr: int, length: int) -> list[tuple[int | None, int]]:
        """``[addr, addr + length)`` cut at page boundaries, each piece translated."""
        out = []
        while length > 0:
            n = min(length, 0x1000 - (addr & 0xFFF))
            out.append((self._translate(thread, addr), n))
            addr, length = addr + n, length - n
        return out

    def read_memory(self, thread: int, addr: int, length: int) -> bytes:
        """As many bytes as are readable from ``addr`` on (maybe none)."""
        data = bytearray()
        for gpa, n in self._pieces(thread, addr, length):
            chunk = None if gpa is None else self._read_phys(gpa, n)
            if chunk is None:
                break
            data += chunk
        return bytes(data)

    def write_memory(self, thread: int, addr: int, data: bytes) -> bool:
        pieces = self._pieces(thread, addr, len(data))
        if any(gpa is None or self._read_phys(gpa, n) is None for gpa, n in pieces):
            return False
        pos = 0
        for gpa, n in pieces:
            assert gpa is not None
            self.machine.guest_memory.write(gpa, data[pos : pos + n])
            pos += n
        return True

    # -- breakpoints ----------------------------------------------------------------------
    def _kernel_code(self, addr: int) -> bool:
        low, end = self._kernel_low
        return addr >= KERNEL_HALF or low <= addr < end

    def insert(self, kind: int, addr: int, length: int, thread: int) -> None:
        if self.kvm is not None:
            try:
                return self.kvm.insert(kind, addr, length, thread)
            except hwdebug.DebugRefused as exc:
                raise Refused(str(exc)) from None
        if kind in (0, 1):
            if not self._kernel_code(addr):
                raise Refused(
                    f"breakpoint at {addr:#x} refused: only kernel code can be stopped at on "
                    "this host (in guest user mode its single-step traps go to the guest)"
                )
            self.breakpoints.add(addr)
            return
        if kind == 2:
            if not 0 < length <= 4096:
                raise Refused(f"watchpoint length {length} refused")
            gpa = self._translate(thread, addr)
            if gpa is None or self._read_phys(gpa, length) is None:
                raise Refused(f"watchpoint at {addr:#x} refused: the address is not mapped")
            if (gpa & 0xFFF) + length > 0x1000:
                raise Refused(f"watchpoint at {addr:#x} refused: it crosses a page")
            self.watchpoints[(addr, length)] = _Watch(gpa, self._read_phys(gpa, length))
            return
        raise Refused(
            "read and access watchpoints need hardware debug registers, which this host's "
            "KVM does not offer (KVM_CAP_GUEST_DEBUG_HW_BPS is 0); use a write watchpoint"
        )

    def remove(self, kind: int, addr: int, length: int, thread: int = 0) -> None:
        if self.kvm is not None:
            return self.kvm.remove(kind, addr, length, thread)
        if kind in (0, 1):
            self.breakpoints.discard(addr)
        elif kind == 2:
            self.watchpoints.pop((addr, length), None)


def _execute_hlt(vcpu: Vcpu) -> None:
    """Execute the hlt at the vCPU's pc as the processor does: its pc past it,
    out of the interrupt shadow of an ``sti`` just before (the hlt ends it, so
    ``sti; hlt`` wakes at the next interrupt), halted until an interrupt."""
    vcpu.set_regs(rip=vcpu.get_regs()["rip"] + len(HLT))
    vcpu.clear_interrupt_shadow()
    vcpu.set_mp_state(lib.KVM_MP_STATE_HALTED)


def _kick(vcpu: object, thread_ident: int) -> None:
    """Make the debugger thread's KVM_RUN return (a step that cannot finish)."""
    vcpu.request_exit()  # type: ignore[attr-defined]
    try:
        signal.pthread_kill(thread_ident, KICK_SIGNAL)
    except (ProcessLookupError, OSError):
        pass
