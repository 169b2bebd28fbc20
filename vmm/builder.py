"""The builder: from a checked configuration to a VM ready to run.

``BootConfig.load`` validates everything a boot needs (vCPU count, memory
size, the kernel ELF, the initrd and where it goes) before any KVM object
exists.  ``create_vm`` then makes the VM and its memory and loads the kernel,
the initrd and the ACPI tables; the devices are wired next (by their
manager); ``finish_boot`` writes ``hvm_start_info`` with the final command
line and the boot GDT, and creates the vCPUs with CPUID and, on vCPU 0, the
PVH entry state.  Nothing here runs the guest.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from vmm import early, platform, timings
from vmm.boot import acpi, elf, pvh
from vmm.boot.cpu_features import describe, guest_cpuid, host_kind, parse_feature_list
from vmm.boot.cpuid import vcpu_cpuid
from vmm.boot.elf import KernelImage
from vmm.early import Task, add_slots
from vmm.errors import ConfigError, KeelError
from vmm.kvm import stats as kvm_stats
from vmm.kvm.system import System
from vmm.kvm.vcpu import Vcpu
from vmm.kvm.vm import Vm
from vmm.memory import GuestMemory

MAX_VCPUS = 254  # xAPIC IDs; the IOAPIC takes the next ID
DEFAULT_MEMORY = 256 << 20


def default_smp() -> int:
    """One vCPU per host core this process may run on."""
    return len(os.sched_getaffinity(0))


def host_memory() -> int:
    return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


class BootConfig:
    """A validated configuration: construct it with ``load``.  (The classes here are
    plain: dataclasses would cost about 1 ms of `keel run` start-up each.)"""

    def __init__(
        self,
        kernel: KernelImage,
        smp: int,
        memory: int,
        initrd: bytes | None,
        cpu_features: list[tuple[bool, str]] | None = None,
    ) -> None:
        self.kernel, self.smp, self.memory, self.initrd = kernel, smp, memory, initrd
        self.cpu_features = cpu_features or []

    @classmethod
    def load(
        cls,
        kernel: str | os.PathLike[str],
        smp: int | None,
        memory: int | str,
        initrd: str | os.PathLike[str] | None,
        cpu_features: str | None = None,
    ) -> BootConfig:
        features = parse_feature_list(cpu_features or "")
        smp = default_smp() if smp is None else smp
        if not 1 <= smp <= MAX_VCPUS:
            raise ConfigError(f"--smp must be between 1 and {MAX_VCPUS}, not {smp}")
        size = platform.parse_size(memory) if isinstance(memory, str) else memory
        platform.check_memory_size(size, host_memory())
        image = elf.load_kernel(kernel)
        elf.check_fits(image, size)
        data = None
        if initrd is not None:
            data = _read_file(initrd, "initrd")
            if not data.startswith((b"070701", b"070702")):
                # the kernel reads a cpio archive (newc, as `make initrd` writes);
                # anything else would boot to "the initrd has no init program"
                what = "is empty" if not data else "is not a cpio archive (newc format)"
                raise ConfigError(f"initrd {os.fspath(initrd)!r} {what}")
            platform.place_initrd(size, len(data), image.end)
        return cls(image, smp, size, data, features)


class GuestVm:
    """The KVM objects of one guest (the caller's closers release them)."""

    def __init__(self, system: System, vm: Vm, mem: GuestMemory) -> None:
        self.system, self.vm, self.mem = system, vm, mem
        self.rsdp_addr = 0
        self.modules: list[tuple[int, int]] = []
        self.vcpus: list[Vcpu] = []
        self.stats = kvm_stats.GuestStats()  # KVM's own counters (Machine.kvm_stats)
        # Work for a thread of its own once vCPU 0 has first left the guest
        # (``start_once_running``; ``pit_reinject_off`` says why it waits).
        self.once_running: list[Callable[[], None]] = [lambda: pit_reinject_off(vm)]

    def start_once_running(self, closers: list[Callable[[], None]]) -> None:
        """vCPU 0 has first left the guest (the machine's vCPU runner calls this):
        each ``once_running`` work starts in a thread of its own, waited for by
        ``closers`` before the VM is closed."""
        closers.extend(Task(work).wait for work in self.once_running)


def create_vm(
    cfg: BootConfig,
    closers: list[Callable[[], None]],
    com2: bool,
    virtio: tuple[tuple[int, int, int], ...] = (),
) -> GuestVm:
    """The VM with its irqchip, PIT and memory, holding the kernel, initrd and ACPI
    (whose DSDT lists the virtio-mmio slots ``(base, size, gsi)`` of ``virtio``)."""
    begun = early.take(cfg.memory)
    if begun is not None:  # made while vmm.cli was imported (vmm.early)
        guest = adopt_vm(cfg, closers, begun)
        mem = guest.mem
    else:
        mem = GuestMemory(platform.ram_slots(cfg.memory))
        closers.append(mem.close)
        guest = new_vm(cfg, closers, mem)
    for seg in cfg.kernel.segments:
        mem.write(seg.paddr, seg.data)  # fresh anonymous memory: the rest is zero
    if cfg.initrd is not None:
        addr = platform.place_initrd(cfg.memory, len(cfg.initrd), cfg.kernel.end)
        mem.write(addr, cfg.initrd)
        guest.modules.append((addr, len(cfg.initrd)))
    timings.mark("memory (kernel and initrd copied in)")
    tables = acpi.build_acpi(cfg.smp, com2=com2, virtio=virtio)
    mem.write(platform.ACPI_BASE, tables.blob)
    guest.rsdp_addr = tables.rsdp_addr
    timings.mark("ACPI tables")
    return guest


def adopt_vm(cfg: BootConfig, closers: list[Callable[[], None]], begun: early.EarlyVm) -> GuestVm:
    """The VM, irqchip, PIT and memory ``vmm.early`` made, as ``new_vm`` would have."""
    closers.append(begun.close)
    assert begun.system is not None and begun.vm is not None and begun.mem is not None
    _check_smp(cfg, begun.system)
    timings.mark("KVM set-up (system, VM, irqchip, PIT, memory slots)")
    return GuestVm(begun.system, begun.vm, begun.mem)


def _check_smp(cfg: BootConfig, system: System) -> None:
    if cfg.smp > system.max_vcpus():
        raise ConfigError(f"--smp {cfg.smp} exceeds this host's KVM limit {system.max_vcpus()}")


def new_vm(cfg: BootConfig, closers: list[Callable[[], None]], mem: GuestMemory) -> GuestVm:
    """The VM with its irqchip, PIT and ``mem`` as its RAM (also for a restored snapshot)."""
    system = System()
    closers.append(system.close)
    _check_smp(cfg, system)
    vm = system.create_vm()
    closers.append(vm.close)
    vm.set_tss_addr(platform.KVM_TSS_ADDR)
    vm.set_identity_map_addr(platform.KVM_IDENTITY_MAP_ADDR)
    # KVM waits for SRCU grace periods, asleep, when it takes the memory slots and
    # when it makes the irqchip and the PIT (strace -T: 1-18 ms each under load).
    # The slots go in from a second thread meanwhile, so the waits overlap.
    slots = Task(add_slots, vm, mem)
    closers.append(slots.wait)  # before vm.close (closers run last first)
    vm.create_irqchip()
    vm.create_pit()
    slots.result()
    timings.mark("KVM set-up (system, VM, irqchip, PIT, memory slots)")
    return GuestVm(system, vm, mem)


def pit_reinject_off(vm: Vm) -> None:
    """Make the PIT drop the ticks it missed instead of delivering them late.

    Destroying a VM whose PIT reinjects waits for two SRCU grace periods
    (dropping the PIT's interrupt notifiers): about 16 ms asleep at the end of
    every `keel run` (strace -T of close on the VM: 16-48 ms under load; 0.3 ms
    without a PIT, docs/benchmarks.md).  Turning it off waits for the same two,
    which are short (0.1-5 ms) once the VM's set-up has stopped starting grace
    periods and long (10-34 ms) right after the PIT is made, when vCPU 0's first
    ``KVM_RUN`` waited for the end of it; so the machine calls this in a thread of
    its own once vCPU 0 has first left the guest (``GuestVm.once_running``).
    Keel's guests keep time with the LAPIC timer and the TSC, never by counting PIT
    interrupts; a tick missed while the host is busy is dropped, as with QEMU's
    lost_tick_policy=discard."""
    try:
        vm.set_pit_reinject(False)
    except KeelError:
        pass  # a KVM without it: the wait stays at the end


def finish_boot(
    cfg: BootConfig, guest: GuestVm, cmdline: str, closers: list[Callable[[], None]]
) -> None:
    """``hvm_start_info`` with ``cmdline``, the boot GDT, and every vCPU (vCPU 0 in the
    PVH entry state).  vCPU ``i`` is meant for host core ``i mod cores``."""
    mem = guest.mem
    for addr, blob in pvh.build_start_info(
        cmdline=cmdline,
        rsdp_paddr=guest.rsdp_addr,
        memmap=platform.memory_map(cfg.memory),
        modules=guest.modules,
    ):
        mem.write(addr, blob)
    mem.write(pvh.BOOT_GDT_ADDR, pvh.BOOT_GDT)
    create_vcpus(cfg, guest, closers)
    pvh.set_entry_state(guest.vcpus[0], cfg.kernel.entry32)
    timings.mark("start_info, vCPUs and their CPUID")


def create_vcpus(cfg: BootConfig, guest: GuestVm, closers: list[Callable[[], None]]) -> None:
    """Every vCPU with its CPUID (in their reset state)."""
    policy = guest_cpuid(guest.system.supported_cpuid(), host_kind(), cfg.cpu_features)
    # KVM's statistics files, opened before any vCPU runs (vmm.kvm.stats).
    guest.stats.add(guest.vm.fd)
    closers.append(guest.stats.close)
    for i in range(cfg.smp):
        vcpu = guest.vm.create_vcpu(i)
        closers.append(vcpu.close)
        guest.stats.add(vcpu.fd)
        vcpu.set_cpuid(vcpu_cpuid(policy.entries, i, cfg.smp, vcpu.tsc_khz()))
        guest.vcpus.append(vcpu)


def guest_tsc_khz() -> int:
    """The TSC rate KVM gives a guest's vCPU on this host, in kHz (0 when unknown):
    asks a throw-away VM with one vCPU (`keel stress` tells its guest this rate)."""
    try:
        with System() as system:
            vm = system.create_vm()
            try:
                vcpu = vm.create_vcpu(0)
                try:
                    return vcpu.tsc_khz()
                finally:
                    vcpu.close()
            finally:
                vm.close()
    except (KeelError, OSError):
        return 0


def cpuid_report(smp: int, features: str | None) -> str:
    """What ``keel run --show-cpuid`` prints of vCPU 0 of a guest of ``smp`` vCPUs with
    ``features`` (``--cpu-features``): its CPUID leaves and what was removed, from KVM's
    supported table as ``create_vcpus`` would set it.  Boots nothing."""
    wanted = parse_feature_list(features or "")
    with System() as system:
        policy = guest_cpuid(system.supported_cpuid(), host_kind(), wanted)
    table = vcpu_cpuid(policy.entries, 0, smp, guest_tsc_khz())
    return describe(table, policy.removed)


def _read_file(path: str | os.PathLike[str], what: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as exc:
        raise ConfigError(f"cannot read {what} {os.fspath(path)!r}: {exc.strerror}") from None
