"""User code that jumps to the kernel's syscall entry point (keel.test=entry,
userspace/tests/entrytests.c).

The jump faults on the kernel page at syscall_entry, which is how kvm_pvm
delivers every real syscall, so the kernel serves it as a system call whose
return address (RCX) and RFLAGS (R11) the user chose.  The guest checks that
it comes back with safe RFLAGS (no IOPL, interrupts on) and that a return
address outside user space is a page fault for the thread, not an iret to
it (which faults in the kernel).  The guest needs the entry's address,
read here from build/kernel.elf's symbols.  Under Keel's VMM (kvm_pvm here)
and under QEMU's TCG, where syscall itself works and only the jump takes
this way.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from tests.conftest import keel, requires_kvm, requires_qemu, run_guest

QEMU_PASS = 33  # isa-debug-exit: (0x10 << 1) | 1
PASSED = "ktest: 2 passed, 0 failed"


def entry_cmdline(kernel: Path) -> str:
    out = subprocess.run(["nm", "--defined-only", str(kernel)], capture_output=True,
                         text=True, check=True).stdout  # fmt: skip
    addr = [line.split()[0] for line in out.splitlines() if line.endswith(" syscall_entry")]
    assert len(addr) == 1, "build/kernel.elf: no syscall_entry symbol"
    return f"keel.test=entry keel.syscall_entry=0x{addr[0]}"


@requires_kvm
def test_jumps_to_the_syscall_entry_under_keel(kernel: Path, initrd: Path) -> None:
    proc = keel("run", str(kernel), "--initrd", str(initrd), "--cmdline", entry_cmdline(kernel),
                timeout=120)  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert PASSED in proc.stdout


@requires_qemu
def test_jumps_to_the_syscall_entry_under_qemu_tcg(kernel: Path, initrd: Path) -> None:
    qemu = shutil.which("qemu-system-x86_64")
    assert qemu is not None
    proc = run_guest(
        [qemu, "-M", "microvm", "-accel", "tcg", "-cpu", "max", "-m", "256M", "-nographic",
         "-no-reboot", "-nodefaults", "-serial", "stdio", "-kernel", str(kernel),
         "-initrd", str(initrd), "-append", entry_cmdline(kernel),
         "-device", "isa-debug-exit,iobase=0xf4,iosize=4"],
        timeout=120,
    )  # fmt: skip
    assert proc.returncode == QEMU_PASS, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert PASSED in proc.stdout
