"""Every device kind a user can attach: its factory, its options, its `keel run` flag.

One entry per kind in ``KINDS`` is all the VMM's front ends know of a kind:
``Machine.attach`` (and so the control socket's ``attach``) checks a request's
options against ``options`` and calls ``create``; ``keel run`` adds
``run_flag`` and turns its value into attach requests; ``keel attach KIND``
builds its arguments from ``options``.  A new kind is its device file (the
model and a ``create`` factory) plus one entry here.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from vmm.devices.virtio.device import VirtioDevice
from vmm.errors import ConfigError

TYPE_CHECKING = False  # typing costs ~4 ms of each start (vmm/records.py)
if TYPE_CHECKING:
    from typing import Any

# Plain classes, not dataclasses: every `keel run` imports this module, and the
# three dataclasses cost about 3 ms of start-up (python -X importtime).


class Option:
    """One keyword argument of ``create``; a str option may be None unless required.

    ``name`` is the keyword, the JSON key and the `keel attach` argument; ``type``
    is str or bool (a bool option defaults to False); a ``positional`` option is
    `keel attach KIND VALUE` rather than `--name VALUE`; a ``path`` is a host path
    that `keel attach` sends absolute."""

    def __init__(
        self,
        name: str,
        type: type,
        help: str | None = None,
        *,
        required: bool = False,
        positional: bool = False,
        metavar: str | None = None,
        path: bool = False,
    ) -> None:
        self.name, self.type, self.help = name, type, help
        self.required, self.positional, self.metavar, self.path = (
            required, positional, metavar, path,
        )  # fmt: skip


class RunFlag:
    """How `keel run` spells the kind: ``argparse`` are add_argument's keywords;
    ``requests`` turns the parsed value into the options of each device to attach."""

    def __init__(
        self,
        flag: str,
        requests: Callable[[Any], list[dict[str, Any]]],
        argparse: dict[str, Any],
    ) -> None:
        self.flag, self.requests, self.argparse = flag, requests, argparse
        self.dest = "device_" + flag.lstrip("-").replace("-", "_")


class DeviceKind:
    def __init__(
        self,
        name: str,
        help: str,
        create: Callable[..., VirtioDevice],
        options: tuple[Option, ...],
        run_flag: RunFlag,
    ) -> None:
        self.name, self.help, self.create = name, help, create
        self.options, self.run_flag = options, run_flag

    def parse(self, given: Mapping[str, Any]) -> dict[str, Any]:
        """Check the options of one attach request and fill in the defaults."""
        known = {o.name for o in self.options}
        for name in given:
            if name not in known:
                raise ConfigError(f"{self.name}: unknown option {name!r}")
        options: dict[str, Any] = {}
        for opt in self.options:
            value = given.get(opt.name)
            if value is None:
                if opt.required:
                    raise ConfigError(f"missing argument {opt.name!r}")
                options[opt.name] = False if opt.type is bool else None
                continue
            if not isinstance(value, opt.type) or (opt.type is int and isinstance(value, bool)):
                raise ConfigError(f"argument {opt.name!r} must be a {opt.type.__name__}")
            options[opt.name] = value
        return options


def split_disk_spec(spec: str) -> tuple[str, str]:
    """``IMAGE[,readonly]``: a comma in IMAGE is written twice (as QEMU does)."""
    path, i = [], 0
    while i < len(spec):
        if spec.startswith(",,", i):
            path.append(",")
            i += 2
        elif spec[i] == ",":
            return "".join(path), spec[i + 1 :]
        else:
            path.append(spec[i])
            i += 1
    return "".join(path), ""


def _model(module: str, name: str) -> Callable[..., VirtioDevice]:
    """The factory ``name`` of ``vmm.devices.virtio.<module>``, imported when the kind's
    first device is made: every `keel run` imports this registry, and the four device
    modules (with binascii) cost about 1 ms of its start-up (python -X importtime)."""

    def create(**options: Any) -> VirtioDevice:
        # Lazy: see above.
        found = __import__(f"vmm.devices.virtio.{module}", fromlist=[name])
        factory: Callable[..., VirtioDevice] = getattr(found, name)
        return factory(**options)

    return create


def _disk_requests(specs: list[str]) -> list[dict[str, Any]]:
    requests = []
    for spec in specs:
        path, opt = split_disk_spec(spec)
        if opt not in ("", "readonly", "ro"):
            raise ConfigError(
                f"bad --disk option {opt!r}: expected IMAGE[,readonly] "
                "(a comma in IMAGE is written ',,')"
            )
        requests.append({"path": path, "readonly": bool(opt)})
    return requests


KINDS: dict[str, DeviceKind] = {
    kind.name: kind
    for kind in (
        DeviceKind(
            "disk", "a virtio-blk disk", _model("blk", "BlockDevice"),
            (Option("path", str, "the disk image file", required=True, positional=True,
                    metavar="image", path=True),
             Option("readonly", bool, "attach it read-only (default: writable)")),
            RunFlag("--disk", _disk_requests,
                    dict(action="append", default=[], metavar="IMAGE[,readonly]",
                         help="a virtio-blk disk backed by IMAGE (repeatable; a comma "
                              "in IMAGE is written ',,'; default: none)")),
        ),
        DeviceKind(
            "net", "a virtio-net device on a TAP interface", _model("net", "create"),
            (Option("tap", str, "the TAP interface (default: a new keeltapN, removed at exit)",
                    positional=True),
             Option("mac", str, "the device's MAC address (default: derived from the TAP "
                                "name)")),
            RunFlag("--net", lambda tap: [] if tap is None else [{"tap": tap or None}],
                    dict(nargs="?", const="", default=None, metavar="TAP",
                         help="a virtio-net device on TAP (created when missing; "
                              "default: none)")),
        ),
        DeviceKind(
            "rng", "a virtio-rng device", _model("rng", "RngDevice"), (),
            RunFlag("--rng", lambda on: [{}] if on else [],
                    dict(action="store_true", help="a virtio-rng device (default: none)")),
        ),
        DeviceKind(
            "console", "a virtio-console device", _model("console", "create"),
            (Option("output", str, help="append the console's output to FILE (default: "
                                        "kept in the transcript only)", path=True),),
            RunFlag("--virtio-console", lambda on: [{"output": "/dev/stdout"}] if on else [],
                    dict(action="store_true",
                         help="a virtio-console device on the terminal (default: none)")),
        ),
    )
}  # fmt: skip


def lookup(name: str) -> DeviceKind:
    try:
        return KINDS[name]
    except KeyError:
        raise ConfigError(f"unknown device kind {name!r} (one of {', '.join(KINDS)})") from None
