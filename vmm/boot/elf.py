"""Loading a PVH kernel: an x86-64 ELF with a XEN_ELFNOTE_PHYS32_ENTRY note.

The file is untrusted input: every offset and length in it is checked against
the file's size, and every failure is a one-line ``KernelImageError`` naming
the file, never a traceback.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from vmm import platform
from vmm.errors import ConfigError, KernelImageError

ELF_MAGIC = b"\x7fELF"
ELFCLASS64 = 2
ELFDATA2LSB = 1
EM_X86_64 = 62
PT_LOAD = 1
PT_NOTE = 4
SHT_NOTE = 7
ELF64_EHDR_SIZE = 64
ELF64_PHDR_SIZE = 56
XEN_ELFNOTE_PHYS32_ENTRY = 18
LOAD_MIN = platform.HIGH_RAM_START
LOAD_LIMIT = 1 << 32

_NOTE_HEADER = struct.Struct("<III")


@dataclass(frozen=True)
class Segment:
    paddr: int
    data: bytes
    memsz: int


@dataclass(frozen=True)
class KernelImage:
    entry32: int
    segments: tuple[Segment, ...]
    end: int


def iter_notes(blob: bytes, align: int = 4) -> Iterator[tuple[bytes, int, bytes]]:
    """``(name, type, desc)`` for each note in ``blob``; stops at the first malformed one.

    ``name`` has its trailing NULs removed.  Nothing is read outside ``blob``.
    """
    off = 0
    while off + _NOTE_HEADER.size <= len(blob):
        namesz, descsz, ntype = _NOTE_HEADER.unpack_from(blob, off)
        name_off = off + _NOTE_HEADER.size
        desc_off = _align(name_off + namesz, align)
        end = _align(desc_off + descsz, align)
        if desc_off + descsz > len(blob):
            return
        name = blob[name_off : name_off + namesz].rstrip(b"\0")
        yield name, ntype, blob[desc_off : desc_off + descsz]
        off = end


def _align(value: int, align: int) -> int:
    return (value + align - 1) & ~(align - 1)


def _pvh_entry(blob: bytes, align: int, fail: _Fail) -> int | None:
    for name, ntype, desc in iter_notes(blob, align):
        if name == b"Xen" and ntype == XEN_ELFNOTE_PHYS32_ENTRY:
            if len(desc) == 4:
                return int(struct.unpack("<I", desc)[0])
            if len(desc) == 8:
                return int(struct.unpack("<Q", desc)[0])
            raise fail(f"has a malformed PVH entry note ({len(desc)}-byte descriptor)")
    return None


class _Fail:
    """Builds the one-line error for one kernel file."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __call__(self, what: str) -> KernelImageError:
        return KernelImageError(f"kernel {self.path!r} {what}")


def load_kernel(path: str | os.PathLike[str]) -> KernelImage:
    """Read and validate a PVH kernel; raises ``KernelImageError`` on any problem."""
    name = os.fspath(path)
    fail = _Fail(name)
    try:
        with open(name, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        raise KernelImageError(f"kernel {name!r}: no such file") from None
    except IsADirectoryError:
        raise KernelImageError(f"kernel {name!r} is a directory, not a kernel image") from None
    except OSError as exc:
        raise KernelImageError(f"kernel {name!r}: cannot read: {exc.strerror}") from None
    _check_header(raw, fail)
    digest = hashlib.blake2b(raw, digest_size=20).hexdigest()
    cached = _cache_get(digest, raw)
    if cached is not None:
        return cached
    try:
        image, loads = _load(raw, fail)
    except KernelImageError:
        raise
    except Exception as exc:  # elftools on hostile input: anything at all
        raise fail(f"is truncated or corrupt ({type(exc).__name__})") from None
    _cache_put(digest, image.entry32, loads)
    return image


# -- the parse cache ---------------------------------------------------------------------
# Importing pyelftools costs more wall time than booting the kernel, so the
# result of a successful parse (entry point and where each segment lies in the
# file) is kept, addressed by a hash of the whole file: a changed or corrupt
# file simply misses.  Only files that passed every check are recorded, and a
# cache that cannot be read or written is ignored.


def cache_dir() -> str:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.environ.get("KEEL_CACHE_DIR") or os.path.join(base, "keel", "kernels")


def _cache_get(digest: str, raw: bytes) -> KernelImage | None:
    try:
        with open(os.path.join(cache_dir(), digest + ".json"), encoding="ascii") as f:
            record = json.load(f)
        entry = int(record["entry"])
        segments = []
        for paddr, offset, filesz, memsz in record["loads"]:
            if not 0 <= offset <= offset + filesz <= len(raw) or filesz > memsz:
                return None
            segments.append(Segment(int(paddr), raw[offset : offset + filesz], int(memsz)))
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not segments:
        return None
    return KernelImage(entry, tuple(segments), max(s.paddr + s.memsz for s in segments))


def _cache_put(digest: str, entry: int, loads: list[tuple[int, int, int, int]]) -> None:
    directory = cache_dir()
    path = os.path.join(directory, digest + ".json")
    try:
        os.makedirs(directory, exist_ok=True)
        tmp = f"{path}.{os.getpid()}.tmp"
        with open(tmp, "w", encoding="ascii") as f:
            json.dump({"entry": entry, "loads": loads}, f)
        os.replace(tmp, path)
    except OSError:
        pass


def _check_header(raw: bytes, fail: _Fail) -> None:
    if raw[:4] != ELF_MAGIC:
        raise fail("is not an ELF file")
    if len(raw) < ELF64_EHDR_SIZE:
        raise fail(f"is truncated: {len(raw)} bytes is shorter than an ELF header")
    if raw[4] != ELFCLASS64:
        raise fail("is not a 64-bit ELF file (ELFCLASS64); Keel needs an x86-64 kernel")
    if raw[5] != ELFDATA2LSB:
        raise fail("is not a little-endian ELF file")
    machine = struct.unpack_from("<H", raw, 18)[0]
    if machine != EM_X86_64:
        raise fail(f"is for ELF machine {machine}, not x86-64 (EM_X86_64)")
    phoff, phentsize, phnum = (
        struct.unpack_from("<Q", raw, 32)[0],
        struct.unpack_from("<H", raw, 54)[0],
        struct.unpack_from("<H", raw, 56)[0],
    )
    if phnum == 0:
        raise fail("has no program headers")
    if phentsize != ELF64_PHDR_SIZE:
        raise fail(f"has program headers of {phentsize} bytes, not {ELF64_PHDR_SIZE}")
    if phoff + phnum * phentsize > len(raw):
        raise fail("is truncated: its program headers lie past the end of the file")


def _file_range(raw: bytes, offset: int, size: int, what: str, fail: _Fail) -> bytes:
    if offset < 0 or size < 0 or offset + size > len(raw):
        raise fail(f"is truncated: {what} lies past the end of the file")
    return raw[offset : offset + size]


def _load(raw: bytes, fail: _Fail) -> tuple[KernelImage, list[tuple[int, int, int, int]]]:
    # Lazy: pyelftools takes about 29 ms to import (python -X importtime) and a boot
    # whose kernel is in the parse cache never needs it.
    from elftools.elf.elffile import ELFFile

    elf = ELFFile(io.BytesIO(raw))
    loads: list[tuple[int, int, int, int]] = []  # paddr, offset, filesz, memsz
    entry: int | None = None
    for i in range(elf.num_segments()):
        ph = elf.get_segment(i).header
        ptype = _ptype(ph["p_type"])
        if ptype == PT_LOAD and ph["p_memsz"] > 0:
            if ph["p_filesz"] > ph["p_memsz"]:
                raise fail(f"has a segment at {ph['p_paddr']:#x} with filesz > memsz")
            _file_range(raw, ph["p_offset"], ph["p_filesz"], "a loadable segment", fail)
            loads.append((ph["p_paddr"], ph["p_offset"], ph["p_filesz"], ph["p_memsz"]))
        elif ptype == PT_NOTE and entry is None:
            blob = _file_range(raw, ph["p_offset"], ph["p_filesz"], "a note segment", fail)
            entry = _pvh_entry(blob, 8 if ph["p_align"] == 8 else 4, fail)
    if not loads:
        raise fail("has no loadable (PT_LOAD) segments")
    if entry is None:
        entry = _entry_from_sections(raw, fail)
    if entry is None:
        raise fail("has no PVH entry note (XEN_ELFNOTE_PHYS32_ENTRY); is it a PVH kernel?")

    segments: list[Segment] = []
    loads.sort()
    for paddr, offset, filesz, memsz in loads:
        if paddr < LOAD_MIN or paddr + memsz > LOAD_LIMIT:
            raise fail(
                f"is not loadable: segment at {paddr:#x} is outside the loadable range"
                " [1 MiB, 4 GiB)"
            )
        if segments and paddr < segments[-1].paddr + segments[-1].memsz:
            raise fail(f"has overlapping segments at {segments[-1].paddr:#x} and {paddr:#x}")
        segments.append(Segment(paddr, raw[offset : offset + filesz], memsz))
    if not any(s.paddr <= entry < s.paddr + s.memsz for s in segments):
        raise fail(f"has its PVH entry point {entry:#x} outside every loaded segment")
    end = max(s.paddr + s.memsz for s in segments)
    return KernelImage(entry, tuple(segments), end), loads


def _ptype(value: Any) -> int:
    """elftools names known segment types; turn the name back into the number."""
    if isinstance(value, int):
        return value
    return {"PT_LOAD": PT_LOAD, "PT_NOTE": PT_NOTE}.get(str(value), -1)


_SHDR = struct.Struct("<IIQQQQIIQQ")


def _entry_from_sections(raw: bytes, fail: _Fail) -> int | None:
    """Fallback for images whose note is in a SHT_NOTE section but no PT_NOTE segment."""
    shoff = struct.unpack_from("<Q", raw, 40)[0]
    shentsize, shnum = struct.unpack_from("<HH", raw, 58)
    if shoff == 0 or shnum == 0 or shentsize != _SHDR.size:
        return None
    table = _file_range(raw, shoff, shnum * shentsize, "the section header table", fail)
    for i in range(shnum):
        _, stype, _, _, offset, size, _, _, align, _ = _SHDR.unpack_from(table, i * shentsize)
        if stype != SHT_NOTE or size == 0:
            continue
        blob = _file_range(raw, offset, size, "a note section", fail)
        entry = _pvh_entry(blob, 8 if align == 8 else 4, fail)
        if entry is not None:
            return entry
    return None


def check_fits(image: KernelImage, memory: int) -> None:
    """The kernel must end inside low guest RAM (below the MMIO hole)."""
    if image.end > min(memory, platform.MMIO_HOLE_START):
        raise ConfigError(f"kernel ends at {image.end:#x} beyond guest memory {memory >> 20} MiB")
