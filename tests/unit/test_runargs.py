"""`keel run`'s fast argument reader (vmm.runargs) against the argparse parser:
whatever it accepts, it reads exactly as argparse does; anything else it
leaves to argparse."""

from __future__ import annotations

import contextlib
import io

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vmm import runargs
from vmm.cli import _build_parser, _join_dash_values, main

OPTIONS = [*runargs.VALUES, *runargs.FLAGS, *runargs.APPENDS, *runargs.SWITCHES,
           "--net", "--help", "-h", "--cmd", "--smp=", "--timings=1", "--", "-", "-m5"]  # fmt: skip
VALUES = ["2", "0", "-1", "x", "256M", "1.5", "nan", " 3", "3_0", "k.elf", "a=b c",
          "stdio", "", "-cx16", "--smp"]  # fmt: skip


def argparse_reads(argv: list[str]) -> dict[str, object] | None:
    """argparse's namespace of ``argv``, or None when it refuses it (or prints help)."""
    with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
        try:
            return vars(_build_parser().parse_args(argv))
        except SystemExit:
            return None


def test_the_defaults_are_argparses() -> None:
    fast = runargs.parse(["run"])
    assert fast is not None
    assert vars(fast) == argparse_reads(["run"])


def test_usual_command_lines_are_read_without_argparse() -> None:
    for argv in (
        ["run", "build/kernel.elf", "--smp", "2", "--cmdline", "keel.test=boot"],
        ["run", "--timings", "k.elf", "--memory=512", "--disk", "a.img", "--disk=b,,c.img,ro"],
        ["run", "-m", "1G", "--rng", "--virtio-console", "--hang-timeout", "30", "--initrd", "i"],
        ["run", "--cpu-features=-cx16", "--serial2", "stdio", "--api-sock", "/tmp/s"],
    ):
        fast = runargs.parse(argv)
        assert fast is not None, argv
        assert vars(fast) == argparse_reads(argv), argv


def test_what_it_does_not_read_goes_to_argparse() -> None:
    for argv in (["run", "--help"], ["run", "--net"], ["run", "--net", "tap0"],
                 ["run", "--cmd", "x"], ["run", "a", "b"], ["run", "--smp", "two"],
                 ["run", "--timings=yes"],
                 ["run", "--smp", "-1"], ["run", "--"], ["stress"], ["--version"], []):  # fmt: skip
        assert runargs.parse(argv) is None, argv


@settings(max_examples=400, deadline=None)
@given(st.lists(st.sampled_from(OPTIONS) | st.sampled_from(VALUES), max_size=8))
def test_same_namespace_as_argparse(words: list[str]) -> None:
    argv = _join_dash_values(["run", *words])
    fast = runargs.parse(argv)
    if fast is not None:
        assert vars(fast) == argparse_reads(argv), argv


def test_a_double_dash_value_is_refused_by_every_verb(capsys: pytest.CaptureFixture[str]) -> None:
    """Hypothesis found `--cpu-features=--` read as '--' here and as [] by argparse,
    which drops a '--' from any option's value and so skips its type check:
    `keel stress --hang-timeout=--` had a list for a watchdog's seconds.  The
    reader leaves it to argparse and the CLI refuses it before either."""
    assert argparse_reads(["stress", "--hang-timeout=--"]) == {
        **(argparse_reads(["stress"]) or {}), "hang_timeout": []}  # argparse's quirk
    for argv in (["run", "--cpu-features=--"], ["run", "k.elf", "--cmdline=--"],
                 ["run", "--disk=--"], ["stress", "--hang-timeout=--"],
                 ["fuzz", "--calls=--"], ["run", "--initrd=--", "--smp", "2"]):  # fmt: skip
        assert runargs.parse(argv) is None, argv
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert "'--' is not a value" in err and err.count("\n") == 1, err


def test_a_hang_timeout_that_is_not_a_positive_finite_number_is_refused() -> None:
    """Hypothesis found `--hang-timeout nan` read by both parsers as nan, which no
    wait is ever longer than: a watchdog that never fires.  Both refuse it now,
    and so do inf, 0 and negative numbers; so does the Machine itself."""
    for value in ("nan", "inf", "-inf", "0", "-1", "NaN"):
        for verb in ("run", "stress", "fuzz"):
            argv = [verb, f"--hang-timeout={value}"]
            assert runargs.parse(argv) is None, argv
            assert argparse_reads(argv) is None, argv
    fast = runargs.parse(["run", "--hang-timeout", "2.5"])
    assert fast is not None and fast.hang_timeout == 2.5


def test_the_machine_refuses_a_nan_hang_timeout() -> None:
    from vmm.errors import ConfigError
    from vmm.machine import Machine

    for value in (float("nan"), float("inf"), 0.0):
        with pytest.raises(ConfigError, match="positive, finite"):
            Machine(kernel="build/kernel.elf", hang_timeout=value)
