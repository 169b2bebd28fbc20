"""What ``keel`` does for the person or script around a VM: the terminal,
signals, daemon mode, the list of running VMs and the console client.

- The terminal: while a guest owns it, the host tty neither echoes nor edits
  lines (the guest's console echoes), and is restored however keel ends.  A
  ``keel run`` in the background of a shell does not read the terminal (it
  would be stopped with SIGTTIN); brought to the foreground, it does.
- SIGTERM and SIGHUP end a VM as Ctrl-C does: stopped, socket and created TAP
  removed, status 130.
- ``keel run --daemon``: the VMM detaches from the terminal once its control
  socket accepts requests; ``keel console`` attaches to its serial console.
- Every VMM with a control socket registers itself in ``runtime_dir()`` so
  ``keel list`` finds it.
"""

from __future__ import annotations

import contextlib
import os
import select
import sys
import termios
import threading
import time
import tty
from collections.abc import Callable, Iterator

from vmm.errors import ConfigError

TYPE_CHECKING = False  # typing costs ~4 ms of each start (vmm/records.py)
if TYPE_CHECKING:
    import signal
    from typing import Any
else:  # signal's wrappers (same functions, enum results) import enum: ~2 ms of each start
    import _signal as signal

ESCAPE = b"\x1d"  # Ctrl-]


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


_STOP_SIGNALS = {signal.SIGINT, signal.SIGTERM, signal.SIGHUP}


@contextlib.contextmanager
def signals_deferred() -> Iterator[None]:
    """SIGINT, SIGTERM and SIGHUP wait until the block ends (then raise as usual):
    a VM half started (some vCPU threads made, not all) cannot be stopped cleanly."""
    old = signal.pthread_sigmask(signal.SIG_BLOCK, _STOP_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def install_signals() -> None:
    """SIGTERM/SIGHUP stop the VM as Ctrl-C does; background tty I/O does not stop us."""
    signal.signal(signal.SIGTERM, _raise_interrupt)
    signal.signal(signal.SIGHUP, _raise_interrupt)
    signal.signal(signal.SIGTTIN, signal.SIG_IGN)
    signal.signal(signal.SIGTTOU, signal.SIG_IGN)


def _foreground(fd: int) -> bool:
    try:
        return os.tcgetpgrp(fd) == os.getpgrp()
    except OSError:
        return False


@contextlib.contextmanager
def guest_terminal(fd: int) -> Iterator[None]:
    """No host echo or line editing on ``fd`` (a tty) while the guest runs; Ctrl-C
    still interrupts.  Restored on the way out; nothing done for a non-tty."""
    if not os.isatty(fd):
        yield
        return
    saved = termios.tcgetattr(fd)
    changed = False
    if _foreground(fd):
        mode = termios.tcgetattr(fd)
        mode[3] &= ~(termios.ECHO | termios.ICANON)
        mode[6][termios.VMIN], mode[6][termios.VTIME] = 1, 0
        with contextlib.suppress(termios.error):
            termios.tcsetattr(fd, termios.TCSANOW, mode)
            changed = True
    try:
        yield
    finally:
        if changed:
            with contextlib.suppress(termios.error):
                termios.tcsetattr(fd, termios.TCSANOW, saved)


def forward_stdin(send: Callable[[bytes], int]) -> None:
    """Feed the terminal (or a pipe) to the guest's serial console, from a thread."""

    def pump() -> None:
        try:
            fd = sys.stdin.fileno()
        except (AttributeError, ValueError, OSError):
            return
        is_tty = os.isatty(fd)
        while True:
            if is_tty and not _foreground(fd):
                time.sleep(0.2)  # in the background: the terminal is not ours now
                continue
            try:
                data = os.read(fd, 4096)
            except OSError:
                if is_tty:
                    time.sleep(0.2)
                    continue
                return
            if not data:
                return
            send(data.replace(b"\n", b"\r") if is_tty else data)

    threading.Thread(target=pump, name="stdin", daemon=True).start()


# -- daemon mode --------------------------------------------------------------------------
def daemonize(log: str | None) -> Callable[[], None]:
    """Fork; the parent waits until the child calls the returned ``ready`` (then
    prints the child's pid and exits 0) or exits (then exits with its status)."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid:
        os.close(write_end)
        with os.fdopen(read_end, "rb") as r:
            ok = r.read(1)
        if ok == b"1":
            print(pid)
            os._exit(0)
        _, status = os.waitpid(pid, 0)
        os._exit(os.waitstatus_to_exitcode(status) or 1)
    os.close(read_end)
    os.setsid()
    null = os.open(os.devnull, os.O_RDWR)
    os.dup2(null, 0)
    out = null
    if log is not None:
        try:
            out = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        except OSError as exc:
            raise ConfigError(f"cannot open --log file {log!r}: {exc.strerror}") from None

    def ready() -> None:
        # Errors before this point still reach the terminal of `keel run --daemon`.
        os.dup2(out, 1)
        os.dup2(out, 2)
        with contextlib.suppress(OSError):
            os.write(write_end, b"1")
            os.close(write_end)

    return ready


# -- the list of running VMs -------------------------------------------------------------
def runtime_dir() -> str:
    base = os.environ.get("XDG_RUNTIME_DIR") or f"/tmp/keel-{os.getuid()}"
    return os.path.join(base, "keel") if os.environ.get("XDG_RUNTIME_DIR") else base


def register(sock: str, kernel: str) -> Callable[[], None]:
    """Record this VMM (pid, socket) for ``keel list``; returns the removal."""
    directory = runtime_dir()
    try:
        os.makedirs(directory, mode=0o700, exist_ok=True)
        if os.stat(directory).st_uid != os.getuid():
            return lambda: None  # not ours (someone else made it first): not used
    except OSError:
        return lambda: None
    entry = os.path.join(directory, f"{os.getpid()}.json")
    info = {"pid": os.getpid(), "api_sock": os.path.abspath(sock), "kernel": kernel,
            "started": time.time()}  # fmt: skip
    # Lazy: json (with re and enum) costs about 4 ms of start-up (python -X
    # importtime) that a `keel run` without --api-sock need not pay.
    import json

    with contextlib.suppress(OSError), open(entry, "w") as f:
        json.dump(info, f)

    def remove() -> None:
        with contextlib.suppress(OSError):
            os.unlink(entry)

    return remove


def running() -> list[dict[str, Any]]:
    """Every registered VMM still alive (entries of dead ones are removed)."""
    import json  # lazy: see register

    found = []
    directory = runtime_dir()
    with contextlib.suppress(OSError):
        for name in sorted(os.listdir(directory)):
            path = os.path.join(directory, name)
            try:
                with open(path) as f:
                    info = json.load(f)
                os.kill(int(info["pid"]), 0)
            except (OSError, ValueError, KeyError, TypeError):
                with contextlib.suppress(OSError):
                    os.unlink(path)
                continue
            found.append(info)
    return found


# -- the console client ------------------------------------------------------------------
def console_client(sock: Any) -> int:
    """Relay the terminal to a console connection until Ctrl-] (or the VM ends)."""
    fd = sys.stdin.fileno()
    is_tty = os.isatty(fd)
    saved = termios.tcgetattr(fd) if is_tty else None
    inputs = [sock, fd]
    try:
        if is_tty:
            # Raw before the greeting: what is typed after it is already raw (a
            # switch with TCSAFLUSH would drop it).
            tty.setraw(fd, termios.TCSANOW)
            sys.stderr.write("keel: connected to the console; Ctrl-] detaches\r\n")
            sys.stderr.flush()
        while True:
            readable, _, _ = select.select(inputs, [], [])
            if sock in readable:
                data = sock.recv(65536)
                if not data:
                    return 0
                os.write(sys.stdout.fileno(), data)
            if fd in readable:
                data = os.read(fd, 4096)
                if not data:  # a pipe ended: keep showing the console
                    inputs.remove(fd)
                    continue
                if ESCAPE in data:
                    sock.sendall(data[: data.index(ESCAPE)])
                    return 0
                sock.sendall(data)
    finally:
        if saved is not None:
            termios.tcsetattr(fd, termios.TCSADRAIN, saved)
            sys.stderr.write("\nkeel: detached from the console\n")
