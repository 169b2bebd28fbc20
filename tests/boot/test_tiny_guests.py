"""The VMM against tiny hand-assembled guests under real KVM.

These prove the VMM's own machinery (PVH entry state, port I/O dispatch, the
exit device, crash diagnostics, lifecycle) independently of Keel's kernel.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import keel, requires_kvm
from vmm.boot import cpu_features
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


def test_elf32_pvh_guest_boots(tiny_guest: Guest) -> None:
    """QEMU's PVH loader takes ELF32 kernels; so does keel run."""
    proc = keel("run", str(tiny_guest("HELLO", elf32=True)), "--smp", "1")
    assert proc.returncode == 0, proc.stderr
    assert "tiny: hello" in proc.stdout


def test_show_cpuid_hides_what_the_host_cannot_run() -> None:
    proc = keel("run", "--show-cpuid", "--smp", "2", "--cpu-features", "-rdrand,-nx")
    assert proc.returncode == 0, proc.stderr
    features = next(x for x in proc.stdout.splitlines() if x.startswith("features: ")).split()
    assert "lm" in features and "nx" not in features and "rdrand" not in features
    assert "removed: nx: --cpu-features" in proc.stdout
    if cpu_features.host_kind() == "kvm_pvm":
        assert "cx16" not in features and "xsave" not in features
        assert "removed: cx16: host (kvm_pvm)" in proc.stdout


def test_guest_sees_the_cpu_features_flag(tiny_guest: Guest) -> None:
    """CPUID.1 as the guest reads it, with and without -x2apic (a bit every
    host KVM with an in-kernel LAPIC offers)."""
    plain = keel("run", str(tiny_guest("CPUID")), "--smp", "1")
    assert plain.returncode == 0, plain.stderr
    assert "tiny: cpuid1 ecx x2apic=1" in plain.stdout
    assert "tiny: cpuid1 ecx cx16=0" in plain.stdout or cpu_features.host_kind() != "kvm_pvm"
    less = keel("run", str(tiny_guest("CPUID")), "--smp", "1", "--cpu-features", "-x2apic")
    assert less.returncode == 0, less.stderr
    assert "tiny: cpuid1 ecx x2apic=0" in less.stdout


def test_bad_cpu_features_flag_is_one_line(tiny_guest: Guest) -> None:
    proc = keel("run", str(tiny_guest("HELLO")), "--cpu-features", "-nosuch")
    assert proc.returncode == 1
    assert proc.stderr.startswith("keel: error: --cpu-features: unknown CPU feature 'nosuch'")
    assert proc.stderr.count("\n") == 1


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
