"""Transports: resumable streams and Durable Streams over SSE and WebSocket.

Servers (ASGI - Starlette / FastAPI on hypercorn or uvicorn - and trio-websocket):
:class:`ResumableSSEResponse`, :func:`handle_resumable_websocket`,
:func:`serve_resumable_websockets`. Clients that reconnect and resume by themselves:
:func:`open_resumable_sse`, :func:`open_resumable_websocket`. Durable Streams over
WebSocket, next to the HTTP server: :func:`add_durable_websocket`,
:func:`handle_durable_websocket`, and a reader that resumes from its offset:
:func:`open_durable_websocket`.
"""

from __future__ import annotations

from .client import ResumingReader as ResumingReader
from .client import RetryPolicy as RetryPolicy
from .client import open_resumable_sse as open_resumable_sse
from .client import open_resumable_websocket as open_resumable_websocket
from .durable_ws import add_durable_websocket as add_durable_websocket
from .durable_ws import handle_durable_websocket as handle_durable_websocket
from .durable_ws_client import DurableMessage as DurableMessage
from .durable_ws_client import DurableWebSocketReader as DurableWebSocketReader
from .durable_ws_client import open_durable_websocket as open_durable_websocket
from .sse import ResumableSSEResponse as ResumableSSEResponse
from .websocket import handle_resumable_websocket as handle_resumable_websocket
from .websocket import serve_resumable_websockets as serve_resumable_websockets

__all__ = [
    "DurableMessage",
    "DurableWebSocketReader",
    "ResumableSSEResponse",
    "ResumingReader",
    "RetryPolicy",
    "add_durable_websocket",
    "handle_durable_websocket",
    "handle_resumable_websocket",
    "open_durable_websocket",
    "open_resumable_sse",
    "open_resumable_websocket",
    "serve_resumable_websockets",
]
