"""virtio-net against a real TAP, inside a network namespace the test creates."""

from __future__ import annotations

from tests.conftest import run_in_new_netns


def test_net_device_in_a_private_namespace() -> None:
    proc = run_in_new_netns("tests.virtio.netns_net_check", timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "net ok" in proc.stdout
