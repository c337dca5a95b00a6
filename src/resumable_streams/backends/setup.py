"""Turn a URL, or the clients a user passed, into a running (Publisher, Subscriber) pair."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any
from urllib.parse import urlsplit

from ..errors import ConfigurationError
from .base import Publisher, Subscriber

__all__ = ["open_backends"]


def _wrap(obj: Any, role: str) -> Any:
    """Adapt a raw coredis / redis-py client; pass Publisher/Subscriber objects through."""
    module = type(obj).__module__
    if module.startswith("coredis"):
        from .coredis import CoredisPublisher, CoredisSubscriber

        return CoredisPublisher(obj) if role == "publisher" else CoredisSubscriber(obj)
    if module.startswith("redis."):
        from .redis_py import RedisPyPublisher, RedisPySubscriber

        return RedisPyPublisher(obj) if role == "publisher" else RedisPySubscriber(obj)
    wanted = Publisher if role == "publisher" else Subscriber
    if not isinstance(obj, wanted):
        raise ConfigurationError(
            f"{role}={obj!r} is neither a {wanted.__name__} nor a coredis/redis-py client"
        )
    return obj


async def _start(stack: AsyncExitStack, backend: Any) -> None:
    if hasattr(backend, "__aenter__"):
        await stack.enter_async_context(backend)
    else:
        await backend.connect()


@asynccontextmanager
async def open_backends(
    redis_url: str | None, publisher: Any, subscriber: Any
) -> AsyncIterator[tuple[Publisher, Subscriber]]:
    """Open what the context needs; close, on exit, only what was opened here."""
    async with AsyncExitStack() as stack:
        if publisher is None or subscriber is None:
            assert redis_url is not None
            scheme = urlsplit(redis_url).scheme
            if scheme == "memory":
                from .memory import MemoryBroker, MemoryPublisher, MemorySubscriber

                broker = MemoryBroker.named(urlsplit(redis_url).netloc or "default")
                publisher = publisher or MemoryPublisher(broker)
                subscriber = subscriber or MemorySubscriber(broker)
            else:
                from .coredis import CoredisPublisher, CoredisSubscriber, open_coredis_client

                client = await stack.enter_async_context(open_coredis_client(redis_url))
                publisher = publisher or CoredisPublisher(client)
                subscriber = subscriber or CoredisSubscriber(client)
        pub = _wrap(publisher, "publisher")
        sub = _wrap(subscriber, "subscriber")
        await _start(stack, pub)
        if sub is not pub:
            await _start(stack, sub)
        yield pub, sub
