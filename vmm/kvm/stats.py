"""KVM's own counters of a VM or a vCPU: the binary statistics interface
(``KVM_GET_STATS_FD``, Linux 5.14 and later; Documentation/virt/kvm/api.rst,
section 4.133).

The ioctl on a VM or vCPU file descriptor returns a read-only file: a
header, then one descriptor per counter (flags, exponent, size in u64s,
offset into the data block, bucket size, name), then the data block, which
the kernel keeps current - each ``read`` is one ``pread`` of it.  A counter
of several u64s (a histogram) is read as their sum.

On this project's development host (``kvm_pvm``, which emulates guest
supervisor code) ``insn_emulation`` counts the kernel's instructions one by
one, so the guest kernel's path length can be read off a running guest
without stepping it (``scripts/bench --storm-work``).
"""

from __future__ import annotations

import os
import struct

from vmm.errors import KvmError
from vmm.kvm.ffi import ioctl

TYPE_CHECKING = False  # typing costs ~4 ms of each start (vmm/records.py)
if TYPE_CHECKING:
    from typing import Any

KVM_GET_STATS_FD = 0xAECE  # _IO(KVMIO, 0xce)
_HEADER = struct.Struct("<6I")  # flags, name_size, num_desc, id, desc and data offsets
_DESC = struct.Struct("<IhHII")  # flags, exponent, size, offset, bucket_size


def open_stats(owner_fd: int) -> int:
    """The statistics file of a VM or vCPU file descriptor (-1: none on this
    host).  Opened before the vCPUs run: KVM serves a vCPU's ioctls under the
    vCPU's own lock, which KVM_RUN holds, so asked from another vCPU's thread
    it would wait for that vCPU to leave the guest - which may be waiting
    for this one.  Reading the file takes no lock."""
    try:
        return ioctl(owner_fd, KVM_GET_STATS_FD, what="KVM_GET_STATS_FD")
    except KvmError:
        return -1


class KvmStats:
    """The counters in one statistics file (``open_stats``), by name."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        _flags, name_size, count, _id, desc_at, data_at = _HEADER.unpack(
            os.pread(fd, _HEADER.size, 0)
        )
        step = _DESC.size + name_size
        raw = os.pread(fd, step * count, desc_at)
        fields: list[tuple[str, int, int]] = []
        for i in range(count):
            at = i * step
            _f, _exp, size, offset, _bucket = _DESC.unpack_from(raw, at)
            name = raw[at + _DESC.size : at + step].split(b"\0", 1)[0].decode()
            fields.append((name, offset, size))
        self._fields = fields
        self._data_at = data_at
        self._length = max((off + 8 * size for _n, off, size in fields), default=0)

    def read(self) -> dict[str, int]:
        data = os.pread(self.fd, self._length, self._data_at)
        out = {}
        for name, offset, size in self._fields:
            out[name] = sum(struct.unpack_from(f"<{size}Q", data, offset))
        return out


class GuestStats:
    """The statistics files of a VM and of each of its vCPUs (``add``: the VM's
    first), read by name.  Closing keeps their last reading, so the counters
    of a machine that stopped stay readable."""

    def __init__(self) -> None:
        self.fds: list[int] = []
        self._parsed: list[KvmStats] = []
        self._final: dict[str, Any] | None = None

    def add(self, owner_fd: int) -> None:
        self.fds.append(open_stats(owner_fd))

    def read(self) -> dict[str, Any]:
        """{"vm": {name: value}, "vcpus": [{name: value}, ...]}; empty where
        the host has no statistics."""
        if self._final is not None:
            return self._final
        if min(self.fds, default=-1) < 0:
            return {"vm": {}, "vcpus": []}
        if not self._parsed:
            self._parsed = [KvmStats(fd) for fd in self.fds]
        vm, *vcpus = (f.read() for f in self._parsed)
        return {"vm": vm, "vcpus": vcpus}

    def close(self) -> None:
        try:
            self._final = self.read()
        except OSError:
            self._final = {"vm": {}, "vcpus": []}
        for fd in self.fds:
            if fd >= 0:
                os.close(fd)
        self.fds = []
