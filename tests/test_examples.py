"""Every example runs as written (smoke tests, as subprocesses)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from resumable_streams.testing import RedisServer, free_port

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
TOKEN_DEMOS = ["fastapi_tokens.py", "trio_tokens.py"]


def run_example(name: str, *args: str, redis_url: str | None = None) -> str:
    """Run ``examples/name`` with ``args``; in memory unless ``redis_url``; its stdout."""
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "KV_URL")}
    if redis_url is not None:
        env["REDIS_URL"] = redis_url
    return subprocess.run(
        [sys.executable, str(EXAMPLES / name), *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=True,
    ).stdout


@pytest.mark.parametrize("backend", ["trio", "asyncio"])
def test_resume_demo_in_memory(backend: str) -> None:
    out = run_example("resume_demo.py", backend)
    assert "resumed text matches the produced text exactly" in out
    assert "stream state: DONE" in out


def test_resume_demo_through_redis(redis_server: RedisServer) -> None:
    out = run_example("resume_demo.py", redis_url=redis_server.url)
    assert "resumed text matches the produced text exactly" in out


@pytest.mark.parametrize("example", TOKEN_DEMOS)
def test_token_streaming_demo_in_memory(example: str) -> None:
    out = run_example(example, "demo")
    assert "then lost its connection" in out
    assert "head + tail is exactly the answer" in out


@pytest.mark.parametrize("example", TOKEN_DEMOS)
def test_token_streaming_demo_through_redis(example: str, redis_server: RedisServer) -> None:
    out = run_example(example, "demo", redis_url=redis_server.url)
    assert "head + tail is exactly the answer" in out


def test_durable_pair_embedded_server() -> None:
    out = run_example("durable_pair.py")
    assert "producer: 2000 events written, stream closed" in out
    assert "consumer: 2000 events read" in out
    assert "every event arrived once, in order" in out


def test_durable_pair_against_serve(tmp_path: Path) -> None:
    port = free_port()
    command = [sys.executable, "-m", "resumable_streams", "serve", "--port", str(port)]
    server = subprocess.Popen(
        [*command, "--data-dir", str(tmp_path)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert server.poll() is None, "resumable-streams serve exited"
                assert time.monotonic() < deadline, "resumable-streams serve did not start"
                time.sleep(0.05)
        out = run_example("durable_pair.py", f"http://127.0.0.1:{port}/v1/stream/orders")
        assert "every event arrived once, in order" in out
    finally:
        server.terminate()
        server.wait(timeout=10)


def test_websocket_client_through_a_cutting_proxy() -> None:
    out = run_example("websocket_client.py")
    assert "the proxy cut 3 connections" in out
    assert "the text is exactly what the producer wrote" in out
