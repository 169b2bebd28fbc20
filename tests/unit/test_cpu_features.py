"""The guest's CPUID policy (vmm.boot.cpu_features): KVM's list minus the host's limits,
then the user's --cpu-features."""

from __future__ import annotations

import pytest

from vmm.boot import cpu_features as cf
from vmm.errors import ConfigError
from vmm.kvm.system import CpuidEntry

CX16, XSAVE, OSXSAVE, AVX = 1 << 13, 1 << 26, 1 << 27, 1 << 28
SUPPORTED = [
    CpuidEntry(0, 0, 0, 0xD, 0, 0, 0),
    CpuidEntry(1, 0, 0, 0x806EA, 0x800, CX16 | XSAVE | AVX | (1 << 30), 0x178BFBFF),
    CpuidEntry(7, 0, 1, 0, (1 << 5) | (1 << 0), 0, 0),  # avx2, fsgsbase
    CpuidEntry(0xD, 0, 1, 7, 0x340, 0x340, 0),
    CpuidEntry(0xD, 1, 1, 0xF, 0, 0, 0),
    CpuidEntry(0x80000001, 0, 0, 0, 0, 0x1, (1 << 29) | (1 << 20)),
]


def test_kvm_pvm_hides_cx16_and_the_xsave_family() -> None:
    policy = cf.guest_cpuid(SUPPORTED, "kvm_pvm")
    names = cf.feature_names(policy.entries)
    for gone in ("cx16", "xsave", "avx", "avx2", "xsaveopt", "xsaves"):
        assert gone not in names
        assert gone in policy.removed
    assert "lock cmpxchg16b" in policy.removed["cx16"]
    assert policy.removed["avx2"] == "needs avx"
    assert not any(e.function == 0xD for e in policy.entries)
    for kept in ("rdrand", "fsgsbase", "lm", "nx", "sse2", "fpu"):
        assert kept in names


def test_hardware_kvm_keeps_everything() -> None:
    policy = cf.guest_cpuid(SUPPORTED, "kvm")
    assert policy.entries == SUPPORTED and policy.removed == {}


def test_user_removes_and_adds_back() -> None:
    user = cf.parse_feature_list("-rdrand, -fsgsbase,+cx16")
    policy = cf.guest_cpuid(SUPPORTED, "kvm_pvm", user)
    names = cf.feature_names(policy.entries)
    assert "rdrand" not in names and "fsgsbase" not in names and "cx16" in names
    assert policy.removed["rdrand"] == "--cpu-features"
    assert "cx16" not in policy.removed


def test_user_cannot_add_what_kvm_lacks() -> None:
    with pytest.raises(ConfigError, match=r"\+x2apic: this host's KVM does not offer it"):
        cf.guest_cpuid(SUPPORTED, "kvm", cf.parse_feature_list("+x2apic"))


@pytest.mark.parametrize(
    "text, message",
    [("cx16", r"must be \+NAME or -NAME"), ("-", "must be"), ("-nosuch", "unknown CPU feature")],
)
def test_bad_feature_lists(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        cf.parse_feature_list(text)


def test_names_accept_dashes() -> None:
    assert cf.parse_feature_list("-sse4-2") == [(False, "sse4_2")]


def test_describe_lists_leaves_and_removals() -> None:
    policy = cf.guest_cpuid(SUPPORTED, "kvm_pvm")
    text = cf.describe(policy.entries, policy.removed)
    assert "0x00000001.0" in text and "features: " in text
    assert "removed: cx16: host (kvm_pvm)" in text


def test_host_kind(tmp_path) -> None:  # type: ignore[no-untyped-def]
    assert cf.host_kind(str(tmp_path)) == "kvm"
    (tmp_path / "kvm_pvm").mkdir()
    assert cf.host_kind(str(tmp_path)) == "kvm_pvm"


def test_kvm_pvm_cannot_hide_leaf1_edx() -> None:
    """Measured from guests: kvm_pvm shows leaf 1 EDX as the host has it."""
    with pytest.raises(ConfigError, match=r"-sse2: .*leaf 0x1 EDX .* so sse2 cannot be hidden"):
        cf.guest_cpuid(SUPPORTED, "kvm_pvm", cf.parse_feature_list("-sse2"))
    cf.guest_cpuid(SUPPORTED, "kvm", cf.parse_feature_list("-sse2"))
    cf.guest_cpuid(SUPPORTED, "kvm_pvm", cf.parse_feature_list("-nx,-x2apic"))
