from __future__ import annotations

import pytest

from tests.resumable.conftest import backend_url, make_ctx

__all__ = ["backend_url", "make_ctx"]

#: (anyio backend, ASGI server): hypercorn runs on both backends, uvicorn on asyncio only.
BACKEND_SERVERS = [("trio", "hypercorn"), ("asyncio", "hypercorn"), ("asyncio", "uvicorn")]


@pytest.fixture(params=BACKEND_SERVERS, ids=["-".join(p) for p in BACKEND_SERVERS])
def backend_and_server(request: pytest.FixtureRequest) -> tuple[str, str]:
    """ASGI tests use this to override ``anyio_backend`` and pick the server."""
    value: tuple[str, str] = request.param
    return value


@pytest.fixture
def asgi_server(backend_and_server: tuple[str, str]) -> str:
    return backend_and_server[1]
