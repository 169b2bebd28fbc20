"""``keel``: the command line, a thin layer over ``vmm.machine.Machine``.

    keel run [KERNEL] [--smp N] [--memory SIZE] [--cmdline STR] [--initrd FILE]
                      [--console FILE] [--api-sock PATH] [--disk IMAGE[,readonly]]...
                      [--net [TAP]] [--rng] [--virtio-console] [--hang-timeout SECONDS]
                      [--serial2 FILE|stdio|none] [--cpu-features [+-]NAME,...]
                      [--daemon [--log FILE]] [--timings]
                      [--metrics-file PATH] [--gdb tcp:HOST:PORT|unix:PATH]
    keel run --show-cpuid [--smp N] [--cpu-features [+-]NAME,...]
    keel stress [--smp N] [--duration SECONDS] [--seed S] [--workloads LIST]
                [--kernel K] [--initrd I] [--hang-timeout SECONDS] [--verbose]
    keel fuzz [--seed N] [--calls M] [--smp K] [--procs P]   (vmm/fuzz.py)
    keel attach --api-sock S disk IMAGE [--readonly] | net [TAP] [--mac M] | rng
                                        | console [--output FILE]
    keel detach --api-sock S ID-or-PATH [--force] [--no-wait] [--timeout S]
    keel devices|status|pause|resume|stop|version|events|console --api-sock S
    keel list
    keel metrics --api-sock S [--json] [--watch [SECONDS]]
    keel snapshot --api-sock S DIR [--stop]
    keel restore DIR [--api-sock PATH] [--console FILE] [--smp N] [--verify]
    keel --version
(``--api-sock`` may come anywhere after the verb.)

``--serial2`` adds a second 16550 (COM2, 0x2f8, IRQ 3) for a user-space
driver: its output goes to FILE, or with ``stdio`` to standard output while
standard input types on COM2 instead of COM1.

``--timings`` prints on stderr where the run's time went: Python's start-up,
imports, configuration, KVM set-up, memory, ACPI, devices, vCPUs, the guest
(to its first console output and to its exit) and tear-down (vmm.timings).

Without KERNEL, ``keel run`` boots the built default, build/kernel.elf (with
build/initrd.cpio when present).

``keel stress`` boots the kernel with the in-guest stress workload
(``keel.test=stress``), prints its progress and verdict lines, and exits 0
only when every invariant held; a guest silent for ``--hang-timeout``
seconds is stopped and reported with every vCPU's registers (status 4).

The device flags of ``keel run`` and the kinds of ``keel attach`` come from
``vmm.devices.registry``.  Bad input is one line on stderr and a non-zero
status, never a traceback.
"""

from __future__ import annotations

from vmm import timings  # first: its import time is where keel's own start-up begins

# isort: split

# Second: for a plain `keel run`, begins the VM while the rest is imported (vmm.early).
from vmm import early  # noqa: F401

# isort: split

import os
import sys

from vmm import runargs, session
from vmm.boot import cpu_features
from vmm.builder import cpuid_report, default_smp, guest_tsc_khz
from vmm.client import cmd_client, cmd_list
from vmm.client import say as _say
from vmm.console import fd_sink
from vmm.devices.registry import KINDS
from vmm.errors import ConfigError, KeelError
from vmm.machine import ExitResult, Machine
from vmm.vcpu_runner import STATUS_INTERRUPTED

TYPE_CHECKING = False  # typing itself costs about 3 ms of start-up (python -X importtime)
if TYPE_CHECKING:
    from argparse import ArgumentParser, Namespace
    from collections.abc import Callable, Sequence
    from typing import Any, NoReturn

timings.mark("imports (vmm.cli and what it imports)")

STATUS_ERROR = 1  # bad input or usage: one `keel: error:` line
STATUS_USAGE = STATUS_ERROR
# The guest's workloads; "calls" (kernel calls on nothing shared, a scaling
# reference) runs only when named.
STRESS_WORKLOADS = ("ipc", "storm", "caps", "map", "churn", "rpc", "revoke", "calls")

def _console_sink(path: str | None, what: str = "console file") -> Callable[[bytes], None]:
    if path is None:
        fd = sys.stdout.fileno()
    else:
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise ConfigError(f"cannot open {what} {path!r}: {exc.strerror}") from None
    return fd_sink(fd)


def _default_kernel() -> tuple[str, str | None]:
    """build/kernel.elf (and build/initrd.cpio when present) of this source tree."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    for build in (os.path.join(root, "build"), "build"):
        kernel = os.path.join(build, "kernel.elf")
        if os.path.exists(kernel):
            initrd = os.path.join(build, "initrd.cpio")
            return kernel, initrd if os.path.exists(initrd) else None
    raise ConfigError("no kernel given and build/kernel.elf does not exist: run 'make'")


def _guest_files(kernel: str | None, initrd: str | None, verb: str) -> tuple[str, str]:
    """The kernel and initrd of ``keel stress`` and ``keel fuzz`` (their test programs
    are in the initrd): as given; the kernel by default build/kernel.elf, the initrd
    by default initrd.cpio beside the kernel."""
    if kernel is None:
        kernel, default_initrd = _default_kernel()
        initrd = initrd or default_initrd
    if initrd is None:
        beside = os.path.join(os.path.dirname(os.path.abspath(kernel)), "initrd.cpio")
        if not os.path.exists(beside):
            raise ConfigError(f"keel {verb} needs an initrd: give --initrd, or build "
                              f"{beside} (run 'make')")  # fmt: skip
        initrd = beside
    return kernel, initrd


def _stderr(message: str) -> None:
    sys.stderr.write(message + "\n")


def _report(result: ExitResult) -> None:
    """How a guest that did not succeed ended: the crash diagnostic, or its reason."""
    if result.diagnostic:
        sys.stderr.write(result.diagnostic + "\n")
    elif result.status != 0:
        sys.stderr.write(f"keel: {result.reason}\n")


def cmd_show_cpuid(args: Namespace) -> int:
    """The CPUID table of vCPU 0 and the features removed from KVM's, without booting."""
    smp = default_smp() if args.smp is None else args.smp
    report = cpuid_report(smp, args.cpu_features)
    print(f"host KVM: {cpu_features.host_kind()}; {smp} vCPUs")
    print(report)
    return 0


def cmd_run(args: Namespace) -> int:
    if args.show_cpuid:
        return cmd_show_cpuid(args)
    if args.daemon and not args.api_sock:
        raise ConfigError("--daemon needs --api-sock (the only way to reach a daemon)")
    if args.log and not args.daemon:
        raise ConfigError("--log is for --daemon (without it, messages go to stderr)")
    if args.daemon and (args.serial2 == "stdio" or args.console == "-"):
        raise ConfigError("--daemon has no terminal: give --console/--serial2 a FILE")
    kernel, initrd = args.kernel, args.initrd
    if kernel is None:
        kernel, default_initrd = _default_kernel()
        initrd = initrd or default_initrd
    serial2 = args.serial2 != "none"
    serial2_sink = None
    if serial2:
        serial2_sink = _console_sink(None if args.serial2 == "stdio" else args.serial2,
                                     "--serial2 file")
    console = _console_sink(args.console) if args.console or not args.daemon else None
    timings.mark("arguments parsed")
    machine = Machine(
        kernel,
        smp=args.smp,
        memory=args.memory,
        cmdline=args.cmdline,
        initrd=initrd,
        console=console,
        hang_timeout=args.hang_timeout,
        serial2=serial2,
        serial2_output=serial2_sink,
        cpu_features=args.cpu_features,
    )
    if args.api_sock:
        # Lazy, as in cmd_client: vmm.api (socket, json) costs about 4 ms of start-up
        # (python -X importtime) that a `keel run` without --api-sock need not pay.
        from vmm.api import check_path

        check_path(args.api_sock)
    ready = session.daemonize(args.log) if args.daemon else None
    session.install_signals()
    server = None
    metrics_file = None
    gdb_server = None
    unregister: Callable[[], None] = lambda: None  # noqa: E731
    result = None
    try:
        # Until every part exists and is recorded for the clean-up below, a stop
        # signal waits (one taken half-way would leave, say, the socket behind).
        with session.signals_deferred():
            for kind in KINDS.values():
                for options in kind.run_flag.requests(getattr(args, kind.run_flag.dest)):
                    machine.attach(kind.name, **options)
            if args.api_sock:
                from vmm.api import ApiServer  # lazy: see above

                server = ApiServer(machine, args.api_sock)
                unregister = session.register(args.api_sock, os.fspath(kernel))
            if args.metrics_file:
                # Lazy for the same reason as vmm.api (it imports vmm.api and json).
                from vmm.metrics_cli import MetricsFile

                metrics_file = MetricsFile(machine, args.metrics_file)
            if args.gdb:
                # Lazy: the stub (socket, select) is only for debugging sessions.
                from vmm.gdb.server import GdbServer

                gdb_server = GdbServer(machine, args.gdb, _stderr)
            timings.mark("devices attached")
            machine.start(paused=gdb_server is not None)
        if ready is not None:
            ready()
        if gdb_server is not None:
            gdb_server.start()
        if metrics_file is not None:
            metrics_file.start()
        stdin_fd = -1 if args.daemon else _stdin_fd()
        with session.guest_terminal(stdin_fd) if stdin_fd >= 0 else _nothing():
            if stdin_fd >= 0:
                session.forward_stdin(
                    machine.send_serial2 if args.serial2 == "stdio" else machine.send_console
                )
            result = machine.wait_interruptible()
    except KeyboardInterrupt:
        if machine.state.value == "created":
            sys.stderr.write("keel: interrupted\n")
            return STATUS_INTERRUPTED
        machine.stop(ExitResult(STATUS_INTERRUPTED, "interrupted"))
        result = machine.wait()
    finally:
        unregister()
        if gdb_server is not None:
            gdb_server.close()
        if metrics_file is not None:
            metrics_file.close()
        if server is not None:
            server.close()
        machine.close()
        timings.mark("tear-down (devices, memory and KVM closed)")
    assert result is not None
    _report(result)
    if args.timings:
        sys.stderr.write(timings.report() + "\n")
    return result.status


def _stdin_fd() -> int:
    try:
        return sys.stdin.fileno()
    except (AttributeError, ValueError, OSError):
        return -1


class _nothing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


_STRESS_MARKERS = (b"stress:", b"watchdog", b"panic", b"exception", b"FAIL", b"unknown test")


def _stress_sink(verbose: bool) -> Callable[[bytes], None]:
    """Passes whole console lines through: all of them, or only the stress ones."""
    pending = bytearray()

    def sink(data: bytes) -> None:
        pending.extend(data)
        while (end := pending.find(b"\n")) >= 0:
            line = bytes(pending[: end + 1])
            del pending[: end + 1]
            if verbose or any(m in line for m in _STRESS_MARKERS):
                _say(line)

    return sink


def cmd_stress(args: Namespace) -> int:
    if args.duration < 1:
        raise ConfigError(f"--duration must be at least 1 second, not {args.duration}")
    if args.seed < 0:
        raise ConfigError(f"--seed must not be negative, not {args.seed}")
    if args.workloads is not None:
        chosen = args.workloads.split(",")
        bad = [w for w in chosen if w not in STRESS_WORKLOADS]
        if bad or not args.workloads:
            raise ConfigError(f"unknown stress workload {(bad or [''])[0]!r}: "
                              f"--workloads takes a comma-separated subset of "
                              f"{','.join(STRESS_WORKLOADS)}")  # fmt: skip
    kernel, initrd = _guest_files(args.kernel, args.initrd, "stress")
    parts = ["keel.test=stress", f"keel.duration={args.duration}", f"keel.seed={args.seed}"]
    if args.workloads:
        parts.append(f"keel.stress={args.workloads}")
    # User-mode CPUID may not reach the VMM's timing leaf on every host, so the
    # stress guest is told the TSC rate on its command line.
    khz = guest_tsc_khz()
    if khz:
        parts.append(f"keel.tsc_khz={khz}")
    machine = Machine(
        kernel, smp=args.smp, memory=args.memory, cmdline=" ".join(parts), initrd=initrd,
        console=_stress_sink(args.verbose), hang_timeout=args.hang_timeout,
    )  # fmt: skip
    _say(f"keel stress: {machine.smp} vCPUs, {args.duration} s, seed {args.seed}\n".encode())
    session.install_signals()
    result: ExitResult | None = None
    try:
        with session.signals_deferred():
            machine.start()
        result = machine.wait_interruptible()
    except KeyboardInterrupt:
        machine.stop(ExitResult(STATUS_INTERRUPTED, "interrupted"))
        result = machine.wait()
    finally:
        machine.close()
    assert result is not None
    _report(result)
    verdict = "passed" if result.status == 0 else f"FAILED (status {result.status})"
    _say(f"keel stress: {verdict}\n".encode())
    return result.status


_SIZE_OPTIONS = ("--memory", "-m")


def _join_dash_values(argv: Sequence[str]) -> list[str]:
    """``--cpu-features -cx16`` as ``--cpu-features=-cx16``, and ``--memory -5M`` as
    ``--memory=-5M``: argparse would take a value starting with '-' for an option of
    its own (and say the option has no value instead of what is wrong with it)."""
    out: list[str] = []
    it = iter(argv)
    for arg in it:
        if arg == "--cpu-features":
            value = next(it, None)
            out.append(arg if value is None else f"{arg}={value}")
        elif arg in _SIZE_OPTIONS and (value := next(it, None)) is not None:
            dash_number = value[:1] == "-" and value[1:2] in tuple("0123456789.")
            out.extend([f"{arg}={value}"] if dash_number else [arg, value])
        else:
            out.append(arg)
    return out


def _build_parser() -> ArgumentParser:
    """The argparse parser of every verb, for what vmm.runargs does not read."""
    # Lazy: argparse (with re, gettext) and building the parsers of every verb cost
    # about 10 ms of each start (python -X importtime and perf_counter around the
    # construction); `keel run` with its usual arguments is read by vmm.runargs.
    from vmm.cli_parser import build_parser

    return build_parser()


def main(argv: Sequence[str] | None = None) -> int:
    argv = _join_dash_values(sys.argv[1:] if argv is None else argv)
    for arg in argv:
        if arg.startswith("--") and arg.endswith("=--"):
            # argparse reads `--opt=--` as an empty list, past the option's type
            # check (`--hang-timeout=--` would be a list, not seconds)
            print(f"keel: error: {arg}: '--' is not a value (see 'keel --help')",
                  file=sys.stderr)  # fmt: skip
            return 2
    args: Any = runargs.parse(argv)
    if args is None:
        args = _build_parser().parse_args(argv)
    try:
        if args.command == "run":
            return cmd_run(args)
        if args.command == "stress":
            return cmd_stress(args)
        if args.command == "restore":
            from vmm.snapshot.cli import cmd_restore  # lazy: see cmd_run

            return cmd_restore(args)
        if args.command == "metrics":
            from vmm.metrics_cli import show  # lazy: see cmd_run

            return show(args.api_sock, args.json, args.watch)
        if args.command == "fuzz":
            # Lazy: vmm.fuzz (re, dataclasses) costs about 8 ms of every start-up
            # (python -X importtime) and only `keel fuzz` needs it.
            from vmm.fuzz import cmd_fuzz

            return cmd_fuzz(args, _guest_files)
        if args.command == "list":
            return cmd_list()
        return cmd_client(args)
    except KeelError as exc:
        sys.stderr.write(f"keel: error: {exc.args[0] if exc.args else exc}\n")
        return STATUS_ERROR
    except KeyboardInterrupt:  # Ctrl-C, SIGTERM or SIGHUP outside a guest's run
        sys.stderr.write("keel: interrupted\n")
        return STATUS_INTERRUPTED


def entry() -> NoReturn:
    """The ``keel`` program: ``main``, then exit without the interpreter's
    finalisation, which would only tear down modules (every device, file and
    TAP is closed by then; it costs about 5 ms of each run)."""
    status = main()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)


if __name__ == "__main__":
    entry()
