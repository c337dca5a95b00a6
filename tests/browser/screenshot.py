"""Make ``docs/images/inspector.png``: the inspector page in headless Chromium, with demo data.

Run from the repository root: ``python -m tests.browser.screenshot [OUTPUT]``.
"""

from __future__ import annotations

import sys
from pathlib import Path

from resumable_streams.durable import DurableStream
from tests.durable_server.conftest import ServerProcess

from .webdriver import Browser


def main(output: Path) -> None:
    """Start a server, fill it with a few streams, and screenshot the page tailing one."""
    server = ServerProcess("--storage", "memory")
    server.start()
    try:
        base = f"{server.url}/v1/stream"
        with DurableStream.create(
            f"{base}/jobs/1042/log", content_type="text/plain", ttl_seconds=86400
        ) as log:
            for line in (
                "12:00:01 fetching sources\n",
                "12:00:03 resolved 42 packages\n",
                "12:00:09 building wheel\n",
                "12:00:17 running 318 tests\n",
            ):
                log.append(line)
        with DurableStream.create(f"{base}/chat/7f3a", content_type="application/json") as chat:
            chat.append({"role": "user", "text": "Summarise the build"})
            chat.append({"role": "assistant", "text": "318 tests, all passed."})
            chat.close_stream()
        with DurableStream.create(
            f"{base}/uploads/blob", expires_at="2030-01-01T00:00:00Z"
        ) as blob:
            blob.append(bytes(range(200)))
        with Browser() as browser:
            browser.get(f"{server.url}/#stream=jobs%2F1042%2Flog")
            browser.wait_for(
                "return document.getElementById('tail').textContent.includes('running 318')",
                what="the tail showing the log",
            )
            with DurableStream(f"{base}/jobs/1042/log", content_type="text/plain") as log:
                log.append("12:00:31 318 passed\n")
            browser.wait_for(
                "return document.getElementById('tail').textContent.includes('318 passed')",
                what="the live line",
            )
            browser.wait_for(
                "return document.querySelector('#streams tr.selected').textContent.includes('127')",
                what="the list catching up",
            )
            output.parent.mkdir(parents=True, exist_ok=True)
            output.write_bytes(browser.screenshot())
    finally:
        server.stop()


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "docs/images/inspector.png"))
