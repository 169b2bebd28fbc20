"""Small record classes for the modules every `keel run` imports.

``@record`` gives a class with annotated fields an ``__init__`` taking them in
order (with their defaults), ``__repr__`` and ``__eq__`` over them, and with
``frozen=True`` no assignment after construction and a ``__hash__``.  It is
what those modules used ``dataclasses.dataclass`` for; ``dataclasses``
imports inspect, ast, dis, tokenize and re, about 8 ms of every start
(python -X importtime), more than the rest of the VMM's set-up.  A mutable
default is written ``field(default_factory=list)``; ``replace(obj, **changes)`` copies a
record with some fields changed.  Type checkers treat ``record`` as a
dataclass (PEP 681).  ``NamedTuple`` and ``Protocol`` stand in for typing's
at run time in modules every run imports (``if TYPE_CHECKING: from typing
import ...; else: from vmm.records import ...``).
"""

from __future__ import annotations

from collections import namedtuple

TYPE_CHECKING = False  # typing costs about 3 ms of start-up (python -X importtime)
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any, TypeVar, dataclass_transform

    T = TypeVar("T")
else:

    def dataclass_transform(**kwargs: object) -> Callable[[T], T]:
        return lambda f: f


class _Factory:
    __slots__ = ("make",)

    def __init__(self, make: Callable[[], Any]) -> None:
        self.make = make


def field(*, default_factory: Callable[[], T]) -> T:
    """A field's default made afresh for each record: ``field(default_factory=list)``."""
    return _Factory(default_factory)  # type: ignore[return-value]


def _fields(cls: type) -> list[str]:
    names: list[str] = []
    for klass in reversed(cls.__mro__):
        for name in vars(klass).get("__annotations__", {}):
            if name not in names and not name.startswith("_"):
                names.append(name)
    return names


def _setattr_frozen(self: object, name: str, value: object) -> None:
    raise AttributeError(f"cannot assign to field {name!r} of a frozen {type(self).__name__}")


@dataclass_transform(field_specifiers=(field,))
def record(cls: type[T] | None = None, *, frozen: bool = False) -> Any:
    """``@record`` or ``@record(frozen=True)`` on a class with annotated fields."""

    def make(cls: type[T]) -> type[T]:
        names = _fields(cls)
        defaults = {n: cls.__dict__[n] for n in names if n in cls.__dict__}
        params, body, env = [], [], {"_set": object.__setattr__}
        for name in names:
            if name in defaults:
                env[f"_d_{name}"] = defaults[name]
                params.append(f"{name}=_d_{name}")
            elif params and "=" in params[-1]:
                raise TypeError(f"{cls.__name__}: field {name!r} without a default after one with")
            else:
                params.append(name)
            value = name
            if isinstance(defaults.get(name), _Factory):
                value = f"{name}.make() if {name} is _d_{name} else {name}"
            body.append(f"    _set(self, {name!r}, {value})")
        src = f"def __init__(self, {', '.join(params)}):\n" + ("\n".join(body) or "    pass")
        exec(src, env)
        init = env["__init__"]
        init.__qualname__ = f"{cls.__qualname__}.__init__"
        attrs = dict(cls.__dict__)
        for name in names:
            attrs.pop(name, None)
        attrs.pop("__dict__", None)
        attrs.pop("__weakref__", None)
        attrs["__slots__"] = tuple(n for n in names if n not in _slots_above(cls))
        attrs["__init__"] = init
        attrs["__match_args__"] = tuple(names)
        attrs["_fields"] = tuple(names)

        def __repr__(self: object) -> str:
            inner = ", ".join(f"{n}={getattr(self, n)!r}" for n in names)
            return f"{type(self).__qualname__}({inner})"

        def __eq__(self: object, other: object) -> bool:
            if type(other) is not type(self):
                return NotImplemented
            return all(getattr(self, n) == getattr(other, n) for n in names)

        attrs.setdefault("__repr__", __repr__)
        attrs.setdefault("__eq__", __eq__)
        if frozen:
            attrs["__setattr__"] = _setattr_frozen

            def __hash__(self: object) -> int:
                return hash(tuple(getattr(self, n) for n in names))

            attrs["__hash__"] = __hash__
        else:
            attrs["__hash__"] = None
        new: type[T] = type(cls.__name__, cls.__bases__, attrs)
        return new

    return make if cls is None else make(cls)


def _slots_above(cls: type) -> set[str]:
    out: set[str] = set()
    for klass in cls.__mro__[1:]:
        out.update(getattr(klass, "__slots__", ()))
    return out


def replace(obj: T, **changes: Any) -> T:
    """A copy of the record ``obj`` with ``changes``."""
    names: tuple[str, ...] = obj._fields  # type: ignore[attr-defined]
    values = {n: changes.pop(n) if n in changes else getattr(obj, n) for n in names}
    if changes:
        raise TypeError(f"{type(obj).__name__} has no field {next(iter(changes))!r}")
    return type(obj)(**values)


class _NamedTupleMeta(type):
    """``class Name(NamedTuple)`` made a ``collections.namedtuple`` with the
    class's annotated fields, their defaults and its methods, as
    ``typing.NamedTuple`` does (typing, with re and enum, costs about 4 ms of
    each start; python -X importtime)."""

    def __new__(mcls, name: str, bases: tuple[type, ...], ns: dict[str, Any]) -> Any:
        if not bases:
            return super().__new__(mcls, name, bases, ns)
        fields = list(ns.get("__annotations__", {}))
        defaults = [ns[f] for f in fields if f in ns]
        made = namedtuple(name, fields, defaults=defaults, module=ns.get("__module__"))  # type: ignore[misc]
        for key, value in ns.items():
            if key not in fields and key not in ("__annotations__", "__module__", "__qualname__"):
                setattr(made, key, value)
        made.__qualname__ = ns.get("__qualname__", name)
        return made


class NamedTuple(metaclass=_NamedTupleMeta):
    """Base of a named tuple class at run time (type checkers see typing's)."""


class Protocol:
    """Base of a protocol class at run time (type checkers see typing's)."""
