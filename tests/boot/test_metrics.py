"""Metrics of a real Keel guest: exits per vCPU, device accesses, interrupts,
virtqueue requests, hotplug events; through ``Machine.metrics()``, the
control socket, ``keel metrics`` (table, ``--json``, ``--watch``) and
``keel run --metrics-file``."""

from __future__ import annotations

import itertools
import json
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import KEEL, ROOT, keel, requires_kvm
from vmm.api import request
from vmm.errors import StateError
from vmm.machine import Machine

INITRD = ROOT / "build" / "initrd.cpio"

pytestmark = requires_kvm


def _image(path: Path) -> Path:
    path.write_bytes(bytes(512 * 1024))
    return path


def test_metrics_of_a_guest_with_a_disk(kernel: Path, tmp_path: Path) -> None:
    m = Machine(kernel, smp=2, memory="256M", initrd=INITRD, console=lambda _d: None)
    m.attach_disk(_image(tmp_path / "disk.img"))
    m.start()
    try:
        assert m.console.wait_for("keel$ ", 300), m.console.text()[-2000:]
        m.send_console(b"read blk0 3\r")  # one read request of the shell's block
        assert m.console.wait_for("keel$ ", 120, 2), m.console.text()[-2000:]
        m.attach_rng()
        assert m.console.wait_for("virtio_rng started", 120), m.console.text()[-2000:]
        got = m.metrics()
    finally:
        m.close()
    json.dumps(got)  # the control socket sends it as JSON
    assert got["version"] == 1 and got["state"] == "running"
    assert [v["index"] for v in got["vcpus"]] == [0, 1]
    for v in got["vcpus"]:  # both vCPUs ran and left KVM_RUN for the VMM
        assert v["total_exits"] > 0 and v["guest_s"] > 0 and v["vmm_s"] > 0
    assert got["total_exits"] == sum(v["total_exits"] for v in got["vcpus"])
    assert got["exits"]["io"] > 0 and got["exits"]["mmio"] > 0
    assert got["pio"]["com1@0x3f8"] > 0  # the console
    assert got["mmio"]["disk0@0xd0000000"] > 0  # the driver probed and set up its device
    assert got["mmio"]["hotplug@0xd000f000"] > 0
    disk = got["virtio"]["disk0"]
    assert disk["requests"] > 0 and disk["bytes"] > 0
    assert disk["errors"] == 0 and disk["dma_refusals"] == 0
    assert "rng0" in got["virtio"]
    assert got["interrupts"]["gsi16"] > 0  # slot 0's line: the disk's completions
    assert got["interrupts"]["gsi4"] > 0  # COM1
    assert got["total_interrupts"] == sum(got["interrupts"].values())
    assert got["hotplug_events"] == 1  # the rng attached while the guest ran


def test_metrics_through_the_cli(kernel: Path, tmp_path: Path) -> None:
    sock, mfile = tmp_path / "api.sock", tmp_path / "metrics.json"
    proc = subprocess.Popen(
        [*KEEL, "run", str(kernel), "--smp", "1", "--initrd", str(INITRD),
         "--api-sock", str(sock), "--metrics-file", str(mfile), "--rng"],
        cwd=ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while not mfile.exists():
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline
            time.sleep(0.05)
        written = json.loads(mfile.read_text())
        assert written["vcpus"][0]["index"] == 0
        table = keel("metrics", "--api-sock", str(sock))
        assert table.returncode == 0, table.stderr
        lines = table.stdout.splitlines()
        assert lines[0].startswith("state running")
        assert lines[2].split()[:3] == ["VCPU", "EXITS", "IO"]
        assert any(line.startswith("pio com1@0x3f8") for line in lines)
        assert any(line.startswith("rng0") for line in lines)
        as_json = keel("metrics", "--api-sock", str(sock), "--json")
        assert json.loads(as_json.stdout)["vcpus"][0]["total_exits"] > 0
        watch = subprocess.Popen(
            [*KEEL, "metrics", "--api-sock", str(sock), "--json", "--watch", "0.2"],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert watch.stdout is not None
        first, second = json.loads(watch.stdout.readline()), json.loads(watch.stdout.readline())
        assert second["time"] >= first["time"]
        request(sock, {"cmd": "stop"})
        assert watch.wait(30) == 0  # the VMM went away: watching ends quietly
        assert proc.wait(30) == 0
        final = json.loads(mfile.read_text())  # written once more at the end
        assert final["state"] == "stopped" and final["total_exits"] >= first["total_exits"]
        bad = keel("metrics", "--api-sock", str(sock))
        assert bad.returncode == 1 and bad.stderr.startswith("keel: error: cannot reach")
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()


def test_kvm_statistics_read_from_a_vcpu_thread_while_the_others_run(kernel: Path) -> None:
    """KVM's own counters (``Machine.kvm_stats``) of the VM and each vCPU, read
    where a console callback runs - in a vCPU thread, while the other vCPUs
    are in the guest - many times over; after the machine stopped and closed
    its files, their last reading."""
    line = bytearray()
    seen: list[dict[str, int]] = []

    def console(data: bytes) -> None:
        line.extend(data)
        while b"\n" in line:
            del line[: line.index(b"\n") + 1]
            stats = m.kvm_stats()
            assert len(stats["vcpus"]) == 2
            seen.append({k: sum(v[k] for v in stats["vcpus"]) for k in ("exits", "halt_exits")})

    m = Machine(kernel, smp=2, initrd=INITRD, console=console, hang_timeout=60,
                cmdline="keel.test=stress keel.stress=caps keel.duration=2")  # fmt: skip
    with pytest.raises(StateError):
        m.kvm_stats()  # nothing to count before the machine is built
    result = m.run()
    assert result.status == 0, f"{result.reason}: {m.console.text()[-2000:]}"
    m.close()
    final = m.kvm_stats()
    assert sum(v["exits"] for v in final["vcpus"]) >= seen[-1]["exits"]
    assert final["vm"], "the VM's own counters"
    assert len(seen) > 5
    assert seen[-1]["exits"] > seen[0]["exits"] > 0
    assert all(a["halt_exits"] <= b["halt_exits"] for a, b in itertools.pairwise(seen))
