"""Transports: resumable streams and Durable Streams over SSE and WebSocket.

Server side (ASGI, Starlette / FastAPI; hypercorn or uvicorn):
:class:`ResumableSSEResponse`.
"""

from __future__ import annotations

from .sse import ResumableSSEResponse as ResumableSSEResponse

__all__ = ["ResumableSSEResponse"]
