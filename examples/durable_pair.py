"""A Durable Streams producer and consumer pair: exactly-once writes, a live reader.

The producer writes JSON events through an :class:`IdempotentProducer` (batched, retried,
deduplicated by the server) and closes the stream; the consumer tails the stream over SSE
from offset -1 and stops by itself when the stream is closed. Without an argument the
example serves its own Durable Streams server (in memory, hypercorn on trio) on a free
loopback port; pass a stream URL to use a running server instead::

    python examples/durable_pair.py
    resumable-streams serve &  python examples/durable_pair.py http://127.0.0.1:4437/v1/stream/orders
"""

from __future__ import annotations

import sys
import uuid
from typing import Any

import trio
from hypercorn.config import Config
from hypercorn.trio import serve

from resumable_streams.durable import AsyncDurableStream, IdempotentProducer, astream
from resumable_streams.durable.server import create_app

EVENTS = 2_000


async def produce(stream: AsyncDurableStream) -> None:
    """Write EVENTS orders exactly once, then close the stream."""
    async with IdempotentProducer(stream, producer_id="order-writer", linger_ms=5) as producer:
        for number in range(EVENTS):
            producer.append_nowait({"order": number, "item": "\N{HOT BEVERAGE}", "qty": 1})
        await producer.flush()  # every batch is durable once this returns
        await producer.close_stream()
    print(f"producer: {EVENTS} events written, stream closed")


async def consume(url: str) -> list[Any]:
    """Read the stream from the start and follow it live until it is closed."""
    async with astream(url, offset="-1", live="sse") as response:
        items = [item async for item in response.iter_json()]
    print(f"consumer: {len(items)} events read, up to offset {response.offset}")
    return items


async def run_pair(url: str) -> None:
    """Create the stream, then run the consumer and the producer side by side."""
    stream = await AsyncDurableStream.create(url, content_type="application/json")
    received: list[Any] = []

    async def consumer() -> None:
        received.extend(await consume(url))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(consumer)
        await produce(stream)
    assert [item["order"] for item in received] == list(range(EVENTS))
    print("every event arrived once, in order")


async def main() -> None:
    if len(sys.argv) > 1:
        await run_pair(sys.argv[1])
        return
    config = Config()
    config.bind = ["127.0.0.1:0"]
    config.accesslog = None
    async with trio.open_nursery() as nursery:
        binds = await nursery.start(serve, create_app("memory"), config)
        base = binds[0]
        print(f"embedded Durable Streams server at {base}/v1/stream/")
        await run_pair(f"{base}/v1/stream/orders-{uuid.uuid4().hex[:8]}")
        nursery.cancel_scope.cancel()


if __name__ == "__main__":
    trio.run(main)
