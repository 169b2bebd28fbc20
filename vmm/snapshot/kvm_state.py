"""The state KVM keeps for a vCPU and for the VM's in-kernel devices, as bytes.

Each piece is one ``KVM_GET_*`` structure copied out whole (its layout is
this host's <linux/kvm.h>, which the manifest's version and host check
guard), and put back with the matching ``KVM_SET_*``.  The restore order
follows the dependencies KVM documents: special registers before the
LAPIC (APIC base), XSAVE before XCRs, MSRs after the LAPIC (TSC deadline),
vCPU events last (pending exceptions and interrupts).
"""

from __future__ import annotations

import errno
from typing import Any

from vmm.errors import KvmError
from vmm.kvm.ffi import ffi, ioctl, lib
from vmm.kvm.system import System
from vmm.kvm.vcpu import Vcpu
from vmm.kvm.vm import Vm

# (name, struct, get ioctl, set ioctl), in restore order (MSRs and XSAVE apart).
_VCPU_PLAIN = (
    ("mp_state", "struct kvm_mp_state", "KVM_GET_MP_STATE", "KVM_SET_MP_STATE"),
    ("regs", "struct kvm_regs", "KVM_GET_REGS", "KVM_SET_REGS"),
    ("sregs", "struct kvm_sregs", "KVM_GET_SREGS", "KVM_SET_SREGS"),
)
_VCPU_AFTER_XSAVE = (
    ("xcrs", "struct kvm_xcrs", "KVM_GET_XCRS", "KVM_SET_XCRS"),
    ("debugregs", "struct kvm_debugregs", "KVM_GET_DEBUGREGS", "KVM_SET_DEBUGREGS"),
    ("lapic", "struct kvm_lapic_state", "KVM_GET_LAPIC", "KVM_SET_LAPIC"),
)
_EVENTS = ("events", "struct kvm_vcpu_events", "KVM_GET_VCPU_EVENTS", "KVM_SET_VCPU_EVENTS")
_CHIPS = (("pic_master", "KVM_IRQCHIP_PIC_MASTER"), ("pic_slave", "KVM_IRQCHIP_PIC_SLAVE"),
          ("ioapic", "KVM_IRQCHIP_IOAPIC"))  # fmt: skip
MSR_ENTRY = 16  # bytes of one struct kvm_msr_entry


def _get(fd: int, ctype: str, request: str) -> bytes:
    obj = ffi.new(ctype + " *")
    ioctl(fd, getattr(lib, request), obj, what=request)
    return bytes(ffi.buffer(obj))


def _set(fd: int, ctype: str, request: str, data: bytes) -> None:
    obj = ffi.new(ctype + " *")
    if len(data) != ffi.sizeof(obj[0]):
        raise KvmError(f"{request}: saved state has {len(data)} bytes, this host wants "
                       f"{ffi.sizeof(obj[0])}")  # fmt: skip
    ffi.memmove(obj, data, len(data))
    ioctl(fd, getattr(lib, request), obj, what=request)


def xsave_size(system: System) -> int:
    """Bytes of XSAVE state KVM_GET_XSAVE2 gives (0: only the 4 KiB KVM_GET_XSAVE)."""
    return max(system.check_extension(lib.KVM_CAP_XSAVE2), 0)


def msr_indices(system: System, vcpu: Vcpu) -> list[int]:
    """Every MSR KVM saves and restores for a guest that this vCPU can read."""
    head = ffi.new("struct kvm_msr_list *")
    head.nmsrs = 0
    if lib.ioctl(system.fd, lib.KVM_GET_MSR_INDEX_LIST, head) < 0 and ffi.errno != errno.E2BIG:
        raise KvmError(f"KVM_GET_MSR_INDEX_LIST: {errno.errorcode.get(ffi.errno, ffi.errno)}")
    n = head.nmsrs
    buf = ffi.new("char[]", ffi.sizeof("struct kvm_msr_list") + 4 * n)
    full: Any = ffi.cast("struct kvm_msr_list *", buf)
    full.nmsrs = n
    ioctl(system.fd, lib.KVM_GET_MSR_INDEX_LIST, full, what="KVM_GET_MSR_INDEX_LIST")
    readable = []
    for i in range(full.nmsrs):
        index = int(full.indices[i])
        if _msrs(vcpu.fd, [(index, 0)], get=True) is not None:
            readable.append(index)
    return readable


def _msrs(fd: int, entries: list[tuple[int, int]], get: bool) -> list[tuple[int, int]] | None:
    """KVM_GET_MSRS or KVM_SET_MSRS of ``entries``; None unless every one was done."""
    buf = ffi.new("char[]", ffi.sizeof("struct kvm_msrs") + MSR_ENTRY * len(entries))
    msrs: Any = ffi.cast("struct kvm_msrs *", buf)
    msrs.nmsrs = len(entries)
    for i, (index, value) in enumerate(entries):
        msrs.entries[i].index = index
        msrs.entries[i].data = value
    done = lib.ioctl(fd, lib.KVM_GET_MSRS if get else lib.KVM_SET_MSRS, msrs)
    if done != len(entries):
        return None
    return [(int(msrs.entries[i].index), int(msrs.entries[i].data)) for i in range(len(entries))]


def save_vcpu(vcpu: Vcpu, msrs: list[int], xsave_bytes: int) -> dict[str, Any]:
    state: dict[str, Any] = {}
    for name, ctype, get, _ in (*_VCPU_PLAIN, *_VCPU_AFTER_XSAVE, _EVENTS):
        state[name] = _get(vcpu.fd, ctype, get)
    if xsave_bytes > ffi.sizeof("struct kvm_xsave"):
        buf = ffi.new("char[]", xsave_bytes)
        ioctl(vcpu.fd, lib.KVM_GET_XSAVE2, buf, what="KVM_GET_XSAVE2")
        state["xsave"] = bytes(ffi.buffer(buf))
    else:
        state["xsave"] = _get(vcpu.fd, "struct kvm_xsave", "KVM_GET_XSAVE")
    got = _msrs(vcpu.fd, [(i, 0) for i in msrs], get=True)
    if got is None:
        raise KvmError(f"KVM_GET_MSRS on vCPU {vcpu.index}: not every MSR could be read")
    state["msrs"] = got
    return state


def restore_vcpu(vcpu: Vcpu, state: dict[str, Any]) -> None:
    for name, ctype, _, put in _VCPU_PLAIN:
        _set(vcpu.fd, ctype, put, state[name])
    xsave = state["xsave"]
    if len(xsave) > ffi.sizeof("struct kvm_xsave"):
        buf = ffi.new("char[]", xsave)
        ioctl(vcpu.fd, lib.KVM_SET_XSAVE, buf, what="KVM_SET_XSAVE")
    else:
        _set(vcpu.fd, "struct kvm_xsave", "KVM_SET_XSAVE", xsave)
    for name, ctype, _, put in _VCPU_AFTER_XSAVE:
        _set(vcpu.fd, ctype, put, state[name])
    entries = [(int(i), int(v)) for i, v in state["msrs"]]
    if _msrs(vcpu.fd, entries, get=False) is None:
        # One at a time, to name the MSR this host refuses.
        for index, value in entries:
            if _msrs(vcpu.fd, [(index, value)], get=False) is None:
                raise KvmError(f"this host refuses to restore MSR {index:#x} on vCPU {vcpu.index}")
    _set(vcpu.fd, _EVENTS[1], _EVENTS[3], state["events"])


def save_vm(vm: Vm) -> dict[str, bytes]:
    state: dict[str, bytes] = {}
    for name, chip in _CHIPS:
        obj = ffi.new("struct kvm_irqchip *")
        obj.chip_id = getattr(lib, chip)
        ioctl(vm.fd, lib.KVM_GET_IRQCHIP, obj, what="KVM_GET_IRQCHIP")
        state[name] = bytes(ffi.buffer(obj))
    state["pit"] = _get(vm.fd, "struct kvm_pit_state2", "KVM_GET_PIT2")
    state["clock"] = _get(vm.fd, "struct kvm_clock_data", "KVM_GET_CLOCK")
    return state


def restore_vm(vm: Vm, state: dict[str, bytes]) -> None:
    for name, _ in _CHIPS:
        _set(vm.fd, "struct kvm_irqchip", "KVM_SET_IRQCHIP", state[name])
    _set(vm.fd, "struct kvm_pit_state2", "KVM_SET_PIT2", state["pit"])
    clock = ffi.new("struct kvm_clock_data *")
    ffi.memmove(clock, state["clock"], min(len(state["clock"]), ffi.sizeof(clock[0])))
    clock.flags = 0  # only the clock value is set; realtime/host_tsc are this host's
    ioctl(vm.fd, lib.KVM_SET_CLOCK, clock, what="KVM_SET_CLOCK")
