from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable

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
