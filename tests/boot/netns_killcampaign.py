"""Run inside a fresh network namespace by test_crash.py: the driver-kill
campaign (keel.test=killcampaign, userspace/tests/crashtests.c) with a
virtio-blk disk, a virtio-net device on a TAP whose host side is 10.0.2.2/24
(the host's own stack answers the guest's pings) and a virtio-console.

Arguments: the disk image, the file the virtio-console's output goes to, the
number of kills, the hang timeout in seconds.  Prints the guest's console as
it comes and exits with the machine's status (3: it did not finish).  With
``KEEL_CAMPAIGN_LOG=FILE`` the console also goes to FILE as it comes, so a
long campaign can be watched (the test itself sees the output only at the end).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from contextlib import ExitStack
from typing import BinaryIO

from pyroute2 import IPRoute

from tests.conftest import KERNEL, ROOT
from vmm.machine import Machine

TAP = "keeltap7"
HOST_IP = "10.0.2.2"


def echo(data: bytes, log: BinaryIO | None = None) -> None:
    sys.stdout.buffer.write(data)
    sys.stdout.flush()
    if log is not None:
        log.write(data)
        log.flush()


def main() -> int:
    image, hvc_out, kills, hang = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
    try:  # keep IPv6 router solicitations off the new interface
        with open("/proc/sys/net/ipv6/conf/default/disable_ipv6", "w") as f:
            f.write("1")
    except OSError:
        pass
    with ExitStack() as stack:
        path = os.environ.get("KEEL_CAMPAIGN_LOG")
        log = stack.enter_context(open(path, "ab")) if path else None
        return campaign(image, hvc_out, kills, hang, lambda data: echo(data, log))


def campaign(image: str, hvc_out: str, kills: int, hang: float,
             console: Callable[[bytes], None]) -> int:  # fmt: skip
    with Machine(KERNEL, smp=2, initrd=ROOT / "build" / "initrd.cpio", console=console,
                 hang_timeout=hang,
                 cmdline=f"keel.test=killcampaign keel.kills={kills}") as m:  # fmt: skip
        m.attach_disk(image)
        m.attach_net(TAP)
        m.attach_console(output=hvc_out)
        with IPRoute() as ipr:
            index = ipr.link_lookup(ifname=TAP)[0]
            ipr.addr("add", index=index, address=HOST_IP, prefixlen=24)
        m.start()
        result = m.wait(timeout=hang + 60 + 30 * kills)
        if result is None:
            print("\nnetns: the guest did not finish in time")
            return 3
        return result.status


if __name__ == "__main__":
    sys.exit(main())
