"""vmm.records: the record classes and the run-time NamedTuple and Protocol of the
modules every `keel run` imports behave as the dataclasses and typing's did."""

from __future__ import annotations

import pickle
import typing

import pytest

from vmm.records import NamedTuple, field, record, replace


@record
class Point:
    x: int
    y: int = 2
    tags: list[str] = field(default_factory=list)


@record(frozen=True)
class Frozen:
    a: int
    b: str = "b"


def test_init_defaults_and_fresh_factories() -> None:
    p = Point(1)
    assert (p.x, p.y, p.tags) == (1, 2, [])
    q = Point(1, tags=["t"])
    assert p.tags is not Point(1).tags and q.tags == ["t"]
    with pytest.raises(TypeError):
        Point()  # type: ignore[call-arg]
    with pytest.raises(AttributeError):
        p.z = 3  # type: ignore[attr-defined]  # slots: no other attributes


def test_eq_repr_and_hash() -> None:
    assert Point(1, 2) == Point(1, 2) and Point(1) != Point(2)
    assert Point(1) != (1, 2, [])
    assert repr(Point(1)) == "Point(x=1, y=2, tags=[])"
    assert Point.__hash__ is None
    assert hash(Frozen(1)) == hash(Frozen(1)) and {Frozen(1), Frozen(1)} == {Frozen(1)}


def test_frozen_and_replace() -> None:
    f = Frozen(1)
    with pytest.raises(AttributeError):
        f.a = 2  # type: ignore[misc]
    g = replace(f, b="c")
    assert (g.a, g.b, f.b) == (1, "c", "b")
    with pytest.raises(TypeError):
        replace(f, c=1)


def test_a_field_without_default_after_one_with_is_refused() -> None:
    with pytest.raises(TypeError):

        @record
        class Bad:
            a: int = 1
            b: int


class Pair(NamedTuple):
    """doc"""

    left: int
    right: bool = False

    @property
    def both(self) -> tuple[int, bool]:
        return (self.left, self.right)


class TypingPair(typing.NamedTuple):
    left: int
    right: bool = False


def test_named_tuple_is_typings() -> None:
    p = Pair(1)
    assert p == TypingPair(1) == (1, False)
    assert Pair._fields == TypingPair._fields and Pair._field_defaults == TypingPair._field_defaults
    left, right = Pair(3, True)
    assert (left, right) == (3, True) and Pair(3, True).both == (3, True)
    assert repr(p) == "Pair(left=1, right=False)" and Pair.__doc__ == "doc"
    assert p._replace(right=True) == (1, True) and isinstance(p, tuple)
    assert pickle.loads(pickle.dumps(p)) == p
