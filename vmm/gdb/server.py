"""``GdbServer``: the GDB remote serial protocol over TCP or a Unix socket.

    keel run --gdb tcp:127.0.0.1:1234 ...      (or --gdb unix:/tmp/keel-gdb.sock)
    gdb build/kernel.elf -ex 'target remote :1234'

The guest starts stopped and stays stopped until gdb continues it.  Each vCPU
is a thread (gdb's thread N is vCPU N-1).  Packets served: ``?``, ``g``/``G``,
``p``/``P``, ``m``/``M``, ``c``, ``s``, ``vCont`` (a step steps only its
thread), ``Z``/``z`` 0-2, ``H``, ``T``, ``D`` (detach: the guest runs on),
``k``, Ctrl-C, ``qSupported``, ``qXfer:features:read`` (the register
description), thread queries, ``QStartNoAckMode``, ``Qqemu.PhyMemMode`` and
``monitor phys on|off`` (memory packets then address guest-physical memory
instead of virtual), ``monitor breakpoints`` (the strategy ``vmm.gdb.hwdebug``
chose for this host, also named in the start-up line).  Anything else gets
the empty reply, which tells gdb it is not supported.  Execution control is ``vmm.gdb.target``.
``KEEL_GDB_TRACE=1`` in the environment logs every packet both ways.
"""

from __future__ import annotations

import contextlib
import os
import select
import socket
import threading
from collections.abc import Callable

from vmm.errors import ConfigError, KeelError
from vmm.gdb import hwdebug, regs
from vmm.gdb.target import DebugTarget, Refused, Stop
from vmm.machine import Machine

INTERRUPT = b"\x03"
CLOSE_WAIT = 2.0  # seconds a session gets to send gdb the guest's exit status
FEATURES = ("PacketSize=4000;qXfer:features:read+;swbreak+;hwbreak+;QStartNoAckMode+;"
            "vContSupported+")  # fmt: skip
MONITOR_HELP = ("monitor commands: phys on|off (memory by guest-physical address), "
                "breakpoints (how this host serves them), help\n")  # fmt: skip


def parse_address(spec: str) -> tuple[int, str | tuple[str, int]]:
    """``tcp:HOST:PORT`` or ``unix:PATH`` as a socket family and address."""
    kind, _, rest = spec.partition(":")
    if kind == "tcp":
        host, _, port = rest.rpartition(":")
        if not port.isdigit() or not 0 < int(port) < 65536:
            raise ConfigError(f"--gdb {spec!r}: expected tcp:HOST:PORT with a port 1-65535")
        return socket.AF_INET, (host or "127.0.0.1", int(port))
    if kind == "unix" and rest:
        return socket.AF_UNIX, rest
    raise ConfigError(f"--gdb {spec!r}: expected tcp:HOST:PORT or unix:PATH")


def _checksum(data: bytes) -> bytes:
    return b"%02x" % (sum(data) & 0xFF)


def _escape(data: bytes) -> bytes:
    out = bytearray()
    for b in data:
        if b in b"#$}*":
            out += bytes((0x7D, b ^ 0x20))
        else:
            out.append(b)
    return bytes(out)


class _Closed(Exception):
    """gdb went away."""


class GdbServer:
    """Serves ``machine`` to one gdb at a time from a background thread."""

    def __init__(self, machine: Machine, spec: str, log: Callable[[str], None]) -> None:
        family, address = parse_address(spec)
        self.machine, self.spec, self._log = machine, spec, log
        self._path = address if family == socket.AF_UNIX else None
        sock = socket.socket(family, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        try:
            if family == socket.AF_INET:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            elif os.path.exists(str(address)):
                raise ConfigError(f"--gdb {spec!r}: {address} already exists")
            sock.bind(address)
            sock.listen(1)
        except OSError as exc:
            sock.close()
            raise ConfigError(f"--gdb {spec!r}: cannot listen: {exc.strerror}") from None
        self._sock = sock
        self._closed = False
        self._thread: threading.Thread | None = None
        self._conn: socket.socket | None = None

    def start(self) -> None:
        strategy = hwdebug.probe(hwdebug.host_hw_bps(self.machine.guest.system))
        self._log(f"keel: gdb: the guest is stopped; waiting for gdb on {self.spec} "
                  f"(breakpoints: {strategy})")  # fmt: skip
        self._thread = threading.Thread(target=self._serve, name="gdb", daemon=True)
        self._thread.start()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)
        self._sock.close()
        if self._path is not None:
            with contextlib.suppress(OSError):
                os.unlink(str(self._path))
        if self._thread is not None:
            # A session tells gdb how the guest ended before the process exits.
            self._thread.join(CLOSE_WAIT)
        if self._conn is not None:
            with contextlib.suppress(OSError):
                self._conn.shutdown(socket.SHUT_RDWR)  # gdb sees the end at once

    def _serve(self) -> None:
        while not self._closed and self.machine.result is None:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            self._conn = conn
            with conn:
                try:
                    _Session(self.machine, conn, self._log).run()
                except _Closed:
                    pass
                except KeelError as exc:
                    self._log(f"keel: gdb: {exc}")


class _Session:
    def __init__(self, machine: Machine, conn: socket.socket, log: Callable[[str], None]) -> None:
        self.machine, self.conn, self._log = machine, conn, log
        self.target = DebugTarget(machine)
        self.buffer = bytearray()
        self.ack = True
        self.g_thread = 0  # 0: the thread that stopped last
        self.c_thread = 0
        self.done = False

    # -- framing ------------------------------------------------------------------------
    def _recv(self) -> None:
        try:
            data = self.conn.recv(65536)
        except OSError:
            data = b""
        if not data:
            raise _Closed
        self.buffer += data

    def _packet(self) -> bytes:
        """The next command packet (acks and stray bytes are skipped)."""
        while True:
            start = self.buffer.find(b"$")
            if start < 0:
                self.buffer.clear()
            else:
                end = self.buffer.find(b"#", start)
                if end >= 0 and len(self.buffer) >= end + 3:
                    body = bytes(self.buffer[start + 1 : end])
                    ok = bytes(self.buffer[end + 1 : end + 3]).lower() == _checksum(body)
                    del self.buffer[: end + 3]
                    if self.ack:
                        self.conn.sendall(b"+" if ok else b"-")
                    if ok:
                        return body
                    continue
            self._recv()

    def _send(self, body: bytes | str) -> None:
        data = _escape(body.encode() if isinstance(body, str) else body)
        if os.environ.get("KEEL_GDB_TRACE"):
            self._log(f"gdb< {data[:80]!r}")
        self.conn.sendall(b"$" + data + b"#" + _checksum(data))

    # -- the session ----------------------------------------------------------------------
    def run(self) -> None:
        self.target.halt()
        try:
            self._loop()
        finally:
            if not self.done:  # gdb vanished (no D, k or exit): the guest runs on
                self.target.release()

    def _loop(self) -> None:
        while not self.done:
            packet = self._packet()
            if os.environ.get("KEEL_GDB_TRACE"):
                self._log(f"gdb> {packet[:80]!r}")
            try:
                reply = self._handle(packet)
            except Refused as exc:
                self._log(f"keel: gdb: {exc}")
                reply = "E." + str(exc)
            except (KeelError, OSError, ValueError, IndexError) as exc:
                self._log(f"keel: gdb: {packet[:40]!r}: {exc}")
                reply = "E01"
            if reply is not None:
                self._send(reply)

    def _thread(self, text: bytes) -> int:
        value = int(text, 16) if text not in (b"-1", b"") else 0
        if value and value not in self.target.threads():
            raise Refused(f"no thread {value}")
        return value

    def _handle(self, p: bytes) -> str | bytes | None:
        t = self.target
        head = p[:1]
        if p == b"?":
            return self._stop_packet(t.last)
        if p.startswith(b"qSupported"):
            return FEATURES
        if p == b"QStartNoAckMode":
            self._send("OK")
            self.ack = False
            return None
        if p.startswith(b"qXfer:features:read:target.xml:"):
            offset, length = (int(x, 16) for x in p.rsplit(b":", 1)[1].split(b","))
            chunk = regs.TARGET_XML.encode()[offset : offset + length]
            return (b"m" if offset + len(chunk) < len(regs.TARGET_XML) else b"l") + chunk
        if p == b"qfThreadInfo":
            return "m" + ",".join(f"{n:x}" for n in t.threads())
        if p == b"qsThreadInfo":
            return "l"
        if p == b"qC":
            return f"QC{t.last.thread:x}"
        if p == b"qAttached":
            return "1"
        if p.startswith(b"qThreadExtraInfo,"):
            return t.describe(int(p.split(b",")[1], 16)).encode().hex()
        if p.startswith(b"qRcmd,"):
            return self._monitor(bytes.fromhex(p[6:].decode()).decode(errors="replace"))
        if p.startswith(b"Qqemu.PhyMemMode:"):
            t.physical = p.endswith(b"1")
            return "OK"
        if p == b"qqemu.PhyMemMode":
            return "1" if t.physical else "0"
        if head == b"H":
            thread = self._thread(p[2:])
            if p[1:2] == b"g":
                self.g_thread = thread
            else:
                self.c_thread = thread
            return "OK"
        if head == b"T":
            self._thread(p[1:])
            return "OK"
        if p == b"g":
            return b"".join(t.registers(self.g_thread)).hex()
        if head == b"G":
            for i, value in enumerate(regs.split(bytes.fromhex(p[1:].decode()))):
                t.write_register(self.g_thread, i, value)
            return "OK"
        if head == b"p":
            index = int(p[1:], 16)
            values = t.registers(self.g_thread)
            return values[index].hex() if index < len(values) else "E45"
        if head == b"P":
            number, data = p[1:].split(b"=")
            t.write_register(self.g_thread, int(number, 16), bytes.fromhex(data.decode()))
            return "OK"
        if head == b"m":
            addr, length = (int(x, 16) for x in p[1:].split(b","))
            data = t.read_memory(self.g_thread, addr, min(length, 0x1000))
            return data.hex() if data or not length else "E14"
        if head == b"M":
            where, data = p[1:].split(b":")
            addr, _ = (int(x, 16) for x in where.split(b","))
            ok = t.write_memory(self.g_thread, addr, bytes.fromhex(data.decode()))
            return "OK" if ok else "E14"
        if head in (b"Z", b"z"):
            kind, addr, length = (int(x, 16) for x in p[1:].split(b";")[0].split(b","))
            if head == b"Z":
                t.insert(kind, addr, length, self.g_thread)
            else:
                t.remove(kind, addr, length, self.g_thread)
            return "OK"
        if p == b"vCont?":
            return "vCont;c;C;s;S"
        if p.startswith(b"vCont;"):
            return self._vcont(p[6:])
        if head in (b"c", b"C"):
            return self._continue()
        if head in (b"s", b"S"):
            return self._stop_packet(t.step(self.c_thread or t.last.thread))
        if head == b"D":
            t.detach()
            self._send("OK")
            self.done = True
            return None
        if p in (b"k", b"vKill") or p.startswith(b"vKill;"):
            self.machine.stop()
            if p != b"k":
                self._send("OK")
            self.done = True
            return None
        return ""

    def _vcont(self, actions: bytes) -> str | None:
        """A step action steps its thread alone; otherwise everything continues."""
        for action in actions.split(b";"):
            verb, _, which = action.partition(b":")
            if verb[:1] in (b"s", b"S"):
                tid = int(which, 16) if which and which != b"-1" else 0
                return self._stop_packet(self.target.step(tid or self.target.last.thread))
        return self._continue()

    def _continue(self) -> str | None:
        t = self.target
        t.resume()
        while True:
            stop = t.wait(0.05)
            if self.machine.result is not None:
                return self._exit_packet()
            if stop is not None:
                return self._stop_packet(stop)
            ready, _, _ = select.select([self.conn], [], [], 0)
            if ready:
                self._recv()
                if INTERRUPT in self.buffer:
                    del self.buffer[: self.buffer.index(INTERRUPT) + 1]
                    t.interrupt()

    def _stop_packet(self, stop: Stop) -> str:
        if self.machine.result is not None:
            return self._exit_packet()
        self.g_thread = stop.thread  # gdb takes the stopped thread as the current one
        return f"T{stop.signal:02x}{stop.extra}thread:{stop.thread:x};"

    def _exit_packet(self) -> str:
        result = self.machine.result
        assert result is not None
        self.done = True
        return f"W{result.status & 0xFF:02x}"

    def _monitor(self, command: str) -> str:
        words = command.split()
        if words[:1] == ["phys"] and words[1:] in (["on"], ["off"]):
            self.target.physical = words[1] == "on"
            text = f"memory is addressed {'physically' if self.target.physical else 'virtually'}\n"
        elif words == ["breakpoints"]:
            text = f"breakpoints: {self.target.strategy()}\n"
        else:
            text = MONITOR_HELP
        self._send(b"O" + text.encode().hex().encode())
        return "OK"
