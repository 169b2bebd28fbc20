"""``keel restore DIR``: continue a guest from a snapshot in this process."""

from __future__ import annotations

import argparse
import os
import sys
import time

from vmm import session, snapshot
from vmm.cli import _console_sink, _report


def cmd_restore(args: argparse.Namespace) -> int:
    started = time.monotonic()
    snap = snapshot.load(args.dir, verify=args.verify, smp=args.smp)
    machine = snapshot.restore(snap, console=_console_sink(args.console),
                               hang_timeout=args.hang_timeout)  # fmt: skip
    server = metrics_file = None
    try:
        if args.metrics_file:
            from vmm.metrics_cli import MetricsFile  # lazy, as in vmm.cli.cmd_run

            metrics_file = MetricsFile(machine, args.metrics_file)
        machine.start()
        if os.environ.get("KEEL_RESTORE_TIME"):
            ms = (time.monotonic() - started) * 1000
            sys.stderr.write(f"keel: restore: guest running {ms:.1f} ms after the request\n")
        if args.api_sock:
            # Once the guest runs: a device attached now is announced to it.
            from vmm.api import ApiServer  # lazy, as in vmm.cli.cmd_run

            server = ApiServer(machine, args.api_sock)
        if metrics_file is not None:
            metrics_file.start()
        session.forward_stdin(machine.send_console)
        result = machine.wait_interruptible()
    finally:
        if metrics_file is not None:
            metrics_file.close()
        if server is not None:
            server.close()
        machine.close()
    _report(result)
    return result.status
