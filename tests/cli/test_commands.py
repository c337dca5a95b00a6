"""``create``, ``append``, ``tail``, ``head``, ``delete`` against a real server, as subprocesses."""

from __future__ import annotations

import base64
import json
import os
import random
import signal
import subprocess
import time
from collections.abc import MutableMapping
from functools import partial
from pathlib import Path
from typing import Any

import anyio
import pytest
from anyio.from_thread import start_blocking_portal

from resumable_streams.durable import DurableStream
from resumable_streams.durable.server.app import create_app
from resumable_streams.durable.server.http1 import serve_http1
from resumable_streams.testing import free_port
from tests.durable_server.conftest import ServerProcess

from .conftest import CLI, cli, spawn


def _offset(n: int) -> str:
    return f"0000000000000000_{n:016d}"


def test_round_trip_text(url: str) -> None:
    created = cli("create", url, "--content-type", "text/plain", "--ttl", "3600")
    assert created.code == 0, created.err
    assert f"created {url} (text/plain)" in created.err

    first = cli("append", url, "hello ")
    assert first.code == 0, first.err
    assert first.text == _offset(6) + "\n"
    assert cli("append", url, "wor", "ld\n").text == _offset(12) + "\n"

    head = cli("head", url)
    assert head.code == 0, head.err
    assert head.text.splitlines() == [
        f"url: {url}",
        "content-type: text/plain",
        f"next-offset: {_offset(12)}",
        "closed: false",
        "ttl-seconds: 3600",
    ]
    info = json.loads(cli("head", url, "--json").out)
    assert info["next_offset"] == _offset(12)
    assert info["ttl_seconds"] == 3600
    assert info["closed"] is False

    assert cli("tail", url, "--live", "off").out == b"hello world\n"
    assert cli("tail", url, "--live", "off", "--offset", _offset(6)).out == b"world\n"

    closing = cli("append", url, "--close", "bye\n")  # DATA after an option works too
    assert closing.code == 0, closing.err
    assert closing.text == _offset(16) + "\n"
    # A closed stream: tail in every live mode prints it all and exits 0.
    for live in ("long-poll", "sse", "off"):
        done = cli("tail", url, "--live", live)
        assert (done.code, done.out) == (0, b"hello world\nbye\n"), done.err
    assert "closed: true" in cli("head", url).text

    deleted = cli("delete", url)
    assert deleted.code == 0, deleted.err
    assert cli("head", url).code == 3


def test_json_stream_lines_and_tail_formats(url: str) -> None:
    assert cli("create", url, "--json").code == 0
    lines = b'{"a": 1}\n\n  [1, 2]\n"x"\n{"unicode": "\xc3\xa9\xf0\x9f\x8c\x8d"}'
    appended = cli("append", url, stdin=lines)
    assert appended.code == 0, appended.err
    tail = cli("tail", url, "--live", "off")
    assert tail.text.splitlines() == ['{"a":1}', "[1,2]", '"x"', '{"unicode":"é🌍"}']
    assert cli("append", url, "--json", '{"b": true}', "3").code == 0
    records = [
        json.loads(line) for line in cli("tail", url, "--live", "off", "--json").out.splitlines()
    ]
    messages = [m for record in records for m in record["data"]]
    assert messages == [{"a": 1}, [1, 2], "x", {"unicode": "é🌍"}, {"b": True}, 3]
    assert records[-1]["next_offset"] == appended_offset(url)
    assert records[-1]["up_to_date"] is True


def appended_offset(url: str) -> str:
    return str(json.loads(cli("head", url, "--json").out)["next_offset"])


def test_stdin_is_streamed_exactly(url: str) -> None:
    """Many lines (and a last line without newline) arrive byte-for-byte, each line a message."""
    assert cli("create", url, "--content-type", "text/plain").code == 0
    rng = random.Random(5)
    lines = [
        "".join(rng.choice("abcdé🌍 \t") for _ in range(rng.randrange(0, 80))) + "\n"
        for _ in range(20_000)
    ]
    data = ("".join(lines) + "no newline at the end").encode()
    appended = cli("append", url, "--progress", "on", stdin=data)
    assert appended.code == 0, appended.err
    assert appended.text == _offset(len(data)) + "\n"
    assert "appended 20,001 messages" in appended.err  # progress and rates on stderr
    assert "msg/s" in appended.err
    assert cli("tail", url, "--live", "off").out == data


def test_binary_chunks_and_base64_json(url: str) -> None:
    assert cli("create", url).code == 0  # application/octet-stream
    data = random.Random(7).randbytes(300_000)
    appended = cli("append", url, "--chunk-size", "4096", "--window", "65536", stdin=data)
    assert appended.code == 0, appended.err
    assert cli("tail", url, "--live", "off").out == data
    records = cli("tail", url, "--live", "off", "--json").out.splitlines()
    decoded = b"".join(base64.b64decode(json.loads(r)["data"]) for r in records)
    assert decoded == data
    assert all(json.loads(r)["encoding"] == "base64" for r in records)


def test_append_streams_stdin_while_it_is_open(url: str) -> None:
    """Lines reach the server while stdin is still open (nothing is read all-in-memory)."""
    assert cli("create", url, "--content-type", "text/plain").code == 0
    proc = spawn("append", url, "--linger-ms", "1")
    assert proc.stdin is not None
    try:
        proc.stdin.write(b"first line\n")
        proc.stdin.flush()
        with DurableStream(url) as handle:
            deadline = time.monotonic() + 30
            while handle.head().offset != _offset(11):
                assert time.monotonic() < deadline, "the first line never reached the server"
                time.sleep(0.05)
        assert proc.poll() is None  # still reading stdin
        out, err = proc.communicate(b"second\n", timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    assert out == (_offset(18) + "\n").encode()


def test_tail_follows_and_prints_as_data_arrives(url: str) -> None:
    assert cli("create", url, "--content-type", "text/plain").code == 0
    for live in ("long-poll", "sse"):
        name = f"{url}-{live}"
        assert cli("create", name, "--content-type", "text/plain").code == 0
        proc = spawn("tail", name, "--live", live)
        try:
            assert cli("append", name, "one\n").code == 0
            assert proc.stdout is not None
            assert proc.stdout.readline() == b"one\n"  # printed before the stream ends
            assert cli("append", name, "--close", "two\n").code == 0
            out, err = proc.communicate(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
        assert (proc.returncode, out) == (0, b"two\n"), err


def test_tail_interrupted_prints_resume_offset(url: str) -> None:
    assert cli("create", url, "--content-type", "text/plain").code == 0
    assert cli("append", url, "abc\n").code == 0
    proc = spawn("tail", url)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline() == b"abc\n"
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 130
    assert f"resume with --offset {_offset(4)}" in err.decode()


def test_tail_into_a_closed_pipe_exits_quietly(url: str) -> None:
    """``tail URL | head -n 1``: the reader leaves early; tail exits 0 without a traceback."""
    assert cli("create", url, "--content-type", "text/plain").code == 0
    lines = "".join(f"line {i}\n" for i in range(100_000))  # far more than a pipe buffer
    assert cli("append", url, stdin=lines.encode()).code == 0
    read_end, write_end = os.pipe()
    reader = subprocess.Popen(["head", "-n", "1"], stdin=read_end, stdout=subprocess.PIPE)
    tail = subprocess.Popen([*CLI, "tail", url], stdout=write_end, stderr=subprocess.PIPE)
    os.close(read_end)  # only head reads and only tail writes now
    os.close(write_end)
    try:
        first, _ = reader.communicate(timeout=60)
        _, err = tail.communicate(timeout=60)
    finally:
        for proc in (reader, tail):
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    assert first == b"line 0\n"
    assert tail.returncode == 0, err
    assert b"Traceback" not in err


def test_tail_survives_a_server_restart(tmp_path: Path) -> None:
    """``tail`` keeps following across a server restart: same output as without one."""
    server = ServerProcess("--storage", "sqlite", "--data-dir", f"{tmp_path}/data")
    server.start()
    procs: list[subprocess.Popen[bytes]] = []
    try:
        urls = {live: f"{server.url}/v1/stream/restart-{live}" for live in ("long-poll", "sse")}
        for live, url in urls.items():
            assert cli("create", url, "--content-type", "text/plain").code == 0
            assert cli("append", url, "before\n").code == 0
            procs.append(spawn("tail", url, "--live", live))
        for proc in procs:
            assert proc.stdout is not None
            assert proc.stdout.readline() == b"before\n"
        server.stop()
        server.start()
        for url in urls.values():
            assert cli("append", url, "after\n").code == 0
            assert cli("append", url, "--close", "end\n").code == 0
        for proc in procs:
            out, err = proc.communicate(timeout=60)
            assert (proc.returncode, out) == (0, b"after\nend\n"), err
            assert "reconnected" in err.decode()
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
        server.stop()


# ---------------------------------------------------------------------------------- errors


def test_not_found_exits_3(url: str) -> None:
    for args in (["head", url], ["delete", url], ["append", url, "x"], ["tail", url]):
        result = cli(*args)
        assert result.code == 3, (args, result.err)
        assert f"error: no stream at {url} (HTTP 404)" in result.err
        assert "Traceback" not in result.err


def test_connection_refused_exits_5() -> None:
    url = f"http://127.0.0.1:{free_port()}/v1/stream/x"
    for args in (
        ["head", url, "--retries", "0"],
        ["create", url],
        ["append", url, "x", "--retries", "1"],
        ["tail", url, "--retries", "0"],
    ):
        result = cli(*args)
        assert result.code == 5, (args, result.err)
        assert "cannot connect to 127.0.0.1:" in result.err
        assert "is the server running?" in result.err


def test_conflicts_exit_4(url: str) -> None:
    assert cli("create", url, "--content-type", "text/plain").code == 0
    assert cli("create", url, "--content-type", "text/plain").code == 0  # idempotent
    other = cli("create", url, "--json")
    assert other.code == 4
    assert "CONFLICT_EXISTS" in other.err
    assert cli("append", url, "--close", "x").code == 0
    closed = cli("append", url, "more")
    assert closed.code == 4
    assert "STREAM_CLOSED" in closed.err


def test_bad_input_exits_2(url: str) -> None:
    assert cli("create", url, "--json").code == 0
    bad_line = cli("append", url, stdin=b'{"ok": 1}\n{not json}\n')
    assert bad_line.code == 2
    assert "stdin line 2" in bad_line.err
    assert "{not json}" in bad_line.err
    bad_arg = cli("append", url, "1", "nope")
    assert bad_arg.code == 2
    assert "argument 2" in bad_arg.err
    assert cli("create", f"{url}-x", "--json", "--data", "{bad").code == 2
    text_url = f"{url}-text"
    assert cli("create", text_url).code == 0
    assert cli("append", text_url, "--json", "1").code == 2
    for args, needle in (
        (["head", "ftp://example.com/x"], "is not a stream URL"),
        (["head", url, "-H", "no colon"], "bad header 'no colon'"),
        (["create", url, "--ttl", "-5"], "must be an integer > 0, got '-5'"),
        (["append", url, "--linger-ms", "-5"], "must be a finite number >= 0, got '-5'"),
        (["append", url, "--linger-ms", "nan"], "must be a finite number >= 0, got 'nan'"),
        (["append", url, "--epoch", "-3"], "must be an integer >= 0, got '-3'"),
        (["append", url, "--timeout", "inf"], "must be a finite number > 0"),
        (["append", url, "--chunk-size", "0"], "must be an integer > 0"),
        (["tail", url, "--live", "websocket"], "invalid choice"),
        (["head", url, "--bogus"], "unrecognized arguments: --bogus"),
        (["append", url, "-", "x"], "cannot be mixed"),
    ):
        result = cli(*args)
        assert result.code == 2, (args, result.err)
        assert needle in result.err, (args, result.err)


def test_headers_are_sent() -> None:
    # A real server (the built-in HTTP server on port 0, in a thread) behind an ASGI wrapper
    # that records the request headers it receives, then hands the request to the real app.
    seen: list[tuple[str, dict[str, str]]] = []
    app = create_app("memory")

    async def recorder(scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
            seen.append((scope["method"], headers))
        await app(scope, receive, send)

    with start_blocking_portal("trio") as portal:
        stop = portal.call(anyio.Event)
        _, bound = portal.start_task(
            partial(serve_http1, recorder, "127.0.0.1", 0, shutdown_trigger=stop.wait)
        )
        url = f"http://127.0.0.1:{bound[0][1]}/v1/stream/headers"
        try:
            assert cli("create", url, "-H", "Authorization: Bearer t0ken").code == 0
            assert cli("head", url, "-H", "X-Trace: 1", "-H", "x-other:  two ").code == 0
        finally:
            portal.call(stop.set)
    assert [method for method, _ in seen] == ["PUT", "HEAD"]
    assert seen[0][1]["authorization"] == "Bearer t0ken"
    assert (seen[1][1]["x-trace"], seen[1][1]["x-other"]) == ("1", "two")
    assert "authorization" not in seen[1][1]  # per command, not remembered


@pytest.mark.skipif(os.name != "posix", reason="pty is POSIX-only")
def test_progress_auto_on_a_terminal(url: str) -> None:
    import pty

    assert cli("create", url, "--content-type", "text/plain").code == 0
    leader, follower = pty.openpty()
    try:
        proc = subprocess.run(
            [*CLI, "append", url],
            input=b"a\nb\nc\n",
            stdout=subprocess.PIPE,
            stderr=follower,
            timeout=60,
            check=False,
        )
        os.close(follower)
        follower = -1
        shown = b""
        while True:
            try:
                chunk = os.read(leader, 4096)
            except OSError:
                break
            if not chunk:
                break
            shown += chunk
    finally:
        os.close(leader)
        if follower >= 0:
            os.close(follower)
    assert proc.returncode == 0
    assert b"appended 3 messages" in shown
    # Not a terminal: no progress unless asked.
    assert "appended" not in cli("append", url, stdin=b"d\n").err
