"""``Machine``: the one object scripts use to configure, boot and stop a guest.

    from vmm.machine import Machine
    m = Machine("build/kernel.elf", smp=2, memory="256M", cmdline="keel.test=boot")
    m.attach_disk("disk.img")  # boot-time devices and run-time ones: the same calls
    result = m.run()          # boots, waits for the guest to finish
    print(result.status, m.console.text())

``Machine`` composes three parts and owns the run state: the builder
(``vmm.builder``: checked configuration, memory, kernel, ACPI, start_info),
the device manager (``vmm.devices.manager``: virtio devices in hotplug slots,
kinds from ``vmm.devices.registry``) and the vCPU runner
(``vmm.vcpu_runner``: threads, pause, the hang watchdog, diagnostics).  The
serial ports, the exit device and the console transcripts are its own.

``attach`` (and ``attach_disk``, ``attach_net``, ``attach_rng``,
``attach_console``), ``detach`` and ``devices`` are legal while the machine
is created, running or paused; slots filled at boot are announced on the
command line, later changes through the hotplug controller.  ``attach_*(...,
wait=True)`` returns once the guest bound a driver (DRIVER_OK); ``detach``
asks a guest that serves the controller to release the device and, with
``wait=True``, returns once it did (``force=True``: removed at once).

``subscribe(callback)`` delivers events: ``DEVICE_ATTACHED``,
``DEVICE_BOUND``, ``DEVICE_DELETED``, ``DMA_REFUSED`` and ``STOP`` (with the
exit status and reason), each as ``callback(name, data)``.

Lifecycle is an explicit state machine (created -> running <-> paused ->
stopped); an operation that is not legal in the current state raises
``StateError``.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Callable

from vmm import builder, metrics, timings
from vmm.builder import DEFAULT_MEMORY, MAX_VCPUS, BootConfig, GuestVm
from vmm.console import Console
from vmm.devices import debug_exit
from vmm.devices.bus import Bus
from vmm.devices.iommu import Iommu
from vmm.devices.manager import AttachedDevice, DeviceManager
from vmm.devices.uart import COM1_BASE, COM1_IRQ, COM2_BASE, COM2_IRQ, Uart16550
from vmm.devices.virtio.device import VirtioDevice
from vmm.errors import ConfigError, DeviceTimeout, KeelError, StateError
from vmm.memory import GuestMemory
from vmm.vcpu_runner import (
    STATUS_GUEST_CRASH,
    STATUS_GUEST_FAILURE,
    STATUS_HANG,
    STATUS_INTERRUPTED,
    ExitResult,
    HangWatchdog,
    VcpuRunner,
    VcpuSlot,
    install_kick_handler,
)

TYPE_CHECKING = False  # typing costs ~4 ms of each start (vmm/records.py)
if TYPE_CHECKING:
    from typing import Any, ClassVar, Protocol
else:
    from vmm.records import Protocol

SIGNAL_CHECK_INTERVAL = 0.2  # seconds: how late Ctrl-C or SIGTERM may be noticed at worst

__all__ = [
    "DEFAULT_MEMORY",
    "MAX_VCPUS",
    "STATUS_GUEST_CRASH",
    "STATUS_GUEST_FAILURE",
    "STATUS_HANG",
    "STATUS_INTERRUPTED",
    "ExitResult",
    "Machine",
    "State",
]


class RestorePlan(Protocol):
    """What vmm.snapshot supplies to build a machine from a snapshot."""

    def create_vm(self, cfg: BootConfig, closers: list[Callable[[], None]]) -> GuestVm: ...

    def restore_vcpus(
        self, cfg: BootConfig, guest: GuestVm, closers: list[Callable[[], None]]
    ) -> None: ...

    def platform_state(self) -> dict[str, Any]: ...


class State:
    """A machine's state, one of the four below; ``value`` is its name (the API's).
    A plain class, not an enum.Enum: enum costs about 2 ms of every start
    (python -X importtime)."""

    __slots__ = ("value",)
    CREATED: ClassVar[State]
    RUNNING: ClassVar[State]
    PAUSED: ClassVar[State]
    STOPPED: ClassVar[State]

    def __init__(self, value: str) -> None:
        self.value = value

    def __repr__(self) -> str:
        return f"<State.{self.value.upper()}>"


State.CREATED = State("created")
State.RUNNING = State("running")
State.PAUSED = State("paused")
State.STOPPED = State("stopped")


class Machine:
    """A Keel virtual machine.  Construction validates everything; ``start`` boots."""

    def __init__(
        self,
        kernel: str | os.PathLike[str] | BootConfig,
        *,
        smp: int | None = None,
        memory: int | str = DEFAULT_MEMORY,
        cmdline: str = "",
        initrd: str | os.PathLike[str] | None = None,
        console: Callable[[bytes], None] | None = None,
        log: Callable[[str], None] | None = None,
        hang_timeout: float | None = None,
        serial2: bool = False,
        serial2_output: Callable[[bytes], None] | None = None,
        cpu_features: str | None = None,
    ) -> None:
        """``hang_timeout`` (seconds, opt-in): stop the guest as hung when it prints
        nothing on the serial console for that long while running, with a
        diagnostic of every vCPU's registers and the last console lines.

        ``serial2`` adds a second 16550 (COM2, ports 0x2f8-0x2ff, IRQ 3) for
        user-space drivers (the kernel keeps COM1): what the guest sends goes
        to ``serial2_output`` (if given) and the transcript ``self.serial2``;
        ``send_serial2`` types on it.

        ``cpu_features`` (``"-cx16,+rdrand"``) changes the CPUID the guest sees,
        after the host's own limits (``vmm.boot.cpu_features``)."""
        if isinstance(kernel, BootConfig):  # a restored snapshot's (vmm.snapshot)
            self._config = kernel
        else:
            self._config = BootConfig.load(kernel, smp, memory, initrd, cpu_features)
        # Set by vmm.snapshot: build the VM from a snapshot instead of booting.
        self.restore_plan: RestorePlan | None = None
        self.smp, self.memory = self._config.smp, self._config.memory
        self.kernel, self.initrd = self._config.kernel, self._config.initrd
        self.cmdline = cmdline
        self.console = Console(console)
        self.serial2: Console | None = Console(serial2_output) if serial2 else None
        self._uart: Uart16550 | None = None
        self._uart2: Uart16550 | None = None
        if hang_timeout is not None and not 0 < hang_timeout < float("inf"):  # nan too
            raise ConfigError(f"hang timeout must be a positive, finite number, not {hang_timeout}")
        self.hang_timeout = hang_timeout
        self._log = log or _stderr_log
        self.state = State.CREATED
        # Guards the state and the runner's flags (the runner shares it); re-entrant.
        self._lock = threading.Condition()
        self._done = threading.Event()
        self._closers: list[Callable[[], None]] = []
        self._guest: GuestVm | None = None
        self.pio = Bus("port", log=self._log)
        self.mmio = Bus("mmio", log=self._log)
        self._devices = DeviceManager(self.mmio, self._log)
        self._subscribers: list[Callable[[str, dict[str, Any]], None]] = []
        # Its own lock: events come from vCPU and device threads, some while the
        # machine's lock is held by a thread waiting for those vCPUs (pause).
        self._subscribers_lock = threading.Lock()
        self._devices.on_event = self._emit
        self._devices.iommu.on_refused = lambda dev, addr, length, write: self._emit(
            "DMA_REFUSED", {"id": dev, "address": addr, "length": length, "write": write}
        )
        self._runner = VcpuRunner(self._lock, self.pio, self.mmio, self._ended)
        self._started = 0.0
        self._uart_irqs: dict[int, int] = {}
        self._watchdog = HangWatchdog(
            hang_timeout, lambda: self.state is State.RUNNING, self._done, self._hung
        )
        timings.mark("configuration (kernel ELF, initrd) checked")

    @property
    def result(self) -> ExitResult | None:
        """How the guest ended (None while it runs)."""
        return self._runner.result

    @property
    def iommu(self) -> Iommu:
        return self._devices.iommu

    # -- events -----------------------------------------------------------------------
    def subscribe(self, callback: Callable[[str, dict[str, Any]], None]) -> Callable[[], None]:
        """Call ``callback(name, data)`` for every event; returns the unsubscribe.

        The callback runs on the VMM thread that saw the event (a vCPU's, a
        device worker's, the control socket's), so it must return quickly and
        not call back into the machine; hand work to a queue.  A callback that
        raises is unsubscribed, with a line on the log, and the guest runs on."""
        with self._subscribers_lock:
            self._subscribers.append(callback)

        def unsubscribe() -> None:
            with self._subscribers_lock:
                if callback in self._subscribers:
                    self._subscribers.remove(callback)

        return unsubscribe

    @property
    def subscriber_count(self) -> int:
        """How many event subscribers there are (the control socket's ``keel events``
        clients among them)."""
        with self._subscribers_lock:
            return len(self._subscribers)

    def _emit(self, name: str, data: dict[str, Any]) -> None:
        with self._subscribers_lock:
            subscribers = list(self._subscribers)
        for callback in subscribers:
            try:
                callback(name, data)
            except Exception as exc:  # a subscriber's bug must not stop a vCPU
                with self._subscribers_lock:
                    if callback in self._subscribers:
                        self._subscribers.remove(callback)
                self._log(f"keel: event subscriber {callback!r} raised {exc!r}; unsubscribed")

    # -- devices ----------------------------------------------------------------------
    def attach(self, kind: str, *, wait: bool = False, timeout: float = 30.0,
               **options: Any) -> str:  # fmt: skip
        """A device of ``kind`` (``vmm.devices.registry.KINDS``: disk, net, rng,
        console) with that kind's options; returns the device id.  ``wait``: return
        once the guest bound a driver to it (``TimeoutError`` after ``timeout`` s)."""
        with self._devices.lock:
            self._require_devices(f"attach {kind}")
            if self.restore_plan is not None and self.state is State.CREATED:
                raise StateError(f"attach {kind}: a restored machine takes devices once it runs")
            ident = self._devices.attach(kind, options)
            entry = self._devices.find(ident)
        if wait:
            self._wait_event(entry.bound, timeout, f"attach {ident}: no guest driver bound it",
                             "the device stays attached")  # fmt: skip
        return ident

    def attach_at(self, kind: str, options: dict[str, Any], slot: int, ident: str) -> str:
        """Attach as a snapshot had it: in slot ``slot`` with id ``ident`` (before start)."""
        with self._devices.lock:
            self._require(State.CREATED, f"attach {kind} at slot {slot}")
            return self._devices.attach(kind, options, slot, ident)

    def attach_disk(self, path: str | os.PathLike[str], readonly: bool = False,
                    **wait: Any) -> str:  # fmt: skip
        """A virtio-blk device backed by the file ``path``; returns the device id."""
        return self.attach("disk", path=os.fspath(path), readonly=readonly, **wait)

    def attach_net(self, tap: str | None = None, mac: str | None = None, **wait: Any) -> str:
        """A virtio-net device on TAP interface ``tap`` (created when it does not exist)."""
        return self.attach("net", tap=tap, mac=mac, **wait)

    def attach_rng(self, **wait: Any) -> str:
        """A virtio-rng device fed by the host's getrandom(2)."""
        return self.attach("rng", **wait)

    def attach_console(self, output: str | os.PathLike[str] | None = None, **wait: Any) -> str:
        """A virtio-console; its output goes to the file ``output`` (if given) and to
        the transcript ``device(id).console``; ``device(id).feed`` types input."""
        return self.attach("console", output=None if output is None else os.fspath(output),
                           **wait)  # fmt: skip

    def detach(self, ident: str, *, force: bool = False, wait: bool = False,
               timeout: float = 30.0) -> None:  # fmt: skip
        """Remove a device, named by its id or its backing (image path, TAP name).

        A guest serving the hotplug controller is asked to release it (the device
        shows ``removing`` until it did); ``wait``: return once it did
        (``TimeoutError`` after ``timeout`` s, the device stays); ``force``: remove
        it at once, whatever the guest is doing with it."""
        with self._devices.lock:
            self._require_devices("detach")
            entry = self._devices.detach(ident, force=force)
        if wait:
            self._wait_event(entry.released, timeout,
                             f"detach {entry.id}: the guest did not release it",
                             "it stays 'removing'; detach with force to remove it anyway")

    def _wait_event(self, event: threading.Event, timeout: float, what: str, hint: str) -> None:
        deadline = time.monotonic() + timeout
        while not event.wait(min(0.1, max(0.0, deadline - time.monotonic()))):
            if self._done.is_set():
                raise StateError(f"{what}: the machine stopped")
            if time.monotonic() >= deadline:
                raise DeviceTimeout(f"{what} within {timeout:g} s ({hint})")

    def devices(self) -> list[dict[str, Any]]:
        """Every attached device: id, kind, backing, slot, base, irq, state."""
        return self._devices.describe()

    def device(self, ident: str) -> VirtioDevice:
        return self._devices.find(ident).device

    def attached(self, ident: str) -> AttachedDevice:
        """The slot entry of a device (its transport exists once the VM does)."""
        return self._devices.find(ident)

    # -- metrics (vmm.metrics) -------------------------------------------------------
    def metrics(self) -> dict[str, Any]:
        """Every counter: exits, device accesses, interrupts, virtqueues, vCPU time."""
        return metrics.collect(self)

    def kvm_stats(self) -> dict[str, Any]:
        """KVM's own counters of the VM and of each vCPU (vmm.kvm.stats)."""
        return self.guest.stats.read()

    def vcpu_slots(self) -> list[VcpuSlot]:
        return list(self._runner.slots)

    # -- snapshots (vmm.snapshot) -----------------------------------------------------
    def platform_state(self) -> dict[str, Any]:
        """The VMM's own device state: serial ports, virtio devices, hotplug, IOMMU."""
        assert self._uart is not None
        return {"com1": self._uart.save_state(),
                "com2": self._uart2.save_state() if self._uart2 is not None else None,
                "devices": self._devices.save_state(), "cmdline": self.cmdline,
                "cpu_features": self._config.cpu_features}  # fmt: skip

    def load_platform_state(self, state: dict[str, Any]) -> None:
        assert self._uart is not None
        self._uart.load_state(state["com1"])
        if self._uart2 is not None and state["com2"] is not None:
            self._uart2.load_state(state["com2"])
        self._devices.load_state(state["devices"])

    @property
    def guest(self) -> GuestVm:
        if self._guest is None:
            raise StateError("the machine has not been started")
        return self._guest

    # -- what a debugger drives (vmm.gdb) ---------------------------------------------
    @property
    def runner(self) -> VcpuRunner:
        return self._runner

    @property
    def guest_memory(self) -> GuestMemory:
        if self._guest is None:
            raise StateError("the machine has not been started")
        return self._guest.mem

    def uptime(self) -> float:
        """Seconds since ``start`` (0 before)."""
        return time.monotonic() - self._started if self._started else 0.0

    def irq_counts(self) -> dict[int, int]:
        """Interrupts the VMM signalled, by GSI (in-kernel LAPIC timers are not here)."""
        counts = dict(self._devices.irq_counts)
        for gsi, n in self._uart_irqs.items():
            counts[gsi] = counts.get(gsi, 0) + n
        return counts

    def pio_names(self) -> dict[int, str]:
        return {COM1_BASE: "com1", COM2_BASE: "com2", debug_exit.PORT: "debug-exit",
                0x80: "post-code"}  # fmt: skip

    def virtio_counters(self) -> dict[str, dict[str, int]]:
        return self._devices.counters()

    def hotplug_events(self) -> int:
        return self._devices.hotplug.events

    def boot_cmdline(self) -> str:
        """The command line the guest gets: the user's, plus the virtio announcements."""
        parts = [self.cmdline] if self.cmdline else []
        return " ".join(parts + self._devices.cmdline())

    def _require_devices(self, what: str) -> None:
        if self.state is State.STOPPED or self._runner.stop_requested:
            raise StateError(f"{what}: illegal while the machine is {State.STOPPED.value}")

    # -- lifecycle --------------------------------------------------------------------
    def start(self, paused: bool = False) -> None:
        """Build the VM and start every vCPU thread (only vCPU 0 runs at first);
        ``paused``: every vCPU parks before its first instruction (for a debugger)."""
        with self._lock:
            self._require(State.CREATED, "start")
            try:
                self._build()
            except BaseException:
                self._release()
                self.state = State.STOPPED
                self._runner.never_start()
                raise
            self.state = State.RUNNING
            self._started = time.monotonic()
            if paused:
                self._runner.pause_requested = True
                self.state = State.PAUSED
                self._devices.pause()
        self._runner.start()
        self._watchdog.start()
        timings.mark("vCPU threads started")

    def wait(self, timeout: float | None = None) -> ExitResult | None:
        """Wait for the guest to end; None if ``timeout`` passed first."""
        if self.state is State.CREATED:
            raise StateError("wait: the machine has not been started")
        if not self._done.wait(timeout):
            return None
        self._release()
        assert self.result is not None
        return self.result

    def run(self) -> ExitResult:
        """Start and wait for the end; Ctrl-C stops the guest cleanly."""
        self.start()
        return self.wait_interruptible()

    def wait_interruptible(self) -> ExitResult:
        """``wait()`` for the end; Ctrl-C stops the guest cleanly (status 130).

        Waits in short slices: CPython runs a signal's handler only when the
        main thread executes bytecode, and a signal taken by another thread
        (or just before the main thread blocked) does not wake a blocked wait."""
        try:
            result = None
            while result is None:
                result = self.wait(SIGNAL_CHECK_INTERVAL)
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
            if self._runner.pause():
                self.state = State.PAUSED
        self._devices.pause()  # devices freeze guest memory too

    def resume(self) -> None:
        with self._lock:
            self._require(State.PAUSED, "resume")
            self._runner.resume()
            self.state = State.RUNNING
        self._devices.resume()

    def send_console(self, data: bytes) -> int:
        """Type ``data`` on the guest's serial console; returns bytes accepted."""
        if self._uart is None:
            raise StateError("send_console: the machine has not been started")
        return self._uart.feed(data)

    def send_serial2(self, data: bytes) -> int:
        """Type ``data`` on COM2; returns bytes accepted."""
        if self.serial2 is None:
            raise ConfigError("this machine has no second serial port (serial2=False)")
        if self._uart2 is None:
            raise StateError("send_serial2: the machine has not been started")
        return self._uart2.feed(data)

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

    def _finish(self, result: ExitResult) -> None:
        """Record the first result and stop every vCPU (any thread may call it)."""
        with self._lock:
            if self.state is State.CREATED:
                self.state = State.STOPPED
                self._runner.never_start()
            self._runner.finish(result)

    def _ended(self) -> None:
        """The runner's last call, once every vCPU thread has ended."""
        timings.mark("vCPU threads stopped (guest exit to the last one's end)")
        self.state = State.STOPPED
        result = self.result
        if result is not None and result.status in (STATUS_GUEST_CRASH, STATUS_HANG):
            result.diagnostic = self._runner.diagnostic(self.console.last_lines(20))
        self.console.close()
        if self.serial2 is not None:
            self.serial2.close()
        self._done.set()
        if result is not None:
            self._emit("STOP", {"status": result.status, "reason": result.reason})

    def _release(self) -> None:
        while self._closers:
            closer = self._closers.pop()
            try:
                closer()
            except (OSError, BufferError, KeelError):
                pass
        # Idempotent: here for devices attached to a machine never (fully) built.
        self._devices.close()

    # -- building ---------------------------------------------------------------------
    def _build(self) -> None:
        install_kick_handler()
        cfg = self._config
        plan = self.restore_plan
        if plan is None:
            guest = builder.create_vm(
                cfg, self._closers, com2=self.serial2 is not None,
                virtio=self._devices.slot_resources(),
            )  # fmt: skip
        else:
            guest = plan.create_vm(cfg, self._closers)
        self._guest = guest
        self._closers.append(self._devices.close)  # workers stop before memory goes
        self._devices.wire_all(guest.vm, guest.mem)
        timings.mark("virtio devices wired")
        if plan is None:
            builder.finish_boot(cfg, guest, self.boot_cmdline(), self._closers)
        else:
            plan.restore_vcpus(cfg, guest, self._closers)
        vm = guest.vm
        self._uart = Uart16550(self._console_output, self._uart_irq(vm, COM1_IRQ))
        self.pio.register(COM1_BASE, 8, self._uart)
        if self.serial2 is not None:
            self._uart2 = Uart16550(self.serial2.write, self._uart_irq(vm, COM2_IRQ))
            self.pio.register(COM2_BASE, 8, self._uart2)
        self.pio.register(debug_exit.PORT, 4, debug_exit.DebugExit(self._guest_exit))
        self.pio.register(0x80, 1, _PostCodes())  # POST-code port, used as an I/O delay
        host_cpus = sorted(os.sched_getaffinity(0))
        for i, vcpu in enumerate(guest.vcpus):
            self._runner.add(vcpu, host_cpus[i % len(host_cpus)])
        self._runner.on_first_exit = lambda: guest.start_once_running(self._closers)
        if plan is not None:
            self.load_platform_state(plan.platform_state())

    def _uart_irq(self, vm: Any, gsi: int) -> Callable[[int], None]:
        """Drives a UART's line; rising edges are counted (vmm.metrics)."""
        counts = self._uart_irqs
        counts[gsi] = 0

        def line(level: int) -> None:
            if level:
                counts[gsi] += 1
            vm.irq_line(gsi, level)

        return line

    def _console_output(self, data: bytes) -> None:
        timings.mark("guest: to its first console output")
        self._watchdog.output()
        self.console.write(data)

    def _guest_exit(self, value: int) -> None:
        timings.mark("guest: the rest, to its exit")
        if value == debug_exit.PASS:
            self._finish(ExitResult(0, f"guest reported success (code {value:#x})", value))
            return
        self._finish(ExitResult(STATUS_GUEST_FAILURE, f"guest reported failure (code {value:#x}; "
                                f"QEMU's isa-debug-exit status {debug_exit.exit_status(value)})",
                                value))  # fmt: skip

    def _hung(self, silent: float) -> None:
        self._finish(ExitResult(STATUS_HANG, f"guest hung: no console output for {silent:.1f} s"))


class _PostCodes:
    def read(self, offset: int, size: int) -> bytes:
        return b"\xff" * size

    def write(self, offset: int, data: bytes) -> None:
        pass


def _stderr_log(message: str) -> None:
    sys.stderr.write(message + "\n")
