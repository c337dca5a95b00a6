"""Fixtures for the Durable Streams server tests: storage engines and real server processes."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from resumable_streams.storage import StreamStorage, open_storage
from resumable_streams.testing import free_port

REPO_ROOT = Path(__file__).resolve().parents[2]
ENGINES = ["memory", "sqlite"]


@pytest.fixture(params=ENGINES)
async def storage(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[StreamStorage]:
    """Every storage engine, opened for one test (the shared storage suite runs on each)."""
    async with open_storage(request.param, data_dir=tmp_path / "data") as opened:
        yield opened


class ServerProcess:
    """``resumable-streams serve`` in a subprocess on a free loopback port."""

    def __init__(self, *args: str, port: int | None = None) -> None:
        self.port = port or free_port()
        self.args = args
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        cmd = [
            sys.executable,
            "-m",
            "resumable_streams.cli",
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            *self.args,
        ]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode() if self.proc.stderr else ""
                raise RuntimeError(f"server exited early ({self.proc.returncode}): {err}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("server did not start listening within 20 s")

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> str:
        """SIGTERM, then SIGKILL; return what the server wrote to stderr."""
        err = ""
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGTERM)
                try:
                    self.proc.wait(10)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait(10)
            if self.proc.stderr is not None:
                err = self.proc.stderr.read().decode(errors="replace")
                self.proc.stderr.close()
        return err


@pytest.fixture
def server_factory() -> Iterator[type[ServerProcess]]:
    """Start servers with ``server_factory(*args).start()``; all are stopped afterwards."""
    started: list[ServerProcess] = []

    class Tracked(ServerProcess):
        def start(self) -> None:
            started.append(self)
            super().start()

    yield Tracked
    for server in started:
        server.stop()


os.environ.setdefault("PYTHONUNBUFFERED", "1")
