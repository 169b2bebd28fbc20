"""The boot figure of scripts/bench: whole-process time of `keel run` against QEMU microvm.

    scripts/bench --boot [--runs N] [--boot-against DIR]

Each run is the wall-clock time of the whole host process, from exec to exit
status, of `keel run build/kernel.elf --smp N --cmdline keel.test=boot` and of
`qemu-system-x86_64 -M microvm` booting the same kernel with the same command
line, on 1 and 2 vCPUs, alternating run by run so both see the same host load.
With `--boot-against DIR`, a third column runs `keel` with the VMM sources of
DIR (another checkout's tree: `vmm/` with its compiled bindings) first on the
Python path, started as pip's console script starts it (with `site`, as
before scripts/write_launcher.py), booting DIR/kernel.elf when there is one:
before and after a change, in the same run.  The
load average is printed with the table; the plot (docs/boot.png) shows every
run, not only the medians.
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
KERNEL = ROOT / "build" / "kernel.elf"


def keel_cmd(smp: int, kernel: Path = KERNEL) -> list[str]:
    return [str(ROOT / ".venv" / "bin" / "keel"), "run", str(kernel), "--smp", str(smp),
            "--cmdline", "keel.test=boot"]  # fmt: skip


def qemu_cmd(smp: int) -> list[str] | None:
    qemu = shutil.which("qemu-system-x86_64")
    if not qemu:
        return None
    return [qemu, "-enable-kvm", "-cpu", "host,-arch-capabilities", "-M", "microvm", "-m", "256M",
            "-smp", str(smp), "-nographic", "-no-reboot", "-nodefaults", "-serial", "stdio",
            "-kernel", str(KERNEL), "-append", "keel.test=boot",
            "-device", "isa-debug-exit,iobase=0xf4,iosize=4"]  # fmt: skip


def pip_launcher() -> Path:
    """A `keel` as pip writes it (the interpreter with site), in build/bench."""
    path = ROOT / "build" / "bench" / "keel-with-site"
    path.parent.mkdir(parents=True, exist_ok=True)
    python = ROOT / ".venv" / "bin" / "python"
    path.write_text(f"#!{python}\nimport sys\nfrom vmm.cli import entry\nsys.exit(entry())\n")
    path.chmod(0o755)
    return path


def wall(cmd: list[str], expect: int, env: dict[str, str] | None = None) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, cwd=ROOT, env=env)
    elapsed = time.perf_counter() - t0
    if proc.returncode != expect:
        raise SystemExit(f"{' '.join(cmd)} exited {proc.returncode}: {proc.stderr.decode()[-500:]}")
    return elapsed


def samples(smp: int, runs: int, against: Path | None = None) -> dict[str, list[float]]:
    """Seconds of each run: "keel", "qemu" (when installed), "before" (with ``against``)."""
    out: dict[str, list[float]] = {"keel": [], "qemu": [], "before": []}
    qcmd = qemu_cmd(smp)
    env, before = None, keel_cmd(smp)
    if against is not None:
        env = dict(os.environ, PYTHONPATH=str(against.resolve()))
        # DIR/kernel.elf, when there, is the kernel of before (a guest-side change).
        before = keel_cmd(smp, against / "kernel.elf" if (against / "kernel.elf").exists()
                          else KERNEL)  # fmt: skip
        before[0] = str(pip_launcher())
    for _ in range(runs):
        out["keel"].append(wall(keel_cmd(smp), 0))
        if env is not None:
            out["before"].append(wall(before, 0, env))
        if qcmd:
            out["qemu"].append(wall(qcmd, 33))
    return out


def rows(runs: int, against: Path | None, plot: Path | None) -> list[tuple[str, str, str, str]]:
    """The two boot rows (1 and 2 vCPUs), medians; the plot of every run to ``plot``."""
    table, series = [], []
    load_before = os.getloadavg()
    for smp in (1, 2):
        s = samples(smp, runs, against)
        k = statistics.median(s["keel"])
        q = statistics.median(s["qemu"]) if s["qemu"] else None
        ref = f"{q * 1000:.0f} ms (QEMU microvm)" if q else "n/a (no QEMU)"
        label = f"boot to `keel.test=boot` exit, {smp} vCPU"
        table.append((label, f"{k * 1000:.0f} ms", ref, f"{k / q:.2f}x" if q else "n/a"))
        if s["before"]:
            b = statistics.median(s["before"])
            table.append((f"{label}, {against} (before)", f"{b * 1000:.0f} ms", ref,
                          f"{b / q:.2f}x" if q else "n/a"))  # fmt: skip
        series.append((smp, s))
    load_after = os.getloadavg()
    print(f"load average {load_before[0]:.2f} at the start, {load_after[0]:.2f} at the end",
          file=sys.stderr)  # fmt: skip
    if plot is not None:
        write_plot(series, plot, against)
    return table


def write_plot(series: list[tuple[int, dict[str, list[float]]]], out: Path,
               against: Path | None) -> None:  # fmt: skip
    try:
        import matplotlib  # lazy: only a plot needs it (pyplot: 560 ms, python -X importtime)

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("(matplotlib is not installed: no plot)", file=sys.stderr)
        return
    fig, axes = plt.subplots(1, len(series), figsize=(4.2 * len(series), 3.6), squeeze=False)
    for ax, (smp, s) in zip(axes.flat, series, strict=False):
        names = [("keel", "Keel"), ("before", f"Keel, {against.name if against else ''}"),
                 ("qemu", "QEMU microvm")]  # fmt: skip
        shown = [(label, [v * 1000 for v in s[key]]) for key, label in names if s[key]]
        ax.boxplot([v for _, v in shown], widths=0.5, showfliers=False)
        for i, (_, values) in enumerate(shown, start=1):
            ax.scatter([i] * len(values), values, s=10, alpha=0.6, color="tab:blue")
        ax.set_xticks(range(1, len(shown) + 1), [label for label, _ in shown], fontsize=8)
        ax.set_ylabel("ms, exec to exit status (lower is better)", fontsize=8)
        title = f"boot to exit, {smp} vCPU"
        if s["qemu"]:
            ratio = statistics.median(s["keel"]) / statistics.median(s["qemu"])
            title += f": {ratio:.2f}x QEMU (medians)"
        ax.set_title(title, fontsize=9)
        ax.tick_params(labelsize=8)
        ax.set_ylim(bottom=0)
    fig.suptitle("keel run against QEMU microvm: same kernel and command line, every run",
                 fontsize=10)  # fmt: skip
    fig.tight_layout()
    fig.savefig(out, dpi=90)
    print(f"(plot written to {out.relative_to(ROOT)})", file=sys.stderr)
