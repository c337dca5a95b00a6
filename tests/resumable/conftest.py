from __future__ import annotations

import contextlib
import gc
import uuid
import warnings
from collections.abc import AsyncIterator, Callable, Iterator

import pytest

from resumable_streams import ResumableStreamContext, open_resumable_stream_context

MakeCtx = Callable[..., ResumableStreamContext]


@pytest.fixture(params=["memory", "redis"])
def backend_url(request: pytest.FixtureRequest) -> str:
    """Every resumable-stream behaviour test runs on the in-memory backend and real Redis."""
    if request.param == "memory":
        return f"memory://{uuid.uuid4().hex}"
    url: str = request.getfixturevalue("redis_url")
    return url


@pytest.fixture
def make_ctx(backend_url: str, key_prefix: str) -> MakeCtx:
    def make(**options: object) -> ResumableStreamContext:
        options.setdefault("redis_url", backend_url)
        options.setdefault("key_prefix", key_prefix)
        return open_resumable_stream_context(**options)  # type: ignore[arg-type]

    return make


def chunks_source(
    chunks: list[str], *, delay: float = 0.0, gate: object = None
) -> Callable[[], AsyncIterator[str]]:
    """A make_stream that yields ``chunks`` with an optional delay between them."""
    import anyio

    async def gen() -> AsyncIterator[str]:
        for chunk in chunks:
            if delay:
                await anyio.sleep(delay)
            yield chunk

    return gen


@contextlib.contextmanager
def coredis_reconnect_litter() -> Iterator[None]:
    """Ignore coredis 6.9's litter from reconnect attempts while Redis is down.

    A connection that never connected leaves its anyio memory streams unclosed (a
    ``ResourceWarning`` when collected). Only that warning is ignored, and the garbage is
    collected here, inside the filter; our own ResourceWarnings still fail the test.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message="Unclosed <MemoryObject", category=ResourceWarning
        )
        try:
            yield
        finally:
            gc.collect()


def gated(first: list[str], rest: list[str], gate: object) -> AsyncIterator[str]:
    """A source that yields ``first``, waits for ``gate`` (an ``anyio.Event``), then ``rest``."""
    import anyio

    assert isinstance(gate, anyio.Event)

    async def gen() -> AsyncIterator[str]:
        for chunk in first:
            yield chunk
        await gate.wait()
        for chunk in rest:
            yield chunk

    return gen()
