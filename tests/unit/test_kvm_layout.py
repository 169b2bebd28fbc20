"""The cffi bindings agree with <linux/kvm.h> as compiled by a C probe.

The probe is an independent C program: if the bindings' layout or ioctl
numbers drifted from the header, these comparisons fail.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from vmm.kvm.ffi import ffi, lib

FIELDS = {
    "struct kvm_run": [
        "request_interrupt_window", "immediate_exit", "exit_reason", "if_flag",
        "cr8", "apic_base", "io", "mmio", "internal", "system_event", "fail_entry", "hw",
    ],
    "struct kvm_regs": ["rax", "rbx", "rsp", "r15", "rip", "rflags"],
    "struct kvm_sregs": ["cs", "ss", "tr", "ldt", "gdt", "idt", "cr0", "cr3", "cr4", "efer",
                         "apic_base", "interrupt_bitmap"],
    "struct kvm_segment": ["base", "limit", "selector", "type", "present", "l", "g", "unusable"],
    "struct kvm_userspace_memory_region": ["slot", "flags", "guest_phys_addr", "memory_size",
                                           "userspace_addr"],
    "struct kvm_cpuid_entry2": ["function", "index", "flags", "eax", "ebx", "ecx", "edx"],
    "struct kvm_cpuid2": ["nent", "entries"],
    "struct kvm_irq_level": ["irq", "level"],
    "struct kvm_ioeventfd": ["datamatch", "addr", "len", "fd", "flags"],
    "struct kvm_irqfd": ["fd", "gsi", "flags", "resamplefd"],
}  # fmt: skip

EXIT_FIELDS = {
    "io": ["direction", "size", "port", "count", "data_offset"],
    "mmio": ["phys_addr", "data", "len", "is_write"],
    "internal": ["suberror", "ndata", "data"],
    "system_event": ["type", "ndata", "data"],
}

CONSTANTS = [
    "KVM_RUN", "KVM_CREATE_VM", "KVM_CREATE_VCPU", "KVM_GET_REGS", "KVM_SET_REGS",
    "KVM_GET_SREGS", "KVM_SET_SREGS", "KVM_SET_CPUID2", "KVM_GET_SUPPORTED_CPUID",
    "KVM_SET_USER_MEMORY_REGION", "KVM_CREATE_IRQCHIP", "KVM_CREATE_PIT2", "KVM_IRQ_LINE",
    "KVM_IRQFD", "KVM_IOEVENTFD", "KVM_EXIT_IO", "KVM_EXIT_MMIO", "KVM_EXIT_SHUTDOWN",
    "KVM_EXIT_INTERNAL_ERROR", "KVM_EXIT_SYSTEM_EVENT", "KVM_GET_VCPU_MMAP_SIZE",
    "KVM_IRQFD_FLAG_DEASSIGN", "KVM_IOEVENTFD_FLAG_DEASSIGN", "KVM_IOEVENTFD_FLAG_DATAMATCH",
    "TUNSETIFF", "IFF_TAP", "IFF_NO_PI", "IFNAMSIZ",
]  # fmt: skip


def _probe_source() -> str:
    lines = [
        "#include <stdio.h>",
        "#include <stddef.h>",
        "#include <linux/kvm.h>",
        "#include <net/if.h>",
        "#include <linux/if_tun.h>",
        "int main(void){",
    ]
    for struct, fields in FIELDS.items():
        lines.append(f'printf("sizeof {struct} %zu\\n", sizeof({struct}));')
        for f in fields:
            lines.append(f'printf("{struct}.{f} %zu\\n", offsetof({struct}, {f}));')
    for sub, fields in EXIT_FIELDS.items():
        for f in fields:
            lines.append(
                f'printf("exit.{sub}.{f} %zu\\n", '
                f"offsetof(struct kvm_run, {sub}.{f}) - offsetof(struct kvm_run, {sub}));"
            )
    for c in CONSTANTS:
        lines.append(f'printf("const {c} %llu\\n", (unsigned long long)({c}));')
    lines.append("return 0;}")
    return "\n".join(lines)


@pytest.fixture(scope="module")
def probe(tmp_path_factory: pytest.TempPathFactory) -> dict[str, int]:
    d = tmp_path_factory.mktemp("probe")
    src, exe = d / "probe.c", d / "probe"
    src.write_text(_probe_source())
    subprocess.run(["gcc", "-o", str(exe), str(src)], check=True)
    out = subprocess.run([str(exe)], check=True, capture_output=True, text=True).stdout
    return {k: int(v) for k, v in (line.rsplit(" ", 1) for line in out.splitlines())}


def test_struct_sizes_match_header(probe: dict[str, int]) -> None:
    for struct in FIELDS:
        assert ffi.sizeof(struct) == probe[f"sizeof {struct}"], struct


def test_field_offsets_match_header(probe: dict[str, int]) -> None:
    for struct, fields in FIELDS.items():
        for f in fields:
            assert ffi.offsetof(struct, f) == probe[f"{struct}.{f}"], f"{struct}.{f}"


def test_exit_union_members_match_header(probe: dict[str, int]) -> None:
    for sub, fields in EXIT_FIELDS.items():
        for f in fields:
            assert ffi.offsetof(f"kvm_exit_{sub}_t", f) == probe[f"exit.{sub}.{f}"], f"{sub}.{f}"


def test_ioctl_numbers_match_header(probe: dict[str, int]) -> None:
    for c in CONSTANTS:
        assert getattr(lib, c) == probe[f"const {c}"], c


def test_bindings_are_built_from_the_header() -> None:
    build = Path(__file__).resolve().parents[2] / "vmm" / "kvm" / "ffi_build.py"
    text = build.read_text()
    assert "#include <linux/kvm.h>" in text
    # Values are never written down: every constant is declared as "...".
    assert "#define KVM_RUN ...\n" in text
