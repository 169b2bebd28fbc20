"""The control socket and the CLI verbs on it, against a running ``keel run``."""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import ROOT, keel, requires_kvm, start_hanging_vmm
from vmm.api import ApiError, request

pytestmark = requires_kvm


class Vmm:
    def __init__(self, proc: subprocess.Popen[str], sock: Path) -> None:
        self.proc, self.sock = proc, sock

    def raw(self, line: bytes) -> dict[str, object]:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(10)
            s.connect(str(self.sock))
            s.sendall(line)
            reply = s.makefile("rb").readline()
        result: dict[str, object] = json.loads(reply)
        return result

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return keel(*args[:1], "--api-sock", str(self.sock), *args[1:], timeout=30)


@pytest.fixture
def vmm(tiny_guest: Callable[..., Path], tmp_path: Path) -> Iterator[Vmm]:
    sock = tmp_path / "api.sock"
    proc = start_hanging_vmm(tiny_guest("HANG"), sock, 20)
    yield Vmm(proc, sock)
    if proc.poll() is None:
        proc.kill()
    proc.communicate()


def test_socket_is_private(vmm: Vmm) -> None:
    mode = os.stat(vmm.sock).st_mode
    assert stat.S_ISSOCK(mode) and stat.S_IMODE(mode) == 0o600


@pytest.mark.parametrize(
    ("line", "needle"),
    [
        (b"{not json\n", "malformed JSON"),
        (b"[1, 2]\n", "JSON object"),
        (b'{"cmd": "reboot"}\n', "unknown command 'reboot'"),
        (b'{"nocmd": 1}\n', "missing argument 'cmd'"),
        (b'{"cmd": "attach"}\n', "missing argument 'kind'"),
        (b'{"cmd": "attach", "kind": "toaster"}\n', "unknown device kind"),
        (b'{"cmd": "attach", "kind": "disk"}\n', "missing argument 'path'"),
        (b'{"cmd": "attach", "kind": "disk", "path": 7}\n', "must be a str"),
        (b'{"cmd": "attach", "kind": "disk", "path": "/nonexistent.img"}\n', "nonexistent"),
        (b'{"cmd": "detach", "device": "disk9"}\n', "no attached device"),
        (b'{"cmd": "resume"}\n', "illegal while the machine is running"),
        (b"\xff\xfe\n", "malformed JSON: the request is not UTF-8 text"),
        (b'{"cmd": 5}\n', "argument 'cmd' must be a string"),
        (b'{"cmd": "status", "verbose": true}\n', "status: unknown argument 'verbose'"),
        (b'{"cmd": "attach", "kind": "rng", "path": "x"}\n', "unknown argument 'path'"),
        (b'{"cmd": "detach", "id": "disk0"}\n', "missing argument 'device'"),
        (b'{"cmd": "detach", "device": "x", "force": 1}\n', "'force' must be a bool"),
        (b'{"cmd": "detach", "device": "x", "timeout": "9"}\n', "'timeout' must be a number"),
    ],
)
def test_bad_requests_get_errors_and_the_vmm_keeps_running(
    vmm: Vmm, line: bytes, needle: str
) -> None:
    reply = vmm.raw(line)
    assert reply["ok"] is False and needle in str(reply["error"]), reply
    assert request(vmm.sock, {"cmd": "status"})["state"] == "running"


def test_every_verb_through_the_cli(vmm: Vmm, tmp_path: Path) -> None:
    image = tmp_path / "disk.img"
    image.write_bytes(bytes(8 * 512))
    log = tmp_path / "vcon.log"
    proc = vmm.cli("attach", "disk", str(image), "--readonly")
    assert proc.returncode == 0 and proc.stdout.strip() == "disk0", proc.stderr
    assert vmm.cli("attach", "rng").stdout.strip() == "rng0"
    assert vmm.cli("attach", "console", "--output", str(log)).stdout.strip() == "console0"
    out = vmm.cli("devices").stdout.splitlines()
    assert out[0].split() == ["ID", "KIND", "SLOT", "STATE", "DMA", "BACKING"]
    # the tiny guest never enables the IOMMU: DMA is open, as without one
    assert out[1].split() == ["console0", "console", "2", "ok", "open", str(log)]
    assert out[2].split() == ["disk0", "disk", "0", "ok", "open", str(image)]
    assert out[3].split() == ["rng0", "rng", "1", "ok", "open", "getrandom"]
    assert vmm.cli("detach", str(image)).returncode == 0
    assert vmm.cli("detach", "rng0", "--api-sock", str(vmm.sock)).returncode == 0
    assert [d["id"] for d in request(vmm.sock, {"cmd": "devices"})] == ["console0"]
    assert vmm.cli("pause").returncode == 0
    assert "state=paused" in vmm.cli("status").stdout
    assert "iommu=off dma_faults=0" in vmm.cli("status").stdout
    bad = vmm.cli("pause")
    assert bad.returncode == 1 and "illegal while the machine is paused" in bad.stderr
    assert "Traceback" not in bad.stderr
    assert vmm.cli("resume").returncode == 0
    assert "state=running" in vmm.cli("status").stdout
    assert vmm.cli("stop").returncode == 0
    assert vmm.proc.wait(20) == 0
    assert not vmm.sock.exists()


def test_an_image_in_use_is_refused_while_running(vmm: Vmm, tmp_path: Path) -> None:
    """`keel attach disk` of an image already attached writable, under its own
    path, a relative one or a symlink: refused (QEMU's write lock); readers share."""
    image = tmp_path / "disk.img"
    image.write_bytes(bytes(8 * 512))
    os.symlink(image, tmp_path / "link.img")
    assert vmm.cli("attach", "disk", str(image)).stdout.strip() == "disk0"
    relative = os.path.relpath(image, ROOT)  # keel runs in ROOT
    for path in (str(image), relative, str(tmp_path / "link.img")):
        for extra in ([], ["--readonly"]):
            proc = vmm.cli("attach", "disk", path, *extra)
            assert proc.returncode == 1 and "is in use: cannot get a" in proc.stderr, proc.stderr
    assert vmm.cli("detach", "disk0").returncode == 0
    assert vmm.cli("attach", "disk", str(image), "--readonly").stdout.strip() == "disk0"
    assert vmm.cli("attach", "disk", relative, "--readonly").stdout.strip() == "disk1"
    assert [d["id"] for d in request(vmm.sock, {"cmd": "devices"})] == ["disk0", "disk1"]


def test_cli_without_a_vmm_is_a_clean_error(tmp_path: Path) -> None:
    proc = keel("devices", "--api-sock", str(tmp_path / "none.sock"))
    assert proc.returncode == 1 and proc.stderr.startswith("keel: error: cannot reach the VMM")
    with pytest.raises(ApiError):
        request(tmp_path / "none.sock", {"cmd": "status"})


def test_socket_path_that_is_a_file_is_refused(
    tmp_path: Path, tiny_guest: Callable[..., Path]
) -> None:
    path = tmp_path / "file"
    path.write_text("x")
    proc = keel("run", str(tiny_guest("HELLO")), "--api-sock", str(path))
    assert proc.returncode == 1 and "not a socket" in proc.stderr
    assert path.read_text() == "x"


def _conversation(vmm: Vmm, lines: list[bytes], replies: int) -> list[dict[str, object]]:
    """Sends every line on one connection; returns the first ``replies`` lines back."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(10)
        s.connect(str(vmm.sock))
        s.sendall(b"".join(lines))
        reader = s.makefile("rb")
        return [json.loads(reader.readline()) for _ in range(replies)]


def test_one_reply_per_request_even_over_64k(vmm: Vmm) -> None:
    big = b'{"cmd": "status", "pad": "' + b"x" * (100 << 10) + b'"}\n'
    replies = _conversation(vmm, [big, b'{"cmd": "version", "id": 1}\n',
                                  b'{"cmd": "status", "id": "two"}\n'], 3)  # fmt: skip
    assert replies[0] == {"ok": False, "error": "request longer than 65536 bytes"}
    assert replies[1]["id"] == 1 and replies[1]["result"]["protocol"] == 2  # type: ignore[index]
    assert replies[2]["id"] == "two" and replies[2]["result"]["state"] == "running"  # type: ignore[index]


def test_version_and_the_command_list(vmm: Vmm) -> None:
    assert vmm.cli("version").stdout.startswith("keel=0.")
    commands = {c["name"]: c for c in request(vmm.sock, {"cmd": "commands"})}
    assert {"attach", "detach", "subscribe", "console", "version"} <= set(commands)
    assert commands["detach"]["args"]["device"]["required"] is True
    assert commands["attach"]["args"]["readonly"]["type"] == "bool"


def test_events_on_a_subscribed_connection(vmm: Vmm, tmp_path: Path) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(10)
        s.connect(str(vmm.sock))
        reader = s.makefile("rb")
        assert request(vmm.sock, {"cmd": "status"})["subscribers"] == 0
        s.sendall(b'{"cmd": "subscribe", "id": 1}\n')
        assert json.loads(reader.readline()) == {"ok": True, "result": None, "id": 1}
        assert request(vmm.sock, {"cmd": "status"})["subscribers"] == 1
        rng = request(vmm.sock, {"cmd": "attach", "kind": "rng"})["id"]
        request(vmm.sock, {"cmd": "detach", "device": rng, "wait": True})
        request(vmm.sock, {"cmd": "stop"})
        events = [json.loads(line) for line in reader]
    names = [(e["event"], e["data"].get("id")) for e in events]
    assert names == [("DEVICE_ATTACHED", "rng0"), ("DEVICE_DELETED", "rng0"), ("STOP", None)]
    assert events[-1]["data"] == {"status": 0, "reason": "stopped by request"}
