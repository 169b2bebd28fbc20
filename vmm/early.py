"""A `keel run`'s VM, begun while Python imports the rest of Keel.

KVM sleeps for grace periods when it makes the irqchip and the PIT and when it
takes a VM's memory slot (4-7 ms on this host, whatever the size; 8-11 ms of
every `keel run` together), and importing ``vmm.cli`` is about 17 ms of CPU.
Imported first by ``vmm.cli``, this module looks at the command line: for a
plain ``keel run`` (not ``--daemon``, which forks, nor ``--help`` or
``--show-cpuid``) it makes the VM with its TSS and identity-map pages, irqchip,
PIT, RAM and memory slots in a thread of its own while the main thread goes on
importing.  ``builder.create_vm`` takes them with ``take`` when they fit the
checked configuration (the same memory size), or closes them and makes its
own.  Nothing here reports an error: a failure closes what was made and
leaves the work to the builder, which reports it as before.
"""

from __future__ import annotations

import _thread
import os
import sys

from vmm import platform
from vmm.kvm.system import System
from vmm.kvm.vm import Vm
from vmm.memory import GuestMemory

TYPE_CHECKING = False  # typing costs about 3 ms of start-up (vmm/records.py)
if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

# While the threads here wait for the GIL behind the importing main thread,
# each hand-over would take up to the default interval (5 ms).
_SWITCH_INTERVAL = 0.0002


class Task:
    """``fn(*args)`` in a thread of its own, started without waiting for it to run
    (``threading.Thread.start`` waits for the new thread's first time slice, which
    takes milliseconds on a busy host); ``result`` waits and raises what it raised."""

    def __init__(self, fn: Callable[..., None], *args: object) -> None:
        self._done = _thread.allocate_lock()
        self._done.acquire()
        self._error: BaseException | None = None
        _thread.start_new_thread(self._run, (fn, args))

    def _run(self, fn: Callable[..., None], args: tuple[object, ...]) -> None:
        try:
            fn(*args)
        except BaseException as exc:  # handed to result(), in the caller's thread
            self._error = exc
        finally:
            self._done.release()

    def wait(self) -> None:
        with self._done:
            pass

    def result(self) -> None:
        self.wait()
        if self._error is not None:
            raise self._error


def add_slots(vm: Vm, mem: GuestMemory) -> None:
    for i, (gpa, size, *_rest) in enumerate(mem.slots):
        vm.set_memory_region(i, gpa, size, mem.host_address(i))


class EarlyVm:
    """The KVM objects begun for a guest of ``memory`` bytes."""

    def __init__(self, memory: int) -> None:
        self.memory = memory
        self.system: System | None = None
        self.vm: Vm | None = None
        self.mem: GuestMemory | None = None
        self.ok = False
        self._made = Task(self._make)

    def _make(self) -> None:
        # A failure leaves ``ok`` false (``Task`` keeps the exception; the builder
        # makes its own VM and reports what is wrong).
        self.system = System()
        self.vm = vm = self.system.create_vm()
        vm.set_tss_addr(platform.KVM_TSS_ADDR)
        vm.set_identity_map_addr(platform.KVM_IDENTITY_MAP_ADDR)
        # The irqchip and the PIT before the slot: made after it, each waited for
        # the slot's grace period (kvm->slots_lock) on top of its own.
        vm.create_irqchip()
        vm.create_pit()
        self.mem = GuestMemory(platform.ram_slots(self.memory))
        add_slots(vm, self.mem)
        self.ok = True

    def ready(self) -> bool:
        """Wait for the VM, its irqchip, PIT and memory slots; True if all were made."""
        self._made.wait()
        return self.ok

    def close(self) -> None:
        """Release everything (once its thread is done)."""
        self._made.wait()
        for closer in (self.vm, self.system, self.mem):
            if closer is not None:
                try:
                    closer.close()
                except (OSError, BufferError):
                    pass


_early: EarlyVm | None = None
_interval = 0.005


def memory_of(argv: Sequence[str]) -> int | None:
    """The guest memory size of a plain ``keel run`` command line ``argv`` (after the
    program's name), or None when it is not one this module begins."""
    if argv[:1] != ["run"] or any(a in ("--daemon", "--show-cpuid", "-h", "--help") for a in argv):
        return None
    text = "256M"
    it = iter(argv)
    for arg in it:
        if arg in ("--memory", "-m"):
            text = next(it, "")
        elif arg.startswith("--memory="):
            text = arg[len("--memory=") :]
    try:
        return platform.parse_size(text)
    except Exception:  # argparse and the builder say what is wrong with it
        return None


def begin(argv: Sequence[str]) -> None:
    """Begin the VM of ``argv``, the whole command line, if it is a plain ``keel run``."""
    global _early, _interval
    # The program is the `keel` launcher, or vmm/cli.py run as `python -m vmm.cli`.
    if _early is not None or os.path.basename(argv[0] if argv else "") not in ("keel", "cli.py"):
        return
    memory = memory_of(list(argv[1:]))
    if memory is None or not os.path.exists("/dev/kvm"):
        return
    _interval = sys.getswitchinterval()
    sys.setswitchinterval(_SWITCH_INTERVAL)
    _early = EarlyVm(memory)


def take(memory: int) -> EarlyVm | None:
    """The VM begun for this run if it was made for ``memory`` bytes (once); any
    other is closed."""
    global _early
    early, _early = _early, None
    if early is None:
        return None
    sys.setswitchinterval(_interval)
    if early.memory == memory and early.ready():
        return early
    early.close()
    return None


begin(sys.argv)
