"""Fixtures for the Durable Streams client tests: real servers on 127.0.0.1.

- ``node_server``: the official Node reference server (npm ``@durable-streams/server`` 0.3.7,
  pinned by ``tests/node/durable/package-lock.json``), installed with ``npm ci`` when
  ``node_modules`` is missing or older than the lock file, started on a free port with a 500 ms
  long-poll timeout. Missing ``node`` / ``npm`` makes the fixture FAIL (never skip).
- ``py_server``: this project's own server (``resumable_streams.durable.server``), in-memory,
  with a 500 ms long-poll timeout and SSE responses closed every 1 s (so every SSE test also
  exercises reconnecting), run by hypercorn in a subprocess.
- ``server``: parametrized over both; ``stream_url`` gives a fresh stream URL on it.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from resumable_streams.testing import free_port

NODE_DIR = Path(__file__).resolve().parent.parent / "node" / "durable"
LONG_POLL_MS = 500


class ServerProcess:
    """A server subprocess and its base URL (``http://127.0.0.1:<port>``)."""

    def __init__(self, name: str, proc: subprocess.Popen[bytes], base_url: str) -> None:
        self.name = name
        self.proc = proc
        self.base_url = base_url

    def stream_url(self, name: str | None = None) -> str:
        """A fresh stream URL on this server."""
        return f"{self.base_url}/v1/stream/{name or 'test-' + uuid.uuid4().hex[:12]}"

    def stop(self) -> None:
        """Terminate the process (SIGTERM, then SIGKILL)."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        for stream in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()


def _require(tool: str) -> str:
    exe = shutil.which(tool)
    if exe is None:
        pytest.fail(
            f"{tool!r} is not on PATH: the Durable Streams interop tests need Node.js >= 18 and "
            "npm (they are never skipped). Install Node.js (https://nodejs.org) and re-run.",
            pytrace=False,
        )
    return exe


def _npm_install() -> None:
    """``npm ci`` when node_modules is missing or older than the lock file."""
    npm = _require("npm")
    lock = NODE_DIR / "package-lock.json"
    marker = NODE_DIR / "node_modules" / ".package-lock.json"
    if marker.exists() and marker.stat().st_mtime >= lock.stat().st_mtime:
        return
    cmd = [npm, "ci", "--no-audit", "--no-fund"]
    proc = subprocess.run(cmd, cwd=NODE_DIR, capture_output=True, text=True, check=False)
    if proc.returncode != 0 and "EUSAGE" in proc.stdout + proc.stderr:
        # npm 11 with ``omit-lockfile-registry-resolved`` writes locks that its own ``npm ci``
        # rejects (optional platform packages); ``npm install`` honours the same pinned lock.
        cmd = [npm, "install", "--no-audit", "--no-fund"]
        proc = subprocess.run(cmd, cwd=NODE_DIR, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        pytest.fail(
            f"`{' '.join(cmd)}` failed in {NODE_DIR}:\n{proc.stdout}\n{proc.stderr}",
            pytrace=False,
        )
    marker.touch()


def _wait_ready(proc: subprocess.Popen[bytes], port: int, name: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            err = proc.stderr.read().decode() if proc.stderr else ""
            pytest.fail(f"{name} exited with {proc.returncode}:\n{err}", pytrace=False)
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    proc.kill()
    pytest.fail(f"{name} did not start listening on port {port} within {timeout}s", pytrace=False)


@pytest.fixture(scope="session")
def node_server() -> Iterator[ServerProcess]:
    """The official Node reference server (``@durable-streams/server`` 0.3.7)."""
    node = _require("node")
    _npm_install()
    port = free_port()
    proc = subprocess.Popen(
        [node, "server.mjs", str(port), str(LONG_POLL_MS)],
        cwd=NODE_DIR,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    server = ServerProcess("node", proc, f"http://127.0.0.1:{port}")
    try:
        _wait_ready(proc, port, "the Node Durable Streams server")
        yield server
    finally:
        server.stop()


PY_SERVER = """
import sys, anyio
from hypercorn.config import Config
from hypercorn.trio import serve
from resumable_streams.durable.server import create_app

app = create_app("memory", long_poll_timeout={lp}, sse_reconnect_interval={sse})
config = Config()
config.bind = ["127.0.0.1:{port}"]
config.accesslog = None
config.graceful_timeout = 1.0
anyio.run(serve, app, config, backend="trio")
"""


@pytest.fixture(scope="session")
def py_server() -> Iterator[ServerProcess]:
    """This project's own server (in-memory storage), short long-poll / SSE intervals."""
    port = free_port()
    code = PY_SERVER.format(port=port, lp=LONG_POLL_MS / 1000, sse=1.0)
    proc = subprocess.Popen(
        [sys.executable, "-c", code],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )
    server = ServerProcess("python", proc, f"http://127.0.0.1:{port}")
    try:
        _wait_ready(proc, port, "this project's Durable Streams server")
        yield server
    finally:
        server.stop()


@pytest.fixture(params=["node", "python"])
def server(request: pytest.FixtureRequest) -> ServerProcess:
    """Each test runs against the Node reference server and against ours."""
    fixture = "node_server" if request.param == "node" else "py_server"
    result: ServerProcess = request.getfixturevalue(fixture)
    return result


@pytest.fixture
def stream_url(server: ServerProcess) -> str:
    """A fresh stream URL on the parametrized server."""
    return server.stream_url()


@pytest.fixture
def server_stream_urls(server: ServerProcess) -> list[str]:
    """Two fresh stream URLs on the parametrized server."""
    return [server.stream_url(), server.stream_url()]
