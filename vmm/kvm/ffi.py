"""Access to the compiled KVM bindings and a checked ``ioctl``."""

from __future__ import annotations

import os

from vmm.errors import KvmError

TYPE_CHECKING = False  # typing costs ~4 ms of each start (vmm/records.py)
if TYPE_CHECKING:
    from typing import Any

try:
    from vmm.kvm._kvm import ffi, lib
except ImportError as exc:  # pragma: no cover - depends on the build
    raise KvmError(
        "the KVM bindings are not built; run 'make' (python -m vmm.kvm.ffi_build)"
    ) from exc

__all__ = ["ffi", "ioctl", "lib"]


def ioctl(fd: int, request: int, arg: Any = 0, *, what: str = "") -> int:
    """Issue ``ioctl(fd, request, arg)``; raise KvmError naming ``what`` on failure.

    ``arg`` is an int or a cffi pointer.  cffi releases the GIL for the call,
    so one vCPU thread inside KVM_RUN does not stop the others.
    """
    if isinstance(arg, int):
        ret = lib.ioctl(fd, request, ffi.cast("unsigned long", arg))
    else:
        ret = lib.ioctl(fd, request, arg)
    if ret < 0:
        err = ffi.errno
        raise KvmError(f"{what or hex(request)}: {os.strerror(err)}", err)
    return int(ret)
