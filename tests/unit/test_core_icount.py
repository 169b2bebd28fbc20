"""Instruction budgets of the portable core's paths (scripts/corecount:
valgrind's callgrind on the host build of the core, libkeelcore-count.so).

The calls go into the core as the system-call entry hands them over
(host_invoke: the capability's lookup, then invoke()), with one CPU and as
one of two CPUs holding the objects lock shared.  The counts are exact and
the same on every run, so a change that lengthens one of these paths fails
here whatever the host's load; scripts/icount and tests/boot/test_icount.py
count the whole path in a guest.  A budget is a count, not a time; lower it
when a path gets shorter (docs/benchmarks.md keeps the record).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.conftest import load_module

ROOT = Path(__file__).resolve().parents[2]

# Instructions per round (copy + delete: both calls; move: there and back),
# (1 CPU, 2 CPUs shared), as measured on 2026-12-08 when the capability
# locks were split by derivation family and reply and untyped capabilities
# began to move shared, with the headroom of tests/boot/test_icount.py.
MEASURED = {
    "identify": (243, 236),
    "copy_delete": (850, 1114),
    "mint_delete": (862, 1126),
    "retype_delete": (1477, 1967),
    "move": (886, 1396),
}
HEADROOM = 0.03


def test_core_paths_stay_within_their_instruction_budgets() -> None:
    if not shutil.which("valgrind"):
        pytest.fail("valgrind is missing: scripts/install-deps installs it")
    counts = load_module("keel_corecount", ROOT / "scripts" / "corecount").counts()
    over = {}
    for op, measured in MEASURED.items():
        for cpus, n in zip((1, 2), measured, strict=True):
            budget = int(n * (1 + HEADROOM)) + 2
            if counts[op][cpus] > budget:
                over[(op, cpus)] = (counts[op][cpus], budget)
    assert not over, f"instructions over budget (count, budget): {over}; all: {counts}"
    # The shared paths' price over one CPU's: the capability locks, the
    # retire's stamp and the grace bookkeeping - but a look up and a check
    # of rights costs the same either way.
    assert abs(counts["identify"][2] - counts["identify"][1]) < 20, counts
