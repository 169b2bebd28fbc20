"""The SMP stress workloads under QEMU's TCG (scripts/bench_work.py builds the
same guests for `scripts/bench --storm-work --tcg`).

Multi-threaded TCG runs each vCPU in a host thread, some 200 times faster
than this host's KVM emulates the kernel: in a few seconds the capability
storm makes hundreds of thousands of objects, so the CPUs' kernel paths
interleave far more often than in a KVM run of the same length, over 2
host cores with 4 vCPUs.  With `-icount shift=0` the vCPUs take turns in
one host thread and a guest second is 10^9 guest instructions: the storm's
objects per guest second give its instructions per object exactly, the
same on every run - a budget, not a time.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import load_module, requires_qemu

ROOT = Path(__file__).resolve().parents[2]

# The storm's guest instructions per object on 4 vCPUs over those on 2,
# under -icount: 1.003 before a pending region revoke waited only for the
# CPUs that may read its slots, 1.020-1.026 since (its finish no longer
# waits for a vCPU that entered the kernel before it, so later fills look
# at every CPU a little more often; docs/benchmarks.md).  A scheme whose
# work grows with the number of CPUs - a look at every CPU on every call,
# a wait for each - fails this.
STORM_4_OVER_2 = 1.05


@pytest.fixture(scope="module")
def bench_work(kernel: Path, initrd: Path) -> Any:
    return load_module("keel_bench_work", ROOT / "scripts" / "bench_work.py")


@requires_qemu
def test_every_workload_passes_on_4_vcpus_under_multithreaded_tcg(bench_work: Any) -> None:
    proc = bench_work.qemu_guest(4, None, "keel.test=stress keel.duration=6 keel.seed=11", False)
    out, passed = proc.stdout, bench_work.icount_script().QEMU_PASS
    assert proc.returncode == passed, f"stress failed ({proc.returncode}):\n{out[-3000:]}"
    assert re.search(r"^stress: summary \d+ workloads, 0 failed", out, re.MULTILINE), out[-3000:]
    made = re.search(r"stress: caps ok .*?(\d+) objects made and freed", out)
    assert made and int(made.group(1)) > 10000, f"the storm barely ran:\n{out[-3000:]}"


@requires_qemu
def test_the_storm_does_no_more_work_per_object_on_4_vcpus_than_on_2(bench_work: Any) -> None:
    per = {smp: 1e9 / bench_work.qemu_stress(smp, None, "caps", True) for smp in (2, 4)}
    assert per[4] / per[2] <= STORM_4_OVER_2, (
        f"{per[4]:.0f} guest instructions per object on 4 vCPUs, {per[2]:.0f} on 2"
    )
