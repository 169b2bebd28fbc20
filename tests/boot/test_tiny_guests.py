"""The VMM against tiny hand-assembled guests under real KVM.

These prove the VMM's own machinery (PVH entry state, port I/O dispatch, the
exit device, crash diagnostics, lifecycle) independently of Keel's kernel.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import keel, requires_kvm
from vmm.errors import StateError
from vmm.machine import STATUS_GUEST_CRASH, Machine, State

pytestmark = requires_kvm

Guest = Callable[..., Path]


def quiet() -> dict[str, object]:
    return {"console": lambda _d: None, "log": lambda _m: None}


def test_hello_guest_reports_success(tiny_guest: Guest) -> None:
    proc = keel("run", str(tiny_guest("HELLO")), "--smp", "1")
    assert proc.returncode == 0, proc.stderr
    assert "tiny: hello" in proc.stdout
    assert proc.stderr == ""


def test_machine_api_runs_and_keeps_the_console(tiny_guest: Guest) -> None:
    m = Machine(tiny_guest("HELLO"), smp=2, memory="64M", **quiet())  # type: ignore[arg-type]
    result = m.run()
    assert result.status == 0 and result.guest_code == 0x10
    assert "tiny: hello" in m.console.text()
    assert m.state is State.STOPPED


def test_guest_failure_code_becomes_exit_status(tiny_guest: Guest) -> None:
    proc = keel("run", str(tiny_guest("FAIL")), "--smp", "1")
    assert proc.returncode == 3  # QEMU's isa-debug-exit would give (0x11 << 1) | 1 = 35
    assert "guest reported failure" in proc.stderr


def test_unclaimed_ports_and_mmio_are_harmless(tiny_guest: Guest) -> None:
    proc = keel("run", str(tiny_guest("PROBE")), "--smp", "1")
    assert proc.returncode == 0, proc.stderr
    assert "tiny: probe ok" in proc.stdout
    assert "unclaimed port address 0x2f8" in proc.stderr
    assert "unclaimed mmio address 0xc0000000" in proc.stderr
    assert proc.stderr.count("0x2f8") == 1  # logged once


def test_triple_fault_gives_full_diagnostic(tiny_guest: Guest) -> None:
    proc = keel("run", str(tiny_guest("TRIPLE")), "--smp", "2")
    assert proc.returncode == STATUS_GUEST_CRASH
    err = proc.stderr
    assert "KVM_EXIT_SHUTDOWN" in err
    assert "vCPU 0 (" in err and "vCPU 1 (" in err  # every vCPU, even one never started
    assert "rip=" in err and "cr0=" in err and "r15=" in err
    assert "last console lines" in err and "| tiny: hello" in err
    assert "Traceback" not in err


def test_stop_pause_resume_a_running_guest(tiny_guest: Guest) -> None:
    m = Machine(tiny_guest("HANG"), smp=3, memory="64M", **quiet())  # type: ignore[arg-type]
    with pytest.raises(StateError):
        m.pause()
    m.start()
    assert m.console.wait_for("tiny: hello", timeout=30)
    with pytest.raises(StateError):
        m.start()
    with pytest.raises(StateError):
        m.resume()
    m.pause()
    assert m.state is State.PAUSED
    m.resume()
    assert m.state is State.RUNNING
    assert m.wait(timeout=0.2) is None  # still running
    m.stop()
    result = m.wait(timeout=30)
    assert result is not None and result.status == 0 and "stopped" in result.reason
    assert m.state is State.STOPPED
    with pytest.raises(StateError):
        m.pause()


def test_more_vcpus_than_host_cores(tiny_guest: Guest) -> None:
    m = Machine(tiny_guest("HELLO"), smp=8, memory="64M", **quiet())  # type: ignore[arg-type]
    assert m.run().status == 0
