"""The console transcript: what the guest printed, kept for scripts and diagnostics.

The UART hands every byte here.  ``Console`` forwards it to a sink (the
terminal, a file) and keeps the transcript so scripts can wait for a line and
a crash report can show the last lines the guest printed.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable

from vmm.errors import KeelError

TRANSCRIPT_LIMIT = 4 << 20  # bytes kept; older output is dropped first


def fd_sink(fd: int) -> Callable[[bytes], None]:
    """A sink writing to fd; a closed terminal or full disk must not stop the guest."""

    def sink(data: bytes) -> None:
        try:
            os.write(fd, data)
        except OSError:
            pass

    return sink


class ConsoleTimeout(KeelError, TimeoutError):
    """What ``Console.wait_for`` waited for did not come."""


class Console:
    def __init__(self, sink: Callable[[bytes], None] | None = None) -> None:
        self._sink = sink
        self._buf = bytearray()
        self._dropped = 0
        self._closed = False
        self._cond = threading.Condition()
        self._listeners: list[Callable[[bytes], None]] = []

    def listen(self, callback: Callable[[bytes], None]) -> Callable[[], None]:
        """Also send every later byte to ``callback``; returns the way to stop."""
        with self._cond:
            self._listeners.append(callback)

        def stop() -> None:
            with self._cond:
                if callback in self._listeners:
                    self._listeners.remove(callback)

        return stop

    def write(self, data: bytes) -> None:
        if self._sink is not None:
            self._sink(data)
        for listener in list(self._listeners):
            listener(data)
        with self._cond:
            self._buf += data
            excess = len(self._buf) - TRANSCRIPT_LIMIT
            if excess > 0:
                del self._buf[:excess]
                self._dropped += excess
            self._cond.notify_all()

    def text(self) -> str:
        with self._cond:
            return self._buf.decode("utf-8", "replace")

    def last_lines(self, count: int = 20) -> list[str]:
        lines = self.text().splitlines()
        return lines[-count:]

    def mark(self) -> int:
        """The position of the next byte: ``wait_for(..., since=mark)`` looks only
        at what the guest prints from now on."""
        with self._cond:
            return self._dropped + len(self._buf)

    def text_since(self, mark: int) -> str:
        with self._cond:
            return self._buf[max(0, mark - self._dropped) :].decode("utf-8", "replace")

    def wait_for(
        self, needle: str, timeout: float | None = None, count: int = 1, since: int = 0
    ) -> bool:
        """Block until ``needle`` appears in the transcript ``count`` times (in
        what was printed from the mark ``since`` on); returns True.

        Raises ``ConsoleTimeout`` on timeout, or once the console is closed (the
        machine stopped) without the text having appeared."""
        target = needle.encode()
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while self._buf.count(target, max(0, since - self._dropped)) < count:
                if self._closed:
                    raise ConsoleTimeout(f"{needle!r} never came: the machine stopped")
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise ConsoleTimeout(f"{needle!r} did not come within {timeout:g} s")
                self._cond.wait(remaining)
            return True

    def close(self) -> None:
        """The guest is gone: wake every waiter so nobody waits forever."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
