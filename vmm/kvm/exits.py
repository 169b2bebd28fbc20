"""Typed vCPU exits: what ``Vcpu.run()`` returns.

Each exit is a small object; the dispatcher in ``vmm.vcpu_runner`` matches on its
type.  Port-I/O and MMIO exits carry a memoryview into the vCPU's shared
``kvm_run`` page: for reads the device's answer is written there before the
next ``run()``.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class IoExit:
    """Port I/O: ``data`` holds ``size * count`` bytes (to write, or to fill)."""

    port: int
    size: int
    count: int
    is_write: bool
    data: memoryview


@dataclass(slots=True)
class MmioExit:
    """MMIO access of ``len(data)`` bytes at guest-physical ``addr``."""

    addr: int
    is_write: bool
    data: memoryview


@dataclass(slots=True)
class HltExit:
    """The guest executed HLT (only seen without an in-kernel irqchip)."""


@dataclass(slots=True)
class ShutdownExit:
    """The guest triple-faulted or otherwise asked for a shutdown."""


@dataclass(slots=True)
class SystemEventExit:
    """A system event (shutdown, reset, crash) with its KVM type."""

    kind: int
    data: tuple[int, ...]


@dataclass(slots=True)
class InternalErrorExit:
    """KVM could not handle the guest (for example an unemulatable instruction)."""

    suberror: int
    data: tuple[int, ...]


@dataclass(slots=True)
class FailEntryExit:
    """Hardware refused to enter the guest."""

    reason: int
    cpu: int


@dataclass(slots=True)
class InterruptedExit:
    """KVM_RUN returned early because of a signal or ``immediate_exit``."""


@dataclass(slots=True)
class DebugExit:
    """A guest-debugging event (single-step or breakpoint) at ``pc``; ``exception``
    is the vector (1 for #DB, 3 for #BP), ``dr6`` says which."""

    exception: int
    pc: int
    dr6: int


@dataclass(slots=True)
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
