"""virtio-net against a real TAP, inside a network namespace the test creates."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid

import pytest

from tests.conftest import ROOT


def test_net_device_in_a_private_namespace() -> None:
    ns = f"keeltest-{uuid.uuid4().hex[:8]}"
    made = subprocess.run(["ip", "netns", "add", ns], capture_output=True, text=True)
    if made.returncode != 0:
        pytest.skip(f"cannot create a network namespace: {made.stderr.strip()}")
    try:
        proc = subprocess.run(
            ["ip", "netns", "exec", ns, sys.executable, "-m", "tests.virtio.netns_net_check"],
            capture_output=True, text=True, timeout=60, cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )  # fmt: skip
        if "/dev/net/tun" in proc.stderr and "No such file" in proc.stderr:
            pytest.skip("no /dev/net/tun")
        assert proc.returncode == 0, proc.stderr
        assert "net ok" in proc.stdout
    finally:
        subprocess.run(["ip", "netns", "del", ns], check=False)
    assert ns not in subprocess.run(["ip", "netns", "list"], capture_output=True,
                                    text=True).stdout  # fmt: skip
