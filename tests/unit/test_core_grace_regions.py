"""A region's revoke with the objects lock shared, in two steps (grace.c:
region_retire, then grace_finish once the grace period is over), on the host
build of the core with simulated CPUs: test_core_grace.py's harness."""

from __future__ import annotations

from tests.unit.test_core_grace import FINISH, GRACE, PENDING, RETRY, A, B, C, SharedWorld
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
    assert w.object_type(ep, w.T["endpoint"]) != 0
    # A retype from the region meanwhile waits for the revoke to finish.
    late = FIRST_FREE + 50
    assert w.once(region, "untyped_retype", w.T["notification"], 0, CNODE_SLOT, late, 1) == FINISH
    assert ep != 0 and late not in w.slots()
    assert 1 in w.held
    w.leave(1)
    w.lib.host_grace_finish(0)
    assert w.object_type(ep, w.T["endpoint"]) == 0, "the endpoint was not destroyed"
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
    ep = w.body(A, 0)[3]
    w.hold(1, B)
    w.hold(2, A)
    assert w.once(CNODE_SLOT, "cnode_revoke", region) == PENDING
    for leaving in (1, 2):  # each in turn is the one looked at first
        for _ in range(2):  # a full look, then one at the CPU it found
            w.lib.host_grace_finish_due(0)
            assert w.object_type(ep, w.T["endpoint"]) != 0, f"destroyed while CPU {leaving} reads"
        w.leave(leaving)
    w.lib.host_grace_finish_due(0)
    assert w.object_type(ep, w.T["endpoint"]) == 0, "every CPU left, and it is not finished"
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
    ep = w.body(A, 0)[3]
    assert w.once(CNODE_SLOT, "cnode_revoke", region) == PENDING
    assert not {A, B} & set(w.slots())
    assert w.object_type(ep, w.T["endpoint"]) != 0, "destroyed before grace_finish"
    # No CPU is in the kernel: the grace period is over, the revoke is not.
    assert w.once(region, "untyped_retype", w.T["notification"], 0, CNODE_SLOT, A, 1) == GRACE
    assert w.once(region, "untyped_retype", w.T["untyped"], 16, CNODE_SLOT, C, 1) == FINISH
    w.lib.host_grace_finish(0)
    assert w.object_type(ep, w.T["endpoint"]) == 0, "the endpoint was not destroyed"
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
    ep = w.body(A, 0)[3]
    assert w.once(CNODE_SLOT, "cnode_revoke", region) == PENDING
    w.retries = w.graces = 0
    # A copy of the table's own capability into A, which the revoke retired
    assert w.call(CNODE_SLOT, "cnode_copy", A, CNODE_SLOT, CNODE_SLOT, 15)[0] == 0
    assert (w.graces, w.retries) == (1, 0), "the fill ran exclusive"
    assert w.object_type(ep, w.T["endpoint"]) == 0, "the revoke was not finished"
    for s in (A, region):
        assert w.call(CNODE_SLOT, "cnode_delete", s)[0] == 0
    check_invariants(w)


def test_a_pending_revoke_waits_only_for_cpus_that_may_read_its_slots(
    shared: SharedWorld,
) -> None:
    """Only a CPU that may read a retired slot holds a region's revoke back: not
    one whose call lists what it reads and listed none of them. On the way out
    (grace_finish_due) the revoke is finished once the CPU that read the
    endpoint through a copy has left, the other still in the kernel; a call
    that needs it finished (grace_wait_finish) waits for the first only. The
    finish frees the slots too: a fill into one runs at once. A CPU whose call
    reads any slot holds the revoke back whatever it read."""
    w = shared
    for way in ("out", "wait"):
        region = _region_with_an_endpoint(w)
        ep = w.body(A, 0)[3]
        w.hold(1, CNODE_SLOT, listed=True)  # reads the table's own capability only
        w.hold(2, B, listed=True)  # reads the endpoint's minted copy
        assert w.once(CNODE_SLOT, "cnode_revoke", region) == PENDING
        w.lib.host_grace_finish_due(0)
        assert w.object_type(ep, w.T["endpoint"]) != 0, "destroyed while CPU 2 reads it"
        if way == "out":
            w.leave(2)
            w.lib.host_grace_finish_due(0)
        else:
            assert w.wait_finish(0) == {2}, "waited for a CPU that read none of the slots"
        assert w.object_type(ep, w.T["endpoint"]) == 0, f"not finished ({way})"
        assert (w.body(A, 0)[4], w.body(B, 0)[4]) == (0, 0), "the finish left its slots retired"
        assert w.once(CNODE_SLOT, "cnode_copy", A, CNODE_SLOT, CNODE_SLOT, 15) == 0
        w.check_held()
        w.leave(1)
        assert w.call(CNODE_SLOT, "cnode_delete", A)[0] == 0
        check_invariants(w)

    region = _region_with_an_endpoint(w)
    ep = w.body(A, 0)[3]
    w.hold(1, CNODE_SLOT, listed=False)
    assert w.once(CNODE_SLOT, "cnode_revoke", region) == PENDING
    w.lib.host_grace_finish_due(0)
    assert w.object_type(ep, w.T["endpoint"]) != 0, "destroyed while CPU 1 may read any slot"
    assert w.wait_finish(0) == {1}, "no wait for a CPU that may read any slot"
    assert w.object_type(ep, w.T["endpoint"]) == 0
    check_invariants(w)


def test_a_region_moves_shared_with_what_was_made_from_it(shared: SharedWorld) -> None:
    """Moving an untyped capability - the spawner hands a new process its
    memory so (userspace/lib/spawn.c) - runs shared, under its family's lock,
    the lock of the family it heads and the destination slot's: what was made
    from it follows it (a revoke of the new slot reaches the endpoint, a
    retype from it keeps clear of the endpoint's memory), and a CPU that
    looked the old slot up still reads it there.  While a revoke of it is
    pending (or a retype from it under way: cap.b), the move runs exclusive."""
    w = shared
    region = _region_with_an_endpoint(w)
    moved = FIRST_FREE + 41
    w.retries = w.graces = 0
    w.hold(1, region, True)
    assert w.call(CNODE_SLOT, "cnode_move", moved, CNODE_SLOT, region)[0] == 0
    assert w.retries == 0, "the move of a region ran exclusive"
    assert region not in w.slots() and w.body(region, 0)[4], "the old slot is not retired"
    assert w.call(moved, "untyped_retype", w.T["notification"], 0, CNODE_SLOT, C, 1)[0] == 0
    check_invariants(w)  # the endpoint's and the notification's parent is the new slot
    w.leave(1)
    w.hold(2, B)
    assert w.once(CNODE_SLOT, "cnode_revoke", moved) == PENDING
    assert w.once(CNODE_SLOT, "cnode_move", region, CNODE_SLOT, moved) == RETRY
    w.leave(2)
    w.lib.host_grace_finish(0)
    assert not {A, B, C} & set(w.slots())
    assert w.call(CNODE_SLOT, "cnode_move", region, CNODE_SLOT, moved)[0] == 0
    assert w.retries == 0
    assert w.call(region, "untyped_retype", w.T["untyped"], 16, CNODE_SLOT, A, 1)[0] == 0
    check_invariants(w)
