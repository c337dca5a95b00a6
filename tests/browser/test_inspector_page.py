"""The inspector page in headless Chromium: lists streams, live-tails one, survives a restart.

The server is ``resumable-streams serve`` (sqlite storage, so streams survive the restart) in
a subprocess on a free loopback port; it is stopped and started again on the same port while
the page is tailing. The page must end with exactly the appended text - nothing twice,
nothing missing - and its rows' offset ranges must be contiguous.
"""

from __future__ import annotations

import itertools
from pathlib import Path

from resumable_streams.durable import DurableStream
from tests.durable_server.conftest import ServerProcess

from .webdriver import Browser

TAIL_TEXT = (
    "return [...document.querySelectorAll('#tail li:not(.note) .data')]"
    ".map(e => e.textContent).join('')"
)
ROWS = (
    "return [...document.querySelectorAll('#tail li:not(.note)')]"
    ".map(e => [e.dataset.from, e.dataset.to])"
)
LISTING = (
    "return [...document.querySelectorAll('#streams tbody tr')]"
    ".map(r => [...r.cells].map(c => c.textContent))"
)


def _contiguous(rows: list[list[str]], last: str) -> None:
    assert rows[0][0] == "-1"
    for (_, end), (start, _) in itertools.pairwise(rows):
        assert start == end, rows
    assert rows[-1][1] == last


def test_inspector_lists_and_tails_across_restart(browser: Browser, tmp_path: Path) -> None:
    server = ServerProcess("--storage", "sqlite", "--data-dir", str(tmp_path / "data"))
    server.start()
    try:
        base = f"{server.url}/v1/stream"
        DurableStream.create(
            f"{base}/jobs/42/log", content_type="text/plain", ttl_seconds=3600
        ).close()
        other = DurableStream.create(f"{base}/events", content_type="application/json")
        other.append({"kind": "started"})
        events_tail = other.close_stream().final_offset
        other.close()
        events_size = int(events_tail.split("_")[1])
        log = DurableStream(f"{base}/jobs/42/log", content_type="text/plain")
        log.append("step 1: fetched sources\n")

        browser.get(f"{server.url}/#stream=jobs%2F42%2Flog")
        listing = browser.wait_for(LISTING + ".length === 2 && " + LISTING[7:], what="2 rows")
        by_name = {row[0]: row for row in listing}
        assert by_name["events"][1:5] == [
            "application/json",
            f"{events_size} B",
            str(events_size),
            "closed",
        ]
        assert by_name["jobs/42/log"][1:5] == ["text/plain", "24 B", "24", "open"]
        assert by_name["jobs/42/log"][5].startswith("TTL 60m")
        assert by_name["events"][5] == "none"

        browser.wait_for(
            TAIL_TEXT + " === arguments[0]", "step 1: fetched sources\n", what="part 1"
        )
        log.append("step 2: built\n")
        browser.wait_for(
            TAIL_TEXT + " === arguments[0]",
            "step 1: fetched sources\nstep 2: built\n",
            what="part 2",
        )

        server.stop()
        browser.wait_for(
            "return document.getElementById('server-status').textContent.includes('unreachable')",
            what="the page noticing the server is gone",
        )
        server.start()
        log.append("step 3: tested\n")
        log.close_stream("step 4: done\n")
        log.close()

        expected = "step 1: fetched sources\nstep 2: built\nstep 3: tested\nstep 4: done\n"
        browser.wait_for(
            "return document.getElementById('tail-status').textContent.includes('closed')",
            what="the tail reaching the closed end",
        )
        assert browser.execute(TAIL_TEXT) == expected
        rows = browser.execute(ROWS)
        _contiguous(rows, f"0000000000000000_{len(expected):016d}")
        assert browser.execute("return document.getElementById('tail-offset').textContent") == (
            f"0000000000000000_{len(expected):016d}"
        )
    finally:
        server.stop()


def test_inspector_tails_json_and_follows_deletion(browser: Browser) -> None:
    server = ServerProcess("--storage", "memory")
    server.start()
    try:
        url = f"{server.url}/v1/stream/chat"
        stream = DurableStream.create(url, content_type="application/json")
        stream.append({"role": "user", "text": "hi"})
        browser.get(f"{server.url}/#stream=chat")
        browser.wait_for(
            TAIL_TEXT + " === arguments[0]",
            '{"role":"user","text":"hi"}',
            what="first JSON message",
        )
        stream.append([1, 2])
        browser.wait_for(
            TAIL_TEXT + " === arguments[0]",
            '{"role":"user","text":"hi"}[1,2]',
            what="second message",
        )
        stream.delete()
        stream.close()
        browser.wait_for(
            "return document.getElementById('tail-status').textContent.includes('not found')",
            what="the page noticing the deletion",
        )
        assert browser.execute("return document.getElementById('stream-count').textContent") == "0"
    finally:
        server.stop()
