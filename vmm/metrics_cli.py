"""``keel metrics`` and ``keel run --metrics-file``: the counters of vmm.metrics
for people and for other programs.

    keel metrics --api-sock S            # a table
    keel metrics --api-sock S --json     # the control socket's answer, as JSON
    keel metrics --api-sock S --watch 1  # the table again every second, like top

``MetricsFile`` writes the same JSON to a file every ``interval`` seconds
(and once more when the guest ends), replacing it atomically, so a reader
never sees half a report (Firecracker's metrics file, as one object).
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import threading
import time
from typing import TYPE_CHECKING

from vmm import api
from vmm.errors import ConfigError
from vmm.metrics import format_table

if TYPE_CHECKING:
    from vmm.machine import Machine

CLEAR = "\x1b[H\x1b[2J"


def show(api_sock: str, as_json: bool, watch: float | None) -> int:
    """Print the metrics of the VMM at ``api_sock`` once, or every ``watch`` seconds
    until interrupted or until the VMM goes away."""
    if watch is not None and watch <= 0:
        raise ConfigError(f"--watch needs a positive interval, not {watch}")
    first = True
    while True:
        try:
            result = api.request(api_sock, {"cmd": "metrics"})
        except api.ApiError:
            if first:
                raise
            return 0  # the VMM ended while watched
        first = False
        text = json.dumps(result, indent=None if watch else 2) if as_json else format_table(result)
        if watch is not None and not as_json and sys.stdout.isatty():
            text = CLEAR + text
        print(text, flush=True)
        if watch is None:
            return 0
        time.sleep(watch)


class MetricsFile:
    """Writes ``machine.metrics()`` as JSON to ``path`` every ``interval`` seconds."""

    def __init__(self, machine: Machine, path: str, interval: float = 1.0) -> None:
        if interval <= 0:
            raise ConfigError(f"metrics interval must be positive, not {interval}")
        self.machine = machine
        self.path = os.path.abspath(path)
        self.interval = interval
        self._stop = threading.Event()
        directory = os.path.dirname(self.path)
        if not os.path.isdir(directory):
            raise ConfigError(f"cannot write metrics file {path!r}: no directory {directory!r}")
        self._thread = threading.Thread(target=self._loop, name="metrics-file", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self.write()

    def write(self) -> None:
        temp = f"{self.path}.{os.getpid()}.tmp"
        try:
            with open(temp, "w") as f:
                json.dump(self.machine.metrics(), f)
                f.write("\n")
            os.replace(temp, self.path)
        except OSError as exc:
            sys.stderr.write(f"keel: cannot write metrics file {self.path!r}: {exc.strerror}\n")
            with contextlib.suppress(OSError):
                os.unlink(temp)

    def close(self) -> None:
        """Stop the writer and write the final figures."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(5)
        self.write()
