#!/usr/bin/env python3
"""Generate Keel's kernel interface from kernel/calls.tbl.

    gencalls.py TABLE OUTDIR

writes OUTDIR/include/keel/abi_gen.h (constants, shared by kernel and
userspace), OUTDIR/include/keel/calls_gen.h (the kernel's decoder table),
OUTDIR/include/keel/types_gen.h (the kernel's per-type hooks: prototypes
and the operations table), OUTDIR/include/keel/stubs_gen.h (userspace call
stubs) and OUTDIR/keel_abi.py (constants for the Python tests).  Only the
standard library is used: this runs before any virtual environment exists.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

MAX_ARGS = 6
MAX_RESULTS = 6


@dataclass
class Arg:
    name: str
    cap_type: str | None = None  # None: a plain word
    cap_rights: str = ""


# Per-type hooks: name -> (return type, parameters).  The generated table
# points each at <module>_<hook>; kernel/include/keel/objtype.h has the
# struct they fill.
HOOKS = {
    "bits": ("u32", "u32 user_bits"),
    "init": ("bool", "struct cap *c, u32 user_bits"),
    "decode": ("long", "struct invocation *inv"),
    "destroy": ("void", "struct kobj *o"),
    "destroy_idle": ("bool", "struct kobj *o"),
    "cap_deleted": ("void", "struct slot *s"),
    "cap_moved": ("void", "struct slot *s"),
    "children_deleted": ("void", "struct slot *s"),
    "binding_deleted": ("void", "struct slot *s"),
    "notification_gone": ("void", "struct notification *n"),
}
# Hooks that are not a column of the table but one NULL-terminated list
# (<hook>_hooks[]), called all together by the one place that needs them.
LISTED_HOOKS = ["notification_gone"]
PROPERTIES = {"retype", "header", "derivable", "badged", "device", "exclusive", "mapped"}


@dataclass
class Type:
    name: str
    value: int
    size_bits: int
    module: str = ""
    hooks: list[str] = field(default_factory=list)
    props: set[str] = field(default_factory=set)
    header: int = 0  # offset of struct kobj in the object ("header" property)


@dataclass
class Call:
    obj: str
    method: str
    rights: str
    shared: bool = False  # may run with the objects lock shared
    listed: bool = False  # shared, and lists every slot it reads (grace.c)
    args: list[Arg] = field(default_factory=list)
    results: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return f"{self.obj}_{self.method}"


@dataclass
class Table:
    errors: list[tuple[str, int, str]] = field(default_factory=list)
    types: list[Type] = field(default_factory=list)
    rights: list[tuple[str, int]] = field(default_factory=list)
    calls: list[Call] = field(default_factory=list)


class TableError(Exception):
    pass


ARG_RE = re.compile(r"^([a-z_][a-z0-9_]*):(word|cap<([a-z_]+),([a-z_|]+)>)$")


def parse(text: str) -> Table:
    table = Table()
    section = ""
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        where = f"calls.tbl:{lineno}"
        if line.startswith("["):
            section = line.strip("[]")
            continue
        words = line.split()
        if section == "errors":
            table.errors.append((words[0], int(words[1]), " ".join(words[2:])))
        elif section == "types":
            table.types.append(parse_type(words, where))
        elif section == "rights":
            table.rights.append((words[0], int(words[1])))
        elif section == "calls":
            if len(words) < 3:
                raise TableError(f"{where}: expected 'object method rights args...'")
            call = Call(words[0], words[1], words[2])
            rest = words[3:]
            if rest and rest[0] == "shared":
                call.shared, rest = True, rest[1:]
                if rest and rest[0] == "listed":
                    call.listed, rest = True, rest[1:]
            if "->" in rest:
                i = rest.index("->")
                rest, call.results = rest[:i], rest[i + 1 :]
            for spec in rest:
                m = ARG_RE.match(spec)
                if not m:
                    raise TableError(f"{where}: bad argument {spec!r}")
                if m.group(3):
                    call.args.append(Arg(m.group(1), m.group(3), m.group(4)))
                else:
                    call.args.append(Arg(m.group(1)))
            if len(call.args) > MAX_ARGS or len(call.results) > MAX_RESULTS:
                raise TableError(f"{where}: at most {MAX_ARGS} arguments and results")
            table.calls.append(call)
        else:
            raise TableError(f"{where}: outside a section")
    check(table)
    return table


def parse_type(words: list[str], where: str) -> Type:
    if len(words) < 4:
        raise TableError(f"{where}: expected 'name value size_bits module hooks...'")
    t = Type(words[0], int(words[1]), int(words[2]), words[3])
    for w in words[4:]:
        prop, _, arg = w.partition("=")
        if w in HOOKS:
            t.hooks.append(w)
        elif prop in PROPERTIES:
            t.props.add(prop)
            if arg:
                if prop != "header":
                    raise TableError(f"{where}: {prop} takes no value")
                t.header = int(arg, 0)
        else:
            raise TableError(f"{where}: unknown hook or property {w!r}")
    if "header" in t.props and "destroy" not in t.hooks:
        raise TableError(f"{where}: a type with a header is destroyed: it needs a destroy hook")
    if "retype" in t.props and not t.size_bits and "bits" not in t.hooks:
        raise TableError(f"{where}: a type made by retype needs a size or a bits hook")
    return t


def check(table: Table) -> None:
    types = {t.name for t in table.types}
    rights = {r for r, _ in table.rights}
    seen: set[str] = set()
    decoded = {t.name for t in table.types if "decode" in t.hooks}
    for call in table.calls:
        if call.obj not in types:
            raise TableError(f"{call.name}: unknown object type {call.obj}")
        if call.obj not in decoded:
            raise TableError(f"{call.name}: type {call.obj} has calls but no decode hook")
        for r in call.rights.split("|"):
            if r not in rights:
                raise TableError(f"{call.name}: unknown right {r}")
        for a in call.args:
            if a.cap_type is not None and a.cap_type not in types:
                raise TableError(f"{call.name}: argument {a.name}: unknown type {a.cap_type}")
        if call.name in seen:
            raise TableError(f"{call.name}: defined twice")
        seen.add(call.name)


def rights_expr(spec: str) -> str:
    return " | ".join(f"KEEL_RIGHT_{r.upper()}" for r in spec.split("|"))


def gen_abi_h(t: Table) -> str:
    out = [
        "/* Generated by scripts/gencalls.py from kernel/calls.tbl: do not edit. */",
        "#ifndef KEEL_ABI_GEN_H",
        "#define KEEL_ABI_GEN_H",
        "",
    ]
    for name, value, meaning in t.errors:
        out.append(f"#define KEEL_E_{name.upper()} {value} /* {meaning} */")
    out.append(f"#define KEEL_NERRORS {max(v for _, v, _ in t.errors) + 1}")
    out.append("")
    for ty in t.types:
        out.append(f"#define KEEL_OBJ_{ty.name.upper()} {ty.value}")
        out.append(f"#define KEEL_OBJ_{ty.name.upper()}_BITS {ty.size_bits}")
    out.append(f"#define KEEL_NTYPES {max(ty.value for ty in t.types) + 1}")
    out.append("")
    for name, value in t.rights:
        out.append(f"#define KEEL_RIGHT_{name.upper()} {value}")
    out.append("")
    for label, call in enumerate(t.calls, 1):
        out.append(f"#define KEEL_CALL_{call.name.upper()} {label}")
    out.append(f"#define KEEL_NCALLS {len(t.calls) + 1}")
    out += ["", "#endif", ""]
    return "\n".join(out)


def gen_calls_h(t: Table) -> str:
    out = [
        "/* Generated by scripts/gencalls.py from kernel/calls.tbl: do not edit.",
        " * The kernel's decoder table, indexed by label; included once, by",
        " * kernel/core/invoke.c (keel/invoke.h declares it). */",
        "",
        "const struct call_desc call_table[KEEL_NCALLS] = {",
    ]
    for call in t.calls:
        caps = ", ".join(
            f"{{ KEEL_OBJ_{a.cap_type.upper()}, {rights_expr(a.cap_rights)} }}"
            if a.cap_type
            else "{ 0, 0 }"
            for a in call.args
        )
        cap_end = max((i + 1 for i, a in enumerate(call.args) if a.cap_type), default=0)
        shared = int(call.shared) + int(call.listed)  # 2: CALL_LISTED (keel/invoke.h)
        out.append(
            f"    [KEEL_CALL_{call.name.upper()}] = {{ \"{call.name}\", "
            f"KEEL_OBJ_{call.obj.upper()}, {rights_expr(call.rights)}, "
            f"{len(call.args)}, {len(call.results)}, {shared}, {cap_end}, "
            f"{{ {caps} }} }},"
        )
    out += ["};", ""]
    return "\n".join(out)


def gen_types_h(t: Table) -> str:
    """The per-type hooks' prototypes, and (where OBJTYPE_TABLE is defined,
    in kernel/core/objtype.c only) the table pointing at them."""
    out = [
        "/* Generated by scripts/gencalls.py from kernel/calls.tbl: do not edit.",
        " * Prototypes of every per-type hook named in the [types] section, and",
        " * (with OBJTYPE_TABLE defined: kernel/core/objtype.c) the operations",
        " * table, indexed by type. */",
        "#ifndef KEEL_TYPES_GEN_H",
        "#define KEEL_TYPES_GEN_H",
        "",
        "#include <keel/objtype.h>",
        "",
    ]
    seen: set[str] = set()
    for ty in t.types:
        for hook in ty.hooks:
            fn = f"{ty.module}_{hook}"
            if fn not in seen:
                seen.add(fn)
                ret, params = HOOKS[hook]
                out.append(f"{ret} {fn}({params});")
    out.append("")
    for ty in t.types:
        if "header" in ty.props:
            out.append(f"#define KEEL_OBJ_{ty.name.upper()}_HEADER {ty.header}")
    out += ["", "#ifdef OBJTYPE_TABLE", "const struct object_type object_types[KEEL_NTYPES] = {"]
    for ty in t.types:
        flags = " | ".join(f"OT_{p.upper()}" for p in sorted(ty.props)) or "0"
        out.append(f"    [KEEL_OBJ_{ty.name.upper()}] = {{")
        out.append(f'        .name = "{ty.name}",')
        out.append(f"        .flags = {flags},")
        out.append(f"        .size_bits = {ty.size_bits},")
        if "header" in ty.props:
            out.append(f"        .header = {ty.header},")
        for hook in ty.hooks:
            if hook not in LISTED_HOOKS:
                out.append(f"        .{hook} = {ty.module}_{hook},")
        out.append("    },")
    out.append("};")
    out += gen_call_fast(t)
    for hook in LISTED_HOOKS:
        ret, params = HOOKS[hook]
        out.append("")
        out.append(f"{ret} (*const {hook}_hooks[])({params}) = {{")
        listed = []
        for ty in t.types:
            fn = f"{ty.module}_{hook}"
            if hook in ty.hooks and fn not in listed:
                listed.append(fn)
                out.append(f"    {fn},")
        out += ["    NULL,", "};"]
    out += ["#endif", "", "#endif", ""]
    return "\n".join(out)


def gen_call_fast(t: Table) -> list[str]:
    """call_fast[label] and call_decode[label] (keel/objtype.h): a call's
    type and rights checks as one compare of the capability's first two
    bytes, its argument count, and its type's decode hook, for the batch
    loop.  A call with capability arguments, and label 0, never pass the
    compare (the generic checks)."""
    decoders = {ty.name: ty.module for ty in t.types}
    fast = ["", "const struct call_fast call_fast[KEEL_NCALLS] = {",
            "    [0] = { 0, CALL_FAST_NEVER, 0, { 0 } },"]  # fmt: skip
    decode = ["", "long (*const call_decode[KEEL_NCALLS])(struct invocation *inv) = {"]
    for call in t.calls:
        label = f"KEEL_CALL_{call.name.upper()}"
        rights = rights_expr(call.rights)
        never = " | CALL_FAST_NEVER" if any(a.cap_type for a in call.args) else ""
        fast.append(
            f"    [{label}] = {{ 0xff | ({rights}) << 8, "
            f"KEEL_OBJ_{call.obj.upper()} | ({rights}) << 8{never}, {len(call.args)}, {{ 0 }} }},"
        )
        decode.append(f"    [{label}] = {decoders[call.obj]}_decode,")
    return [*fast, "};", *decode, "};"]


ARG_REGS = ["rdx", "r10", "r8", "r9", "r12", "r13"]


def gen_stubs_h(t: Table) -> str:
    out = [
        "/* Generated by scripts/gencalls.py from kernel/calls.tbl: do not edit.",
        " * One stub per kernel call: keel_<object>_<method>(cap, args..., results...).",
        " * Each returns the error code (KEEL_E_OK on success). */",
        "#ifndef KEEL_STUBS_GEN_H",
        "#define KEEL_STUBS_GEN_H",
        "",
        "#include <keel/abi_gen.h>",
        "#include <keel/syscall.h>",
        "",
    ]
    for call in t.calls:
        params = ["keel_cap_t cap"]
        params += [f"keel_word_t {a.name}" for a in call.args]
        params += [f"keel_word_t *{r}" for r in call.results]
        out.append(f"static inline long keel_{call.name}({', '.join(params)})")
        out.append("{")
        argv = [a.name for a in call.args] + ["0"] * (MAX_ARGS - len(call.args))
        out.append(f"    keel_word_t in[{MAX_ARGS}] = {{ {', '.join(argv)} }};")
        if call.results:
            out.append(f"    keel_word_t res[{MAX_RESULTS}];")
            out.append(f"    long err = keel_invoke(cap, KEEL_CALL_{call.name.upper()}, in, res);")
            for i, r in enumerate(call.results):
                out.append(f"    if ({r})")
                out.append(f"        *{r} = res[{i}];")
            out.append("    return err;")
        else:
            out.append(f"    return keel_invoke(cap, KEEL_CALL_{call.name.upper()}, in, 0);")
        out.append("}")
        out.append("")
    # The batch builder: keel_batch_<call>(batch, cap, args...) appends a
    # record and returns its index (for KEEL_BATCH_REF).
    out += [
        "struct keel_batch {",
        "    struct keel_call_rec *rec;",
        "    unsigned long n, max;",
        "};",
        "",
        "static inline struct keel_call_rec *keel_batch_next(struct keel_batch *b)",
        "{",
        "    struct keel_call_rec *r = &b->rec[b->n < b->max ? b->n : b->max - 1];",
        "    for (unsigned long i = 0; i < sizeof(*r) / sizeof(keel_word_t); i++)",
        "        ((keel_word_t *)r)[i] = 0;",
        "    return r;",
        "}",
        "",
        "/* Makes argument arg of record rec the result res of record call. */",
        "static inline void keel_batch_ref(struct keel_batch *b, unsigned long rec,",
        "                                  unsigned arg, unsigned long call, unsigned res)",
        "{",
        "    b->rec[rec].refs |= 1ul << arg;",
        "    if (arg == KEEL_REF_CAP)",
        "        b->rec[rec].cap = KEEL_BATCH_REF(call, res);",
        "    else",
        "        b->rec[rec].arg[arg] = KEEL_BATCH_REF(call, res);",
        "}",
        "",
        "static inline long keel_batch_run(struct keel_batch *b, unsigned long flags,",
        "                                  unsigned long *done)",
        "{",
        "    return keel_batch_syscall(b->rec, b->n, flags, done);",
        "}",
        "",
    ]
    for call in t.calls:
        params = ["struct keel_batch *b", "keel_cap_t cap"]
        params += [f"keel_word_t {a.name}" for a in call.args]
        out.append(f"static inline unsigned long keel_batch_{call.name}({', '.join(params)})")
        out.append("{")
        out.append("    struct keel_call_rec *r = keel_batch_next(b);")
        out.append("    r->cap = cap;")
        out.append(f"    r->label = KEEL_CALL_{call.name.upper()};")
        for i, a in enumerate(call.args):
            out.append(f"    r->arg[{i}] = {a.name};")
        out.append("    return b->n < b->max ? b->n++ : b->n;")
        out.append("}")
        out.append("")
    out.append("static const char *const keel_call_names[KEEL_NCALLS] = {")
    for call in t.calls:
        out.append(f'    [KEEL_CALL_{call.name.upper()}] = "{call.name}",')
    out += ["};", ""]
    out += ["#endif", ""]
    return "\n".join(out)


def gen_python(t: Table) -> str:
    out = [
        '"""Generated by scripts/gencalls.py from kernel/calls.tbl: do not edit."""',
        "",
        "ERRORS = {",
    ]
    out += [f"    {name!r}: {value}," for name, value, _ in t.errors]
    out += ["}", "TYPES = {"]
    out += [f"    {ty.name!r}: ({ty.value}, {ty.size_bits})," for ty in t.types]
    out += ["}", "RIGHTS = {"]
    out += [f"    {name!r}: {value}," for name, value in t.rights]
    out += ["}", "CALLS = {"]
    for label, call in enumerate(t.calls, 1):
        args = [(a.name, a.cap_type) for a in call.args]
        out.append(
            f"    {call.name!r}: ({label}, {call.obj!r}, {call.rights!r}, {args!r}, "
            f"{call.results!r}),"
        )
    out += ["}", ""]
    return "\n".join(out)


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    try:
        table = parse(Path(argv[1]).read_text())
    except (OSError, TableError, ValueError, IndexError) as exc:
        print(f"gencalls: {exc}", file=sys.stderr)
        return 1
    outdir = Path(argv[2])
    inc = outdir / "include" / "keel"
    inc.mkdir(parents=True, exist_ok=True)
    files = {
        inc / "abi_gen.h": gen_abi_h(table),
        inc / "calls_gen.h": gen_calls_h(table),
        inc / "types_gen.h": gen_types_h(table),
        inc / "stubs_gen.h": gen_stubs_h(table),
        outdir / "keel_abi.py": gen_python(table),
    }
    for path, text in files.items():
        if not path.exists() or path.read_text() != text:
            path.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
