"""No one-element ``ExceptionGroup`` escapes a public call."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["unwrap_single"]


@contextmanager
def unwrap_single() -> Iterator[None]:
    """Re-raise the lone exception of a one-element (possibly nested) exception group."""
    try:
        yield
    except BaseExceptionGroup as group:
        inner: BaseException = group
        while isinstance(inner, BaseExceptionGroup) and len(inner.exceptions) == 1:
            inner = inner.exceptions[0]
        if inner is group:
            raise
        # Keep the inner exception's own cause (``raise X from Y`` inside a task).
        raise inner from (inner.__cause__ if inner.__cause__ is not None else group.__cause__)
