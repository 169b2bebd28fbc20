"""The registers gdb sees, their order, and the target description announcing them.

The order follows gdb's x86-64 numbering (general registers, rip, eflags,
segment selectors, x87, SSE), then the segment bases and the control
registers, which gdb learns from ``TARGET_XML`` (``info registers cr3``,
``p $gs_base``).  ``pack`` and ``unpack`` convert between a vCPU's state
and gdb's little-endian hex.
"""

from __future__ import annotations

from typing import Any

GPRS = ("rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rbp", "rsp",
        "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15")  # fmt: skip
SEGMENTS = ("cs", "ss", "ds", "es", "fs", "gs")
X87_CONTROL = ("fctrl", "fstat", "ftag", "fiseg", "fioff", "foseg", "fooff", "fop")
SYSTEM = ("cr0", "cr2", "cr3", "cr4", "cr8", "efer")

# (name, size in bytes, tdesc type, feature)
LAYOUT: list[tuple[str, int, str, str]] = (
    [(n, 8, "int64", "core") for n in GPRS]
    + [("rip", 8, "code_ptr", "core"), ("eflags", 4, "int32", "core")]
    + [(n, 4, "int32", "core") for n in SEGMENTS]
    + [(f"st{i}", 10, "i387_ext", "core") for i in range(8)]
    + [(n, 4, "int", "core") for n in X87_CONTROL]
    + [(f"xmm{i}", 16, "uint128", "sse") for i in range(16)]
    + [("mxcsr", 4, "int", "sse")]
    + [("fs_base", 8, "int64", "segments"), ("gs_base", 8, "int64", "segments")]
    + [(n, 8, "int64", "system") for n in SYSTEM]
)
INDEX = {name: i for i, (name, *_) in enumerate(LAYOUT)}

_FEATURES = {
    "core": "org.gnu.gdb.i386.core",
    "sse": "org.gnu.gdb.i386.sse",
    "segments": "org.gnu.gdb.i386.segments",
    "system": "org.keel.x86.system",
}


def _target_xml() -> str:
    parts = ['<?xml version="1.0"?>', '<!DOCTYPE target SYSTEM "gdb-target.dtd">',
             "<target>", "<architecture>i386:x86-64</architecture>"]  # fmt: skip
    for key, feature in _FEATURES.items():
        parts.append(f'<feature name="{feature}">')
        for i, (name, size, kind, where) in enumerate(LAYOUT):
            if where == key:
                group = ' group="system"' if where == "system" else ""
                parts.append(
                    f'<reg name="{name}" bitsize="{size * 8}" type="{kind}" regnum="{i}"{group}/>'
                )
        parts.append("</feature>")
    parts.append("</target>")
    return "\n".join(parts)


TARGET_XML = _target_xml()


def read_all(regs: dict[str, int], sregs: Any, fpu: Any) -> list[bytes]:
    """Every register of ``LAYOUT`` as little-endian bytes."""
    values: dict[str, int | bytes] = dict(regs)
    values["eflags"] = regs["rflags"]
    for name in SEGMENTS:
        values[name] = getattr(sregs, name).selector
    values["fs_base"], values["gs_base"] = sregs.fs.base, sregs.gs.base
    for name in SYSTEM:
        values[name] = getattr(sregs, name)
    if fpu is not None:
        for i in range(8):
            values[f"st{i}"] = bytes(fpu.fpr[i][0:10])
        for i in range(16):
            values[f"xmm{i}"] = bytes(fpu.xmm[i][0:16])
        values.update(fctrl=fpu.fcw, fstat=fpu.fsw, ftag=_full_tag(fpu.ftwx),
                      fioff=fpu.last_ip & 0xFFFFFFFF, fooff=fpu.last_dp & 0xFFFFFFFF,
                      fop=fpu.last_opcode, mxcsr=fpu.mxcsr)  # fmt: skip
    out = []
    for name, size, _, _ in LAYOUT:
        value = values.get(name, 0)
        if isinstance(value, bytes):
            out.append(value[:size].ljust(size, b"\x00"))
        else:
            out.append((int(value) & ((1 << (8 * size)) - 1)).to_bytes(size, "little"))
    return out


def _full_tag(abridged: int) -> int:
    """FXSAVE's abridged tag (1 bit per register, 1 = valid) as the x87 tag word
    gdb expects (2 bits per register, 11 = empty; valid ones shown as 00)."""
    return sum(0 if abridged >> i & 1 else 3 << (2 * i) for i in range(8))


def split(data: bytes) -> list[bytes]:
    """A 'G' packet's bytes cut into registers (as many as it holds)."""
    out, pos = [], 0
    for _, size, _, _ in LAYOUT:
        if pos + size > len(data):
            break
        out.append(data[pos : pos + size])
        pos += size
    return out


WRITABLE_GPRS = {*GPRS, "rip"}
