"""A browser ``EventSource`` resumes a resumable stream through ``Last-Event-ID``.

Headless Chromium loads a page served on loopback whose ``EventSource`` reads a
``ResumableSSEResponse`` (real Redis behind the context). The page and the stream go through a
:class:`~resumable_streams.testing.TCPProxy` that the test uses to cut the SSE connection from
the server's side, twice, mid-stream (the producer is held at a gate each time, so the cut
falls between known parts of the text). The page must end with exactly the produced text -
no duplicate, no gap - and each reconnect must have carried the position it had reached as
``Last-Event-ID``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import anyio
import anyio.to_thread
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse
from starlette.routing import Route

from resumable_streams import open_resumable_stream_context
from resumable_streams._protocol.resumable import utf16_len
from resumable_streams.testing import TCPProxy
from resumable_streams.transports import ResumableSSEResponse
from tests.transports.conftest import BACKEND_SERVERS
from tests.transports.support import run_asgi, wait_until

from .webdriver import Browser

pytestmark = pytest.mark.anyio

PARTS = [
    ["Hello", ", wörld ", "😀", "\r\n"],
    ["line\rtwo\n", "𝄞 clef", ' "quoted" '],
    [" end 🎉", "\n", "data: not an event\n\n", "bye"],
]

PAGE = """<!doctype html>
<meta charset="utf-8">
<title>EventSource resume</title>
<pre id="out"></pre>
<p>opens: <span id="opens">0</span>, state: <span id="state">reading</span></p>
<script>
  let text = "";
  let opens = 0;
  const source = new EventSource("/chat/STREAM_ID/stream");
  source.onopen = () => {
    opens += 1;
    document.getElementById("opens").textContent = String(opens);
  };
  source.onmessage = (event) => {
    text += JSON.parse(event.data);
    document.getElementById("out").textContent = text;
  };
  source.addEventListener("done", () => {
    source.close();
    document.getElementById("state").textContent = "done";
  });
  window.pageState = () => ({ text, opens, done: source.readyState === 2 });
</script>
"""


@pytest.fixture(params=BACKEND_SERVERS, ids=["-".join(p) for p in BACKEND_SERVERS])
def backend_and_server(request: pytest.FixtureRequest) -> tuple[str, str]:
    value: tuple[str, str] = request.param
    return value


@pytest.fixture
def anyio_backend(backend_and_server: tuple[str, str]) -> str:
    return backend_and_server[0]


async def test_eventsource_resumes_after_server_side_cuts(
    browser: Browser, redis_url: str, key_prefix: str, backend_and_server: tuple[str, str]
) -> None:
    gates = [anyio.Event(), anyio.Event()]
    last_event_ids: list[str | None] = []
    stream_id = f"chat-{key_prefix}"

    async def tokens() -> AsyncIterator[str]:
        for index, part in enumerate(PARTS):
            if index > 0:
                await gates[index - 1].wait()
            for token in part:
                yield token

    async def page(request: Request) -> HTMLResponse:
        return HTMLResponse(PAGE.replace("STREAM_ID", stream_id))

    async def stream(request: Request) -> ResumableSSEResponse:
        last_event_ids.append(request.headers.get("last-event-id"))
        return ResumableSSEResponse(ctx, request.path_params["sid"], tokens, retry=200)

    app = Starlette(routes=[Route("/", page), Route("/chat/{sid}/stream", stream)])

    def state() -> dict[str, object]:
        value: dict[str, object] = browser.execute("return window.pageState()")
        return value

    async def page_reaches(text: str, opens: int) -> None:
        def check() -> bool:
            now = state()
            return now["text"] == text and now["opens"] == opens

        await anyio.to_thread.run_sync(
            lambda: browser.wait_until(check, what=f"page text {text!r} after {opens} opens")
        )

    with anyio.fail_after(120):
        async with (
            open_resumable_stream_context(redis_url=redis_url, key_prefix=key_prefix) as ctx,
            run_asgi(app, backend_and_server[1]) as host,
            TCPProxy("127.0.0.1", int(host.rsplit(":", 1)[1])) as proxy,
        ):
            await anyio.to_thread.run_sync(browser.get, f"http://127.0.0.1:{proxy.port}/")
            expected = ""
            for index, part in enumerate(PARTS[:-1]):
                expected += "".join(part)
                await page_reaches(expected, index + 1)
                cuts = proxy.cuts
                proxy.cut_all()  # the server's side of the SSE connection goes away
                await wait_until(lambda: proxy.cuts > cuts)  # noqa: B023 - awaited here
                # The browser reconnects by itself, with Last-Event-ID = its position.
                await page_reaches(expected, index + 2)
                gates[index].set()
            expected += "".join(PARTS[-1])

            def finished() -> bool:
                return bool(state()["done"])

            await anyio.to_thread.run_sync(
                lambda: browser.wait_until(finished, what="the done event")
            )
            final = state()
            assert final["text"] == expected
            assert final["opens"] == len(PARTS)
            positions = [utf16_len("".join("".join(p) for p in PARTS[: i + 1])) for i in (0, 1)]
            assert last_event_ids == [None, *map(str, positions)]
            # Close every connection Chrome keeps open before the proxy and server stop
            # (asyncio reports sockets still closing when the loop ends).
            await anyio.to_thread.run_sync(browser.get, "about:blank")
            with anyio.fail_after(10):
                while proxy._scopes:  # the open connections (Chrome keeps idle ones)
                    proxy.cut_all()
                    await anyio.sleep(0.05)
