"""Every example runs as written (smoke tests, as subprocesses)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from resumable_streams.testing import RedisServer

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
