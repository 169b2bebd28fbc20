"""``Vm``: one KVM virtual machine file descriptor."""

from __future__ import annotations

import os

from vmm.kvm.ffi import ffi, ioctl, lib
from vmm.kvm.vcpu import Vcpu


class Vm:
    """A KVM VM: memory slots, the in-kernel irqchip and PIT, and vCPUs."""

    def __init__(self, fd: int, vcpu_mmap_size: int) -> None:
        self.fd = fd
        self.vcpu_mmap_size = vcpu_mmap_size
        self._irq_level = ffi.new("struct kvm_irq_level *")

    def set_tss_addr(self, addr: int) -> None:
        """Three pages KVM needs on Intel for real-mode emulation (never guest RAM)."""
        ioctl(self.fd, lib.KVM_SET_TSS_ADDR, addr, what="KVM_SET_TSS_ADDR")

    def set_identity_map_addr(self, addr: int) -> None:
        value = ffi.new("uint64_t *", addr)
        ioctl(self.fd, lib.KVM_SET_IDENTITY_MAP_ADDR, value, what="KVM_SET_IDENTITY_MAP_ADDR")

    def create_irqchip(self) -> None:
        """In-kernel LAPICs, IOAPIC and PIC: interrupts never go through Python."""
        ioctl(self.fd, lib.KVM_CREATE_IRQCHIP, 0, what="KVM_CREATE_IRQCHIP")

    def create_pit(self) -> None:
        """In-kernel i8254 (ports 0x40-0x43, 0x61) so guests can calibrate timers."""
        config = ffi.new("struct kvm_pit_config *")
        config.flags = lib.KVM_PIT_SPEAKER_DUMMY
        ioctl(self.fd, lib.KVM_CREATE_PIT2, config, what="KVM_CREATE_PIT2")

    def set_pit_reinject(self, on: bool) -> None:
        """Whether the PIT delivers the ticks it missed late (KVM's default) or drops
        them.  Turning it off waits for two SRCU grace periods (asleep, about 16 ms
        on this host), as destroying a VM whose PIT reinjects does."""
        control = ffi.new("struct kvm_reinject_control *")
        control.pit_reinject = int(on)
        ioctl(self.fd, lib.KVM_REINJECT_CONTROL, control, what="KVM_REINJECT_CONTROL")

    def set_memory_region(self, slot: int, guest_addr: int, size: int, host_addr: int) -> None:
        region = ffi.new("struct kvm_userspace_memory_region *")
        region.slot = slot
        region.flags = 0
        region.guest_phys_addr = guest_addr
        region.memory_size = size
        region.userspace_addr = host_addr
        ioctl(self.fd, lib.KVM_SET_USER_MEMORY_REGION, region, what="KVM_SET_USER_MEMORY_REGION")

    def irq_line(self, irq: int, level: int) -> None:
        """Drive interrupt line ``irq`` of the in-kernel PIC/IOAPIC to ``level``."""
        req = self._irq_level
        req.irq = irq
        req.level = level
        ioctl(self.fd, lib.KVM_IRQ_LINE, req, what="KVM_IRQ_LINE")

    def irqfd(self, fd: int, gsi: int, *, deassign: bool = False) -> None:
        """Make a write to eventfd ``fd`` pulse interrupt line ``gsi`` (edge), in the kernel."""
        req = ffi.new("struct kvm_irqfd *")
        req.fd = fd
        req.gsi = gsi
        req.flags = lib.KVM_IRQFD_FLAG_DEASSIGN if deassign else 0
        ioctl(self.fd, lib.KVM_IRQFD, req, what=f"KVM_IRQFD gsi {gsi}")

    def ioeventfd(self, fd: int, addr: int, length: int, *, deassign: bool = False) -> None:
        """Turn guest MMIO writes of ``length`` bytes at ``addr`` into a signal on eventfd
        ``fd``, completed in the kernel without an exit to the VMM."""
        req = ffi.new("struct kvm_ioeventfd *")
        req.addr = addr
        req.len = length
        req.fd = fd
        req.flags = lib.KVM_IOEVENTFD_FLAG_DEASSIGN if deassign else 0
        ioctl(self.fd, lib.KVM_IOEVENTFD, req, what=f"KVM_IOEVENTFD {addr:#x}")

    def create_vcpu(self, index: int) -> Vcpu:
        fd = ioctl(self.fd, lib.KVM_CREATE_VCPU, index, what=f"KVM_CREATE_VCPU {index}")
        return Vcpu(fd, index, self.vcpu_mmap_size)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
