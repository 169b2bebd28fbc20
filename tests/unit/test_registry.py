"""The device registry is the one place a kind is described: its options are
checked there, and `keel run` and `keel attach` are built from it."""

from __future__ import annotations

import os

import pytest

from vmm.cli import _build_parser
from vmm.client import _client_request
from vmm.devices import registry
from vmm.errors import ConfigError


def test_parse_fills_defaults_and_checks_types() -> None:
    disk = registry.lookup("disk")
    assert disk.parse({"path": "a.img"}) == {"path": "a.img", "readonly": False}
    with pytest.raises(ConfigError, match="missing argument 'path'"):
        disk.parse({})
    with pytest.raises(ConfigError, match="must be a str"):
        disk.parse({"path": 7})
    with pytest.raises(ConfigError, match="must be a bool"):
        disk.parse({"path": "a.img", "readonly": "yes"})
    with pytest.raises(ConfigError, match="unknown option 'size'"):
        disk.parse({"path": "a.img", "size": 1})
    with pytest.raises(ConfigError, match="unknown device kind 'toaster'"):
        registry.lookup("toaster")


def test_run_flags_become_attach_requests() -> None:
    args = _build_parser().parse_args(
        ["run", "k.elf", "--disk", "a.img", "--disk", "b.img,ro", "--net", "--rng"]
    )
    wanted = {
        kind.name: kind.run_flag.requests(getattr(args, kind.run_flag.dest))
        for kind in registry.KINDS.values()
    }
    assert wanted == {
        "disk": [{"path": "a.img", "readonly": False}, {"path": "b.img", "readonly": True}],
        "net": [{"tap": None}],
        "rng": [{}],
        "console": [],
    }
    with pytest.raises(ConfigError, match="bad --disk option"):
        registry.lookup("disk").run_flag.requests(["a.img,rw"])


@pytest.mark.parametrize("kind", list(registry.KINDS))
def test_attach_client_sends_what_the_registry_accepts(kind: str) -> None:
    argv = {"disk": ["disk", "a.img", "--readonly"], "net": ["net", "tap7", "--mac", "m"],
            "rng": ["rng"], "console": ["console", "--output", "out.log"]}[kind]  # fmt: skip
    req = _client_request(_build_parser().parse_args(["attach", "--api-sock", "s", *argv]))
    assert req.pop("cmd") == "attach" and req.pop("kind") == kind
    spec = registry.lookup(kind)
    options = spec.parse(req)
    if kind == "disk":
        assert options == {"path": os.path.abspath("a.img"), "readonly": True}
    if kind == "console":
        assert options == {"output": os.path.abspath("out.log")}
