"""The inspector's listing endpoint and assets, in process (httpx2 ASGI transport).

Runs under trio and asyncio, on the memory, sqlite and Redis engines; the storage is opened
by the test and handed to ``create_app``.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import httpx2
import pytest
from starlette.applications import Starlette

from resumable_streams._protocol.durable.planning import parse_append_request, parse_create_request
from resumable_streams.durable.server import create_app
from resumable_streams.durable.server.inspector import API_PATH, add_inspector
from resumable_streams.storage import StreamStorage, open_storage
from resumable_streams.storage.memory import MemoryStorage
from resumable_streams.storage.redis import RedisStorage

pytestmark = pytest.mark.anyio


@pytest.fixture(params=["memory", "sqlite", "redis"])
async def storage(
    request: pytest.FixtureRequest, tmp_path: Path, key_prefix: str
) -> AsyncIterator[StreamStorage]:
    if request.param == "redis":  # a real redis-server; this test's own key prefix
        redis_url: str = request.getfixturevalue("redis_url")
        async with RedisStorage.open(redis_url, prefix=key_prefix) as redis_storage:
            yield redis_storage
        return
    async with open_storage(request.param, data_dir=tmp_path / "data") as opened:
        yield opened


def _client(app: Starlette) -> httpx2.AsyncClient:
    return httpx2.AsyncClient(transport=httpx2.ASGITransport(app=app), base_url="http://inspector")


async def _create(storage: StreamStorage, name: str, headers: dict[str, str], body: bytes) -> None:
    await storage.create(
        name, parse_create_request(headers, body, lambda value: value), now=time.time()
    )


async def test_listing(storage: StreamStorage) -> None:
    await _create(storage, "b/log", {"content-type": "text/plain", "stream-ttl": "60"}, b"hello")
    await _create(storage, "a", {"content-type": "application/json"}, b"[1,2]")
    await _create(storage, "gone", {"content-type": "text/plain"}, b"")
    await _create(storage, "expired", {"content-type": "text/plain", "stream-ttl": "1"}, b"x")
    await storage.append(
        "a",
        parse_append_request({"content-type": "application/json", "stream-closed": "true"}, b""),
        now=time.time(),
    )
    await storage.delete("gone", now=time.time())
    app = add_inspector(create_app(storage))
    with anyio.fail_after(20):
        async with _client(app) as client:
            listing = (await client.get(API_PATH)).json()
            names = [s["name"] for s in listing["streams"]]
            assert names in (["a", "b/log", "expired"], ["a", "b/log"])  # expiry is time-based
            by_name = {s["name"]: s for s in listing["streams"]}
            log = by_name["b/log"]
            assert log["path"] == "/v1/stream/b/log"
            assert (log["content_type"], log["size"], log["closed"]) == ("text/plain", 5, False)
            assert log["next_offset"] == "0000000000000000_0000000000000005"
            assert log["ttl_seconds"] == 60
            assert 0 < log["expires_in"] <= 60
            assert by_name["a"]["closed"] is True
            assert by_name["a"]["ttl_seconds"] is None
            assert by_name["a"]["expires_in"] is None
            assert listing["truncated"] is False
            limited = (await client.get(API_PATH, params={"limit": "1"})).json()
            assert [s["name"] for s in limited["streams"]] == ["a"]
            assert limited["truncated"] is True
            # an expired stream is not listed
            metas = await storage.list_streams(now=time.time() + 3600)
            assert [m.name for m in metas] == ["a"]


@pytest.mark.parametrize("limit", ["0", "10001", "-1", "x", ""])
async def test_bad_limit_is_400(limit: str) -> None:
    app = add_inspector(create_app(MemoryStorage()))
    with anyio.fail_after(20):
        async with _client(app) as client:
            response = await client.get(API_PATH, params={"limit": limit})
    assert response.status_code == 400
    assert f"got {limit!r}" in response.text


async def test_page_and_assets() -> None:
    app = add_inspector(create_app(MemoryStorage()))
    with anyio.fail_after(20):
        async with _client(app) as client:
            page = await client.get("/")
            assert page.status_code == 200
            assert page.headers["content-type"] == "text/html; charset=utf-8"
            assert "/_inspector/static/inspector.js" in page.text
            assert "http" not in page.text.replace("http-equiv", "")  # nothing from a CDN
            for name, kind in (("inspector.js", "text/javascript"), ("inspector.css", "text/css")):
                asset = await client.get(f"/_inspector/static/{name}")
                assert asset.status_code == 200
                assert asset.headers["content-type"].startswith(kind)
                assert asset.headers["x-content-type-options"] == "nosniff"
            missing = await client.get("/_inspector/static/../app.py")
            assert missing.status_code == 404
            # the protocol still answers beside the inspector
            assert (await client.put("/v1/stream/x")).status_code == 201
            assert (await client.get(API_PATH)).json()["streams"][0]["name"] == "x"


class _NoListing(MemoryStorage):
    async def list_streams(self, *, now: float, limit: int | None = None) -> list[object]:  # type: ignore[override]
        return await StreamStorage.list_streams(self, now=now, limit=limit)  # type: ignore[return-value]


async def test_engine_without_listing_is_501() -> None:
    app = add_inspector(create_app(_NoListing()))
    with anyio.fail_after(20):
        async with _client(app) as client:
            response = await client.get(API_PATH)
    assert response.status_code == 501
    assert "_NoListing cannot list its streams" in response.text


async def test_storage_not_open_is_503() -> None:
    app = add_inspector(Starlette())
    with anyio.fail_after(20):
        async with _client(app) as client:
            response = await client.get(API_PATH)
    assert response.status_code == 503
