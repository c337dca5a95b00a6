"""The trio-websocket server (trio only: it has no asyncio flavour) with the resuming client."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import pytest
import trio

from resumable_streams import ResumableStreamContext
from resumable_streams.errors import ReconnectFailedError, RemoteStreamNotFoundError
from resumable_streams.resumable.producer import MakeStream
from resumable_streams.testing import TCPProxy
from resumable_streams.transports import (
    RetryPolicy,
    open_resumable_websocket,
    serve_resumable_websockets,
)

from .test_clients import FAST_RETRY, PRODUCED, Source, read_until_complete


@pytest.mark.trio
@pytest.mark.parametrize("backend_url", ["memory"], indirect=True)
async def test_trio_websocket_server_resumes_through_cuts(
    make_ctx: Callable[..., ResumableStreamContext],
) -> None:
    source = Source()

    def make_stream(stream_id: str) -> MakeStream | None:
        return source if stream_id == "s" else None

    def stream_id_for_path(path: str) -> str | None:
        return path.removeprefix("/streams/") if path.startswith("/streams/") else None

    with trio.fail_after(60):
        async with make_ctx() as ctx, trio.open_nursery() as nursery:
            server = await nursery.start(
                lambda task_status: serve_resumable_websockets(
                    ctx,
                    "127.0.0.1",
                    0,
                    make_stream=make_stream,
                    stream_id_for_path=stream_id_for_path,
                    task_status=task_status,
                )
            )
            async with TCPProxy("127.0.0.1", server.port) as proxy:
                proxy.budget = lambda i: 500 + 300 * i if i < 10 else None
                reader = open_resumable_websocket(
                    f"ws://127.0.0.1:{proxy.port}/streams/s", retry=FAST_RETRY
                )

                assert await read_until_complete(reader) == PRODUCED
                source.finish.set()
                assert reader.reconnects >= 1
                # Resume-only for other ids; a path the mapping refuses is a 404 handshake.
                for path, match in [("/streams/other", "other"), ("/elsewhere", "404")]:
                    url = f"ws://127.0.0.1:{server.port}{path}"
                    with pytest.raises(RemoteStreamNotFoundError, match=match):
                        await open_resumable_websocket(url, retry=FAST_RETRY).read_all()
            nursery.cancel_scope.cancel()


@pytest.mark.trio
@pytest.mark.parametrize("backend_url", ["memory"], indirect=True)
async def test_a_failing_session_does_not_take_the_server_down(
    make_ctx: Callable[..., ResumableStreamContext], caplog: pytest.LogCaptureFixture
) -> None:
    async def hello() -> AsyncIterator[str]:
        yield "hello 😀"

    def make_stream(stream_id: str) -> MakeStream | None:
        if stream_id == "bad":
            raise RuntimeError(f"no source for {stream_id!r}")
        return hello

    once = RetryPolicy(max_retries=1, initial_delay=0.001, max_delay=0.002)
    with trio.fail_after(30):
        async with make_ctx() as ctx, trio.open_nursery() as nursery:
            server = await nursery.start(
                lambda task_status: serve_resumable_websockets(
                    ctx, "127.0.0.1", 0, make_stream=make_stream, task_status=task_status
                )
            )
            url = f"ws://127.0.0.1:{server.port}"
            # The failure is the server's (1011, retried like any server error)...
            with pytest.raises(ReconnectFailedError, match="1011") as failed:
                await open_resumable_websocket(f"{url}/bad", retry=once).read_all()
            assert failed.value.position == 0
            assert "no source for 'bad'" in caplog.text
            # ...and the server still serves everyone else.
            assert await open_resumable_websocket(f"{url}/good").read_all() == "hello 😀"
            nursery.cancel_scope.cancel()
