"""The capability storm's kernel work per object on 2 and 4 vCPUs, counted by
KVM (``scripts/bench --storm-work [DIR]``).

With 4 vCPUs on 2 host cores the cores stay busy either way, so what 4 vCPUs
lose against 2 is work per object.  On a host that emulates the guest's
supervisor code (kvm_pvm) KVM counts every kernel instruction in its
``insn_emulation`` statistic (vmm.kvm.stats), so the kernel's instructions
per object made can be read off the running storm, counted, not timed:
between the guest's first and last progress lines (``stress: progress Ns
caps N``), so the boot and the set-up are left out.  Halts and interrupts
per object come beside it.  With DIR (another tree's build), its kernel runs
too, run by run in turn; each row's reference is the same build's 2-vCPU
figure from the same runs.

``--tcg``: the same storm under QEMU's TCG, where no host core is shared
with another vCPU by surprise.  With ``-icount shift=0`` every vCPU runs in
one host thread in turn and a guest second is 10^9 guest instructions, so
the storm's objects per second give the guest's instructions per object
(kernel and user, all vCPUs): the kernel's own work, counted exactly, with
nothing of the host in it.  Multi-threaded (one host thread per vCPU, 4
vCPUs on this machine's cores as under KVM) the guest's code runs some 200
times faster than kvm_pvm emulates it, so what a vCPU the host takes off
its core costs the others - a lock it holds, a grace period it holds open
- weighs that much more; the identify calls (nothing shared) are the
reference.  ``--profile``: the icount runs again with scripts/tcgcount.c
(a TCG plugin) counting instructions by block, summed by kernel function:
where 4 vCPUs' instructions per object differ from 2's.
"""

from __future__ import annotations

import functools
import importlib.machinery
import re
import statistics
import subprocess
import types
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SECONDS = 4
COUNTERS = ("insn_emulation", "halt_exits", "irq_injections")
PROGRESS = re.compile(rb"stress: progress \d+s caps (\d+)")


def storm_counts(smp: int, build: Path | None) -> dict[str, float]:
    """KVM's counters per object made, summed over the vCPUs, in one boot."""
    from vmm.machine import Machine

    kernel, initrd = ((build or ROOT / "build") / f for f in ("kernel.elf", "initrd.cpio"))
    snaps: list[tuple[int, dict[str, int]]] = []
    line = bytearray()
    m: Machine

    def console(data: bytes) -> None:
        line.extend(data)
        while b"\n" in line:
            end = line.index(b"\n")
            found = PROGRESS.search(bytes(line[:end]))
            del line[: end + 1]
            if found:
                vcpus = m.kvm_stats()["vcpus"]
                snaps.append((int(found.group(1)),
                              {k: sum(v.get(k, 0) for v in vcpus) for k in COUNTERS}))  # fmt: skip

    cmdline = f"keel.test=stress keel.stress=caps keel.pin=local keel.duration={SECONDS}"
    m = Machine(kernel, smp=smp, initrd=initrd, cmdline=cmdline, console=console,
                log=lambda _m: None, hang_timeout=60)  # fmt: skip
    result = m.run()
    if result.status != 0 or len(snaps) < 2:
        raise SystemExit(f"storm on {smp} vCPUs: {result.reason}, {len(snaps)} progress lines")
    (n0, first), (n1, last) = snaps[0], snaps[-1]
    return {k: (last[k] - first[k]) / max(1, n1 - n0) for k in COUNTERS}


def storm_work(runs: int, other: Path | None) -> list[tuple[str, str, str, str]]:
    builds = _builds(other)
    got: dict[tuple[str, int], list[dict[str, float]]] = {}
    for _ in range(runs):
        for smp in (2, 4):
            for label, build in builds:
                got.setdefault((label, smp), []).append(storm_counts(smp, build))
    rows = []
    for label, _build in builds:
        med = {smp: {k: statistics.median(c[k] for c in got[(label, smp)]) for k in COUNTERS}
               for smp in (2, 4)}  # fmt: skip
        two, four = med[2]["insn_emulation"], med[4]["insn_emulation"]
        if not two:
            raise SystemExit("this host's KVM counts no emulated instructions (insn_emulation)")
        rows.append((f"storm: kernel instructions per object, 4 vCPUs, {label}", f"{four:.0f}",
                     f"{two:.0f} (2 vCPUs)", f"{four / two:.3f}x"))  # fmt: skip
        for k in COUNTERS[1:]:
            rows.append((f"storm: {k} per object, 4 vCPUs, {label}", f"{med[4][k]:.2f}",
                         f"{med[2][k]:.2f} (2 vCPUs)", "-"))  # fmt: skip
    return rows


# -- under QEMU's TCG --------------------------------------------------------------------------

OK_LINE = re.compile(r"^stress: (\w+) ok .*?(\d+) per s", re.MULTILINE)
TCG_SECONDS = 2


@functools.cache
def icount_script() -> Any:
    """scripts/icount (no .py suffix) as a module: its QEMU command line, its
    symbol tables."""
    path = ROOT / "scripts" / "icount"
    loader = importlib.machinery.SourceFileLoader("keel_icount", str(path))
    module = types.ModuleType(loader.name)
    module.__file__ = str(path)
    loader.exec_module(module)
    return module


def qemu_guest(smp: int, build: Path | None, append: str, icount: bool,
               plugin: str | None = None) -> subprocess.CompletedProcess[str]:  # fmt: skip
    """A guest of build's kernel and initrd (this tree's by default) under TCG,
    with icount or multi-threaded; icount_script().QEMU_PASS is its success."""
    kernel, initrd = ((build or ROOT / "build") / f for f in ("kernel.elf", "initrd.cpio"))
    # With icount the time stamp counter counts instructions, 10^9 a guest
    # second; multi-threaded it is the host's, at the rate KVM gives guests.
    append += f" keel.tsc_khz={1000000 if icount else _host_tsc_khz()}"
    cmd = icount_script().qemu_command(kernel, initrd, smp, append, icount)
    if plugin:
        cmd += ["-plugin", plugin]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600,
                          stdin=subprocess.DEVNULL)  # fmt: skip


def qemu_stress(smp: int, build: Path | None, workload: str, icount: bool,
                plugin: str | None = None) -> float:  # fmt: skip
    """The workload's rate (per guest second) under TCG, with icount or multi-threaded."""
    append = f"keel.test=stress keel.stress={workload} keel.pin=local keel.duration={TCG_SECONDS}"
    proc = qemu_guest(smp, build, append, icount, plugin)
    found = OK_LINE.search(proc.stdout)
    if proc.returncode != icount_script().QEMU_PASS or not found:
        raise SystemExit(f"{workload} under TCG ({proc.returncode}):\n{proc.stdout[-2000:]}")
    return float(found.group(2))


def storm_tcg(runs: int, other: Path | None) -> list[tuple[str, str, str, str]]:
    builds = _builds(other)
    rows = []
    for label, build in builds:
        per = {smp: 1e9 / qemu_stress(smp, build, "caps", True) for smp in (2, 4)}
        what = f"storm under TCG -icount: guest instructions per object, 4 vCPUs, {label}"
        rows.append((what, f"{per[4]:.0f}", f"{per[2]:.0f} (2 vCPUs)", f"{per[4] / per[2]:.3f}x"))
    got: dict[tuple[str, str, int], list[float]] = {}
    for _ in range(runs):
        for label, build in builds:
            for workload in ("caps", "calls"):
                for smp in (2, 4):
                    rate = qemu_stress(smp, build, workload, False)
                    got.setdefault((label, workload, smp), []).append(rate)
    for label, _build in builds:
        for workload, what in (("caps", "objects"), ("calls", "identify calls")):
            two, four = (statistics.median(got[(label, workload, smp)]) for smp in (2, 4))
            rows.append((f"{what}/s under multi-threaded TCG, 4 vCPUs, {label}", f"{four:.0f}",
                         f"{two:.0f} (2 vCPUs)", f"{four / two:.2f}x"))  # fmt: skip
    return rows


@functools.cache
def _host_tsc_khz() -> int:
    from vmm.builder import guest_tsc_khz

    return guest_tsc_khz()


def _builds(other: Path | None) -> list[tuple[str, Path | None]]:
    builds: list[tuple[str, Path | None]] = [("this tree", None)]
    if other is not None:
        for f in ("kernel.elf", "initrd.cpio"):
            if not (other / f).exists():
                raise SystemExit(f"{other / f} is missing: build that tree first")
        builds.insert(0, (str(other), other))
    return builds


def storm_profile(build: Path | None, top: int = 12) -> list[tuple[str, str, str, str]]:
    """Kernel instructions per object by function, 4 vCPUs against 2 (icount, plugin)."""
    out_dir = ROOT / "build" / "bench"
    out_dir.mkdir(parents=True, exist_ok=True)
    plugin = out_dir / "tcgcount.so"
    subprocess.run(["gcc", "-O2", "-shared", "-fPIC", "-fvisibility=hidden", "-Wall", "-Wextra",
                    "-Werror", "-o", str(plugin), str(ROOT / "scripts" / "tcgcount.c")],
                   check=True)  # fmt: skip
    symbols = icount_script().Symbols((build or ROOT / "build") / "kernel.elf")
    per: dict[int, Counter[str]] = {}
    for smp in (2, 4):
        counts = out_dir / f"tcgcount{smp}.txt"
        rate = qemu_stress(smp, build, "caps", True, f"{plugin},arg=out={counts}")
        objects = rate * TCG_SECONDS
        by_fn: Counter[str] = Counter()
        for line in counts.read_text().splitlines():
            va, n = (int(x, 16 if i == 0 else 10) for i, x in enumerate(line.split()))
            if va >> 63:  # the kernel's half of the address space
                by_fn[symbols.name(va)] += n
        per[smp] = Counter({k: v / objects for k, v in by_fn.items()})
    two, four = sum(per[2].values()), sum(per[4].values())
    rows = [("storm under TCG -icount: kernel instructions per object, 4 vCPUs", f"{four:.0f}",
             f"{two:.0f} (2 vCPUs)", f"{four / two:.3f}x")]  # fmt: skip
    fns = sorted(set(per[2]) | set(per[4]), key=lambda f: -abs(per[4][f] - per[2][f]))
    for f in fns[:top]:
        rows.append((f"... in {f}", f"{per[4][f]:.1f}", f"{per[2][f]:.1f} (2 vCPUs)",
                     f"{per[4][f] - per[2][f]:+.1f}"))  # fmt: skip
    return rows
