"""``Console``, the transcript scripts wait on (``machine.console``), without KVM:
``wait_for`` raises on a timeout and can look only at what came after a mark."""

from __future__ import annotations

import threading

import pytest

from vmm.console import Console, ConsoleTimeout
from vmm.errors import KeelError


def test_wait_for_raises_on_a_timeout() -> None:
    console = Console()
    console.write(b"keel$ ")
    with pytest.raises(ConsoleTimeout, match=r"'ready' did not come within 0\.01 s"):
        console.wait_for("ready", timeout=0.01)
    assert issubclass(ConsoleTimeout, KeelError) and issubclass(ConsoleTimeout, TimeoutError)


def test_wait_for_matches_from_a_mark_onward() -> None:
    console = Console()
    console.write(b"keel$ ps\r\n")
    mark = console.mark()
    with pytest.raises(ConsoleTimeout):
        console.wait_for("keel$ ", timeout=0.01, since=mark)  # only the old prompt
    console.write(b"blk0 running\r\nkeel$ ")
    assert console.wait_for("keel$ ", timeout=0, since=mark)
    assert console.text_since(mark) == "blk0 running\r\nkeel$ "
    assert console.wait_for("keel$ ", timeout=0, count=2)  # from the start: both


def test_wait_for_wakes_on_output_and_fails_when_the_machine_stops() -> None:
    console = Console()
    writer = threading.Timer(0.05, console.write, args=(b"tiny: hello\n",))
    writer.start()
    assert console.wait_for("hello", timeout=None)
    writer.join()
    console.close()
    with pytest.raises(ConsoleTimeout, match="never came: the machine stopped"):
        console.wait_for("goodbye", timeout=None)
