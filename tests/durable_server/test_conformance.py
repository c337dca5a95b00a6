"""The official Durable Streams server conformance suite against our server, per engine.

Runs ``../shared/tools/ds-conformance/run.sh`` (npm @durable-streams/server-conformance-tests)
against ``resumable-streams serve`` in a subprocess. Without node/npm this FAILS: CI must
never pass by skipping it.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from resumable_streams.testing import RedisServer

from .conftest import REPO_ROOT, ServerProcess

RUN_SH = REPO_ROOT.parent / "shared" / "tools" / "ds-conformance" / "run.sh"

pytestmark = [pytest.mark.node, pytest.mark.slow]


@pytest.mark.parametrize("engine", ["memory", "sqlite", "redis"])
def test_conformance_suite(
    engine: str, tmp_path: Path, server_factory: type[ServerProcess]
) -> None:
    if engine == "redis":
        with RedisServer() as redis:  # a fresh redis-server for this run
            _run_suite(engine, tmp_path, server_factory, "--redis-url", redis.url)
    else:
        _run_suite(engine, tmp_path, server_factory)


@pytest.mark.parametrize("backend", ["trio", "asyncio"])
def test_conformance_suite_on_hypercorn(
    backend: str, tmp_path: Path, server_factory: type[ServerProcess]
) -> None:
    """``serve --http hypercorn`` (hypercorn's trio worker, or asyncio) passes it too."""
    _run_suite("memory", tmp_path, server_factory, "--http", "hypercorn", "--backend", backend)


def _run_suite(
    engine: str, tmp_path: Path, server_factory: type[ServerProcess], *extra: str
) -> None:
    for tool in ("node", "npm"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} is not installed: the conformance suite needs Node.js >= 20.19")
    if not RUN_SH.is_file():
        pytest.fail(f"conformance runner not found at {RUN_SH} (shared/ must sit beside the repo)")
    server = server_factory(
        "--storage",
        engine,
        "--data-dir",
        str(tmp_path / "data"),
        "--long-poll-timeout",
        "0.5",
        *extra,
    )
    server.start()
    env = {**os.environ, "LONG_POLL_TIMEOUT_MS": "500"}
    proc = subprocess.run(
        ["bash", str(RUN_SH), server.url],
        capture_output=True,
        text=True,
        env=env,
        timeout=900,
        check=False,
    )
    summary = [line for line in proc.stdout.splitlines() if line.startswith("conformance:")]
    print(f"[{engine}] {summary[-1] if summary else '(no summary)'}")
    assert summary, f"no summary line; stdout:\n{proc.stdout}\nstderr:\n{proc.stderr[-4000:]}"
    match = re.match(r"conformance: (\d+) passed, (\d+) failed, (\d+) skipped", summary[-1])
    assert match, summary[-1]
    passed, failed = int(match.group(1)), int(match.group(2))
    assert failed == 0, proc.stdout
    assert proc.returncode == 0, proc.stdout
    assert passed >= 332
