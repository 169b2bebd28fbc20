"""Loading PVH kernels (vmm.boot.elf), with ELF files built byte by byte here."""

from __future__ import annotations

import os
import struct
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vmm.boot import elf
from vmm.errors import ConfigError, KernelImageError

ROOT = Path(__file__).resolve().parents[2]
BUILT_KERNEL = ROOT / "build" / "kernel.elf"
MiB = 1 << 20

EHDR = struct.Struct("<4sBBBBB7sHHIQQQIHHHHHH")
PHDR = struct.Struct("<IIQQQQQQ")
SHDR = struct.Struct("<IIQQQQIIQQ")
assert EHDR.size == 64 and PHDR.size == 56 and SHDR.size == 64


def note(name: bytes, ntype: int, desc: bytes) -> bytes:
    def pad(b: bytes) -> bytes:
        return b + b"\0" * (-len(b) % 4)

    return struct.pack("<III", len(name), len(desc), ntype) + pad(name) + pad(desc)


EHDR32 = struct.Struct("<4sBBBBB7sHHIIIIIHHHHHH")
PHDR32 = struct.Struct("<8I")
SHDR32 = struct.Struct("<10I")
assert EHDR32.size == 52 and PHDR32.size == 32 and SHDR32.size == 40


def make_elf(
    *,
    ei_class: int = 2,
    machine: int | None = None,
    loads: tuple[tuple[int, bytes, int], ...] = ((0x100000, b"\xf4" * 256, 0x2000),),
    entry: int = 0x100010,
    notes: bytes | None = None,
    note_in_section: bool = False,
    load_type: int = 1,
) -> bytes:
    """An ELF64 (or with ``ei_class=1`` ELF32) image: PT_LOAD segments
    ``(paddr, data, memsz)`` and a PT_NOTE.

    ``notes`` defaults to one XEN_ELFNOTE_PHYS32_ENTRY note for ``entry``; with
    ``note_in_section`` the notes are in a SHT_NOTE section instead of a PT_NOTE.
    ``machine`` defaults to the class's x86 (EM_386 for ELF32, EM_X86_64 for ELF64).
    """
    is32 = ei_class == 1
    ehdr, phdr, shdr = (EHDR32, PHDR32, SHDR32) if is32 else (EHDR, PHDR, SHDR)
    if machine is None:
        machine = 3 if is32 else 62

    def ph(ptype: int, offset: int, paddr: int, filesz: int, memsz: int, align: int) -> bytes:
        if is32:
            return phdr.pack(ptype, offset, paddr, paddr, filesz, memsz, 7, align)
        return phdr.pack(ptype, 7, offset, paddr, paddr, filesz, memsz, align)

    if notes is None:
        notes = note(b"Xen\0", 18, struct.pack("<I" if entry < 1 << 32 else "<Q", entry))
    nph = len(loads) + (0 if note_in_section else 1)
    off = ehdr.size + nph * phdr.size
    note_off = off
    off += len(notes)
    body = bytearray(notes)
    phdrs = b""
    if not note_in_section:
        phdrs += ph(4, note_off, 0, len(notes), len(notes), 4)
    for paddr, data, memsz in loads:
        phdrs += ph(load_type, off, paddr, len(data), memsz, 0x1000)
        body += data
        off += len(data)
    shoff, shnum = 0, 0
    if note_in_section:
        shoff, shnum = off, 2
        body += shdr.pack(*[0] * 10)
        body += shdr.pack(0, 7, 2, 0, note_off, len(notes), 0, 0, 4, 0)
    header = ehdr.pack(
        b"\x7fELF", ei_class, 1, 1, 0, 0, b"", 2, machine, 1, entry, ehdr.size, shoff, 0,
        ehdr.size, phdr.size, nph, shdr.size, shnum, 0,
    )  # fmt: skip
    return header + phdrs + bytes(body)


def write(tmp_path: Path, data: bytes, name: str = "kernel.elf") -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def load_error(path: Path | str) -> str:
    with pytest.raises(KernelImageError) as err:
        elf.load_kernel(path)
    msg = str(err.value)
    assert "\n" not in msg
    assert os.fspath(path) in msg
    return msg


def test_good_kernel(tmp_path: Path) -> None:
    image = elf.load_kernel(write(tmp_path, make_elf()))
    assert image.entry32 == 0x100010
    assert image.segments == (elf.Segment(0x100000, b"\xf4" * 256, 0x2000),)
    assert image.end == 0x102000


def test_two_segments_and_64bit_descriptor(tmp_path: Path) -> None:
    loads = ((0x200000, b"data", 0x1000), (0x100000, b"code", 0x100))
    notes = note(b"GNU\0", 3, b"\1" * 20) + note(b"Xen\0", 18, struct.pack("<Q", 0x200002))
    image = elf.load_kernel(write(tmp_path, make_elf(loads=loads, notes=notes)))
    assert image.entry32 == 0x200002
    assert [s.paddr for s in image.segments] == [0x100000, 0x200000]
    assert image.end == 0x201000


def test_note_found_in_section(tmp_path: Path) -> None:
    image = elf.load_kernel(write(tmp_path, make_elf(note_in_section=True)))
    assert image.entry32 == 0x100010


def test_zero_memsz_segments_are_ignored(tmp_path: Path) -> None:
    loads = ((0x100000, b"\x90" * 16, 0x1000), (0, b"", 0))
    image = elf.load_kernel(write(tmp_path, make_elf(loads=loads)))
    assert len(image.segments) == 1


def test_missing_file(tmp_path: Path) -> None:
    msg = load_error(tmp_path / "nope.elf")
    assert "no such file" in msg


def test_directory(tmp_path: Path) -> None:
    assert "directory" in load_error(tmp_path)


@pytest.mark.skipif(os.geteuid() == 0, reason="root can read anything")
def test_unreadable(tmp_path: Path) -> None:
    path = write(tmp_path, make_elf())
    path.chmod(0)
    assert "cannot read" in load_error(path)


def test_empty_file(tmp_path: Path) -> None:
    assert "not an ELF file" in load_error(write(tmp_path, b""))


def test_text_file(tmp_path: Path) -> None:
    assert "not an ELF file" in load_error(write(tmp_path, b"hello, I am not a kernel\n"))


@given(st.binary(max_size=300))
@settings(max_examples=200, deadline=None)
def test_random_bytes(data: bytes) -> None:
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "random.elf"
        path.write_bytes(data)
        load_error(path)


@given(st.binary(min_size=1, max_size=64), st.integers(0, 400), st.sampled_from([1, 2]))
@settings(max_examples=300, deadline=None)
def test_corrupted_valid_image(patch: bytes, where: int, ei_class: int) -> None:
    """Overwrite part of a good image: it loads or fails cleanly, never anything else."""
    import tempfile

    data = bytearray(make_elf(ei_class=ei_class))
    data[where : where + len(patch)] = patch
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "patched.elf"
        path.write_bytes(bytes(data))
        try:
            image = elf.load_kernel(path)
        except KernelImageError as err:
            assert str(path) in str(err)
        else:
            assert any(s.paddr <= image.entry32 < s.paddr + s.memsz for s in image.segments)


def test_32bit_elf_is_loaded_as_qemu_does(tmp_path: Path) -> None:
    image = elf.load_kernel(write(tmp_path, make_elf(ei_class=1)))
    assert image.entry32 == 0x100010 and image.bits == 32
    assert image.segments[0].paddr == 0x100000 and image.end == 0x102000


def test_32bit_elf_with_two_segments_and_note_in_section(tmp_path: Path) -> None:
    loads = ((0x100000, b"a" * 16, 0x1000), (0x200000, b"b" * 32, 0x3000))
    image = elf.load_kernel(
        write(tmp_path, make_elf(ei_class=1, loads=loads, note_in_section=True))
    )
    assert [s.paddr for s in image.segments] == [0x100000, 0x200000]
    assert image.end == 0x203000


def test_32bit_elf_survives_the_parse_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KEEL_CACHE_DIR", str(tmp_path / "cache"))
    path = write(tmp_path, make_elf(ei_class=1))
    assert elf.load_kernel(path) == elf.load_kernel(path)
    assert elf.load_kernel(path).bits == 32


@pytest.mark.parametrize("ei_class", [1, 2])
def test_wrong_machine(tmp_path: Path, ei_class: int) -> None:
    msg = load_error(write(tmp_path, make_elf(ei_class=ei_class, machine=183)))
    assert "is for AArch64 (ELF machine 183), not x86 (EM_386 or EM_X86_64)" in msg


def test_class_and_machine_must_agree(tmp_path: Path) -> None:
    assert "ELF32 EM_386 or ELF64 EM_X86_64" in load_error(
        write(tmp_path, make_elf(ei_class=1, machine=62))
    )


def test_unknown_class(tmp_path: Path) -> None:
    assert "unknown ELF class 3" in load_error(write(tmp_path, make_elf(ei_class=3)))


def test_big_endian(tmp_path: Path) -> None:
    data = bytearray(make_elf())
    data[5] = 2
    assert "not a little-endian" in load_error(write(tmp_path, bytes(data)))


def test_bzimage_is_named_as_such(tmp_path: Path) -> None:
    image = bytearray(0x1000)
    image[0x1FE:0x200] = b"\x55\xaa"
    image[0x202:0x206] = b"HdrS"
    image[0x206:0x208] = (0x020F).to_bytes(2, "little")
    msg = load_error(write(tmp_path, bytes(image), "bzImage"))
    assert "is a Linux bzImage (boot protocol 2.15)" in msg
    assert "CONFIG_PVH" in msg


def test_no_note(tmp_path: Path) -> None:
    msg = load_error(write(tmp_path, make_elf(notes=b"")))
    assert "has no PVH entry note (XEN_ELFNOTE_PHYS32_ENTRY); is it a PVH kernel?" in msg


def test_note_with_wrong_name(tmp_path: Path) -> None:
    notes = note(b"Xem\0", 18, struct.pack("<I", 0x100010))
    assert "PVH" in load_error(write(tmp_path, make_elf(notes=notes)))


def test_note_with_wrong_type(tmp_path: Path) -> None:
    notes = note(b"Xen\0", 17, struct.pack("<I", 0x100010))
    assert "PVH" in load_error(write(tmp_path, make_elf(notes=notes)))


def test_note_with_bad_descriptor_size(tmp_path: Path) -> None:
    notes = note(b"Xen\0", 18, b"\x10\x00")
    assert "malformed" in load_error(write(tmp_path, make_elf(notes=notes)))


def test_note_running_off_the_segment(tmp_path: Path) -> None:
    notes = struct.pack("<III", 4, 0x7FFFFFF0, 18) + b"Xen\0" + b"\0" * 8
    assert "PVH" in load_error(write(tmp_path, make_elf(notes=notes)))


def test_no_loadable_segment(tmp_path: Path) -> None:
    assert "PT_LOAD" in load_error(write(tmp_path, make_elf(load_type=6)))


def test_filesz_larger_than_memsz(tmp_path: Path) -> None:
    msg = load_error(write(tmp_path, make_elf(loads=((0x100000, b"x" * 64, 16),))))
    assert "filesz > memsz" in msg


@pytest.mark.parametrize("paddr", [0, 0x8000, 0xFFFFF000, 1 << 32])
def test_segment_outside_loadable_range(tmp_path: Path, paddr: int) -> None:
    image = make_elf(loads=((paddr, b"\x90" * 16, 0x2000),), entry=paddr + 1)
    assert f"segment at {paddr:#x} is outside the loadable range" in load_error(
        write(tmp_path, image)
    )


def test_overlapping_segments(tmp_path: Path) -> None:
    loads = ((0x100000, b"a", 0x2000), (0x101000, b"b", 0x1000))
    assert "overlapping" in load_error(write(tmp_path, make_elf(loads=loads)))


def test_entry_outside_segments(tmp_path: Path) -> None:
    assert "entry point 0x300000" in load_error(write(tmp_path, make_elf(entry=0x300000)))


def test_segment_data_past_end_of_file(tmp_path: Path) -> None:
    data = make_elf()
    assert "truncated" in load_error(write(tmp_path, data[:-10]))


@pytest.mark.parametrize("ei_class", [1, 2])
def test_truncated_at_every_length(tmp_path: Path, ei_class: int) -> None:
    data = make_elf(ei_class=ei_class, note_in_section=True)
    path = tmp_path / "cut.elf"
    for n in range(len(data)):
        path.write_bytes(data[:n])
        load_error(path)
    path.write_bytes(data)
    elf.load_kernel(path)


def test_check_fits() -> None:
    image = elf.KernelImage(0x100000, (elf.Segment(0x100000, b"", 40 * MiB),), 0x100000 + 40 * MiB)
    elf.check_fits(image, 64 * MiB)
    with pytest.raises(ConfigError) as err:
        elf.check_fits(image, 32 * MiB)
    assert str(err.value) == f"kernel ends at {image.end:#x} beyond guest memory 32 MiB"


def test_host_binary_is_not_a_pvh_kernel() -> None:
    if not Path("/bin/true").exists():
        pytest.skip("no /bin/true")
    with pytest.raises(KernelImageError) as err:
        elf.load_kernel("/bin/true")
    assert "PVH" in str(err.value) or "x86-64" in str(err.value)


@pytest.mark.skipif(not BUILT_KERNEL.exists(), reason="build/kernel.elf not built")
def test_built_kernel() -> None:
    image = elf.load_kernel(BUILT_KERNEL)
    assert 0 < image.entry32 < 1 << 32
    assert image.segments and image.segments[0].paddr >= MiB
    assert image.end <= 1 << 32


def test_parse_cache_gives_the_same_image(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KEEL_CACHE_DIR", str(tmp_path / "cache"))
    path = write(tmp_path, make_elf())
    first = elf.load_kernel(path)
    assert len(os.listdir(tmp_path / "cache")) == 1
    again = elf.load_kernel(path)
    assert again == first


def test_parse_cache_misses_on_changed_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KEEL_CACHE_DIR", str(tmp_path / "cache"))
    path = write(tmp_path, make_elf())
    elf.load_kernel(path)
    path.write_bytes(b"\x7fELF" + b"\0" * 60)
    with pytest.raises(KernelImageError):
        elf.load_kernel(path)


def test_corrupt_cache_entry_is_ignored(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cache = tmp_path / "cache"
    monkeypatch.setenv("KEEL_CACHE_DIR", str(cache))
    path = write(tmp_path, make_elf())
    good = elf.load_kernel(path)
    (entry,) = cache.iterdir()
    for junk in ("{", '{"entry": 1, "loads": [[1048576, 999999, 16, 16]]}', '{"loads": []}'):
        entry.write_text(junk)
        assert elf.load_kernel(path) == good
