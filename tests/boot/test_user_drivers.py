"""User-space drivers: the virtio-rng driver process under Keel's VMM.

init finds the device among the device-memory capabilities the kernel
handed over, claims its interrupt line, and starts the driver with only its
device's capabilities; the driver follows the virtio-mmio specification and
is woken by the interrupt, delivered as a notification.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from tests.boot.test_qemu_crossboot import QEMU_PASS
from tests.conftest import ROOT, keel, requires_kvm, run_guest

INITRD = ROOT / "build" / "initrd.cpio"

pytestmark = requires_kvm


def test_virtio_rng_driver_serves_random_bytes(kernel: Path) -> None:
    proc = keel(
        "run", str(kernel), "--smp", "2", "--initrd", str(INITRD), "--rng",
        "--cmdline", "keel.test=rng", timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    out = proc.stdout
    assert "virtio-rng: ready" in out
    chunks = re.findall(r"^rng: ([0-9a-f]{32})$", out, re.MULTILINE)
    assert len(chunks) == 4 and len(set(chunks)) == 4
    assert "rng: ok" in out


def test_dma_outside_the_drivers_frames_is_refused(kernel: Path) -> None:
    """keel.test=dma (userspace/tests/dma.c): the rng driver points its device
    at a frame it was never given, then at a frame taken back from it; both
    requests fail, the IOMMU counts and reports them, the frames keep their
    contents, and good requests before and after succeed."""
    proc = keel(
        "run", str(kernel), "--smp", "2", "--initrd", str(INITRD), "--rng",
        "--cmdline", "keel.test=dma", timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    out, err = proc.stdout, proc.stderr
    assert "keel: iommu at 0xd000e000: DMA confined to io_space windows" in out
    assert "dma: outside access refused (fault 1), device still works" in out
    assert "dma: revoked frame no longer reachable (fault 2)" in out
    assert "ktest: ok dma_bad_calls" in out and "dma: ok" in out
    assert "keel: iommu: enabled by the guest" in err
    refused = re.findall(r"iommu: rng0: DMA write (0x[0-9a-f]+)\+0x30 outside its windows", err)
    assert len(refused) == 2 and refused[0] != refused[1], err[-2000:]


def test_dma_state_seen_from_the_host(kernel: Path) -> None:
    """The same run through Machine: the IOMMU's view of the device (what
    `keel devices` shows while it runs); destroying the io_space at the end
    emptied the device's table."""
    from vmm.devices.iommu import DmaWindows
    from vmm.machine import Machine

    logs: list[str] = []
    m = Machine(kernel, smp=1, initrd=INITRD, cmdline="keel.test=dma",
                console=lambda _d: None, log=logs.append)  # fmt: skip
    tables: list[DmaWindows] = []
    attach = m.iommu.attach
    m.iommu.attach = lambda *a, **k: tables.append(attach(*a, **k)) or tables[-1]  # type: ignore[method-assign]
    events: list[tuple[str, dict[str, object]]] = []
    m.subscribe(lambda name, data: events.append((name, data)))
    try:
        m.attach_rng()
        result = m.run()
        assert result.status == 0, m.console.text()[-3000:]
        refused = [data for name, data in events if name == "DMA_REFUSED"]
        assert len(refused) == 2 and all(d["id"] == "rng0" for d in refused), events
        assert ("DEVICE_BOUND", {"id": "rng0"}) in events
        (rng,) = tables
        assert rng.name == "rng0" and rng.enforcing and rng.faults == 2
        assert rng.windows == []  # the io_space was destroyed at the end
        assert m.iommu.enabled and m.iommu.total_faults == 2
        assert sum("outside its windows" in line for line in logs) == 2
    finally:
        m.close()


def test_devices_dma_only_where_their_drivers_granted(kernel: Path, tmp_path: Path) -> None:
    """Keel's kernel enables the IOMMU at boot: every device, boot-time or
    hot-plugged, reaches exactly the windows its driver granted through its
    io_space (the device manager starts one per device) and nothing else."""
    from vmm.machine import Machine

    image = _blk_image(tmp_path / "disk.img", blocks=4)
    m = Machine(kernel, smp=1, initrd=INITRD, console=lambda _d: None, log=lambda _m: None)
    try:
        m.attach_disk(image)
        hvc = m.attach_console(output=tmp_path / "hvc.out")
        m.start()
        assert m.console.wait_for("keel$", timeout=60), m.console.text()[-2000:]
        assert m.console.wait_for("hvc0: virtio_console started", timeout=60)
        assert m.iommu.enabled
        m.attach_rng()
        assert m.console.wait_for("rng0: virtio_rng started", timeout=60), m.console.text()[-2000:]
        by_id = {d["id"]: d for d in m.devices()}
        # virtio-blk: its queue frame and 16 data frames; virtio-rng: its
        # queue frame; virtio-console: two queue frames and three of buffers
        for ident, windows in (("disk0", 17), ("rng0", 1), (hvc, 5)):
            assert by_id[ident]["dma_enforcing"], by_id[ident]
            assert by_id[ident]["dma_windows"] == windows, by_id[ident]
            assert by_id[ident]["dma_faults"] == 0, by_id[ident]
    finally:
        m.close()


# QEMU microvm with ACPI and ioapic2=off announces its virtio-mmio devices
# only in the DSDT; one device sits on the last of its 8 transports, on GSI
# 16 + 7.  Keel reads devices from the command line, so the tests say it.
QEMU_ONE_DEVICE = "virtio_mmio.device=512@0xfeb00e00:23"


def test_virtio_rng_driver_under_qemu(kernel: Path) -> None:
    """The rng driver, interrupts included, against QEMU's own device."""
    import shutil

    import pytest

    from tests.boot.test_qemu_crossboot import QEMU_CPU, QEMU_PASS

    if shutil.which("qemu-system-x86_64") is None:
        pytest.skip("qemu-system-x86_64 is not installed")
    proc = run_guest(
        ["qemu-system-x86_64", "-M", "microvm,ioapic2=off", "-enable-kvm", "-cpu", QEMU_CPU,
         "-smp", "2", "-m", "256M", "-nographic", "-no-reboot", "-nodefaults",
         "-serial", "stdio", "-kernel", str(kernel), "-initrd", str(INITRD),
         "-append", f"keel.test=rng {QEMU_ONE_DEVICE}",
         "-device", "isa-debug-exit,iobase=0xf4,iosize=4",
         "-global", "virtio-mmio.force-legacy=false", "-device", "virtio-rng-device"],
        timeout=180,
    )  # fmt: skip
    assert proc.returncode == QEMU_PASS, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert len(set(re.findall(r"^rng: ([0-9a-f]{32})$", proc.stdout, re.MULTILINE))) == 4
    assert "rng: ok" in proc.stdout


@pytest.mark.parametrize("accel", [[], ["-enable-kvm"]], ids=["tcg", "kvm"])
def test_level_triggered_line_under_qemu(kernel: Path, accel: list[str]) -> None:
    """QEMU microvm's virtio-mmio lines are level-triggered, and its DSDT says
    so; the kernel programs them so.  The rng driver plays the window every
    wake-up has (the device's interrupt status cleared, then a completion while
    the kernel still masks the line, then the line unmasked): the line, up
    again, must interrupt at once.  Programmed as an edge it did not, and a
    driver whose completion fell in that window waited for ever (the suite's
    disk tests under QEMU's TCG, now and then).  QEMU as it comes: nothing on
    the kernel's command line but the test."""
    if shutil.which("qemu-system-x86_64") is None:
        pytest.skip("qemu-system-x86_64 is not installed")
    proc = run_guest(
        ["qemu-system-x86_64", "-M", "microvm", *accel, "-nographic", "-no-reboot",
         "-kernel", str(kernel), "-initrd", str(INITRD), "-append", "keel.test=rng",
         "-device", "isa-debug-exit,iobase=0xf4,iosize=4", "-device", "virtio-rng-device"],
        timeout=180,
    )  # fmt: skip
    assert proc.returncode == QEMU_PASS, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert re.search(r"^keel: acpi: virtio-mmio at 0x\w+, gsi \d+ level-triggered, active high$",
                     proc.stdout, re.MULTILINE), proc.stdout[-3000:]  # fmt: skip
    assert "rng: a completion while the line was masked: interrupt after unmask" in proc.stdout


def test_no_device_no_driver(kernel: Path) -> None:
    proc = keel(
        "run", str(kernel), "--smp", "1", "--initrd", str(INITRD),
        "--cmdline", "keel.test=rng", timeout=120,
    )  # fmt: skip
    assert proc.returncode == 3, proc.stdout[-3000:]
    assert "rng: no virtio-rng device" in proc.stdout


def _blk_image(path: Path, blocks: int = 1024) -> Path:
    """Every 4 KiB block starts with its own number, which the driver checks."""
    import struct

    with open(path, "wb") as f:
        for b in range(blocks):
            f.write(struct.pack("<Q", b) + bytes(4088))
    return path


def _blk_figures(out: str) -> dict[str, int]:
    return {m[0]: int(m[1]) for m in re.findall(r"^kbench: (blk_\w+) (\d+) ", out, re.MULTILINE)}


def test_virtio_blk_driver_reads_the_disk(kernel: Path, tmp_path: Path) -> None:
    image = _blk_image(tmp_path / "disk.img")
    proc = keel(
        "run", str(kernel), "--smp", "1", "--initrd", str(INITRD), "--disk", str(image),
        "--cmdline", "keel.test=blkbench", timeout=180,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    figures = _blk_figures(proc.stdout)
    assert figures["blk_seq_bytes"] == 1024 * 4096
    assert figures["blk_errors"] == 0


def test_virtio_blk_driver_under_qemu(kernel: Path, tmp_path: Path) -> None:
    """The same driver against QEMU's own virtio-blk-device: it follows the
    virtio specification, not Keel's VMM."""
    import shutil

    from tests.boot.test_qemu_crossboot import QEMU_CPU, QEMU_PASS

    if shutil.which("qemu-system-x86_64") is None:
        import pytest

        pytest.skip("qemu-system-x86_64 is not installed")
    image = _blk_image(tmp_path / "disk.img")
    proc = run_guest(
        ["qemu-system-x86_64", "-M", "microvm,ioapic2=off", "-enable-kvm", "-cpu", QEMU_CPU,
         "-smp", "1", "-m", "256M", "-nographic", "-no-reboot", "-nodefaults",
         "-serial", "stdio", "-kernel", str(kernel), "-initrd", str(INITRD),
         "-append", f"keel.test=blkbench {QEMU_ONE_DEVICE}",
         "-device", "isa-debug-exit,iobase=0xf4,iosize=4",
         "-global", "virtio-mmio.force-legacy=false",
         "-drive", f"file={image},if=none,id=d0,format=raw",
         "-device", "virtio-blk-device,drive=d0"],
        timeout=180,
    )  # fmt: skip
    assert proc.returncode == QEMU_PASS, proc.stdout[-3000:] + proc.stderr[-2000:]
    figures = _blk_figures(proc.stdout)
    assert figures["blk_seq_bytes"] == 1024 * 4096
    assert figures["blk_errors"] == 0
