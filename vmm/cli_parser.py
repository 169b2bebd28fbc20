"""The argparse parser of every ``keel`` verb (vmm/cli.py uses it).

``keel run`` with its usual arguments does not come here: vmm.runargs reads
them without argparse, which with this parser's construction costs about
10 ms of each start (see vmm/cli.py, ``main``).  Everything else -
``--help``, other verbs, abbreviations, errors - is parsed here.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any, NoReturn

from vmm import __version__
from vmm.cli import STATUS_ERROR, STATUS_USAGE, STRESS_WORKLOADS
from vmm.devices.registry import KINDS
from vmm.fuzz import add_parser as add_fuzz_parser
from vmm.runargs import seconds
from vmm.vcpu_runner import (
    STATUS_GUEST_CRASH,
    STATUS_GUEST_FAILURE,
    STATUS_HANG,
    STATUS_INTERRUPTED,
)

EXIT_STATUSES = f"""exit status:
  0    success (the guest reported success, or a request was done)
  {STATUS_ERROR}    bad input or usage (one 'keel: error:' line)
  {STATUS_GUEST_CRASH}    the guest crashed (triple fault, KVM error): a diagnostic on stderr
  {STATUS_GUEST_FAILURE}    the guest reported failure (the exit device, value other than 0x10)
  {STATUS_HANG}    the guest hung (--hang-timeout): a diagnostic on stderr
  {STATUS_INTERRUPTED}  interrupted (Ctrl-C, SIGINT, SIGTERM, SIGHUP)"""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        sys.stderr.write(f"keel: error: {message} (see 'keel --help')\n")
        raise SystemExit(STATUS_USAGE)


def _api_sock_option(p: argparse.ArgumentParser) -> None:
    """--api-sock on a client verb and on its sub-verbs: accepted anywhere."""
    p.add_argument("--api-sock", default=argparse.SUPPRESS, metavar="PATH",
                   help="the VMM's API socket (required)")  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="keel", description="Keel virtual machine monitor (KVM)",
                     epilog=EXIT_STATUSES, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"keel {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    run = sub.add_parser("run", help="boot a kernel", epilog=EXIT_STATUSES,
                         formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    run.add_argument("kernel", nargs="?", default=None,
                     help="kernel ELF with a Xen PVH entry note (default: build/kernel.elf)")
    run.add_argument("--smp", type=int, default=None, help="vCPUs (default: host cores)")
    run.add_argument("--memory", "-m", default="256M",
                     help="guest RAM: MiB, or with a K, M, G or T suffix, e.g. 512, 1.5G "
                          "(default: 256M)")  # fmt: skip
    run.add_argument("--cmdline", default="", help="kernel command line (default: empty)")
    run.add_argument("--initrd", default=None,
                     help="initrd passed as a PVH module (default: build/initrd.cpio when "
                          "KERNEL is not given, else none)")  # fmt: skip
    run.add_argument("--console", default=None, metavar="FILE",
                     help="write the serial console to FILE (default: standard output)")
    run.add_argument("--api-sock", default=None, metavar="PATH",
                     help="serve the JSON control API on this Unix socket (mode 0600; "
                          "default: none)")  # fmt: skip
    run.add_argument("--daemon", action="store_true",
                     help="detach from the terminal once the API socket is up (needs "
                          "--api-sock; 'keel console' attaches to the serial console)")
    run.add_argument("--log", default=None, metavar="FILE",
                     help="with --daemon: where the VMM's messages go (default: discarded)")
    for kind in KINDS.values():
        run.add_argument(kind.run_flag.flag, dest=kind.run_flag.dest, **kind.run_flag.argparse)
    run.add_argument("--hang-timeout", type=seconds, default=None, metavar="SECONDS",
                     help="stop a guest silent on the console this long, with a diagnostic "
                          "(default: never)")
    run.add_argument("--timings", action="store_true",
                     help="print where the run's time went (start-up, set-up, guest) on stderr")
    run.add_argument("--cpu-features", default=None, metavar="[+-]NAME,...",
                     help="add or remove CPU features the guest sees, e.g. -cx16,-avx "
                          "(after the host's own limits; see --show-cpuid; default: none)")
    run.add_argument("--show-cpuid", action="store_true",
                     help="print the CPUID the guest would see and exit")
    run.add_argument("--serial2", default="none", metavar="FILE|stdio|none",
                     help="a second 16550 (COM2) writing to FILE or to stdout (stdio: "
                          "stdin types on COM2); default none")
    run.add_argument("--gdb", default=None, metavar="tcp:HOST:PORT|unix:PATH",
                     help="start the guest stopped and serve gdb's remote protocol there "
                          "(default: no gdb stub)")
    run.add_argument("--metrics-file", default=None, metavar="PATH",
                     help="write the metrics as JSON to PATH every second (and at the end; "
                          "default: none)")

    stress = sub.add_parser("stress", help="run the in-guest SMP stress workload")
    stress.add_argument("--smp", type=int, default=None, help="vCPUs (default: host cores)")
    stress.add_argument("--duration", type=int, default=10, metavar="SECONDS",
                        help="how long the workloads run (default 10)")
    stress.add_argument("--seed", type=int, default=1, help="seed of the guest's PRNG (default 1)")
    stress.add_argument("--workloads", default=None, metavar="LIST",
                        help=f"comma-separated subset of {','.join(STRESS_WORKLOADS)} "
                             "(default: all but calls)")  # fmt: skip
    stress.add_argument("--memory", "-m", default="256M", help="guest RAM (default: 256M)")
    stress.add_argument("--kernel", default=None, help="kernel ELF (default: build/kernel.elf)")
    stress.add_argument("--initrd", default=None,
                        help="initrd (default: initrd.cpio beside the kernel)")
    stress.add_argument("--hang-timeout", type=seconds, default=30.0, metavar="SECONDS",
                        help="no console output for this long means a hang (default 30)")
    stress.add_argument("--verbose", "-v", action="store_true",
                        help="show the whole console, not only the stress lines")

    add_fuzz_parser(sub)

    def client(name: str, help: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help)
        _api_sock_option(p)
        return p

    attach = client("attach", "attach a device to a running VMM")
    kinds = attach.add_subparsers(dest="kind", required=True, parser_class=_Parser)
    for kind in KINDS.values():
        p = kinds.add_parser(kind.name, help=kind.help)
        _api_sock_option(p)
        p.add_argument("--wait", action="store_true",
                       help="return once the guest bound a driver (default: at once)")
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
    detach.add_argument("--force", action="store_true",
                        help="remove it at once, whatever the guest is doing with it")
    detach.add_argument("--no-wait", action="store_true",
                        help="do not wait for the guest to release it (default: wait)")
    detach.add_argument("--timeout", type=float, default=30.0, metavar="SECONDS",
                        help="how long to wait for the guest (default 30)")
    client("devices", "list the attached devices")
    client("status", "show the machine's state")
    client("pause", "pause every vCPU")
    client("resume", "resume a paused machine")
    client("stop", "stop the machine")
    client("version", "the VMM's version and protocol")
    client("events", "print the VMM's events, one JSON line each, until it stops")
    client("console", "attach the terminal to the serial console (Ctrl-] detaches)")
    sub.add_parser("list", help="the running VMMs with a control socket")
    snap = client("snapshot", "save the running guest to a directory")
    snap.add_argument("dir", metavar="DIR", help="a new (or empty) directory")
    snap.add_argument("--stop", action="store_true", help="leave the guest paused afterwards")
    restore = sub.add_parser("restore", help="continue a guest from a snapshot")
    restore.add_argument("dir", metavar="DIR", help="a directory made by keel snapshot")
    restore.add_argument("--api-sock", default=None, metavar="PATH",
                         help="serve the JSON control API on this Unix socket (default: none)")
    restore.add_argument("--console", default=None, metavar="FILE",
                         help="write the serial console to FILE (default: standard output)")
    restore.add_argument("--smp", type=int, default=None, metavar="N",
                         help="refuse the snapshot unless it has this many vCPUs "
                              "(default: any)")
    restore.add_argument("--verify", action="store_true",
                         help="check the memory file's checksum too (reads all of it)")
    restore.add_argument("--metrics-file", default=None, metavar="PATH",
                         help="write the metrics as JSON to PATH every second (default: none)")
    restore.add_argument("--hang-timeout", type=seconds, default=None, metavar="SECONDS",
                         help="stop a guest silent on the console this long (default: never)")
    metrics = client("metrics", "show the VMM's counters (exits, devices, interrupts)")
    metrics.add_argument("--json", action="store_true", help="print the JSON answer")
    metrics.add_argument("--watch", type=float, nargs="?", const=1.0, default=None,
                         metavar="SECONDS", help="refresh every SECONDS (default 1), like top")
    return parser
