"""Resumable streams: the Node ``resumable-stream`` protocol, structured and cancel-safe."""

from __future__ import annotations

from .context import ResumableStreamContext as ResumableStreamContext
from .context import create_resumable_stream_context as create_resumable_stream_context
from .context import open_resumable_stream_context as open_resumable_stream_context
from .producer import MakeStream as MakeStream
from .streams import ResumableStream as ResumableStream

__all__ = [
    "MakeStream",
    "ResumableStream",
    "ResumableStreamContext",
    "create_resumable_stream_context",
    "open_resumable_stream_context",
]
