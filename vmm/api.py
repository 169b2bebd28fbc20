"""The control socket: ``Machine`` operations for other processes, as JSON.

``keel run --api-sock PATH`` serves a Unix stream socket (mode 0600, so only
its owner may steer the VM).  Each request is one JSON object on one line;
each reply is one line: ``{"ok": true, "result": ...}`` or
``{"ok": false, "error": "one line"}``.  A malformed or unknown request gets
an error reply; nothing a client sends stops the VMM except ``stop``.

    {"cmd": "attach", "kind": "disk", "path": "disk.img", "readonly": false}
    {"cmd": "attach", "kind": "net", "tap": "tap0", "mac": "52:54:00:12:34:56"}
    {"cmd": "attach", "kind": "rng"}
    {"cmd": "attach", "kind": "console", "output": "console.log"}
    {"cmd": "detach", "id": "disk0"}          (an id, or an image path / TAP name)
    {"cmd": "devices"}  {"cmd": "status"}  {"cmd": "pause"}  {"cmd": "resume"}
    {"cmd": "stop"}
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import stat
import threading
from collections.abc import Callable
from typing import Any

from vmm.devices import registry
from vmm.errors import ApiError, ConfigError, KeelError
from vmm.machine import Machine

__all__ = ["ApiError", "ApiServer", "dispatch", "request"]

MAX_REQUEST = 64 << 10
COMMANDS = ("attach", "detach", "devices", "pause", "resume", "stop", "status")


def _arg(req: dict[str, Any], name: str, kind: type, default: Any = ...) -> Any:
    if name not in req:
        if default is ...:
            raise ApiError(f"missing argument {name!r}")
        return default
    value = req[name]
    if value is None and default is None:
        return None
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ApiError(f"argument {name!r} must be a {kind.__name__}")
    return value


def dispatch(machine: Machine, req: object) -> Any:
    """Perform one decoded request; returns the result or raises a KeelError."""
    if not isinstance(req, dict):
        raise ApiError("a request must be a JSON object")
    cmd = req.get("cmd")
    if not isinstance(cmd, str):
        raise ApiError("missing argument 'cmd'")
    if cmd == "attach":
        # The kind's options, checked by the registry; other keys are ignored.
        spec = registry.lookup(_arg(req, "kind", str))
        options = {o.name: req[o.name] for o in spec.options if o.name in req}
        return {"id": machine.attach(spec.name, **options)}
    if cmd == "detach":
        machine.detach(_arg(req, "id", str))
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
                "dma_faults": machine.iommu.total_faults}  # fmt: skip
    if cmd == "stop":
        return None  # the server stops the machine once the reply is out
    raise ApiError(f"unknown command {cmd!r} (one of {', '.join(COMMANDS)})")


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
            threading.Thread(target=self._client, args=(conn,), name="api-client",
                             daemon=True).start()  # fmt: skip

    def _client(self, conn: socket.socket) -> None:
        with conn, conn.makefile("rb") as reader:
            for line in iter(lambda: _read_line(reader), b""):
                stop, reply = self._handle(line)
                try:
                    conn.sendall(json.dumps(reply).encode() + b"\n")
                except OSError:
                    return
                if stop:
                    self.machine.stop()
                    return

    def _handle(self, line: bytes) -> tuple[bool, dict[str, Any]]:
        if len(line) > MAX_REQUEST:
            return False, {"ok": False, "error": f"request longer than {MAX_REQUEST} bytes"}
        try:
            req = json.loads(line)
        except (ValueError, UnicodeDecodeError) as exc:
            return False, {"ok": False, "error": f"malformed JSON: {exc}"}
        try:
            result = dispatch(self.machine, req)
        except KeelError as exc:
            return False, {"ok": False, "error": str(exc)}
        except Exception as exc:  # a VMM bug: report it, keep serving
            return False, {"ok": False, "error": f"internal error: {exc!r}"}
        return req.get("cmd") == "stop", {"ok": True, "result": result}

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)
        self._sock.close()
        with contextlib.suppress(OSError):
            os.unlink(self.path)


def _read_line(reader: Any) -> bytes:
    """The next request line (at most MAX_REQUEST + 1 bytes); b"" at the end,
    also when the client hung up rudely (a reset): that ends its session only."""
    try:
        line: bytes = reader.readline(MAX_REQUEST + 1)
    except OSError:
        return b""
    return line


def _bind_private(path: str) -> socket.socket:
    """A listening socket created with mode 0600 (no window where others may connect)."""
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
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    old = os.umask(0o177)
    try:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp)
        sock.bind(temp)
        os.chmod(temp, 0o600)
        sock.listen(socket.SOMAXCONN)  # many clients at once: a full backlog refuses them
        os.rename(temp, path)
    except OSError as exc:
        sock.close()
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise ConfigError(f"cannot create API socket {path!r}: {exc.strerror}") from None
    finally:
        os.umask(old)
    return sock


def request(path: str | os.PathLike[str], req: dict[str, Any], timeout: float = 30) -> Any:
    """Send one request to the VMM at ``path``; returns the result or raises ApiError."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        try:
            sock.connect(os.fspath(path))
        except OSError as exc:
            raise ApiError(f"cannot reach the VMM at {os.fspath(path)!r}: {exc.strerror}") from None
        sock.sendall(json.dumps(req).encode() + b"\n")
        reader: Callable[[], bytes] = sock.makefile("rb").readline
        line = reader()
    if not line:
        raise ApiError("the VMM closed the connection without replying")
    reply = json.loads(line)
    if not reply.get("ok"):
        raise ApiError(str(reply.get("error", "unknown error")))
    return reply.get("result")
