"""The control socket: ``Machine`` operations for other processes, as JSON.

``keel run --api-sock PATH`` serves a Unix stream socket (mode 0600, so only
its owner may steer the VM).  Each request is one JSON object on one line
(at most 64 KiB); each gets exactly one reply line, in order:
``{"ok": true, "result": ...}`` or ``{"ok": false, "error": "one line"}``,
with the request's ``"id"`` (any JSON value) echoed when it had one.  A
request is checked strictly: an unknown command or argument, or an argument
of the wrong type, is refused; nothing a client sends stops the VMM except
``stop``.

    {"cmd": "attach", "kind": "disk", "path": "disk.img", "readonly": false, "wait": true}
    {"cmd": "attach", "kind": "net", "tap": "tap0", "mac": "52:54:00:12:34:56"}
    {"cmd": "attach", "kind": "rng"}   {"cmd": "attach", "kind": "console", "output": "c.log"}
    {"cmd": "detach", "device": "disk0", "wait": true, "timeout": 10, "force": false}
    {"cmd": "devices"}  {"cmd": "status"}  {"cmd": "pause"}  {"cmd": "resume"}
    {"cmd": "stop"}  {"cmd": "version"}  {"cmd": "commands"}
    {"cmd": "metrics"}                        (every counter, see vmm/metrics.py)
    {"cmd": "snapshot", "dir": "/abs/dir", "resume": true}   (see vmm/snapshot)
    {"cmd": "subscribe"}   then events on this connection, between replies:
        {"event": "DEVICE_DELETED", "data": {"id": "disk0"}, "timestamp": 1733500000.1}
    {"cmd": "console"}     then this connection is the serial console, raw bytes both ways

Events: DEVICE_ATTACHED, DEVICE_BOUND (the guest's driver set DRIVER_OK),
DEVICE_DELETED (the guest released it, or it was removed by force),
DMA_REFUSED (a device's access outside its IOMMU windows) and STOP (the guest
ended: its exit status and reason).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import stat
import threading
import time
from collections.abc import Callable
from typing import Any

from vmm import __version__, snapshot
from vmm.devices import registry
from vmm.errors import ApiError, ConfigError, KeelError
from vmm.machine import Machine

__all__ = ["ApiError", "ApiServer", "dispatch", "request"]

MAX_REQUEST = 64 << 10
PROTOCOL = 2
UNIX_PATH_MAX = 107  # sun_path holds 108 bytes, the last a NUL

# Each command's arguments: name -> (type, required, help).  "id" (the request id)
# and "cmd" are allowed everywhere; attach also takes its kind's options.
_NUMBER = (int, float)
COMMANDS: dict[str, tuple[str, dict[str, tuple[Any, bool, str]]]] = {
    "attach": ("attach a device", {
        "kind": (str, True, f"one of {', '.join(registry.KINDS)}"),
        "wait": (bool, False, "reply once the guest bound a driver"),
        "timeout": (_NUMBER, False, "seconds to wait (default 30)"),
    }),
    "detach": ("remove a device (the guest releases it first)", {
        "device": (str, True, "a device id, image path or TAP name"),
        "wait": (bool, False, "reply once the guest released it"),
        "timeout": (_NUMBER, False, "seconds to wait (default 30)"),
        "force": (bool, False, "remove at once, whatever the guest does"),
    }),
    "devices": ("list the devices", {}),
    "status": ("the machine's state", {}),
    "pause": ("pause every vCPU", {}),
    "resume": ("resume a paused machine", {}),
    "stop": ("stop the machine", {}),
    "version": ("the VMM's and the protocol's versions", {}),
    "commands": ("this list", {}),
    "subscribe": ("send events on this connection", {}),
    "console": ("make this connection the serial console (raw bytes)", {}),
    "metrics": ("every counter (vmm/metrics.py)", {}),
    "snapshot": ("save the guest to a new directory (vmm/snapshot)", {
        "dir": (str, True, "an absolute path: a new or empty directory"),
        "resume": (bool, False, "resume the guest afterwards (default true)"),
    }),
}  # fmt: skip


def _check(req: dict[str, Any], spec: dict[str, tuple[Any, bool, str]], cmd: str) -> None:
    for name, (kind, required, _help) in spec.items():
        if name not in req:
            if required:
                raise ApiError(f"missing argument {name!r}")
            continue
        value = req[name]
        if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
            what = "number" if kind is _NUMBER else kind.__name__
            raise ApiError(f"argument {name!r} must be a {what}")


def dispatch(machine: Machine, req: object) -> Any:
    """Perform one decoded request; returns the result or raises a KeelError."""
    if not isinstance(req, dict):
        raise ApiError("a request must be a JSON object")
    if "cmd" not in req:
        raise ApiError("missing argument 'cmd'")
    cmd = req["cmd"]
    if not isinstance(cmd, str):
        raise ApiError("argument 'cmd' must be a string")
    if cmd not in COMMANDS:
        raise ApiError(f"unknown command {cmd!r} (one of {', '.join(COMMANDS)})")
    spec = COMMANDS[cmd][1]
    _check(req, spec, cmd)
    allowed = {"cmd", "id", *spec}
    if cmd == "attach":
        kind = registry.lookup(req["kind"])
        allowed |= {o.name for o in kind.options}
    unknown = sorted(set(req) - allowed)
    if unknown:
        raise ApiError(f"{cmd}: unknown argument {unknown[0]!r} "
                       f"(expected: {', '.join(sorted(allowed - {'cmd', 'id'})) or 'none'})")
    timeout = float(req.get("timeout", 30))
    if cmd == "attach":
        options = {o.name: req[o.name] for o in kind.options if o.name in req}
        return {"id": machine.attach(kind.name, wait=req.get("wait", False), timeout=timeout,
                                     **options)}  # fmt: skip
    if cmd == "detach":
        machine.detach(req["device"], force=req.get("force", False),
                       wait=req.get("wait", False), timeout=timeout)  # fmt: skip
        return None
    if cmd == "devices":
        return machine.devices()
    if cmd == "pause":
        machine.pause()
        return None
    if cmd == "resume":
        machine.resume()
        return None
    if cmd == "status":
        return {"state": machine.state.value, "vcpus": machine.smp, "memory": machine.memory,
                "devices": len(machine.devices()),
                "iommu": "on" if machine.iommu.enabled else "off",
                "dma_faults": machine.iommu.total_faults, "pid": os.getpid(),
                "subscribers": machine.subscriber_count}  # fmt: skip
    if cmd == "metrics":
        return machine.metrics()
    if cmd == "snapshot":
        return snapshot.take(machine, req["dir"], req.get("resume", True))
    if cmd == "version":
        return {"keel": __version__, "protocol": PROTOCOL}
    if cmd == "commands":
        return [describe_command(name) for name in COMMANDS]
    return None  # stop, subscribe, console: the connection does the rest


def describe_command(name: str) -> dict[str, Any]:
    help, spec = COMMANDS[name]
    args = {a: {"type": "number" if t is _NUMBER else t.__name__, "required": r, "help": h}
            for a, (t, r, h) in spec.items()}  # fmt: skip
    if name == "attach":
        for kind in registry.KINDS.values():
            for o in kind.options:
                args.setdefault(o.name, {"type": o.type.__name__, "required": False,
                                         "help": f"{kind.name}: {o.help or o.name}"})  # fmt: skip
    return {"name": name, "help": help, "args": args}


class _Connection:
    """One client: requests in, replies and (once subscribed) events out.

    Everything sent goes through a queue and a writer thread, in order: events
    and console output come from vCPU and device threads, which a slow client
    must never stall.  A client more than ``MAX_BACKLOG`` bytes behind is
    disconnected."""

    MAX_BACKLOG = 4 << 20

    def __init__(self, server: ApiServer, conn: socket.socket) -> None:
        self.server, self.conn = server, conn
        self._out: list[bytes] = []
        self._backlog = 0
        self._cond = threading.Condition()
        self._closed = False
        self._unsubscribe: list[Callable[[], None]] = []
        threading.Thread(target=self._write, name="api-writer", daemon=True).start()

    def send(self, obj: object) -> None:
        self.send_bytes(json.dumps(obj).encode() + b"\n")

    def send_bytes(self, data: bytes) -> None:
        with self._cond:
            if self._closed:
                return
            if self._backlog + len(data) > self.MAX_BACKLOG:
                self._closed = True  # too far behind: the writer ends the connection
            else:
                self._out.append(data)
                self._backlog += len(data)
            self._cond.notify()

    def _write(self) -> None:
        while True:
            with self._cond:
                while not self._out and not self._closed:
                    self._cond.wait()
                if not self._out:
                    break
                data = b"".join(self._out)
                self._out.clear()
                self._backlog = 0
            try:
                self.conn.sendall(data)
            except OSError:
                break
        with contextlib.suppress(OSError):
            self.conn.shutdown(socket.SHUT_RDWR)
        self.conn.close()

    def serve(self) -> None:
        try:
            self._serve()
        finally:
            for unsubscribe in self._unsubscribe:
                unsubscribe()
            with self._cond:
                self._closed = True  # the writer sends what is queued, then closes
                self._cond.notify()

    def _lines(self) -> Any:
        """Each request line; an over-long one is one ``None`` (then skipped to its end)."""
        buf, skipping = bytearray(), False
        while True:
            try:
                data = self.conn.recv(65536)
            except OSError:
                return
            if not data:
                return
            buf += data
            while (end := buf.find(b"\n")) >= 0:
                line = bytes(buf[:end])
                del buf[: end + 1]
                if skipping:
                    skipping = False
                    continue
                yield None if len(line) > MAX_REQUEST else line
            if len(buf) > MAX_REQUEST:
                buf.clear()
                if not skipping:
                    skipping = True
                    yield None

    def _serve(self) -> None:
        for line in self._lines():
            if line is not None and not line.strip():
                continue
            req, reply = self.server.handle(line)
            cmd = req.get("cmd") if isinstance(req, dict) else None
            self.send(reply)
            if not reply["ok"]:
                continue
            if cmd == "stop":
                self.server.machine.stop()
                return
            if cmd == "subscribe":
                self._unsubscribe.append(self.server.machine.subscribe(self._event))
            if cmd == "console":
                self._console()
                return

    def _event(self, name: str, data: dict[str, Any]) -> None:
        self.send({"event": name, "data": data, "timestamp": time.time()})

    def _console(self) -> None:
        """Raw bytes: the guest's console output out, typed bytes in."""
        machine = self.server.machine
        self._unsubscribe.append(machine.console.listen(self.send_bytes))
        while True:
            try:
                data = self.conn.recv(4096)
            except OSError:
                return
            if not data:
                return
            with contextlib.suppress(KeelError):
                machine.send_console(data)


class ApiServer:
    """Serves ``machine`` on a Unix socket at ``path`` from a background thread."""

    def __init__(self, machine: Machine, path: str | os.PathLike[str]) -> None:
        self.machine = machine
        self.path = os.fspath(path)
        self._sock = _bind_private(self.path)
        self._closed = False
        self._thread = threading.Thread(target=self._serve, name="api", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._closed:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            threading.Thread(target=_Connection(self, conn).serve, name="api-client",
                             daemon=True).start()  # fmt: skip

    def handle(self, line: bytes | None) -> tuple[object, dict[str, Any]]:
        """One request line -> (the decoded request or None, the reply)."""
        if line is None:
            return None, {"ok": False, "error": f"request longer than {MAX_REQUEST} bytes"}
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError:
            return None, {"ok": False, "error": "malformed JSON: the request is not UTF-8 text"}
        try:
            req = json.loads(text)
        except ValueError as exc:
            return None, {"ok": False, "error": f"malformed JSON: {exc}"}
        reply: dict[str, Any]
        try:
            reply = {"ok": True, "result": dispatch(self.machine, req)}
        except KeelError as exc:
            reply = {"ok": False, "error": str(exc)}
        except Exception as exc:  # a VMM bug: report it, keep serving
            reply = {"ok": False, "error": f"internal error: {exc!r}"}
        if isinstance(req, dict) and "id" in req:
            reply["id"] = req["id"]
        return req, reply

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)
        self._sock.close()
        with contextlib.suppress(OSError):
            os.unlink(self.path)


def check_path(path: str) -> None:
    if len(os.fsencode(path)) > UNIX_PATH_MAX:
        raise ConfigError(
            f"API socket path {path!r} is {len(os.fsencode(path))} bytes long; a Unix "
            f"socket path is at most {UNIX_PATH_MAX} bytes (use a shorter one, e.g. in /tmp)"
        )


def _bind_private(path: str) -> socket.socket:
    """A listening socket created with mode 0600 (no window where others may connect)."""
    check_path(path)
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        pass
    else:
        if not stat.S_ISSOCK(st.st_mode):
            raise ConfigError(f"API socket path {path!r} exists and is not a socket")
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.connect(path)
        except OSError:
            os.unlink(path)  # stale: left by a VMM that died
        else:
            raise ConfigError(f"API socket {path!r} is in use by another VMM")
        finally:
            probe.close()
    # Bound and listening under a private name first, then renamed into place: once
    # ``path`` exists it accepts connections (a client polling for it never sees a
    # socket that refuses them).
    temp = os.path.join(os.path.dirname(path), f".keel{os.getpid()}")
    if len(os.fsencode(temp)) > UNIX_PATH_MAX:
        temp = path  # no room for the private name: bound in place
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    old = os.umask(0o177)
    try:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp)
        sock.bind(temp)
        os.chmod(temp, 0o600)
        sock.listen(socket.SOMAXCONN)  # many clients at once: a full backlog refuses them
        if temp != path:
            os.rename(temp, path)
    except OSError as exc:
        sock.close()
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise ConfigError(f"cannot create API socket {path!r}: {exc.strerror or exc}") from None
    finally:
        os.umask(old)
    return sock


def connect(path: str | os.PathLike[str], timeout: float | None = 30) -> socket.socket:
    path = os.fspath(path)
    check_path(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    sock.settimeout(timeout)
    try:
        sock.connect(path)
    except OSError as exc:
        sock.close()
        raise ApiError(f"cannot reach the VMM at {path!r}: {exc.strerror or exc}") from None
    return sock


def request(path: str | os.PathLike[str], req: dict[str, Any], timeout: float = 30) -> Any:
    """Send one request to the VMM at ``path``; returns the result or raises ApiError."""
    with connect(path, timeout) as sock:
        try:
            sock.sendall(json.dumps(req).encode() + b"\n")
            line = sock.makefile("rb").readline()
        except TimeoutError:
            raise ApiError(f"the VMM at {os.fspath(path)!r} did not answer within "
                           f"{timeout:g} s") from None  # fmt: skip
        except OSError as exc:
            raise ApiError(f"lost the VMM at {os.fspath(path)!r}: {exc.strerror or exc}") from None
    if not line:
        raise ApiError("the VMM closed the connection without replying")
    try:
        reply = json.loads(line)
    except ValueError:
        raise ApiError("the VMM sent a malformed reply") from None
    if not reply.get("ok"):
        raise ApiError(str(reply.get("error", "unknown error")))
    return reply.get("result")
