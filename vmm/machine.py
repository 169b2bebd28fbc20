"""``Machine``: the one object scripts use to configure, boot and stop a guest.

    from vmm.machine import Machine
    m = Machine("build/kernel.elf", smp=2, memory="256M", cmdline="keel.test=boot")
    result = m.run()          # boots, waits for the guest to finish
    print(result.status, m.console.text())

Lifecycle is an explicit state machine (created -> running <-> paused ->
stopped); an operation that is not legal in the current state raises
``StateError``.  Each vCPU runs in its own thread pinned to a host core; the
exit handling there is ``handle_exit``, a plain function of an exit and the
buses, testable without KVM.
"""

from __future__ import annotations

import enum
import os
import signal
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from vmm.boot import layout
from vmm.console import Console
from vmm.devices import debug_exit
from vmm.devices.bus import Bus
from vmm.devices.uart import COM1_BASE, COM1_IRQ, Uart16550
from vmm.errors import ConfigError, KeelError, StateError
from vmm.kvm import exits

if TYPE_CHECKING:
    from vmm.boot.elf import KernelImage
    from vmm.kvm.vcpu import Vcpu
    from vmm.kvm.vm import Vm
    from vmm.memory import GuestMemory

MAX_VCPUS = 254  # xAPIC IDs; the IOAPIC takes the next ID
DEFAULT_MEMORY = 256 << 20
BOOT_GDT_ADDR = 0x500  # a flat GDT for the PVH entry state (the kernel loads its own)
KICK_SIGNAL = signal.SIGRTMIN + 2  # interrupts KVM_RUN in a vCPU thread

# Exit statuses of the host process besides the guest's own (debug_exit.exit_status).
STATUS_GUEST_CRASH = 2  # even, so it never collides with a guest-reported failure
STATUS_INTERRUPTED = 130


class State(enum.Enum):
    CREATED = "created"
    RUNNING = "running"
    PAUSED = "paused"
    STOPPED = "stopped"


@dataclass
class ExitResult:
    """How the guest ended.  ``status`` is what ``keel run`` exits with."""

    status: int
    reason: str
    guest_code: int | None = None
    diagnostic: str = ""


@dataclass
class _VcpuSlot:
    vcpu: Vcpu
    host_cpu: int
    thread: threading.Thread | None = None
    parked: bool = False
    # True from before the thread starts until it is about to return; only
    # changed under Machine._lock.  Kicks go only to live threads: a signal
    # sent to a thread that has ended is undefined behaviour (and crashes).
    alive: bool = False
    final_state: dict[str, Any] = field(default_factory=dict)


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


def default_smp() -> int:
    """One vCPU per host core this process may run on."""
    return len(os.sched_getaffinity(0))


def host_memory() -> int:
    return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


class Machine:
    """A Keel virtual machine.  Construction validates everything; ``start`` boots."""

    def __init__(
        self,
        kernel: str | os.PathLike[str],
        *,
        smp: int | None = None,
        memory: int | str = DEFAULT_MEMORY,
        cmdline: str = "",
        initrd: str | os.PathLike[str] | None = None,
        console: Callable[[bytes], None] | None = None,
        log: Callable[[str], None] | None = None,
    ) -> None:
        from vmm.boot import elf

        self.smp = default_smp() if smp is None else smp
        if not 1 <= self.smp <= MAX_VCPUS:
            raise ConfigError(f"--smp must be between 1 and {MAX_VCPUS}, not {self.smp}")
        self.memory = layout.parse_size(memory) if isinstance(memory, str) else memory
        layout.check_memory_size(self.memory, host_memory())
        self.cmdline = cmdline
        self.kernel: KernelImage = elf.load_kernel(kernel)
        elf.check_fits(self.kernel, self.memory)
        self.initrd: bytes | None = None
        if initrd is not None:
            self.initrd = _read_file(initrd, "initrd")
            layout.place_initrd(self.memory, len(self.initrd), self.kernel.end)
        self.console = Console(console)
        self._log = log or _stderr_log
        self.state = State.CREATED
        self.result: ExitResult | None = None
        self._lock = threading.Condition()
        self._stop_requested = False
        self._pause_requested = False
        self._slots: list[_VcpuSlot] = []
        self._vm: Vm | None = None
        self._mem: GuestMemory | None = None
        self._closers: list[Callable[[], None]] = []
        self._done = threading.Event()
        self.pio = Bus("port", log=self._log)
        self.mmio = Bus("mmio", log=self._log)

    # -- lifecycle --------------------------------------------------------------
    def start(self) -> None:
        """Build the VM and start every vCPU thread (only vCPU 0 runs at first)."""
        with self._lock:
            self._require(State.CREATED, "start")
            try:
                self._build()
            except BaseException:
                self._release()
                self.state = State.STOPPED
                raise
            self.state = State.RUNNING
        for slot in self._slots:
            slot.thread = threading.Thread(
                target=self._vcpu_thread, args=(slot,), name=f"vcpu{slot.vcpu.index}", daemon=True
            )
            with self._lock:
                slot.alive = True
            slot.thread.start()

    def wait(self, timeout: float | None = None) -> ExitResult | None:
        """Wait for the guest to end; None if ``timeout`` passed first."""
        if self.state is State.CREATED:
            raise StateError("wait: the machine has not been started")
        if not self._done.wait(timeout):
            return None
        self._join_and_release()
        assert self.result is not None
        return self.result

    def run(self) -> ExitResult:
        """Start and wait for the end; Ctrl-C stops the guest cleanly."""
        self.start()
        try:
            result = self.wait()
        except KeyboardInterrupt:
            self.stop(ExitResult(STATUS_INTERRUPTED, "interrupted"))
            result = self.wait()
        assert result is not None
        return result

    def stop(self, result: ExitResult | None = None) -> None:
        """Stop the guest (any running or paused state); idempotent."""
        self._finish(result or ExitResult(0, "stopped by request"))

    def pause(self) -> None:
        """Stop every vCPU at its next exit; returns once all are parked."""
        with self._lock:
            self._require(State.RUNNING, "pause")
            self._pause_requested = True
            self._kick_all()
            while not self._stop_requested and not all(s.parked for s in self._slots):
                self._lock.wait(0.05)
                self._kick_all()
            if not self._stop_requested:
                self.state = State.PAUSED

    def resume(self) -> None:
        with self._lock:
            self._require(State.PAUSED, "resume")
            self._pause_requested = False
            self.state = State.RUNNING
            self._lock.notify_all()

    def send_console(self, data: bytes) -> int:
        """Type ``data`` on the guest's serial console; returns bytes accepted."""
        return self._uart.feed(data)

    def close(self) -> None:
        if self.state in (State.RUNNING, State.PAUSED):
            self.stop()
            self.wait()
        self._release()

    def __enter__(self) -> Machine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _require(self, state: State, what: str) -> None:
        if self.state is not state:
            raise StateError(f"{what}: illegal while the machine is {self.state.value}")

    # -- building the VM -------------------------------------------------------------
    def _build(self) -> None:
        from vmm.boot import acpi, pvh
        from vmm.boot.cpuid import vcpu_cpuid
        from vmm.kvm.ffi import lib
        from vmm.kvm.system import System
        from vmm.memory import GuestMemory

        if lib.keel_install_kick_handler(KICK_SIGNAL) != 0:
            raise KeelError("cannot install the vCPU kick signal handler")
        system = System()
        self._closers.append(system.close)
        if self.smp > system.max_vcpus():
            raise ConfigError(
                f"--smp {self.smp} exceeds this host's KVM limit {system.max_vcpus()}"
            )
        vm = self._vm = system.create_vm()
        self._closers.append(vm.close)
        vm.set_tss_addr(layout.KVM_TSS_ADDR)
        vm.set_identity_map_addr(layout.KVM_IDENTITY_MAP_ADDR)
        vm.create_irqchip()
        vm.create_pit()

        mem = self._mem = GuestMemory(layout.ram_slots(self.memory))
        self._closers.append(mem.close)
        for i, (gpa, size, *_rest) in enumerate(mem.slots):
            vm.set_memory_region(i, gpa, size, mem.host_address(i))

        for seg in self.kernel.segments:
            mem.write(seg.paddr, seg.data)  # fresh anonymous memory: the rest is zero
        modules: list[tuple[int, int]] = []
        if self.initrd is not None:
            addr = layout.place_initrd(self.memory, len(self.initrd), self.kernel.end)
            mem.write(addr, self.initrd)
            modules.append((addr, len(self.initrd)))
        tables = acpi.build_acpi(self.smp)
        mem.write(layout.ACPI_BASE, tables.blob)
        for addr, blob in pvh.build_start_info(
            cmdline=self.cmdline,
            rsdp_paddr=tables.rsdp_addr,
            memmap=layout.memory_map(self.memory),
            modules=modules,
        ):
            mem.write(addr, blob)
        mem.write(BOOT_GDT_ADDR, BOOT_GDT)

        self._uart = Uart16550(self.console.write, lambda level: vm.irq_line(COM1_IRQ, level))
        self.pio.register(COM1_BASE, 8, self._uart)
        self.pio.register(debug_exit.PORT, 4, debug_exit.DebugExit(self._guest_exit))
        self.pio.register(0x80, 1, _Sink())  # POST-code port, used as an I/O delay

        supported = system.supported_cpuid()
        host_cpus = sorted(os.sched_getaffinity(0))
        for i in range(self.smp):
            vcpu = vm.create_vcpu(i)
            self._closers.append(vcpu.close)
            vcpu.set_cpuid(vcpu_cpuid(supported, i, self.smp, vcpu.tsc_khz()))
            self._slots.append(_VcpuSlot(vcpu, host_cpus[i % len(host_cpus)]))
        _set_pvh_entry_state(self._slots[0].vcpu, self.kernel.entry32)

    # -- the vCPU threads ----------------------------------------------------------------
    def _vcpu_thread(self, slot: _VcpuSlot) -> None:
        vcpu = slot.vcpu
        try:
            os.sched_setaffinity(0, {slot.host_cpu})
        except OSError:
            pass  # pinning is an optimisation; a restricted cpuset must not stop the guest
        pio, mmio, run = self.pio, self.mmio, vcpu.run
        try:
            while not self._stop_requested:
                if self._pause_requested:
                    self._park(slot)
                    continue
                ex = handle_exit(run(), pio, mmio)
                if ex is None or type(ex) is exits.InterruptedExit:
                    continue
                self._guest_died(slot, ex)
                break
        except KeelError as exc:
            self._finish(ExitResult(STATUS_GUEST_CRASH, str(exc)))
        except Exception as exc:  # a VMM bug: report it, never hang the other vCPUs
            self._finish(ExitResult(STATUS_GUEST_CRASH, f"VMM error on vCPU {vcpu.index}: {exc!r}"))
        finally:
            slot.final_state = _snapshot(vcpu)
            with self._lock:
                slot.alive = False

    def _park(self, slot: _VcpuSlot) -> None:
        with self._lock:
            slot.parked = True
            self._lock.notify_all()
            while self._pause_requested and not self._stop_requested:
                self._lock.wait()
            slot.parked = False
            if not self._stop_requested:
                # Under the lock, so a stop or pause after this re-arms the request.
                slot.vcpu.clear_exit_request()

    def _kick_all(self) -> None:
        """Make every vCPU leave KVM_RUN soon.  Caller holds ``_lock``."""
        for slot in self._slots:
            if not slot.alive:
                continue
            slot.vcpu.request_exit()
            if slot.thread is not None and slot.thread.ident is not None:
                try:
                    signal.pthread_kill(slot.thread.ident, KICK_SIGNAL)
                except (ProcessLookupError, OSError):
                    pass  # the thread already ended

    def _guest_exit(self, value: int) -> None:
        status = debug_exit.exit_status(value)
        verdict = "success" if status == 0 else "failure"
        self._finish(ExitResult(status, f"guest reported {verdict} (code {value:#x})", value))

    def _guest_died(self, slot: _VcpuSlot, ex: exits.Exit) -> None:
        reason = f"{describe_exit(ex)} on vCPU {slot.vcpu.index}"
        self._finish(ExitResult(STATUS_GUEST_CRASH, reason))

    def _finish(self, result: ExitResult) -> None:
        """Record the first result and stop every vCPU."""
        with self._lock:
            if self.result is None:
                self.result = result
            if self._stop_requested:
                return
            self._stop_requested = True
            self._kick_all()
            self._lock.notify_all()
            if self.state is State.CREATED:
                self.state = State.STOPPED
        threading.Thread(target=self._reap, name="reaper", daemon=True).start()

    def _reap(self) -> None:
        for slot in self._slots:
            if slot.thread is not None and slot.thread is not threading.current_thread():
                while slot.thread.is_alive():
                    slot.thread.join(0.1)
                    with self._lock:
                        self._kick_all()
        self.state = State.STOPPED
        if self.result is not None and self.result.status not in (0, STATUS_INTERRUPTED):
            self.result.diagnostic = self._diagnostic()
        self.console.close()
        self._done.set()

    def _join_and_release(self) -> None:
        self._release()

    def _release(self) -> None:
        while self._closers:
            closer = self._closers.pop()
            try:
                closer()
            except (OSError, BufferError, KeelError):
                pass

    def _diagnostic(self) -> str:
        assert self.result is not None
        lines = [f"keel: guest stopped: {self.result.reason}"]
        for slot in self._slots:
            lines.extend(_format_vcpu(slot.vcpu.index, slot.final_state))
        lines.append("keel: last console lines:")
        lines.extend(f"  | {line}" for line in self.console.last_lines(20))
        return "\n".join(lines)


class _Sink:
    def read(self, offset: int, size: int) -> bytes:
        return b"\xff" * size

    def write(self, offset: int, data: bytes) -> None:
        pass


def _stderr_log(message: str) -> None:
    import sys

    sys.stderr.write(message + "\n")


def _read_file(path: str | os.PathLike[str], what: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as exc:
        raise ConfigError(f"cannot read {what} {os.fspath(path)!r}: {exc.strerror}") from None


# A flat GDT: null, 32-bit code (0x08), data (0x10), and a 32-bit TSS (0x18)
# at base 0 limit 0x67 - the descriptors the PVH entry state below names.
BOOT_GDT = b"".join(
    v.to_bytes(8, "little") for v in (0, 0x00CF9B000000FFFF, 0x00CF93000000FFFF, 0x00008B0000000067)
)


def _set_pvh_entry_state(vcpu: Vcpu, entry: int) -> None:
    """The Xen PVH entry state: 32-bit protected mode, paging off, EBX = start_info."""
    sregs = vcpu.get_sregs()

    def flat(seg: Any, selector: int, type_: int) -> None:
        seg.base, seg.limit, seg.selector, seg.type = 0, 0xFFFFFFFF, selector, type_
        seg.present, seg.dpl, seg.db, seg.s, seg.l, seg.g, seg.avl, seg.unusable = (
            1, 0, 1, 1, 0, 1, 0, 0,
        )  # fmt: skip

    flat(sregs.cs, 0x08, 0xB)
    for seg in (sregs.ds, sregs.es, sregs.fs, sregs.gs, sregs.ss):
        flat(seg, 0x10, 0x3)
    tr = sregs.tr
    tr.base, tr.limit, tr.selector, tr.type = 0, 0x67, 0x18, 0xB
    tr.present, tr.dpl, tr.db, tr.s, tr.l, tr.g, tr.unusable = 1, 0, 0, 0, 0, 0, 0
    sregs.gdt.base, sregs.gdt.limit = BOOT_GDT_ADDR, len(BOOT_GDT) - 1
    sregs.cr0 = 0x11  # PE | ET
    sregs.cr3 = sregs.cr4 = sregs.efer = 0
    vcpu.set_sregs(sregs)
    vcpu.set_regs(
        rip=entry, rbx=layout.START_INFO_ADDR, rflags=0x2, rsp=0, rax=0, rcx=0, rdx=0, rsi=0, rdi=0
    )


def _snapshot(vcpu: Vcpu) -> dict[str, Any]:
    """Registers of a vCPU that has left KVM_RUN (called from its own thread)."""
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


MP_STATES = {0: "runnable", 1: "uninitialized", 2: "init-received", 3: "halted", 4: "sipi-received"}


def _format_vcpu(index: int, st: dict[str, Any]) -> list[str]:
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
