"""Kernel calls inside the guest against the syscall floor of the same boot
(`scripts/bench --calls`): cycles from `keel.test=bench` (rdtsc around each
path, userspace/tests/bench.c) and the exact instruction counts of the same
paths from scripts/icount (QEMU TCG, `-icount`)."""

from __future__ import annotations

import importlib.machinery
import shutil
import types
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
KERNEL = ROOT / "build" / "kernel.elf"
INITRD = ROOT / "build" / "initrd.cpio"


def kernel_calls() -> dict[str, int]:
    """Cycle counts the guest reports as `kbench: NAME N cycles`."""
    from vmm.machine import Machine  # lazy: scripts/bench puts the tree on sys.path first

    m = Machine(KERNEL, smp=1, initrd=INITRD, cmdline="keel.test=bench",
                console=lambda _d: None, log=lambda _m: None)  # fmt: skip
    result = m.run()
    if result.status != 0:
        raise SystemExit(f"keel.test=bench failed: {result.reason}\n{m.console.text()}")
    figures = {}
    for line in m.console.text().splitlines():
        parts = line.split()
        if len(parts) == 4 and parts[0] == "kbench:" and parts[2].isdigit():
            figures[parts[1]] = int(parts[2])
    return figures


def instruction_counts() -> dict[str, int]:
    """scripts/icount's exact path lengths (QEMU TCG), or {} without QEMU."""
    if shutil.which("qemu-system-x86_64") is None:
        return {}
    path = str(ROOT / "scripts" / "icount")
    loader = importlib.machinery.SourceFileLoader("keel_icount", path)
    module = types.ModuleType(loader.name)
    module.__file__ = path
    loader.exec_module(module)
    return dict(module.measure())


def call_rows(runs: int = 1) -> list[tuple[str, str, str, str]]:
    """Kernel calls in cycles (rdtsc in the guest) against the floor of the
    same boot, and the same paths in instructions (scripts/icount). With
    several runs each row is the boot whose ratio is the median of the
    boots' ratios (figure and reference from that one boot)."""
    boots = [kernel_calls() for _ in range(max(1, runs))]

    def median_boot(ratio: Callable[[dict[str, int]], float]) -> dict[str, int]:
        return sorted(boots, key=ratio)[(len(boots) - 1) // 2]

    def against_floor(key: str, floors: int) -> Callable[[dict[str, int]], float]:
        return lambda b: b[key] / (floors * b["floor"])

    rows = []
    for label, key, floors, ref in (
        ("null kernel call (in guest, rdtsc)", "null", 1, "syscall floor"),
        ("capability copy + delete (two calls)", "copy_delete", 2, "two floors"),
        ("IPC round trip (call + reply_recv, 1 CPU)", "ipc_roundtrip", 1, "syscall floor"),
    ):
        c = median_boot(against_floor(key, floors))
        rows.append((label, f"{c[key]} cycles", f"{floors * c['floor']} cycles ({ref})",
                     f"{c[key] / (floors * c['floor']):.2f}x"))  # fmt: skip
    c = median_boot(lambda b: b["ipc_roundtrip"])
    rows.append(("IPC round trip against seL4", f"{c['ipc_roundtrip']} cycles",
                 "375 cycles (seL4, published)", f"{c['ipc_roundtrip'] / 375:.0f}x"))  # fmt: skip
    c = median_boot(lambda b: b["batch16_identify"] / b["identify"])
    rows.append(("batch of 16 calls (cnode_identify)", f"{c['batch16_identify']} cycles",
                 f"{c['identify']} cycles (a batch of one)",
                 f"{c['batch16_identify'] / c['identify']:.2f}x"))  # fmt: skip
    counts = instruction_counts()
    if counts:
        fl = counts["floor"]
        rows += [
            ("null call, instructions (QEMU -icount)", str(counts["null"]), f"{fl} (floor)",
             f"{counts['null'] / fl:.2f}x"),
            ("IPC round trip, instructions", str(counts["ipc_roundtrip"]),
             "500 (goal, call + reply)", f"{counts['ipc_roundtrip'] / 500:.2f}x"),
            ("batch of 16, instructions", str(counts["batch16"]),
             f"{counts['batch1']} (batch of one)",
             f"{counts['batch16'] / counts['batch1']:.2f}x"),
            ("copy + delete, instructions", str(counts["copy_delete"]), f"{2 * fl} (two floors)",
             f"{counts['copy_delete'] / (2 * fl):.2f}x"),
        ]  # fmt: skip
    return rows
