"""Stream and packet drivers as user processes: the 16550 UART on COM2, the
virtio-console and virtio-net drivers, each started by init with only its
device's capabilities and used through the client protocol
(userspace/lib/driver.h).  The host types on each device and checks what the
guest sent through it; the guest reports over the serial console.
"""

from __future__ import annotations

import re
import socket
from pathlib import Path

import pytest

from tests.conftest import ROOT, requires_kvm, run_in_new_netns
from vmm.console import ConsoleTimeout
from vmm.machine import Machine

INITRD = ROOT / "build" / "initrd.cpio"
WAIT = 120.0  # generous: the machine is shared and guest kernel code is emulated

pytestmark = requires_kvm


def _expect(m: Machine, needle: str) -> None:
    try:
        m.console.wait_for(needle, timeout=WAIT)
    except ConsoleTimeout as exc:
        pytest.fail(f"{exc}; console:\n" + "\n".join(m.console.last_lines(30)))


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
        cid = m.attach_console()
        con = m.device(cid)
        m.start()
        _expect(m, "vcon: type a line on the console")
        # the device may reach the driver's five frames (two rings, buffers) and nothing else
        (desc,) = [d for d in m.devices() if d["id"] == cid]
        assert desc["dma_enforcing"] and desc["dma_windows"] == 5, desc
        page = "".join("\n" if i % 64 == 63 else chr(ord("a") + i % 26) for i in range(4096))
        assert con.console.wait_for("vcon: hello through the driver\n" + page, timeout=WAIT)
        con.feed(b"typed on the console\n")
        _expect(m, "vcon: read 'typed on the console'")
        _expect(m, "vcon: send 6000 bytes")
        con.feed(bytes(ord("0") + i % 10 for i in range(6000)))
        out = _finish(m)
    assert m.iommu.total_faults == 0
    assert out.count("virtio-console: ready") == 2  # the second after a kill and restart
    assert "vcon: read 6000 bytes in order" in out and "vcon: ok" in out
    assert con.console.text() == "vcon: hello through the driver\n" + page + (
        "vcon: after the restart\n"
    )


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
    # the device reached only the driver's seventeen frames (two rings, 8 of receive
    # buffers, 7 of transmit buffers)
    assert "netns: dma enforcing, 17 windows, 0 faults" in out
    assert len([line for line in out.splitlines() if re.match(r"net: echo reply \d", line)]) == 8
    assert "net: echo reply after a restart" in out  # a killed driver replaced
    assert "net: ok" in out


def test_suite_runs_the_net_test_when_it_has_a_virtio_net() -> None:
    """keel.test=suite with a virtio-net on a TAP in a private namespace: the
    in-guest suite runs the net loopback test among its own."""
    from tests.boot.test_guest_suite import check_suite

    proc = run_in_new_netns("tests.boot.netns_net_driver", str(WAIT), "suite", timeout=WAIT + 120)
    out = proc.stdout
    assert proc.returncode == 0, out[-3000:] + proc.stderr[-3000:]
    assert "no virtio-net" not in out
    assert "net: echo reply after a restart" in out and "net: ok" in out
    check_suite(out)
    assert "ktest: ok net_loopback" in out


# -- the same drivers against QEMU's own devices -------------------------------------------


class _Qemu:
    """QEMU microvm running the kernel, its serial console gathered by a thread."""

    COM2 = ("-device", "isa-serial,chardev=com2,iobase=0x2f8,irq=3")

    def __init__(self, kernel: Path, cmdline: str, *device_args: str) -> None:
        import shutil
        import subprocess
        import threading

        from tests.boot.test_qemu_crossboot import QEMU_CPU

        if shutil.which("qemu-system-x86_64") is None:
            pytest.skip("qemu-system-x86_64 is not installed")
        self.proc = subprocess.Popen(
            ["qemu-system-x86_64", "-M", "microvm,ioapic2=off", "-enable-kvm", "-cpu", QEMU_CPU,
             "-smp", "2", "-m", "256M", "-nographic", "-no-reboot", "-nodefaults",
             "-serial", "stdio", "-kernel", str(kernel), "-initrd", str(INITRD),
             "-append", cmdline,
             "-device", "isa-debug-exit,iobase=0xf4,iosize=4",
             "-global", "virtio-mmio.force-legacy=false", *device_args],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )  # fmt: skip
        self._out = bytearray()
        self._cond = threading.Condition()
        self._reader = threading.Thread(target=self._gather, daemon=True)
        self._reader.start()

    def _gather(self) -> None:
        assert self.proc.stdout is not None
        while data := self.proc.stdout.read1(4096):  # type: ignore[attr-defined]
            with self._cond:
                self._out += data
                self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    def text(self) -> str:
        with self._cond:  # QEMU's terminal ends lines with CR LF
            return self._out.decode("utf-8", "replace").replace("\r\n", "\n")

    def expect(self, needle: str) -> None:
        import time

        deadline = time.monotonic() + WAIT
        with self._cond:
            while needle.encode() not in self._out:
                left = deadline - time.monotonic()
                if left <= 0 or self.proc.poll() is not None:
                    pytest.fail(f"{needle!r} never came; console:\n{self.text()[-3000:]}")
                self._cond.wait(min(left, 0.5))

    def connect(self, path: Path) -> socket.socket:
        """Connects to a socket chardev of QEMU's (server=on,wait=on: QEMU waits)."""
        import time

        sock = socket.socket(socket.AF_UNIX)
        for _ in range(200):
            try:
                sock.connect(str(path))
                sock.settimeout(WAIT)
                return sock
            except OSError:
                time.sleep(0.1)
        self.proc.kill()
        assert self.proc.stderr is not None
        pytest.fail(f"QEMU's socket {path} never appeared: {self.proc.stderr.read().decode()}")

    def finish(self) -> str:
        from tests.boot.test_qemu_crossboot import QEMU_PASS

        try:
            status = self.proc.wait(timeout=WAIT)
        finally:
            self.proc.kill()
        # QEMU's last lines may still be in the pipe when it has exited: the
        # console is whole once the reader has seen the end of it.
        self._reader.join(timeout=WAIT)
        out = self.text()
        assert status == QEMU_PASS, out[-3000:]
        assert "drv: FAIL" not in out
        return out


def _recv_exact(sock: socket.socket, want: bytes) -> None:
    got = bytearray()
    while len(got) < len(want):
        data = sock.recv(8192)
        assert data, bytes(got)
        got += data
    assert bytes(got) == want


def test_virtio_console_driver_under_qemu(kernel: Path, tmp_path: Path) -> None:
    """The console driver against QEMU's virtio-serial-device with one virtconsole
    (port 0; one port, so QEMU offers no multiport), through a socket chardev."""
    from tests.boot.test_user_drivers import QEMU_ONE_DEVICE

    sock_path = tmp_path / "console.sock"
    qemu = _Qemu(kernel, f"keel.test=vconsole {QEMU_ONE_DEVICE}",
                 "-device", "virtio-serial-device,max_ports=1",
                 "-chardev", f"socket,id=c0,path={sock_path},server=on,wait=on",
                 "-device", "virtconsole,chardev=c0")  # fmt: skip
    host = qemu.connect(sock_path)
    try:
        qemu.expect("vcon: type a line on the console")
        page = bytes(10 if i % 64 == 63 else ord("a") + i % 26 for i in range(4096))
        _recv_exact(host, b"vcon: hello through the driver\n" + page)
        host.sendall(b"typed on the console\n")
        qemu.expect("vcon: read 'typed on the console'")
        qemu.expect("vcon: send 6000 bytes")
        host.sendall(bytes(ord("0") + i % 10 for i in range(6000)))
        _recv_exact(host, b"vcon: after the restart\n")
        out = qemu.finish()
    finally:
        host.close()
        qemu.proc.kill()
    assert "vcon: read 6000 bytes in order" in out and "vcon: ok" in out


def test_uart_driver_under_qemu(kernel: Path, tmp_path: Path) -> None:
    """keel.test=uart against QEMU's 16550 at 0x2f8 on IRQ 3, through a socket."""
    sock_path = tmp_path / "com2.sock"
    qemu = _Qemu(kernel, "keel.test=uart",
                 "-chardev", f"socket,id=com2,path={sock_path},server=on,wait=on",
                 *_Qemu.COM2)  # fmt: skip
    host = qemu.connect(sock_path)
    try:
        qemu.expect("uart: type a line on COM2")
        _recv_exact(host, b"uart: hello through the driver\r\n")
        host.sendall(b"typed on com2\r")
        qemu.expect("uart: read 'typed on com2'")
        qemu.expect("uart: type another line on COM2")
        _recv_exact(host, b"uart: after the restart\r\n")
        host.sendall(b"and again\r\n")
        out = qemu.finish()
    finally:
        host.close()
        qemu.proc.kill()
    assert "uart: driver stopped: vector 13 at 0x" in out and "uart: ok" in out


def test_suite_runs_the_uart_driver_tests_under_qemu(kernel: Path) -> None:
    """The suite's UART driver tests against QEMU's 16550 (its loopback mode)."""
    from tests.boot.test_guest_suite import check_suite

    qemu = _Qemu(kernel, "keel.test=suite", "-chardev", "null,id=com2", *_Qemu.COM2)
    out = qemu.finish()
    check_suite(out)
    assert "ktest: ok uart_driver_interrupts" in out
    assert "ktest: ok uart_driver_stray_port" in out


def test_virtio_net_driver_under_qemu(kernel: Path) -> None:
    """The net driver against QEMU's virtio-net-device (which offers many more
    features than Keel's) on user-mode networking: its gateway, 10.0.2.2, answers
    ARP and the pings."""
    from tests.boot.test_user_drivers import QEMU_ONE_DEVICE

    qemu = _Qemu(kernel, f"keel.test=net {QEMU_ONE_DEVICE}", "-netdev", "user,id=n0",
                 "-device", "virtio-net-device,netdev=n0,mac=52:54:00:65:43:21")  # fmt: skip
    try:
        out = qemu.finish()
    finally:
        qemu.proc.kill()
    assert "net: mac 52:54:00:65:43:21" in out
    assert len([line for line in out.splitlines() if re.match(r"net: echo reply \d", line)]) == 8
    assert "net: echo reply after a restart" in out  # a killed driver replaced
    assert "net: ok" in out


def test_suite_runs_the_uart_driver_tests_with_com2(kernel: Path, tmp_path: Path) -> None:
    """With a COM2 the in-guest suite also starts the UART driver (the chip in
    loopback, so what it sends comes back through its interrupt) and stops one
    that touches a port outside its range; without one it says so."""
    from tests.boot.test_guest_suite import check_suite
    from tests.conftest import keel

    proc = keel(
        "run", str(kernel), "--smp", "2", "--initrd", str(INITRD), "--serial2",
        str(tmp_path / "com2.log"), "--cmdline", "keel.test=suite", timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    check_suite(proc.stdout)
    assert "ktest: ok uart_driver_interrupts" in proc.stdout
    assert "ktest: ok uart_driver_stray_port" in proc.stdout
    assert (tmp_path / "com2.log").read_bytes() == b""  # loopback: nothing left the chip
    proc = keel(
        "run", str(kernel), "--smp", "1", "--initrd", str(INITRD),
        "--cmdline", "keel.test=suite", timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert "ktest: no 16550 at COM2: 2 driver tests not run" in proc.stdout
