"""The timer's rate follows the run queue (kernel/core/sched.c: sched_tick_rate).

A CPU whose queue is empty - it runs one thread, or none - needs no tick to
share itself out, so its timer fires SCHED_SLOW_TICKS (5) times less often;
a thread queued there brings the normal rate back.  ``keel.tickstats=1``
makes the kernel print, at power-off, each CPU's timer interrupts and the
periods (10 ms each) they stood for.  The checks are ratios of two counts
taken over the same run, not times: at the slow rate 0.2, at the normal one
1.0, with the boot and set-up (at the slow rate, nothing queued) in both.
"""

from __future__ import annotations

import re
from pathlib import Path

from tests.conftest import keel, requires_kvm


def _timer_counts(kernel: Path, initrd: Path, smp: int, stress: str) -> list[tuple[int, int]]:
    proc = keel(
        "run", str(kernel), "--smp", str(smp), "--initrd", str(initrd), "--cmdline",
        f"keel.test=stress keel.duration=3 {stress} keel.tickstats=1", timeout=180,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    counts = re.findall(r"^keel: cpu (\d+) timer: (\d+) interrupts in (\d+) periods$",
                        proc.stdout, re.MULTILINE)  # fmt: skip
    assert [int(c) for c, _, _ in counts] == list(range(smp)), proc.stdout[-3000:]
    return [(int(irqs), int(periods)) for _, irqs, periods in counts]


@requires_kvm
def test_a_cpu_running_one_thread_ticks_slowly(kernel: Path, initrd: Path) -> None:
    # One storm thread per CPU (keel.pin=local): every queue is empty but
    # for the moments the main thread is woken (once a second, on CPU 0).
    for irqs, periods in _timer_counts(kernel, initrd, 2, "keel.stress=caps keel.pin=local"):
        assert periods >= 250, (irqs, periods)  # 3 s of the workload at least
        assert irqs <= periods // 2, (irqs, periods)  # one in five, and the wake-ups


@requires_kvm
def test_threads_sharing_a_cpu_tick_at_the_normal_rate(kernel: Path, initrd: Path) -> None:
    # Two storm threads on one CPU: the queue holds one of them almost all
    # the time, and the rate comes back when they are started after the
    # set-up, which ran alone.
    [(irqs, periods)] = _timer_counts(kernel, initrd, 1, "keel.stress=caps keel.pin=local")
    assert periods >= 250, (irqs, periods)
    # one per period while the two share it; a set-up that took as long as
    # the workload at the slow rate would still leave 0.6
    assert irqs >= periods // 2, (irqs, periods)
