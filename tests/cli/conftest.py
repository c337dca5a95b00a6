"""Fixtures for the CLI tests: a real ``resumable-streams serve`` and a CLI runner.

The CLI runs as a subprocess (``python -m resumable_streams.cli``), exactly as a user runs it;
every run has a timeout so nothing can hang the suite.
"""

from __future__ import annotations

import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from tests.durable_server.conftest import ServerProcess

CLI = [sys.executable, "-m", "resumable_streams.cli"]


@dataclass
class Result:
    """A finished CLI run."""

    code: int
    out: bytes
    err: str

    @property
    def text(self) -> str:
        return self.out.decode("utf-8")


def cli(*args: str, stdin: bytes | None = None, timeout: float = 60) -> Result:
    """Run ``resumable-streams ARGS`` to completion."""
    proc = subprocess.run(
        [*CLI, *args], input=stdin, capture_output=True, timeout=timeout, check=False
    )
    return Result(proc.returncode, proc.stdout, proc.stderr.decode("utf-8", "replace"))


def spawn(*args: str) -> subprocess.Popen[bytes]:
    """Start ``resumable-streams ARGS`` in the background (pipes for stdin/stdout/stderr)."""
    return subprocess.Popen(
        [*CLI, *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )


@pytest.fixture(scope="module")
def server() -> Iterator[ServerProcess]:
    """One in-memory server for a test module (tests use fresh stream names)."""
    proc = ServerProcess("--storage", "memory", "--long-poll-timeout", "1")
    proc.start()
    yield proc
    proc.stop()


@pytest.fixture
def url(server: ServerProcess) -> str:
    """A fresh stream URL on the module's server."""
    return f"{server.url}/v1/stream/cli-{uuid.uuid4().hex[:10]}"
