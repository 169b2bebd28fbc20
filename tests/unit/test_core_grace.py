"""Delete, move and revoke with the objects lock shared (kernel/core/grace.c), on
the host build of the core with simulated CPUs.

A CPU in the middle of a system call has looked slots up without a lock and
still reads them; the others delete, move, revoke, copy and retype meanwhile,
holding the objects lock shared as the kernel does (a call the shared path
refuses with KEEL_E_RETRY runs again exclusive, once every CPU has left, as
kernel_upgrade waits for the readers; one refused with KEEL_E_GRACE, a fill
whose slot is still in its grace period, runs again shared once every CPU in
the kernel has left it, as kernel_regrace waits).  Hypothesis interleaves the calls and
the lookups; after every step:

- a slot a CPU looked up is not reused while that CPU is in the kernel: the
  capability it read (object, rights, badge) is still there, even if the slot
  was emptied meanwhile;
- the object it names is not destroyed (its reference count stays above zero);
- the derivation tree and the reference counts hold (test_core_host's
  invariants), and every call has the result it has when run alone.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from tests.unit.test_core_host import (
    ABI,
    CDEF,
    CNODE_SLOT,
    FIRST_FREE,
    LIB,
    SLOTS,
    UT_SLOT,
    World,
    _load_abi,
    apply,
    check_invariants,
    op,
)

GRACE_CDEF = """
void host_cpus(uint32_t n);
void host_enter(uint32_t cpu);
void host_enter_as(uint32_t cpu, uint32_t reads);
void host_hold(uint32_t cpu, uint64_t index, bool listed);
void host_leave(uint32_t cpu);
long host_invoke_on(uint32_t cpu, uint64_t cap, uint64_t label, const uint64_t *args,
                    uint64_t *res);
void host_slot_body(uint64_t index, uint64_t type, uint64_t *out);
void host_object_type(uint64_t obj, uint64_t type, uint64_t *out);
void host_grace_finish(uint32_t cpu);
void host_grace_finish_due(uint32_t cpu);
uint32_t host_grace_wait_finish(uint32_t cpu);
uint64_t host_grace_slot(uint32_t cpu);
void host_grace_epochs(uint32_t cpu, uint64_t *out);
void host_reply_cap(uint64_t index);
uint64_t host_reply_slot(void);
long host_decode_held(uint32_t cpu, uint64_t index, uint64_t type, uint64_t label,
                      const uint64_t *args, uint64_t *res);
"""

NCPUS = 3
RETRY = -1  # KEEL_E_RETRY: never seen by users, so not in the ABI's error list
GRACE = -2  # KEEL_E_GRACE: likewise
PENDING = -3  # KEEL_E_PENDING: a region's revoke destroys after the grace period
FINISH = -4  # KEEL_E_FINISH: a call that needs this CPU's pending revoke finished first
READS_FRESH = 0xFFFFFFFE  # keel/cpu.h: any slot, until call_one starts a list


class SharedWorld(World):
    """Calls run as `self.cpu` holding the objects lock shared; `held` maps a
    CPU in the kernel to the slots it looked up and what it read there."""

    def __init__(self, ffi: Any, lib: Any, abi: Any) -> None:
        super().__init__(ffi, lib, abi)
        self.cpu = 0
        self.held: dict[int, dict[int, tuple[int, ...]]] = {}
        self.retries = 0
        self.graces = 0
        self.pendings = 0

    def reset(self) -> None:
        for cpu in list(self.held):
            self.leave(cpu)
        self.lib.host_cpus(NCPUS)
        super().reset()

    def body(self, index: int, type_: int) -> tuple[int, ...]:
        out = self.ffi.new("uint64_t[7]")
        self.lib.host_slot_body(index, type_, out)
        return tuple(out)

    def object_type(self, obj: int, type_: int) -> int:
        """The type in the header of the object at `obj` (0: destroyed)."""
        out = self.ffi.new("uint64_t[2]")
        self.lib.host_object_type(obj, type_, out)
        return int(out[1])

    def wait_finish(self, cpu: int) -> set[int]:
        """grace_wait_finish on `cpu`: the CPUs its wait let leave first."""
        waited = int(self.lib.host_grace_wait_finish(cpu))
        left = {i for i in self.held if waited >> i & 1}
        for i in left:
            del self.held[i]  # left before the finish: nothing of theirs to check
        return left

    def enter(self, cpu: int, reads: int = READS_FRESH) -> None:
        """CPU `cpu` enters the kernel, its hold reading `reads` from the start
        (kernel_enter_shared): any slot until a call starts its list, or 0."""
        if cpu not in self.held:
            self.lib.host_enter_as(cpu, reads)
            self.held[cpu] = {}

    def leave(self, cpu: int) -> None:
        self.check_held()
        self.lib.host_leave(cpu)
        del self.held[cpu]

    def hold(self, cpu: int, index: int, listed: bool = False) -> None:
        """CPU `cpu` looks up slot `index` (a live one) and keeps reading it;
        listed: as a call that lists the slots it reads (grace.c), else as
        one that does not (the CPU then counts as reading any slot)."""
        self.enter(cpu)
        self.lib.host_hold(cpu, index, listed)
        read = self.body(index, 0)
        if read[0]:
            self.held[cpu][index] = read

    def check_held(self) -> None:
        for cpu, slots in self.held.items():
            for index, (type_, rights, badge, obj, _retired, _refs, _live) in slots.items():
                now = self.body(index, type_)
                assert now[1:4] == (rights, badge, obj), (
                    f"slot {index} reused while CPU {cpu} reads it: {now} was {type_, obj}"
                )
                assert now[0] in (0, type_)
                assert now[6] != 0, f"the object of slot {index} destroyed under CPU {cpu}"

    def leave_all(self) -> None:
        for cpu in list(self.held):
            self.leave(cpu)

    def shared_call(self, cap: int, label: int, argv: Any) -> tuple[int, Any]:
        """The call on the acting CPU with the objects lock shared, as an entry."""
        res = self.ffi.new("uint64_t[6]")
        self.lib.host_enter(self.cpu)
        err = self.lib.host_invoke_on(self.cpu, cap, label, argv, res)
        self.lib.host_leave(self.cpu)
        self.check_held()
        return err, res

    def once(self, cap: int, name: str, *args: int) -> int:
        """One entry's result, KEEL_E_PENDING, _GRACE, _FINISH and _RETRY as they are."""
        argv = self.ffi.new("uint64_t[6]", list(args) + [0] * (6 - len(args)))
        return int(self.shared_call(cap, self.abi.CALLS[name][0], argv)[0])

    def call(self, cap: int, name: str, *args: int) -> tuple[int, list[int]]:
        # A call is a system call of its own: the acting CPU's earlier one ended.
        if self.cpu in self.held:
            self.leave(self.cpu)
        label = self.abi.CALLS[name][0]
        argv = self.ffi.new("uint64_t[6]", list(args) + [0] * (6 - len(args)))
        err, res = self.shared_call(cap, label, argv)
        if err == PENDING:
            # grace_wait_finish: it waits only for the CPUs that may read a
            # retired slot, then grace_finish destroys the region's objects
            # and frees the slots (check_held: none under a CPU still in)
            self.pendings += 1
            self.wait_finish(self.cpu)
            self.check_held()
            err = 0
        if err == FINISH:
            # grace_wait_finish, then the call again shared
            self.wait_finish(self.cpu)
            err, res = self.shared_call(cap, label, argv)
        if err == GRACE:
            # kernel_regrace: holding nothing, the caller waits for every CPU
            # in the kernel to leave it, then runs the call again shared; for
            # a slot a pending region revoke holds, grace_finish first
            self.graces += 1
            if self.lib.host_grace_slot(self.cpu) == 0:
                self.wait_finish(self.cpu)
            self.leave_all()
            err, res = self.shared_call(cap, label, argv)
            if err == GRACE:
                err = RETRY
        if err == RETRY:
            # kernel_upgrade: the exclusive holder waits for every reader to leave
            self.retries += 1
            self.leave_all()
            err = self.lib.host_invoke(cap, label, argv, res)
        assert err != RETRY
        return err, list(res)


def shared_world(extra_cdef: str = "") -> Iterator[SharedWorld]:
    """A SharedWorld on the host build of the core (with extra_cdef's
    functions declared too), back to one CPU afterwards."""
    if not LIB.exists() or not ABI.exists():
        pytest.fail(f"{LIB} is missing: run 'make host-lib'")
    import cffi

    ffi = cffi.FFI()
    ffi.cdef(CDEF + GRACE_CDEF + extra_cdef)
    lib = ffi.dlopen(str(LIB))
    world = SharedWorld(ffi, lib, _load_abi())
    try:
        yield world
    finally:
        world.leave_all()
        lib.host_cpus(1)


@pytest.fixture(scope="module")
def shared() -> Iterator[SharedWorld]:
    yield from shared_world()


CPUS = st.integers(0, NCPUS - 1)
step = st.one_of(
    st.tuples(st.just("on"), CPUS, op),
    st.tuples(st.just("hold"), CPUS, st.one_of(SLOTS, st.just(UT_SLOT)), st.booleans()),
    st.tuples(st.just("leave"), CPUS),
)


def run(w: SharedWorld, steps: list[tuple[Any, ...]]) -> None:
    w.reset()
    check_invariants(w)
    for s in steps:
        if s[0] == "on":
            w.cpu = s[1]
            apply(w, s[2])
        elif s[0] == "hold":
            w.hold(s[1], s[2], *s[3:])
        elif s[1] in w.held:
            w.leave(s[1])
        w.check_held()
        check_invariants(w)


A, B, C = FIRST_FREE, FIRST_FREE + 1, FIRST_FREE + 2
# The cases the scheme exists for, kept whatever hypothesis draws: a slot
# deleted, moved away or revoked while another CPU reads it, then filled
# again by a third CPU that entered after the deletion.
KNOWN = [
    [("on", 0, ("retype", "endpoint", A, 1)), ("on", 0, ("copy", B, A, 15)),
     ("hold", 1, B), ("on", 0, ("delete", B)), ("on", 2, ("copy", B, A, 3)),
     ("leave", 1)],
    [("on", 0, ("retype", "notification", A, 1)), ("on", 0, ("mint", B, A, 15, 9)),
     ("hold", 1, B), ("on", 0, ("move", C, B)), ("on", 2, ("copy", B, A, 1))],
    [("on", 0, ("retype", "endpoint", A, 1)), ("on", 0, ("copy", B, A, 15)),
     ("on", 0, ("copy", C, B, 7)), ("hold", 1, C), ("hold", 2, B),
     ("on", 0, ("revoke", A)), ("on", 0, ("retype", "cnode", B, 2))],
    [("on", 0, ("retype", "cnode", A, 1)), ("hold", 1, A), ("on", 0, ("delete", A)),
     ("on", 2, ("retype", "endpoint", A, 1))],
    # an untyped region with nothing made from it: deleted shared, memory back
    [("on", 0, ("retype", "untyped", A, 2)), ("hold", 1, A), ("on", 0, ("delete", A)),
     ("on", 2, ("retype", "frame", C, 1)), ("on", 0, ("delete", B)),
     ("on", 2, ("revoke", C)), ("on", 0, ("delete", C))],
    # CPUs whose calls list what they read (grace.c): one reads B, another
    # read C before it was moved away; the fills wait only for them
    [("on", 0, ("retype", "endpoint", A, 1)), ("on", 0, ("copy", B, A, 15)),
     ("on", 0, ("copy", C, A, 7)), ("hold", 1, B, True), ("hold", 2, C, True),
     ("on", 0, ("delete", B)), ("on", 0, ("move", FIRST_FREE + 5, C)),
     ("on", 0, ("copy", C, A, 3)), ("on", 0, ("copy", B, A, 1)), ("leave", 2)],
]  # fmt: skip


@settings(
    max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.lists(step, min_size=1, max_size=40))
@example(KNOWN[0])
@example(KNOWN[1])
@example(KNOWN[2])
@example(KNOWN[3])
@example(KNOWN[4])
@example(KNOWN[5])
def test_interleaved_calls_never_reuse_what_a_cpu_reads(
    shared: SharedWorld, steps: list[tuple[Any, ...]]
) -> None:
    run(shared, steps)


def _endpoint_and_two_copies(w: SharedWorld) -> SharedWorld:
    """A fresh world on CPU 0: an endpoint in A, copies of it in B and C."""
    w.reset()
    w.cpu = 0
    assert w.call(UT_SLOT, "untyped_retype", w.T["endpoint"], 0, CNODE_SLOT, A, 1)[0] == 0
    for dest in (B, C):
        assert w.call(CNODE_SLOT, "cnode_copy", dest, CNODE_SLOT, A, 15)[0] == 0
    w.retries = w.graces = 0
    return w


def test_shared_paths_run_without_the_exclusive_lock(shared: SharedWorld) -> None:
    """Deleting, moving and revoking copies runs shared; a slot refilled before
    its grace period ends waits for its end (holding nothing) and runs shared
    again; a delete that destroys an object runs exclusive."""
    w = _endpoint_and_two_copies(shared)
    w.hold(1, B)
    assert w.call(CNODE_SLOT, "cnode_delete", B)[0] == 0
    assert w.call(CNODE_SLOT, "cnode_move", FIRST_FREE + 5, CNODE_SLOT, C)[0] == 0
    assert w.call(CNODE_SLOT, "cnode_revoke", A)[0] == 0
    assert w.retries == 0, "delete, move and revoke of copies ran exclusive"
    assert w.body(B, 0)[4], "slot B is not retired"
    # CPU 1 still reads B: filling it waits for CPU 1 to leave, then runs shared.
    assert w.call(CNODE_SLOT, "cnode_copy", B, CNODE_SLOT, A, 1)[0] == 0
    assert (w.retries, w.graces) == (0, 1) and 1 not in w.held
    # Nobody reads C (moved away): after a CPU's quiescent state it is filled shared.
    w.cpu = 2
    assert w.call(CNODE_SLOT, "cnode_copy", C, CNODE_SLOT, A, 1)[0] == 0
    assert (w.retries, w.graces) == (0, 1)
    # The last capability to the endpoint: its destruction runs exclusive.
    for s in (B, C):
        assert w.call(CNODE_SLOT, "cnode_delete", s)[0] == 0
    assert w.call(CNODE_SLOT, "cnode_delete", A)[0] == 0
    assert w.retries == 1
    # An untyped region with nothing in it is deleted shared, and its memory
    # is free again; with an object in it, the delete runs exclusive.
    assert w.call(UT_SLOT, "untyped_retype", w.T["untyped"], 12, CNODE_SLOT, A, 1)[0] == 0
    assert w.call(CNODE_SLOT, "cnode_delete", A)[0] == 0
    assert w.retries == 1 and w.slots()[UT_SLOT].used == 0
    assert w.call(UT_SLOT, "untyped_retype", w.T["untyped"], 12, CNODE_SLOT, A, 1)[0] == 0
    assert w.call(A, "untyped_retype", w.T["notification"], 0, CNODE_SLOT, B, 1)[0] == 0
    assert w.call(CNODE_SLOT, "cnode_delete", A)[0] == 0
    assert w.retries == 2
    check_invariants(w)


def test_a_fill_waits_only_for_the_cpus_whose_calls_may_read_its_slot(
    shared: SharedWorld,
) -> None:
    """A CPU whose call lists the slots it reads (grace.c) holds back the fill
    of a retired slot only if the slot is on its list; one that does not list
    them holds back every fill, as before."""
    w = _endpoint_and_two_copies(shared)
    w.hold(1, B, listed=True)
    assert w.call(CNODE_SLOT, "cnode_delete", C)[0] == 0
    w.cpu = 2
    assert w.call(CNODE_SLOT, "cnode_copy", C, CNODE_SLOT, A, 1)[0] == 0
    assert (w.graces, w.retries) == (0, 0), "a fill waited for a CPU that does not read its slot"
    assert 1 in w.held
    # CPU 1 reads B: its fill waits for CPU 1 to leave.
    assert w.call(CNODE_SLOT, "cnode_delete", B)[0] == 0
    assert w.call(CNODE_SLOT, "cnode_copy", B, CNODE_SLOT, A, 1)[0] == 0
    assert (w.graces, w.retries) == (1, 0) and 1 not in w.held
    # A CPU that lists nothing may read any slot: every fill waits for it.
    w.hold(1, B)
    assert w.call(CNODE_SLOT, "cnode_delete", C)[0] == 0
    assert w.call(CNODE_SLOT, "cnode_copy", C, CNODE_SLOT, A, 1)[0] == 0
    assert (w.graces, w.retries) == (2, 0) and 1 not in w.held
    # Nor does a list that overflows name every slot read: it reads any.
    for _ in range(9):
        w.hold(1, A, listed=True)
    assert w.call(CNODE_SLOT, "cnode_delete", C)[0] == 0
    assert w.call(CNODE_SLOT, "cnode_copy", C, CNODE_SLOT, A, 1)[0] == 0
    assert (w.graces, w.retries) == (3, 0)
    check_invariants(w)


def test_an_entry_that_has_read_nothing_yet_holds_back_no_fill(shared: SharedWorld) -> None:
    """A CPU that entered for a listed call (syscall_entry_reads) or for an
    interrupt starts with an empty list: until it looks a slot up, no fill
    waits for it, even if the host keeps it there for a while.  A CPU that
    entered for any other call may read any slot: every fill waits."""
    w = _endpoint_and_two_copies(shared)
    w.enter(1, 0)
    w.enter(2)
    assert w.call(CNODE_SLOT, "cnode_delete", C)[0] == 0
    assert w.once(CNODE_SLOT, "cnode_copy", C, CNODE_SLOT, A, 1) == GRACE
    w.leave(2)
    assert w.once(CNODE_SLOT, "cnode_copy", C, CNODE_SLOT, A, 1) == 0, (
        "a fill waited for a CPU that has read nothing"
    )
    w.leave_all()
    check_invariants(w)


def _epochs(w: SharedWorld, cpu: int) -> tuple[int, int, int]:
    """grace.c's (epoch, last stamp known past, CPU cpu's epoch)."""
    out = w.ffi.new("uint64_t[3]")
    w.lib.host_grace_epochs(cpu, out)
    return out[0], out[1], out[2]


def test_a_look_at_every_cpu_marks_the_stamps_past_for_good(shared: SharedWorld) -> None:
    """A fill that looks at every CPU also notes the last stamp all of them are
    past: the one before the oldest epoch of a CPU in the kernel, or before the
    epoch itself when none is.  Never a stamp a CPU in the kernel may still
    read, however many fills look; later fills of older slots look at no CPU."""
    w = _endpoint_and_two_copies(shared)
    w.hold(1, A)  # in the kernel since this epoch, reading any slot
    entered = _epochs(w, 1)[2]
    assert w.call(CNODE_SLOT, "cnode_delete", C)[0] == 0
    stamp = _epochs(w, 0)[0] - 1
    w.hold(2, B, listed=True)  # entered after the delete
    w.cpu = 3 if NCPUS > 3 else 0
    err = w.once(CNODE_SLOT, "cnode_copy", C, CNODE_SLOT, A, 1)
    assert err == GRACE, "a fill did not wait for a CPU that may read its slot"
    done = _epochs(w, 0)[1]
    assert done == entered - 1, f"past up to {done}: CPU 1 entered at {entered}, stamp {stamp}"
    w.leave(1)
    assert w.once(CNODE_SLOT, "cnode_copy", C, CNODE_SLOT, A, 1) == 0
    done = _epochs(w, 0)[1]
    assert stamp <= done < _epochs(w, 2)[2], "CPU 2, still in the kernel, is past no later stamp"
    w.leave_all()
    assert w.call(CNODE_SLOT, "cnode_delete", C)[0] == 0
    assert w.call(CNODE_SLOT, "cnode_copy", C, CNODE_SLOT, A, 1)[0] == 0
    assert _epochs(w, 0)[1] == _epochs(w, 0)[0] - 1, "no CPU in the kernel: every stamp is past"
    check_invariants(w)


VADDR = 1 << 39  # aligned for each table level (a PDPT maps 512 GiB)


def _tables(w: SharedWorld, first: int) -> int:
    """A vspace in slot `first` with a PDPT, PD and PT mapped down to VADDR."""
    assert w.call(UT_SLOT, "untyped_retype", w.T["vspace"], 0, CNODE_SLOT, first, 1)[0] == 0
    for i, kind in enumerate(("pdpt", "pd", "pt")):
        slot = first + 1 + i
        assert w.call(UT_SLOT, "untyped_retype", w.T[kind], 0, CNODE_SLOT, slot, 1)[0] == 0
        assert w.call(slot, f"{kind}_map", first, VADDR)[0] == 0
    return first


def test_unmapped_frames_leave_shared_and_a_late_map_finds_them_gone(shared: SharedWorld) -> None:
    """A frame's copy mapped nowhere is deleted (or revoked) shared under its
    mapping lock; a map by a CPU that looked the copy up before the delete then
    finds the slot empty and maps nothing.  A mapped copy, or more than one
    descendant, still runs exclusive, where the hook removes the mapping."""
    w, E = shared, shared.E
    w.reset()
    w.cpu = 0
    vs = _tables(w, FIRST_FREE + 30)
    frame, copy, other = A, B, C
    assert w.call(UT_SLOT, "untyped_retype", w.T["frame"], 0, CNODE_SLOT, frame, 1)[0] == 0
    assert w.call(CNODE_SLOT, "cnode_copy", copy, CNODE_SLOT, frame, 15)[0] == 0
    w.retries = 0
    w.hold(1, copy)
    assert w.call(CNODE_SLOT, "cnode_delete", copy)[0] == 0
    assert w.retries == 0, "an unmapped frame copy was deleted exclusive"
    # CPU 1, past its lookup and invoke's checks, maps the copy now.
    args = w.ffi.new("uint64_t[6]", [vs, VADDR, 3, 0, 0, 0])
    res = w.ffi.new("uint64_t[6]")
    label = w.abi.CALLS["frame_map"][0]
    assert w.lib.host_decode_held(1, copy, w.T["frame"], label, args, res) == E["invalid_cap"]
    args[0] = 0  # and unmaps it: not "not mapped", the capability is gone
    label = w.abi.CALLS["frame_unmap"][0]
    assert w.lib.host_decode_held(1, copy, w.T["frame"], label, args, res) == E["invalid_cap"]
    w.leave(1)
    assert w.call(vs, "vspace_lookup", VADDR)[0] == E["not_mapped"]
    # A mapped copy: exclusive, and the mapping goes with it.
    assert w.call(CNODE_SLOT, "cnode_copy", copy, CNODE_SLOT, frame, 15)[0] == 0
    assert w.call(copy, "frame_map", vs, VADDR, 3)[0] == 0
    assert w.call(vs, "vspace_lookup", VADDR)[0] == 0
    assert w.call(CNODE_SLOT, "cnode_delete", copy)[0] == 0
    assert w.retries == 1
    assert w.call(vs, "vspace_lookup", VADDR)[0] == E["not_mapped"]
    # Revoke: one unmapped copy shared; a mapped one, or two copies, exclusive.
    assert w.call(CNODE_SLOT, "cnode_copy", copy, CNODE_SLOT, frame, 15)[0] == 0
    assert w.call(CNODE_SLOT, "cnode_revoke", frame)[0] == 0
    assert w.retries == 1 and copy not in w.slots()
    assert w.call(CNODE_SLOT, "cnode_copy", other, CNODE_SLOT, frame, 15)[0] == 0
    assert w.call(other, "frame_map", vs, VADDR, 3)[0] == 0
    assert w.call(CNODE_SLOT, "cnode_revoke", frame)[0] == 0
    assert w.retries == 2 and other not in w.slots()
    assert w.call(vs, "vspace_lookup", VADDR)[0] == E["not_mapped"]
    for dest in (copy, other):
        assert w.call(CNODE_SLOT, "cnode_copy", dest, CNODE_SLOT, frame, 15)[0] == 0
    assert w.call(CNODE_SLOT, "cnode_revoke", frame)[0] == 0
    assert w.retries == 3
    check_invariants(w)


def test_a_storm_round_runs_shared(shared: SharedWorld) -> None:
    """One round of `keel stress`'s capability storm (userspace/tests/stress_mem.c
    caps_storm), call for call: of its 16 calls, the kernel before the grace
    periods ran 7 exclusive (every delete and revoke), then 2 (the revoke of a
    frame with copies and the revoke of the thread's region), then 1 (the
    region's, which destroys the objects); now none: the region's revoke
    retires everything shared and destroys the objects after the grace
    period (KEEL_E_PENDING) - in every round, the refilled slots included."""
    w = shared
    w.reset()
    w.cpu = 0
    region, base, shared_ep = FIRST_FREE, FIRST_FREE + 20, FIRST_FREE + 60
    kinds = ["endpoint", "notification", "frame", "untyped"]
    assert w.call(UT_SLOT, "untyped_retype", w.T["untyped"], 15, CNODE_SLOT, region, 1)[0] == 0
    assert w.call(UT_SLOT, "untyped_retype", w.T["endpoint"], 0, CNODE_SLOT, shared_ep, 1)[0] == 0
    for round_ in range(3):
        w.retries, calls = 0, 0
        for j, kind in enumerate(kinds):
            bits = 12 if kind == "untyped" else 0
            err, _ = w.call(region, "untyped_retype", w.T[kind], bits, CNODE_SLOT, base + j, 1)
            assert err == 0
            calls += 1
        for j, kind in enumerate(kinds[:3]):
            if kind == "frame":
                err, _ = w.call(CNODE_SLOT, "cnode_copy", base + 8 + j, CNODE_SLOT, base + j, 3)
            else:
                err, _ = w.call(CNODE_SLOT, "cnode_mint", base + 8 + j, CNODE_SLOT, base + j, 3,
                                round_ + 1)  # fmt: skip
            assert err == 0
            calls += 1
        assert w.call(CNODE_SLOT, "cnode_copy", base + 24, CNODE_SLOT, shared_ep, 1)[0] == 0
        for j in range(len(kinds)):
            assert w.call(CNODE_SLOT, "cnode_revoke", base + j)[0] == 0
            assert base + 8 + j not in w.slots()
        assert w.call(CNODE_SLOT, "cnode_revoke", region)[0] == 0
        # all of the region again: every object's memory came back
        assert w.call(region, "untyped_retype", w.T["untyped"], 15, CNODE_SLOT, base, 1)[0] == 0
        assert w.call(CNODE_SLOT, "cnode_delete", base)[0] == 0
        assert w.call(CNODE_SLOT, "cnode_delete", base + 24)[0] == 0
        calls += 1 + len(kinds) + 1 + 1 + 2
        assert (calls, w.retries) == (16, 0), f"round {round_}: {w.retries} exclusive of {calls}"
        check_invariants(w)


def test_a_reply_capability_moves_shared(shared: SharedWorld) -> None:
    """A server keeps a caller's reply capability to answer later by moving it
    to a slot of its own (the device servers' deferred requests: serve.c,
    devmgr.c).  The move runs shared, under the two slots' own locks; the
    caller's reply is the new slot, and the old one is retired: a CPU that
    looked it up still reads the capability it found.  A move into a slot
    still in its grace period waits for its end holding nothing and runs
    shared, as a fill does."""
    w = shared
    w.reset()
    w.cpu, w.retries, w.graces = 0, 0, 0
    w.lib.host_reply_cap(A)
    assert w.lib.host_reply_slot() == A
    w.hold(1, A, True)
    assert w.call(CNODE_SLOT, "cnode_move", B, CNODE_SLOT, A)[0] == 0
    assert w.retries == 0, "the move of a reply capability ran exclusive"
    assert w.lib.host_reply_slot() == B
    assert w.body(A, 0)[0] == 0 and w.body(A, 0)[4], "slot A is not retired"
    w.cpu = 2  # back into A, which CPU 1 still reads
    assert w.call(CNODE_SLOT, "cnode_move", A, CNODE_SLOT, B)[0] == 0
    assert (w.retries, w.graces) == (0, 1) and 1 not in w.held
    assert w.call(CNODE_SLOT, "cnode_move", C, CNODE_SLOT, A)[0] == 0
    assert w.call(CNODE_SLOT, "cnode_move", C, CNODE_SLOT, A)[0] == w.E["invalid_cap"]
    assert (w.retries, w.lib.host_reply_slot()) == (0, C)
    # Deleting it still runs its hook exclusive: the caller has no reply left.
    assert w.call(CNODE_SLOT, "cnode_delete", C)[0] == 0
    assert (w.retries, w.lib.host_reply_slot()) == (1, 0)
    check_invariants(w)
