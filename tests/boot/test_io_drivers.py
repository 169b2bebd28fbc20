"""Stream and packet drivers as user processes: the 16550 UART on COM2, the
virtio-console and virtio-net drivers, each started by init with only its
device's capabilities and used through the client protocol
(userspace/lib/driver.h).  The host types on each device and checks what the
guest sent through it; the guest reports over the serial console.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import ROOT, requires_kvm
from vmm.machine import Machine

INITRD = ROOT / "build" / "initrd.cpio"
WAIT = 120.0  # generous: the machine is shared and guest kernel code is emulated

pytestmark = requires_kvm


def _expect(m: Machine, needle: str) -> None:
    if not m.console.wait_for(needle, timeout=WAIT):
        pytest.fail(f"{needle!r} never came; console:\n" + "\n".join(m.console.last_lines(30)))


def _finish(m: Machine) -> str:
    result = m.wait(timeout=WAIT)
    out = m.console.text()
    assert result is not None, out[-3000:]
    assert result.status == 0, out[-3000:]
    assert "drv: FAIL" not in out
    return out


def test_uart_driver_on_com2(kernel: Path) -> None:
    """A line each way through the driver (the receive side is interrupt-driven);
    then the driver touches a port outside its range: the kernel stops it, its
    fault handler (init) gets the fault, and a new driver serves the same
    device on the same endpoint."""
    with Machine(kernel, smp=2, initrd=INITRD, cmdline="keel.test=uart", serial2=True) as m:
        assert m.serial2 is not None
        m.start()
        _expect(m, "uart: type a line on COM2")
        assert m.serial2.wait_for("uart: hello through the driver\r\n", timeout=WAIT)
        m.send_serial2(b"typed on com2\r")
        _expect(m, "uart: read 'typed on com2'")
        _expect(m, "uart: type another line on COM2")
        assert m.serial2.wait_for("uart: after the restart\r\n", timeout=WAIT)
        m.send_serial2(b"and again\r\n")
        out = _finish(m)
    assert "uart: read 'and again'" in out
    assert "uart: driver stopped: vector 13 at 0x" in out
    assert "uart: ok" in out
    assert out.count("uart: ready") == 2
    # COM2 carried exactly what the guest wrote through the driver
    assert m.serial2.text() == "uart: hello through the driver\r\nuart: after the restart\r\n"


def test_serial2_needs_the_port_and_a_running_machine(kernel: Path) -> None:
    from vmm.errors import ConfigError, StateError

    with pytest.raises(ConfigError):
        Machine(kernel).send_serial2(b"x")
    with pytest.raises(StateError):
        Machine(kernel, serial2=True).send_serial2(b"x")
