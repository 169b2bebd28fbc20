"""Loading a PVH kernel: an x86 ELF (ELF32 or ELF64) with a XEN_ELFNOTE_PHYS32_ENTRY note.

This is what QEMU's ``-kernel`` PVH loader takes: an ELF32 (EM_386) or ELF64
(EM_X86_64) file whose notes name the 32-bit entry point.  Its PT_LOAD
segments are placed at their physical addresses.  What it does not take it
names: a Linux bzImage (it has no PVH note; boot the ``vmlinux`` built with
CONFIG_PVH instead), an ELF for another machine, a big-endian ELF.

The file is untrusted input: every offset and length in it is checked against
the file's size, and every failure is a one-line ``KernelImageError`` naming
the file, never a traceback.
"""

from __future__ import annotations

import os
import struct
from _blake2 import blake2b  # hashlib's own; hashlib loads OpenSSL: ~2 ms of start-up
from collections.abc import Iterator

from vmm import platform
from vmm.errors import ConfigError, KernelImageError
from vmm.records import record

ELF_MAGIC = b"\x7fELF"
ELFCLASS32 = 1
ELFCLASS64 = 2
ELFDATA2LSB = 1
EM_386 = 3
EM_X86_64 = 62
PT_LOAD = 1
PT_NOTE = 4
SHT_NOTE = 7
XEN_ELFNOTE_PHYS32_ENTRY = 18
LOAD_MIN = platform.HIGH_RAM_START
LOAD_LIMIT = 1 << 32
BZIMAGE_MAGIC_OFFSET = 0x202  # "HdrS": the Linux x86 boot protocol header
BZIMAGE_VERSION_OFFSET = 0x206

# Machines a user is likely to hand over by mistake, named in the error.
_MACHINES = {2: "SPARC", 8: "MIPS", 20: "PowerPC", 21: "PowerPC64", 22: "S/390", 40: "ARM",
             183: "AArch64", 243: "RISC-V", 258: "LoongArch"}  # fmt: skip

_NOTE_HEADER = struct.Struct("<III")


@record(frozen=True)
class _Layout:
    """Where the fields an ELF class differs in live (``struct`` formats, little-endian)."""

    ehdr_size: int
    ehdr_tail: struct.Struct  # e_entry .. e_shstrndx, from offset 24
    phdr: struct.Struct
    shdr: struct.Struct
    machine: int

    def phdr_fields(self, raw: bytes, off: int) -> tuple[int, int, int, int, int, int]:
        """``(type, offset, paddr, filesz, memsz, align)`` of the program header at ``off``."""
        if self.phdr.size == 32:  # Elf32_Phdr: type offset vaddr paddr filesz memsz flags align
            ptype, offset, _, paddr, filesz, memsz, _, align = self.phdr.unpack_from(raw, off)
        else:  # Elf64_Phdr: type flags offset vaddr paddr filesz memsz align
            ptype, _, offset, _, paddr, filesz, memsz, align = self.phdr.unpack_from(raw, off)
        return ptype, offset, paddr, filesz, memsz, align


_LAYOUTS = {
    ELFCLASS32: _Layout(52, struct.Struct("<IIIIHHHHHH"), struct.Struct("<8I"),
                        struct.Struct("<10I"), EM_386),
    ELFCLASS64: _Layout(64, struct.Struct("<QQQIHHHHHH"), struct.Struct("<IIQQQQQQ"),
                        struct.Struct("<IIQQQQIIQQ"), EM_X86_64),
}  # fmt: skip


@record(frozen=True)
class Segment:
    paddr: int
    data: bytes
    memsz: int


@record(frozen=True)
class KernelImage:
    entry32: int
    segments: tuple[Segment, ...]
    end: int
    bits: int = 64  # ELF32 or ELF64, as in the file


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
    layout = _check_header(raw, fail)
    digest = blake2b(raw, digest_size=20).hexdigest()
    cached = _cache_get(digest, raw)
    if cached is not None:
        return cached
    image, loads = _load(raw, layout, fail)
    _cache_put(digest, image.entry32, loads, image.bits)
    return image


# -- the parse cache ---------------------------------------------------------------------
# Parsing a large kernel in Python costs a few milliseconds of `keel run` start-up,
# so the result of a successful parse (entry point and where each segment lies in
# the file) is kept, addressed by a hash of the whole file: a changed or corrupt
# file simply misses.  Only files that passed every check are recorded, and a
# cache that cannot be read or written is ignored.  The record is a line of
# text ("keel-kernel 1", entry, bits, then paddr offset filesz memsz per
# segment), not JSON: json (with re and enum) costs about 3 ms of start-up.

_CACHE_MAGIC = b"keel-kernel 1"


def cache_dir() -> str:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.environ.get("KEEL_CACHE_DIR") or os.path.join(base, "keel", "kernels")


def _cache_get(digest: str, raw: bytes) -> KernelImage | None:
    try:
        with open(os.path.join(cache_dir(), digest + ".txt"), "rb") as f:
            magic, _, numbers = f.read().partition(b":")
        fields = [int(n) for n in numbers.split()]
        if magic != _CACHE_MAGIC or len(fields) < 2 or (len(fields) - 2) % 4:
            return None
        entry, bits = fields[0], fields[1]
        segments = []
        for i in range(2, len(fields), 4):
            paddr, offset, filesz, memsz = fields[i : i + 4]
            if not 0 <= offset <= offset + filesz <= len(raw) or filesz > memsz:
                return None
            segments.append(Segment(paddr, raw[offset : offset + filesz], memsz))
    except (OSError, ValueError):
        return None
    if not segments:
        return None
    end = max(s.paddr + s.memsz for s in segments)
    return KernelImage(entry, tuple(segments), end, bits)


def _cache_put(
    digest: str, entry: int, loads: list[tuple[int, int, int, int]], bits: int
) -> None:
    directory = cache_dir()
    path = os.path.join(directory, digest + ".txt")
    try:
        os.makedirs(directory, exist_ok=True)
        tmp = f"{path}.{os.getpid()}.tmp"
        with open(tmp, "w", encoding="ascii") as f:
            numbers = [entry, bits, *(n for load in loads for n in load)]
            f.write(f"{_CACHE_MAGIC.decode()}: {' '.join(map(str, numbers))}\n")
        os.replace(tmp, path)
    except OSError:
        pass


def _check_header(raw: bytes, fail: _Fail) -> _Layout:
    if raw[:4] != ELF_MAGIC:
        if raw[BZIMAGE_MAGIC_OFFSET : BZIMAGE_MAGIC_OFFSET + 4] == b"HdrS":
            major, minor = raw[BZIMAGE_VERSION_OFFSET + 1], raw[BZIMAGE_VERSION_OFFSET]
            raise fail(
                f"is a Linux bzImage (boot protocol {major}.{minor:02d}), which keel run does "
                "not boot: give it the ELF vmlinux of a kernel built with CONFIG_PVH"
            )
        raise fail("is not an ELF file")
    if len(raw) < 6:
        raise fail(f"is truncated: {len(raw)} bytes is shorter than an ELF header")
    layout = _LAYOUTS.get(raw[4])
    if layout is None:
        raise fail(f"has an unknown ELF class {raw[4]} (neither ELFCLASS32 nor ELFCLASS64)")
    if len(raw) < layout.ehdr_size:
        raise fail(f"is truncated: {len(raw)} bytes is shorter than an ELF header")
    if raw[5] != ELFDATA2LSB:
        raise fail("is not a little-endian ELF file; keel run boots x86 kernels")
    machine = struct.unpack_from("<H", raw, 18)[0]
    bits = 32 if layout.machine == EM_386 else 64
    if machine in (EM_386, EM_X86_64) and machine != layout.machine:
        raise fail(f"is an ELF{bits} file for machine {machine}: x86 kernels are ELF32 "
                   "EM_386 or ELF64 EM_X86_64")  # fmt: skip
    if machine != layout.machine:
        known = _MACHINES.get(machine)
        what = f"{known} (ELF machine {machine})" if known else f"ELF machine {machine}"
        raise fail(f"is for {what}, not x86 (EM_386 or EM_X86_64)")
    _, phoff, _, _, _, phentsize, phnum, _, _, _ = layout.ehdr_tail.unpack_from(raw, 24)
    if phnum == 0:
        raise fail("has no program headers")
    if phentsize != layout.phdr.size:
        raise fail(f"has program headers of {phentsize} bytes, not {layout.phdr.size}")
    if phoff + phnum * phentsize > len(raw):
        raise fail("is truncated: its program headers lie past the end of the file")
    return layout


def _file_range(raw: bytes, offset: int, size: int, what: str, fail: _Fail) -> bytes:
    if offset < 0 or size < 0 or offset + size > len(raw):
        raise fail(f"is truncated: {what} lies past the end of the file")
    return raw[offset : offset + size]


def _load(
    raw: bytes, layout: _Layout, fail: _Fail
) -> tuple[KernelImage, list[tuple[int, int, int, int]]]:
    _, phoff, shoff, _, _, phentsize, phnum, shentsize, shnum, _ = layout.ehdr_tail.unpack_from(
        raw, 24
    )
    loads: list[tuple[int, int, int, int]] = []  # paddr, offset, filesz, memsz
    entry: int | None = None
    for i in range(phnum):
        ptype, offset, paddr, filesz, memsz, align = layout.phdr_fields(raw, phoff + i * phentsize)
        if ptype == PT_LOAD and memsz > 0:
            if filesz > memsz:
                raise fail(f"has a segment at {paddr:#x} with filesz > memsz")
            _file_range(raw, offset, filesz, "a loadable segment", fail)
            loads.append((paddr, offset, filesz, memsz))
        elif ptype == PT_NOTE and entry is None:
            blob = _file_range(raw, offset, filesz, "a note segment", fail)
            entry = _pvh_entry(blob, 8 if align == 8 else 4, fail)
    if not loads:
        raise fail("has no loadable (PT_LOAD) segments")
    if entry is None:
        entry = _entry_from_sections(raw, layout, shoff, shentsize, shnum, fail)
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
    bits = 32 if layout.machine == EM_386 else 64
    return KernelImage(entry, tuple(segments), end, bits), loads


def _entry_from_sections(
    raw: bytes, layout: _Layout, shoff: int, shentsize: int, shnum: int, fail: _Fail
) -> int | None:
    """Fallback for images whose note is in a SHT_NOTE section but no PT_NOTE segment."""
    if shoff == 0 or shnum == 0 or shentsize != layout.shdr.size:
        return None
    table = _file_range(raw, shoff, shnum * shentsize, "the section header table", fail)
    for i in range(shnum):
        fields = layout.shdr.unpack_from(table, i * shentsize)
        stype, offset, size, align = fields[1], fields[4], fields[5], fields[8]
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
