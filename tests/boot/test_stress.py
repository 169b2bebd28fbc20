"""``keel stress``: the in-guest SMP stress workload, and the host-side hang watchdog.

A short run (a few seconds: kernel code is slow on this host) on 2 and 4
vCPUs - more vCPUs than host cores - must report every workload ``ok`` and a
clean summary; a deliberately broken invariant must turn the verdict; a
silent guest must be stopped by the VMM with every vCPU's registers.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.conftest import ROOT, keel, requires_kvm

WORKLOADS = ("ipc", "storm", "caps", "map", "churn", "rpc", "revoke", "memory")


@requires_kvm
@pytest.mark.parametrize("smp", [2, 4])
def test_stress_passes(kernel: Path, initrd: Path, smp: int) -> None:
    proc = keel(
        "stress", "--smp", str(smp), "--duration", "3", "--seed", str(smp),
        "--kernel", str(kernel), "--initrd", str(initrd), timeout=240,
    )  # fmt: skip
    out = proc.stdout
    assert proc.returncode == 0, out[-3000:] + proc.stderr[-3000:]
    assert f"on {smp} cpus" in out
    assert re.search(r"^stress: progress \d+s ", out, re.MULTILINE), out
    for name in WORKLOADS:
        assert re.search(rf"^stress: {name} ok ", out, re.MULTILINE), out
    assert "FAILED" not in out and "watchdog" not in out
    assert re.search(r"^stress: summary 8 workloads, 0 failed$", out, re.MULTILINE), out
    assert out.rstrip().endswith("keel stress: passed")
    # Every message got through, in order: the counts balance.
    storm = re.search(r"stress: storm ok \d+ senders, (\d+) sent = (\d+) received", out)
    assert storm and storm.group(1) == storm.group(2)
    mapped = re.search(r"(\d+) increments = (\d+) in memory", out)
    assert mapped and mapped.group(1) == mapped.group(2)


@requires_kvm
def test_the_calls_reference_runs_only_when_named(kernel: Path, initrd: Path) -> None:
    # Not among the default workloads (test_stress_passes: 8 of them); named,
    # one thread per vCPU identifies its own capability over and over.
    proc = keel(
        "stress", "--smp", "2", "--duration", "1", "--workloads", "calls",
        "--kernel", str(kernel), "--initrd", str(initrd), timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    found = re.search(r"^stress: calls ok 2 threads \(\w+ table\), (\d+) identify calls",
                      proc.stdout, re.MULTILINE)  # fmt: skip
    assert found and int(found.group(1)) > 0, proc.stdout[-3000:]
    assert re.search(r"^stress: summary 2 workloads, 0 failed$", proc.stdout, re.MULTILINE)


@requires_kvm
def test_broken_invariant_fails_the_run(kernel: Path, initrd: Path) -> None:
    proc = keel(
        "run", str(kernel), "--smp", "2", "--initrd", str(initrd),
        "--cmdline", "keel.test=stress keel.duration=1 keel.stress=storm keel.inject=1",
        timeout=120,
    )  # fmt: skip
    assert proc.returncode != 0, proc.stdout[-3000:]
    assert "stress: storm FAILED" in proc.stdout
    assert "stress: summary 2 workloads, 1 failed" in proc.stdout


@requires_kvm
def test_hang_is_reported_with_every_vcpu(kernel: Path) -> None:
    from vmm.machine import STATUS_HANG, Machine

    # Without a test the kernel's monitor waits for input: silence.
    m = Machine(kernel, smp=2, console=lambda _d: None, hang_timeout=1.0)
    result = m.run()
    m.close()
    assert result.status == STATUS_HANG, result
    assert "no console output" in result.reason
    diag = result.diagnostic
    assert "vCPU 0" in diag and "vCPU 1" in diag and "rip=" in diag, diag
    assert "keel> " in diag  # the last console lines


def test_stress_rejects_bad_arguments() -> None:
    proc = keel("stress", "--duration", "0", timeout=30)
    assert proc.returncode == 1
    assert proc.stderr.startswith("keel: error: --duration") and "Traceback" not in proc.stderr


@requires_kvm
def test_lock_order_checked_in_a_debug_build(tmp_path: Path) -> None:
    """-DKEEL_DEBUG_LOCKS makes every lock operation (objects lock, mapping,
    endpoint/notification, vspace, thread and runqueue locks) check the order of
    sched.h and panic on a violation; the stress run and the suite must not trip it."""
    import subprocess

    build = tmp_path / "debug"
    subprocess.run(
        ["make", "-s", f"BUILD={build}", "KCC=gcc -DKEEL_DEBUG_LOCKS", "kernel", "initrd"],
        cwd=ROOT, check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    proc = keel(
        "stress", "--smp", "4", "--duration", "2", "--kernel", str(build / "kernel.elf"),
        "--initrd", str(build / "initrd.cpio"), timeout=240,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "lock order" not in proc.stdout + proc.stderr
    suite = keel(
        "run", str(build / "kernel.elf"), "--smp", "2", "--initrd", str(build / "initrd.cpio"),
        "--cmdline", "keel.test=suite", timeout=300,
    )  # fmt: skip
    assert suite.returncode == 0, suite.stdout[-3000:] + suite.stderr[-3000:]
    assert "lock order" not in suite.stdout + suite.stderr
    summary = re.search(r"^ktest: \d+ passed, 0 failed$", suite.stdout, re.MULTILINE)
    assert summary, suite.stdout[-3000:]
