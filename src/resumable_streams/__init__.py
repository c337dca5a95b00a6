"""resumable-streams: streams that survive lost connections (trio-native, runs on asyncio too).

Resumable streams (Node ``resumable-stream`` compatible)::

    async with open_resumable_stream_context(redis_url="redis://localhost") as ctx:
        stream = await ctx.resumable_stream("chat-42", make_stream)

Durable Streams (HTTP protocol, server and client): see :mod:`resumable_streams.durable`.
"""

from __future__ import annotations

from .backends import Publisher as Publisher
from .backends import Subscriber as Subscriber
from .errors import AckTimeoutError as AckTimeoutError
from .errors import ConfigurationError as ConfigurationError
from .errors import ResumableStreamsError as ResumableStreamsError
from .resumable import ResumableStream as ResumableStream
from .resumable import ResumableStreamContext as ResumableStreamContext
from .resumable import create_resumable_stream_context as create_resumable_stream_context
from .resumable import open_resumable_stream_context as open_resumable_stream_context

__version__ = "0.1.0.dev0"

__all__ = [
    "AckTimeoutError",
    "ConfigurationError",
    "Publisher",
    "ResumableStream",
    "ResumableStreamContext",
    "ResumableStreamsError",
    "Subscriber",
    "__version__",
    "create_resumable_stream_context",
    "open_resumable_stream_context",
]
