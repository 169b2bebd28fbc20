"""Stream and packet drivers as user processes: the 16550 UART on COM2, the
virtio-console and virtio-net drivers, each started by init with only its
device's capabilities and used through the client protocol
(userspace/lib/driver.h).  The host types on each device and checks what the
guest sent through it; the guest reports over the serial console.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import ROOT, requires_kvm, run_in_new_netns
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


def test_virtio_console_driver(kernel: Path) -> None:
    """Writes reach the host (a short line, then a whole page in one write); a line
    typed on the host reaches the client; then more than the driver queues, which
    the device holds back until the client reads, arrives complete and in order."""
    with Machine(kernel, smp=2, initrd=INITRD, cmdline="keel.test=vconsole") as m:
        con = m.device(m.attach_console())
        m.start()
        _expect(m, "vcon: type a line on the console")
        page = "".join("\n" if i % 64 == 63 else chr(ord("a") + i % 26) for i in range(4096))
        assert con.console.wait_for("vcon: hello through the driver\n" + page, timeout=WAIT)
        con.feed(b"typed on the console\n")
        _expect(m, "vcon: read 'typed on the console'")
        _expect(m, "vcon: send 6000 bytes")
        con.feed(bytes(ord("0") + i % 10 for i in range(6000)))
        out = _finish(m)
    assert "virtio-console: ready" in out
    assert "vcon: read 6000 bytes in order" in out and "vcon: ok" in out
    assert con.console.text() == "vcon: hello through the driver\n" + page


def test_virtio_net_driver_in_a_private_namespace() -> None:
    """ARP and ICMP echo with the host's own network stack on the other end of a
    TAP in a namespace the test creates: frames both ways, full-sized ones too,
    more than the driver's transmit buffers, received through interrupts."""
    proc = run_in_new_netns("tests.boot.netns_net_driver", str(WAIT), timeout=WAIT + 60)
    out = proc.stdout
    assert proc.returncode == 0, out[-3000:] + proc.stderr[-3000:]
    assert "drv: FAIL" not in out
    assert "virtio-net: mac 52:54:00:12:34:56" in out
    assert "net: mac 52:54:00:12:34:56" in out  # DRV_ADDRESS: the MAC from the device's config
    assert len([line for line in out.splitlines() if line.startswith("net: echo reply")]) == 8
    assert "net: ok" in out
