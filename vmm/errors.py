"""Every error the VMM raises on purpose.

One module of error types (as qemu.qmp does): callers catch ``KeelError`` to
tell a clean, user-facing failure from a bug.  Each message is one line that
names the thing that was wrong.
"""


class KeelError(Exception):
    """Base of all deliberate VMM errors; ``str(err)`` is a one-line message."""


class ConfigError(KeelError):
    """A bad option or configuration value (size syntax, --smp 0, ...)."""


class KernelImageError(KeelError):
    """The kernel file is missing, not an ELF, or not bootable by PVH."""


class KvmError(KeelError):
    """/dev/kvm is missing, or a KVM ioctl failed."""


class StateError(KeelError):
    """An operation that is not legal in the machine's current state."""


class GuestError(KeelError):
    """The guest died: triple fault, shutdown, or a KVM internal error."""


class ApiError(KeelError):
    """A request the control socket refuses (bad JSON, unknown command, bad argument)."""


class DeviceTimeout(KeelError, TimeoutError):
    """The guest did not bind (attach) or release (detach) a device in time."""
