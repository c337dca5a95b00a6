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


@pytest.mark.parametrize("backend", ["trio", "asyncio"])
def test_resume_demo_in_memory(backend: str) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "KV_URL")}
    out = subprocess.run(
        [sys.executable, str(EXAMPLES / "resume_demo.py"), backend],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=True,
    ).stdout
    assert "resumed text matches the produced text exactly" in out
    assert "stream state: DONE" in out


def test_resume_demo_through_redis(redis_server: RedisServer) -> None:
    out = subprocess.run(
        [sys.executable, str(EXAMPLES / "resume_demo.py")],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "REDIS_URL": redis_server.url},
        check=True,
    ).stdout
    assert "resumed text matches the produced text exactly" in out


def _run_example(*args: str) -> str:
    return subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, timeout=120, check=True
    ).stdout


def test_durable_pair_embedded_server() -> None:
    out = _run_example(str(EXAMPLES / "durable_pair.py"))
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
        url = f"http://127.0.0.1:{port}/v1/stream/orders"
        out = _run_example(str(EXAMPLES / "durable_pair.py"), url)
        assert "every event arrived once, in order" in out
    finally:
        server.terminate()
        server.wait(timeout=10)
