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
from collections.abc import Callable

from vmm.devices.virtio.device import ID_BLOCK, VirtioDevice
from vmm.devices.virtio.queue import (
    Buffer,
    Chain,
    DmaGuard,
    GuestRam,
    QueueError,
    Virtqueue,
    ring_sizes,
)
from vmm.devices.virtio.queue import views as guest_views
from vmm.errors import ConfigError
from vmm.kvm.ffi import ffi, lib

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


class FastPath:
    """virtio-blk's usual request served in C (vmm/kvm/blkfast.c): ``parse`` takes
    the chains at the head of the available ring that ``read_chain`` would accept
    as header, data and status with the DMA windows allowing each buffer;
    ``serve`` serves them in order as ``BlockDevice._serve_chain`` would, handing
    it back any whose header asks for something else.  Python validates and
    serves everything after the first chain C does not take, as before."""

    def __init__(self, dev: BlockDevice, mem: GuestRam) -> None:
        self.mem = mem
        self.q = ffi.new("struct keel_blk_queue *")
        self.reqs = ffi.new("struct keel_blk_req[]", dev.queue_max)
        ranges = mem.host_ranges()  # type: ignore[attr-defined]
        self.ram = ffi.new("uint64_t[]", [v for r in ranges for v in r])
        self.q.ram, self.q.nram = self.ram, len(ranges)
        self.q.fd, self.q.readonly, self.q.capacity = dev.fd, dev.readonly, dev.capacity
        self.dev = dev
        self._source: tuple[object, object] = (None, None)  # the runs ``_arrays`` copy
        self._arrays: list[object] = []
        self._batch: tuple[Virtqueue | None, int, bool] = (None, 0, False)  # queue, batch, ok

    def begin(self, q: Virtqueue) -> bool:
        """Point the C queue at this batch's rings and DMA runs (once a batch: its
        rounds share them); False when it cannot serve this queue now."""
        last, batch, ok = self._batch
        if last is q and batch == q.batches:
            return ok
        ok = self._begin(q)
        self._batch = (q, q.batches, ok)
        return ok

    def _begin(self, q: Virtqueue) -> bool:
        # The rings as wholes, as ``Virtqueue.begin`` checked them (in RAM: checked
        # at set-up); C reads and writes them in place.
        d_len, a_len, u_len = ring_sizes(q.size, q.event_idx)
        rings = ((q.desc, d_len, False), (q.driver, a_len, False), (q.device, u_len, True))
        dma, host, c = q.dma, self.mem.host, self.q  # type: ignore[attr-defined]
        if dma is not None and not all(dma.allows(*ring) for ring in rings):
            return False
        c.table, c.avail, c.used = (host(a, n) for a, n, _ in rings)
        c.size = q.size
        if dma is None:
            c.nrd = c.nwr = -1
            return True
        covers_of = getattr(dma, "covers", None)
        if covers_of is None:
            return False  # a guard asked access by access (``allows``)
        covers = covers_of()
        if covers is None:
            c.nrd = c.nwr = -1
            return True
        (rs, re), (ws, we) = covers
        if self._source[0] is not rs or self._source[1] is not ws:  # swapped whole on a change
            self._arrays = [ffi.new("uint64_t[]", v or [0]) for v in (rs, re, ws, we)]
            self._source = (rs, ws)
        c.rd_starts, c.rd_ends, c.wr_starts, c.wr_ends = self._arrays
        c.nrd, c.nwr = len(rs), len(ws)
        return True

    def parse(self, q: Virtqueue) -> int:
        """How many chains from the queue's next one on C takes (consumed)."""
        c = self.q
        c.next_avail = q.next_avail
        n: int = lib.keel_blk_parse(c, self.reqs)
        q.next_avail = (q.next_avail + n) & 0xFFFF
        return n

    def serve(self, q: Virtqueue, n: int, serve_chain: ServeChain, flushes: list[tuple[int, int]]
              ) -> None:  # fmt: skip
        """Serve the ``n`` parsed chains, in order."""
        c, reqs, dev = self.q, self.reqs, self.dev
        k = 0
        while k < n:
            c.used_idx = q.used_idx
            c.bytes = c.requests = c.errors = c.wrote = 0
            k = lib.keel_blk_serve(c, reqs, k, n)
            q.used_idx = c.used_idx
            q.requests += c.requests
            q.bytes += c.bytes
            dev.errors += c.errors
            if c.wrote:
                dev.wrote = True
            if k < n:  # a request C leaves to Python
                r = reqs[k]
                buffers = (
                    Buffer(r.hdr, HEADER.size, False),
                    Buffer(r.data, r.data_len, bool(r.data_write)),
                    Buffer(r.status, 1, True),
                )
                serve_chain(q, r.head, buffers, flushes)
                k += 1


ServeChain = Callable[[Virtqueue, int, tuple[Buffer, ...], list[tuple[int, int]]], None]


class BlockDevice(VirtioDevice):
    device_id = ID_BLOCK
    kind = "disk"
    num_queues = 1
    queue_max = 256
    serve_on_notify = True  # (vmm.devices.virtio.mmio; docs/benchmarks.md measures why)
    inline = True  # serve the usual request layout in ``service`` (False: tests compare)
    fast = True  # ... in C when it can (vmm/kvm/blkfast.c; False: tests compare)

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
        self._fast: FastPath | None = None  # made at the first batch
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
        flushes: list[tuple[int, int]] = []
        fast = self._fast_path(q) if self.inline else None
        # The usual requests at the head of the ring, parsed in C (the rest below,
        # as before; a chain C does not take ends its prefix).
        parsed = fast.parse(q) if fast is not None else 0
        chains = q.pop_all()
        if parsed:
            assert fast is not None
            fast.serve(q, parsed, self._serve_chain, flushes)
        for head, buffers, _, _ in chains:
            self._serve_chain(q, head, buffers, flushes)
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
                self.writeback = Writeback(self.fd)
            self.writeback.poke()
        self.wrote = False
        return bool(chains) or bool(parsed)

    def _serve_chain(
        self, q: Virtqueue, head: int, buffers: tuple[Buffer, ...], flushes: list[tuple[int, int]]
    ) -> None:
        view = self.mem.view
        # The usual request inline: a 16-byte header, one data buffer, a status
        # byte (what _request serves, without its general layout handling).
        if len(buffers) == 3 and self.inline:
            (h_addr, h_len, h_write), (d_addr, d_len, d_write), (s_addr, s_len, s_write) = buffers
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
                    if not d_len % SECTOR and sector + d_len // SECTOR <= self.capacity:
                        try:
                            if fast(self.fd, (view(d_addr, d_len),), sector * SECTOR) == d_len:
                                status = S_OK
                        except OSError:
                            pass
                    if status != S_OK:
                        self.errors += 1
                    elif not d_write:
                        self.wrote = True
                    view(s_addr, 1)[0] = status
                    q.push(head, d_len + 1 if status == S_OK and d_write else 1)
                    return
        written = self._request(buffers, head, flushes)
        if written:
            q.push(head, written)

    def _fast_path(self, q: Virtqueue) -> FastPath | None:
        """The C path for this queue's batch, or None when it cannot be used: it is
        off (``fast``), the queue checks its rings piece by piece this batch, or
        memory, RAM check or DMA guard are not the ones it reproduces."""
        if not self.fast or q.in_ram != getattr(self.mem, "contains", None):
            return None
        fp = self._fast
        if fp is None or fp.mem is not self.mem:
            if getattr(self.mem, "host_ranges", None) is None:
                return None
            fp = self._fast = FastPath(self, self.mem)
        return fp if fp.begin(q) else None

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
