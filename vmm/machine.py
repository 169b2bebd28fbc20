"""``Machine``: the one object scripts use to configure, boot and stop a guest.

    from vmm.machine import Machine
    m = Machine("build/kernel.elf", smp=2, memory="256M", cmdline="keel.test=boot")
    m.attach_disk("disk.img")  # boot-time devices and run-time ones: the same calls
    result = m.run()          # boots, waits for the guest to finish
    print(result.status, m.console.text())

Virtio devices live in fixed slots (``vmm.devices.hotplug``): ``attach_disk``,
``attach_net``, ``attach_rng``, ``attach_console``, ``detach`` and ``devices``
are legal while the machine is created, running or paused; slots filled at
boot are announced on the command line, later changes through the hotplug
controller.

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
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from vmm.boot import layout
from vmm.console import Console, fd_sink
from vmm.devices import debug_exit
from vmm.devices.bus import Bus
from vmm.devices.iommu import IOMMU_SIZE, DmaWindows, Iommu
from vmm.devices.uart import COM1_BASE, COM1_IRQ, COM2_BASE, COM2_IRQ, Uart16550
from vmm.errors import ConfigError, KeelError, StateError
from vmm.kvm import exits

if TYPE_CHECKING:
    from vmm.boot.elf import KernelImage
    from vmm.devices.hotplug import HotplugController, VirtioSlot
    from vmm.kvm.vcpu import Vcpu
    from vmm.kvm.vm import Vm
    from vmm.memory import GuestMemory
    from vmm.virtio.device import VirtioDevice
    from vmm.virtio.mmio import MmioTransport

MAX_VCPUS = 254  # xAPIC IDs; the IOAPIC takes the next ID
DEFAULT_MEMORY = 256 << 20
BOOT_GDT_ADDR = 0x500  # a flat GDT for the PVH entry state (the kernel loads its own)
KICK_SIGNAL = signal.SIGRTMIN + 2  # interrupts KVM_RUN in a vCPU thread

# Exit statuses of the host process besides the guest's own (debug_exit.exit_status).
STATUS_GUEST_CRASH = 2  # even, so it never collides with a guest-reported failure
STATUS_HANG = 4  # the hang watchdog (``hang_timeout``) stopped a silent guest
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
class AttachedDevice:
    """A virtio device in a slot; ``transport`` exists once the VM does."""

    id: str
    device: VirtioDevice
    slot: VirtioSlot
    transport: MmioTransport | None = None

    def describe(self) -> dict[str, Any]:
        info: dict[str, Any] = {"id": self.id, "slot": self.slot.index}
        info.update(self.device.describe())
        info.update(base=f"{self.slot.base:#x}", irq=self.slot.gsi, state="ok")
        if self.transport is not None and isinstance(self.transport.dma, DmaWindows):
            info.update(self.transport.dma.describe())
        if self.transport is not None and self.transport.needs_reset_reason:
            info["state"] = "needs-reset"
            info["reason"] = self.transport.needs_reset_reason
        return info


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
        hang_timeout: float | None = None,
        serial2: bool = False,
        serial2_output: Callable[[bytes], None] | None = None,
    ) -> None:
        """``hang_timeout`` (seconds, opt-in): stop the guest as hung when it prints
        nothing on the serial console for that long while running, with a
        diagnostic of every vCPU's registers and the last console lines.

        ``serial2`` adds a second 16550 (COM2, ports 0x2f8-0x2ff, IRQ 3) for
        user-space drivers (the kernel keeps COM1): what the guest sends goes
        to ``serial2_output`` (if given) and the transcript ``self.serial2``;
        ``send_serial2`` types on it."""
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
        self.serial2: Console | None = Console(serial2_output) if serial2 else None
        self._uart2: Uart16550 | None = None
        if hang_timeout is not None and hang_timeout <= 0:
            raise ConfigError(f"hang timeout must be positive, not {hang_timeout}")
        self.hang_timeout = hang_timeout
        self._last_output = time.monotonic()
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
        # Set once start() has created every vCPU thread: a guest that dies
        # while later threads are still being created is reaped only then.
        self._threads_created = threading.Event()
        self.pio = Bus("port", log=self._log)
        self.mmio = Bus("mmio", log=self._log)
        # Virtio slots and the hotplug controller exist from the start, so
        # devices can be attached before boot; _dev_lock serialises attach/detach.
        self._dev_lock = threading.RLock()
        self._attached: dict[str, AttachedDevice] = {}
        self._virtio_slots: list[VirtioSlot] = []
        self._hotplug: HotplugController | None = None
        self.iommu = Iommu(self._log)
        self._irq_fds: list[int] = []
        self._irq_signals: list[Callable[[], None]] = []

    # -- virtio devices -------------------------------------------------------------
    def _ensure_slots(self) -> list[VirtioSlot]:
        """Create the slots and the controller (before boot, or on the first attach)."""
        if not self._virtio_slots:
            from vmm.devices.hotplug import SLOT_COUNT, SLOT_STRIDE, HotplugController, VirtioSlot

            self._virtio_slots = [VirtioSlot(i) for i in range(SLOT_COUNT)]
            self._hotplug = HotplugController(self._virtio_slots, None)
            for slot in self._virtio_slots:
                self.mmio.register(slot.base, SLOT_STRIDE, slot)
            self.mmio.register(layout.HOTPLUG_MMIO_BASE, 0x100, self._hotplug)
            self.mmio.register(layout.IOMMU_MMIO_BASE, IOMMU_SIZE, self.iommu)
        return self._virtio_slots

    def attach_disk(self, path: str | os.PathLike[str], readonly: bool = False) -> str:
        """A virtio-blk device backed by the file ``path``; returns the device id."""
        from vmm.virtio.blk import BlockDevice

        with self._dev_lock:
            self._require_devices("attach_disk")
            return self._attach(BlockDevice(path, readonly=readonly))

    def attach_net(self, tap: str | None = None, mac: str | None = None) -> str:
        """A virtio-net device on TAP interface ``tap`` (created when it does not exist)."""
        from vmm.virtio.net import NetDevice

        with self._dev_lock:
            self._require_devices("attach_net")
            return self._attach(NetDevice(tap, _parse_mac(mac) if mac else None))

    def attach_rng(self) -> str:
        """A virtio-rng device fed by the host's getrandom(2)."""
        from vmm.virtio.rng import RngDevice

        with self._dev_lock:
            self._require_devices("attach_rng")
            return self._attach(RngDevice())

    def attach_console(self, output: str | os.PathLike[str] | None = None) -> str:
        """A virtio-console; its output goes to the file ``output`` (if given) and to
        the transcript ``device(id).console``; ``device(id).feed`` types input."""
        from vmm.virtio.console import ConsoleDevice

        with self._dev_lock:
            self._require_devices("attach_console")
            sink = None
            if output is not None:
                sink = _file_sink(output)
            return self._attach(ConsoleDevice(sink, os.fspath(output) if output else ""))

    def detach(self, ident: str) -> None:
        """Remove a device, named by its id or its backing (image path, TAP name)."""
        with self._dev_lock:
            self._require_devices("detach")
            entry = self._find(ident)
            entry.slot.clear()
            del self._attached[entry.id]
            self._close_entry(entry)
            if self.state is not State.CREATED and self._hotplug is not None:
                self._hotplug.slot_changed(entry.slot.index)

    def devices(self) -> list[dict[str, Any]]:
        """Every attached device: id, kind, backing, slot, base, irq, state."""
        with self._dev_lock:
            return [e.describe() for e in sorted(self._attached.values(), key=lambda e: e.id)]

    def device(self, ident: str) -> VirtioDevice:
        with self._dev_lock:
            return self._find(ident).device

    def boot_cmdline(self) -> str:
        """The command line the guest gets: the user's, plus the virtio announcements."""
        parts = [self.cmdline] if self.cmdline else []
        if self._virtio_slots:
            assert self._hotplug is not None
            # every slot, filled or not: a slot filled later is then already
            # the guest's to use (an empty one reads DeviceID 0: skipped)
            parts += [s.cmdline() for s in self._virtio_slots]
            parts.append(self._hotplug.cmdline())
            parts.append(self.iommu.cmdline())
        return " ".join(parts)

    def _require_devices(self, what: str) -> None:
        if self.state is State.STOPPED or self._stop_requested:
            raise StateError(f"{what}: illegal while the machine is {State.STOPPED.value}")

    def _find(self, ident: str) -> AttachedDevice:
        if ident in self._attached:
            return self._attached[ident]
        for entry in self._attached.values():
            backing = entry.device.backing
            if backing in (ident, os.path.realpath(ident)) or (
                backing and os.path.realpath(backing) == os.path.realpath(ident)
            ):
                return entry
        raise ConfigError(f"no attached device {ident!r}")

    def _attach(self, device: VirtioDevice) -> str:
        """Caller holds ``_dev_lock`` and has checked the state."""
        try:
            slot = next((s for s in self._ensure_slots() if s.empty), None)
            if slot is None:
                raise ConfigError(f"all {len(self._virtio_slots)} virtio slots are in use")
            n = 0
            while f"{device.kind}{n}" in self._attached:
                n += 1
            entry = AttachedDevice(f"{device.kind}{n}", device, slot)
            if self.state is not State.CREATED:
                self._wire(entry)
        except BaseException:
            device.close()
            raise
        self._attached[entry.id] = entry
        slot.fill(entry.transport or _Sink(), device.device_id)
        if self.state is not State.CREATED and self._hotplug is not None:
            self._hotplug.slot_changed(slot.index)
        return entry.id

    def _wire(self, entry: AttachedDevice) -> None:
        """Give a device its transport, ioeventfd and worker (the VM exists)."""
        from vmm.virtio.mmio import QUEUE_NOTIFY, MmioTransport

        assert self._mem is not None and self._vm is not None
        transport = MmioTransport(
            entry.device, self._mem, self._mem.contains,
            self._irq_signals[entry.slot.index], self._log, entry.id,
        )  # fmt: skip
        try:
            self._vm.ioeventfd(transport.kick_fd, entry.slot.base + QUEUE_NOTIFY, 4)
        except KeelError:
            pass  # without ioeventfd a kick is an MMIO exit the transport also handles
        transport.dma = self.iommu.attach(entry.slot.base, entry.id, transport.lock)
        transport.paused = self.state is State.PAUSED
        transport.start_worker()
        entry.transport = transport

    def _close_entry(self, entry: AttachedDevice) -> None:
        from vmm.virtio.mmio import QUEUE_NOTIFY

        transport, entry.transport = entry.transport, None
        self.iommu.detach(entry.slot.base)
        if transport is None:
            entry.device.close()
            return
        if self._vm is not None and self._vm.fd >= 0:
            try:
                self._vm.ioeventfd(
                    transport.kick_fd, entry.slot.base + QUEUE_NOTIFY, 4, deassign=True
                )
            except KeelError:
                pass
        transport.close()

    def _wire_virtio(self, vm: Vm) -> None:
        """At build: one irqfd per slot and for the controller, then every boot-time device."""
        from vmm.devices.hotplug import HOTPLUG_GSI

        self._ensure_slots()  # always: devices may be attached while the guest runs
        assert self._hotplug is not None
        for gsi in [s.gsi for s in self._virtio_slots] + [HOTPLUG_GSI]:
            self._irq_signals.append(self._irq_signal(vm, gsi))
        self._hotplug.signal_irq = self._irq_signals[-1]
        for entry in self._attached.values():
            self._wire(entry)
            assert entry.transport is not None
            entry.slot.fill(entry.transport, entry.device.device_id)

    def _irq_signal(self, vm: Vm, gsi: int) -> Callable[[], None]:
        """An edge on ``gsi``: an irqfd write, or a KVM_IRQ_LINE pulse without irqfd."""
        fd = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
        self._irq_fds.append(fd)
        try:
            vm.irqfd(fd, gsi)
        except KeelError:

            def pulse() -> None:
                vm.irq_line(gsi, 1)
                vm.irq_line(gsi, 0)

            return pulse
        return lambda: os.eventfd_write(fd, 1)

    def _close_devices(self) -> None:
        with self._dev_lock:
            for entry in list(self._attached.values()):
                entry.slot.clear()
                try:
                    self._close_entry(entry)
                except (OSError, KeelError):
                    pass
            self._attached.clear()
            for fd in self._irq_fds:
                try:
                    os.close(fd)
                except OSError:
                    pass
            self._irq_fds.clear()
            self._irq_signals.clear()

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
                self._threads_created.set()
                raise
            self.state = State.RUNNING
        for slot in self._slots:
            slot.thread = threading.Thread(
                target=self._vcpu_thread, args=(slot,), name=f"vcpu{slot.vcpu.index}", daemon=True
            )
            with self._lock:
                slot.alive = True
            slot.thread.start()
        self._threads_created.set()
        if self.hang_timeout is not None:
            self._last_output = time.monotonic()
            threading.Thread(target=self._hang_watch, name="hang-watch", daemon=True).start()

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
        return self.wait_interruptible()

    def wait_interruptible(self) -> ExitResult:
        """``wait()`` for the end; Ctrl-C stops the guest cleanly (status 130)."""
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
        self._each_transport(lambda t: t.pause())  # devices freeze guest memory too

    def resume(self) -> None:
        with self._lock:
            self._require(State.PAUSED, "resume")
            self._pause_requested = False
            self.state = State.RUNNING
            self._lock.notify_all()
        self._each_transport(lambda t: t.resume())

    def _each_transport(self, action: Callable[[MmioTransport], None]) -> None:
        with self._dev_lock:
            for entry in self._attached.values():
                if entry.transport is not None:
                    action(entry.transport)

    def send_console(self, data: bytes) -> int:
        """Type ``data`` on the guest's serial console; returns bytes accepted."""
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
        self._closers.append(self._close_devices)  # workers stop before memory goes
        for i, (gpa, size, *_rest) in enumerate(mem.slots):
            vm.set_memory_region(i, gpa, size, mem.host_address(i))

        for seg in self.kernel.segments:
            mem.write(seg.paddr, seg.data)  # fresh anonymous memory: the rest is zero
        modules: list[tuple[int, int]] = []
        if self.initrd is not None:
            addr = layout.place_initrd(self.memory, len(self.initrd), self.kernel.end)
            mem.write(addr, self.initrd)
            modules.append((addr, len(self.initrd)))
        tables = acpi.build_acpi(self.smp, com2=self.serial2 is not None)
        mem.write(layout.ACPI_BASE, tables.blob)
        self._wire_virtio(vm)
        for addr, blob in pvh.build_start_info(
            cmdline=self.boot_cmdline(),
            rsdp_paddr=tables.rsdp_addr,
            memmap=layout.memory_map(self.memory),
            modules=modules,
        ):
            mem.write(addr, blob)
        mem.write(BOOT_GDT_ADDR, BOOT_GDT)

        self._uart = Uart16550(self._console_output, lambda level: vm.irq_line(COM1_IRQ, level))
        self.pio.register(COM1_BASE, 8, self._uart)
        if self.serial2 is not None:
            self._uart2 = Uart16550(self.serial2.write, lambda level: vm.irq_line(COM2_IRQ, level))
            self.pio.register(COM2_BASE, 8, self._uart2)
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

    # -- the hang watchdog -----------------------------------------------------------------
    def _console_output(self, data: bytes) -> None:
        self._last_output = time.monotonic()
        self.console.write(data)

    def _hang_watch(self) -> None:
        """Stop the guest once it has been silent for ``hang_timeout`` seconds of running
        (time paused does not count).  The diagnostic names every vCPU's registers."""
        assert self.hang_timeout is not None
        while not self._done.wait(min(0.25, self.hang_timeout / 4)):
            if self.state is not State.RUNNING:
                self._last_output = time.monotonic()
                continue
            silent = time.monotonic() - self._last_output
            if silent >= self.hang_timeout:
                self._finish(
                    ExitResult(STATUS_HANG, f"guest hung: no console output for {silent:.1f} s")
                )
                return

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
                self._threads_created.set()  # none will be
        threading.Thread(target=self._reap, name="reaper", daemon=True).start()

    def _reap(self) -> None:
        self._threads_created.wait()
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
        if self.serial2 is not None:
            self.serial2.close()
        self._done.set()

    def _join_and_release(self) -> None:
        self._release()

    def _release(self) -> None:
        if not self._closers:
            self._close_devices()  # never built: devices attached before start
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


def _parse_mac(text: str) -> bytes:
    parts = text.split(":")
    try:
        mac = bytes(int(p, 16) for p in parts)
    except ValueError:
        mac = b""
    if len(mac) != 6 or any(len(p) != 2 for p in parts):
        raise ConfigError(f"bad MAC address {text!r}: expected six hex pairs, a:b:c:d:e:f")
    return mac


def _file_sink(path: str | os.PathLike[str]) -> Callable[[bytes], None]:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        raise ConfigError(f"cannot open {os.fspath(path)!r}: {exc.strerror}") from None
    return fd_sink(fd)


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
