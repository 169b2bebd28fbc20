"""The CPU a guest sees: KVM's supported CPUID minus what this host cannot run.

``KVM_GET_SUPPORTED_CPUID`` lists what KVM can *virtualise*, not what every
host's KVM can *execute*: on a kvm_pvm host guest supervisor code is run by
KVM's instruction emulator, which has no ``lock cmpxchg16b`` and no XRSTOR, so
a guest that sees CX16 or XSAVE and uses them in its kernel stops with a KVM
internal error (emulation failure).  ``HOST_LIMITS`` is the documented table
of such features, applied when the host's KVM is the one named; a user's
``--cpu-features -name,+name`` list is applied after it.

Pure functions over ``CpuidEntry`` lists (tested without KVM), apart from
``host_kind``, which looks at /sys/module.
"""

from __future__ import annotations

import os

from vmm.errors import ConfigError
from vmm.kvm.system import CpuidEntry
from vmm.records import record, replace

EAX, EBX, ECX, EDX = "eax", "ebx", "ecx", "edx"
XSAVE_LEAF = 0xD


@record(frozen=True)
class Feature:
    function: int
    index: int
    reg: str
    bit: int


def _f(function: int, reg: str, bit: int, index: int = 0) -> Feature:
    return Feature(function, index, reg, bit)


# The names are Linux's /proc/cpuinfo names (with '_' as there); the set is the
# features a guest kernel commonly tests, not every bit the CPU has.
FEATURES: dict[str, Feature] = {
    # leaf 1 EDX
    "fpu": _f(1, EDX, 0), "vme": _f(1, EDX, 1), "de": _f(1, EDX, 2), "pse": _f(1, EDX, 3),
    "tsc": _f(1, EDX, 4), "msr": _f(1, EDX, 5), "pae": _f(1, EDX, 6), "mce": _f(1, EDX, 7),
    "cx8": _f(1, EDX, 8), "apic": _f(1, EDX, 9), "sep": _f(1, EDX, 11), "mtrr": _f(1, EDX, 12),
    "pge": _f(1, EDX, 13), "mca": _f(1, EDX, 14), "cmov": _f(1, EDX, 15), "pat": _f(1, EDX, 16),
    "pse36": _f(1, EDX, 17), "clflush": _f(1, EDX, 19), "mmx": _f(1, EDX, 23),
    "fxsr": _f(1, EDX, 24), "sse": _f(1, EDX, 25), "sse2": _f(1, EDX, 26), "ht": _f(1, EDX, 28),
    # leaf 1 ECX
    "pni": _f(1, ECX, 0), "pclmulqdq": _f(1, ECX, 1), "monitor": _f(1, ECX, 3),
    "ssse3": _f(1, ECX, 9), "fma": _f(1, ECX, 12), "cx16": _f(1, ECX, 13),
    "pcid": _f(1, ECX, 17), "sse4_1": _f(1, ECX, 19), "sse4_2": _f(1, ECX, 20),
    "x2apic": _f(1, ECX, 21), "movbe": _f(1, ECX, 22), "popcnt": _f(1, ECX, 23),
    "tsc_deadline_timer": _f(1, ECX, 24), "aes": _f(1, ECX, 25), "xsave": _f(1, ECX, 26),
    "osxsave": _f(1, ECX, 27), "avx": _f(1, ECX, 28), "f16c": _f(1, ECX, 29),
    "rdrand": _f(1, ECX, 30), "hypervisor": _f(1, ECX, 31),
    # leaf 7.0 EBX / ECX / EDX
    "fsgsbase": _f(7, EBX, 0), "bmi1": _f(7, EBX, 3), "avx2": _f(7, EBX, 5),
    "smep": _f(7, EBX, 7), "bmi2": _f(7, EBX, 8), "erms": _f(7, EBX, 9),
    "invpcid": _f(7, EBX, 10), "avx512f": _f(7, EBX, 16), "avx512dq": _f(7, EBX, 17),
    "rdseed": _f(7, EBX, 18), "adx": _f(7, EBX, 19), "smap": _f(7, EBX, 20),
    "avx512ifma": _f(7, EBX, 21), "clflushopt": _f(7, EBX, 23), "clwb": _f(7, EBX, 24),
    "avx512cd": _f(7, EBX, 28), "sha_ni": _f(7, EBX, 29), "avx512bw": _f(7, EBX, 30),
    "avx512vl": _f(7, EBX, 31), "avx512vbmi": _f(7, ECX, 1), "umip": _f(7, ECX, 2),
    "pku": _f(7, ECX, 3), "ospke": _f(7, ECX, 4), "avx512_vbmi2": _f(7, ECX, 6),
    "gfni": _f(7, ECX, 8), "vaes": _f(7, ECX, 9), "vpclmulqdq": _f(7, ECX, 10),
    "avx512_vnni": _f(7, ECX, 11), "avx512_bitalg": _f(7, ECX, 12),
    "avx512_vpopcntdq": _f(7, ECX, 14), "la57": _f(7, ECX, 16), "rdpid": _f(7, ECX, 22),
    "fsrm": _f(7, EDX, 4), "avx512_fp16": _f(7, EDX, 23),
    # leaf 0xD.1 EAX (XSAVE extensions)
    "xsaveopt": _f(XSAVE_LEAF, EAX, 0, 1), "xsavec": _f(XSAVE_LEAF, EAX, 1, 1),
    "xgetbv1": _f(XSAVE_LEAF, EAX, 2, 1), "xsaves": _f(XSAVE_LEAF, EAX, 3, 1),
    # leaf 0x80000001 EDX / ECX
    "syscall": _f(0x80000001, EDX, 11), "nx": _f(0x80000001, EDX, 20),
    "pdpe1gb": _f(0x80000001, EDX, 26), "rdtscp": _f(0x80000001, EDX, 27),
    "lm": _f(0x80000001, EDX, 29), "lahf_lm": _f(0x80000001, ECX, 0),
    "abm": _f(0x80000001, ECX, 5), "sse4a": _f(0x80000001, ECX, 6),
    "3dnowprefetch": _f(0x80000001, ECX, 8), "xop": _f(0x80000001, ECX, 11),
    "fma4": _f(0x80000001, ECX, 16), "tbm": _f(0x80000001, ECX, 21),
    "topoext": _f(0x80000001, ECX, 22),
}  # fmt: skip

# Features that mean nothing without another: removing the key removes the values.
DEPENDENTS: dict[str, tuple[str, ...]] = {
    "xsave": ("osxsave", "avx", "xsaveopt", "xsavec", "xgetbv1", "xsaves", "pku", "ospke"),
    "avx": ("avx2", "fma", "f16c", "vaes", "vpclmulqdq", "xop", "fma4", "avx512f"),
    "avx512f": ("avx512dq", "avx512ifma", "avx512cd", "avx512bw", "avx512vl", "avx512vbmi",
                "avx512_vbmi2", "avx512_vnni", "avx512_bitalg", "avx512_vpopcntdq",
                "avx512_fp16"),
    "sse2": ("pni", "ssse3", "sse4_1", "sse4_2", "sse4a", "aes", "pclmulqdq", "gfni"),
    "apic": ("x2apic", "tsc_deadline_timer"),
}  # fmt: skip

# What a host's KVM advertises but cannot run, by the name of its KVM module.
HOST_LIMITS: dict[str, dict[str, str]] = {
    "kvm_pvm": {
        "cx16": "the emulator that runs guest supervisor code has no lock cmpxchg16b",
        "xsave": "the emulator that runs guest supervisor code has no XRSTOR",
    },
}


# Registers a host's KVM shows the guest as the host has them, whatever the
# table says (measured from guests): a feature there cannot be taken away.
HOST_FIXED: dict[str, set[tuple[int, int, str]]] = {
    "kvm_pvm": {(1, 0, EDX)},
}


def host_kind(sys_module: str = "/sys/module") -> str:
    """Which KVM this host has: ``kvm_pvm``, or ``kvm`` for the hardware-assisted ones."""
    return "kvm_pvm" if os.path.isdir(os.path.join(sys_module, "kvm_pvm")) else "kvm"


def parse_feature_list(text: str) -> list[tuple[bool, str]]:
    """``"-cx16,+rdrand"`` -> ``[(False, "cx16"), (True, "rdrand")]``; ``ConfigError`` if bad."""
    out: list[tuple[bool, str]] = []
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        if item[0] not in "+-" or len(item) == 1:
            raise ConfigError(f"--cpu-features item {item!r} must be +NAME or -NAME")
        name = item[1:].replace("-", "_").lower()
        if name not in FEATURES:
            raise ConfigError(f"--cpu-features: unknown CPU feature {item[1:]!r} "
                              "(see 'keel run --show-cpuid' for the names)")  # fmt: skip
        out.append((item[0] == "+", name))
    return out


def _closure(name: str) -> dict[str, str]:
    """``name`` and every feature that depends on it, each with what it depends on."""
    parents: dict[str, str] = {name: ""}
    todo = [name]
    while todo:
        n = todo.pop()
        for dep in DEPENDENTS.get(n, ()):
            if dep not in parents:
                parents[dep] = n
                todo.append(dep)
    return parents


def _find(entries: list[CpuidEntry], feat: Feature) -> CpuidEntry | None:
    for e in entries:
        if e.function == feat.function and e.index == feat.index:
            return e
    return None


def has(entries: list[CpuidEntry], name: str) -> bool:
    feat = FEATURES[name]
    e = _find(entries, feat)
    return e is not None and bool(getattr(e, feat.reg) >> feat.bit & 1)


def _set(entries: list[CpuidEntry], name: str, on: bool) -> list[CpuidEntry]:
    feat = FEATURES[name]
    out = []
    for e in entries:
        if e.function == feat.function and e.index == feat.index:
            value = getattr(e, feat.reg)
            value = value | 1 << feat.bit if on else value & ~(1 << feat.bit)
            e = replace(e, **{feat.reg: value})
        out.append(e)
    return out


@record
class Policy:
    """The guest's CPUID (before per-vCPU topology) and why it differs from KVM's."""

    entries: list[CpuidEntry]
    removed: dict[str, str]  # feature -> reason


def guest_cpuid(
    supported: list[CpuidEntry], host: str, user: list[tuple[bool, str]] | None = None
) -> Policy:
    """KVM's ``supported`` list, minus ``HOST_LIMITS[host]`` (and what depends on
    those), then the user's ``(add, name)`` changes in order.  A user may add back
    only what KVM supports."""
    entries = list(supported)
    removed: dict[str, str] = {}
    for name, why in HOST_LIMITS.get(host, {}).items():
        for n, parent in _closure(name).items():
            if has(entries, n):
                entries = _set(entries, n, False)
                removed[n] = f"needs {parent}" if parent else f"host ({host}): {why}"
    for add, name in user or []:
        if add:
            if not has(supported, name):
                raise ConfigError(f"--cpu-features +{name}: this host's KVM does not offer it")
            entries = _set(entries, name, True)
            removed.pop(name, None)
        else:
            for n, parent in _closure(name).items():
                feat = FEATURES[n]
                if has(entries, n) and (feat.function, feat.index, feat.reg) in HOST_FIXED.get(
                    host, set()
                ):
                    raise ConfigError(
                        f"--cpu-features -{name}: this host's KVM ({host}) shows the guest "
                        f"CPUID leaf {feat.function:#x} {feat.reg.upper()} as the host has it, "
                        f"so {n} cannot be hidden"
                    )
                if has(entries, n):
                    entries = _set(entries, n, False)
                    removed[n] = f"needs {parent}" if parent else "--cpu-features"
    if not has(entries, "xsave"):
        # Without XSAVE the state-component leaf describes nothing the guest may use.
        entries = [e for e in entries if e.function != XSAVE_LEAF]
    return Policy(entries, removed)


def feature_names(entries: list[CpuidEntry]) -> list[str]:
    return sorted(n for n in FEATURES if has(entries, n))


def describe(entries: list[CpuidEntry], removed: dict[str, str]) -> str:
    """What ``keel run --show-cpuid`` prints: the leaves, the features, what was removed."""
    lines = ["CPUID leaves as vCPU 0 sees them:"]
    for e in sorted(entries, key=lambda e: (e.function, e.index)):
        lines.append(f"  {e.function:#010x}.{e.index:<2} eax={e.eax:#010x} ebx={e.ebx:#010x} "
                     f"ecx={e.ecx:#010x} edx={e.edx:#010x}")  # fmt: skip
    lines.append("features: " + " ".join(feature_names(entries)))
    for name, why in sorted(removed.items()):
        lines.append(f"removed: {name}: {why}")
    return "\n".join(lines)
