"""Run inside a fresh network namespace by test_snapshot.py: a guest with a
virtio-net device is snapshotted between its pings and restored in this
process after the first machine is gone, and its pings go on.

The TAP is made here first (as a host sets one up for a VM), with the host
side at 10.0.2.2/24, so both machines find it in place.  keel.test=netsnap
pings the host four times, then waits for a frame of ethertype 0x88b5; the
host pauses the guest, sends that frame (it waits on the TAP, read by no
one), takes the snapshot and closes the machine, which ends the TAP's queue:
the frame reaches the restored guest only if the snapshot carried it.  The
restored guest then pings four more times, restarts its driver and pings
again.  Arguments: the timeout in seconds, the snapshot directory, and
``cli`` to do the same with ``keel run --net``, the control socket's pause,
``keel snapshot``, a SIGKILL of the first process and ``keel restore``.
Prints the consoles (first machine, then the restored one) and exits with
the restored machine's status.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import socket
import subprocess
import sys
import time

from pyroute2 import IPRoute

from tests.conftest import KEEL, KERNEL, ROOT
from vmm import snapshot
from vmm.api import request
from vmm.console import ConsoleTimeout
from vmm.machine import Machine

TAP = "keeltap8"
MAC = "52:54:00:12:34:57"
HOST_IP = "10.0.2.2"
MARKER = b"keel-snapshot"


def _send_marker(host_mac: bytes, guest_mac: bytes) -> None:
    """The frame the guest waits for, written to the TAP (the guest is paused)."""
    with socket.socket(socket.AF_PACKET, socket.SOCK_RAW) as raw:
        raw.bind((TAP, 0))
        raw.send(guest_mac + host_mac + b"\x88\xb5" + MARKER + bytes(33))


def main() -> int:
    timeout, directory = float(sys.argv[1]), sys.argv[2]
    try:  # keep IPv6 router solicitations off the new interface
        with open("/proc/sys/net/ipv6/conf/default/disable_ipv6", "w") as f:
            f.write("1")
    except OSError:
        pass
    with IPRoute() as ipr:
        ipr.link("add", ifname=TAP, kind="tuntap", mode="tap")
        index = ipr.link_lookup(ifname=TAP)[0]
        ipr.addr("add", index=index, address=HOST_IP, prefixlen=24)
    with open(f"/sys/class/net/{TAP}/address") as f:
        host_mac = bytes.fromhex(f.read().strip().replace(":", ""))
    if sys.argv[3:] == ["cli"]:
        return _cli(timeout, directory, host_mac)
    first = Machine(KERNEL, smp=2, initrd=ROOT / "build" / "initrd.cpio",
                    cmdline="keel.test=netsnap")  # fmt: skip
    with first:
        first.attach_net(TAP, mac=MAC)
        first.start()
        try:
            first.console.wait_for("net: waiting for the host's frame", timeout=timeout)
        except ConsoleTimeout:
            sys.stdout.write(first.console.text())
            print("netns: the first guest never waited for the frame")
            return 3
        first.pause()
        _send_marker(host_mac, bytes.fromhex(MAC.replace(":", "")))
        taken = snapshot.take(first, directory, resume=False)
        sys.stdout.write(first.console.text())
        print(f"netns: snapshot taken, state {taken['state']}")
    restored = snapshot.restore(snapshot.load(directory))
    with restored:
        restored.start()
        (desc,) = restored.devices()
        print(f"netns: restored {desc['kind']} mac {desc['mac']} backing {desc['backing']}")
        with contextlib.suppress(ConsoleTimeout):
            restored.console.wait_for("net: ok", timeout=timeout)
        result = restored.wait(timeout=timeout)
        print("netns: restored console")
        sys.stdout.write(restored.console.text())
        if result is None:
            print("netns: the restored guest did not finish in time")
            return 3
        return result.status


def _read_until(proc: subprocess.Popen[bytes], needle: bytes, timeout: float) -> bytes:
    """What ``proc`` printed up to and including ``needle`` (all of it on a timeout)."""
    assert proc.stdout is not None
    out, deadline = b"", time.monotonic() + timeout
    while needle not in out and time.monotonic() < deadline:
        ready, _, _ = select.select([proc.stdout], [], [], 1.0)
        if ready:
            chunk = os.read(proc.stdout.fileno(), 4096)
            if not chunk:
                break
            out += chunk
    return out


def _cli(timeout: float, directory: str, host_mac: bytes) -> int:
    sock = os.path.join(os.path.dirname(directory), "api.sock")
    first = subprocess.Popen(
        [*KEEL, "run", str(KERNEL), "--smp", "2", "--initrd", str(ROOT / "build" / "initrd.cpio"),
         "--cmdline", "keel.test=netsnap", "--net", TAP, "--api-sock", sock],
        cwd=ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
    )  # fmt: skip
    try:
        out = _read_until(first, b"net: waiting for the host's frame", timeout)
        if b"net: waiting for the host's frame" not in out:
            sys.stdout.write(out.decode(errors="replace"))
            print("netns: the first guest never waited for the frame")
            return 3
        mac = next(line.split()[-1] for line in out.decode().splitlines()
                   if line.startswith("net: mac "))  # fmt: skip
        request(sock, {"cmd": "pause"})
        _send_marker(host_mac, bytes.fromhex(mac.replace(":", "")))
        taken = subprocess.run(
            [*KEEL, "snapshot", "--api-sock", sock, directory, "--stop"],
            cwd=ROOT, capture_output=True, text=True, timeout=timeout,
        )  # fmt: skip
        print(f"netns: keel snapshot: {taken.returncode} {taken.stdout.strip()} "
              f"{taken.stderr.strip()}")  # fmt: skip
        early = subprocess.run([*KEEL, "restore", directory], cwd=ROOT, capture_output=True,
                               text=True, timeout=timeout)  # fmt: skip
        lines = early.stderr.strip().splitlines()
        print(f"netns: restore beside the first process: {early.returncode}, "
              f"{len(lines)} line: {' | '.join(lines)}")  # fmt: skip
    finally:
        first.send_signal(signal.SIGKILL)
        rest, _ = first.communicate()
    sys.stdout.write((out + rest).decode(errors="replace"))
    print("netns: first process killed")
    restored = subprocess.run([*KEEL, "restore", directory], cwd=ROOT, capture_output=True,
                              text=True, timeout=2 * timeout)  # fmt: skip
    print("netns: restored console")
    sys.stdout.write(restored.stdout)
    sys.stdout.write(restored.stderr)
    return restored.returncode


if __name__ == "__main__":
    sys.exit(main())
