"""`scripts/bench --net` works: a tiny run (a few frames each way, Keel and QEMU
microvm on a TAP in a namespace the benchmark makes) gives a row per case with
positive rates and a ratio.  What the figures are is for docs/benchmarks.md,
never asserted here."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from tests.conftest import ROOT, requires_kvm, requires_qemu

pytestmark = [requires_kvm, requires_qemu]

ROW = re.compile(
    r"^\| virtio-net (guest → host|host → guest), (60|1514)-byte frames \| "
    r"(\d+) frames/s, ([\d.]+) MB/s \| (\d+) frames/s, ([\d.]+) MB/s \(QEMU microvm\) \| "
    r"([\d.]+)x \|$",
    re.M,
)


def test_the_net_benchmark_runs_and_reports_every_case() -> None:
    if os.geteuid() != 0:
        pytest.skip("making a network namespace needs root")
    before = {p: p.stat().st_mtime for p in (ROOT / "docs").glob("*.png")}
    with subprocess.Popen(
        [sys.executable, str(ROOT / "scripts" / "bench"), "--net", "--runs", "1",
         "--frames", "12", "--no-plot"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
    ) as popen:  # fmt: skip
        out, err = popen.communicate(timeout=600)
    proc = subprocess.CompletedProcess(popen.args, popen.returncode, out, err)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rows = ROW.findall(proc.stdout)
    assert {(d, s) for d, s, *_ in rows} == {
        (d, s) for d in ("guest → host", "host → guest") for s in ("60", "1514")
    }, proc.stdout
    for _d, size, k_fps, k_mbs, q_fps, _q_mbs, ratio in rows:
        assert int(k_fps) > 0 and int(q_fps) > 0 and float(ratio) > 0
        # MB/s is frames/s times the frame size (both rounded)
        assert abs(float(k_mbs) - int(k_fps) * int(size) / 1e6) < 0.01 + int(size) / 1e6
    assert {p: p.stat().st_mtime for p in (ROOT / "docs").glob("*.png")} == before
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    # the namespace went with the run (other worktrees' runs may have theirs)
    assert f"keelbench-{popen.pid}-" not in listed
