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
again.  Arguments: the timeout in seconds, the snapshot directory.  Prints
the consoles (first machine, then the restored one) and exits with the
restored machine's status.
"""

from __future__ import annotations

import contextlib
import socket
import sys

from pyroute2 import IPRoute

from tests.conftest import KERNEL, ROOT
from vmm import snapshot
from vmm.console import ConsoleTimeout
from vmm.machine import Machine

TAP = "keeltap8"
MAC = "52:54:00:12:34:57"
HOST_IP = "10.0.2.2"
MARKER = b"keel-snapshot"


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
        with socket.socket(socket.AF_PACKET, socket.SOCK_RAW) as raw:
            raw.bind((TAP, 0))
            guest_mac = bytes.fromhex(MAC.replace(":", ""))
            raw.send(guest_mac + host_mac + b"\x88\xb5" + MARKER + bytes(33))
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


if __name__ == "__main__":
    sys.exit(main())
