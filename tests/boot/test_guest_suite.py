"""The in-guest test suite (userspace/init) under Keel's VMM and under QEMU.

init runs every kernel call with good and bad arguments and reports one line
per test on the serial console, then ``ktest: N passed, M failed``, then
powers off through the exit device.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import ROOT, have_kvm, keel, requires_kvm

INITRD = ROOT / "build" / "initrd.cpio"
MIN_TESTS = 100


@pytest.fixture(scope="module")
def initrd() -> Path:
    if not INITRD.exists():
        pytest.fail(f"{INITRD} is missing: run 'make'")
    return INITRD


def check_suite(console: str) -> int:
    """Asserts the suite ran completely and cleanly; returns the test count."""
    failures = [line for line in console.splitlines() if line.startswith("ktest: FAIL")]
    assert not failures, "\n".join(failures)
    m = re.search(r"^ktest: (\d+) passed, (\d+) failed$", console, re.MULTILINE)
    assert m, console[-3000:]
    passed, failed = int(m.group(1)), int(m.group(2))
    assert failed == 0
    assert passed >= MIN_TESTS
    oks = re.findall(r"^ktest: ok (\S+)$", console, re.MULTILINE)
    assert len(oks) == passed and len(set(oks)) == passed
    return passed


@requires_kvm
@pytest.mark.parametrize("smp", [1, 2])
def test_suite_under_keel(kernel: Path, initrd: Path, smp: int) -> None:
    proc = keel(
        "run", str(kernel), "--smp", str(smp), "--initrd", str(initrd),
        "--cmdline", "keel.test=suite", timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    check_suite(proc.stdout)


@requires_kvm
def test_suite_with_more_vcpus_than_cores(kernel: Path, initrd: Path) -> None:
    proc = keel(
        "run", str(kernel), "--smp", "4", "--initrd", str(initrd),
        "--cmdline", "keel.test=suite", timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    check_suite(proc.stdout)


@pytest.mark.skipif(
    shutil.which("qemu-system-x86_64") is None or not have_kvm(), reason="needs QEMU and KVM"
)
def test_suite_under_qemu_microvm(kernel: Path, initrd: Path) -> None:
    from tests.boot.test_qemu_crossboot import QEMU_CPU, QEMU_PASS

    proc = subprocess.run(
        ["qemu-system-x86_64", "-M", "microvm", "-enable-kvm", "-cpu", QEMU_CPU, "-smp", "2",
         "-m", "256M", "-nographic", "-no-reboot", "-nodefaults", "-serial", "stdio",
         "-kernel", str(kernel), "-initrd", str(initrd), "-append", "keel.test=suite",
         "-device", "isa-debug-exit,iobase=0xf4,iosize=4"],
        capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert proc.returncode == QEMU_PASS, proc.stdout[-3000:] + proc.stderr[-2000:]
    check_suite(proc.stdout)


@requires_kvm
def test_root_task_reports_its_resources(kernel: Path, initrd: Path) -> None:
    from vmm.machine import Machine

    m = Machine(kernel, smp=2, initrd=initrd, console=lambda _d: None)
    m.start()
    try:
        assert m.console.wait_for("keel shell: type help", timeout=60), m.console.text()
        text = m.console.text()
        found = re.search(r"keel: root task: (\d+) untyped capabilities, (\d+) MiB", text)
        assert found, text
        assert int(found.group(1)) > 0 and 200 <= int(found.group(2)) <= 256
        assert "init: running on 2 cpus" in text
    finally:
        m.stop()
        m.close()
