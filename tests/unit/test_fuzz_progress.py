"""keel fuzz shows the guest's progress lines as they come (vmm/fuzz.py run_once),
whole even when the console delivers them in pieces; nothing else is shown."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest

from vmm import fuzz

CONSOLE = (b"fuzz: seed 1, 20000 calls, 2 processes on 2 cpus\r\n\x00\x07"
           b"\r\nfuzz: 10000 calls so far; canary untouched, workload 5 messages in order\r\n"
           b"fuzz: 20000 calls so far; canary untouched, workload 9 messages in order\r\n"
           b"\r\nfuzz: ok 20000 calls (3 batches) in 2 processes; memory whole\r\n")  # fmt: skip


@dataclass
class Result:
    status: int = 0
    reason: str = "exit"


class FakeMachine:
    """Feeds CONSOLE to the console callback in pieces of ``step`` bytes."""

    step = 7

    def __init__(self, *args: Any, console: Any, **kwargs: Any) -> None:
        self.console = console

    def start(self) -> None:
        for i in range(0, len(CONSOLE), self.step):
            self.console(CONSOLE[i : i + self.step])

    def wait_interruptible(self) -> Result:
        return Result()

    def close(self) -> None:
        pass


@pytest.mark.parametrize("step", [1, 7, 64, len(CONSOLE)])
def test_progress_lines_are_shown_whole_as_they_come(monkeypatch: pytest.MonkeyPatch,
                                                     step: int) -> None:  # fmt: skip
    monkeypatch.setattr(FakeMachine, "step", step)
    monkeypatch.setattr(fuzz, "Machine", FakeMachine)
    shown: list[str] = []
    outcome = fuzz.run_once("kernel", "initrd", seed=1, calls=20000, smp=2, procs=None,
                            progress=shown.append)  # fmt: skip
    assert outcome.ok and outcome.console == CONSOLE
    assert shown == [
        "fuzz: 10000 calls so far; canary untouched, workload 5 messages in order",
        "fuzz: 20000 calls so far; canary untouched, workload 9 messages in order",
    ]
