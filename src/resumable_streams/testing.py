"""Test helpers: start a real, throw-away ``redis-server`` on a free loopback port.

The project's own tests and benchmarks use these, and so can yours::

    with RedisServer() as server:
        ctx = create_resumable_stream_context(redis_url=server.url)

:class:`RedisCluster` starts a small real Redis Cluster the same way (``redis-server`` with
``--cluster-enabled yes`` on free ports, joined by ``redis-cli --cluster create``).

:class:`TCPProxy` is a loopback TCP proxy the tests control: it forwards connections to a
server and cuts them on demand (or after a byte budget), which is how the transport tests
drop connections mid-stream.

Nothing here is imported by the library itself.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

import anyio
import anyio.abc
import anyio.lowlevel
import anyio.streams.stapled

__all__ = ["RedisServer", "RedisServerMissingError", "TCPProxy", "free_port"]


class RedisServerMissingError(RuntimeError):
    """``redis-server`` is not on ``PATH``; the message says how to install it."""


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class RedisServer:
    """A private ``redis-server`` process bound to 127.0.0.1 on a free port.

    It keeps nothing on disk and is stopped (SIGTERM, then SIGKILL) by :meth:`stop` or on
    leaving the ``with`` block. :meth:`restart` stops it and starts it again on the same
    port, which is how the tests simulate a Redis restart mid-stream.
    """

    def __init__(self, *, port: int | None = None, extra_args: tuple[str, ...] = ()) -> None:
        exe = shutil.which("redis-server")
        if exe is None:
            raise RedisServerMissingError(
                "redis-server is not installed or not on PATH; install it "
                "(Debian/Ubuntu: `apt-get install -y redis-server`) - the Redis tests need a "
                "real server and are never skipped"
            )
        self._exe = exe
        self.port = port or free_port()
        self._extra_args = extra_args
        self._dir = Path(tempfile.mkdtemp(prefix="rs-redis-"))
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The ``redis://`` URL of this server."""
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> None:
        """Start the server and wait until it answers ``PING``."""
        args = [
            self._exe,
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--save", "",
            "--appendonly", "no",
            "--dir", str(self._dir),
            "--loglevel", "warning",
            *self._extra_args,
        ]  # fmt: skip
        self._proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                err = self._proc.stderr.read().decode() if self._proc.stderr else ""
                raise RuntimeError(f"redis-server exited at start: {err.strip()}")
            if self.ping():
                return
            time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"redis-server on port {self.port} did not answer within {timeout}s")

    def ping(self) -> bool:
        """Return whether the server answers ``PING`` right now."""
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(64).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self) -> None:
        """Stop the server (idempotent)."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stderr:
            proc.stderr.close()

    def kill(self) -> None:
        """Kill the server abruptly (SIGKILL), as a crash would."""
        if self._proc is not None:
            self._proc.kill()
            self._proc.wait()
            if self._proc.stderr:
                self._proc.stderr.close()
            self._proc = None

    def restart(self) -> None:
        """Stop and start again on the same port (all data is gone)."""
        self.stop()
        self.start()

    def __enter__(self) -> RedisServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
        shutil.rmtree(self._dir, ignore_errors=True)


class TCPProxy:
    """A loopback TCP proxy (anyio: trio or asyncio) that cuts connections when told to.

    ::

        async with TCPProxy("127.0.0.1", server_port) as proxy:
            url = f"http://127.0.0.1:{proxy.port}/..."
            proxy.cut_after(4096)   # every new connection dies after 4 KiB from the server
            proxy.cut_all()         # drop every open connection now

    A cut closes both sides at once, mid-message if need be (the client sees a reset or
    EOF, the server a broken pipe). ``cut_after(n)`` applies to each connection accepted
    afterwards (``None`` = never); ``next_budget`` may instead be a callable returning the
    budget per connection. :attr:`accepted` counts connections, :attr:`cuts` the cut ones,
    :attr:`open_connections` those still open. With :attr:`stall` set, a connection whose
    budget is spent is not cut: nothing more from the server reaches the client, which sees
    no end either (a dead network path), until the client closes.

    Leaving the block closes what is still open (a client such as a browser may keep idle
    connections): the client sides at once; each server side with an end-of-file, then - for
    up to :attr:`exit_grace` seconds - waiting until the server closed its end too, then
    closing it. So when the block is left, a server that closes on end-of-file (uvicorn,
    hypercorn on trio) has seen every connection end and closed its socket while its event
    loop still runs: tests need not close the connections themselves before leaving.
    """

    exit_grace: float = 1.0
    """How long leaving the block waits for the server to close each connection's far end
    (an upper bound: hypercorn on asyncio keeps an idle half-closed connection open until its
    keep-alive timeout)."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target_host = target_host
        self.target_port = target_port
        self.port = 0
        self.accepted = 0
        self.cuts = 0
        self.budget: Callable[[int], int | None] = lambda _index: None
        self._scopes: set[anyio.CancelScope] = set()
        self._tg: anyio.abc.TaskGroup | None = None
        self._listener: anyio.streams.stapled.MultiListener[anyio.abc.SocketStream] | None = None
        self._open: set[anyio.abc.SocketStream] = set()
        self._exiting = False
        self.stall = False
        """Whether a spent budget silences the connection instead of cutting it."""

    @property
    def open_connections(self) -> int:
        """How many proxied connections are open (accepted and not yet closed)."""
        return len(self._scopes)

    def cut_after(self, nbytes: int | None) -> None:
        """Cut each later connection after ``nbytes`` bytes from the server (``None``: never)."""
        self.budget = lambda _index: nbytes

    def cut_all(self) -> None:
        """Cut every open connection now."""
        for scope in list(self._scopes):
            scope.cancel()

    async def __aenter__(self) -> TCPProxy:
        listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
        self._listener = listener
        self.port = listener.extra(anyio.abc.SocketAttribute.local_port)
        self._tg = anyio.create_task_group()
        await self._tg.__aenter__()
        for one in listener.listeners:
            self._tg.start_soon(self._accept_loop, one, self._tg)
        return self

    async def _accept_loop(
        self, listener: anyio.abc.Listener[anyio.abc.SocketStream], tg: anyio.abc.TaskGroup
    ) -> None:
        if not isinstance(listener, anyio.abc.SocketListener):
            raise TypeError(f"expected a socket listener, got {listener!r}")
        while True:
            client = await listener.accept()
            # Owned from here: closed on exit even if its handler never gets to run (asyncio
            # does not start a task cancelled before its first step).
            self._open.add(client)
            tg.start_soon(self._handle, client)

    async def _forget(self, *streams: anyio.abc.SocketStream) -> None:
        with anyio.CancelScope(shield=True):
            for stream in streams:
                self._open.discard(stream)
                await anyio.aclose_forcefully(stream)
            await anyio.lowlevel.checkpoint()  # let asyncio finish the closes it scheduled

    async def _close_upstream(self, server: anyio.abc.SocketStream) -> None:
        """Half-close ``server`` and wait (bounded) until the server closed its end too."""
        with anyio.CancelScope(shield=True), anyio.move_on_after(self.exit_grace):
            try:
                await server.send_eof()
                while True:
                    await server.receive(65536)
            except (
                anyio.EndOfStream,
                anyio.BrokenResourceError,
                anyio.ClosedResourceError,
                OSError,
            ):
                pass
        await self._forget(server)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        assert self._tg is not None
        assert self._listener is not None
        self._exiting = True
        self._tg.cancel_scope.cancel()
        try:
            return await self._tg.__aexit__(exc_type, exc, tb)
        finally:
            # Connections accepted but whose handler never ran are closed here.
            await self._forget(*self._open)
            await self._listener.aclose()

    async def _handle(self, client: anyio.abc.SocketStream) -> None:
        index = self.accepted
        self.accepted += 1
        budget = self.budget(index)
        try:
            server = await anyio.connect_tcp(self.target_host, self.target_port)
        except OSError:
            await self._forget(client)
            return
        except BaseException:
            await self._forget(client)
            raise
        self._open.add(server)
        with anyio.CancelScope() as scope:
            self._scopes.add(scope)
            try:
                async with anyio.create_task_group() as tg:
                    tg.start_soon(self._pump, client, server, None, tg.cancel_scope)
                    tg.start_soon(self._pump, server, client, budget, tg.cancel_scope)
            finally:
                await self._forget(client)
                if self._exiting and not scope.cancel_called:
                    await self._close_upstream(server)
                else:
                    await self._forget(server)
                self._scopes.discard(scope)
        if scope.cancel_called:
            self.cuts += 1

    async def _pump(
        self,
        source: anyio.abc.SocketStream,
        sink: anyio.abc.SocketStream,
        budget: int | None,
        scope: anyio.CancelScope,
    ) -> None:
        try:
            while True:
                data = await source.receive(65536)
                if budget is not None:
                    data = data[:budget]
                    budget -= len(data)
                await sink.send(data)
                if budget == 0:
                    self.cuts += 1
                    if self.stall:
                        await anyio.sleep_forever()  # until cut_all() or the block ends
                    break
        except (anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
            pass
        # Either side ending (or the budget) ends the whole connection.
        scope.cancel()


class RedisCluster:
    """A throw-away Redis Cluster: ``size`` primaries, no replicas, on free loopback ports.

    Each node is a :class:`RedisServer` with ``--cluster-enabled yes``; :meth:`start` joins
    them with ``redis-cli --cluster create`` and waits until every node reports
    ``cluster_state:ok``. :attr:`url` is ``redis+cluster://127.0.0.1:<port of node 0>``, the
    form the Durable Streams Redis engine takes for a cluster. Use it as a context manager.
    """

    def __init__(self, size: int = 3) -> None:
        cli = shutil.which("redis-cli")
        if cli is None:
            raise RedisServerMissingError(
                "redis-cli is not installed or not on PATH; install it with redis-server "
                "(Debian/Ubuntu: `apt-get install -y redis-server`)"
            )
        self._cli = cli
        self.nodes = [
            RedisServer(
                extra_args=(
                    "--cluster-enabled",
                    "yes",
                    "--cluster-port",
                    str(free_port()),  # not port + 10000, which may not exist
                    "--cluster-node-timeout",
                    "5000",
                )
            )
            for _ in range(size)
        ]

    @property
    def url(self) -> str:
        """A ``redis+cluster://`` URL naming the first node."""
        return f"redis+cluster://127.0.0.1:{self.nodes[0].port}"

    def start(self, timeout: float = 30.0) -> None:
        """Start every node, create the cluster, and wait until it serves all slots."""
        try:
            self._start(timeout)
        except BaseException:
            self.stop()
            raise

    def _start(self, timeout: float) -> None:
        for node in self.nodes:
            node.start()
        addresses = [f"127.0.0.1:{node.port}" for node in self.nodes]
        created = subprocess.run(
            [self._cli, "--cluster", "create", *addresses, "--cluster-replicas", "0",
             "--cluster-yes"],
            capture_output=True, text=True, timeout=timeout, check=False,
        )  # fmt: skip
        if created.returncode != 0:
            raise RuntimeError(f"redis-cli --cluster create failed: {created.stdout}")
        deadline = time.monotonic() + timeout
        while not all(self._state_ok(node.port) for node in self.nodes):
            if time.monotonic() > deadline:
                raise RuntimeError(f"Redis Cluster not ok within {timeout}s")
            time.sleep(0.05)

    def _state_ok(self, port: int) -> bool:
        info = subprocess.run(
            [self._cli, "-p", str(port), "cluster", "info"],
            capture_output=True, text=True, timeout=5, check=False,
        )  # fmt: skip
        return "cluster_state:ok" in info.stdout

    def stop(self) -> None:
        """Stop every node (idempotent)."""
        for node in self.nodes:
            node.stop()

    def __enter__(self) -> RedisCluster:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        for node in self.nodes:
            node.__exit__(exc_type, exc, tb)
