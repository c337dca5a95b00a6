"""``unwrap_single``: one-element groups are unwrapped, causes kept, real groups untouched."""

from __future__ import annotations

import pytest

from resumable_streams._core.groups import unwrap_single


def test_nested_single_groups_are_unwrapped_keeping_the_inner_cause() -> None:
    root = KeyError("root cause")
    try:
        raise ValueError("inner") from root
    except ValueError as exc:
        inner = exc
    with pytest.raises(ValueError, match="inner") as info, unwrap_single():
        raise BaseExceptionGroup("outer", [ExceptionGroup("middle", [inner])])
    assert info.value.__cause__ is root


def test_a_group_with_several_exceptions_is_left_alone() -> None:
    with pytest.raises(ExceptionGroup) as info, unwrap_single():
        raise ExceptionGroup("two", [ValueError("a"), KeyError("b")])
    assert len(info.value.exceptions) == 2
