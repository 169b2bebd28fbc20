"""The in-guest test suite (userspace/tests) under Keel's VMM and under QEMU.

The test program init starts for keel.test=suite runs every kernel call
with good and bad arguments and reports one line per test on the serial
console, then ``ktest: N passed, M failed``, then powers off through the
exit device.  When the machine has the devices it
also runs the driver tests: the UART's with a COM2, the services tests
(userspace/tests/svctests.c) with a virtio-blk and a virtio-rng, and says
which it did not run and why.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from tests.conftest import ROOT, have_kvm, keel, requires_kvm, run_guest

TESTS_DIR = ROOT / "userspace" / "tests"


def kernel_test_names() -> list[str]:
    """The kernel tests' names, read from the sources: the tables suite.c's
    kernel_tests lists, each found in the file of userspace/tests defining it."""
    suite = (TESTS_DIR / "suite.c").read_text()
    listed = re.search(r"kernel_tests\[\] = \{(.*?)^\};", suite, re.MULTILINE | re.DOTALL)
    assert listed, "suite.c: kernel_tests not found"
    tables = re.findall(r"\{ (\w+_tests), &\1_count \}", listed.group(1))
    assert tables, "suite.c: kernel_tests lists no table"
    sources = {p: p.read_text() for p in sorted(TESTS_DIR.glob("*.c"))}
    names = []
    for table in tables:
        found = [re.search(rf"^const struct test {table}\[\] = \{{(.*?)^\}};", text,
                           re.MULTILINE | re.DOTALL) for text in sources.values()]  # fmt: skip
        bodies = [m.group(1) for m in found if m]
        assert len(bodies) == 1, f"{table}: defined {len(bodies)} times in userspace/tests"
        # entries written T(name) or { "name", fn }
        names += [a or b for a, b in re.findall(r'\bT\((\w+)\)|\{\s*"(\w+)",', bodies[0])
                  if (a or b) != "name"]  # fmt: skip
    return names


SERVICE_TESTS = 9  # svctests.c, besides the console test


NET_NOT_RUN = "ktest: no virtio-net: 1 net test not run"


def check_suite(console: str) -> int:
    """Asserts the suite ran completely and cleanly; returns the test count."""
    # Consoles joined across a snapshot may hold a "\r\n" split between them.
    console = console.replace("\r\n", "\n")
    failures = [line for line in console.splitlines() if line.startswith("ktest: FAIL")]
    assert not failures, "\n".join(failures)
    m = re.search(r"^ktest: (\d+) passed, (\d+) failed$", console, re.MULTILINE)
    assert m, console[-3000:]
    passed, failed = int(m.group(1)), int(m.group(2))
    assert failed == 0
    # Exactly the tests the guest planned from its own tables (kernel tests
    # and the device tests this machine has devices for) passed: a test that
    # silently stops running is noticed.
    plan = re.search(r"^ktest: (\d+) tests planned$", console, re.MULTILINE)
    assert plan, console[-3000:]
    assert passed == int(plan.group(1)), console[-3000:]
    # The kernel tests are those of the tables in the sources, every one.
    kernel = re.search(r"^ktest: running (\d+) tests$", console, re.MULTILINE)
    names = kernel_test_names()
    assert kernel and int(kernel.group(1)) == len(names), (kernel, len(names))
    oks = re.findall(r"^ktest: ok (\S+)$", console, re.MULTILINE)
    assert len(oks) == passed and len(set(oks)) == passed
    assert set(names) <= set(oks), sorted(set(names) - set(oks))
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
    assert "ktest: no 16550 at COM2: 2 driver tests not run" in proc.stdout
    assert f"ktest: no virtio-blk: {SERVICE_TESTS + 1} services tests not run" in proc.stdout
    assert "ktest: no virtio-net: 1 net test not run" in proc.stdout


UART_TESTS = ("uart_driver_interrupts", "uart_driver_stray_port")
SERVICE_NAMES = ("names", "blk_info", "blk_write_flush_read", "interrupts_delivered", "rng_read",
                 "kill_restart_during_writes", "blk_in_flight", "driver_fault_restarts",
                 "kill_unknown", "console_kill_restart")  # fmt: skip


@requires_kvm
def test_suite_runs_the_device_tests_with_the_devices(kernel: Path, initrd: Path,
                                                      tmp_path: Path) -> None:  # fmt: skip
    """With a disk, an entropy device and a COM2 the suite runs every driver
    test: the UART driver's own, then the services tests through the device
    manager (block write, flush and read-back, entropy, interrupts, drivers
    killed while a client writes, a faulting driver replaced) and the UART
    driver the manager registers as ``console``, killed and restarted.  The
    host checks the disk image and what reached COM2."""
    from tests.boot.test_services import _check_image, _image

    image = _image(tmp_path / "disk.img")
    com2 = tmp_path / "com2.log"
    proc = keel(
        "run", str(kernel), "--smp", "2", "--initrd", str(initrd), "--disk", str(image),
        "--rng", "--serial2", str(com2), "--cmdline", "keel.test=suite", timeout=600,
    )  # fmt: skip
    out = proc.stdout
    assert proc.returncode == 0, out[-3000:] + proc.stderr[-3000:]
    check_suite(out)
    for name in UART_TESTS + SERVICE_NAMES:
        assert f"ktest: ok {name}" in out, name
    # every device test ran but the net test (tests/boot/test_io_drivers.py
    # runs the suite with a virtio-net in a network namespace)
    assert [ln for ln in out.splitlines() if "not run" in ln] == [NET_NOT_RUN]
    assert "devmgr: console: uart started (ports 0x2f8-0x2ff, irq 3)" in out
    assert out.count("devmgr: console: uart started") == 2  # killed once, restarted
    assert out.count("devmgr: blk0: killing its driver") == 3
    _check_image(image)
    text = com2.read_bytes()
    assert b"svc: console: a line before the kill\r\n" in text, text
    assert b"svc: console: a line after the kill\r\n" in text, text


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

    proc = run_guest(
        ["qemu-system-x86_64", "-M", "microvm", "-enable-kvm", "-cpu", QEMU_CPU, "-smp", "2",
         "-m", "256M", "-nographic", "-no-reboot", "-nodefaults", "-serial", "stdio",
         "-kernel", str(kernel), "-initrd", str(initrd), "-append", "keel.test=suite",
         "-device", "isa-debug-exit,iobase=0xf4,iosize=4"],
        timeout=300,
    )  # fmt: skip
    assert proc.returncode == QEMU_PASS, proc.stdout[-3000:] + proc.stderr[-2000:]
    check_suite(proc.stdout)


@pytest.mark.skipif(
    shutil.which("qemu-system-x86_64") is None or not have_kvm(), reason="needs QEMU and KVM"
)
def test_suite_runs_the_device_tests_under_qemu_microvm(kernel: Path, initrd: Path,
                                                        tmp_path: Path) -> None:  # fmt: skip
    """The same suite, device tests included, against QEMU's own
    virtio-blk-device, virtio-rng-device and 16550 at 0x2f8."""
    from tests.boot.test_qemu_crossboot import QEMU_CPU
    from tests.boot.test_services import QEMU_TRANSPORTS

    _qemu_device_suite(
        kernel, initrd, tmp_path,
        ["-M", "microvm,ioapic2=off", "-cpu", QEMU_CPU, "-enable-kvm", "-smp", "2", "-m", "256M",
         "-global", "virtio-mmio.force-legacy=false", "-nographic", "-nodefaults",
         "-serial", "stdio"],
        f"keel.test=suite {QEMU_TRANSPORTS}",
    )  # fmt: skip


@pytest.mark.skipif(
    shutil.which("qemu-system-x86_64") is None or not have_kvm(), reason="needs QEMU and KVM"
)
@pytest.mark.parametrize("accel", [[], ["-smp", "2"], ["-enable-kvm", "-smp", "2"]],
                         ids=["tcg", "tcg-smp2", "kvm-smp2"])  # fmt: skip
def test_suite_under_qemu_microvm_defaults(kernel: Path, initrd: Path, tmp_path: Path,
                                           accel: list[str]) -> None:  # fmt: skip
    """QEMU microvm as it comes: QEMU's default devices (no -nodefaults; the
    first serial port is named as -nographic names it, since a 16550 added
    with -device takes the default one's place), its default CPU model, legacy
    (version 1) virtio-mmio, the transports announced only in its DSDT and
    wired to its second IOAPIC (GSI 24 and up), and no command line but
    keel.test=suite.  The devices are QEMU's own, added as a user adds them;
    the kernel finds them in the DSDT and the drivers speak the legacy
    transport.  Under QEMU's default accelerator (TCG: nothing but the
    machine, -kernel, -initrd and -append, 1 vCPU, 128 MiB; then 2 vCPUs) and
    under KVM with 2 vCPUs."""
    out = _qemu_device_suite(kernel, initrd, tmp_path,
                             ["-M", "microvm", *accel, "-nographic", "-serial", "mon:stdio"],
                             "keel.test=suite")  # fmt: skip
    assert 'keel: booting (cmdline "keel.test=suite", 0 virtio-mmio device slots)' in out
    started = re.findall(r"devmgr: (blk0|rng0): virtio_\w+ started \(device at (0x\w+), "
                         r"irq (\d+)\)", out)  # fmt: skip
    assert started and all(int(irq) >= 24 for _, _, irq in started), started


def _qemu_device_suite(kernel: Path, initrd: Path, tmp_path: Path, machine: list[str],
                       cmdline: str) -> str:  # fmt: skip
    """The suite under QEMU (machine: its options but the kernel's and the
    devices', with the first serial port on stdout) with QEMU's own
    virtio-blk, virtio-rng and a 16550 at COM2; every device test but the
    net one must run and pass.  What the guest printed."""
    from tests.boot.test_qemu_crossboot import QEMU_PASS
    from tests.boot.test_services import _check_image, _image

    image = _image(tmp_path / "disk.img")
    com2 = tmp_path / "com2.log"
    proc = run_guest(
        ["qemu-system-x86_64", *machine, "-no-reboot",
         "-kernel", str(kernel), "-initrd", str(initrd), "-append", cmdline,
         "-device", "isa-debug-exit,iobase=0xf4,iosize=4",
         "-drive", f"file={image},if=none,id=d0,format=raw",
         "-device", "virtio-blk-device,drive=d0", "-device", "virtio-rng-device",
         "-chardev", f"file,id=com2,path={com2}",
         "-device", "isa-serial,chardev=com2,iobase=0x2f8,irq=3"],
        timeout=600,
    )  # fmt: skip
    out = proc.stdout.replace("\r\n", "\n")
    assert proc.returncode == QEMU_PASS, out[-3000:] + proc.stderr[-2000:]
    check_suite(out)
    for name in UART_TESTS + SERVICE_NAMES:
        assert f"ktest: ok {name}" in out, name
    # every device test ran but the net test (tests/boot/test_io_drivers.py
    # runs the suite with a virtio-net in a network namespace)
    assert [ln for ln in out.splitlines() if "not run" in ln] == [NET_NOT_RUN]
    _check_image(image)
    text = com2.read_bytes()
    assert b"svc: console: a line before the kill" in text, text
    assert b"svc: console: a line after the kill" in text, text
    return out


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
