"""Run inside a fresh network namespace by test_cli_operate.py: `keel run --net`
(a TAP Keel creates) ended by SIGTERM removes the TAP and the socket.
Argument: a directory for the socket.  Prints what it checked; exits 0 when
everything was cleaned up."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from tests.conftest import KEEL, ROOT
from vmm.api import request


def _links() -> str:
    return subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout


def main() -> int:
    sock = os.path.join(sys.argv[1], "vm.sock")
    proc = subprocess.Popen(
        [*KEEL, "run", str(ROOT / "build" / "kernel.elf"), "--smp", "1", "--memory", "64",
         "--net", "--api-sock", sock],
        cwd=ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while not os.path.exists(sock) or request(sock, {"cmd": "status"})["state"] != "running":
        if proc.poll() is not None or time.monotonic() > deadline:
            print("netns: keel did not start:", proc.communicate()[1])
            return 1
        time.sleep(0.05)
    print("netns: tap while running:", "keeltap0" in _links())
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    print("netns: status", proc.returncode)
    print("netns: tap after SIGTERM:", "keeltap0" in _links())
    print("netns: socket after SIGTERM:", os.path.exists(sock))
    sys.stdout.write(err)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
