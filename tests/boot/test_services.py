"""Drivers as services: the device manager, the name service, the block and
entropy drivers serving userspace/lib/driver.h, killed and restarted while a
client writes, and devices attached and detached while the guest runs.

The guest side is ``keel.test=services`` (userspace/tests/svctests.c); it
reports one ``ktest: ok`` line per test.  The host checks what only it can:
that every write the guest was told was done is in the disk image file.
"""

from __future__ import annotations

import re
import shutil
import struct
from pathlib import Path

import pytest

from tests.conftest import ROOT, have_kvm, keel, requires_kvm, run_guest
from vmm.machine import Machine

INITRD = ROOT / "build" / "initrd.cpio"
SERVICE_TESTS = 9
STREAM_SECTORS = 240  # svctests.c: each of WRITERS clients
WRITERS = 3
IN_FLIGHT_CLIENTS, IN_FLIGHT_WRITES, IN_FLIGHT_FIRST = 4, 48, 4096
STREAM_MAGIC = 0x6B65656C73766321
SECTOR = 512


def _image(path: Path, blocks: int = 1024, first: bytes = b"") -> Path:
    with open(path, "wb") as f:
        f.write(first.ljust(4096, b"\x00"))
        f.write(bytes(4096 * (blocks - 1)))
    return path


def _check_suite(console: str, count: int) -> None:
    # Consoles joined across a snapshot may hold a "\r\n" split between them.
    console = console.replace("\r\n", "\n")
    failures = [line for line in console.splitlines() if line.startswith("ktest: FAIL")]
    assert not failures, "\n".join(failures) + console[-3000:]
    assert f"ktest: {count} passed, 0 failed" in console, console[-3000:]
    oks = re.findall(r"^ktest: ok (\S+)$", console, re.MULTILINE)
    assert len(set(oks)) == count, f"{sorted(set(oks))}\n{console[-3000:]}"


def _check_image(path: Path) -> None:
    """Every sector the streams (and the clients with requests in flight)
    wrote holds what was written; so does the block the write/flush/read
    test wrote."""
    data = path.read_bytes()
    sectors = [w * 1024 + i for w in range(WRITERS) for i in range(STREAM_SECTORS)]
    sectors += [IN_FLIGHT_FIRST + 256 * c + i
                for c in range(IN_FLIGHT_CLIENTS) for i in range(IN_FLIGHT_WRITES)]  # fmt: skip
    for s in sectors:
        words = struct.unpack_from("<64Q", data, s * SECTOR)
        want = tuple(STREAM_MAGIC ^ (s << 16) ^ i for i in range(64))
        assert words == want, f"sector {s} lost its acknowledged write"
    block = data[512 * SECTOR : 512 * SECTOR + 4096]
    assert block == bytes((i * 7 + 3) & 0xFF for i in range(4096))


@requires_kvm
@pytest.mark.parametrize("smp", [1, 2])
def test_services_under_keel(kernel: Path, tmp_path: Path, smp: int) -> None:
    image = _image(tmp_path / "disk.img")
    proc = keel(
        "run", str(kernel), "--smp", str(smp), "--initrd", str(INITRD), "--disk", str(image),
        "--rng", "--cmdline", "keel.test=services", timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    out = proc.stdout
    _check_suite(out, SERVICE_TESTS)
    assert "devmgr: blk0: virtio_blk started" in out
    assert "devmgr: rng0: virtio_rng started" in out
    assert out.count("devmgr: blk0: killing its driver") == 3
    assert "devmgr: rng0: its driver faulted (vector 14 at 0x0); restarting it" in out
    _check_image(image)


def _console_text(m: Machine) -> str:
    return m.console.text().replace("\r", "")


def _wait_for(m: Machine, needle: str, count: int = 1, timeout: float = 120) -> None:
    assert m.console.wait_for(needle, timeout, count), f"{m.result}\n{_console_text(m)[-3000:]}"


@requires_kvm
def test_hotplug_starts_and_stops_drivers(kernel: Path, tmp_path: Path) -> None:
    m = Machine(kernel, smp=2, memory="256M", initrd=INITRD, console=lambda _d: None,
                cmdline="keel.test=services keel.svc=hotplug")  # fmt: skip
    m.attach_disk(_image(tmp_path / "disk.img"))
    m.attach_rng()
    m.start()
    try:
        _wait_for(m, "svc: hotplug: attach now", timeout=300)
        hot = m.attach_disk(_image(tmp_path / "hot.img", first=b"HOTPLUGGED-DISK!"))
        _wait_for(m, "svc: hotplug: detach now")
        m.detach(hot)
        result = m.wait(timeout=300)
        assert result is not None and result.status == 0, _console_text(m)[-3000:]
    finally:
        m.close()
    out = _console_text(m)
    _check_suite(out, SERVICE_TESTS + 1)
    assert "devmgr: blk1: virtio_blk started (device at 0xd0002000, irq 18)" in out
    assert "svc: hotplug: blk1 sector 0: HOTPLUGGED-DISK!" in out
    assert "devmgr: blk1: device removed, driver stopped" in out
    assert "svc: hotplug: blk1 gone" in out


# QEMU microvm's eight virtio-mmio transports, announced as Keel expects
# them (QEMU itself describes them in ACPI only); devices fill them from the
# last one down.
QEMU_TRANSPORTS = " ".join(f"virtio_mmio.device=512@{0xFEB00000 + i * 512:#x}:{16 + i}"
                           for i in range(8))  # fmt: skip


@pytest.mark.skipif(
    shutil.which("qemu-system-x86_64") is None or not have_kvm(), reason="needs QEMU and KVM"
)
def test_services_under_qemu_microvm(kernel: Path, tmp_path: Path) -> None:
    """The same services against QEMU's own virtio-blk-device and
    virtio-rng-device: write, flush, read back, kill and restart."""
    from tests.boot.test_qemu_crossboot import QEMU_CPU, QEMU_PASS

    image = _image(tmp_path / "disk.img")
    proc = run_guest(
        ["qemu-system-x86_64", "-M", "microvm,ioapic2=off", "-enable-kvm", "-cpu", QEMU_CPU,
         "-smp", "2", "-m", "256M", "-nographic", "-no-reboot", "-nodefaults",
         "-serial", "stdio", "-kernel", str(kernel), "-initrd", str(INITRD),
         "-append", f"keel.test=services {QEMU_TRANSPORTS}",
         "-device", "isa-debug-exit,iobase=0xf4,iosize=4",
         "-global", "virtio-mmio.force-legacy=false",
         "-drive", f"file={image},if=none,id=d0,format=raw",
         "-device", "virtio-blk-device,drive=d0", "-device", "virtio-rng-device"],
        timeout=300,
    )  # fmt: skip
    assert proc.returncode == QEMU_PASS, proc.stdout[-3000:] + proc.stderr[-2000:]
    _check_suite(proc.stdout, SERVICE_TESTS)
    _check_image(image)


@requires_kvm
def test_shell_on_the_console(kernel: Path, tmp_path: Path) -> None:
    """Booted with its initrd and no test, Keel gives a person a shell on
    the serial console: typed commands list, use and kill drivers."""
    image = _image(tmp_path / "disk.img")
    m = Machine(kernel, smp=2, memory="256M", initrd=INITRD, console=lambda _d: None,
                serial2=True, serial2_output=lambda _d: None)  # fmt: skip
    m.attach_disk(image)
    m.attach_rng()
    readonly = _image(tmp_path / "ro.img")
    m.attach_disk(readonly, readonly=True)
    m.attach_console()
    m.start()
    prompts = 0

    def type_line(*lines: str) -> str:
        """Types the lines at once at the next prompt; returns what they printed."""
        nonlocal prompts
        prompts += 1
        _wait_for(m, "keel$ ", prompts)
        start = len(_console_text(m))
        m.send_console(b"".join(line.encode() + b"\r" for line in lines))
        prompts += len(lines) - 1
        if lines[-1] != "poweroff":
            _wait_for(m, "keel$ ", prompts + 1)
        return _console_text(m)[start:]

    try:
        assert "kill <name|id>" in type_line("help")
        # typed faster than the shell reads: every line is kept, in order
        both = type_line("devices", "ps", "help")
        assert both.index("entropy") < both.index("virtio_blk") < both.index("kill <name|id>")
        ps = type_line("ps")
        assert re.search(r"^0\s+blk0\s+virtio_blk\s+running\s+1$", ps, re.MULTILINE), ps
        devices = type_line("devices")
        assert re.search(r"^1\s+rng0\s+entropy\s+17\s+0$", devices, re.MULTILINE), devices
        assert re.search(r"^4\s+console\s+stream\s+3\s+0$", devices, re.MULTILINE), devices
        assert re.search(r"^[0-9a-f]{32}$", type_line("rng"), re.MULTILINE)
        assert re.search(r"^[0-9a-f]{64}$", type_line("cat rng0"), re.MULTILINE)
        assert "wrote sector 3 of blk0" in type_line("write blk0 3 hello from the shell")
        sector = type_line("read blk0 3")
        assert "hello from the s" in sector and "01f0 " in sector  # all 512 bytes
        assert "write: blk1 is read-only" in type_line("write blk1 0 no")
        assert "hvc0: nothing to read" in type_line("cat hvc0")
        assert "kill: no driver named nosuch (see ps)" in type_line("kill nosuch")
        killed = type_line("kill blk0")
        assert "killed blk0; its driver has started 2 times" in killed
        assert "hello from the s" in type_line("read blk0 3")  # through the new driver
        assert "killed console; its driver has started 2 times" in type_line("kill console")
        assert re.search(r"^\d\s+console\s+uart\s+running\s+2$", type_line("ps"), re.MULTILINE)
        assert "kill: no driver with id 9 (see ps)" in type_line("kill 9")
        assert "unknown command" in type_line("frobnicate")
        type_line("poweroff")
        result = m.wait(timeout=120)
        assert result is not None and result.status == 0, _console_text(m)[-3000:]
    finally:
        m.close()
    data = image.read_bytes()
    assert data[3 * SECTOR : 3 * SECTOR + 20] == b"hello from the shell"
    out = _console_text(m)
    assert "virtio-blk: serving 8192 sectors, read-only\n" in out, out[-3000:]
