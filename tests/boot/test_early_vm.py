"""vmm.early under real KVM: the VM begun during the imports is used when it fits,
closed when it does not, and leaves no file descriptor or thread behind."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from tests.conftest import keel, requires_kvm
from vmm import builder, early
from vmm.machine import Machine
from vmm.platform import MiB

pytestmark = requires_kvm


def _fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


def _tasks() -> int:
    return len(os.listdir("/proc/self/task"))


def _settle(tasks: int) -> int:
    """The thread count once threads that are ending have ended (they end at once)."""
    for _ in range(200):
        if _tasks() <= tasks:
            break
        os.sched_yield()
    return _tasks()


def test_taken_when_the_memory_fits() -> None:
    fds, tasks = _fds(), _tasks()
    early.begin(["keel", "run", "--memory", "64M"])
    begun = early.take(64 * MiB)
    assert begun is not None and begun.ok
    assert begun.mem is not None and begun.mem.size == 64 * MiB
    assert early.take(64 * MiB) is None  # once
    begun.close()
    assert _fds() == fds
    assert _settle(tasks) == tasks


def test_closed_when_the_memory_differs() -> None:
    fds, tasks = _fds(), _tasks()
    early.begin(["keel", "run", "--memory", "64M"])
    assert early.take(128 * MiB) is None
    assert _fds() == fds
    assert _settle(tasks) == tasks


def test_keel_run_boots_on_the_begun_vm(kernel: Path) -> None:
    """`python -m vmm.cli run` begins the VM (tests/conftest.py's keel), of the size asked."""
    for memory in ("128M", "256M"):
        proc = keel("run", str(kernel), "--memory", memory, "--smp", "2",
                    "--cmdline", "keel.test=boot")  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        assert "smp ready 2 cpus" in proc.stdout
        expect = "memory 127 MiB usable" if memory == "128M" else "memory 255 MiB usable"
        assert expect in proc.stdout


def test_pit_reinjection_off_once_vcpu0_has_run(
    kernel: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Turning the PIT's reinjection off waits for grace periods; right after the PIT
    is made they were long and vCPU 0's first KVM_RUN waited for them, so the machine
    does it once vCPU 0 has first left the guest, in a thread of its own, before the
    VM is closed."""
    calls: list[tuple[int, bool]] = []
    machine: list[Machine] = []

    def record(vm: object) -> None:
        slot = machine[0].vcpu_slots()[0]
        calls.append((threading.get_native_id(), slot.stats.guest_ns > 0))

    monkeypatch.setattr(builder, "pit_reinject_off", record)
    m = Machine(kernel, smp=2, cmdline="keel.test=boot", console=lambda _d: None)
    machine.append(m)
    try:
        m.start()
        result = m.wait(timeout=60)
        assert result is not None and result.status == 0, m.console.text()
    finally:
        m.close()
    vcpu_tids = {slot.tid for slot in m.vcpu_slots()}
    assert len(calls) == 1
    tid, vcpu0_ran = calls[0]
    assert vcpu0_ran and tid not in vcpu_tids
