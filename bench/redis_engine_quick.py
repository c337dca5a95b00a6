"""Quick appends/s of the Durable Streams Redis engine (not a test; numbers are noisy).

    python bench/redis_engine_quick.py storage trio 5    # RedisStorage.append in-process
    python bench/redis_engine_quick.py http trio 5       # POST through `serve --storage redis`
    python bench/redis_engine_quick.py http-memory trio 5  # the same against the memory engine

Each run starts its own redis-server (``resumable_streams.testing.RedisServer``). Appends are
100-byte text bodies; "32 clients" means 32 concurrent tasks, each on its own stream.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import uuid

import anyio
import httpx2

from resumable_streams._protocol.durable.planning import AppendRequest, CreateRequest
from resumable_streams.storage.redis import RedisStorage
from resumable_streams.testing import RedisServer, free_port

BODY = b"x" * 100


async def run_storage(url: str, clients: int, streams: int, seconds: float) -> float:
    async with RedisStorage.open(url, prefix=uuid.uuid4().hex[:8]) as storage:
        for s in range(streams):
            await storage.create(f"s{s}", CreateRequest("text/plain"), now=time.time())
        count = 0
        deadline = time.perf_counter() + seconds

        async def client(c: int) -> None:
            nonlocal count
            request = AppendRequest("text/plain", BODY)
            while time.perf_counter() < deadline:
                await storage.append(f"s{c % streams}", request, now=time.time())
                count += 1

        started = time.perf_counter()
        async with anyio.create_task_group() as tg:
            for c in range(clients):
                tg.start_soon(client, c)
        return count / (time.perf_counter() - started)


async def run_http(base: str, clients: int, streams: int, seconds: float) -> float:
    prefix = uuid.uuid4().hex[:8]
    limits = httpx2.Limits(max_connections=clients, max_keepalive_connections=clients)
    headers = {"Content-Type": "text/plain"}
    async with httpx2.AsyncClient(timeout=30, limits=limits) as http:
        for s in range(streams):
            created = await http.put(f"{base}/v1/stream/{prefix}-{s}", headers=headers)
            assert created.status_code == 201, created
        count = 0
        deadline = time.perf_counter() + seconds

        async def client(c: int) -> None:
            nonlocal count
            url = f"{base}/v1/stream/{prefix}-{c % streams}"
            while time.perf_counter() < deadline:
                response = await http.post(url, content=BODY, headers=headers)
                assert response.status_code == 204, response
                count += 1

        started = time.perf_counter()
        async with anyio.create_task_group() as tg:
            for c in range(clients):
                tg.start_soon(client, c)
        return count / (time.perf_counter() - started)


def main() -> None:
    mode, backend, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3])
    with RedisServer() as redis:
        if mode == "storage":
            for clients, streams in ((1, 1), (32, 32), (32, 1)):
                rate = anyio.run(run_storage, redis.url, clients, streams, seconds, backend=backend)
                print(f"storage/{backend}: {clients} clients, {streams} streams: {rate:,.0f}/s")
            return
        port = free_port()
        engine = ["memory"] if mode == "http-memory" else ["redis", "--redis-url", redis.url]
        command = [sys.executable, "-m", "resumable_streams", "serve", "--port", str(port)]
        command += ["--backend", backend, "--storage", *engine]
        proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            for _ in range(400):
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                    break
                except OSError:
                    time.sleep(0.05)
            base = f"http://127.0.0.1:{port}"
            for clients, streams in ((1, 1), (32, 32)):
                rate = anyio.run(run_http, base, clients, streams, seconds, backend="trio")
                print(f"{mode}/{backend}: {clients} clients, {streams} streams: {rate:,.0f}/s")
        finally:
            proc.terminate()
            proc.wait(10)


if __name__ == "__main__":
    main()
