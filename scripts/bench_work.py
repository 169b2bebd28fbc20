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
"""

from __future__ import annotations

import re
import statistics
from pathlib import Path

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
    builds: list[tuple[str, Path | None]] = [("this tree", None)]
    if other is not None:
        for f in ("kernel.elf", "initrd.cpio"):
            if not (other / f).exists():
                raise SystemExit(f"{other / f} is missing: build that tree first")
        builds.insert(0, (str(other), other))
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
