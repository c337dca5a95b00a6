"""Shared fixtures.

Rules of this test suite (as trio-websocket states its own):
- every async test runs under trio AND asyncio (the ``anyio_backend`` fixture below);
  trio-only tests use ``@pytest.mark.trio`` (pytest-trio, autojump clock where time matters);
- servers bind 127.0.0.1 on port 0 / a free port, never a shared instance;
- Redis is a real ``redis-server`` started by the run (``redis_server``); a test that kills or
  restarts Redis takes ``private_redis``; if ``redis-server`` is missing the run errors loudly;
- anything that can hang runs under ``anyio.fail_after``.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from resumable_streams.testing import RedisServer


@pytest.fixture(params=["trio", "asyncio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    """Run every ``@pytest.mark.anyio`` test on both backends."""
    return str(request.param)


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """One real redis-server for the whole run (tests isolate themselves by key prefix)."""
    with RedisServer() as server:
        yield server


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """URL of the session's redis-server."""
    return redis_server.url


@pytest.fixture
def private_redis() -> Iterator[RedisServer]:
    """A redis-server of this test's own, free to be killed or restarted."""
    with RedisServer() as server:
        yield server


@pytest.fixture
def key_prefix() -> str:
    """A key prefix no other test uses."""
    return f"test-{uuid.uuid4().hex[:12]}"
