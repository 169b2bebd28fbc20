"""Where the time of a ``keel run`` goes: ``keel run --timings`` prints it.

Phases are marked as the run passes them (``mark``: one ``perf_counter``
call, kept whether or not anyone asks); ``report`` prints each phase's
milliseconds.  Python's own start-up (interpreter, ``site``) happens before
any of our code runs, so it is given as the process's CPU time when this
module is first imported, the earliest point we see (start-up is CPU-bound).
"""

from __future__ import annotations

import time

_START = time.perf_counter()
_STARTUP_CPU = time.process_time()
_marks: list[tuple[str, float]] = []


def mark(phase: str) -> None:
    """``phase`` ended now (the first mark of a phase counts)."""
    if not any(name == phase for name, _ in _marks):
        _marks.append((phase, time.perf_counter()))


def phases() -> list[tuple[str, float]]:
    """(phase, seconds) in order, the first being Python's start-up."""
    out = [("python start-up (CPU time before keel's first line)", _STARTUP_CPU)]
    last = _START
    for name, when in _marks:
        out.append((name, when - last))
        last = when
    return out


def report() -> str:
    rows = phases()
    width = max(len(name) for name, _ in rows)
    lines = ["keel: timings (ms)"]
    lines += [f"keel:   {name:<{width}} {secs * 1000:7.1f}" for name, secs in rows]
    total = sum(secs for _, secs in rows)
    lines.append(f"keel:   {'total':<{width}} {total * 1000:7.1f}")
    return "\n".join(lines)
