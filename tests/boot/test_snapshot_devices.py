"""Snapshots of guests whose devices hold host input the guest has not taken yet:
a virtio-net device (its TAP's waiting frames, its MAC, the traffic going on
after the restore) and a virtio-console (typed bytes not yet read)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.conftest import ROOT, requires_kvm, run_in_new_netns
from vmm import snapshot
from vmm.console import ConsoleTimeout
from vmm.devices.virtio.console import ConsoleDevice
from vmm.machine import Machine

pytestmark = requires_kvm
INITRD = ROOT / "build" / "initrd.cpio"
WAIT = 120.0  # generous: the machine is shared and guest kernel code is emulated


def test_snapshot_of_a_guest_with_a_virtio_net_device(tmp_path: Path) -> None:
    """Pings before the snapshot, a frame the host sent while the guest was paused
    delivered by the restored guest's device, pings after the restore (the same
    MAC, on the same TAP) and after a driver restart."""
    proc = run_in_new_netns("tests.boot.netns_net_snapshot", str(WAIT), str(tmp_path / "snap"),
                            timeout=3 * WAIT)  # fmt: skip
    out = proc.stdout
    assert proc.returncode == 0, out[-3000:] + proc.stderr[-3000:]
    first, _, restored = out.partition("netns: restored console\n")
    assert "drv: FAIL" not in out
    replies = [int(n) for n in re.findall(r"^net: echo reply (\d),", first, re.MULTILINE)]
    assert replies == [1, 2, 3, 4], first
    assert "net: waiting for the host's frame" in first
    assert "netns: snapshot taken, state paused" in first
    assert "netns: restored net mac 52:54:00:12:34:57 backing keeltap8" in first
    assert "net: the host's frame came" in restored
    replies = [int(n) for n in re.findall(r"^net: echo reply (\d),", restored, re.MULTILINE)]
    assert replies == [5, 6, 7, 8], restored
    assert "net: echo reply after a restart" in restored and "net: ok" in restored


def test_keel_snapshot_of_a_net_guest_killed_and_restored(tmp_path: Path) -> None:
    """The same through the command line: ``keel run --net TAP``, the control
    socket's pause, ``keel snapshot``, SIGKILL, ``keel restore``: the MAC
    derived from the TAP's name stays, the frame sent during the pause arrives;
    a restore while the first process still has the TAP is refused."""
    proc = run_in_new_netns("tests.boot.netns_net_snapshot", str(WAIT), str(tmp_path / "snap"),
                            "cli", timeout=4 * WAIT)  # fmt: skip
    out = proc.stdout
    assert proc.returncode == 0, out[-3000:] + proc.stderr[-3000:]
    first, _, restored = out.partition("netns: restored console\n")
    assert "netns: keel snapshot: 0 " in first and "state=paused" in first, first[-2000:]
    assert "net: waiting for the host's frame" in first and "netns: first process killed" in first
    # a TAP has one user: a restore beside the first process is refused with one line
    assert ("netns: restore beside the first process: 1, 1 line: keel: error: cannot attach "
            "to TAP 'keeltap8': Device or resource busy\n") in first, first[-2000:]  # fmt: skip
    macs = re.findall(r"^virtio-net: mac (\S+)", out, re.MULTILINE)
    assert len(macs) == 2 and macs[0] == macs[1], macs  # the restart after the restore
    assert "net: the host's frame came" in restored
    replies = [int(n) for n in re.findall(r"^net: echo reply (\d),", restored, re.MULTILINE)]
    assert replies == [5, 6, 7, 8], restored
    assert "net: ok" in restored and "drv: FAIL" not in out


def _expect(m: Machine, needle: str) -> None:
    try:
        m.console.wait_for(needle, timeout=WAIT)
    except ConsoleTimeout as exc:
        pytest.fail(f"{exc}; console:\n" + "\n".join(m.console.last_lines(30)))


def test_snapshot_keeps_virtio_console_input_not_yet_read(kernel: Path, tmp_path: Path) -> None:
    """6000 bytes typed while the guest is paused (none of them read) are in the
    snapshot: the restored guest reads them all, in order, after the first
    machine is gone."""
    snap = tmp_path / "snap"
    with Machine(kernel, smp=2, initrd=INITRD, cmdline="keel.test=vconsole") as m:
        con = m.device(m.attach_console())
        assert isinstance(con, ConsoleDevice)
        m.start()
        _expect(m, "vcon: type a line on the console")
        con.feed(b"typed on the console\n")
        _expect(m, "vcon: send 6000 bytes")
        m.pause()
        assert con.feed(bytes(ord("0") + i % 10 for i in range(6000))) == 6000
        snapshot.take(m, str(snap), resume=False)
    restored = snapshot.restore(snapshot.load(str(snap)))
    with restored:
        restored.start()
        (again,) = [restored.device(d["id"]) for d in restored.devices()]
        assert isinstance(again, ConsoleDevice)
        result = restored.wait(timeout=WAIT)
        out = restored.console.text()
        transcript = again.console.text()
    assert result is not None and result.status == 0, out[-3000:]
    assert "vcon: read 6000 bytes in order" in out and "vcon: ok" in out
    assert transcript == "vcon: after the restart\n"
