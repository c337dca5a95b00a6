"""A minimal W3C WebDriver client for headless Chromium through chromedriver (no selenium).

Chromium and chromedriver are the Debian packages ``chromium`` and ``chromium-driver``
(``.ci/run`` installs them). If either is missing the tests FAIL with the install command;
they are never skipped.
"""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx2
import pytest

from resumable_streams.testing import free_port

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-dev-shm-usage",
    "--window-size=1400,900",
]


def _require(*names: str) -> str:
    for name in names:
        path = shutil.which(name)
        if path is not None:
            return path
    pytest.fail(
        f"{' / '.join(names)} not found on PATH: the browser tests need headless Chromium "
        "(never skipped). Install it: apt-get install chromium chromium-driver",
        pytrace=False,
    )


class Browser:
    """One chromedriver process and one headless Chromium session."""

    def __init__(self, log_path: Path | None = None) -> None:
        self.chromium = _require("chromium", "chromium-browser")
        self.chromedriver = _require("chromedriver")
        self.port = free_port()
        self._log = open(log_path or os.devnull, "wb")  # noqa: SIM115 - closed in close()
        self._proc = subprocess.Popen(
            [self.chromedriver, f"--port={self.port}"],
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        self._http = httpx2.Client(base_url=f"http://127.0.0.1:{self.port}", timeout=60.0)
        self.session: str | None = None
        try:
            self._wait_ready()
            value = self._call(
                "POST",
                "/session",
                {
                    "capabilities": {
                        "alwaysMatch": {
                            "browserName": "chrome",
                            "goog:chromeOptions": {"binary": self.chromium, "args": CHROMIUM_FLAGS},
                        }
                    }
                },
            )
            self.session = value["sessionId"]
        except BaseException:
            self.close()
            raise

    def _wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                pytest.fail(f"chromedriver exited with {self._proc.returncode}", pytrace=False)
            try:
                if self._http.get("/status").json()["value"]["ready"]:
                    return
            except (httpx2.TransportError, ValueError, KeyError):
                pass
            time.sleep(0.05)
        pytest.fail(f"chromedriver did not get ready within {timeout} s", pytrace=False)

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        response = self._http.request(method, path, json=body)
        payload = response.json()
        if response.status_code >= 400:
            raise RuntimeError(f"WebDriver {method} {path} -> {response.status_code}: {payload}")
        return payload.get("value")

    def _session_call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        assert self.session is not None
        return self._call(method, f"/session/{self.session}{path}", body)

    def get(self, url: str) -> None:
        """Navigate to ``url`` (returns once the page has loaded)."""
        self._session_call("POST", "/url", {"url": url})

    def execute(self, script: str, *args: Any) -> Any:
        """Run ``script`` (a function body; ``arguments`` holds ``args``) in the page."""
        return self._session_call("POST", "/execute/sync", {"script": script, "args": list(args)})

    def wait_for(
        self, script: str, *args: Any, timeout: float = 30.0, what: str | None = None
    ) -> Any:
        """Poll ``script`` until it returns something truthy; fail after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        value: Any = None
        while time.monotonic() < deadline:
            value = self.execute(script, *args)
            if value:
                return value
            time.sleep(0.1)
        raise AssertionError(
            f"timed out after {timeout} s waiting for {what or script!r}; last value {value!r}"
        )

    def wait_until(self, check: Callable[[], bool], *, timeout: float = 30.0, what: str) -> None:
        """Poll a Python ``check`` until true."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if check():
                return
            time.sleep(0.1)
        raise AssertionError(f"timed out after {timeout} s waiting for {what}")

    def screenshot(self) -> bytes:
        """A PNG of the viewport."""
        return base64.b64decode(self._session_call("GET", "/screenshot"))

    def close(self) -> None:
        """End the session and chromedriver."""
        try:
            if self.session is not None:
                self._call("DELETE", f"/session/{self.session}")
                self.session = None
        except (httpx2.TransportError, RuntimeError):
            pass
        finally:
            self._http.close()
            if self._proc.poll() is None:
                self._proc.terminate()
                try:
                    self._proc.wait(10)
                except subprocess.TimeoutExpired:
                    self._proc.kill()
                    self._proc.wait(10)
            self._log.close()

    def __enter__(self) -> Browser:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
