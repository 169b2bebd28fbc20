"""Differential tests: small foreign guests under `keel run` and under QEMU microvm.

Each guest of tests/guests/pvh_entry.S (the PVH entry state: start_info,
control registers, EFER, RFLAGS, selectors, descriptor tables) and
tests/guests/corpus.S (32- and 64-bit PVH entry, long mode, ring 3
with IOPL 3 and with a TSS I/O bitmap, CPUID and MSR reads, port and MMIO
accesses, an interrupt through the IOAPIC, the LAPIC timer, INIT-SIPI of a
second CPU) runs under both VMMs on this host; their console output must match
line for line.  QEMU runs with its defaults (`-M microvm`, its default CPU
model) plus the exit device the guests end through.

Differences that are by design are listed in ``BY_DESIGN`` with the reason:
the differing text is masked on both sides before the comparison, and each
side's value is checked on its own so the difference stays what it says.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import GUESTS, build_guest, have_kvm, keel, requires_qemu, run_guest
from vmm.boot import cpu_features

pytestmark = [requires_qemu, pytest.mark.skipif(not have_kvm(), reason="needs /dev/kvm")]

QEMU_PASS = 33  # isa-debug-exit: (0x10 << 1) | 1

# name, extra defines, vCPUs, ELF32 container (PVH: pvh_entry.S, the others corpus.S)
CORPUS: list[tuple[str, tuple[str, ...], int, bool]] = [
    ("PVH", (), 1, True),
    ("PVH", (), 1, False),
    ("LONG", (), 1, True),
    ("LONG", (), 1, False),
    ("IOPL3", (), 1, False),
    ("IOPL3", ("IOPL_VIA_POPF",), 1, False),
    ("IOPL3", ("IOPL_VIA_SYSRET",), 1, False),
    ("IOBITMAP", (), 1, False),
    ("CPUIDMSR", (), 1, True),
    ("PORTMMIO", (), 1, False),
    ("IOAPIC", (), 1, False),
    ("LAPICTIMER", (), 1, False),
    ("SMP", (), 2, True),
]

# guest -> [(pattern whose group 1 may differ, keel's value, QEMU's value, reason)]
BY_DESIGN: dict[str, list[tuple[str, str | None, str | None, str]]] = {
    "PVH": [
        (r" tr (\w+)", "00000018", "00000000",
         "TR: Keel's loader names the 32-bit TSS the PVH ABI asks for with a descriptor "
         "(0x18) of its boot GDT; QEMU's firmware loads TR's hidden part with selector 0"),
        (r"gdtr base (\w+)", "00000500", None,
         "where the boot GDT lives is the loader's choice: Keel's at 0x500 in low RAM, "
         "QEMU's in its firmware"),
        (r"gdtr base \w+ limit (\w+)", "0000001f", None,
         "the boot GDT's size: Keel's has four entries (null, code, data, TSS)"),
    ],
    "CPUIDMSR": [
        (r" cx16 (\w+)", "00000000" if cpu_features.host_kind() == "kvm_pvm" else None,
         "00000001",
         "keel run hides CX16 on kvm_pvm hosts, whose emulator cannot run lock cmpxchg16b "
         "(vmm/boot/cpu_features.py HOST_LIMITS); QEMU's default CPU model offers it"),
    ],
    "PORTMMIO": [
        (r"unclaimed 0xc0000000 reads (\w+)", "ffffffff", "00000000",
         "keel run answers reads of unclaimed MMIO with all ones, as a bus with nothing "
         "behind it does on real hardware; QEMU's unassigned memory reads as zero"),
    ],
}  # fmt: skip


@pytest.fixture(scope="module")
def corpus_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("corpus")


def run_qemu(guest: Path, smp: int, accel: str = "kvm") -> subprocess.CompletedProcess[str]:
    """QEMU under the hang watchdog every test guest gets (conftest.run_guest):
    a guest silent on its console for HANG_TIMEOUT seconds, or running past
    60 s, is killed and the test fails showing the console's tail."""
    cmd = [
        shutil.which("qemu-system-x86_64") or "qemu-system-x86_64",
        "-M", "microvm", "-accel", accel, "-smp", str(smp), "-m", "256M",
        "-nodefaults", "-nographic", "-no-reboot", "-serial", "stdio",
        "-kernel", str(guest), "-device", "isa-debug-exit,iobase=0xf4,iosize=4",
    ]  # fmt: skip
    return run_guest(cmd, timeout=60)


def mask(name: str, text: str, side: int) -> str:
    """``text`` with the by-design differences of guest ``name`` checked and masked;
    ``side`` is 1 for keel run, 2 for QEMU."""
    for pattern, *values, _reason in BY_DESIGN.get(name, []):
        expected = values[side - 1]
        for m in re.finditer(pattern, text):
            assert expected is None or m.group(1) == expected, (pattern, m.group(0))
        text = re.sub(pattern, _masked, text)
    return text


def _masked(m: re.Match[str]) -> str:
    start, end = m.start(1) - m.start(0), m.end(1) - m.start(0)
    return m.group(0)[:start] + "BY_DESIGN" + m.group(0)[end:]


@pytest.mark.parametrize(
    "name, defines, smp, elf32",
    CORPUS,
    ids=[f"{n.lower()}{''.join('-' + d.lower() for d in d_)}-{'elf32' if e else 'elf64'}"
         for n, d_, _, e in CORPUS],
)  # fmt: skip
def test_same_console_under_keel_and_qemu(
    corpus_dir: Path, name: str, defines: tuple[str, ...], smp: int, elf32: bool
) -> None:
    source = GUESTS / ("pvh_entry.S" if name == "PVH" else "corpus.S")
    guest = build_guest(source, corpus_dir, name, *defines, elf32=elf32)
    ours = keel("run", str(guest), "--smp", str(smp), "--memory", "256M")
    theirs = run_qemu(guest, smp)
    assert ours.returncode == 0, ours.stdout + ours.stderr
    assert theirs.returncode == QEMU_PASS, theirs.stdout + theirs.stderr
    assert "corpus: exception" not in ours.stdout
    keel_lines = mask(name, ours.stdout, 1).splitlines()
    qemu_lines = mask(name, theirs.stdout, 2).splitlines()
    assert keel_lines == qemu_lines
    assert keel_lines[0] == "corpus: start" and len(keel_lines) >= 2


def test_ring3_io_on_this_host(corpus_dir: Path) -> None:
    """What ring 3 may do with ports, the same under both VMMs: through the TSS I/O
    bitmap yes, through IOPL 3 only where the host keeps the IOPL of ring 3.  On a
    kvm_pvm host it does not: the RFLAGS the #GP pushes shows IOPL 0 after an iretq,
    popf or sysret that set 3, under QEMU exactly as under keel run."""
    bitmap = keel("run", str(build_guest(GUESTS / "corpus.S", corpus_dir, "IOBITMAP")),
                  "--smp", "1")  # fmt: skip
    assert "ring 3: hello through out" in bitmap.stdout
    assert "ring 0: #GP from ring 3, error code 00000000 rflags.iopl 00000000" in bitmap.stdout
    iopl = keel("run", str(build_guest(GUESTS / "corpus.S", corpus_dir, "IOPL3")), "--smp", "1")
    assert iopl.returncode == 0, iopl.stderr
    if cpu_features.host_kind() == "kvm_pvm":
        assert "rflags.iopl 00000000" in iopl.stdout
    else:
        assert "ring 3: hello through out" in iopl.stdout


def test_ring3_iopl3_under_qemu_tcg(corpus_dir: Path) -> None:
    """The IOPL 3 guests are right: under QEMU's default accelerator (TCG, what
    `qemu-system-x86_64 -M microvm -kernel` uses without -enable-kvm) ring 3
    writes the port through IOPL 3 however it was set.  So the #GP they take
    under keel run and under QEMU with KVM on a kvm_pvm host is the host's."""
    for defines in [(), ("IOPL_VIA_POPF",), ("IOPL_VIA_SYSRET",)]:
        guest = build_guest(GUESTS / "corpus.S", corpus_dir, "IOPL3", *defines)
        proc = run_qemu(guest, 1, accel="tcg")
        assert proc.returncode == QEMU_PASS, proc.stdout + proc.stderr
        assert "ring 3: hello through out" in proc.stdout, (defines, proc.stdout)
        assert "#GP" not in proc.stdout, (defines, proc.stdout)
