"""Produce a stream, lose the consumer half-way, resume exactly where it stopped.

Runs on the embedded in-memory backend (no Redis needed) under trio; pass ``asyncio`` as the
first argument to run it under asyncio, and set ``REDIS_URL`` to run it through Redis::

    python examples/resume_demo.py [trio|asyncio]
"""

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import AsyncIterator

import anyio

from resumable_streams import ResumableStream, open_resumable_stream_context

WORDS = ["Streams", "that", "survive", "lost", "connections", "resume", "exactly"]
WORDS += ["where", "they", "stopped.", "\N{ROCKET}"]


async def answer() -> AsyncIterator[str]:
    """A stand-in for an LLM answer: one token every 50 ms."""
    for word in WORDS:
        await anyio.sleep(0.05)
        yield word + " "


async def main() -> None:
    url = os.environ.get("REDIS_URL", "memory://demo")
    stream_id = f"answer-{uuid.uuid4().hex[:8]}"
    async with open_resumable_stream_context(redis_url=url, key_prefix="demo") as ctx:
        first = await ctx.resumable_stream(stream_id, answer)
        assert isinstance(first, ResumableStream)
        received = ""
        async with first:  # the "connection" drops after 4 tokens
            async for chunk in first:
                received += chunk
                if first.position >= len("".join(w + " " for w in WORDS[:4])):
                    break
        print(f"client 1 got {first.position} characters, then lost its connection")
        print(f"  {received!r}")

        await anyio.sleep(0.2)  # the producer keeps going meanwhile

        resumed = await ctx.resume_existing_stream(stream_id, skip_characters=first.position)
        assert isinstance(resumed, ResumableStream)
        rest = await resumed.read_all()
        print(f"client 2 resumed at {first.position} and got the rest: {rest!r}")
        full = received + rest
        assert full == "".join(w + " " for w in WORDS), full
        print("resumed text matches the produced text exactly")
        print("stream state:", await ctx.has_existing_stream(stream_id))


if __name__ == "__main__":
    anyio.run(main, backend=sys.argv[1] if len(sys.argv) > 1 else "trio")
