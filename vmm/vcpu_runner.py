"""The vCPU runner: one thread per vCPU, pinned to a host core once the guest has
booted (``PIN_AFTER_NS``, by a thread of its own), until the guest ends.

Each thread loops on ``KVM_RUN`` and serves exits through ``handle_exit``, a
plain function of an exit and the two device buses (tested without KVM).  The
runner parks and releases the threads for pause and resume, kicks them out of
``KVM_RUN`` with ``KICK_SIGNAL``, records the first ``ExitResult``, and once
every thread has ended calls back its owner (``Machine``).  ``HangWatchdog``
stops a guest that stays silent on the console; ``diagnostic`` is the register
dump printed for a guest that did not end well.

Locking: ``lock`` is the owner's condition (``Machine._lock``, re-entrant); it
protects the request flags, every slot's ``alive`` and ``parked``, ``result``
and the owner's run state, so a state change and the matching kick are atomic.
"""

from __future__ import annotations

import _thread
import os
import threading
import time
from collections.abc import Callable

from vmm.devices.bus import Bus
from vmm.errors import KeelError
from vmm.kvm import exits
from vmm.kvm.ffi import lib
from vmm.kvm.vcpu import Vcpu
from vmm.metrics import VcpuStats
from vmm.records import record

TYPE_CHECKING = False  # typing costs ~4 ms of each start (vmm/records.py)
if TYPE_CHECKING:
    import signal
    from typing import Any
else:  # signal's wrappers import enum: ~2 ms of each start (vmm/session.py)
    import _signal as signal

KICK_SIGNAL = signal.SIGRTMIN + 2  # interrupts KVM_RUN in a vCPU thread

# Exit statuses of the host process besides the guest's own (debug_exit.exit_status).
STATUS_GUEST_CRASH = 2  # even, so it never collides with a guest-reported failure
STATUS_GUEST_FAILURE = 3  # the guest reported failure through the exit device
STATUS_HANG = 4  # the hang watchdog (``hang_timeout``) stopped a silent guest
STATUS_INTERRUPTED = 130
DEBUG_LOCK_WAIT = 0.05  # seconds a stepping vCPU waits for another's exclusive step

# The vCPU threads are pinned to their host cores this long after the start
# (``VcpuRunner._pin_when_booted``).  While the guest boots the threads float: the
# boot CPU halts while an AP starts, and a pinned AP waited for its own core (busy
# with other work) while the boot CPU's was free (2-vCPU boot at load 7: 177 ms
# pinned, 128 floating, medians of 30 alternating runs; docs/benchmarks.md).
PIN_AFTER_NS = 500_000_000

MP_STATES = {0: "runnable", 1: "uninitialized", 2: "init-received", 3: "halted", 4: "sipi-received"}


@record
class ExitResult:
    """How the guest ended.  ``status`` is what ``keel run`` exits with."""

    status: int
    reason: str
    guest_code: int | None = None
    diagnostic: str = ""


class VcpuSlot:
    """One vCPU and its thread.  (A plain class: each dataclass costs `keel run`
    about half a millisecond of start-up.)"""

    def __init__(self, vcpu: Vcpu, host_cpu: int) -> None:
        self.vcpu = vcpu
        self.host_cpu = host_cpu
        self.ident: int | None = None  # the thread's, once started
        self.tid = 0  # the thread's kernel id (for its affinity), once it runs
        self.parked = False
        # True from before the thread starts until it is about to return; only
        # changed under the runner's lock.  Kicks go only to live threads: a signal
        # sent to a thread that has ended is undefined behaviour (and crashes).
        self.alive = False
        self.final_state: dict[str, Any] = {}
        self.stats = VcpuStats()  # written only by the thread (vmm.metrics)


def handle_exit(ex: exits.Exit, pio: Bus, mmio: Bus) -> exits.Exit | None:
    """Serve one vCPU exit from the device buses.

    Returns None when the exit was handled and the vCPU should go on, or the
    exit itself when it is something the machine must act on (a crash, a
    shutdown, an interruption).
    """
    if type(ex) is exits.IoExit:
        size, data = ex.size, ex.data
        if ex.is_write:
            if ex.count == 1:
                pio.write(ex.port, bytes(data[:size]))
            else:
                pio.write_string(ex.port, bytes(data[: size * ex.count]), size)
        else:
            for i in range(0, size * ex.count, size):
                data[i : i + size] = pio.read(ex.port, size)
        return None
    if type(ex) is exits.MmioExit:
        if ex.is_write:
            mmio.write(ex.addr, bytes(ex.data))
        else:
            ex.data[:] = mmio.read(ex.addr, len(ex.data))
        return None
    return ex


def describe_exit(ex: exits.Exit) -> str:
    """One line naming why the guest died."""
    if isinstance(ex, exits.ShutdownExit):
        return "guest shut down (triple fault) - KVM_EXIT_SHUTDOWN"
    if isinstance(ex, exits.InternalErrorExit):
        name = exits.INTERNAL_ERROR_NAMES.get(ex.suberror, "unknown")
        data = " ".join(f"{d:#x}" for d in ex.data)
        return f"KVM internal error, suberror {ex.suberror} ({name}) data [{data}]"
    if isinstance(ex, exits.FailEntryExit):
        return f"KVM could not enter the guest: hardware reason {ex.reason:#x} on cpu {ex.cpu}"
    if isinstance(ex, exits.SystemEventExit):
        kinds = {1: "shutdown", 2: "reset", 3: "crash"}
        return f"guest system event: {kinds.get(ex.kind, str(ex.kind))}"
    if isinstance(ex, exits.HltExit):
        return "guest halted with no in-kernel irqchip to wake it"
    if isinstance(ex, exits.UnknownExit):
        return f"unhandled KVM exit reason {ex.reason} (hardware {ex.hardware_reason:#x})"
    return f"unexpected exit {ex!r}"


def install_kick_handler() -> None:
    """A no-op handler for ``KICK_SIGNAL``, so the signal only interrupts KVM_RUN."""
    if lib.keel_install_kick_handler(KICK_SIGNAL) != 0:
        raise KeelError("cannot install the vCPU kick signal handler")


def _pin(tid: int, host_cpu: int) -> None:
    try:
        os.sched_setaffinity(tid, {host_cpu})
    except OSError:
        pass  # pinning is an optimisation; a restricted cpuset must not stop the guest


class VcpuRunner:
    """Runs the vCPU threads; ``on_end`` is called once, after the last one ended."""

    def __init__(
        self, lock: threading.Condition, pio: Bus, mmio: Bus, on_end: Callable[[], None]
    ) -> None:
        self.lock = lock
        self.pio, self.mmio = pio, mmio
        self._on_end = on_end
        self.slots: list[VcpuSlot] = []
        self.stop_requested = False
        self.pause_requested = False
        self.result: ExitResult | None = None
        # Serves KVM_EXIT_DEBUG in the vCPU's thread while a debugger is attached.
        self.debug_hook: Callable[[VcpuSlot, exits.DebugExit], None] | None = None
        # While set (the debugger single-steps the continuing vCPUs), called in a
        # vCPU's thread before each of its steps: the debugger may execute the
        # vCPU's next instruction itself (a HLT, which the host's KVM must not
        # single-step: vmm/gdb/target.py).
        self.debug_prepare: Callable[[VcpuSlot], None] | None = None
        # While set (a watchpoint armed), a vCPU for which it answers True takes
        # debug_lock around its step and the hook, so the vCPU whose step is
        # followed by a change of a watched value is the one that made it.
        self.debug_exclusive: Callable[[VcpuSlot], bool] | None = None
        self.debug_lock = threading.Lock()
        # Called once, by vCPU 0's thread, when the guest first left it (the owner's
        # work that must not overlap the guest's first entry).
        self.on_first_exit: Callable[[], None] | None = None
        # Set (under ``lock``) once start() has created every vCPU thread, or
        # never_start() said none will be: ``on_end`` waits for that and for the
        # last thread to end, and is called by whichever comes last.
        self._threads_created = False
        self._ended = False
        self._pin_due = False  # PIN_AFTER_NS has passed: a thread starting now pins itself

    def add(self, vcpu: Vcpu, host_cpu: int) -> None:
        self.slots.append(VcpuSlot(vcpu, host_cpu))

    def start(self) -> None:
        """Start every vCPU thread (only vCPU 0 runs at first; the guest starts the APs).
        The threads are started without ``threading.Thread.start``'s wait for each
        to run its first instruction (milliseconds per thread on a busy host)."""
        for slot in self.slots:
            with self.lock:
                slot.alive = True
                slot.ident = _thread.start_new_thread(self._vcpu_thread, (slot,))
        _thread.start_new_thread(self._pin_when_booted, ())
        self._all_created()

    def _pin_when_booted(self) -> None:
        """Pin every vCPU thread to its host core PIN_AFTER_NS after the start.  From
        a thread of its own, not at a vCPU's exit: a vCPU may make none for as long
        as the guest runs - a halted AP (KVM serves its timer and its wake-ups) or
        one busy in the guest's own code, as the capability storm's are."""
        deadline = time.monotonic() + PIN_AFTER_NS / 1e9
        with self.lock:
            while not self.stop_requested and (left := deadline - time.monotonic()) > 0:
                self.lock.wait(left)
            if self.stop_requested:
                return
            self._pin_due = True
            for slot in self.slots:
                if slot.alive and slot.tid:  # alive: its tid is not yet another thread's
                    _pin(slot.tid, slot.host_cpu)

    def never_start(self) -> None:
        """No thread will be created (the machine stopped before or while building)."""
        self._all_created()

    def _all_created(self) -> None:
        with self.lock:
            self._threads_created = True
        self._end_if_last()

    def _end_if_last(self) -> None:
        """Call ``on_end`` once every thread has ended after a stop (the caller holds
        no lock: ``on_end`` takes the owner's)."""
        with self.lock:
            if (self._ended or not self._threads_created or not self.stop_requested
                    or any(s.alive for s in self.slots)):  # fmt: skip
                return
            self._ended = True
        self._on_end()

    def finish(self, result: ExitResult) -> None:
        """Record the first result and stop every vCPU."""
        with self.lock:
            if self.result is None:
                self.result = result
            if self.stop_requested:
                return
            self.stop_requested = True
            self._kick_all()
            self.lock.notify_all()
            running = any(s.alive for s in self.slots)
        if not running:
            # No vCPU thread runs (none started): on_end is called from a thread of
            # its own, never under the caller's lock.  Otherwise the last one to end
            # calls it.
            _thread.start_new_thread(self._end_if_last, ())

    def pause(self) -> bool:
        """Park every vCPU at its next exit; False when a stop came first.
        Caller holds ``lock``."""
        self.pause_requested = True
        self._kick_all()
        while not self.stop_requested and not all(s.parked for s in self.slots):
            self.lock.wait(0.05)
            self._kick_all()
        return not self.stop_requested

    def request_pause(self) -> None:
        """Ask every vCPU to park at its next exit without waiting (any thread, a
        vCPU's own included: the debugger's breakpoint hook calls it)."""
        with self.lock:
            self.pause_requested = True
            self._kick_all()
            self.lock.notify_all()

    def all_parked(self) -> bool:
        """Caller holds ``lock``."""
        return all(s.parked or not s.alive for s in self.slots)

    def resume(self) -> None:
        """Release the parked vCPUs.  Caller holds ``lock``."""
        self.pause_requested = False
        self.lock.notify_all()

    def _vcpu_thread(self, slot: VcpuSlot) -> None:
        with self.lock:
            slot.tid = threading.get_native_id()
            if self._pin_due:  # started after the others were pinned
                _pin(0, slot.host_cpu)
        vcpu = slot.vcpu
        pio, mmio, run = self.pio, self.mmio, vcpu.run
        stats = slot.stats
        ports, mmio_addrs, other = stats.ports, stats.mmio, stats.exits
        clock = time.perf_counter_ns
        held = False  # debug_lock, while a watchpoint is armed
        first_exit = self.on_first_exit if vcpu.index == 0 else None
        try:
            now = clock()
            while not self.stop_requested:
                if self.pause_requested:
                    self._park(slot)
                    now = clock()  # time parked is neither the guest's nor the VMM's
                    continue
                start = clock()
                stats.vmm_ns += start - now
                if self.debug_prepare is not None:
                    self.debug_prepare(slot)
                if self.debug_exclusive is not None:
                    held = self._debug_acquire(slot)
                raw = run()
                now = clock()
                stats.guest_ns += now - start
                if first_exit is not None:
                    call = first_exit
                    first_exit = None
                    call()
                kind = type(raw)
                if kind is exits.IoExit:
                    ports[raw.port] = ports.get(raw.port, 0) + 1  # type: ignore[union-attr]
                elif kind is exits.MmioExit:
                    addr = raw.addr  # type: ignore[union-attr]
                    mmio_addrs[addr] = mmio_addrs.get(addr, 0) + 1
                else:
                    name = exits.KIND_NAMES.get(kind, kind.__name__)
                    other[name] = other.get(name, 0) + 1
                ex = handle_exit(raw, pio, mmio)
                if type(ex) is exits.DebugExit and self.debug_hook is not None:
                    if not held and self.debug_exclusive is not None:
                        # a step that ran beside the others (a halted vCPU's): its check
                        # still must not interleave with another vCPU's step
                        held = self.debug_lock.acquire(timeout=DEBUG_LOCK_WAIT)
                    self.debug_hook(slot, ex)  # the gdb stub (vmm.gdb)
                    ex = None
                if held:
                    held = False
                    self.debug_lock.release()
                if ex is None or type(ex) is exits.InterruptedExit:
                    continue
                reason = f"{describe_exit(ex)} on vCPU {vcpu.index}"
                self.finish(ExitResult(STATUS_GUEST_CRASH, reason))
                break
        except KeelError as exc:
            self.finish(ExitResult(STATUS_GUEST_CRASH, str(exc)))
        except Exception as exc:  # a VMM bug: report it, never hang the other vCPUs
            self.finish(ExitResult(STATUS_GUEST_CRASH, f"VMM error on vCPU {vcpu.index}: {exc!r}"))
        finally:
            if held:
                self.debug_lock.release()
            with self.lock:
                slot.alive = False
            self._end_if_last()

    def _debug_acquire(self, slot: VcpuSlot) -> bool:
        """Take debug_lock for this vCPU's next step if the debugger asks for it;
        bounded, so a step that blocks (a vCPU halted until an interrupt the
        debugger did not foresee) delays the others but never stops them."""
        exclusive = self.debug_exclusive
        if exclusive is None or not exclusive(slot):
            return False
        return self.debug_lock.acquire(timeout=DEBUG_LOCK_WAIT)

    def _park(self, slot: VcpuSlot) -> None:
        with self.lock:
            slot.parked = True
            self.lock.notify_all()
            while self.pause_requested and not self.stop_requested:
                self.lock.wait()
            slot.parked = False
            if not self.stop_requested:
                # Under the lock, so a stop or pause after this re-arms the request.
                slot.vcpu.clear_exit_request()

    def _kick_all(self) -> None:
        """Make every vCPU leave KVM_RUN soon.  Caller holds ``lock``."""
        for slot in self.slots:
            if not slot.alive:
                continue
            slot.vcpu.request_exit()
            if slot.ident is not None and slot.ident != _thread.get_ident():
                try:
                    signal.pthread_kill(slot.ident, KICK_SIGNAL)
                except (ProcessLookupError, OSError):
                    pass  # the thread already ended

    def diagnostic(self, console_lines: list[str]) -> str:
        """Why the guest stopped, every vCPU's last registers, the last console lines."""
        assert self.result is not None
        lines = [f"keel: guest stopped: {self.result.reason}"]
        for slot in self.slots:
            if not slot.final_state and slot.ident is not None:
                # Read now, once every vCPU thread has left KVM_RUN (a clean exit
                # never needs them: three ioctls per vCPU saved at every end).
                slot.final_state = snapshot(slot.vcpu)
            lines.extend(format_vcpu(slot.vcpu.index, slot.final_state))
        lines.append("keel: last console lines:")
        lines.extend(f"  | {line}" for line in console_lines)
        return "\n".join(lines)


class HangWatchdog:
    """Calls ``on_hang`` once the guest has been silent on the console for ``timeout``
    seconds of running (time paused does not count); ``output`` notes console output."""

    def __init__(
        self,
        timeout: float | None,
        running: Callable[[], bool],
        done: threading.Event,
        on_hang: Callable[[float], None],
    ) -> None:
        self.timeout = timeout
        self._running = running
        self._done = done
        self._on_hang = on_hang
        self._last_output = time.monotonic()

    def output(self) -> None:
        self._last_output = time.monotonic()

    def start(self) -> None:
        if self.timeout is not None:
            self._last_output = time.monotonic()
            threading.Thread(target=self._watch, name="hang-watch", daemon=True).start()

    def _watch(self) -> None:
        assert self.timeout is not None
        while not self._done.wait(min(0.25, self.timeout / 4)):
            if not self._running():
                self._last_output = time.monotonic()
                continue
            silent = time.monotonic() - self._last_output
            if silent >= self.timeout:
                self._on_hang(silent)
                return


def snapshot(vcpu: Vcpu) -> dict[str, Any]:
    """Registers of a vCPU that has left KVM_RUN (its thread has ended)."""
    try:
        state: dict[str, Any] = dict(vcpu.get_regs())
        s = vcpu.get_sregs()
        state.update(
            cr0=s.cr0, cr2=s.cr2, cr3=s.cr3, cr4=s.cr4, efer=s.efer,
            cs=s.cs.selector, cs_long=s.cs.l, mp_state=vcpu.mp_state(),
        )  # fmt: skip
        return state
    except (KeelError, OSError) as exc:
        return {"error": str(exc)}


def format_vcpu(index: int, st: dict[str, Any]) -> list[str]:
    if "error" in st or not st:
        return [f"vCPU {index}: registers unavailable ({st.get('error', 'never ran')})"]
    mode = "64-bit" if st["cs_long"] else ("protected" if st["cr0"] & 1 else "real")
    state = MP_STATES.get(st["mp_state"], str(st["mp_state"]))
    r = st
    return [
        f"vCPU {index} ({state}, {mode}): rip={r['rip']:#018x} rsp={r['rsp']:#018x} "
        f"rflags={r['rflags']:#x} cs={r['cs']:#x}",
        f"  cr0={r['cr0']:#x} cr2={r['cr2']:#x} cr3={r['cr3']:#x} cr4={r['cr4']:#x} "
        f"efer={r['efer']:#x}",
        "  "
        + " ".join(f"{n}={r[n]:#x}" for n in ("rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rbp")),
        "  "
        + " ".join(
            f"{n}={r[n]:#x}" for n in ("r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15")
        ),
    ]
