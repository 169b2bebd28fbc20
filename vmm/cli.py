"""``keel``: the command line, a thin layer over ``vmm.machine.Machine``.

    keel run KERNEL [--smp N] [--memory SIZE] [--cmdline STR] [--initrd FILE]
                    [--console FILE]

Bad input is one line on stderr and a non-zero status, never a traceback.
Imports stay lazy: ``keel run`` start-up time is part of the boot benchmark.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
from collections.abc import Callable, Sequence
from typing import NoReturn

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
    run.add_argument("kernel", help="kernel ELF with a Xen PVH entry note")
    run.add_argument("--smp", type=int, default=None, help="vCPUs (default: host cores)")
    run.add_argument("--memory", "-m", default="256M", help="guest RAM, e.g. 256M, 2G")
    run.add_argument("--cmdline", default="", help="kernel command line")
    run.add_argument("--initrd", default=None, help="initrd passed as a PVH module")
    run.add_argument("--console", default=None, help="write the serial console to FILE")
    return parser


def _console_sink(path: str | None) -> Callable[[bytes], None]:
    if path is None:
        fd = sys.stdout.fileno()
    else:
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            from vmm.errors import ConfigError

            raise ConfigError(f"cannot open console file {path!r}: {exc.strerror}") from None

    def sink(data: bytes) -> None:
        try:
            os.write(fd, data)
        except OSError:
            pass  # a closed terminal must not stop the guest

    return sink


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


def cmd_run(args: argparse.Namespace) -> int:
    from vmm.machine import Machine

    machine = Machine(
        args.kernel,
        smp=args.smp,
        memory=args.memory,
        cmdline=args.cmdline,
        initrd=args.initrd,
        console=_console_sink(args.console),
    )
    machine.start()
    _forward_stdin(machine.send_console)
    try:
        result = machine.wait()
    except KeyboardInterrupt:
        from vmm.machine import STATUS_INTERRUPTED, ExitResult

        machine.stop(ExitResult(STATUS_INTERRUPTED, "interrupted"))
        result = machine.wait()
    assert result is not None
    if result.diagnostic:
        sys.stderr.write(result.diagnostic + "\n")
    elif result.status != 0:
        sys.stderr.write(f"keel: {result.reason}\n")
    return result.status


def main(argv: Sequence[str] | None = None) -> int:
    args = _build_parser().parse_args(argv)
    from vmm.errors import KeelError

    try:
        if args.command == "run":
            return cmd_run(args)
    except KeelError as exc:
        sys.stderr.write(f"keel: error: {exc.args[0] if exc.args else exc}\n")
        return STATUS_ERROR
    except KeyboardInterrupt:
        return 130
    return STATUS_USAGE


if __name__ == "__main__":
    raise SystemExit(main())
