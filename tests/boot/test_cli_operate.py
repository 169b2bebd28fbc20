"""``keel`` as people script and operate it: exit statuses, --version, where
options may go, sizes, paths, the terminal, signals and daemon mode."""

from __future__ import annotations

import argparse
import os
import pty
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import termios
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import KEEL, ROOT, keel, requires_kvm, run_in_new_netns, start_hanging_vmm
from vmm.api import ApiError, request
from vmm.cli import _build_parser

Guest = Callable[..., Path]


def _one_error_line(proc: subprocess.CompletedProcess[str], needle: str) -> None:
    assert proc.returncode == 1, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("keel: error:"), proc.stderr
    assert needle in lines[0], proc.stderr


def test_version_and_the_exit_status_table() -> None:
    proc = keel("--version")
    assert proc.returncode == 0 and proc.stdout.startswith("keel 0."), proc
    help = keel("--help").stdout
    for line in ("0    success", "1    bad input or usage", "2    the guest crashed",
                 "3    the guest reported failure", "4    the guest hung", "130  interrupted"):
        assert line in help, help
    run_help = keel("run", "--help").stdout
    assert "(default: 256M)" in run_help and "(default: host cores)" in run_help


def _status_meanings(text: str, pattern: str) -> dict[int, str]:
    return {int(m.group(1)): m.group(2) for m in re.finditer(pattern, text, re.MULTILINE)}


def test_the_readme_has_the_exit_status_table_of_keel_help() -> None:
    """One table, two places: the README's rows are the statuses `keel --help` gives,
    each with the same meaning (the README may say more after it)."""
    help = _status_meanings(keel("--help").stdout, r"^  (\d+) +(.+)$")
    readme = (ROOT / "README.md").read_text()
    table = readme[readme.index("Exit statuses of every `keel` command"):]
    rows = _status_meanings(table[: table.index("\n\n", table.index("| status |"))],
                            r"^\| (\d+) \| (.+) \|$")  # fmt: skip
    assert sorted(help) == sorted(rows) == [0, 1, 2, 3, 4, 130], (help, rows)
    for status, meaning in help.items():
        assert rows[status].startswith(meaning.split(" (")[0]), (status, meaning, rows[status])


def _options(parser: argparse.ArgumentParser, verb: str) -> list[tuple[str, argparse.Action]]:
    """Every (verb, argument) of keel and its sub-commands."""
    found = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found += _options(sub, f"{verb} {name}")
        elif not isinstance(action, (argparse._HelpAction, argparse._VersionAction)):
            found.append((verb, action))
    return found


def test_every_option_gives_its_default_in_its_help() -> None:
    """An option taking a value says what it is when not given (or that it is
    required); a flag (store_true) is off unless given."""
    missing = []
    for verb, action in _options(_build_parser(), "keel"):
        help = action.help or ""
        optional = action.option_strings or action.nargs == "?"
        if action.nargs == 0 or help == argparse.SUPPRESS or not optional:
            continue  # a flag, a hidden option or a required positional
        if "default" not in help and "(required)" not in help:
            missing.append(f"{verb} {(action.option_strings or [action.dest])[0]}")
    assert not missing, missing


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["run", "--smp", "abc"], "--smp: invalid int value: 'abc'"),
        (["run", "--memory", "-5M"], "bad memory size '-5M'"),
        (["run", "-m", "-1G"], "bad memory size '-1G'"),
        (["fly"], "invalid choice: 'fly'"),
        (["attach"], "required: kind"),
        (["stress", "--workloads", "foo"], "unknown stress workload 'foo'"),
        (["stress", "--workloads", "ipc,,map"], "unknown stress workload ''"),
        (["devices"], "needs --api-sock"),
        (["run", "--daemon"], "--daemon needs --api-sock"),
        (["run", "--api-sock", "/tmp/" + "s" * 120], "at most 107 bytes"),
    ],
)
def test_usage_errors_are_status_1(args: list[str], needle: str) -> None:
    _one_error_line(keel(*args), needle)


def test_api_sock_may_follow_the_device(tmp_path: Path) -> None:
    """`keel attach disk IMG --api-sock S` parses: the error is that S has no VMM."""
    proc = keel("attach", "disk", "x.img", "--api-sock", str(tmp_path / "s"))
    _one_error_line(proc, "cannot reach the VMM")
    proc = keel("attach", "--api-sock", str(tmp_path / "s"), "rng")
    _one_error_line(proc, "cannot reach the VMM")


def test_a_silent_vmm_is_a_clean_error(tmp_path: Path) -> None:
    path = tmp_path / "silent.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as server:
        server.bind(str(path))
        server.listen(1)
        with pytest.raises(ApiError, match=r"did not answer within 0\.5 s"):
            request(path, {"cmd": "status"}, timeout=0.5)


@pytest.mark.parametrize("verb", ["stress", "fuzz"])
def test_without_an_initrd_the_one_beside_the_kernel_is_named(verb: str, tmp_path: Path) -> None:
    """--kernel alone: initrd.cpio beside it (here missing, so named in the error)."""
    kernel = tmp_path / "kernel.elf"
    kernel.write_bytes(b"")
    _one_error_line(keel(verb, "--kernel", str(kernel)), str(tmp_path / "initrd.cpio"))


@requires_kvm
def test_stress_and_fuzz_find_the_initrd_beside_the_kernel(kernel: Path, tmp_path: Path) -> None:
    """`keel stress --kernel K` (and `keel fuzz --kernel K`) boot K with the
    initrd.cpio beside it, as the help says: once they said build/initrd.cpio
    was missing while it was there."""
    for name in ("kernel.elf", "initrd.cpio"):
        shutil.copy(ROOT / "build" / name, tmp_path / name)
    proc = keel("stress", "--kernel", str(tmp_path / "kernel.elf"), "--smp", "2",
                "--duration", "1", "--workloads", "ipc", timeout=180)  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr
    assert proc.stdout.rstrip().endswith("keel stress: passed")
    proc = keel("fuzz", "--kernel", str(tmp_path / "kernel.elf"), "--smp", "1", "--calls", "50",
                timeout=180)  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr
    assert "keel fuzz: fuzz: ok 50 calls" in proc.stdout, proc.stdout[-3000:]


@requires_kvm
def test_memory_is_mib_by_default_and_takes_fractions(tiny_guest: Guest) -> None:
    for size in ("64", "0.0625G", "65536K"):
        proc = keel("run", str(tiny_guest("HELLO")), "--smp", "1", "--memory", size)
        assert proc.returncode == 0 and "tiny: hello" in proc.stdout, (size, proc.stderr)
    _one_error_line(keel("run", str(tiny_guest("HELLO")), "--memory", "0"), "too small")


@requires_kvm
def test_disk_paths_may_contain_commas(tiny_guest: Guest, tmp_path: Path) -> None:
    image = tmp_path / "a,b.img"
    image.write_bytes(bytes(4096))
    escaped = str(image).replace(",", ",,")
    proc = keel("run", str(tiny_guest("HELLO")), "--smp", "1", "--disk", escaped)
    assert proc.returncode == 0, proc.stderr
    proc = keel("run", str(tiny_guest("HELLO")), "--smp", "1",
                "--disk", escaped + ",readonly")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    _one_error_line(keel("run", str(tiny_guest("HELLO")), "--disk", str(image)), "',,'")


@requires_kvm
def test_the_same_image_cannot_be_attached_writable_twice(
    tiny_guest: Guest, tmp_path: Path
) -> None:
    image = tmp_path / "disk.img"
    image.write_bytes(bytes(4096))
    os.symlink(image, tmp_path / "other.img")
    proc = keel("run", str(tiny_guest("HELLO")), "--smp", "1", "--disk", str(image),
                "--disk", str(tmp_path / "other.img"))  # fmt: skip
    _one_error_line(proc, "is in use: cannot get a writable lock")
    proc = keel("run", str(tiny_guest("HELLO")), "--smp", "1", "--disk", f"{image},readonly",
                "--disk", f"{image},readonly")  # fmt: skip
    assert proc.returncode == 0, proc.stderr  # readers share
    proc = keel("run", str(tiny_guest("HELLO")), "--smp", "1", "--disk", str(image),
                "--disk", f"{image},readonly")  # fmt: skip
    _one_error_line(proc, "cannot get a read-only lock")


def read_some(fd: int, deadline: float, so_far: bytes = b"") -> bytes:
    """What ``fd`` (a pty master) has next; b"" at its end; fails at ``deadline``."""
    remaining = deadline - time.monotonic()
    assert remaining > 0, so_far.decode(errors="replace")[-3000:]
    ready, _, _ = select.select([fd], [], [], remaining)
    assert ready, so_far.decode(errors="replace")[-3000:]
    try:
        return os.read(fd, 4096)
    except OSError:  # EIO: the other side is closed
        return b""


def wait_child(pid: int, deadline: float) -> int:
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        assert time.monotonic() < deadline, f"process {pid} did not end"
        time.sleep(0.05)


def _in_pty(args: list[str], background: bool) -> tuple[int, bytes, list[int]]:
    """Runs keel on a new terminal (in the foreground or in a background process
    group, as `keel run &` from a shell); returns its status (or -1 if the
    terminal stopped it), its output and the terminal's lflag seen while it ran."""
    pid, master = pty.fork()
    if pid == 0:  # the session leader, as an interactive shell
        child = os.fork()
        if child == 0:
            if background:
                os.setpgid(0, 0)
            os.chdir(ROOT)
            os.execv(sys.executable, [*KEEL, *args])
        if not background:
            os.setpgid(child, child)
            os.tcsetpgrp(0, child)
        _, status = os.waitpid(child, os.WUNTRACED)
        if os.WIFSTOPPED(status):
            os.kill(child, signal.SIGKILL)
            os._exit(200)
        os._exit(os.waitstatus_to_exitcode(status) & 0xFF)
    out = bytearray()
    modes: list[int] = []

    def drain() -> None:
        while True:
            try:
                data = os.read(master, 4096)
            except OSError:
                return
            if not data:
                return
            out.extend(data)

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    deadline = time.monotonic() + 60
    status = None
    while status is None and time.monotonic() < deadline:
        done, raw = os.waitpid(pid, os.WNOHANG)
        if done:
            status = os.waitstatus_to_exitcode(raw)
            break
        if b"tiny: hello" in out or b"keel$" in out:
            modes.append(termios.tcgetattr(master)[3])
        time.sleep(0.05)
    if status is None:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        status = -1
    reader.join(2)
    os.close(master)
    return status, bytes(out), modes


@requires_kvm
def test_run_in_the_background_of_a_shell_is_not_stopped(tiny_guest: Guest) -> None:
    status, out, _ = _in_pty(["run", str(tiny_guest("HELLO")), "--smp", "1"], background=True)
    assert status == 0, (status, out)  # 200: stopped by SIGTTIN ("Stopped (tty input)")
    assert b"tiny: hello" in out


@requires_kvm
def test_the_host_terminal_does_not_echo_while_the_guest_runs(kernel: Path) -> None:
    """The guest echoes what is typed; the host tty must not as well."""
    initrd = ROOT / "build" / "initrd.cpio"
    pid, master = pty.fork()
    if pid == 0:
        os.chdir(ROOT)
        os.execv(sys.executable, [*KEEL, "run", str(kernel), "--smp", "1", "--initrd",
                                  str(initrd)])  # fmt: skip
    out = bytearray()
    try:
        deadline = time.monotonic() + 120
        while b"keel$ " not in out:
            out += read_some(master, deadline, out)
        assert not termios.tcgetattr(master)[3] & termios.ECHO
        os.write(master, b"frobnicate\r")
        while out.count(b"keel$ ") < 2:
            out += read_some(master, deadline, out)
        # the guest's echo and its answer; a host echo would be a third
        assert out.count(b"frobnicate") == 2, out.decode(errors="replace")
        os.write(master, b"poweroff\r")
        assert wait_child(pid, deadline) == 0
    finally:
        os.close(master)
        try:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass


@requires_kvm
@pytest.mark.parametrize("early", [False, True])
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signals_stop_cleanly(tiny_guest: Guest, tmp_path: Path, sig: int, early: bool) -> None:
    sock = tmp_path / "api.sock"
    # early: as soon as the socket is there, while the machine may be starting
    proc = start_hanging_vmm(tiny_guest("HANG"), sock, 30, running=not early)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "interrupted" in err
    assert not sock.exists()


# A stop signal the OS hands to a thread other than the main one, while the
# main thread is blocked waiting for the guest: CPython runs the handler only
# when the main thread next executes bytecode.  (The same happens when the
# signal lands on the main thread between its last check and the blocking
# wait: 1 run in ~60 of test_signals_stop_cleanly hung that way.)
SIGNAL_ELSEWHERE = """
import signal, sys, threading, time
from vmm import session
from vmm.machine import Machine
session.install_signals()
m = Machine(sys.argv[1], smp=1, memory="64M", console=lambda _d: None)
m.start()
threading.Thread(target=time.sleep, args=(120,), daemon=True).start()
signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})  # the OS picks another thread
wait, said = m.wait, []
def announced(timeout=None):  # "waiting" from inside wait_interruptible: not before it
    if not said:
        said.append(print("waiting", flush=True))
    return wait(timeout)
m.wait = announced
print("status", m.wait_interruptible().status, flush=True)
m.close()
"""


@requires_kvm
def test_a_stop_signal_taken_by_another_thread_still_stops(tiny_guest: Guest) -> None:
    proc = subprocess.Popen([sys.executable, "-c", SIGNAL_ELSEWHERE, str(tiny_guest("HANG"))],
                            cwd=ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline() == "waiting\n", proc.communicate()
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert "status 130" in out, err


@requires_kvm
def test_ctrl_c_under_make_run_is_not_a_make_error() -> None:
    """Ctrl-C (SIGINT to the terminal's foreground group) ends `make run`
    without `make: *** ... Error 130`."""
    pid, master = pty.fork()
    if pid == 0:
        os.chdir(ROOT)
        os.execvp("make", ["make", "run", "SMP=1"])
    out = bytearray()
    try:
        deadline = time.monotonic() + 120
        while b"keel$ " not in out:
            out += read_some(master, deadline, out)
        os.killpg(os.getpgid(pid), signal.SIGINT)
        while data := read_some(master, deadline, out):
            out += data
        wait_child(pid, deadline)
    finally:
        os.close(master)
        try:
            os.killpg(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass
    assert b"keel: interrupted" in out
    assert b"Error 130" not in out, out.decode(errors="replace")


@requires_kvm
def test_unknown_test_with_the_initrd_lists_the_tests(kernel: Path) -> None:
    """A guest that fails without crashing: status 3, its reason, no register dump."""
    proc = keel("run", str(kernel), "--smp", "1", "--initrd", str(ROOT / "build" / "initrd.cpio"),
                "--cmdline", "keel.test=nosuch", timeout=120)  # fmt: skip
    assert proc.returncode == 3, proc.stdout[-2000:] + proc.stderr
    assert "keel: unknown test nosuch; keel.test= takes stress suite uart" in proc.stdout
    assert "services" in proc.stdout and "(the kernel's own: boot timer" in proc.stdout
    assert "vCPU 0 (" not in proc.stderr and "rip=" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("keel: guest reported failure")


@requires_kvm
def test_sigterm_removes_the_tap_keel_created(tmp_path: Path) -> None:
    proc = run_in_new_netns("tests.boot.netns_sigterm_tap", str(tmp_path), timeout=180)
    out = proc.stdout
    assert proc.returncode == 0, out + proc.stderr
    assert "netns: tap while running: True" in out, out + proc.stderr
    assert "netns: status 130" in out
    assert "netns: tap after SIGTERM: False" in out
    assert "netns: socket after SIGTERM: False" in out
