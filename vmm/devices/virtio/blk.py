"""virtio-blk (block device, ID 2) backed by a host file.

Data moves between the image and guest memory with ``preadv``/``pwritev``
straight into views of guest RAM (no copies).  Every request's sector range is
checked against the image's size before any I/O, so the guest can never make
the VMM read or write outside the image.  FLUSH is ``fdatasync``, once for all
the flushes of a batch, which complete after its other requests (virtio allows
any completion order; a flush covers at least what completed before it); a read-only
image offers VIRTIO_BLK_F_RO and fails writes with VIRTIO_BLK_S_IOERR.

The image is locked while attached, as QEMU does, with an open-file-description
lock on the whole file (``F_OFD_SETLK``): shared for a read-only disk,
exclusive for a writable one, so no two writers (this VM, another Keel, a
QEMU) and no reader beside a writer can use it at once.
"""

from __future__ import annotations

import errno
import fcntl
import os
import stat
import struct
import threading

from vmm.devices.virtio.device import ID_BLOCK, VirtioDevice
from vmm.devices.virtio.queue import Buffer, Chain, DmaGuard, QueueError, Virtqueue
from vmm.devices.virtio.queue import views as guest_views
from vmm.errors import ConfigError
from vmm.kvm.ffi import lib

SECTOR = 512
F_SEG_MAX = 1 << 2
F_RO = 1 << 5
F_BLK_SIZE = 1 << 6
F_FLUSH = 1 << 9

T_IN = 0
T_OUT = 1
T_FLUSH = 4
T_GET_ID = 8

S_OK = 0
S_IOERR = 1
S_UNSUPP = 2

ID_BYTES = 20
HEADER = struct.Struct("<IIQ")


# struct flock on x86-64: l_type, l_whence, l_start, l_len, l_pid (0 for OFD locks).
_FLOCK = "hhqqixxxx"


def lock_image(fd: int, path: str, readonly: bool) -> None:
    """Shared (read-only) or exclusive lock on the whole image, or a ConfigError."""
    kind = fcntl.F_RDLCK if readonly else fcntl.F_WRLCK
    try:
        fcntl.fcntl(fd, fcntl.F_OFD_SETLK, struct.pack(_FLOCK, kind, os.SEEK_SET, 0, 0, 0))
    except OSError as exc:
        if exc.errno not in (errno.EAGAIN, errno.EACCES):
            raise ConfigError(f"cannot lock disk image {path!r}: {exc.strerror}") from None
        mode = "read-only" if readonly else "writable"
        raise ConfigError(
            f"disk image {path!r} is in use: cannot get a {mode} lock (another device, VM "
            "or QEMU has it open for writing, or a writable disk needs it alone)"
        ) from None


class Writeback:
    """Write-out of the image's dirty pages, started in the background after a
    batch of writes (``poke``; ``sync_file_range``, which only starts it), so
    that the ``fdatasync`` of the next flush finds most of them written and
    waits for the rest: a flush still returns only once every write completed
    before it is on the disk.  One thread; pokes while it works coalesce."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self._wake = os.eventfd(0, os.EFD_CLOEXEC)
        self._stop = False
        self.started = 0  # write-outs started (tests)
        self._thread = threading.Thread(target=self._run, name="blk-writeback", daemon=True)
        self._thread.start()

    def poke(self) -> None:
        os.eventfd_write(self._wake, 1)

    def _run(self) -> None:
        while True:
            os.eventfd_read(self._wake)
            if self._stop:
                return
            lib.sync_file_range(self.fd, 0, 0, lib.SYNC_FILE_RANGE_WRITE)
            self.started += 1

    def close(self) -> None:
        self._stop = True
        os.eventfd_write(self._wake, 1)
        self._thread.join(5)
        os.close(self._wake)


class BlockDevice(VirtioDevice):
    device_id = ID_BLOCK
    kind = "disk"
    num_queues = 1
    queue_max = 256
    serve_on_notify = True  # (vmm.devices.virtio.mmio; docs/benchmarks.md measures why)
    inline = True  # serve the usual request layout in ``service`` (False: tests compare)

    def __init__(self, path: str | os.PathLike[str], readonly: bool = False) -> None:
        super().__init__(os.fspath(path))
        self.readonly = readonly
        flags = (os.O_RDONLY if readonly else os.O_RDWR) | os.O_CLOEXEC
        try:
            self.fd = os.open(path, flags)
            st = os.fstat(self.fd)
        except OSError as exc:
            raise ConfigError(f"cannot open disk image {self.backing!r}: {exc.strerror}") from None
        if stat.S_ISBLK(st.st_mode):
            size = os.lseek(self.fd, 0, os.SEEK_END)
        elif stat.S_ISREG(st.st_mode):
            size = st.st_size
        else:
            os.close(self.fd)
            raise ConfigError(f"disk image {self.backing!r} is not a file or block device")
        try:
            lock_image(self.fd, self.backing, readonly)
        except ConfigError:
            os.close(self.fd)
            raise
        self.capacity = size // SECTOR  # a partial last sector is not addressable
        self.writeback: Writeback | None = None  # started at the first write
        self.wrote = False  # a write completed in this batch
        self.serial = os.path.basename(self.backing).encode()[:ID_BYTES]

    def device_features(self) -> int:
        return F_SEG_MAX | F_BLK_SIZE | F_FLUSH | (F_RO if self.readonly else 0)

    def config(self) -> bytes:
        # capacity, size_max, seg_max, geometry (c/h/s), blk_size
        return struct.pack("<QIIHBBI", self.capacity, 0, self.queue_max - 2, 0, 0, 0, SECTOR)

    def service(self, queues: list[Virtqueue | None]) -> bool:
        q = queues[0]
        if q is None:
            return False
        chains = q.pop_all()
        flushes: list[tuple[int, int]] = []
        request, push, view, fd = self._request, q.push, self.mem.view, self.fd
        capacity, inline = self.capacity, self.inline
        for head, buffers, _, _ in chains:
            # The usual request inline: a 16-byte header, one data buffer, a status
            # byte (what _request serves, without its general layout handling).
            if len(buffers) == 3 and inline:
                (h_addr, h_len, h_write), (d_addr, d_len, d_write), (s_addr, s_len, s_write) = (
                    buffers
                )
                if h_len == HEADER.size and not h_write and s_len == 1 and s_write:
                    type_, _, sector = HEADER.unpack_from(view(h_addr, HEADER.size))
                    if type_ == T_IN and d_write:
                        fast = os.preadv
                    elif type_ == T_OUT and not d_write and not self.readonly:
                        fast = os.pwritev
                    else:
                        fast = None
                    if fast is not None:
                        status = S_IOERR
                        if not d_len % SECTOR and sector + d_len // SECTOR <= capacity:
                            try:
                                if fast(fd, (view(d_addr, d_len),), sector * SECTOR) == d_len:
                                    status = S_OK
                            except OSError:
                                pass
                        if status != S_OK:
                            self.errors += 1
                        elif not d_write:
                            self.wrote = True
                        view(s_addr, 1)[0] = status
                        push(head, d_len + 1 if status == S_OK and d_write else 1)
                        continue
            written = request(buffers, head, flushes)
            if written:
                push(head, written)
        if flushes:  # one fdatasync for every flush of the batch, which then completes
            try:
                os.fdatasync(self.fd)
                status = S_OK
            except OSError:
                status = S_IOERR
            for head, status_addr in flushes:
                self.mem.view(status_addr, 1)[0] = status
                q.push(head, 1)
        elif self.wrote:  # start writing this batch's data out while the guest goes on
            if self.writeback is None:
                self.writeback = Writeback(fd)
            self.writeback.poke()
        self.wrote = False
        return bool(chains)

    def _request(
        self, buffers: tuple[Buffer, ...], head: int, flushes: list[tuple[int, int]]
    ) -> int:
        """Serve one request; returns the bytes written into the guest's buffers,
        0 for a flush, which goes into ``flushes`` (head, status byte) instead:
        it completes after the batch's other requests, with one ``fdatasync`` for
        all (it covers at least every write completed before it was made)."""
        split = len(buffers)
        for i, b in enumerate(buffers):
            if b.writable:
                split = i
                break
        readable, writable = buffers[:split], buffers[split:]
        in_len = 0
        for b in readable:
            in_len += b.length
        out_len = 0
        for b in writable:
            out_len += b.length
        if in_len < HEADER.size or out_len < 1:
            raise QueueError(f"blk request {head}: no header or no status byte")
        mem = self.mem
        first = readable[0]
        if first.length >= HEADER.size:  # the usual layout: the header alone
            type_, _, sector = HEADER.unpack_from(mem.view(first.addr, HEADER.size))
        else:
            header = b"".join(bytes(v) for v in guest_views(mem, readable, 0, HEADER.size))
            type_, _, sector = HEADER.unpack(header)
        last = writable[-1]
        status_addr = last.addr + last.length - 1
        data_in = in_len - HEADER.size  # bytes from the guest after the header
        data_out = out_len - 1  # room for the device's data before the status byte
        written = 0
        status = S_OK
        if type_ == T_IN:
            if data_in or not self._in_range(sector, data_out):
                status = S_IOERR
            elif data_out:
                views = guest_views(mem, writable, 0, data_out)
                try:
                    got = os.preadv(self.fd, views, sector * SECTOR)
                except OSError:
                    got = -1
                if got == data_out:
                    written = data_out
                else:
                    status = S_IOERR
        elif type_ == T_OUT:
            if self.readonly or data_out or not self._in_range(sector, data_in):
                status = S_IOERR
            elif data_in:
                views = guest_views(mem, readable, HEADER.size, data_in)
                try:
                    put = os.pwritev(self.fd, views, sector * SECTOR)
                except OSError:
                    put = -1
                if put != data_in:
                    status = S_IOERR
                else:
                    self.wrote = True
        elif type_ == T_FLUSH:
            flushes.append((head, status_addr))
            return 0
        elif type_ == T_GET_ID:
            ident = self.serial.ljust(ID_BYTES, b"\x00")[: min(ID_BYTES, data_out)]
            views = guest_views(mem, writable, 0, len(ident))
            pos = 0
            for v in views:
                v[:] = ident[pos : pos + len(v)]
                pos += len(v)
            written = len(ident)
        else:
            status = S_UNSUPP
        if status != S_OK:
            self.errors += 1
        mem.view(status_addr, 1)[0] = status
        return written + 1

    def refuse(self, chain: Chain, dma: DmaGuard) -> int:
        """Status IOERR in the request's status byte, if the device may write it."""
        if chain.cut or not chain.buffers or not chain.buffers[-1].writable:
            return 0
        last = chain.buffers[-1]
        status_addr = last.addr + last.length - 1
        if not dma.allows(status_addr, 1, True):
            return 0
        self.mem.write(status_addr, bytes([S_IOERR]))
        return 1

    def _in_range(self, sector: int, length: int) -> bool:
        return length % SECTOR == 0 and sector + length // SECTOR <= self.capacity

    def close(self) -> None:
        if self.writeback is not None:
            self.writeback.close()
            self.writeback = None
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def describe(self) -> dict[str, object]:
        return {**super().describe(), "readonly": self.readonly, "sectors": self.capacity}
