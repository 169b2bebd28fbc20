"""The kernel's portable core, built for the host (build/host/libkeelcore.so).

Random sequences of copy, mint, move, delete, revoke and retype run against
the real capability code; after every step the derivation tree is checked:
no capability outlives a revoked ancestor, rights never grow, every object's
reference count matches the capabilities naming it, and an untyped region's
memory is free again exactly when nothing derived from it remains.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from tests.conftest import load_module

ROOT = Path(__file__).resolve().parents[2]
LIB = ROOT / "build" / "host" / "libkeelcore.so"
ABI = ROOT / "build" / "gen" / "keel_abi.py"

CDEF = """
struct host_slot {
    uint64_t type, rights, badge, obj, size_bits, used, refs;
    int64_t parent;
    uint64_t children;
    uint64_t flags;
    uint64_t io, io_live;
    uint64_t retired;
};
int host_world_create(uint32_t ut_bits);
void host_world_destroy(void);
long host_invoke(uint64_t cap, uint64_t label, const uint64_t *args, uint64_t *res);
uint64_t host_slot_count(void);
int host_slot_check(uint64_t index);
void host_slot_info(uint64_t index, struct host_slot *out);
void host_give_io_space_control(uint64_t index);
"""

UT_BITS = 16
CNODE_SLOT = 1
UT_SLOT = 2
FIRST_FREE = 3
IO_CONTROL_SLOT = 200  # an io_space control capability, as the root task's slot 7
IO_SLOT = 201  # an io_space made from it at reset
DEVICE = 0xD0000000
# The kernel's capability flag for a frame mapped into an io_space, read
# from its header so the two cannot drift apart.
_IOMAPPED = re.search(
    r"#define CAP_IOMAPPED (\d+)", (ROOT / "kernel" / "include" / "keel" / "object.h").read_text()
)
assert _IOMAPPED, "CAP_IOMAPPED is not defined in kernel/include/keel/object.h"
CAP_IOMAPPED = int(_IOMAPPED.group(1))


def _load_abi() -> Any:
    return load_module("keel_abi", ABI)


@pytest.fixture(scope="module")
def core() -> Iterator[Any]:
    if not LIB.exists() or not ABI.exists():
        pytest.fail(f"{LIB} is missing: run 'make host-lib'")
    import cffi

    ffi = cffi.FFI()
    ffi.cdef(CDEF)
    lib = ffi.dlopen(str(LIB))
    yield World(ffi, lib, _load_abi())


class World:
    def __init__(self, ffi: Any, lib: Any, abi: Any) -> None:
        self.ffi, self.lib, self.abi = ffi, lib, abi
        self.E = abi.ERRORS
        self.T = {name: value for name, (value, _bits) in abi.TYPES.items()}
        self.R = abi.RIGHTS

    def reset(self) -> None:
        self.lib.host_world_destroy()
        assert self.lib.host_world_create(UT_BITS) == 0
        self.lib.host_give_io_space_control(IO_CONTROL_SLOT)
        err, _ = self.call(IO_CONTROL_SLOT, "io_space_control_issue", DEVICE, CNODE_SLOT, IO_SLOT)
        assert err == 0

    def call(self, cap: int, name: str, *args: int) -> tuple[int, list[int]]:
        label = self.abi.CALLS[name][0]
        argv = self.ffi.new("uint64_t[6]", list(args) + [0] * (6 - len(args)))
        res = self.ffi.new("uint64_t[6]")
        err = self.lib.host_invoke(cap, label, argv, res)
        return err, list(res)

    def slots(self) -> dict[int, Any]:
        out = {}
        info = self.ffi.new("struct host_slot *")
        for i in range(1, self.lib.host_slot_count()):
            self.lib.host_slot_info(i, info)
            if info.type:
                out[i] = self.ffi.new("struct host_slot *", info[0])[0]
        return out

    def descendants(self, index: int) -> set[int]:
        slots = self.slots()
        found: set[int] = set()
        frontier = {index}
        while frontier:
            kids = {i for i, s in slots.items() if s.parent in frontier and i not in found}
            found |= kids
            frontier = kids
        return found


def check_invariants(w: World) -> None:
    slots = w.slots()
    n = w.lib.host_slot_count()
    for i in range(1, n):
        assert w.lib.host_slot_check(i) == 0, f"slot {i}: broken links"
    by_obj: dict[int, int] = {}
    for i, s in slots.items():
        if s.parent >= 0:
            p = slots[s.parent]
            if p.type == w.T["untyped"]:
                # made by retype: inside the region, below the watermark
                assert p.obj <= s.obj < p.obj + p.used, (i, s.parent)
            elif p.type == w.T["io_space_control"]:
                assert s.type == w.T["io_space"]  # issued by it
            else:
                assert s.type == p.type and s.obj == p.obj
                assert s.rights & ~p.rights == 0, f"slot {i} has rights its parent lacks"
        if s.type != w.T["untyped"]:
            by_obj[s.obj] = by_obj.get(s.obj, 0) + 1
        else:
            assert (s.used == 0) == (s.children == 0), f"untyped {i}: used {s.used}"
    # A DMA window belongs to one frame capability: no two live ones share it.
    windows = [(s.obj, s.io) for s in slots.values() if s.flags & CAP_IOMAPPED and s.io_live]
    assert len(windows) == len(set(windows)), "a DMA window held by two capabilities"
    for i, s in slots.items():
        if s.flags & CAP_IOMAPPED:
            assert s.type == w.T["frame"] and s.io, f"slot {i} is DMA-mapped but no frame"
    for s in slots.values():
        if s.refs:
            # the calling thread's own table capability lives outside the table
            extra = 1 if s.type == w.T["cnode"] and s.obj == slots[CNODE_SLOT].obj else 0
            assert s.refs == by_obj[s.obj] + extra


SLOTS = st.integers(FIRST_FREE, FIRST_FREE + 12)
RETYPABLE = ["endpoint", "notification", "frame", "tcb", "cnode", "untyped", "pt"]
RIGHTS = st.integers(0, 15)

op = st.one_of(
    st.tuples(st.just("retype"), st.sampled_from(RETYPABLE), SLOTS, st.integers(1, 3)),
    st.tuples(st.just("copy"), SLOTS, SLOTS, RIGHTS),
    st.tuples(st.just("mint"), SLOTS, SLOTS, RIGHTS, st.integers(1, 1 << 20)),
    st.tuples(st.just("move"), SLOTS, SLOTS),
    st.tuples(st.just("delete"), SLOTS),
    st.tuples(st.just("revoke"), st.one_of(SLOTS, st.just(UT_SLOT), st.just(IO_SLOT))),
    st.tuples(st.just("io_map"), SLOTS, st.integers(0, 4)),
    st.tuples(st.just("io_unmap"), SLOTS),
    st.tuples(st.just("copy"), SLOTS, st.just(IO_SLOT), RIGHTS),
    st.tuples(st.just("io_reissue")),
)


def apply(w: World, step: tuple[Any, ...]) -> None:
    kind = step[0]
    before = w.slots()
    if kind == "retype":
        _, type_name, dest, count = step
        bits = 12 if type_name == "untyped" else (2 if type_name == "cnode" else 0)
        err, _ = w.call(UT_SLOT, "untyped_retype", w.T[type_name], bits, CNODE_SLOT, dest, count)
        if err == 0:
            made = [dest + i for i in range(count)]
            after = w.slots()
            assert all(after[m].type == w.T[type_name] for m in made)
    elif kind in ("copy", "mint"):
        dest, src, rights = step[1], step[2], step[3]
        args = [dest, CNODE_SLOT, src, rights] + ([step[4]] if kind == "mint" else [])
        err, _ = w.call(CNODE_SLOT, f"cnode_{kind}", *args)
        if err == 0:
            after = w.slots()
            assert after[dest].rights == before[src].rights & rights
    elif kind == "move":
        dest, src = step[1], step[2]
        err, _ = w.call(CNODE_SLOT, "cnode_move", dest, CNODE_SLOT, src)
        if err == 0 and dest != src:
            after = w.slots()
            assert src not in after and after[dest].obj == before[src].obj
    elif kind == "io_map":
        err, _ = w.call(IO_SLOT, "io_space_map", step[1], step[2])
        if err == 0:
            assert w.slots()[step[1]].flags & CAP_IOMAPPED
    elif kind == "io_unmap":
        err, _ = w.call(IO_SLOT, "io_space_unmap", step[1])
        if err == 0:
            assert not w.slots()[step[1]].flags & CAP_IOMAPPED
    elif kind == "io_reissue":
        # destroy the io_space (every capability to it) and make the device a new one
        assert w.call(CNODE_SLOT, "cnode_revoke", IO_SLOT)[0] == 0
        assert w.call(CNODE_SLOT, "cnode_delete", IO_SLOT)[0] == 0
        for i, s in w.slots().items():
            assert s.type != w.T["io_space"], f"slot {i} outlived the io_space"
            assert not s.io_live, f"slot {i} still maps into a destroyed io_space"
        err, _ = w.call(IO_CONTROL_SLOT, "io_space_control_issue", DEVICE, CNODE_SLOT, IO_SLOT)
        assert err == 0
    elif kind == "delete":
        err, _ = w.call(CNODE_SLOT, "cnode_delete", step[1])
        assert err == 0
        assert step[1] not in w.slots()
    else:
        target = step[1]
        doomed = w.descendants(target)
        err, _ = w.call(CNODE_SLOT, "cnode_revoke", target)
        if err == 0:
            after = w.slots()
            assert not doomed & set(after), "a capability outlived its revoked ancestor"
            assert target in after


# One explicit case per class of defect the random runs must not leave to
# chance (found by mutating the core): a copy or mint of an untyped region
# (cap_is_derivable always true), a copy keeping rights it was not given, a
# revoke that leaves a grandchild, a move that leaves the source.
KNOWN_CASES = [
    [("retype", "untyped", FIRST_FREE, 1), ("copy", FIRST_FREE + 1, FIRST_FREE, 15)],
    [("retype", "untyped", FIRST_FREE, 1), ("mint", FIRST_FREE + 1, FIRST_FREE, 15, 7)],
    [("retype", "endpoint", FIRST_FREE, 1), ("copy", FIRST_FREE + 1, FIRST_FREE, 5),
     ("copy", FIRST_FREE + 2, FIRST_FREE + 1, 15)],
    [("retype", "frame", FIRST_FREE, 1), ("copy", FIRST_FREE + 1, FIRST_FREE, 15),
     ("copy", FIRST_FREE + 2, FIRST_FREE + 1, 15), ("revoke", FIRST_FREE)],
    [("retype", "notification", FIRST_FREE, 1), ("move", FIRST_FREE + 1, FIRST_FREE)],
    [("retype", "frame", FIRST_FREE, 2), ("io_map", FIRST_FREE, 3),
     ("copy", FIRST_FREE + 2, FIRST_FREE, 15), ("io_reissue",), ("io_map", FIRST_FREE + 2, 1)],
    [("retype", "cnode", FIRST_FREE, 1), ("revoke", UT_SLOT)],
]  # fmt: skip


def _with_known_cases(f: Any) -> Any:
    for case in KNOWN_CASES:
        f = example(case)(f)
    return f


@settings(
    max_examples=600, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.lists(op, min_size=1, max_size=40))
@_with_known_cases
def test_random_capability_operations(core: World, steps: list[tuple[Any, ...]]) -> None:
    core.reset()
    check_invariants(core)
    for step in steps:
        apply(core, step)
        check_invariants(core)


def test_only_derivable_capabilities_are_copied(core: World) -> None:
    """Untyped memory is handed out by retype only: a copy or a mint of an
    untyped region, the root one or one made by retype, is refused."""
    core.reset()
    E, T = core.E, core.T
    sub = FIRST_FREE
    assert core.call(UT_SLOT, "untyped_retype", T["untyped"], 12, CNODE_SLOT, sub, 1)[0] == 0
    for src in (UT_SLOT, sub):
        for kind, extra in (("copy", ()), ("mint", (5,))):
            err, _ = core.call(CNODE_SLOT, f"cnode_{kind}", sub + 1, CNODE_SLOT, src, 15, *extra)
            assert err == E["invalid_arg"], (kind, src, err)
            assert sub + 1 not in core.slots()
    check_invariants(core)


def test_revoking_untyped_returns_all_memory(core: World) -> None:
    core.reset()
    E, T = core.E, core.T
    # fill the region with frames, 16 at a time
    slot = FIRST_FREE
    while True:
        err, _ = core.call(UT_SLOT, "untyped_retype", T["frame"], 0, CNODE_SLOT, slot, 1)
        if err:
            assert err == E["no_memory"]
            break
        slot += 1
    assert slot - FIRST_FREE == (1 << UT_BITS) // 4096
    err, _ = core.call(CNODE_SLOT, "cnode_copy", slot, CNODE_SLOT, FIRST_FREE, 15)
    assert err == 0
    assert core.call(CNODE_SLOT, "cnode_revoke", UT_SLOT)[0] == 0
    assert core.slots()[UT_SLOT].used == 0
    assert set(core.slots()) == {CNODE_SLOT, UT_SLOT, IO_CONTROL_SLOT, IO_SLOT}
    check_invariants(core)


def test_deleting_a_cnode_deletes_what_it_holds(core: World) -> None:
    core.reset()
    T = core.T
    cn = FIRST_FREE
    assert core.call(UT_SLOT, "untyped_retype", T["cnode"], 3, CNODE_SLOT, cn, 1)[0] == 0
    # endpoints made straight into the new table, and one copied out of it
    assert core.call(UT_SLOT, "untyped_retype", T["endpoint"], 0, cn, 1, 3)[0] == 0
    assert core.call(CNODE_SLOT, "cnode_copy", cn + 1, cn, 2, 15)[0] == 0
    assert core.slots()[cn + 1].refs == 2
    assert core.call(CNODE_SLOT, "cnode_delete", cn)[0] == 0
    # the copy survives the table; its object lost one reference
    assert core.slots()[cn + 1].refs == 1
    check_invariants(core)


def test_io_space_windows_belong_to_one_frame_capability(core: World) -> None:
    core.reset()
    E, T, R = core.E, core.T, core.R
    frame, copy = FIRST_FREE, FIRST_FREE + 1
    assert core.call(UT_SLOT, "untyped_retype", T["frame"], 0, CNODE_SLOT, frame, 1)[0] == 0
    # one io_space per device; only device addresses (the MMIO hole)
    assert (
        core.call(IO_CONTROL_SLOT, "io_space_control_issue", DEVICE, CNODE_SLOT, 50)[0]
        == E["exists"]
    )
    assert (
        core.call(IO_CONTROL_SLOT, "io_space_control_issue", 0x1000, CNODE_SLOT, 50)[0]
        == E["invalid_arg"]
    )
    assert core.call(IO_SLOT, "io_space_map", frame, 0)[0] == E["invalid_arg"]
    assert core.call(IO_SLOT, "io_space_map", frame, R["exec"])[0] == E["invalid_arg"]
    assert core.call(IO_SLOT, "io_space_map", UT_SLOT, R["read"])[0] == E["wrong_type"]
    assert core.call(IO_SLOT, "io_space_unmap", frame)[0] == E["not_mapped"]
    assert core.call(IO_SLOT, "io_space_map", frame, R["read"] | R["write"])[0] == 0
    assert core.call(IO_SLOT, "io_space_map", frame, R["read"])[0] == E["exists"]
    # a copy carries no window; a read-only copy cannot grant device writes
    assert core.call(CNODE_SLOT, "cnode_copy", copy, CNODE_SLOT, frame, R["read"])[0] == 0
    assert not core.slots()[copy].flags & CAP_IOMAPPED
    assert core.call(IO_SLOT, "io_space_unmap", copy)[0] == E["not_mapped"]
    assert core.call(IO_SLOT, "io_space_map", copy, R["write"])[0] == E["no_rights"]
    assert core.call(IO_SLOT, "io_space_map", copy, R["read"])[0] == 0
    # revoking the frame deletes the copy and its window
    assert core.call(CNODE_SLOT, "cnode_revoke", frame)[0] == 0
    assert copy not in core.slots()
    assert core.call(IO_SLOT, "io_space_unmap", frame)[0] == 0
    assert core.call(IO_SLOT, "io_space_info")[1][:2] == [DEVICE, 0]  # no IOMMU on the host
    # the io_space is counted like any object; the last capability destroys it
    assert core.call(CNODE_SLOT, "cnode_copy", 60, CNODE_SLOT, IO_SLOT, 15)[0] == 0
    assert core.slots()[IO_SLOT].refs == 2
    assert core.call(IO_SLOT, "io_space_map", frame, R["read"])[0] == 0
    assert core.call(CNODE_SLOT, "cnode_delete", IO_SLOT)[0] == 0
    assert core.slots()[frame].io_live  # a copy of the io_space still exists
    assert core.call(CNODE_SLOT, "cnode_delete", 60)[0] == 0
    assert not core.slots()[frame].io_live
    assert core.call(IO_CONTROL_SLOT, "io_space_control_issue", DEVICE, CNODE_SLOT, IO_SLOT)[0] == 0
    assert core.call(IO_SLOT, "io_space_map", frame, R["read"])[0] == 0  # stale mark ignored
    check_invariants(core)


def test_errors_are_specific(core: World) -> None:
    core.reset()
    E, T = core.E, core.T
    assert core.call(0, "cnode_delete", 3)[0] == E["invalid_cap"]
    assert core.call(UT_SLOT, "cnode_delete", 3)[0] == E["wrong_type"]
    assert core.call(UT_SLOT, "untyped_retype", 99, 0, CNODE_SLOT, 3, 1)[0] == E["invalid_arg"]
    assert (
        core.call(UT_SLOT, "untyped_retype", T["endpoint"], 0, UT_SLOT, 3, 1)[0] == E["wrong_type"]
    )
    assert (
        core.call(UT_SLOT, "untyped_retype", T["untyped"], 30, CNODE_SLOT, 3, 1)[0]
        == E["no_memory"]
    )


def test_a_region_deleted_with_children_hands_its_family_to_its_parent(core: World) -> None:
    """The capabilities made from an untyped region are one derivation family,
    under one of the capability locks (sched.h); deleted with children, the
    region's children and their copies move up and join the family its
    parent heads (cap.c: family_merge) - host_slot_check's family check."""
    core.reset()
    T = core.T
    first, sub, ep, copy, inner, frame = range(FIRST_FREE, FIRST_FREE + 6)
    # a frame first: the region starts past the parent's (two families, two keys)
    assert core.call(UT_SLOT, "untyped_retype", T["frame"], 0, CNODE_SLOT, first, 1)[0] == 0
    assert core.call(UT_SLOT, "untyped_retype", T["untyped"], 15, CNODE_SLOT, sub, 1)[0] == 0
    assert core.slots()[sub].obj != core.slots()[UT_SLOT].obj
    assert core.call(sub, "untyped_retype", T["endpoint"], 0, CNODE_SLOT, ep, 1)[0] == 0
    assert core.call(CNODE_SLOT, "cnode_copy", copy, CNODE_SLOT, ep, 15)[0] == 0
    assert core.call(sub, "untyped_retype", T["untyped"], 12, CNODE_SLOT, inner, 1)[0] == 0
    assert core.call(inner, "untyped_retype", T["frame"], 0, CNODE_SLOT, frame, 1)[0] == 0
    check_invariants(core)
    assert core.call(CNODE_SLOT, "cnode_delete", sub)[0] == 0
    slots = core.slots()
    assert slots[ep].parent == UT_SLOT and slots[copy].parent == ep
    assert slots[inner].parent == UT_SLOT and slots[frame].parent == inner
    check_invariants(core)
