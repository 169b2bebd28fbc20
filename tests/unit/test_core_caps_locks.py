"""The capability locks (sched.h): one per derivation family - the capabilities
made from one untyped region and what was derived from them - and one per slot
to fill, so capability storms in regions of their own share no lock.  On the
host build of the core with simulated CPUs (test_core_grace.py's harness):
another CPU holds one region's family lock, and every kind of shared call in
another region runs without waiting for it, while a call in the held region
waits (the harness notes the wait and lets the lock go, as its holder would)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.unit.test_core_grace import SharedWorld, shared_world
from tests.unit.test_core_host import (
    CNODE_SLOT,
    FIRST_FREE,
    UT_SLOT,
    check_invariants,
)

LOCKS_CDEF = """
void host_hold_caps_lock(uint64_t key);
bool host_caps_lock_waited(void);
void host_release_caps_lock(void);
"""


def stripe(key: int) -> int:
    """object.h: caps_stripe."""
    return ((key * 0x9E3779B97F4A7C15) & (1 << 64) - 1) >> 56


@pytest.fixture(scope="module")
def locks() -> Iterator[SharedWorld]:
    yield from shared_world(LOCKS_CDEF)


def _two_regions(w: SharedWorld) -> tuple[int, int]:
    """Two 16 KiB regions from the root one whose families' locks differ."""
    w.reset()
    w.cpu = 0
    first = FIRST_FREE + 40
    assert w.call(UT_SLOT, "untyped_retype", w.T["untyped"], 14, CNODE_SLOT, first, 4)[0] == 0
    regions = [first + i for i in range(4)]
    used = {stripe(w.slots()[UT_SLOT].obj)}
    mine = [r for r in regions if stripe(w.slots()[r].obj) not in used]
    assert len(mine) >= 2 and stripe(w.slots()[mine[0]].obj) != stripe(w.slots()[mine[1]].obj)
    return mine[0], mine[1]


def _calls_in(w: SharedWorld, region: int, base: int) -> list[tuple[Any, ...]]:
    """A capability storm's round in region's family, in slots from base."""
    ep, copy, mint, frame, sub = range(base, base + 5)
    T = w.T
    return [
        (region, "untyped_retype", T["notification"], 0, CNODE_SLOT, ep, 1),
        (CNODE_SLOT, "cnode_copy", copy, CNODE_SLOT, ep, 15),
        (CNODE_SLOT, "cnode_identify", copy),
        (CNODE_SLOT, "cnode_mint", mint, CNODE_SLOT, ep, 3, 9),
        (CNODE_SLOT, "cnode_move", copy + 10, CNODE_SLOT, copy),
        (CNODE_SLOT, "cnode_delete", mint),
        (CNODE_SLOT, "cnode_revoke", ep),
        (region, "untyped_retype", T["frame"], 0, CNODE_SLOT, frame, 1),
        (region, "untyped_retype", T["untyped"], 12, CNODE_SLOT, sub, 1),
        (CNODE_SLOT, "cnode_revoke", region),  # a region's revoke, shared
        (region, "untyped_retype", T["untyped"], 13, CNODE_SLOT, sub, 1),
        (CNODE_SLOT, "cnode_delete", sub),
    ]


def test_storms_in_regions_of_their_own_share_no_capability_lock(locks: SharedWorld) -> None:
    w = locks
    held, free = _two_regions(w)
    w.lib.host_hold_caps_lock(w.slots()[held].obj)
    try:
        w.cpu = 1
        before = (w.retries, w.graces)
        for call in _calls_in(w, free, FIRST_FREE):
            err, _ = w.call(*call)
            assert err == 0, (call, err)
            assert not w.lib.host_caps_lock_waited(), f"{call[1]} waited for another family's lock"
        assert (w.retries, w.graces) == before, "a call ran exclusive or waited for a grace period"
        # The same round in the held region's family waits for its lock.
        waited = []
        for call in _calls_in(w, held, FIRST_FREE + 20)[:2]:
            assert w.call(*call)[0] == 0, call
            waited.append(w.lib.host_caps_lock_waited())
        assert all(waited), waited
    finally:
        w.lib.host_release_caps_lock()
    check_invariants(w)
