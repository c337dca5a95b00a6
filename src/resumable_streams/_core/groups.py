"""No one-element ``ExceptionGroup`` escapes a public call."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import anyio

__all__ = ["unwrap_single"]


@contextmanager
def unwrap_single() -> Iterator[None]:
    """Re-raise the lone exception of a one-element (possibly nested) exception group.

    Cancellation leaves do not count when another exception is present: a block whose
    cleanup raised while it was being cancelled raises that error, not a group of it and
    the cancellation (which re-arrives at the next checkpoint of the cancelled scope).
    """
    try:
        yield
    except BaseExceptionGroup as group:
        inner = _lone(group)
        if inner is None:
            raise
        # Keep the inner exception's own cause (``raise X from Y`` inside a task).
        raise inner from (inner.__cause__ if inner.__cause__ is not None else group.__cause__)


def _lone(group: BaseExceptionGroup[BaseException]) -> BaseException | None:
    """The one non-cancellation exception in ``group`` (nested groups searched), if exactly one."""
    leaves = list(_leaves(group))
    if len(leaves) == 1:
        return leaves[0]
    try:
        cancelled = anyio.get_cancelled_exc_class()
    except RuntimeError:  # no event loop running: no cancellation to set aside
        return None
    real = [leaf for leaf in leaves if not isinstance(leaf, cancelled)]
    return real[0] if len(real) == 1 else None


def _leaves(group: BaseExceptionGroup[BaseException]) -> Iterator[BaseException]:
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            yield from _leaves(exc)
        else:
            yield exc
