"""``keel fuzz``: the in-guest kernel-call fuzzer, run and shrunk from the host.

    keel fuzz [--seed N] [--calls M] [--smp K] [--procs P] [--kernel K] [--initrd I]

Boots the kernel with ``keel.test=fuzz`` (userspace/tests/fuzz.c: one fuzz
process per CPU issuing random kernel calls generated from kernel/calls.tbl,
a message workload and a canary beside them) and reports the guest's
verdict.  A run fails when the guest reports a failure, the kernel panics or
the guest hangs (no console output for ``--hang-timeout``).  On a failure it
prints the seed, then shrinks: the same seed with one process, then the
smallest call count that still fails (bisection, re-running the guest), and
shows that run's calls as the process made them; the last line is the
command that reproduces it and the line to add to ``REGRESSIONS`` in
tests/boot/test_fuzz.py to keep it as a test.  With several processes
the interleaving is not reproducible, so the shrunk failure may need more
than one try.

Its exit status follows ``keel --help``: 0 when the run passed; a failure ends
with the first run's status (2 the guest crashed, 3 it reported failure, 4 it
hung); Ctrl-C, SIGTERM or SIGHUP stop the guest and end it with 130.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass

from . import session
from .errors import ConfigError
from .machine import Machine
from .runargs import seconds
from .vcpu_runner import STATUS_GUEST_FAILURE, STATUS_INTERRUPTED

OK_LINE = re.compile(rb"^fuzz: ok .*$", re.MULTILINE)
TRACE_LINE = re.compile(rb"^fuzz: #\d+ .*$", re.MULTILINE)
# Every 10000 calls, with the invariants checked so far: shown as they come.
PROGRESS_LINE = re.compile(rb"fuzz: \d+ calls so far.*")
MAX_CALLS = (1 << 24) - 1  # userspace/tests/fuzz.h: FUZZ_CALL_BITS, per process


@dataclass(frozen=True)
class Outcome:
    ok: bool
    summary: str  # the guest's verdict line, or how the run ended
    console: bytes
    status: int = 0  # how the run ended (vmm.vcpu_runner's STATUS_*)


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("fuzz", help="run the in-guest kernel-call fuzzer")
    p.add_argument("--seed", type=int, default=1, help="the run's seed (default 1)")
    p.add_argument("--calls", type=int, default=2000, help="kernel calls in all (default 2000)")
    p.add_argument("--smp", type=int, default=2, help="vCPUs (default 2)")
    p.add_argument("--procs", type=int, default=None, help="fuzz processes (default: one per CPU)")
    p.add_argument("--memory", "-m", default="256M", help="guest RAM (default: 256M)")
    p.add_argument("--kernel", default=None, help="kernel ELF (default: build/kernel.elf)")
    p.add_argument("--initrd", default=None,
                   help="initrd (default: initrd.cpio beside the kernel)")
    p.add_argument("--hang-timeout", type=seconds, default=120.0, metavar="SECONDS",
                   help="no console output for this long means a hang (default 120)")
    p.add_argument("--no-shrink", action="store_true", help="report a failure without shrinking")
    p.add_argument("--fail-at", type=int, default=0, help=argparse.SUPPRESS)  # tests the shrinking


def run_once(kernel: str, initrd: str, *, seed: int, calls: int, smp: int, procs: int | None,
             memory: str = "256M", hang_timeout: float = 120.0, trace: bool = False,
             fail_at: int = 0, progress: Callable[[str], None] | None = None,
             ) -> Outcome:  # fmt: skip
    """One run; ``progress`` is given each progress line as the guest prints it."""
    parts = ["keel.test=fuzz", f"keel.fuzz.seed={seed}", f"keel.fuzz.calls={calls}"]
    if procs is not None:
        parts.append(f"keel.fuzz.procs={procs}")
    if trace:
        parts.append("keel.fuzz.trace=1")
    if fail_at:
        parts.append(f"keel.fuzz.failat={fail_at}")
    out = bytearray()
    seen = [0]  # where the first line not yet looked at for progress starts

    def console(data: bytes) -> None:
        out.extend(data)
        end = out.rfind(b"\n")
        if progress is None or end < seen[0]:
            return
        for line in bytes(out[seen[0] : end]).splitlines():
            m = PROGRESS_LINE.search(line)
            if m:
                progress(m.group(0).decode(errors="replace").strip())
        seen[0] = end + 1

    machine = Machine(kernel, smp=smp, memory=memory, cmdline=" ".join(parts), initrd=initrd,
                      console=console, hang_timeout=hang_timeout)  # fmt: skip
    try:
        machine.start()
        result = machine.wait_interruptible()
    finally:
        machine.close()
    if result.status == STATUS_INTERRUPTED:
        raise KeyboardInterrupt  # stopped by the person, not a failure found: no shrinking
    text = bytes(out)
    verdict = OK_LINE.search(text)
    if result.status == 0 and verdict:
        return Outcome(True, verdict.group(0).decode(errors="replace"), text)
    fails = [ln for ln in text.splitlines() if b"FAIL" in ln or b"panic" in ln]
    why = fails[0].decode(errors="replace").strip() if fails else result.reason
    # A guest that ended with 0 but printed no verdict did not do what it was asked.
    status = result.status or STATUS_GUEST_FAILURE
    return Outcome(False, f"{why} (status {result.status})", text, status)


def shrink(attempt: Callable[[int, int | None], Outcome], calls: int, procs: int | None,
           say: Callable[[str], None]) -> tuple[int, int | None]:  # fmt: skip
    """The smallest (calls, procs) that still fails, found by re-running:
    one process if that still fails, then bisection on the call count."""
    if procs != 1 and not attempt(calls, 1).ok:
        procs = 1
        say("keel fuzz: still fails with one process")
    lo, hi = 0, calls  # attempt(lo) passes (or is nothing), attempt(hi) fails
    while hi - lo > 1:
        mid = (lo + hi) // 2
        outcome = attempt(mid, procs)
        say(f"keel fuzz: {mid} calls: {'fails' if not outcome.ok else 'passes'}")
        if outcome.ok:
            lo = mid
        else:
            hi = mid
    return hi, procs


def cmd_fuzz(args: argparse.Namespace,
             guest_files: Callable[[str | None, str | None, str], tuple[str, str]],
             say: Callable[[str], None] | None = None) -> int:  # fmt: skip
    """``guest_files(kernel, initrd, verb)``: the kernel and initrd to boot (vmm.cli)."""
    def _say(line: str) -> None:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()

    say = say or _say
    if args.seed < 0 or args.seed >= 1 << 36:
        raise ConfigError(f"--seed must be between 0 and 2^36 - 1, not {args.seed}")
    if not 1 <= args.calls <= MAX_CALLS * 8:
        raise ConfigError(f"--calls must be between 1 and {MAX_CALLS * 8}, not {args.calls}")
    if args.procs is not None and not 1 <= args.procs <= 8:
        raise ConfigError(f"--procs must be between 1 and 8, not {args.procs}")
    kernel, initrd = guest_files(args.kernel, args.initrd, "fuzz")
    session.install_signals()  # SIGTERM and SIGHUP end it as Ctrl-C does

    def attempt(calls: int, procs: int | None, trace: bool = False,
                progress: Callable[[str], None] | None = None) -> Outcome:  # fmt: skip
        return run_once(kernel, initrd, seed=args.seed, calls=calls, smp=args.smp, procs=procs,
                        memory=args.memory, hang_timeout=args.hang_timeout, trace=trace,
                        fail_at=args.fail_at, progress=progress)  # fmt: skip

    say(f"keel fuzz: seed {args.seed}, {args.calls} calls, {args.smp} vCPUs")
    first = attempt(args.calls, args.procs, progress=lambda line: say(f"keel fuzz: {line}"))
    if first.ok:
        say(f"keel fuzz: {first.summary}")
        return 0
    say(f"keel fuzz: FAILED with seed {args.seed}: {first.summary}")
    tail = first.console.decode(errors="replace").splitlines()[-20:]
    for line in tail:
        say(f"  | {line}")
    if args.no_shrink:
        return first.status
    if attempt(args.calls, args.procs).ok:
        say(f"keel fuzz: the failure did not reproduce on a second run with seed {args.seed} "
            "(it depends on timing): keep the output above")  # fmt: skip
        return first.status
    calls, procs = shrink(attempt, args.calls, args.procs, say)
    traced = attempt(calls, procs, trace=True)
    lines = [m.group(0).decode(errors="replace") for m in TRACE_LINE.finditer(traced.console)]
    say(f"keel fuzz: shortest failing run: {calls} calls"
        f"{'' if procs is None else f', {procs} process(es)'}; its calls:")  # fmt: skip
    for line in lines[-60:]:
        say(f"  {line}")
    flags = f" --procs {procs}" if procs is not None else ""
    say(f"keel fuzz: reproduce: keel fuzz --seed {args.seed} --calls {calls} --smp {args.smp}"
        f"{flags}")  # fmt: skip
    say(f"keel fuzz: regression test: add ({args.seed}, {calls}, {args.smp}, {procs}) to "
        "REGRESSIONS in tests/boot/test_fuzz.py")  # fmt: skip
    return first.status
