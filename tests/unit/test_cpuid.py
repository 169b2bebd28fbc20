"""Per-vCPU CPUID topology (pure functions over KVM's supported list)."""

from __future__ import annotations

from vmm.boot.cpuid import HYPERVISOR_BIT, vcpu_cpuid
from vmm.kvm.system import CpuidEntry

SUPPORTED = [
    CpuidEntry(0, 0, 0, 0x1F, 0, 0, 0),
    CpuidEntry(1, 0, 0, 0x806EA, 0x00000800, 0x7FFAFBBF, 0xBFEBFBFF),
    CpuidEntry(4, 0, 1, 0x04000121, 0, 0, 0),
    CpuidEntry(0xB, 0, 1, 1, 2, 0x100, 3),
    CpuidEntry(0xB, 1, 1, 4, 8, 0x201, 3),
    CpuidEntry(0x80000008, 0, 0, 0x3027, 0, 0x7, 0),
]


def leaf(entries: list[CpuidEntry], fn: int, idx: int = 0) -> CpuidEntry:
    return next(e for e in entries if e.function == fn and e.index == idx)


def test_apic_id_and_counts() -> None:
    for i in range(4):
        t = vcpu_cpuid(SUPPORTED, i, 4)
        one = leaf(t, 1)
        assert one.ebx >> 24 == i
        assert (one.ebx >> 16) & 0xFF == 4
        assert one.ecx & HYPERVISOR_BIT
        assert one.edx & (1 << 28)
        assert leaf(t, 0xB, 0).edx == i and leaf(t, 0xB, 1).edx == i
        assert leaf(t, 0xB, 1).ebx == 4 and leaf(t, 0xB, 1).eax == 2
        assert leaf(t, 4).eax >> 26 == 3
        assert leaf(t, 0x80000008).ecx & 0xFF == 3


def test_single_cpu_has_no_htt() -> None:
    t = vcpu_cpuid(SUPPORTED, 0, 1)
    assert not leaf(t, 1).edx & (1 << 28)
    assert leaf(t, 0xB, 1).eax == 0


def test_topology_leaf_replaced_once() -> None:
    t = vcpu_cpuid(SUPPORTED, 1, 2)
    assert [e.index for e in t if e.function == 0xB] == [0, 1, 2]
