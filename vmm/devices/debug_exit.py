"""The exit device: QEMU's ``isa-debug-exit`` convention on port 0xf4.

A guest writes one value ``v``.  QEMU exits with status ``(v << 1) | 1``, so
a guest can never report 0 there; Keel's kernel writes ``PASS`` (0x10) for
success.  Keel's VMM maps ``PASS`` to exit status 0 and any other value to
QEMU's status, so the same kernel gives the same verdict under both.
"""

from __future__ import annotations

from collections.abc import Callable

PORT = 0xF4
PASS = 0x10
FAIL = 0x11


def exit_status(value: int) -> int:
    """The host process exit status for a guest-written ``value``."""
    if value == PASS:
        return 0
    return ((value << 1) | 1) & 0xFF


class DebugExit:
    def __init__(self, on_exit: Callable[[int], None]) -> None:
        self._on_exit = on_exit

    def read(self, offset: int, size: int) -> bytes:
        return b"\xff" * size

    def write(self, offset: int, data: bytes) -> None:
        if offset == 0:
            self._on_exit(int.from_bytes(data, "little"))
