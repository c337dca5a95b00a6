"""``resumable-streams serve`` argument handling (the server itself runs in other tests)."""

from __future__ import annotations

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
        [],
    ],
)
def test_bad_arguments_exit_2(argv: list[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2


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
