"""virtio-console (ID 3), a single port without multiport: queue 0 carries host
input to the guest, queue 1 the guest's output.

Output goes to a sink (a file, the terminal) and into a transcript that
scripts read; input is queued by ``feed`` from any host thread and handed to
the guest as receive buffers become available (a snapshot keeps what is queued).
"""

from __future__ import annotations

import binascii  # not base64, which imports re: ~3 ms of each start
import os
import threading
from collections.abc import Callable

from vmm.console import Console, fd_sink
from vmm.devices.virtio.device import ID_CONSOLE, VirtioDevice
from vmm.devices.virtio.queue import QueueError, Virtqueue, gather
from vmm.errors import ConfigError

RX_LIMIT = 64 << 10  # bytes of host input queued before more is refused
RECEIVEQ = 0
TRANSMITQ = 1


class ConsoleDevice(VirtioDevice):
    device_id = ID_CONSOLE
    kind = "console"
    num_queues = 2
    queue_max = 64

    def __init__(self, sink: Callable[[bytes], None] | None = None, backing: str = "") -> None:
        super().__init__(backing or "transcript")
        self.console = Console(sink)
        self._input = bytearray()
        self._input_lock = threading.Lock()
        self._wake = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)

    def feed(self, data: bytes) -> int:
        """Queue host input for the guest; returns how many bytes were taken."""
        with self._input_lock:
            taken = data[: max(0, RX_LIMIT - len(self._input))]
            self._input += taken
        if taken:
            os.eventfd_write(self._wake, 1)
        return len(taken)

    def wake_fds(self) -> list[int]:
        return [self._wake]

    def service(self, queues: list[Virtqueue | None]) -> bool:
        try:
            os.eventfd_read(self._wake)
        except (BlockingIOError, OSError):
            pass
        used = False
        tx = queues[TRANSMITQ]
        if tx is not None:
            for out in tx.pop_all():
                if out.writable:
                    raise QueueError(f"console transmit {out.head}: device-writable buffer")
                self.console.write(gather(self.mem, out.buffers))
                tx.push(out.head, 0)
                used = True
        rx = queues[RECEIVEQ]
        if rx is not None:
            rx.has_available()  # checks the index the driver just published, input or not
        while rx is not None and self._input:
            chain = rx.pop()
            if chain is None:
                break
            if chain.readable:
                raise QueueError(f"console receive {chain.head}: device-readable buffer")
            written = 0
            with self._input_lock:
                for buf in chain.buffers:
                    part = bytes(self._input[: buf.length])
                    if not part:
                        break
                    self.mem.write(buf.addr, part)
                    del self._input[: len(part)]
                    written += len(part)
            rx.push(chain.head, written)
            used = True
        return used

    def reset(self) -> None:
        with self._input_lock:
            self._input.clear()

    def save_state(self) -> dict[str, object]:
        """Host input the guest has not read yet goes along."""
        with self._input_lock:
            return {"input": binascii.b2a_base64(self._input, newline=False).decode()}

    def load_state(self, state: dict[str, object]) -> None:
        with self._input_lock:
            self._input[:] = binascii.a2b_base64(str(state.get("input", "")), strict_mode=True)
        if self._input:
            os.eventfd_write(self._wake, 1)

    def close(self) -> None:
        self.console.close()
        if self._wake >= 0:
            os.close(self._wake)
            self._wake = -1


def create(output: str | None = None) -> ConsoleDevice:
    """The registry's factory: output is appended to the file ``output`` (if given)
    and kept in the transcript ``console``."""
    if output is None:
        return ConsoleDevice(None, "")
    try:
        fd = os.open(output, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        raise ConfigError(f"cannot open {output!r}: {exc.strerror}") from None
    return ConsoleDevice(fd_sink(fd), output)
