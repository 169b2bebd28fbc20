"""Run inside a fresh network namespace by test_io_drivers.py: Keel's virtio-net
driver against a TAP whose host side has the address 10.0.2.2/24.

The guest (keel.test=net, or the whole suite with keel.test=suite, which
runs the same net test when it has a virtio-net) asks for the host's MAC
with ARP and pings it; the host kernel answers both.  Arguments: the
timeout in seconds, the keel.test mode.  Prints the guest's console and exits with the
machine's status (0: the guest saw every answer).
"""

from __future__ import annotations

import contextlib
import sys

from tests.conftest import KERNEL, ROOT
from vmm.console import ConsoleTimeout
from vmm.machine import Machine

TAP = "keeltap9"
MAC = "52:54:00:12:34:56"
HOST_IP = "10.0.2.2"


def main() -> int:
    try:  # keep IPv6 router solicitations off the new interface
        with open("/proc/sys/net/ipv6/conf/default/disable_ipv6", "w") as f:
            f.write("1")
    except OSError:
        pass
    mode = sys.argv[2] if len(sys.argv) > 2 else "net"
    with Machine(KERNEL, smp=2, initrd=ROOT / "build" / "initrd.cpio",
                 cmdline=f"keel.test={mode}") as m:  # fmt: skip
        m.attach_net(TAP, mac=MAC)
        from pyroute2 import IPRoute

        with IPRoute() as ipr:
            index = ipr.link_lookup(ifname=TAP)[0]
            ipr.addr("add", index=index, address=HOST_IP, prefixlen=24)
        m.start()
        timeout = float(sys.argv[1]) if len(sys.argv) > 1 else 120.0
        dma = "never reached the first echo reply"
        with contextlib.suppress(ConsoleTimeout):
            m.console.wait_for("net: echo reply 1,", timeout=timeout)
            (desc,) = m.devices()
            dma = (f"{'enforcing' if desc['dma_enforcing'] else 'open'}, "
                   f"{desc['dma_windows']} windows, {desc['dma_faults']} faults")  # fmt: skip
        result = m.wait(timeout=timeout)
        sys.stdout.write(m.console.text())
        print(f"netns: dma {dma}")
        if result is None:
            print("netns: the guest did not finish in time")
            return 3
        return result.status


if __name__ == "__main__":
    sys.exit(main())
