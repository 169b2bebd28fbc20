"""Bad input to ``keel run``: one clear line on stderr, non-zero status, no traceback."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import keel


def assert_clean_error(proc: object, needle: str) -> None:
    err = proc.stderr  # type: ignore[attr-defined]
    assert proc.returncode != 0  # type: ignore[attr-defined]
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("keel: error:"), err
    assert needle in lines[0], err


def test_missing_kernel(tmp_path: Path) -> None:
    assert_clean_error(keel("run", str(tmp_path / "nope.elf")), "nope.elf")


def test_directory_as_kernel(tmp_path: Path) -> None:
    assert_clean_error(keel("run", str(tmp_path)), str(tmp_path))


def test_not_an_elf(tmp_path: Path) -> None:
    bad = tmp_path / "kernel.txt"
    bad.write_text("hello, I am not a kernel\n")
    assert_clean_error(keel("run", str(bad)), "ELF")


def test_truncated_elf(tmp_path: Path, tiny_guest: Callable[..., Path]) -> None:
    cut = tmp_path / "cut.elf"
    cut.write_bytes(tiny_guest("HELLO").read_bytes()[:100])
    assert_clean_error(keel("run", str(cut)), "cut.elf")


def test_elf_without_pvh_note() -> None:
    assert_clean_error(keel("run", "/bin/true"), "PVH")


def test_bzimage(tmp_path: Path) -> None:
    """A Linux bzImage (boot protocol header, no PVH ELF around it) is named as such."""
    image = bytearray(0x4000)
    image[0x1FE:0x200] = b"\x55\xaa"
    image[0x202:0x206] = b"HdrS"
    image[0x206:0x208] = (0x020F).to_bytes(2, "little")
    bz = tmp_path / "bzImage"
    bz.write_bytes(bytes(image))
    assert_clean_error(keel("run", str(bz)), "is a Linux bzImage (boot protocol 2.15), which "
                       "keel run does not boot: give it the ELF vmlinux of a kernel built with "
                       "CONFIG_PVH")  # fmt: skip


@pytest.mark.parametrize(("machine", "elf32", "name"),
                         [(183, False, "AArch64"), (243, False, "RISC-V"), (40, True, "ARM")])
def test_elf_for_another_machine(tmp_path: Path, tiny_guest: Callable[..., Path],
                                 machine: int, elf32: bool, name: str) -> None:  # fmt: skip
    """A PVH guest's ELF file with another machine's e_machine: refused by name."""
    data = bytearray(tiny_guest("HELLO", elf32=elf32).read_bytes())
    data[18:20] = machine.to_bytes(2, "little")
    other = tmp_path / f"{name}.elf"
    other.write_bytes(bytes(data))
    assert_clean_error(keel("run", str(other)),
                       f"is for {name} (ELF machine {machine}), not x86 (EM_386 or EM_X86_64)")


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--smp", "0"], "smp"),
        (["--smp", "-3"], "smp"),
        (["--smp", "many"], "smp"),
        (["--memory", "1M"], "memory"),
        (["--memory", "100T"], "memory"),
        (["--memory", "lots"], "lots"),
        (["--memory", ""], "memory"),
    ],
)
def test_bad_options(tiny_guest: Callable[..., Path], args: list[str], needle: str) -> None:
    proc = keel("run", str(tiny_guest("HELLO")), *args)
    assert_clean_error(proc, needle)


def test_unknown_command() -> None:
    proc = keel("fly")
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.startswith("keel: error:")


def test_unreadable_initrd(tiny_guest: Callable[..., Path], tmp_path: Path) -> None:
    proc = keel("run", str(tiny_guest("HELLO")), "--initrd", str(tmp_path / "missing.cpio"))
    assert_clean_error(proc, "missing.cpio")


def test_an_initrd_that_is_not_a_cpio_archive(
    tiny_guest: Callable[..., Path], tmp_path: Path
) -> None:
    """An empty file or any other file given as the initrd was booted, and the
    guest said only that its initrd had no init program."""
    cases = [("empty.cpio", b"", "is empty"),
             ("notes.txt", b"# notes\n" * 100, "is not a cpio archive")]  # fmt: skip
    for name, data, needle in cases:
        (tmp_path / name).write_bytes(data)
        proc = keel("run", str(tiny_guest("HELLO")), "--initrd", str(tmp_path / name))
        assert_clean_error(proc, needle)
        assert name in proc.stderr


def test_unwritable_serial2(tiny_guest: Callable[..., Path], tmp_path: Path) -> None:
    proc = keel("run", str(tiny_guest("HELLO")), "--serial2", str(tmp_path / "no" / "com2.log"))
    assert_clean_error(proc, "com2.log")
