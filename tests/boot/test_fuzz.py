"""``keel fuzz``: the in-guest kernel-call fuzzer (userspace/tests/fuzz.c).

A short run on 2 vCPUs: ordinary processes issue random calls generated
from kernel/calls.tbl beside a message workload and a canary; the kernel
neither panics nor hangs, the canary is untouched, the workload's messages
arrive in order and every process's memory is whole again afterwards.  A
failure is reported with its seed (an injected one here), the shrinking is
checked on its own, and every failure found so far stays a test in
REGRESSIONS.  The long runs are in docs/reliability.md.
"""

from __future__ import annotations

import re
import signal
import subprocess
from pathlib import Path

import pytest

from tests.conftest import KEEL, ROOT, keel, requires_kvm
from vmm.fuzz import Outcome, shrink

# (seed, calls, smp, procs) of every failure keel fuzz found: each must pass now.
REGRESSIONS: list[tuple[int, int, int, int | None]] = []


@requires_kvm
def test_short_fuzz_run(kernel: Path) -> None:
    proc = keel("fuzz", "--seed", "1", "--calls", "1500", "--smp", "2",
                "--hang-timeout", "90", timeout=600)  # fmt: skip
    failed = [ln for ln in proc.stdout.splitlines() if "FAILED" in ln or "FAIL " in ln]
    assert proc.returncode == 0, "\n".join(failed[:5]) + proc.stdout[-2000:] + proc.stderr[-2000:]
    m = re.search(r"fuzz: ok (\d+) calls .* canary untouched; memory whole", proc.stdout)
    assert m and int(m.group(1)) == 1500, proc.stdout[-3000:]


@requires_kvm
@pytest.mark.parametrize(("seed", "calls", "smp", "procs"), REGRESSIONS)
def test_fuzz_regressions(kernel: Path, seed: int, calls: int, smp: int, procs: int | None
                          ) -> None:  # fmt: skip
    args = ["fuzz", "--seed", str(seed), "--calls", str(calls), "--smp", str(smp), "--no-shrink"]
    proc = keel(*args, *(["--procs", str(procs)] if procs else []), timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:]


@requires_kvm
def test_a_failure_names_its_seed(kernel: Path) -> None:
    proc = keel("fuzz", "--seed", "5", "--calls", "300", "--smp", "1", "--procs", "1",
                "--fail-at", "100", "--no-shrink", timeout=600)  # fmt: skip
    assert proc.returncode == 3, proc.stdout[-3000:]  # the guest reported failure
    assert "keel fuzz: FAILED with seed 5: ktest: FAIL fuzz: injected failure" in proc.stdout
    assert "Traceback" not in proc.stderr


@requires_kvm
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_stop_signal_ends_the_run_without_a_failure(kernel: Path, sig: int) -> None:
    """Ctrl-C (or SIGTERM) while the guest fuzzes: status 130, no failure reported and
    nothing shrunk (Ctrl-C was 'FAILED ... (status 130)' and more runs; SIGTERM killed it)."""
    proc = subprocess.Popen([*KEEL, "fuzz", "--calls", "1000000", "--smp", "1"], cwd=ROOT,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert proc.stderr is not None
        # The guest's test program is running once it turned the IOMMU on.
        for line in proc.stderr:
            if "iommu: enabled by the guest" in line:
                break
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 130, out[-3000:] + err
    assert "FAILED" not in out and "Traceback" not in err, out[-3000:] + err
    assert err.strip().splitlines()[-1] == "keel: interrupted", err


def test_shrinking_finds_the_shortest_failing_run() -> None:
    """Bisection over the call count, one process first if that still fails."""
    runs: list[tuple[int, int | None]] = []

    def attempt(calls: int, procs: int | None) -> Outcome:
        runs.append((calls, procs))
        return Outcome(calls < 137, "", b"")

    assert shrink(attempt, 1000, None, lambda _s: None) == (137, 1)
    assert runs[0] == (1000, 1) and len(runs) <= 12

    def needs_two(calls: int, procs: int | None) -> Outcome:
        return Outcome(procs == 1 or calls < 40, "", b"")

    assert shrink(needs_two, 100, 2, lambda _s: None) == (40, 2)


def test_bad_arguments_are_one_line_errors() -> None:
    for args, needle in ((["--calls", "0"], "--calls"), (["--seed", "-1"], "--seed"),
                         (["--procs", "9"], "--procs")):  # fmt: skip
        proc = keel("fuzz", *args)
        assert proc.returncode == 1 and proc.stderr.startswith(f"keel: error: {needle}")
        assert "Traceback" not in proc.stderr
