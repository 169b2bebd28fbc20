"""The control socket fuzzed against a running guest.

Hypothesis sends random and malformed requests (bytes that are not JSON,
JSON of every shape, wrong types, huge numbers, unknown commands and kinds,
lines longer than the limit), from many clients at once, some of which
disconnect in the middle of a request, while others attach and detach
devices in races.  Every request gets exactly one line back: a correct
answer or ``{"ok": false, "error": <one line>}``, never an internal error;
the guest keeps running; and afterwards a disk still attaches, is listed
and detaches.  The number of examples is ``KEEL_API_FUZZ_EXAMPLES``
(default 150 in ``make test``; the long run in docs/reliability.md).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import requires_kvm, start_hanging_vmm
from vmm.api import COMMANDS, MAX_REQUEST, request

pytestmark = requires_kvm

EXAMPLES = int(os.environ.get("KEEL_API_FUZZ_EXAMPLES", "150"))
KINDS = ["disk", "rng", "console", "toaster", ""]  # no net: it would need a TAP
# not stop (it ends the VMM), nor those that turn the connection into an
# event stream or the raw console (their own tests are in test_api.py)
SAFE_COMMANDS = [c for c in COMMANDS if c not in ("stop", "subscribe", "console")]


class Guest:
    def __init__(self, proc: subprocess.Popen[str], sock: Path, tmp: Path) -> None:
        self.proc, self.sock, self.tmp = proc, sock, tmp
        self.image = tmp / "disk.img"
        self.image.write_bytes(bytes(16 * 512))

    def exchange(self, data: bytes, timeout: float = 20) -> list[bytes]:
        """Send ``data`` (whole lines) and read a reply line for each line sent."""
        want = data.count(b"\n")
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(timeout)
            s.connect(str(self.sock))
            s.sendall(data)
            reader = s.makefile("rb")
            return [reader.readline() for _ in range(want)]


@pytest.fixture(scope="module")
def guest(tiny_guest: Callable[..., Path], tmp_path_factory: pytest.TempPathFactory
          ) -> Iterator[Guest]:  # fmt: skip
    tmp = tmp_path_factory.mktemp("apifuzz")
    sock = tmp / "api.sock"
    proc = start_hanging_vmm(tiny_guest("HANG"), sock, 30)
    yield Guest(proc, sock, tmp)
    if proc.poll() is None:
        proc.kill()
    _, err = proc.communicate()
    assert "Traceback" not in err, err


def check_reply(line: bytes, sent: bytes) -> dict[str, Any]:
    assert line.endswith(b"\n") and line.count(b"\n") == 1, (sent[:200], line[:200])
    reply = json.loads(line)
    assert isinstance(reply, dict) and isinstance(reply.get("ok"), bool), reply
    if not reply["ok"]:
        error = reply.get("error")
        assert isinstance(error, str) and error and "\n" not in error, reply
        assert "internal error" not in error and "Traceback" not in error, (sent[:200], reply)
    return reply


def settle(g: Guest) -> None:
    """The guest still runs (resumed if a request paused it); devices a
    request attached are detached again so slots do not run out."""
    assert g.proc.poll() is None, g.proc.communicate()
    state = request(g.sock, {"cmd": "status"})["state"]
    if state == "paused":
        request(g.sock, {"cmd": "resume"})
    assert request(g.sock, {"cmd": "status"})["state"] == "running"
    for d in request(g.sock, {"cmd": "devices"}):
        request(g.sock, {"cmd": "detach", "device": d["id"], "force": True})


json_scalar = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**200), 2**200), st.floats(allow_nan=False),
    st.text(max_size=30),
)  # fmt: skip
json_value = st.recursive(
    json_scalar,
    lambda inner: st.one_of(st.lists(inner, max_size=4),
                            st.dictionaries(st.text(max_size=8), inner, max_size=4)),
    max_leaves=12,
)  # fmt: skip


@st.composite
def requests(draw: st.DrawFn, tmp: Path) -> bytes:
    """One request line (with its newline)."""
    shape = draw(st.sampled_from(["raw", "json", "request", "request", "request", "long"]))
    if shape == "raw":  # a blank line is skipped without a reply (vmm/api.py): not one here
        raw = draw(st.binary(max_size=200)).replace(b"\n", b" ")
        return (raw if raw.strip() else b"?" + raw) + b"\n"
    if shape == "long":  # one byte over the limit with its newline: refused whole
        head = b'{"cmd": "status", "pad": "'
        return head + b"x" * (MAX_REQUEST + 1 - len(head) - 3) + b'"}\n'
    if shape == "json":
        return json.dumps(draw(json_value)).encode() + b"\n"
    req: dict[str, Any] = {"cmd": draw(st.one_of(st.sampled_from(SAFE_COMMANDS),
                                                 st.text(max_size=10), json_scalar))}  # fmt: skip
    if draw(st.booleans()):
        req["kind"] = draw(st.one_of(st.sampled_from(KINDS), json_scalar))
    if draw(st.booleans()):
        # paths only inside the test's directory: the fuzzer must not create files elsewhere
        req["path" if draw(st.booleans()) else "output"] = draw(st.one_of(
            st.just(str(tmp / "disk.img")), st.just(str(tmp / "missing" / "x")),
            st.text(max_size=10).map(lambda t: str(tmp / ("f" + t.replace("/", "_")))),
            json_scalar))  # fmt: skip
    if draw(st.booleans()):
        req["device"] = draw(st.one_of(st.sampled_from(["disk0", "rng0", "console0", "net0"]),
                                       json_scalar))  # fmt: skip
    if draw(st.booleans()):
        req["id"] = draw(json_scalar)  # echoed in the reply
    if draw(st.booleans()):
        req["readonly"] = draw(json_scalar)
    if draw(st.booleans()):
        req[draw(st.text(max_size=8))] = draw(json_value)
    if req["cmd"] in ("stop", "subscribe", "console"):
        req["cmd"] = "status"
    if req["cmd"] == "detach":
        req["force"] = True  # a guest that never releases would make the request wait
    return json.dumps(req).encode() + b"\n"


@settings(max_examples=EXAMPLES, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                 HealthCheck.data_too_large])  # fmt: skip
@given(data=st.data())
def test_random_requests_get_one_line_each(guest: Guest, data: st.DataObject) -> None:
    lines = data.draw(st.lists(requests(guest.tmp), min_size=1, max_size=4))
    batch = b"".join(lines)
    replies = guest.exchange(batch)
    for line, sent in zip(replies, lines, strict=True):
        check_reply(line, sent)
    settle(guest)


@pytest.mark.parametrize(
    "req",
    [{"cmd": "attach", "kind": []}, {"cmd": "attach", "kind": {"a": 1}},
     {"cmd": "attach", "kind": 7}, {"cmd": "detach", "device": []},
     {"cmd": "detach", "device": 1.5}, {"cmd": "detach", "device": True},
     {"cmd": "attach", "kind": "disk", "path": ["x"]}, {"cmd": "attach", "kind": "disk",
                                                       "path": {"p": 1}}],
)  # fmt: skip
def test_arguments_of_the_wrong_type_are_named(guest: Guest, req: dict[str, Any]) -> None:
    """The explicit cases of the random test's argument types: each names
    the argument and the type it must have."""
    sent = json.dumps(req).encode() + b"\n"
    reply = check_reply(guest.exchange(sent)[0], sent)
    name = "path" if "path" in req else ("kind" if "kind" in req else "device")
    assert reply["ok"] is False and f"argument {name!r} must be a str" in reply["error"], reply
    settle(guest)


def test_long_lines_are_refused_and_the_next_request_served(guest: Guest) -> None:
    long = b'{"cmd": "status", "pad": "' + b"y" * (MAX_REQUEST * 2) + b'"}\n'
    replies = guest.exchange(long + b'{"cmd": "status"}\n')
    first = check_reply(replies[0], long)
    assert first["ok"] is False and "longer than" in first["error"], first
    # what follows the refused prefix is read as requests of its own; each gets
    # an error, then the real next request its answer
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(20)
        s.connect(str(guest.sock))
        s.sendall(b'{"cmd": "status", "pad": "' + b"z" * (MAX_REQUEST + 1) + b'"}\n'
                  b'{"cmd": "status"}\n')  # fmt: skip
        reader = s.makefile("rb")
        for _ in range(10):
            reply = check_reply(reader.readline(), b"")
            if reply["ok"]:
                assert reply["result"]["state"] == "running"
                break
        else:
            pytest.fail("the request after a long line got no answer")
    settle(guest)


def test_many_clients_disconnects_and_attach_detach_races(guest: Guest) -> None:
    """Eight clients at once: some send half a request and hang up, some
    race to attach and detach the same disk and entropy device, some ask for
    the device list; every complete request is answered, and afterwards the
    machine runs and a disk attaches and detaches cleanly."""
    errors: list[str] = []
    attach_disk = json.dumps({"cmd": "attach", "kind": "disk", "path": str(guest.image)})
    script = [attach_disk, '{"cmd": "attach", "kind": "rng"}', '{"cmd": "devices"}',
              '{"cmd": "detach", "device": "disk0", "force": true}',
              '{"cmd": "detach", "device": "rng0", "force": true}',
              '{"cmd": "status"}']  # fmt: skip

    def client(n: int) -> None:
        try:
            for round_ in range(15):
                if (n + round_) % 4 == 0:  # half a request, then hang up
                    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                        s.connect(str(guest.sock))
                        s.sendall(b'{"cmd": "att')
                    continue
                lines = [script[(n + round_ + k) % len(script)] for k in range(3)]
                sent = "\n".join(lines).encode() + b"\n"
                for line in guest.exchange(sent):
                    check_reply(line, sent)
        except Exception as exc:  # collected: a thread's assertion must fail the test
            errors.append(f"client {n}: {exc!r}")

    threads = [threading.Thread(target=client, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    settle(guest)
    assert request(guest.sock, {"cmd": "devices"}) == []
    assert request(guest.sock, {"cmd": "attach", "kind": "disk", "path": str(guest.image)}) == {
        "id": "disk0"}
    assert [d["id"] for d in request(guest.sock, {"cmd": "devices"})] == ["disk0"]
    assert request(guest.sock, {"cmd": "detach", "device": "disk0", "force": True}) is None
    assert request(guest.sock, {"cmd": "status"})["state"] == "running"
