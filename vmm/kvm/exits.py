"""Typed vCPU exits: what ``Vcpu.run()`` returns.

Each exit is a small object; the dispatcher in ``vmm.vcpu_runner`` matches on its
type.  Port-I/O and MMIO exits carry a memoryview into the vCPU's shared
``kvm_run`` page: for reads the device's answer is written there before the
next ``run()``.
"""

from __future__ import annotations

from vmm.records import record


@record
class IoExit:
    """Port I/O: ``data`` holds ``size * count`` bytes (to write, or to fill)."""

    port: int
    size: int
    count: int
    is_write: bool
    data: memoryview


@record
class MmioExit:
    """MMIO access of ``len(data)`` bytes at guest-physical ``addr``."""

    addr: int
    is_write: bool
    data: memoryview


@record
class HltExit:
    """The guest executed HLT (only seen without an in-kernel irqchip)."""


@record
class ShutdownExit:
    """The guest triple-faulted or otherwise asked for a shutdown."""


@record
class SystemEventExit:
    """A system event (shutdown, reset, crash) with its KVM type."""

    kind: int
    data: tuple[int, ...]


@record
class InternalErrorExit:
    """KVM could not handle the guest (for example an unemulatable instruction)."""

    suberror: int
    data: tuple[int, ...]


@record
class FailEntryExit:
    """Hardware refused to enter the guest."""

    reason: int
    cpu: int


@record
class InterruptedExit:
    """KVM_RUN returned early because of a signal or ``immediate_exit``."""


@record
class DebugExit:
    """A guest-debugging event (single-step or breakpoint) at ``pc``; ``exception``
    is the vector (1 for #DB, 3 for #BP), ``dr6`` says which."""

    exception: int
    pc: int
    dr6: int


@record
class UnknownExit:
    """An exit reason this VMM does not handle."""

    reason: int
    hardware_reason: int


Exit = (
    IoExit
    | MmioExit
    | HltExit
    | ShutdownExit
    | SystemEventExit
    | InternalErrorExit
    | FailEntryExit
    | InterruptedExit
    | DebugExit
    | UnknownExit
)

# The names metrics give each kind of exit (vmm.metrics).
KIND_NAMES: dict[type, str] = {
    IoExit: "io",
    MmioExit: "mmio",
    HltExit: "hlt",
    ShutdownExit: "shutdown",
    SystemEventExit: "system_event",
    InternalErrorExit: "internal_error",
    FailEntryExit: "fail_entry",
    InterruptedExit: "interrupted",
    DebugExit: "debug",
    UnknownExit: "unknown",
}

INTERNAL_ERROR_NAMES = {
    1: "emulation failure",
    2: "exception while delivering an exception",
    3: "exception during event delivery",
    4: "unexpected exit reason",
}
