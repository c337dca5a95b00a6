"""``resumable-streams serve`` argument handling (the server itself runs in other tests)."""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx2
import pytest

from resumable_streams.cli import build_parser, main

from .conftest import ServerProcess


def test_serve_defaults() -> None:
    args = build_parser().parse_args(["serve"])
    assert (args.host, args.port, args.storage, args.backend) == (
        "127.0.0.1",
        4437,
        "sqlite",
        "trio",
    )
    assert args.long_poll_timeout == 30.0
    assert args.sse_reconnect_interval == 60.0
    assert args.http == "builtin"
    assert args.max_connections == 10_000
    assert (args.keep_alive_timeout, args.head_timeout, args.body_timeout) == (75.0, 30.0, 30.0)


def test_connection_cap_and_keep_alive_flags(server_factory: type[ServerProcess]) -> None:
    """``--max-connections 1``: a second connection gets 503; ``--keep-alive-timeout``
    closes the first once idle."""

    server = server_factory(
        "--storage", "memory", "--max-connections", "1", "--keep-alive-timeout", "0.5"
    )
    server.start()
    request = b"OPTIONS /v1/stream/x HTTP/1.1\r\nHost: t\r\n\r\n"
    time.sleep(0.2)  # the start-up probe's connection is gone
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as first:
        first.sendall(request)
        assert first.recv(65536).startswith(b"HTTP/1.1 204 ")
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as second:
            second.sendall(request)
            answer = b""
            while chunk := second.recv(65536):
                answer += chunk
            assert answer.startswith(b"HTTP/1.1 503 ")
        assert first.recv(65536) == b""  # idle beyond the keep-alive timeout: closed


def test_serve_flags() -> None:
    args = build_parser().parse_args(
        [
            "serve",
            "--host",
            "0.0.0.0",
            "--port",
            "9000",
            "--storage",
            "memory",
            "--long-poll-timeout",
            "0.5",
            "--sse-reconnect-interval",
            "5",
            "--max-body-size",
            "1024",
            "--backend",
            "asyncio",
        ]
    )
    assert (args.port, args.storage, args.max_body_size, args.backend) == (
        9000,
        "memory",
        1024,
        "asyncio",
    )


@pytest.mark.parametrize(
    "argv",
    [
        ["serve", "--storage", "disk"],
        ["serve", "--long-poll-timeout", "0"],
        ["serve", "--max-body-size", "-1"],
        ["serve", "--http", "h2"],
        ["serve", "--port", "70000"],
        ["serve", "--port", "-1"],
        ["serve", "--port", "http"],
        ["serve", "--long-poll-timeout", "abc"],
        ["serve", "--long-poll-timeout", "nan"],
        ["serve", "--sse-reconnect-interval", "inf"],
        ["serve", "--max-body-size", "lots"],
        ["serve", "--max-connections", "0"],
        ["serve", "--keep-alive-timeout", "0"],
        ["serve", "--head-timeout", "-1"],
        ["serve", "--body-timeout", "soon"],
        [],
    ],
)
def test_bad_arguments_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "error:" in err
    assert "_positive" not in err  # not argparse's "invalid <function name> value"
    if len(argv) > 2:
        assert repr(argv[2]) in err  # names the offending value


CLI = [sys.executable, "-m", "resumable_streams.cli", "serve"]


def _serve(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """``resumable-streams serve ARGS`` that is expected to fail at startup."""
    return subprocess.run(
        [*CLI, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def _one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    """The ``error: ...`` line of a failed serve; fails if there is a traceback."""
    assert "Traceback" not in result.stderr, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, result.stderr
    return errors[0]


@pytest.mark.parametrize("http", ["builtin", "hypercorn"])
def test_busy_port_is_one_line_exit_1(http: str) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = _serve("--storage", "memory", "--port", str(port), "--http", http)
    assert result.returncode == 1, result.stderr
    line = _one_line_error(result)
    assert f"cannot listen on 127.0.0.1:{port}" in line
    assert "Address already in use" in line
    assert "server on" not in result.stderr  # nothing claims to be serving


def test_unusable_data_dir_is_one_line_exit_1(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("")
    data_dir = tmp_path / "a-file" / "data"
    result = _serve("--port", "0", "--data-dir", str(data_dir))
    assert result.returncode == 1, result.stderr
    assert str(tmp_path / "a-file") in _one_line_error(result)


def test_unreachable_redis_is_one_line_exit_5() -> None:
    with socket.socket() as closed:  # a port nobody listens on
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    result = _serve("--port", "0", "--storage", "redis", "--redis-url", f"redis://127.0.0.1:{port}")
    assert result.returncode == 5, result.stderr
    assert f"cannot reach Redis at redis://127.0.0.1:{port}" in _one_line_error(result)


@pytest.mark.parametrize("http", ["builtin", "hypercorn"])
def test_port_0_logs_the_bound_port(http: str) -> None:
    proc = subprocess.Popen(
        [*CLI, "--storage", "memory", "--port", "0", "--http", http],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stderr is not None
        line = proc.stderr.readline()  # blocks until the first log line; the test times out
        found = re.search(r"Durable Streams server on http://127\.0\.0\.1:(\d+) ", line)
        assert found, line
        port = int(found.group(1))
        assert port != 0
        response = httpx2.put(f"http://127.0.0.1:{port}/v1/stream/p0", timeout=10)
        assert response.status_code == 201
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(10)
        if proc.stderr is not None:
            proc.stderr.close()


def test_redis_needs_url(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "--storage", "redis"]) == 2
    assert "--redis-url" in capsys.readouterr().err


def test_cache_control_flag() -> None:
    assert build_parser().parse_args(["serve"]).cache_control is None  # the protocol default
    args = build_parser().parse_args(["serve", "--cache-control", "public, s-maxage=600"])
    assert args.cache_control == "public, s-maxage=600"


def test_bad_cache_control_flag_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["serve", "--cache-control", "a\nb"])
    assert info.value.code == 2
    assert "invalid Cache-Control value 'a\\nb'" in capsys.readouterr().err


@pytest.mark.parametrize("http", ["builtin", "hypercorn"])
def test_serve_sends_the_configured_cache_control(
    server_factory: type[ServerProcess], http: str
) -> None:
    server = server_factory(
        "--storage", "memory", "--cache-control", "public, s-maxage=600", "--http", http
    )
    server.start()
    with httpx2.Client(base_url=f"{server.url}/v1/stream/", timeout=10) as client:
        client.put("c", content=b"x", headers={"Content-Type": "text/plain"})
        assert client.get("c", params={"offset": "-1"}).headers["cache-control"] == (
            "public, s-maxage=600"
        )
        assert client.head("c").headers["cache-control"] == "no-store"
