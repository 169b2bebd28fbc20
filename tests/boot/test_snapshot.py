"""Snapshots of real Keel guests: taken in the middle of the in-guest suite and
while a disk is written, the first process killed, then restored (twice: two
clones) to the end with every check held; a restored guest still takes
attach and detach; damaged or mismatched snapshots are refused with one line."""

from __future__ import annotations

import json
import os
import random
import re
import select
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.boot.test_guest_suite import check_suite
from tests.boot.test_services import SERVICE_TESTS, _check_image, _check_suite, _image
from tests.conftest import KEEL, ROOT, keel, requires_kvm
from vmm import snapshot
from vmm.api import request
from vmm.builder import guest_tsc_khz

pytestmark = requires_kvm
INITRD = ROOT / "build" / "initrd.cpio"


class Guest:
    """A ``keel run`` or ``keel restore`` whose console is read line by line."""

    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen([*KEEL, *args], cwd=ROOT, stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True)  # fmt: skip
        self.lines: list[str] = []

    def wait_for(self, pattern: str, count: int = 1, timeout: float = 300) -> None:
        """Read the console until ``pattern`` (a multi-line regex) matched ``count``
        times (in chunks: a prompt has no newline); a guest silent for ``timeout``
        seconds fails the test (a hung guest must not hang the test run)."""
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        while len(re.findall(pattern, self.text(), re.MULTILINE)) < count:
            ready, _, _ = select.select([fd], [], [], timeout)
            assert ready, f"no {pattern!r} for {timeout} s: " + self.text()[-3000:]
            chunk = os.read(fd, 4096).decode(errors="replace")
            assert chunk, self.text()[-3000:] + self.proc.communicate()[1]
            self.lines.append(chunk)

    def text(self) -> str:
        """The console so far, with the newlines text mode gives (``communicate``)."""
        return "".join(self.lines).replace("\r\n", "\n")

    def finish(self, timeout: float = 300) -> tuple[int, str, str]:
        out, err = self.proc.communicate(timeout=timeout)
        return self.proc.returncode, self.text() + out, err

    def kill(self) -> str:
        """Kill the process; returns its whole console (what it printed before the
        snapshot paused the guest is all in the pipe)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        out, _ = self.proc.communicate()
        return self.text() + (out or "")


def _wait_socket(sock: Path, guest: Guest) -> None:
    deadline = time.monotonic() + 60
    while not sock.exists():
        assert guest.proc.poll() is None, guest.finish()
        assert time.monotonic() < deadline
        time.sleep(0.02)


def _snapshot(sock: Path, directory: Path) -> dict[str, object]:
    proc = keel("snapshot", "--api-sock", str(sock), str(directory), "--stop", timeout=120)
    assert proc.returncode == 0, proc.stderr
    fields = dict(kv.split("=", 1) for kv in proc.stdout.split())
    assert fields["state"] == "paused" and int(fields["bytes"]) > 0
    return fields


def test_snapshot_mid_suite_restores_twice_as_two_clones(tmp_path: Path) -> None:
    sock, snap = tmp_path / "api.sock", tmp_path / "snap"
    first = Guest("run", "--smp", "2", "--initrd", str(INITRD), "--cmdline", "keel.test=suite",
                  "--api-sock", str(sock))  # fmt: skip
    try:
        _wait_socket(sock, first)
        first.wait_for(r"^ktest: ok ", 5)
        _snapshot(sock, snap)
    finally:
        before = first.kill()  # the guest dies in the middle of the suite
    clones = [Guest("restore", str(snap)) for _ in range(2)]
    for clone in clones:
        status, out, err = clone.finish()
        assert status == 0, out[-3000:] + err[-2000:]
        whole = before + out
        check_suite(whole)  # every test once: none lost, none run twice
    # The clones wrote only their private copies: the snapshot is as it was taken.
    snapshot.load(str(snap), verify=True)  # the memory file's checksum still holds


def test_snapshot_mid_stress_restores_with_every_invariant(tmp_path: Path) -> None:
    sock, snap = tmp_path / "api.sock", tmp_path / "snap"
    cmdline = f"keel.test=stress keel.duration=6 keel.seed=3 keel.tsc_khz={guest_tsc_khz()}"
    first = Guest("run", "--smp", "2", "--initrd", str(INITRD), "--cmdline", cmdline,
                  "--api-sock", str(sock))  # fmt: skip
    try:
        _wait_socket(sock, first)
        first.wait_for(r"^stress: ", 3)  # progress lines: the workloads are running
        _snapshot(sock, snap)
    finally:
        before = first.kill()
    assert "stress: summary" not in before
    status, out, err = Guest("restore", str(snap)).finish()
    assert status == 0, out[-3000:] + err[-2000:]
    assert re.search(r"^stress: summary 8 workloads, 0 failed$", out, re.MULTILINE), out
    assert "FAILED" not in before + out


def test_snapshot_while_a_disk_is_written(tmp_path: Path) -> None:
    """keel.test=services streams writes to the disk; the restored guest's reads
    and the image file afterwards hold every acknowledged write."""
    sock, snap = tmp_path / "api.sock", tmp_path / "snap"
    image = _image(tmp_path / "disk.img")
    first = Guest("run", "--smp", "2", "--initrd", str(INITRD), "--disk", str(image), "--rng",
                  "--cmdline", "keel.test=services", "--api-sock", str(sock))  # fmt: skip
    try:
        _wait_socket(sock, first)
        first.wait_for(r"^ktest: ok ", 2)
        _snapshot(sock, snap)
    finally:
        before = first.kill()
    manifest = json.loads((snap / "manifest.json").read_text())
    assert [d["id"] for d in manifest["disks"]] == ["disk0"]
    status, out, err = Guest("restore", str(snap)).finish()
    assert status == 0, out[-3000:] + err[-2000:]
    _check_suite(before + out, SERVICE_TESTS)
    _check_image(image)


# Where the chain's snapshots fall: once the console line was printed, so many
# snapshots, each a random 0..s seconds after the line or the previous restore.
# The kills during writes take ~40 s here, the clients with requests in flight ~13 s.
CHAIN = ((r"^ktest: ok rng_read$", 2, 8.0), (r"^ktest: ok kill_restart_during_writes$", 2, 3.0))


def test_snapshots_at_random_moments_of_disk_io_restore_in_a_chain(tmp_path: Path) -> None:
    """keel.test=services through its disk phases (streams of writes while the
    driver is killed, clients with requests in flight, the event index on) is
    snapshotted at a random moment, the snapshot restored, the restored guest
    snapshotted at a random moment again, and so on: the last guest passes
    every check and the image holds every acknowledged write.  (A restore that
    lost a queue, a kick or an interrupt hangs here.)"""
    seed = random.randrange(1 << 32)
    rng = random.Random(seed)
    image = _image(tmp_path / "disk.img")
    sock = tmp_path / "api0.sock"
    guest = Guest("run", "--smp", "2", "--initrd", str(INITRD), "--disk", str(image), "--rng",
                  "--cmdline", "keel.test=services", "--api-sock", str(sock))  # fmt: skip
    console, taken = "", 0
    try:
        _wait_socket(sock, guest)
        moments = [(pattern, rng.uniform(0.0, most)) for pattern, count, most in CHAIN
                   for _ in range(count)]  # fmt: skip
        for pattern, delay in moments:
            if not re.search(pattern, console, re.MULTILINE):
                guest.wait_for(pattern)
            time.sleep(delay)
            snap = tmp_path / f"snap{taken}"
            proc = keel("snapshot", "--api-sock", str(sock), str(snap), "--stop", timeout=120)
            if proc.returncode != 0:  # (a faster host:) the guest finished first
                assert guest.proc.wait(timeout=60) == 0, f"seed {seed}: {proc.stderr}"
                break
            taken += 1
            console += guest.kill()
            sock = tmp_path / f"api{taken}.sock"
            guest = Guest("restore", str(snap), "--api-sock", str(sock))
            _wait_socket(sock, guest)
        status, out, err = guest.finish()
    finally:
        guest.kill()
    assert status == 0, f"seed {seed}, {taken} snapshots: " + out[-3000:] + err[-2000:]
    assert taken >= 1, f"seed {seed}: the guest finished before the first snapshot"
    _check_suite(console + out, SERVICE_TESTS)
    _check_image(image)


def test_restored_guest_takes_attach_and_detach(tmp_path: Path) -> None:
    sock, sock2, snap = tmp_path / "api.sock", tmp_path / "api2.sock", tmp_path / "snap"
    image = _image(tmp_path / "disk.img")
    first = Guest("run", "--smp", "2", "--initrd", str(INITRD), "--disk", str(image),
                  "--api-sock", str(sock))  # fmt: skip
    try:
        _wait_socket(sock, first)
        first.wait_for(r"virtio_blk started")
        first.wait_for(r"keel\$ ")
        _snapshot(sock, snap)
    finally:
        first.kill()
    restored = Guest("restore", str(snap), "--api-sock", str(sock2))
    try:
        _wait_socket(sock2, restored)
        assert [d["id"] for d in request(sock2, {"cmd": "devices"})] == ["disk0"]
        assert request(sock2, {"cmd": "attach", "kind": "rng"}) == {"id": "rng0"}
        restored.wait_for(r"devmgr: rng0: virtio_rng started")
        request(sock2, {"cmd": "detach", "device": "rng0"})
        restored.wait_for(r"devmgr: rng0: device removed")
        assert restored.proc.stdin is not None
        restored.proc.stdin.write("read blk0 3\r")  # the disk still works after restore
        restored.proc.stdin.flush()
        restored.wait_for(r"keel\$ ")  # the shell's next prompt: the read was answered
        request(sock2, {"cmd": "stop"})
        assert restored.finish()[0] == 0
    finally:
        restored.kill()


@pytest.fixture(scope="module")
def small_snapshot(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A snapshot of a guest booted without a test (it waits on its console), with
    a disk."""
    tmp = tmp_path_factory.mktemp("snap")
    sock, snap = tmp / "api.sock", tmp / "snap"
    image = _image(tmp / "disk.img", blocks=16)
    guest = Guest("run", "--smp", "2", "--memory", "64M", "--disk", str(image),
                  "--api-sock", str(sock))  # fmt: skip
    try:
        _wait_socket(sock, guest)
        guest.wait_for(r"smp ready")
        _snapshot(sock, snap)
    finally:
        guest.kill()
    return snap


def _damaged(snap: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "copy"
    shutil.copytree(snap, copy)
    return copy


def _refused(directory: Path, *extra: str) -> str:
    proc = keel("restore", str(directory), *extra, timeout=60)
    assert proc.returncode == 1, proc.stdout[-2000:] + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("keel: error: snapshot "), proc.stderr
    return lines[0]


def test_damaged_and_mismatched_snapshots_are_refused(
    small_snapshot: Path, tmp_path: Path
) -> None:
    snap = small_snapshot
    assert "has 2 vCPUs, not 4" in _refused(snap, "--smp", "4")
    assert "no manifest.json" in _refused(tmp_path)

    truncated = _damaged(snap, tmp_path / "t")
    with open(truncated / "memory", "r+b") as f:
        f.truncate(1 << 20)
    assert "truncated or replaced" in _refused(truncated)

    tampered = _damaged(snap, tmp_path / "s")
    state = (tampered / "state.json").read_bytes()
    (tampered / "state.json").write_bytes(state.replace(b'"rx"', b'"rX"', 1))
    assert "state.json is damaged" in _refused(tampered)

    flipped = _damaged(snap, tmp_path / "m")
    with open(flipped / "memory", "r+b") as f:
        f.seek(0x100000)
        byte = f.read(1)
        f.seek(0x100000)
        f.write(bytes([byte[0] ^ 0xFF]))
    assert "memory file is damaged" in _refused(flipped, "--verify")

    other = _damaged(snap, tmp_path / "v")
    manifest = json.loads((other / "manifest.json").read_text())
    manifest["version"] = 99
    (other / "manifest.json").write_text(json.dumps(manifest))
    assert "snapshot version 99, this keel restores version 1" in _refused(other)

    manifest = json.loads((snap / "manifest.json").read_text())
    disk = Path(manifest["disks"][0]["path"])
    moved = disk.with_suffix(".moved")
    disk.rename(moved)
    try:
        assert f"disk disk0 '{disk}': No such file or directory" in _refused(snap)
    finally:
        moved.rename(disk)


def test_snapshot_into_a_used_directory_is_refused(tmp_path: Path) -> None:
    sock = tmp_path / "api.sock"
    guest = Guest("run", "--smp", "1", "--memory", "64M", "--api-sock", str(sock))
    try:
        _wait_socket(sock, guest)
        (tmp_path / "full").mkdir()
        (tmp_path / "full" / "x").write_text("x")
        proc = keel("snapshot", "--api-sock", str(sock), str(tmp_path / "full"), timeout=60)
        assert proc.returncode == 1
        full = tmp_path / "full"
        want = f"keel: error: snapshot directory '{full}' exists and is not empty"
        assert proc.stderr.strip() == want
        assert request(sock, {"cmd": "status"})["state"] == "running"
    finally:
        guest.kill()
