"""SMP scaling from the stress workload (keel.test=stress): IPC pairs, the
capability storm and identify calls on 1, 2 and 4 vCPUs, every case in turn
run by run (``scripts/bench --scaling``), and the storm with this tree's build
against another's (``--storm-against DIR``).  See scripts/bench's docstring."""

from __future__ import annotations

import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
KERNEL = ROOT / "build" / "kernel.elf"
INITRD = ROOT / "build" / "initrd.cpio"

SCALING_SECONDS = 3


def stress_rate(smp: int, cmdline: str, tsc_khz: int, build: Path | None = None) -> float:
    """Operations per second the stress workload reports (`... N per s`), with
    this tree's kernel and initrd or those in ``build``."""
    import re

    from vmm.machine import Machine

    line = f"keel.test=stress keel.duration={SCALING_SECONDS} {cmdline}"
    if tsc_khz:
        line += f" keel.tsc_khz={tsc_khz}"
    kernel, initrd = (build / "kernel.elf", build / "initrd.cpio") if build else (KERNEL, INITRD)
    m = Machine(kernel, smp=smp, initrd=initrd, cmdline=line, console=lambda _d: None,
                log=lambda _m: None, hang_timeout=60)  # fmt: skip
    result = m.run()
    text = m.console.text()
    if result.status != 0:
        raise SystemExit(f"stress ({cmdline}) failed: {result.reason}\n{text[-2000:]}")
    found = re.search(r"^stress: \w+ ok .*?(\d+) per s", text, re.MULTILINE)
    if not found:
        raise SystemExit(f"no rate in the stress output:\n{text[-2000:]}")
    return float(found.group(1))


SCALING_CASES = [
    # (label, workload, [(smp, cmdline)...]) - the first entry is the baseline
    ("IPC round trips/s", "ipc", [
        (1, "keel.stress=ipc keel.pin=local keel.pairs=1"),
        (2, "keel.stress=ipc keel.pin=local keel.pairs=2"),
        (4, "keel.stress=ipc keel.pin=local keel.pairs=4"),
    ]),
    ("create/delete objects/s", "caps", [
        (1, "keel.stress=caps keel.pin=local"),
        (2, "keel.stress=caps keel.pin=local"),
        (4, "keel.stress=caps keel.pin=local"),
    ]),
    # Kernel calls that share nothing: the host's own ceiling for the two above.
    ("identify calls/s, nothing shared", "calls", [
        (1, "keel.stress=calls keel.pin=local"),
        (2, "keel.stress=calls keel.pin=local"),
        (4, "keel.stress=calls keel.pin=local"),
    ]),
]  # fmt: skip


def scaling(runs: int, plot_it: bool = True) -> list[tuple[str, str, str, str]]:
    from vmm.builder import guest_tsc_khz

    khz = guest_tsc_khz()
    # Run by run, every case in turn: a drift of the host's speed over the
    # minutes of the run then moves the 1-vCPU reference with the rest.
    samples: dict[tuple[int, int], list[float]] = {}
    for _ in range(runs):
        for k, (_label, _name, cases) in enumerate(SCALING_CASES):
            for i, (smp, cmd) in enumerate(cases):
                samples.setdefault((k, i), []).append(stress_rate(smp, cmd, khz))
    rows, plot = [], []
    for k, (label, _name, cases) in enumerate(SCALING_CASES):
        rates = [statistics.median(samples[(k, i)]) for i in range(len(cases))]
        base = rates[0]
        plot.append((label, [smp for smp, _ in cases], [r / base for r in rates]))
        for (smp, cmd), rate in zip(cases[1:], rates[1:], strict=True):
            what = "pairs" if "ipc" in cmd else "threads, own tables"
            threads = smp if "ipc" in cmd or "calls" in cmd else max(2, smp)
            rows.append((
                f"{label}, {smp} vCPUs ({threads} {what})",
                f"{rate:.0f}", f"{base:.0f} (1 vCPU)", f"{rate / base:.2f}x",
            ))  # fmt: skip
    rows.append(storm_four_over_two(samples))
    if plot_it:
        write_plot(plot)
    return rows


def storm_four_over_two(samples: dict[tuple[int, int], list[float]]) -> tuple[str, str, str, str]:
    """The storm's 4 vCPUs over its 2, against identify's 4 over 2 (nothing
    shared: what the host itself loses running 4 vCPUs on 2 cores), paired run
    by run: the last column is the median of the runs' storm ratio over their
    identify ratio, so a drift of the host between runs cancels."""
    storm2, storm4, id2, id4 = (samples[(k, i)] for k in (1, 2) for i in (1, 2))
    paired = [s4 / s2 / (c4 / c2) for s2, s4, c2, c4 in zip(storm2, storm4, id2, id4, strict=True)]
    storm = statistics.median(storm4) / statistics.median(storm2)
    ident = statistics.median(id4) / statistics.median(id2)
    return ("create/delete objects/s, 4 over 2 vCPUs (2 cores), against identify's",
            f"{storm:.3f}", f"{ident:.3f} (identify, 4 over 2)",
            f"{statistics.median(paired):.2f}x")  # fmt: skip


def storm_against(other: Path, runs: int) -> list[tuple[str, str, str, str]]:
    """The capability storm's scaling with this build and with ``other``'s,
    the two measured alternately in each run (same-run ratios)."""
    from vmm.builder import guest_tsc_khz

    for f in ("kernel.elf", "initrd.cpio"):
        if not (other / f).exists():
            raise SystemExit(f"{other / f} is missing: build that tree first")
    khz = guest_tsc_khz()
    cases = SCALING_CASES[1][2]
    rates: dict[tuple[str, int], list[float]] = {}
    for _ in range(runs):
        for smp, cmd in cases:
            for name, build in (("this", None), ("other", other)):
                rates.setdefault((name, smp), []).append(stress_rate(smp, cmd, khz, build))
    rows = []
    for name, label in (("other", f"{other}"), ("this", "this tree")):
        base = statistics.median(rates[(name, 1)])
        for smp, _ in cases[1:]:
            rate = statistics.median(rates[(name, smp)])
            rows.append((f"create/delete objects/s, {smp} vCPUs, {label}", f"{rate:.0f}",
                         f"{base:.0f} (1 vCPU)", f"{rate / base:.2f}x"))  # fmt: skip
    return rows


def write_plot(series: list[tuple[str, list[int], list[float]]]) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("(matplotlib is not installed: no plot)", file=sys.stderr)
        return
    fig, ax = plt.subplots(figsize=(6, 4))
    top = max(max(s[1]) for s in series)
    ax.plot([1, 2, max(top, 2)], [1, 2, 2], "k:", label="ideal (2 host cores)")
    for label, xs, ys in series:
        ax.plot(xs, ys, "o-", label=label)
    ax.axvline(2, color="grey", lw=0.5)
    ax.set_xlabel("vCPUs (host has 2 cores)")
    ax.set_ylabel("throughput relative to 1 vCPU")
    ax.set_title("Keel SMP scaling (keel.test=stress, independent work per CPU)")
    ax.legend()
    fig.tight_layout()
    out = ROOT / "docs" / "scaling.png"
    fig.savefig(out, dpi=100)
    print(f"(plot written to {out.relative_to(ROOT)})", file=sys.stderr)
