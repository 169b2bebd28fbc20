"""``keel run --daemon``: no terminal, the console through ``keel console``,
``keel list``, and nothing left behind once it stops."""

from __future__ import annotations

import os
import pty
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.boot.test_cli_operate import read_some, wait_child
from tests.conftest import KEEL, ROOT, keel, requires_kvm
from vmm.api import request

pytestmark = requires_kvm
INITRD = ROOT / "build" / "initrd.cpio"


def _daemon(tmp_path: Path, kernel: Path, *args: str) -> tuple[Path, int]:
    """`keel run KERNEL --smp 1 ARGS --daemon` with its control socket in
    tmp_path: the socket and the daemon's pid."""
    sock = tmp_path / "vm.sock"
    env = {**os.environ, "XDG_RUNTIME_DIR": str(tmp_path)}
    proc = subprocess.run(
        [*KEEL, "run", str(kernel), "--smp", "1", *args, "--daemon", "--api-sock", str(sock)],
        cwd=ROOT, capture_output=True, text=True, timeout=60, env=env,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    return sock, int(proc.stdout.strip())


def _wait_for_prompt(transcript: Path, prompt: bytes) -> float:
    """Waits (up to 120 s) for prompt in the console transcript; the deadline."""
    deadline = time.monotonic() + 120
    while prompt not in transcript.read_bytes():
        assert time.monotonic() < deadline, transcript.read_text()
        time.sleep(0.1)
    return deadline


@contextmanager
def _console_on_pty(sock: Path) -> Iterator[tuple[int, int]]:
    """`keel console --api-sock SOCK` on a new terminal: (its pid, the terminal's
    master side), both gone afterwards."""
    child, master = pty.fork()
    if child == 0:
        os.chdir(ROOT)
        os.execv(KEEL[0], [*KEEL, "console", "--api-sock", str(sock)])
    try:
        yield child, master
    finally:
        os.close(master)
        try:
            os.kill(child, 9)
            os.waitpid(child, 0)
        except (ProcessLookupError, ChildProcessError):
            pass


def _gone(pid: int, timeout: float = 60) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)


def test_daemon_list_and_stop(tiny_guest: Callable[..., Path], tmp_path: Path) -> None:
    sock, log = tmp_path / "vm.sock", tmp_path / "vm.log"
    env = {**os.environ, "XDG_RUNTIME_DIR": str(tmp_path)}
    proc = subprocess.run(
        [*KEEL, "run", str(tiny_guest("HANG")), "--smp", "1", "--memory", "64",
         "--daemon", "--api-sock", str(sock), "--log", str(log)],
        cwd=ROOT, capture_output=True, text=True, timeout=60, env=env,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    pid = int(proc.stdout.strip())
    try:
        assert sock.exists()  # up before the command returned
        listed = subprocess.run([*KEEL, "list"], cwd=ROOT, capture_output=True, text=True,
                                env=env, timeout=30).stdout.splitlines()  # fmt: skip
        assert listed[0].split() == ["PID", "STATE", "VCPUS", "MEMORY", "API-SOCK"]
        assert listed[1].split() == [str(pid), "running", "1", "64MiB", str(sock)], listed
        assert keel("stop", "--api-sock", str(sock)).returncode == 0
        assert _gone(pid)
    finally:
        if not _gone(pid, 0):
            os.kill(pid, 9)
    assert not sock.exists()
    listed = subprocess.run([*KEEL, "list"], cwd=ROOT, capture_output=True, text=True,
                            env=env, timeout=30).stdout.splitlines()  # fmt: skip
    assert len(listed) == 1


def test_daemon_errors_reach_the_terminal(tiny_guest: Callable[..., Path], tmp_path: Path) -> None:
    proc = keel("run", str(tmp_path / "none.elf"), "--daemon", "--api-sock", str(tmp_path / "s"))
    assert proc.returncode == 1 and proc.stderr.startswith("keel: error:"), proc.stderr


def test_console_of_a_daemon(kernel: Path, tmp_path: Path) -> None:
    transcript = tmp_path / "console.log"
    sock, pid = _daemon(tmp_path, kernel, "--initrd", str(INITRD), "--console", str(transcript))
    try:
        deadline = _wait_for_prompt(transcript, b"keel$ ")
        events = subprocess.Popen([*KEEL, "events", "--api-sock", str(sock)], cwd=ROOT,
                                  stdout=subprocess.PIPE, text=True)  # fmt: skip
        # subscribed before the machine can stop (its start-up is slow under load)
        while request(sock, {"cmd": "status"})["subscribers"] < 1:
            assert events.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        console = subprocess.Popen(
            [*KEEL, "console", "--api-sock", str(sock)], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT,
        )  # fmt: skip
        assert console.stdin is not None
        console.stdin.write(b"help\r")
        console.stdin.flush()
        while b"stop the machine" not in transcript.read_bytes():  # one line at a time
            assert time.monotonic() < deadline, transcript.read_text()
            time.sleep(0.1)
        stdout, stderr = console.communicate(b"poweroff\r", timeout=120)
        assert console.returncode == 0, stderr
        out = stdout.decode(errors="replace")
        assert "kill <name|id>" in out and "poweroff" in out, out
        assert _gone(pid)
        stop = events.communicate(timeout=30)[0]
        assert '"event": "STOP"' in stop and '"status": 0' in stop, stop
    finally:
        if not _gone(pid, 0):
            os.kill(pid, 9)
    assert not sock.exists()


def test_console_escape_key_detaches(tiny_guest: Callable[..., Path], tmp_path: Path) -> None:
    """On a terminal, Ctrl-] ends `keel console`; the VM keeps running."""
    sock, pid = _daemon(tmp_path, tiny_guest("HANG"), "--memory", "64")
    try:
        with _console_on_pty(sock) as (child, master):
            out = b""
            deadline = time.monotonic() + 60
            while b"Ctrl-] detaches" not in out:
                out += read_some(master, deadline, out)
            os.write(master, b"\x1d")
            assert wait_child(child, deadline) == 0
        assert keel("status", "--api-sock", str(sock)).stdout.startswith("state=running")
        assert keel("stop", "--api-sock", str(sock)).returncode == 0
        assert _gone(pid)
    finally:
        if not _gone(pid, 0):
            os.kill(pid, 9)


def test_ctrl_c_in_keel_console_reaches_the_guest(kernel: Path, tmp_path: Path) -> None:
    """The terminal is raw under `keel console`: Ctrl-C is a byte for the guest
    (the kernel's console answers 'you typed: ^C'), not a signal that ends it."""
    transcript = tmp_path / "console.log"
    sock, pid = _daemon(tmp_path, kernel, "--console", str(transcript))
    try:
        deadline = _wait_for_prompt(transcript, b"keel> ")  # the kernel's own console
        with _console_on_pty(sock) as (child, master):
            out = b""
            while b"Ctrl-] detaches" not in out:
                out += read_some(master, deadline, out)
            os.write(master, b"\x03\r")
            while b"you typed: \x03" not in out:
                out += read_some(master, deadline, out)
            os.write(master, b"\x1d")
            assert wait_child(child, deadline) == 0  # not 130: no SIGINT
        assert keel("stop", "--api-sock", str(sock)).returncode == 0
        assert _gone(pid)
    finally:
        if not _gone(pid, 0):
            os.kill(pid, 9)
