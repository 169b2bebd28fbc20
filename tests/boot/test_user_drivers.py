"""User-space drivers: the virtio-rng driver process under Keel's VMM.

init finds the device among the device-memory capabilities the kernel
handed over, claims its interrupt line, and starts the driver with only its
device's capabilities; the driver follows the virtio-mmio specification and
is woken by the interrupt, delivered as a notification.
"""

from __future__ import annotations

import re
from pathlib import Path

from tests.conftest import ROOT, keel, requires_kvm

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


def test_no_device_no_driver(kernel: Path) -> None:
    proc = keel(
        "run", str(kernel), "--smp", "1", "--initrd", str(INITRD),
        "--cmdline", "keel.test=rng", timeout=120,
    )  # fmt: skip
    assert proc.returncode == 35, proc.stdout[-3000:]
    assert "rng: no virtio-rng device" in proc.stdout
