"""Virtio devices under real KVM against a tiny hand-written guest driver.

The guest (tests/guests/tiny.S, GUEST_VIRTIO) identifies each device, sets it
up, feeds it a malformed queue and checks it reports DEVICE_NEEDS_RESET, then
resets it; it reports success only if the VMM kept serving it throughout.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import keel, requires_kvm
from vmm.errors import ConfigError, StateError
from vmm.machine import Machine, State

pytestmark = requires_kvm

Guest = Callable[..., Path]


def make_image(tmp_path: Path) -> Path:
    image = tmp_path / "disk.img"
    image.write_bytes(os.urandom(64 * 512))
    return image


def test_guest_feeds_each_device_a_malformed_queue(tiny_guest: Guest, tmp_path: Path) -> None:
    image = make_image(tmp_path)
    before = image.read_bytes()
    logs: list[str] = []
    m = Machine(tiny_guest("VIRTIO"), smp=1, memory="64M", console=lambda _d: None,
                log=logs.append)  # fmt: skip
    assert m.attach_disk(image) == "disk0"
    assert m.attach_rng() == "rng0"
    assert m.attach_console() == "console0"
    cmdline = m.boot_cmdline()
    assert "virtio_mmio.device=0x200@0xd0000000:16" in cmdline
    assert "virtio_mmio.device=0x200@0xd0002000:18" in cmdline
    assert "keel.hotplug=0x100@0xd000f000:5" in cmdline
    result = m.run()
    assert result.status == 0, (result.reason, m.console.text(), logs)
    assert "tiny: virtio ok" in m.console.text()
    bad = [line for line in logs if "needs reset" in line]
    assert len(bad) == 3, logs
    assert "outside guest RAM" in bad[0] and "loops" in bad[1] and "ahead" in bad[2]
    assert image.read_bytes() == before


def test_cli_boot_time_devices(tiny_guest: Guest, tmp_path: Path) -> None:
    image = make_image(tmp_path)
    proc = keel("run", str(tiny_guest("VIRTIO")), "--smp", "1", "--disk", f"{image},readonly",
                "--rng", "--virtio-console")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "tiny: virtio ok" in proc.stdout
    assert proc.stderr.count("needs reset") == 3


def test_attach_and_detach_while_running(tiny_guest: Guest, tmp_path: Path) -> None:
    image = make_image(tmp_path)
    m = Machine(tiny_guest("HANG"), smp=1, memory="64M", console=lambda _d: None,
                log=lambda _m: None)  # fmt: skip
    m.start()
    try:
        assert m.state is State.RUNNING
        disk = m.attach_disk(image, readonly=True)
        rng = m.attach_rng()
        assert [(d["id"], d["kind"], d["slot"]) for d in m.devices()] == [
            (disk, "disk", 0), (rng, "rng", 1)]  # fmt: skip
        assert m.mmio.read(0xD0000008, 4) == (2).to_bytes(4, "little")
        assert m.mmio.read(0xD000F020, 4) == (3).to_bytes(4, "little")  # PRESENT
        assert m.mmio.read(0xD000F024, 4) == (3).to_bytes(4, "little")  # CHANGED
        m.pause()
        m.detach(str(image))  # by backing path, while paused
        m.resume()
        assert m.mmio.read(0xD0000008, 4) == bytes(4)
        assert m.mmio.read(0xD000F020, 4) == (2).to_bytes(4, "little")
        assert m.attach_disk(image) == "disk0"  # the freed slot is reused
        with pytest.raises(ConfigError, match="no attached device"):
            m.detach("disk7")
    finally:
        m.stop()
        m.wait()
    assert m.state is State.STOPPED
    with pytest.raises(StateError, match="stopped"):
        m.attach_rng()


def test_attach_fills_at_most_every_slot(tmp_path: Path, tiny_guest: Guest) -> None:
    m = Machine(tiny_guest("HANG"), smp=1, memory="64M", log=lambda _m: None)
    for _ in range(8):
        m.attach_rng()
    with pytest.raises(ConfigError, match="slots are in use"):
        m.attach_rng()
    m.close()


def test_worker_completes_requests_without_stopping_vcpu(tiny_guest: Guest) -> None:
    """The VMM's own view: a queue kicked through the ioeventfd is served by the worker."""
    m = Machine(tiny_guest("HANG"), smp=1, memory="64M", console=lambda _d: None,
                log=lambda _m: None)  # fmt: skip
    m.start()
    try:
        from tests.virtio.driver import Driver

        rng = m.attach_rng()
        entry = m.attached(rng)
        assert entry.transport is not None
        d = Driver(entry.transport, entry.transport.mem, heap=0x200000)
        d.init([8])
        buf = d.alloc(32)
        d.submit(0, [(buf, 32, True)])
        assert d.wait_used(0) == [(0, 32)]
        time.sleep(0.01)
    finally:
        m.stop()
        m.wait()


def test_run_without_a_kernel_boots_the_built_default(kernel: Path) -> None:
    proc = keel("run", "--smp", "1", "--cmdline", "keel.test=boot")
    assert proc.returncode == 0, proc.stderr
    assert "keel.hotplug=0x100@0xd000f000:5" in proc.stdout  # the kernel echoes its cmdline
