"""Where the time of a ``keel run`` goes: ``keel run --timings`` prints it.

Phases are marked as the run passes them (``mark``: one ``perf_counter`` and
one ``process_time`` call, kept whether or not anyone asks); ``report`` prints
each phase's wall-clock milliseconds and the CPU time the process used in it
(every thread: a vCPU's time in the guest counts).  The rows add up to the
whole process, from its start to the report:

- Python's start-up (the interpreter, ``site``, the entry script) happens
  before any of our code runs.  The scheduler's own account of this thread
  (``/proc/self/schedstat``: nanoseconds on a CPU and waiting for one since the
  process began) gives it when this module is first imported, the earliest
  point we see; start-up does not sleep (the files it reads are cached), so
  the two add up to its wall-clock time.  Without schedstat, the process's
  CPU time stands in.  (The wait is the scheduler's account: on a loaded
  host it has read a few milliseconds more than the process had lived.)
- After the report, only ``os._exit`` is left: the guest's memory, the VM and
  every device were closed in the last phase.
"""

from __future__ import annotations

import time

_START = time.perf_counter()
_START_CPU = time.process_time()


def _startup() -> tuple[float, float]:
    """(seconds on a CPU, seconds waiting for one) from the process's start to now."""
    try:
        with open("/proc/self/schedstat", "rb") as f:
            on_cpu, waiting = (int(n) / 1e9 for n in f.read().split()[:2])
    except (OSError, ValueError):
        return _START_CPU, 0.0
    return on_cpu, waiting


_STARTUP = _startup()
_marks: list[tuple[str, float, float]] = []


def mark(phase: str) -> None:
    """``phase`` ended now (the first mark of a phase counts)."""
    for name, _, _ in _marks:
        if name == phase:
            return
    _marks.append((phase, time.perf_counter(), time.process_time()))


def phases() -> list[tuple[str, float, float]]:
    """(phase, wall seconds, CPU seconds) in order, the first being Python's start-up."""
    on_cpu, waiting = _STARTUP
    out = [("python start-up (process start to keel's first line)", on_cpu + waiting, on_cpu)]
    last, last_cpu = _START, _START_CPU
    for name, when, cpu in _marks:
        out.append((name, when - last, cpu - last_cpu))
        last, last_cpu = when, cpu
    return out


def report() -> str:
    rows = phases()
    width = max(len(name) for name, _, _ in rows)
    lines = [f"keel: timings {'(ms)':<{width - 6}} {'wall':>7} {'CPU':>7}"]
    lines += [
        f"keel:   {name:<{width}} {secs * 1000:7.1f} {cpu * 1000:7.1f}" for name, secs, cpu in rows
    ]
    total = sum(secs for _, secs, _ in rows)
    total_cpu = sum(cpu for _, _, cpu in rows)
    lines.append(f"keel:   {'total':<{width}} {total * 1000:7.1f} {total_cpu * 1000:7.1f}")
    on_cpu, waiting = _STARTUP
    lines.append(f"keel:   (start-up: {on_cpu * 1000:.1f} ms on a CPU, {waiting * 1000:.1f} ms "
                 "waiting for one; CPU counts every thread, a vCPU's guest time too)")  # fmt: skip
    return "\n".join(lines)
