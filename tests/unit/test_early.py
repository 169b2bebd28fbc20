"""vmm.early reads which command lines get their VM begun during the imports."""

from __future__ import annotations

import pytest

from vmm import early
from vmm.platform import MiB


@pytest.mark.parametrize(
    ("argv", "memory"),
    [
        (["run"], 256 * MiB),
        (["run", "build/kernel.elf", "--smp", "2"], 256 * MiB),
        (["run", "--memory", "64M"], 64 * MiB),
        (["run", "-m", "1G", "k.elf"], 1024 * MiB),
        (["run", "--memory=512M"], 512 * MiB),
        (["run", "--memory", "128"], 128 * MiB),
        (["run", "--daemon", "--api-sock", "s"], None),  # it forks: KVM refuses the child
        (["run", "--show-cpuid"], None),
        (["run", "--help"], None),
        (["run", "--memory", "lots"], None),
        (["run", "--memory"], None),
        (["stress"], None),
        (["restore", "dir"], None),
        ([], None),
    ],
)
def test_memory_of(argv: list[str], memory: int | None) -> None:
    assert early.memory_of(argv) == memory


def test_not_begun_for_other_programs() -> None:
    """Imported by pytest (or any other program), nothing is begun."""
    early.begin(["pytest", "run"])
    assert early.take(256 * MiB) is None
