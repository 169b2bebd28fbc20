"""Which breakpoint strategy the gdb stub chose (``vmm.gdb.hwdebug``), as the
start-up line and ``monitor breakpoints`` say it: on this host (kvm_pvm, no
hardware breakpoints) the single-step fallback; on a host with debug
registers the KVM one (its encoding is in tests/unit/test_gdb_hwdebug.py)."""

from __future__ import annotations

from pathlib import Path

from tests.boot.test_gdb import Remote, _keel_gdb
from tests.conftest import requires_kvm
from vmm.gdb import hwdebug
from vmm.kvm.system import System

pytestmark = requires_kvm


def _expected() -> str:
    with System() as system:
        return hwdebug.probe(hwdebug.host_hw_bps(system))


def test_start_up_line_and_monitor_name_the_strategy(kernel: Path, tmp_path: Path) -> None:
    path = tmp_path / "gdb.sock"
    proc = _keel_gdb(kernel, f"unix:{path}")
    strategy = _expected()
    try:
        assert proc.stderr is not None
        line = proc.stderr.readline()
        assert f"waiting for gdb on unix:{path} (breakpoints: {strategy})" in line, line
        r = Remote(path)
        r.send("qRcmd," + b"breakpoints".hex())
        text = b""
        while True:  # console output packets ("O" + hex), then OK
            reply = r.reply_raw()
            if reply == "OK":
                break
            text += bytes.fromhex(reply[1:])
        assert text.decode().startswith(f"breakpoints: {strategy} ("), text
        if strategy == "single-step":
            assert "no hardware breakpoints" in text.decode()
        assert r.ask("D") == "OK"
        assert proc.wait(120) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()
