"""The TCPProxy test helper: cuts, and leaving the block with connections still open."""

from __future__ import annotations

import anyio
import anyio.abc
import pytest

from resumable_streams.testing import TCPProxy

from .support import wait_until

pytestmark = pytest.mark.anyio


class EchoServer:
    """Echoes; counts the connections whose end it has seen and finished with.

    Like a real server it does some work when a connection ends (a request handler told of
    the disconnect, a response finished) before it closes its socket.
    """

    def __init__(self) -> None:
        self.started = 0
        self.ended = 0

    async def handle(self, stream: anyio.abc.SocketStream) -> None:
        self.started += 1
        async with stream:
            try:
                while True:
                    await stream.send(await stream.receive())
            except (anyio.EndOfStream, anyio.BrokenResourceError, OSError):
                pass
            await anyio.sleep(0.05)  # the server's own shutdown of the connection
            self.ended += 1


async def test_leaving_the_block_lets_the_server_close_open_connections() -> None:
    server = EchoServer()
    with anyio.fail_after(20):
        async with (
            await anyio.create_tcp_listener(local_host="127.0.0.1") as listener,
            anyio.create_task_group() as tg,
        ):
            port = listener.extra(anyio.abc.SocketAttribute.local_port)
            tg.start_soon(listener.serve, server.handle)
            async with TCPProxy("127.0.0.1", port) as proxy:
                busy = await anyio.connect_tcp("127.0.0.1", proxy.port)
                idle = await anyio.connect_tcp("127.0.0.1", proxy.port)  # like a preconnect
                await busy.send(b"ping")
                assert await busy.receive() == b"ping"
                await wait_until(lambda: proxy.open_connections == 2 and server.started == 2)
            # Both clients are still open (a browser keeps its connections): leaving the
            # block waited until the server had closed its end of each one.
            assert server.ended == 2
            assert proxy.open_connections == 0
            for client in (busy, idle):
                with pytest.raises((anyio.EndOfStream, anyio.BrokenResourceError, OSError)):
                    await client.receive()
                await client.aclose()
            tg.cancel_scope.cancel()


async def test_cuts_are_counted_and_budgets_cut_mid_stream() -> None:
    server = EchoServer()
    with anyio.fail_after(20):
        async with (
            await anyio.create_tcp_listener(local_host="127.0.0.1") as listener,
            anyio.create_task_group() as tg,
        ):
            port = listener.extra(anyio.abc.SocketAttribute.local_port)
            tg.start_soon(listener.serve, server.handle)
            async with TCPProxy("127.0.0.1", port) as proxy:
                proxy.cut_after(3)
                async with await anyio.connect_tcp("127.0.0.1", proxy.port) as client:
                    await client.send(b"hello")
                    received = b""
                    try:
                        while True:
                            received += await client.receive()
                    except (anyio.EndOfStream, anyio.BrokenResourceError, OSError):
                        pass  # cut
                    assert received == b"hel"
                await wait_until(lambda: proxy.open_connections == 0)
                assert proxy.cuts == 1
                assert proxy.accepted == 1
            tg.cancel_scope.cancel()
