"""Drive the npm ``resumable-stream`` library (2.2.13, node-redis v4) from the tests.

The scripts live in ``tests/node/resumable``; each takes one JSON config argument and
``REDIS_URL`` from the environment and prints one JSON object per line on stdout
(``{"event": ...}``, see the header comment of each script).

- :func:`ensure_node_modules` runs ``npm ci`` there when ``node_modules`` is missing or older
  than ``package-lock.json`` (once per process, under a file lock so that concurrent test runs
  do not install over each other). Missing ``node``/``npm`` FAILS the test, never skips it.
- :func:`open_node` starts a script as a child process and yields a :class:`NodeProcess` that
  reads its events; :func:`run_node` runs one to completion.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import pytest
from anyio.streams.buffered import BufferedByteReceiveStream

__all__ = [
    "NODE_DIR",
    "NodeProcess",
    "NodeScriptError",
    "ensure_node_modules",
    "open_node",
    "run_node",
]

NODE_DIR = Path(__file__).resolve().parents[1] / "node" / "resumable"

_installed: Path | None = None


def _require(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        pytest.fail(
            f"`{tool}` is not on PATH: the Node interop tests need Node.js >= 18 and npm "
            "(Debian/Ubuntu: `apt-get install -y nodejs npm`); they are never skipped",
            pytrace=False,
        )
    return path


def ensure_node_modules() -> Path:
    """Install the pinned npm packages if needed; return the scripts' directory."""
    global _installed  # a per-process cache of a slow, idempotent step
    if _installed is not None:
        return _installed
    _require("node")
    npm = _require("npm")
    lock_file = NODE_DIR / "package-lock.json"
    marker = NODE_DIR / "node_modules" / ".package-lock.json"
    lock_path = Path(tempfile.gettempdir()) / "resumable-streams-node-resumable-npm.lock"
    with lock_path.open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not marker.exists() or marker.stat().st_mtime < lock_file.stat().st_mtime:
            try:
                done = subprocess.run(
                    [npm, "ci", "--no-audit", "--no-fund"],
                    cwd=NODE_DIR,
                    capture_output=True,
                    text=True,
                    timeout=600,
                    check=False,
                )
            except subprocess.TimeoutExpired:
                pytest.fail(f"`npm ci` in {NODE_DIR} took more than 600 s", pytrace=False)
            if done.returncode != 0:
                pytest.fail(
                    f"`npm ci` in {NODE_DIR} failed ({done.returncode}):\n"
                    f"{done.stdout}\n{done.stderr}",
                    pytrace=False,
                )
    _installed = NODE_DIR
    return NODE_DIR


class NodeScriptError(AssertionError):
    """A Node script misbehaved: exited early, printed an error event, or timed out."""


class NodeProcess:
    """A running interop script; reads its JSON-lines events in order."""

    def __init__(self, name: str, process: anyio.abc.Process) -> None:
        self.name = name
        self.process = process
        assert process.stdout is not None
        self._stdout = BufferedByteReceiveStream(process.stdout)
        self.events: list[dict[str, Any]] = []
        self.log: list[str] = []  # lines that are not JSON events (stderr is merged in)
        self._consumed = 0
        self._eof = False

    def describe(self) -> str:
        lines = [f"node {self.name} (pid {self.process.pid}, rc {self.process.returncode})"]
        lines += [f"  event: {event}" for event in self.events]
        lines += [f"  log: {line}" for line in self.log]
        return "\n".join(lines)

    async def _read_line(self) -> bool:
        try:
            raw = await self._stdout.receive_until(b"\n", 64 * 1024 * 1024)
        except (anyio.EndOfStream, anyio.IncompleteRead):
            self._eof = True
            return False
        line = raw.decode("utf-8", "replace")
        try:
            event = json.loads(line)
        except ValueError:
            self.log.append(line)
            return True
        if isinstance(event, dict) and "event" in event:
            self.events.append(event)
        else:
            self.log.append(line)
        return True

    async def next_event(self, timeout: float = 15.0) -> dict[str, Any]:
        """Return the next event not returned yet; fail on EOF or timeout."""
        with anyio.move_on_after(timeout) as scope:
            while self._consumed >= len(self.events):
                if self._eof or not await self._read_line():
                    await self._reap()
                    raise NodeScriptError(f"script ended early\n{self.describe()}")
        if scope.cancelled_caught:
            raise NodeScriptError(f"no event within {timeout} s\n{self.describe()}")
        event = self.events[self._consumed]
        self._consumed += 1
        if event["event"] == "error":
            raise NodeScriptError(f"script reported an error\n{self.describe()}")
        return event

    async def wait_for(self, name: str, timeout: float = 15.0, **fields: Any) -> dict[str, Any]:
        """Skip events until one named ``name`` whose fields match ``fields``; return it."""
        with anyio.move_on_after(timeout) as scope:
            while True:
                event = await self.next_event(timeout=timeout)
                if event["event"] == name and all(event.get(k) == v for k, v in fields.items()):
                    return event
        assert scope.cancelled_caught
        raise NodeScriptError(f"no {name!r} event {fields} within {timeout} s\n{self.describe()}")

    async def send_line(self, line: str) -> None:
        """Write one line on the script's stdin."""
        assert self.process.stdin is not None
        await self.process.stdin.send(line.encode() + b"\n")

    async def finish(self, timeout: float = 15.0) -> list[dict[str, Any]]:
        """Read every remaining event, wait for a clean exit and return all events."""
        with anyio.move_on_after(timeout) as scope:
            while await self._read_line():
                pass
            await self.process.wait()
        if scope.cancelled_caught:
            raise NodeScriptError(f"script did not exit within {timeout} s\n{self.describe()}")
        if self.process.returncode != 0 or any(e["event"] == "error" for e in self.events):
            raise NodeScriptError(f"script failed\n{self.describe()}")
        return self.events

    def kill(self) -> None:
        """SIGKILL the script, as a crash would."""
        if self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.kill()

    async def _reap(self) -> None:
        with anyio.move_on_after(5, shield=True):
            await self.process.wait()


@asynccontextmanager
async def open_node(
    script: str, config: Mapping[str, Any], redis_url: str
) -> AsyncIterator[NodeProcess]:
    """Start ``tests/node/resumable/<script>`` with ``config``; kill it on exit if still running.

    The caller must have called :func:`ensure_node_modules` (the ``node_modules`` fixture).
    """
    env = {k: v for k, v in os.environ.items() if k not in {"DEBUG", "KV_URL", "NODE_OPTIONS"}}
    env["REDIS_URL"] = redis_url
    process = await anyio.open_process(
        [_require("node"), str(NODE_DIR / script), json.dumps(config)],
        cwd=NODE_DIR,
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    node = NodeProcess(f"{script} {json.dumps(config)[:200]}", process)
    try:
        yield node
    finally:
        with anyio.CancelScope(shield=True):
            node.kill()
            with anyio.move_on_after(5):
                await process.wait()
            await process.aclose()


async def run_node(
    script: str, config: Mapping[str, Any], redis_url: str, timeout: float = 15.0
) -> list[dict[str, Any]]:
    """Run a script to completion and return its events (it must exit 0 without an error)."""
    async with open_node(script, config, redis_url) as node:
        return await node.finish(timeout=timeout)
