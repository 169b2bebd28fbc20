"""``keel run``'s usual arguments read without argparse.

Importing argparse (with re and gettext) and building the parser of every
verb cost about 10 ms of each `keel run` (python -X importtime, and
perf_counter around the construction), as much as the guest's own boot.
``parse`` reads the arguments of ``keel run`` when they are all spelled the
plain way - an option's full name, its value after a space or an ``=``, at
most one kernel - into the same namespace argparse would make.  Anything else
(``--help``, another verb, an abbreviation, a value starting with '-', a
value that is not a number, ``--net``'s optional value, a second positional)
returns None and goes to the argparse parser (vmm.cli_parser), which reads it
or says what is wrong.  tests/unit/test_runargs.py checks that both give the
same namespace.
"""

from __future__ import annotations

from types import SimpleNamespace

from vmm.devices.registry import KINDS

TYPE_CHECKING = False  # typing costs about 3 ms of start-up (python -X importtime)
if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

def seconds(text: str) -> float:
    """A time limit in seconds: a positive, finite number (argparse's type too)."""
    value = float(text)
    if not 0 < value < float("inf"):  # also false for nan
        raise ValueError(f"not a positive, finite number of seconds: {text!r}")
    return value


# option -> (dest, type or None for a string); the defaults are argparse's (vmm.cli_parser)
VALUES: dict[str, tuple[str, Callable[[str], object] | None]] = {
    "--smp": ("smp", int),
    "--memory": ("memory", None),
    "-m": ("memory", None),
    "--cmdline": ("cmdline", None),
    "--initrd": ("initrd", None),
    "--console": ("console", None),
    "--api-sock": ("api_sock", None),
    "--log": ("log", None),
    "--hang-timeout": ("hang_timeout", seconds),
    "--cpu-features": ("cpu_features", None),
    "--serial2": ("serial2", None),
    "--gdb": ("gdb", None),
    "--metrics-file": ("metrics_file", None),
}
FLAGS = {"--daemon": "daemon", "--timings": "timings", "--show-cpuid": "show_cpuid"}
DEFAULTS: dict[str, object] = {
    "kernel": None, "smp": None, "memory": "256M", "cmdline": "", "initrd": None,
    "console": None, "api_sock": None, "daemon": False, "log": None, "hang_timeout": None,
    "timings": False, "cpu_features": None, "show_cpuid": False, "serial2": "none",
    "gdb": None, "metrics_file": None,
}  # fmt: skip


def _device_flags() -> tuple[dict[str, str], dict[str, str], dict[str, object]]:
    """The registry's `keel run` device flags this module reads: (repeatable flags,
    on/off flags, their defaults); any other spelling goes to argparse."""
    appends: dict[str, str] = {}
    switches: dict[str, str] = {}
    defaults: dict[str, object] = {}
    for kind in KINDS.values():
        flag = kind.run_flag
        action = flag.argparse.get("action")
        if action == "append" and flag.argparse.get("default") == []:
            appends[flag.flag] = flag.dest
        elif action == "store_true":
            switches[flag.flag] = flag.dest
        else:
            continue  # e.g. --net [TAP]: its optional value is argparse's to read
        defaults[flag.dest] = [] if action == "append" else False
    return appends, switches, defaults


APPENDS, SWITCHES, DEVICE_DEFAULTS = _device_flags()
OTHER_DEVICE_DESTS = {
    k.run_flag.dest: k.run_flag.argparse.get("default")
    for k in KINDS.values()
    if k.run_flag.dest not in DEVICE_DEFAULTS
}


def parse(argv: Sequence[str]) -> SimpleNamespace | None:
    """``argv`` (after the program name) as argparse would read it, or None."""
    if not argv or argv[0] != "run":
        return None
    out: dict[str, object] = {"command": "run", **DEFAULTS, **OTHER_DEVICE_DESTS}
    out.update({dest: [] if v == [] else v for dest, v in DEVICE_DEFAULTS.items()})  # fresh lists
    positional = False
    i = 1
    while i < len(argv):
        arg = argv[i]
        i += 1
        if not arg.startswith("-"):
            if positional:
                return None
            out["kernel"], positional = arg, True
            continue
        name, eq, value = arg.partition("=") if arg.startswith("--") else (arg, "", "")
        if name in FLAGS or name in SWITCHES:
            if eq:
                return None
            out[FLAGS.get(name) or SWITCHES[name]] = True
            continue
        if name not in VALUES and name not in APPENDS:
            return None
        if not eq:
            if i >= len(argv) or argv[i].startswith("-"):
                return None
            value = argv[i]
            i += 1
        if value == "--":
            return None  # argparse reads it as an empty list; vmm.cli refuses it
        if name in APPENDS:
            seen = out[APPENDS[name]]
            assert isinstance(seen, list)
            seen.append(value)
            continue
        dest, convert = VALUES[name]
        if convert is not None:
            try:
                out[dest] = convert(value)
            except ValueError:
                return None
        else:
            out[dest] = value
    return SimpleNamespace(**out)
