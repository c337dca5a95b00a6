"""The inspector page that ``resumable-streams serve`` shows at ``/``.

A static page (HTML + JS + CSS in ``inspector_static/``, no build step, nothing from a CDN)
that lists the streams with their size, state, TTL and expiry, and live-tails one of them over
the protocol's own SSE read (``?live=sse``), resuming from the last offset it showed after a
lost connection or a server restart.

Routes added by :func:`add_inspector` (outside the protocol's ``/v1/stream/`` namespace):

- ``GET /``: the page;
- ``GET /_inspector/static/<file>``: its script and stylesheet;
- ``GET /_inspector/api/streams?limit=N``: the live streams as JSON (``limit`` 1..10000,
  default 1000), from :meth:`StreamStorage.list_streams`.
"""

from __future__ import annotations

import time
from importlib import resources
from typing import Any, Final

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Mount, Route

from ..._protocol.durable.model import StreamMeta, expiry_deadline
from ...storage.base import StreamStorage

__all__ = ["API_PATH", "add_inspector", "stream_summary"]

API_PATH: Final = "/_inspector/api/streams"
_STATIC: Final = {
    "inspector.js": "text/javascript; charset=utf-8",
    "inspector.css": "text/css; charset=utf-8",
}
_DEFAULT_LIMIT: Final = 1000
_MAX_LIMIT: Final = 10_000
_SECURITY: Final = {
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-store",
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:",
}


def _asset(name: str) -> bytes:
    return resources.files(__package__).joinpath("inspector_static", name).read_bytes()


def stream_summary(meta: StreamMeta, *, now: float) -> dict[str, Any]:
    """One stream as the listing endpoint shows it."""
    deadline = expiry_deadline(meta)
    return {
        "name": meta.name,
        "path": "/v1/stream/" + meta.name,
        "content_type": meta.content_type,
        "next_offset": str(meta.tail),
        "size": meta.tail.position,
        "closed": meta.closed,
        "ttl_seconds": meta.ttl,
        "expires_at": meta.expires_at,
        "expires_in": None if deadline is None else max(deadline - now, 0.0),
        "created_at": meta.created_at,
        "last_access": meta.last_access,
        "forked_from": meta.forked_from,
    }


def _storage(request: Request) -> StreamStorage | None:
    storage = getattr(request.app.state, "storage", None)
    return storage if isinstance(storage, StreamStorage) else None


async def _page(request: Request) -> Response:
    return Response(_asset("index.html"), media_type="text/html; charset=utf-8", headers=_SECURITY)


async def _static(request: Request) -> Response:
    name = request.path_params["name"]
    media_type = _STATIC.get(name)
    if media_type is None:
        return PlainTextResponse(f"no inspector file {name!r}", 404, headers=_SECURITY)
    return Response(_asset(name), media_type=media_type, headers=_SECURITY)


async def _list(request: Request) -> Response:
    raw = request.query_params.get("limit", str(_DEFAULT_LIMIT))
    try:
        limit = int(raw)
    except ValueError:
        limit = 0
    if not 1 <= limit <= _MAX_LIMIT:
        return PlainTextResponse(
            f"limit must be an integer from 1 to {_MAX_LIMIT}, got {raw!r}", 400, headers=_SECURITY
        )
    storage = _storage(request)
    if storage is None:
        return PlainTextResponse("the storage is not open yet", 503, headers=_SECURITY)
    now = time.time()
    try:
        metas = await storage.list_streams(now=now, limit=limit + 1)
    except NotImplementedError as exc:
        return PlainTextResponse(str(exc), 501, headers=_SECURITY)
    body = {
        "streams": [stream_summary(meta, now=now) for meta in metas[:limit]],
        "truncated": len(metas) > limit,
        "limit": limit,
        "now": now,
    }
    return JSONResponse(body, headers=_SECURITY)


def add_inspector(app: Starlette) -> Starlette:
    """Add the inspector's routes in front of ``app``'s own; returns ``app``.

    ``app`` must keep its storage on ``app.state.storage``, as :func:`create_app` does.
    """
    routes = [
        Route("/", _page, methods=["GET", "HEAD"]),
        Mount(
            "/_inspector",
            routes=[
                Route("/api/streams", _list, methods=["GET"]),
                Route("/static/{name}", _static, methods=["GET", "HEAD"]),
            ],
        ),
    ]
    app.router.routes[:0] = routes
    return app
