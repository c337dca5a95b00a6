"""SIGKILL the sqlite-backed server mid concurrent appends; nothing acknowledged is lost.

Several idempotent producers append pipelined-free but concurrently over real HTTP. The
server is killed with SIGKILL while they run. After a restart on the same data directory:
every acknowledged append is present, every append present is whole (no torn bytes), and
each producer's stored ``(epoch, seq)`` agrees with the data (the Go server's issue #143).
"""

from __future__ import annotations

import re
from pathlib import Path

import anyio
import httpx2
import pytest

from .conftest import ServerProcess

pytestmark = pytest.mark.anyio

PRODUCERS = 6
TOKEN = re.compile(rb"<p(\d+):(\d+):x+>")


def _body(producer: int, seq: int) -> bytes:
    return f"<p{producer}:{seq}:".encode() + b"x" * (200 + seq % 50) + b">"


async def test_sigkill_loses_no_acknowledged_append(
    tmp_path: Path, server_factory: type[ServerProcess]
) -> None:
    data_dir = str(tmp_path / "data")
    server = server_factory("--storage", "sqlite", "--data-dir", data_dir)
    server.start()
    acked: dict[int, int] = dict.fromkeys(range(PRODUCERS), -1)
    url = f"{server.url}/v1/stream/crash"

    async def producer(client: httpx2.AsyncClient, p: int) -> None:
        seq = 0
        while True:
            try:
                r = await client.post(
                    url,
                    content=_body(p, seq),
                    headers={
                        "Content-Type": "text/plain",
                        "Producer-Id": f"p{p}",
                        "Producer-Epoch": "0",
                        "Producer-Seq": str(seq),
                    },
                )
            except httpx2.TransportError:
                return  # the server died under us
            assert r.status_code == 200, r.text
            acked[p] = seq
            seq += 1

    with anyio.fail_after(60):
        async with httpx2.AsyncClient(timeout=10) as client:
            r = await client.put(url, headers={"Content-Type": "text/plain"})
            assert r.status_code == 201
            async with anyio.create_task_group() as tg:
                for p in range(PRODUCERS):
                    tg.start_soon(producer, client, p)
                while min(acked.values()) < 20:  # wait for real concurrent progress
                    await anyio.sleep(0.01)
                await anyio.to_thread.run_sync(server.kill)

        restarted = server_factory("--storage", "sqlite", "--data-dir", data_dir)
        restarted.start()
        url = f"{restarted.url}/v1/stream/crash"
        async with httpx2.AsyncClient(timeout=10) as client:
            data = b""
            offset = "-1"
            while True:
                r = await client.get(url, params={"offset": offset})
                assert r.status_code == 200
                data += r.content
                offset = r.headers["stream-next-offset"]
                if r.headers.get("stream-up-to-date") == "true":
                    break
            tokens = [(int(m.group(1)), int(m.group(2))) for m in TOKEN.finditer(data)]
            assert b"".join(_body(p, s) for p, s in tokens) == data, "torn or foreign bytes"
            stored: dict[int, list[int]] = {p: [] for p in range(PRODUCERS)}
            for p, s in tokens:
                stored[p].append(s)
            for p in range(PRODUCERS):
                seqs = stored[p]
                assert seqs == list(range(len(seqs))), f"p{p} has gaps or duplicates"
                assert len(seqs) - 1 >= acked[p], f"p{p} lost acknowledged appends"
                last = len(seqs) - 1
                headers = {
                    "Content-Type": "text/plain",
                    "Producer-Id": f"p{p}",
                    "Producer-Epoch": "0",
                }
                if last >= 0:  # retrying the last stored append is a duplicate...
                    dup = await client.post(
                        url, content=_body(p, last), headers={**headers, "Producer-Seq": str(last)}
                    )
                    assert dup.status_code == 204
                # ...and the next one is accepted: producer state agrees with the data
                nxt = await client.post(
                    url,
                    content=_body(p, last + 1),
                    headers={**headers, "Producer-Seq": str(last + 1)},
                )
                assert nxt.status_code == 200, nxt.headers
