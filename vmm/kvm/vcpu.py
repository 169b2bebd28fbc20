"""``Vcpu``: one virtual CPU and its shared ``kvm_run`` page."""

from __future__ import annotations

import errno
import mmap
import os
from collections.abc import Iterable

from vmm.errors import KvmError
from vmm.kvm import exits
from vmm.kvm.ffi import ffi, ioctl, lib

TYPE_CHECKING = False  # typing costs ~4 ms of each start (vmm/records.py)
if TYPE_CHECKING:
    from typing import Any

if TYPE_CHECKING:  # system imports vm imports this module
    from vmm.kvm.system import CpuidEntry

REGISTER_NAMES = (
    "rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rsp", "rbp",
    "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15", "rip", "rflags",
)  # fmt: skip

_KVM_RUN = lib.KVM_RUN
_EXIT_IO = lib.KVM_EXIT_IO
_EXIT_MMIO = lib.KVM_EXIT_MMIO
_IO_OUT = lib.KVM_EXIT_IO_OUT
_RETRY = (errno.EINTR, errno.EAGAIN)


class Vcpu:
    """A vCPU.  ``run()`` enters the guest and returns why it left."""

    def __init__(self, fd: int, index: int, mmap_size: int) -> None:
        self.fd = fd
        self.index = index
        self._mmap = mmap.mmap(fd, mmap_size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        self._page = memoryview(self._mmap)
        self._run: Any = ffi.cast("struct kvm_run *", ffi.from_buffer(self._mmap))
        self._mmio_offset = ffi.offsetof("struct kvm_run", "mmio") + ffi.offsetof(
            "kvm_exit_mmio_t", "data"
        )

    # -- the hot path ---------------------------------------------------------
    def run(self) -> exits.Exit:
        """Run the guest until it exits to user space; return a typed exit."""
        if lib.ioctl(self.fd, _KVM_RUN, ffi.cast("unsigned long", 0)) < 0:
            err = ffi.errno
            if err in _RETRY:
                return exits.InterruptedExit()
            raise KvmError(f"KVM_RUN on vCPU {self.index}: {os.strerror(err)}", err)
        run = self._run
        reason = run.exit_reason
        if reason == _EXIT_IO:
            io = run.io
            size = io.size
            count = io.count
            start = io.data_offset
            return exits.IoExit(
                io.port,
                size,
                count,
                io.direction == _IO_OUT,
                self._page[start : start + size * count],
            )
        if reason == _EXIT_MMIO:
            mm = run.mmio
            start = self._mmio_offset
            return exits.MmioExit(
                mm.phys_addr, bool(mm.is_write), self._page[start : start + mm.len]
            )
        return self._slow_exit(reason)

    def _slow_exit(self, reason: int) -> exits.Exit:
        run = self._run
        if reason == lib.KVM_EXIT_HLT:
            return exits.HltExit()
        if reason == lib.KVM_EXIT_SHUTDOWN:
            return exits.ShutdownExit()
        if reason == lib.KVM_EXIT_SYSTEM_EVENT:
            ev = run.system_event
            return exits.SystemEventExit(
                ev.type, tuple(ev.data[i] for i in range(min(ev.ndata, 16)))
            )
        if reason == lib.KVM_EXIT_INTERNAL_ERROR:
            ie = run.internal
            return exits.InternalErrorExit(
                ie.suberror, tuple(ie.data[i] for i in range(min(ie.ndata, 16)))
            )
        if reason == lib.KVM_EXIT_FAIL_ENTRY:
            fe = run.fail_entry
            return exits.FailEntryExit(fe.hardware_entry_failure_reason, fe.cpu)
        if reason == lib.KVM_EXIT_INTR:
            return exits.InterruptedExit()
        if reason == lib.KVM_EXIT_DEBUG:
            arch = ffi.cast("struct kvm_debug_exit_arch *", ffi.addressof(run, "hw"))
            return exits.DebugExit(int(arch.exception), int(arch.pc), int(arch.dr6))
        return exits.UnknownExit(reason, run.hw.hardware_exit_reason)

    def request_exit(self) -> None:
        """Make the next (or current, once signalled) KVM_RUN return at once."""
        if self._run is not None:
            self._run.immediate_exit = 1

    def clear_exit_request(self) -> None:
        if self._run is not None:
            self._run.immediate_exit = 0

    # -- state ----------------------------------------------------------------
    def get_regs(self) -> dict[str, int]:
        regs = ffi.new("struct kvm_regs *")
        ioctl(self.fd, lib.KVM_GET_REGS, regs, what="KVM_GET_REGS")
        return {name: int(getattr(regs, name)) for name in REGISTER_NAMES}

    def set_regs(self, **values: int) -> None:
        regs = ffi.new("struct kvm_regs *")
        ioctl(self.fd, lib.KVM_GET_REGS, regs, what="KVM_GET_REGS")
        for name, value in values.items():
            if name not in REGISTER_NAMES:
                raise ValueError(f"unknown register {name}")
            setattr(regs, name, value)
        ioctl(self.fd, lib.KVM_SET_REGS, regs, what="KVM_SET_REGS")

    def get_sregs(self) -> Any:
        """The special registers as a cffi ``struct kvm_sregs *``."""
        sregs = ffi.new("struct kvm_sregs *")
        ioctl(self.fd, lib.KVM_GET_SREGS, sregs, what="KVM_GET_SREGS")
        return sregs

    def set_sregs(self, sregs: Any) -> None:
        ioctl(self.fd, lib.KVM_SET_SREGS, sregs, what="KVM_SET_SREGS")

    def set_cpuid(self, entries: Iterable[CpuidEntry]) -> None:
        items = list(entries)
        buf = ffi.new(
            "char[]",
            ffi.sizeof("struct kvm_cpuid2") + len(items) * ffi.sizeof("struct kvm_cpuid_entry2"),
        )
        cpuid: Any = ffi.cast("struct kvm_cpuid2 *", buf)
        cpuid.nent = len(items)
        for i, e in enumerate(items):
            dst = cpuid.entries[i]
            dst.function, dst.index, dst.flags = e.function, e.index, e.flags
            dst.eax, dst.ebx, dst.ecx, dst.edx = e.eax, e.ebx, e.ecx, e.edx
        ioctl(self.fd, lib.KVM_SET_CPUID2, cpuid, what="KVM_SET_CPUID2")

    def tsc_khz(self) -> int:
        """The guest's TSC frequency in kHz (0 when KVM does not know it)."""
        ret = lib.ioctl(self.fd, lib.KVM_GET_TSC_KHZ, ffi.cast("unsigned long", 0))
        return max(int(ret), 0)

    def set_guest_debug(self, control: int, debugreg: tuple[int, ...] = ()) -> None:
        """KVM_SET_GUEST_DEBUG: ``control`` is KVM_GUESTDBG_* flags (0 turns it off);
        ``debugreg`` the hardware breakpoint registers DR0-DR7 when used."""
        dbg = ffi.new("struct kvm_guest_debug *")
        dbg.control = control
        for i, value in enumerate(debugreg[:8]):
            dbg.arch.debugreg[i] = value
        ioctl(self.fd, lib.KVM_SET_GUEST_DEBUG, dbg, what="KVM_SET_GUEST_DEBUG")

    def get_fpu(self) -> Any:
        """The x87/SSE state as a cffi ``struct kvm_fpu *``."""
        fpu = ffi.new("struct kvm_fpu *")
        ioctl(self.fd, lib.KVM_GET_FPU, fpu, what="KVM_GET_FPU")
        return fpu

    def mp_state(self) -> int:
        state = ffi.new("struct kvm_mp_state *")
        ioctl(self.fd, lib.KVM_GET_MP_STATE, state, what="KVM_GET_MP_STATE")
        return int(state.mp_state)

    def set_mp_state(self, mp_state: int) -> None:
        """KVM_SET_MP_STATE (KVM_MP_STATE_*)."""
        state = ffi.new("struct kvm_mp_state *")
        state.mp_state = mp_state
        ioctl(self.fd, lib.KVM_SET_MP_STATE, state, what="KVM_SET_MP_STATE")

    def clear_interrupt_shadow(self) -> None:
        """End the one-instruction interrupt shadow of an STI or MOV SS, if any
        (KVM_GET/SET_VCPU_EVENTS; everything else is written back as read)."""
        events = ffi.new("struct kvm_vcpu_events *")
        ioctl(self.fd, lib.KVM_GET_VCPU_EVENTS, events, what="KVM_GET_VCPU_EVENTS")
        if events.interrupt.shadow:
            events.interrupt.shadow = 0
            events.flags |= lib.KVM_VCPUEVENT_VALID_SHADOW
            ioctl(self.fd, lib.KVM_SET_VCPU_EVENTS, events, what="KVM_SET_VCPU_EVENTS")

    def close(self) -> None:
        if self.fd >= 0:
            self._page.release()
            self._run = None
            self._mmap.close()
            os.close(self.fd)
            self.fd = -1
