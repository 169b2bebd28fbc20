"""A region's revoke with the objects lock shared, in two steps (grace.c:
region_retire, then grace_finish once the grace period is over), on the host
build of the core with simulated CPUs: test_core_grace.py's harness."""

from __future__ import annotations

from tests.unit.test_core_grace import FINISH, GRACE, PENDING, A, B, C, SharedWorld
from tests.unit.test_core_host import CNODE_SLOT, FIRST_FREE, UT_SLOT, check_invariants


def _region_with_an_endpoint(w: SharedWorld) -> int:
    """From a fresh world, on CPU 0: a 64 KiB untyped region, an endpoint made
    from it in slot A and a minted copy of it in B; the region's slot."""
    w.reset()
    w.cpu = 0
    region = FIRST_FREE + 40
    assert w.call(UT_SLOT, "untyped_retype", w.T["untyped"], 16, CNODE_SLOT, region, 1)[0] == 0
    assert w.call(region, "untyped_retype", w.T["endpoint"], 0, CNODE_SLOT, A, 1)[0] == 0
    assert w.call(CNODE_SLOT, "cnode_mint", B, CNODE_SLOT, A, 3, 7)[0] == 0
    return region


def test_a_region_revoke_destroys_only_after_the_grace_period(shared: SharedWorld) -> None:
    """A region's revoke, shared: step 1 retires every capability made from the
    region (KEEL_E_PENDING); a CPU that looked one up still reads it and its
    object lives on, and a retype from the region meanwhile waits for step 2
    (KEEL_E_FINISH), so it never reuses the objects' memory early; step 2
    (grace_finish, after every CPU left) destroys them, and the whole region
    is free again."""
    w = shared
    region = _region_with_an_endpoint(w)
    assert w.call(region, "untyped_retype", w.T["frame"], 0, CNODE_SLOT, C, 1)[0] == 0
    ep = w.body(A, 0)[3]
    w.hold(1, B)
    assert w.once(CNODE_SLOT, "cnode_revoke", region) == PENDING
    assert not {A, B, C} & set(w.slots())
    w.check_held()  # CPU 1 still reads B, and the endpoint is not destroyed
    assert w.body(B, w.T["endpoint"])[6] != 0
    # A retype from the region meanwhile waits for the revoke to finish.
    late = FIRST_FREE + 50
    assert w.once(region, "untyped_retype", w.T["notification"], 0, CNODE_SLOT, late, 1) == FINISH
    assert ep != 0 and late not in w.slots()
    assert 1 in w.held
    w.leave(1)
    w.lib.host_grace_finish(0)
    assert w.body(B, w.T["endpoint"])[6] == 0, "the endpoint was not destroyed"
    assert w.call(region, "untyped_retype", w.T["untyped"], 16, CNODE_SLOT, A, 1)[0] == 0
    assert w.call(CNODE_SLOT, "cnode_delete", A)[0] == 0
    check_invariants(w)


def test_a_pending_revoke_is_finished_on_the_way_out_once_every_cpu_is_past(
    shared: SharedWorld,
) -> None:
    """On each way out of the kernel (grace_finish_due) the revoking CPU looks
    first at the CPU that held the grace period open at its last look, then
    at all of them: it finishes only once every CPU in the kernel at the
    retirement has left it, whichever leaves last."""
    w = shared
    region = _region_with_an_endpoint(w)
    w.hold(1, B)
    w.hold(2, A)
    assert w.once(CNODE_SLOT, "cnode_revoke", region) == PENDING
    alive = w.body(B, w.T["endpoint"])[6]
    assert alive != 0
    for leaving in (1, 2):  # each in turn is the one looked at first
        for _ in range(2):  # a full look, then one at the CPU it found
            w.lib.host_grace_finish_due(0)
            assert w.body(B, w.T["endpoint"])[6] == alive, f"destroyed while CPU {leaving} reads"
        w.leave(leaving)
    w.lib.host_grace_finish_due(0)
    assert w.body(B, w.T["endpoint"])[6] == 0, "every CPU left, and the revoke is not finished"
    check_invariants(w)


def test_a_region_revoke_is_finished_by_the_call_that_needs_its_memory(
    shared: SharedWorld,
) -> None:
    """A region's revoke returns without waiting for its grace period
    (KEEL_E_PENDING); until the objects are destroyed (grace_finish) the retired
    slots stay as they are, even once no CPU reads them - a fill into one is
    refused (KEEL_E_GRACE) - and a retype from the region asks for the revoke
    to be finished first (KEEL_E_FINISH), so it finds the whole region free;
    afterwards both run."""
    w = shared
    region = _region_with_an_endpoint(w)

    assert w.once(CNODE_SLOT, "cnode_revoke", region) == PENDING
    assert not {A, B} & set(w.slots())
    assert w.body(A, w.T["endpoint"])[6] != 0, "destroyed before grace_finish"
    # No CPU is in the kernel: the grace period is over, the revoke is not.
    assert w.once(region, "untyped_retype", w.T["notification"], 0, CNODE_SLOT, A, 1) == GRACE
    assert w.once(region, "untyped_retype", w.T["untyped"], 16, CNODE_SLOT, C, 1) == FINISH
    w.lib.host_grace_finish(0)
    assert w.body(A, w.T["endpoint"])[6] == 0, "the endpoint was not destroyed"
    assert w.once(region, "untyped_retype", w.T["untyped"], 16, CNODE_SLOT, C, 1) == 0
    assert w.call(CNODE_SLOT, "cnode_delete", C)[0] == 0
    assert w.once(region, "untyped_retype", w.T["notification"], 0, CNODE_SLOT, A, 1) == 0
    assert w.call(CNODE_SLOT, "cnode_delete", A)[0] == 0
    check_invariants(w)


def test_a_fill_into_a_slot_of_its_own_pending_revoke_finishes_it_shared(
    shared: SharedWorld,
) -> None:
    """A fill that finds its slot held by this CPU's pending region revoke
    (KEEL_E_GRACE with no slot to wait for) waits a whole grace period, has the
    revoke finished and runs again shared: it never needs the exclusive lock."""
    w = shared
    region = _region_with_an_endpoint(w)
    assert w.once(CNODE_SLOT, "cnode_revoke", region) == PENDING
    w.retries = w.graces = 0
    # A copy of the table's own capability into A, which the revoke retired
    assert w.call(CNODE_SLOT, "cnode_copy", A, CNODE_SLOT, CNODE_SLOT, 15)[0] == 0
    assert (w.graces, w.retries) == (1, 0), "the fill ran exclusive"
    assert w.body(B, w.T["endpoint"])[6] == 0, "the revoke was not finished"
    for s in (A, region):
        assert w.call(CNODE_SLOT, "cnode_delete", s)[0] == 0
    check_invariants(w)
