"""Shared fixtures: the built kernel, tiny test guests, and KVM/QEMU checks."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
KERNEL = ROOT / "build" / "kernel.elf"
INITRD = ROOT / "build" / "initrd.cpio"
GUESTS = Path(__file__).resolve().parent / "guests"
KEEL = [sys.executable, "-m", "vmm.cli"]


# Keep the kernel parse cache of test runs out of the user's ~/.cache.
os.environ.setdefault("KEEL_CACHE_DIR", str(ROOT / "build" / "test-cache"))


def load_module(name: str, path: Path) -> Any:
    """A Python file as a module, by path: scripts (`scripts/icount` has no
    .py suffix) and generated files that are not packages."""
    import importlib.machinery
    import importlib.util

    loader = importlib.machinery.SourceFileLoader(name, str(path))
    spec = importlib.util.spec_from_loader(name, loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


def have_kvm() -> bool:
    return os.access("/dev/kvm", os.R_OK | os.W_OK)


requires_kvm = pytest.mark.skipif(not have_kvm(), reason="/dev/kvm is not available")
requires_qemu = pytest.mark.skipif(
    shutil.which("qemu-system-x86_64") is None, reason="qemu-system-x86_64 is not installed"
)


@pytest.fixture(scope="session")
def kernel() -> Path:
    if not KERNEL.exists():
        pytest.fail(f"{KERNEL} is missing: run 'make' first")
    return KERNEL


@pytest.fixture(scope="session")
def initrd() -> Path:
    """The user-space programs and in-guest tests (``make initrd``)."""
    if not INITRD.exists():
        pytest.fail(f"{INITRD} is missing: run 'make'")
    return INITRD


def build_guest(
    source: Path, out: Path, name: str, *defines: str, elf32: bool = False
) -> Path:
    """``source`` assembled with -DGUEST_<name> and the ``defines``, linked at 1 MiB as an
    ELF64 (x86-64) file, or with ``elf32`` as an ELF32 (i386) one, as PVH kernels are."""
    stem = "-".join([source.stem, name.lower(), *(d.replace("=", "_") for d in defines)])
    stem += "-elf32" if elf32 else ""
    obj, elf = out / f"{stem}.o", out / f"{stem}.elf"
    flags = [f"-DGUEST_{name}", *(f"-D{d}" for d in defines)]
    subprocess.run(["gcc", "-c", *flags, "-o", str(obj), str(source)], check=True)
    subprocess.run(
        ["ld", "-nostdlib", "-static", "-N", "--no-warn-rwx-segments", "-Ttext=0x100000",
         "-o", str(elf), str(obj)],
        check=True,
    )  # fmt: skip
    if elf32:  # the same image in an ELF32 container, as a 32-bit PVH kernel comes
        subprocess.run(["objcopy", "-O", "elf32-i386", str(elf), str(elf)], check=True)
    return elf


@pytest.fixture(scope="session")
def tiny_guest(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Path]:
    """Build a tiny PVH guest from tests/guests/tiny.S with -DGUEST_<name>
    (``elf32=True``: as an ELF32 file)."""
    out = tmp_path_factory.mktemp("guests")
    cache: dict[tuple[str, tuple[str, ...], bool], Path] = {}

    def build(name: str, *defines: str, elf32: bool = False) -> Path:
        key = (name, defines, elf32)
        if key not in cache:
            cache[key] = build_guest(GUESTS / "tiny.S", out, name, *defines, elf32=elf32)
        return cache[key]

    return build


def run_in_new_netns(module: str, *args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    """``python -m module args`` inside a network namespace made for it and removed
    after; skips the test when this host cannot make one or has no /dev/net/tun."""
    import uuid

    ns = f"keeltest-{uuid.uuid4().hex[:8]}"
    made = subprocess.run(["ip", "netns", "add", ns], capture_output=True, text=True)
    if made.returncode != 0:
        pytest.skip(f"cannot create a network namespace: {made.stderr.strip()}")
    try:
        proc = subprocess.run(
            ["ip", "netns", "exec", ns, sys.executable, "-m", module, *args],
            capture_output=True, text=True, timeout=timeout, cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )  # fmt: skip
    finally:
        subprocess.run(["ip", "netns", "del", ns], check=False)
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert ns not in listed
    if "/dev/net/tun" in proc.stderr and "No such file" in proc.stderr:
        pytest.skip("no /dev/net/tun")
    return proc


# A guest silent on its console this long is hung: every guest a test runs
# stops then, and the test fails at once showing the console's last lines,
# instead of waiting out its whole timeout.  The in-guest tests print a line
# per test; the longest silence measured under load is far below this.
HANG_TIMEOUT = float(os.environ.get("KEEL_TEST_HANG_TIMEOUT", "90"))
TAIL = 3000


def _text(data: str | bytes | None) -> str:
    if data is None:
        return ""
    return data.decode(errors="replace") if isinstance(data, bytes) else data


def keel(
    *args: str, timeout: float = 60, stdin: bytes | None = None
) -> subprocess.CompletedProcess[str]:
    """Run the ``keel`` CLI as a user would; returns the completed process.

    ``keel run`` gets ``--hang-timeout`` (HANG_TIMEOUT) unless the test gave
    one; a run past ``timeout`` fails the test with the console's tail."""
    argv = list(args)
    if argv[:1] == ["run"] and "--hang-timeout" not in argv:
        argv[1:1] = ["--hang-timeout", str(HANG_TIMEOUT)]
    try:
        return subprocess.run(
            [*KEEL, *argv],
            input=stdin.decode() if stdin is not None else None,
            stdin=None if stdin is not None else subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=ROOT,
        )
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"keel {' '.join(args)}: still running after {timeout} s; console tail:\n"
                    f"{_text(e.stdout)[-TAIL:]}\n{_text(e.stderr)[-TAIL:]}")


def run_guest(cmd: list[str], timeout: float,
              hang: float = HANG_TIMEOUT) -> subprocess.CompletedProcess[str]:
    """Run a guest under another VMM (QEMU) with its console on stdout: killed
    and the test failed, with the console's tail, after ``hang`` seconds of
    console silence or ``timeout`` in all."""
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)  # fmt: skip
    assert proc.stdout is not None and proc.stderr is not None
    chunks: list[bytes] = []
    errs: list[bytes] = []
    last = [time.monotonic()]

    def pump(stream: Any, into: list[bytes], mark: bool) -> None:
        while data := stream.read1(4096):
            into.append(data)
            if mark:
                last[0] = time.monotonic()

    readers = [threading.Thread(target=pump, args=(proc.stdout, chunks, True), daemon=True),
               threading.Thread(target=pump, args=(proc.stderr, errs, False), daemon=True)]
    for r in readers:
        r.start()
    start = time.monotonic()
    why = ""
    while proc.poll() is None:
        now = time.monotonic()
        if now - last[0] > hang:
            why = f"silent on its console for {hang} s"
        elif now - start > timeout:
            why = f"still running after {timeout} s"
        if why:
            proc.kill()
            proc.wait()
            break
        time.sleep(0.2)
    for r in readers:
        r.join(timeout=5)
    # as text mode would give them: universal newlines
    out, err = (b"".join(parts).decode(errors="replace").replace("\r\n", "\n").replace("\r", "\n")
                for parts in (chunks, errs))  # fmt: skip
    if why:
        pytest.fail(f"{cmd[0]}: {why}; console tail:\n{out[-TAIL:]}\n{err[-TAIL:]}")
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def start_hanging_vmm(guest: Path, sock: Path, timeout: float, running: bool = True
                      ) -> subprocess.Popen[str]:  # fmt: skip
    """``keel run`` of ``guest`` (a tiny guest that hangs) with its control socket at
    ``sock``; returns once the machine reports itself running through that socket
    (``running``), or as soon as the socket exists (the machine may be starting)."""
    from vmm.api import request  # vmm.api needs the built KVM bindings; conftest must not

    proc = subprocess.Popen(
        [*KEEL, "run", str(guest), "--smp", "1", "--memory", "64M", "--api-sock", str(sock)],
        cwd=ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    deadline = time.monotonic() + timeout
    while not sock.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline
        time.sleep(0.01)
    while running and request(sock, {"cmd": "status"})["state"] != "running":
        assert time.monotonic() < deadline
        time.sleep(0.01)
    return proc
