"""``System``: the /dev/kvm file descriptor."""

from __future__ import annotations

import errno
import os

from vmm.errors import KvmError
from vmm.kvm.ffi import ffi, ioctl, lib
from vmm.kvm.vm import Vm
from vmm.records import record

KVM_DEVICE = "/dev/kvm"

# What Keel's VMM cannot run without.
REQUIRED_CAPS = {
    "KVM_CAP_IRQCHIP": lib.KVM_CAP_IRQCHIP,
    "KVM_CAP_USER_MEMORY": lib.KVM_CAP_USER_MEMORY,
    "KVM_CAP_SET_TSS_ADDR": lib.KVM_CAP_SET_TSS_ADDR,
    "KVM_CAP_PIT2": lib.KVM_CAP_PIT2,
    "KVM_CAP_EXT_CPUID": lib.KVM_CAP_EXT_CPUID,
    "KVM_CAP_IMMEDIATE_EXIT": lib.KVM_CAP_IMMEDIATE_EXIT,
}


@record
class CpuidEntry:
    """One ``kvm_cpuid_entry2``: leaf ``function``, subleaf ``index``."""

    function: int
    index: int
    flags: int
    eax: int
    ebx: int
    ecx: int
    edx: int


class System:
    """An open /dev/kvm.  Create VMs from it; close it when done."""

    def __init__(self, path: str = KVM_DEVICE) -> None:
        try:
            self.fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        except FileNotFoundError:
            raise KvmError(f"{path} does not exist: KVM is not available on this host") from None
        except PermissionError:
            raise KvmError(f"{path}: permission denied (are you in the 'kvm' group?)") from None
        except OSError as exc:
            raise KvmError(f"{path}: {exc.strerror}") from None
        version = ioctl(self.fd, lib.KVM_GET_API_VERSION, what="KVM_GET_API_VERSION")
        if version != lib.KVM_API_VERSION:
            self.close()
            raise KvmError(f"unsupported KVM API version {version} (need {lib.KVM_API_VERSION})")
        for name, cap in REQUIRED_CAPS.items():
            if not self.check_extension(cap):
                self.close()
                raise KvmError(f"this host's KVM lacks {name}")

    def check_extension(self, cap: int) -> int:
        return ioctl(self.fd, lib.KVM_CHECK_EXTENSION, cap, what="KVM_CHECK_EXTENSION")

    def vcpu_mmap_size(self) -> int:
        return ioctl(self.fd, lib.KVM_GET_VCPU_MMAP_SIZE, what="KVM_GET_VCPU_MMAP_SIZE")

    def max_vcpus(self) -> int:
        return self.check_extension(lib.KVM_CAP_MAX_VCPUS) or self.check_extension(
            lib.KVM_CAP_NR_VCPUS
        )

    def supported_cpuid(self) -> list[CpuidEntry]:
        """The CPUID leaves KVM can offer a guest on this host."""
        nent = 128
        while True:
            buf = ffi.new(
                "char[]",
                ffi.sizeof("struct kvm_cpuid2") + nent * ffi.sizeof("struct kvm_cpuid_entry2"),
            )
            cpuid = ffi.cast("struct kvm_cpuid2 *", buf)
            cpuid.nent = nent
            try:
                ioctl(self.fd, lib.KVM_GET_SUPPORTED_CPUID, cpuid, what="KVM_GET_SUPPORTED_CPUID")
            except KvmError as exc:
                if exc.args[1:] == (errno.E2BIG,) and nent < 4096:
                    nent *= 2
                    continue
                raise
            return [
                CpuidEntry(e.function, e.index, e.flags, e.eax, e.ebx, e.ecx, e.edx)
                for e in (cpuid.entries[i] for i in range(cpuid.nent))
            ]

    def create_vm(self) -> Vm:
        fd = ioctl(self.fd, lib.KVM_CREATE_VM, 0, what="KVM_CREATE_VM")
        return Vm(fd, self.vcpu_mmap_size())

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> System:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
