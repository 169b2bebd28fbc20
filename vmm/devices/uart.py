"""A 16550A UART: COM1 is the guest's console, COM2 (optional) a second port.

Enough of the chip for Linux's and Keel's drivers: divisor latch, FIFO
control, line/modem status, loopback, and the interrupt identification
priority (receive data before transmitter-empty).  The interrupt output is a
level; ``set_irq`` is called only when it changes, and the VMM turns it into
KVM_IRQ_LINE on the in-kernel IOAPIC/PIC.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable

COM1_BASE = 0x3F8
COM1_IRQ = 4
COM2_BASE = 0x2F8  # for user-space drivers: the kernel keeps COM1
COM2_IRQ = 3
RX_FIFO_LIMIT = 4096  # bytes queued from the host before further input is dropped

# Register offsets.
RBR_THR = 0  # DLL when DLAB
IER = 1  # DLM when DLAB
IIR_FCR = 2
LCR = 3
MCR = 4
LSR = 5
MSR = 6
SCR = 7

IER_RDI = 0x01
IER_THRI = 0x02
IIR_NONE = 0x01
IIR_THRI = 0x02
IIR_RDI = 0x04
IIR_FIFO = 0xC0
LCR_DLAB = 0x80
MCR_LOOP = 0x10
LSR_DR = 0x01
LSR_THRE = 0x20
LSR_TEMT = 0x40
FCR_ENABLE = 0x01
FCR_CLEAR_RX = 0x02


class Uart16550:
    takes_strings = True  # a `rep outsb` burst to THR is written in one call

    def __init__(
        self,
        output: Callable[[bytes], None],
        set_irq: Callable[[int], None] | None = None,
    ) -> None:
        self._output = output
        self._set_irq = set_irq
        # vCPU threads write registers while a host thread queues input.
        self._lock = threading.Lock()
        self._rx: deque[int] = deque()
        self._ier = 0
        self._lcr = 0x03
        self._mcr = 0x08
        self._scr = 0
        self._dll = 0x01
        self._dlm = 0
        self._fcr = 0
        self._thr_empty_pending = False
        self._irq_level = 0

    # -- snapshots (vmm.snapshot) ---------------------------------------------
    _STATE = ("_ier", "_lcr", "_mcr", "_scr", "_dll", "_dlm", "_fcr", "_thr_empty_pending",
              "_irq_level")  # fmt: skip

    def save_state(self) -> dict[str, object]:
        with self._lock:
            state: dict[str, object] = {name: getattr(self, name) for name in self._STATE}
            state["rx"] = bytes(self._rx).hex()
        return state

    def load_state(self, state: dict[str, object]) -> None:
        with self._lock:
            for name in self._STATE:
                setattr(self, name, type(getattr(self, name))(state[name]))
            self._rx = deque(bytes.fromhex(str(state["rx"])))

    # -- host side ------------------------------------------------------------
    def feed(self, data: bytes) -> int:
        """Queue host input for the guest; returns how many bytes were taken."""
        with self._lock:
            room = max(0, RX_FIFO_LIMIT - len(self._rx))
            taken = data[:room]
            self._rx.extend(taken)
            self._update_irq()
        return len(taken)

    # -- guest side -----------------------------------------------------------
    def read(self, offset: int, size: int) -> bytes:
        with self._lock:
            value = self._read_reg(offset & 7)
            self._update_irq()
        return bytes([value]) + b"\x00" * (size - 1)

    def write(self, offset: int, data: bytes) -> None:
        out = b""
        with self._lock:
            reg = offset & 7
            if reg == RBR_THR and not self._lcr & LCR_DLAB:
                # A `rep outsb` to THR arrives as one exit with many bytes.
                if self._mcr & MCR_LOOP:
                    self._rx.extend(data)
                else:
                    out = bytes(data)
                self._thr_empty_pending = True
            else:
                for value in data:
                    self._write_reg(reg, value)
            self._update_irq()
        if out:
            self._output(out)

    def _read_reg(self, reg: int) -> int:
        dlab = self._lcr & LCR_DLAB
        if reg == RBR_THR:
            if dlab:
                return self._dll
            return self._rx.popleft() if self._rx else 0
        if reg == IER:
            return self._dlm if dlab else self._ier
        if reg == IIR_FCR:
            iir = self._iir()
            if iir == IIR_THRI:
                self._thr_empty_pending = False  # reading IIR acknowledges THRE
            return iir | (IIR_FIFO if self._fcr & FCR_ENABLE else 0)
        if reg == LCR:
            return self._lcr
        if reg == MCR:
            return self._mcr
        if reg == LSR:
            return LSR_THRE | LSR_TEMT | (LSR_DR if self._rx else 0)
        if reg == MSR:
            if self._mcr & MCR_LOOP:
                # Loopback wires RTS->CTS, DTR->DSR, OUT1->RI, OUT2->DCD.
                m = self._mcr
                return ((m & 0x02) << 3) | ((m & 0x01) << 5) | ((m & 0x04) << 4) | ((m & 0x08) << 4)
            return 0xB0  # DCD, DSR, CTS: a cable is attached
        return self._scr

    def _write_reg(self, reg: int, value: int) -> None:
        dlab = self._lcr & LCR_DLAB
        if reg == RBR_THR:
            self._dll = value
        elif reg == IER:
            if dlab:
                self._dlm = value
            else:
                enabling_thri = value & IER_THRI and not self._ier & IER_THRI
                self._ier = value & 0x0F
                if enabling_thri:
                    self._thr_empty_pending = True  # THR is always empty here
        elif reg == IIR_FCR:
            if value & FCR_CLEAR_RX:
                self._rx.clear()
            self._fcr = value & ~0x06
        elif reg == LCR:
            self._lcr = value
        elif reg == MCR:
            self._mcr = value & 0x1F
        elif reg == SCR:
            self._scr = value

    def _iir(self) -> int:
        if self._ier & IER_RDI and self._rx:
            return IIR_RDI
        if self._ier & IER_THRI and self._thr_empty_pending:
            return IIR_THRI
        return IIR_NONE

    def _update_irq(self) -> None:
        """Drive the interrupt line on a change.  Caller holds ``_lock``, so two
        threads can never deliver their level changes out of order."""
        level = 0 if self._iir() == IIR_NONE else 1
        if level != self._irq_level:
            self._irq_level = level
            if self._set_irq is not None:
                self._set_irq(level)
