"""Bus dispatch, the 16550 UART and the exit device, without KVM."""

from __future__ import annotations

import pytest

from vmm.devices import debug_exit
from vmm.devices.bus import Bus, BusError
from vmm.devices.uart import Uart16550
from vmm.kvm import exits
from vmm.vcpu_runner import handle_exit


class Recorder:
    def __init__(self) -> None:
        self.writes: list[tuple[int, bytes]] = []

    def read(self, offset: int, size: int) -> bytes:
        return bytes([offset]) * size

    def write(self, offset: int, data: bytes) -> None:
        self.writes.append((offset, data))


def quiet_bus(log: list[str] | None = None) -> Bus:
    return Bus("test", log=(log.append if log is not None else lambda _m: None))


def test_bus_routes_to_device_with_offset() -> None:
    bus, a, b = quiet_bus(), Recorder(), Recorder()
    bus.register(0x100, 8, a)
    bus.register(0x200, 4, b)
    bus.write(0x103, b"x")
    bus.write(0x200, b"y")
    assert a.writes == [(3, b"x")] and b.writes == [(0, b"y")]
    assert bus.read(0x205, 1) == b"\xff"  # past b's range
    assert bus.read(0x107, 2) == b"\x07\x07"


def test_bus_rejects_overlaps_and_empty_ranges() -> None:
    bus = quiet_bus()
    bus.register(0x100, 8, Recorder())
    for base, length in [(0x100, 1), (0xFC, 8), (0x107, 4), (0xF0, 0x100)]:
        with pytest.raises(BusError):
            bus.register(base, length, Recorder())
    with pytest.raises(BusError):
        bus.register(0x300, 0, Recorder())


def test_unclaimed_access_is_harmless_and_logged_once() -> None:
    log: list[str] = []
    bus = quiet_bus(log)
    assert bus.read(0x2F8, 1) == b"\xff"
    assert bus.read(0x2F8, 4) == b"\xff" * 4
    bus.write(0x2F8, b"\x00")
    assert len(log) == 1 and "0x2f8" in log[0]


def test_unregister() -> None:
    bus, dev = quiet_bus(), Recorder()
    bus.register(0x10, 4, dev)
    bus.unregister(dev)
    assert bus.find(0x10) is None
    with pytest.raises(BusError):
        bus.unregister(dev)


def test_handle_exit_port_write_and_rep_string() -> None:
    pio, dev = quiet_bus(), Recorder()
    pio.register(0x3F8, 8, dev)
    ex = exits.IoExit(0x3F8, 1, 3, True, memoryview(bytearray(b"abc")))
    assert handle_exit(ex, pio, quiet_bus()) is None
    assert dev.writes == [(0, b"a"), (0, b"b"), (0, b"c")]


def test_handle_exit_port_read_fills_buffer() -> None:
    pio, dev = quiet_bus(), Recorder()
    pio.register(0x3F8, 8, dev)
    buf = bytearray(2)
    assert handle_exit(exits.IoExit(0x3FD, 2, 1, False, memoryview(buf)), pio, quiet_bus()) is None
    assert buf == b"\x05\x05"


def test_handle_exit_mmio() -> None:
    mmio, dev = quiet_bus(), Recorder()
    mmio.register(0xD000_0000, 0x1000, dev)
    buf = bytearray(4)
    handle_exit(exits.MmioExit(0xD000_0010, False, memoryview(buf)), quiet_bus(), mmio)
    assert buf == b"\x10" * 4
    handle_exit(exits.MmioExit(0xD000_0020, True, memoryview(b"\x01\x02")), quiet_bus(), mmio)
    assert dev.writes == [(0x20, b"\x01\x02")]


def test_handle_exit_returns_fatal_exits() -> None:
    ex = exits.ShutdownExit()
    assert handle_exit(ex, quiet_bus(), quiet_bus()) is ex


class Irq:
    def __init__(self) -> None:
        self.levels: list[int] = []

    def __call__(self, level: int) -> None:
        self.levels.append(level)


def test_uart_output_and_status() -> None:
    out: list[bytes] = []
    uart = Uart16550(out.append)
    uart.write(0, b"h")
    uart.write(0, b"i")
    assert b"".join(out) == b"hi"
    lsr = uart.read(5, 1)[0]
    assert lsr & 0x20 and lsr & 0x40 and not lsr & 0x01


def test_uart_divisor_latch_does_not_transmit() -> None:
    out: list[bytes] = []
    uart = Uart16550(out.append)
    uart.write(3, b"\x80")  # DLAB
    uart.write(0, b"\x01")
    uart.write(1, b"\x00")
    assert uart.read(0, 1) == b"\x01"
    uart.write(3, b"\x03")
    assert out == []


def test_uart_receive_interrupt_and_data() -> None:
    irq = Irq()
    uart = Uart16550(lambda _d: None, irq)
    uart.write(1, b"\x01")  # IER: receive data available
    assert irq.levels == []
    assert uart.feed(b"ok") == 2
    assert irq.levels == [1]
    assert uart.read(2, 1)[0] & 0x0F == 0x04  # IIR: receive data
    assert uart.read(5, 1)[0] & 0x01
    assert uart.read(0, 1) == b"o"
    assert uart.read(0, 1) == b"k"
    assert irq.levels == [1, 0]
    assert uart.read(2, 1)[0] & 0x0F == 0x01


def test_uart_thre_interrupt_acknowledged_by_iir_read() -> None:
    irq = Irq()
    uart = Uart16550(lambda _d: None, irq)
    uart.write(1, b"\x02")  # IER: THR empty
    assert irq.levels == [1]
    assert uart.read(2, 1)[0] & 0x0F == 0x02
    assert irq.levels == [1, 0]
    uart.write(0, b"x")
    assert irq.levels == [1, 0, 1]


def test_uart_loopback_and_input_limit() -> None:
    out: list[bytes] = []
    uart = Uart16550(out.append)
    uart.write(4, b"\x10")  # MCR loop
    uart.write(0, b"z")
    assert out == [] and uart.read(0, 1) == b"z"
    assert uart.feed(b"a" * 10_000) == 4096


def test_exit_status_mapping() -> None:
    assert debug_exit.exit_status(debug_exit.PASS) == 0
    assert debug_exit.exit_status(debug_exit.FAIL) == 35  # what QEMU reports
    assert all(debug_exit.exit_status(v) % 2 == 1 for v in range(256) if v != debug_exit.PASS)
    seen: list[int] = []
    dev = debug_exit.DebugExit(seen.append)
    dev.write(0, b"\x10")
    assert seen == [0x10]
