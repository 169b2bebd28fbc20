"""The same build/kernel.elf under QEMU: proves the boot path is the standard one."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import have_kvm, requires_qemu, run_guest

pytestmark = [requires_qemu, pytest.mark.skipif(not have_kvm(), reason="needs /dev/kvm")]

QEMU_PASS = 33  # isa-debug-exit: (0x10 << 1) | 1
# Nested KVM cannot set IA32_ARCH_CAPABILITIES, which QEMU asserts on with -cpu host.
QEMU_CPU = "host,-arch-capabilities"


def qemu(
    kernel: Path, machine: str, smp: int, test: str = "boot"
) -> subprocess.CompletedProcess[str]:
    cmd = [
        shutil.which("qemu-system-x86_64") or "qemu-system-x86_64",
        "-enable-kvm", "-cpu", QEMU_CPU, "-M", machine, "-m", "256M", "-smp", str(smp),
        "-nographic", "-no-reboot", "-nodefaults", "-serial", "stdio",
        "-kernel", str(kernel), "-append", f"keel.test={test}",
        "-device", "isa-debug-exit,iobase=0xf4,iosize=4",
    ]  # fmt: skip
    return run_guest(cmd, timeout=120)


@pytest.mark.parametrize("machine", ["microvm", "q35"])
@pytest.mark.parametrize("smp", [1, 2, 4])
def test_qemu_boots_keel(kernel: Path, machine: str, smp: int) -> None:
    proc = qemu(kernel, machine, smp)
    out = proc.stdout
    assert proc.returncode == QEMU_PASS, out + proc.stderr
    online = sorted(int(m) for m in re.findall(r"keel: cpu (\d+) online", out))
    assert online == list(range(smp)), out
    assert f"keel: smp ready {smp} cpus" in out


def test_qemu_timer(kernel: Path) -> None:
    proc = qemu(kernel, "q35", 2, "timer")
    assert proc.returncode == QEMU_PASS, proc.stdout
    assert "keel: timer ok 2 cpus" in proc.stdout
