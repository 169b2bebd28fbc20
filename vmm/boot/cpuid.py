"""Per-vCPU CPUID: the guest's CPUID policy (``vmm.boot.cpu_features``: KVM's
supported leaves minus what the host cannot run) with Keel's topology written in.

One package, ``ncpus`` cores, one thread per core, APIC ID = vCPU index (the
same IDs the MADT lists).  Pure functions over ``CpuidEntry`` lists so they
are tested without KVM.
"""

from __future__ import annotations

from vmm.kvm.system import CpuidEntry
from vmm.records import replace

HYPERVISOR_BIT = 1 << 31  # CPUID.1:ECX - "running under a hypervisor"
HTT_BIT = 1 << 28  # CPUID.1:EDX - more than one logical processor per package
SIGNIFICANT_INDEX = 1  # KVM_CPUID_FLAG_SIGNIFCANT_INDEX (sic)
HV_BASE = 0x40000000  # hypervisor leaves: EAX = highest hypervisor leaf
# The generic timing leaf (VMware's convention, also QEMU's vmware-cpuid-freq):
# EAX = TSC kHz, EBX = APIC bus (timer) kHz.  It spares the guest a PIT
# calibration, which costs it tens of milliseconds of wall time at boot.
TIMING_LEAF = 0x40000010
KVM_APIC_BUS_KHZ = 1_000_000  # KVM's local APIC timer counts at 1 GHz


def _id_bits(count: int) -> int:
    """Bits needed to number ``count`` items (the x2APIC ID shift)."""
    return max(0, (count - 1).bit_length())


def topology_leaf(function: int, apic_id: int, ncpus: int) -> list[CpuidEntry]:
    """Leaf 0xB/0x1F: an SMT level of one thread, a core level of ``ncpus``."""
    smt = CpuidEntry(function, 0, SIGNIFICANT_INDEX, 0, 1, (1 << 8) | 0, apic_id)
    core = CpuidEntry(function, 1, SIGNIFICANT_INDEX, _id_bits(ncpus), ncpus, (2 << 8) | 1, apic_id)
    end = CpuidEntry(function, 2, SIGNIFICANT_INDEX, 0, 0, 2, apic_id)
    return [smt, core, end]


def vcpu_cpuid(
    supported: list[CpuidEntry], index: int, ncpus: int, tsc_khz: int = 0
) -> list[CpuidEntry]:
    """The CPUID table for vCPU ``index`` of ``ncpus``.

    With ``tsc_khz`` the timing leaf is added (and announced in leaf
    0x40000000) when KVM's own hypervisor leaves are present.
    """
    out: list[CpuidEntry] = []
    topology_done: set[int] = set()
    timing = tsc_khz > 0 and any(e.function == HV_BASE for e in supported)
    for e in supported:
        if e.function == HV_BASE and timing:
            out.append(replace(e, eax=max(e.eax, TIMING_LEAF)))
        elif e.function == TIMING_LEAF:
            continue
        elif e.function == 1:
            ebx = (e.ebx & 0x0000FFFF) | (index << 24) | (min(ncpus, 255) << 16)
            edx = e.edx | HTT_BIT if ncpus > 1 else e.edx & ~HTT_BIT
            out.append(replace(e, ebx=ebx, ecx=e.ecx | HYPERVISOR_BIT, edx=edx))
        elif e.function in (0xB, 0x1F):
            if e.function not in topology_done:
                topology_done.add(e.function)
                out.extend(topology_leaf(e.function, index, ncpus))
        elif e.function == 4:
            cores = (min(ncpus, 64) - 1) << 26
            out.append(replace(e, eax=(e.eax & 0x03FFFFFF) | cores if e.eax & 0x1F else e.eax))
        elif e.function == 0x80000008:
            out.append(replace(e, ecx=(e.ecx & ~0xFF) | (ncpus - 1)))
        else:
            out.append(e)
    if timing:
        out.append(CpuidEntry(TIMING_LEAF, 0, 0, tsc_khz, KVM_APIC_BUS_KHZ, 0, 0))
    return out
