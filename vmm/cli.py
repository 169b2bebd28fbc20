"""``keel``: the command line, a thin layer over ``vmm.machine.Machine``.

    keel run [KERNEL] [--smp N] [--memory SIZE] [--cmdline STR] [--initrd FILE]
                      [--console FILE] [--api-sock PATH] [--disk IMAGE[,readonly]]...
                      [--net [TAP]] [--rng] [--virtio-console] [--hang-timeout SECONDS]
                      [--serial2 FILE|stdio|none] [--cpu-features [+-]NAME,...]
                      [--timings]
    keel run --show-cpuid [--smp N] [--cpu-features [+-]NAME,...]
    keel stress [--smp N] [--duration SECONDS] [--seed S] [--workloads LIST]
                [--kernel K] [--initrd I] [--hang-timeout SECONDS] [--verbose]
    keel attach --api-sock S disk IMAGE [--readonly] | net [TAP] [--mac M] | rng
                                        | console [--output FILE]
    keel detach --api-sock S ID-or-PATH
    keel devices|status|pause|resume|stop --api-sock S

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

import argparse
import os
import sys
import threading
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

from vmm.boot import cpu_features
from vmm.boot.cpuid import vcpu_cpuid
from vmm.builder import default_smp
from vmm.console import fd_sink
from vmm.devices.registry import KINDS
from vmm.errors import ConfigError, KeelError
from vmm.kvm.system import System, guest_tsc_khz
from vmm.machine import ExitResult, Machine

timings.mark("imports (vmm.cli and what it imports)")
STATUS_USAGE = 2
STATUS_ERROR = 1


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        sys.stderr.write(f"keel: error: {message} (see 'keel --help')\n")
        raise SystemExit(STATUS_USAGE)


def _build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="keel", description="Keel virtual machine monitor (KVM)")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    run = sub.add_parser("run", help="boot a kernel")
    run.add_argument("kernel", nargs="?", default=None,
                     help="kernel ELF with a Xen PVH entry note (default: build/kernel.elf)")
    run.add_argument("--smp", type=int, default=None, help="vCPUs (default: host cores)")
    run.add_argument("--memory", "-m", default="256M", help="guest RAM, e.g. 256M, 2G")
    run.add_argument("--cmdline", default="", help="kernel command line")
    run.add_argument("--initrd", default=None, help="initrd passed as a PVH module")
    run.add_argument("--console", default=None, help="write the serial console to FILE")
    run.add_argument("--api-sock", default=None, metavar="PATH",
                     help="serve the JSON control API on this Unix socket (mode 0600)")
    for kind in KINDS.values():
        run.add_argument(kind.run_flag.flag, dest=kind.run_flag.dest, **kind.run_flag.argparse)
    run.add_argument("--hang-timeout", type=float, default=None, metavar="SECONDS",
                     help="stop a guest silent on the console this long, with a diagnostic")
    run.add_argument("--timings", action="store_true",
                     help="print where the run's time went (start-up, set-up, guest) on stderr")
    run.add_argument("--cpu-features", default=None, metavar="[+-]NAME,...",
                     help="add or remove CPU features the guest sees, e.g. -cx16,-avx "
                          "(after the host's own limits; see --show-cpuid)")
    run.add_argument("--show-cpuid", action="store_true",
                     help="print the CPUID the guest would see and exit")
    run.add_argument("--serial2", default="none", metavar="FILE|stdio|none",
                     help="a second 16550 (COM2) writing to FILE or to stdout (stdio: "
                          "stdin types on COM2); default none")

    stress = sub.add_parser("stress", help="run the in-guest SMP stress workload")
    stress.add_argument("--smp", type=int, default=None, help="vCPUs (default: host cores)")
    stress.add_argument("--duration", type=int, default=10, metavar="SECONDS",
                        help="how long the workloads run (default 10)")
    stress.add_argument("--seed", type=int, default=1, help="seed of the guest's PRNG")
    stress.add_argument("--workloads", default=None, metavar="LIST",
                        help="comma-separated subset of ipc,storm,caps,map,churn,rpc")
    stress.add_argument("--memory", "-m", default="256M", help="guest RAM")
    stress.add_argument("--kernel", default=None, help="kernel ELF (default: build/kernel.elf)")
    stress.add_argument("--initrd", default=None, help="initrd (default: build/initrd.cpio)")
    stress.add_argument("--hang-timeout", type=float, default=30.0, metavar="SECONDS",
                        help="no console output for this long means a hang (default 30)")
    stress.add_argument("--verbose", "-v", action="store_true",
                        help="show the whole console, not only the stress lines")

    def client(name: str, help: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help)
        p.add_argument("--api-sock", required=True, metavar="PATH", help="the VMM's API socket")
        return p

    attach = client("attach", "attach a device to a running VMM")
    kinds = attach.add_subparsers(dest="kind", required=True, parser_class=_Parser)
    for kind in KINDS.values():
        p = kinds.add_parser(kind.name, help=kind.help)
        for opt in kind.options:
            extra: dict[str, Any] = {"help": opt.help}
            if opt.metavar is not None:
                extra["metavar"] = opt.metavar
            if opt.positional:
                p.add_argument(opt.name, nargs=None if opt.required else "?", **extra)
            elif opt.type is bool:
                p.add_argument(f"--{opt.name}", action="store_true", **extra)
            else:
                p.add_argument(f"--{opt.name}", default=None, **extra)
    detach = client("detach", "detach a device (by id or backing path)")
    detach.add_argument("device", metavar="ID-or-PATH")
    client("devices", "list the attached devices")
    client("status", "show the machine's state")
    client("pause", "pause every vCPU")
    client("resume", "resume a paused machine")
    client("stop", "stop the machine")
    return parser


def _console_sink(path: str | None, what: str = "console file") -> Callable[[bytes], None]:
    if path is None:
        fd = sys.stdout.fileno()
    else:
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise ConfigError(f"cannot open {what} {path!r}: {exc.strerror}") from None
    return fd_sink(fd)


def _forward_stdin(send: Callable[[bytes], int]) -> None:
    """Feed the terminal (or a pipe) to the guest's serial console."""

    def pump() -> None:
        try:
            fd = sys.stdin.fileno()
        except (AttributeError, ValueError, OSError):
            return
        while True:
            try:
                data = os.read(fd, 4096)
            except OSError:
                return
            if not data:
                return
            send(data.replace(b"\n", b"\r") if os.isatty(fd) else data)

    threading.Thread(target=pump, name="stdin", daemon=True).start()


def _default_kernel() -> tuple[str, str | None]:
    """build/kernel.elf (and build/initrd.cpio when present) of this source tree."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    for build in (os.path.join(root, "build"), "build"):
        kernel = os.path.join(build, "kernel.elf")
        if os.path.exists(kernel):
            initrd = os.path.join(build, "initrd.cpio")
            return kernel, initrd if os.path.exists(initrd) else None
    raise ConfigError("no kernel given and build/kernel.elf does not exist: run 'make'")


def _report(result: ExitResult) -> None:
    """How a guest that did not succeed ended: the crash diagnostic, or its reason."""
    if result.diagnostic:
        sys.stderr.write(result.diagnostic + "\n")
    elif result.status != 0:
        sys.stderr.write(f"keel: {result.reason}\n")


def cmd_show_cpuid(args: argparse.Namespace) -> int:
    """The CPUID table of vCPU 0 and the features removed from KVM's, without booting."""
    features = cpu_features.parse_feature_list(args.cpu_features or "")
    smp = default_smp() if args.smp is None else args.smp
    with System() as system:
        policy = cpu_features.guest_cpuid(
            system.supported_cpuid(), cpu_features.host_kind(), features
        )
    table = vcpu_cpuid(policy.entries, 0, smp, guest_tsc_khz())
    print(f"host KVM: {cpu_features.host_kind()}; {smp} vCPUs")
    print(cpu_features.describe(table, policy.removed))
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    if args.show_cpuid:
        return cmd_show_cpuid(args)
    kernel, initrd = args.kernel, args.initrd
    if kernel is None:
        kernel, default_initrd = _default_kernel()
        initrd = initrd or default_initrd
    serial2 = args.serial2 != "none"
    serial2_sink = None
    if serial2:
        serial2_sink = _console_sink(None if args.serial2 == "stdio" else args.serial2,
                                     "--serial2 file")
    timings.mark("arguments parsed")
    machine = Machine(
        kernel,
        smp=args.smp,
        memory=args.memory,
        cmdline=args.cmdline,
        initrd=initrd,
        console=_console_sink(args.console),
        hang_timeout=args.hang_timeout,
        serial2=serial2,
        serial2_output=serial2_sink,
        cpu_features=args.cpu_features,
    )
    server = None
    try:
        for kind in KINDS.values():
            for options in kind.run_flag.requests(getattr(args, kind.run_flag.dest)):
                machine.attach(kind.name, **options)
        if args.api_sock:
            # Lazy, as in cmd_client: vmm.api (socket, json) costs about 4 ms of start-up
            # (python -X importtime) that a `keel run` without --api-sock need not pay.
            from vmm.api import ApiServer

            server = ApiServer(machine, args.api_sock)
        timings.mark("devices attached")
        machine.start()
        _forward_stdin(machine.send_serial2 if args.serial2 == "stdio" else machine.send_console)
        result = machine.wait_interruptible()
    finally:
        if server is not None:
            server.close()
        machine.close()
        timings.mark("tear-down")
    assert result is not None
    _report(result)
    if args.timings:
        sys.stderr.write(timings.report() + "\n")
    return result.status


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


def _say(data: bytes) -> None:
    """Write to stdout; a closed pipe or terminal must not stop the guest."""
    try:
        os.write(sys.stdout.fileno(), data)
    except (OSError, ValueError):
        pass


def cmd_stress(args: argparse.Namespace) -> int:
    if args.duration < 1:
        raise ConfigError(f"--duration must be at least 1 second, not {args.duration}")
    if args.seed < 0:
        raise ConfigError(f"--seed must not be negative, not {args.seed}")
    kernel, initrd = args.kernel, args.initrd
    if kernel is None:
        kernel, default_initrd = _default_kernel()
        initrd = initrd or default_initrd
    if initrd is None:
        raise ConfigError("keel stress needs an initrd: build/initrd.cpio is missing (run 'make')")
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
    try:
        machine.start()
        result = machine.wait_interruptible()
    finally:
        machine.close()
    assert result is not None
    _report(result)
    verdict = "passed" if result.status == 0 else f"FAILED (status {result.status})"
    _say(f"keel stress: {verdict}\n".encode())
    return result.status


def _client_request(args: argparse.Namespace) -> dict[str, object]:
    if args.command == "attach":
        req: dict[str, object] = {"cmd": "attach", "kind": args.kind}
        for opt in KINDS[args.kind].options:
            value = getattr(args, opt.name)
            req[opt.name] = os.path.abspath(value) if opt.path and value else value
        return req
    if args.command == "detach":
        ident = args.device
        if os.sep in ident or os.path.exists(ident):
            ident = os.path.abspath(ident)
        return {"cmd": "detach", "id": ident}
    return {"cmd": args.command}


def _dma_column(device: dict[str, object]) -> str:
    """"open" (no IOMMU enforcement), or "<windows>win/<refused accesses>fault"."""
    if not device.get("dma_enforcing"):
        return "open"
    return f"{device.get('dma_windows', 0)}win/{device.get('dma_faults', 0)}fault"


def cmd_client(args: argparse.Namespace) -> int:
    """One request to a running VMM's control socket; prints the answer."""
    from vmm.api import request  # lazy: see cmd_run

    result = request(args.api_sock, _client_request(args))
    if args.command == "attach":
        print(result["id"])
    elif args.command == "devices":
        print(f"{'ID':<10} {'KIND':<8} {'SLOT':<4} {'STATE':<11} {'DMA':<16} BACKING")
        for d in result:
            print(f"{d['id']:<10} {d['kind']:<8} {d['slot']:<4} {d['state']:<11} "
                  f"{_dma_column(d):<16} {d['backing']}")  # fmt: skip
    elif args.command == "status":
        print(" ".join(f"{k}={v}" for k, v in result.items()))
    return 0


def _join_feature_lists(argv: Sequence[str]) -> list[str]:
    """``--cpu-features -cx16`` as ``--cpu-features=-cx16``: argparse would take a value
    starting with '-' for an option of its own."""
    out: list[str] = []
    it = iter(argv)
    for arg in it:
        if arg == "--cpu-features":
            value = next(it, None)
            out.append(arg if value is None else f"{arg}={value}")
        else:
            out.append(arg)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = _build_parser().parse_args(_join_feature_lists(argv))
    try:
        if args.command == "run":
            return cmd_run(args)
        if args.command == "stress":
            return cmd_stress(args)
        return cmd_client(args)
    except KeelError as exc:
        sys.stderr.write(f"keel: error: {exc.args[0] if exc.args else exc}\n")
        return STATUS_ERROR
    except KeyboardInterrupt:
        return 130
    return STATUS_USAGE


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
