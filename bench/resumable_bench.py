"""Resumable streams, side by side: this library, the PyPI port, and the npm library.

One private redis-server serves every run. Each implementation runs as two worker processes
of its own - a producer and a resumer process - so that each peak RSS is its own, and the
resumers reach the producer over Redis as they would from another server instance.

Workload (defaults; ``--quick`` for a small smoke run):

* throughput: one producer of 20,000 chunks of 32 characters; after the first 1,000 are
  buffered, 10 resumers join (``resume_existing_stream``), then the producer runs on as fast
  as it can. Chunks delivered per second = chunks x resumers / (time from the first chunk
  until every resumer received DONE). Every resumer's text is checked.
* latency: a live stream with 100 buffered chunks; 200 sequential resumes, each timed from
  the call until its first non-empty chunk (the replay); p50 / p99.
* memory: peak RSS of the producer process (and of the resumer process).

Implementations: ``ours`` (this library, under trio and under asyncio), ``pypi`` (PyPI
``resumable-stream`` 0.2.0, asyncio + redis-py), ``node`` (npm ``resumable-stream`` 2.2.13 with
node-redis v4, ``tests/node/resumable/bench.mjs``). Usage::

    .venv/bin/python bench/resumable_bench.py [--quick] [--only ours-trio,node] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import resource
import shutil
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio

ROOT = Path(__file__).resolve().parents[1]
NODE_DIR = ROOT / "tests" / "node" / "resumable"
FILL = "abcdefghijklmnopqrstuvwx"
IMPLEMENTATIONS = ("ours-trio", "ours-asyncio", "pypi", "node")


def chunk(i: int) -> str:
    """Chunk ``i``: 32 characters, its index first so that a loss or reorder shows."""
    return f"{i:08d}{FILL}"


def emit(event: str, **fields: Any) -> None:
    print(json.dumps({"event": event, **fields}), flush=True)


# ----------------------------------------------------------------------------- Python workers


@dataclass
class Impl:
    """What a worker needs from an implementation."""

    create: Callable[[str, Callable[[], AsyncIterator[str]]], Awaitable[Any]]
    resume: Callable[[str], Awaitable[Any]]
    is_done: Callable[[str], Awaitable[bool]]


@asynccontextmanager
async def open_ours(url: str, prefix: str) -> AsyncIterator[Impl]:
    from resumable_streams import open_resumable_stream_context

    async with open_resumable_stream_context(redis_url=url, key_prefix=prefix) as ctx:

        async def is_done(stream_id: str) -> bool:
            return await ctx.has_existing_stream(stream_id) == "DONE"

        yield Impl(ctx.create_new_resumable_stream, ctx.resume_existing_stream, is_done)


@asynccontextmanager
async def open_pypi(url: str, prefix: str) -> AsyncIterator[Impl]:
    from resumable_stream import create_resumable_stream_context
    from resumable_stream.redis_adapter import RedisPublisher, RedisSubscriber
    from resumable_stream.types import CreateResumableStreamContextOptions

    # The README's create_resumable_stream_context(redis_url=...) raises TypeError in 0.2.0;
    # passing connected clients is the way that works.
    publisher = RedisPublisher(url)
    subscriber = RedisSubscriber(url)
    await publisher.connect()
    await subscriber.connect()
    try:
        options = CreateResumableStreamContextOptions(
            key_prefix=prefix, publisher=publisher, subscriber=subscriber
        )
        ctx = create_resumable_stream_context(options)

        async def is_done(stream_id: str) -> bool:
            return bool(await ctx.has_existing_stream(stream_id) == "DONE")

        yield Impl(ctx.create_new_resumable_stream, ctx.resume_existing_stream, is_done)
    finally:
        await subscriber.close()
        await publisher.close()


async def read_line() -> str:
    line: str = await anyio.to_thread.run_sync(sys.stdin.readline)
    return line.strip()


async def expect_line(command: str) -> None:
    line = await read_line()
    if line != command:
        raise RuntimeError(f"expected {command!r} on stdin, got {line!r}")


async def aclose(it: Any) -> None:
    close = getattr(it, "aclose", None)
    if close is not None:
        await close()


def max_rss_kb() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # kilobytes on Linux


async def wait_done(impl: Impl, stream_id: str) -> None:
    """Poll the sentinel: the creator's iterator may end before DONE is stored."""
    while True:
        if await impl.is_done(stream_id):
            return
        await anyio.sleep(0.005)


async def producer_role(impl: Impl, cfg: dict[str, Any]) -> None:
    proceed = anyio.Event()
    finish = anyio.Event()

    def source(count: int, pause_at: int, gate: anyio.Event) -> Callable[[], AsyncIterator[str]]:
        async def gen() -> AsyncIterator[str]:
            for i in range(count):
                if i == pause_at:
                    await gate.wait()
                yield chunk(i)
            if pause_at >= count:
                await gate.wait()

        return gen

    async def read_own(it: Any, count: int, reached: anyio.Event) -> None:
        seen = 0
        async for _ in it:
            seen += 1
            if seen == count:
                reached.set()
        await aclose(it)

    emit("ready")
    await expect_line("go")
    async with anyio.create_task_group() as tg:
        paused = anyio.Event()
        it = await impl.create(cfg["streamId"], source(cfg["chunks"], cfg["joinAfter"], proceed))
        tg.start_soon(read_own, it, cfg["joinAfter"], paused)
        await paused.wait()
        emit("paused")
        await expect_line("continue")
        proceed.set()
    await wait_done(impl, cfg["streamId"])
    emit("done")
    async with anyio.create_task_group() as tg:
        buffered = anyio.Event()
        live = cfg["liveChunks"]
        it = await impl.create(cfg["liveStreamId"], source(live, live, finish))
        tg.start_soon(read_own, it, live, buffered)
        await buffered.wait()
        emit("live")
        await expect_line("finish")
        finish.set()
    await wait_done(impl, cfg["liveStreamId"])


async def resumer_role(impl: Impl, cfg: dict[str, Any]) -> None:
    emit("ready")
    await expect_line("join")
    texts: list[str] = []
    acked = 0
    all_acked = anyio.Event()

    async def one() -> None:
        nonlocal acked
        it = await impl.resume(cfg["streamId"])
        acked += 1
        if acked == cfg["resumers"]:
            all_acked.set()
        parts = [part async for part in it]
        await aclose(it)
        texts.append("".join(parts))

    async with anyio.create_task_group() as tg:
        for _ in range(cfg["resumers"]):
            tg.start_soon(one)
        await all_acked.wait()
        emit("acked")
    expected = "".join(chunk(i) for i in range(cfg["chunks"]))
    emit("done", oks=[text == expected for text in texts], chars=[len(t) for t in texts])
    await expect_line("latency")
    seconds = []
    for _ in range(cfg["latencyResumes"]):
        start = time.perf_counter()
        it = await impl.resume(cfg["liveStreamId"])
        async for part in it:
            if part:
                break
        else:
            raise RuntimeError("the live stream ended")
        seconds.append(time.perf_counter() - start)
        await aclose(it)
    emit("latency", seconds=seconds)


def worker_main(args: argparse.Namespace) -> None:
    cfg = json.loads(args.config)
    impl_name = cfg["impl"]
    opener = open_pypi if impl_name == "pypi" else open_ours
    backend = "asyncio" if impl_name in ("pypi", "ours-asyncio") else "trio"

    async def main() -> None:
        async with opener(cfg["redisUrl"], cfg["prefix"]) as impl:
            if cfg["role"] == "producer":
                await producer_role(impl, cfg)
            else:
                await resumer_role(impl, cfg)

    try:
        anyio.run(main, backend=backend)
    except BaseException as exc:
        emit("error", message=f"{type(exc).__name__}: {exc}")
        raise
    emit("rss", maxRssKb=max_rss_kb())


# ------------------------------------------------------------------------------- orchestrator


class WorkerError(RuntimeError):
    pass


class Worker:
    """A worker process; its stdout lines are read by a thread into a queue."""

    def __init__(self, name: str, argv: list[str], redis_url: str, cwd: Path | None = None) -> None:
        self.name = name
        env = {k: v for k, v in os.environ.items() if k != "DEBUG"}
        env["REDIS_URL"] = redis_url
        self.proc = subprocess.Popen(
            argv,
            cwd=cwd,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            encoding="utf-8",
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.log: list[str] = []
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line)
        self.lines.put(None)

    def send(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def expect(self, event: str, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise WorkerError(f"{self.name}: no {event!r} within {timeout:.0f} s")
            try:
                line = self.lines.get(timeout=remaining)
            except queue.Empty:
                continue
            if line is None:
                tail = "".join(self.log[-20:])
                raise WorkerError(f"{self.name}: exited before {event!r}\n{tail}")
            try:
                data = json.loads(line)
            except ValueError:
                self.log.append(line)
                continue
            if not isinstance(data, dict) or "event" not in data:
                self.log.append(line)
                continue
            if data["event"] == "error":
                raise WorkerError(f"{self.name}: {data.get('message')}")
            if data["event"] == event:
                return data

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        for pipe in (self.proc.stdin, self.proc.stdout):
            if pipe is not None:
                pipe.close()


@contextmanager
def workers(impl: str, base: dict[str, Any]) -> Iterator[tuple[Worker, Worker]]:
    started: list[Worker] = []
    try:
        for role in ("producer", "resumer"):
            cfg = {**base, "role": role, "impl": impl}
            if impl == "node":
                node = shutil.which("node")
                if node is None:
                    raise WorkerError("node is not on PATH")
                argv = [node, str(NODE_DIR / "bench.mjs"), json.dumps(cfg)]
                worker = Worker(f"{impl}/{role}", argv, base["redisUrl"], cwd=NODE_DIR)
            else:
                argv = [sys.executable, __file__, "--worker", json.dumps(cfg)]
                worker = Worker(f"{impl}/{role}", argv, base["redisUrl"])
            started.append(worker)
        yield started[0], started[1]
    finally:
        for worker in started:
            worker.stop()


@dataclass
class Result:
    impl: str
    chunks_per_s: float | None = None
    p50_ms: float | None = None
    p99_ms: float | None = None
    producer_rss_mb: float | None = None
    resumer_rss_mb: float | None = None
    ok: bool | None = None
    wrong: int = 0  # resumers whose text differed (lost, duplicated or reordered chunks)
    runs: int = 1
    error: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


def run_impl(impl: str, redis_url: str, params: dict[str, int], timeout: float) -> Result:
    base = {
        "redisUrl": redis_url,
        "prefix": f"bench-{uuid.uuid4().hex[:8]}",
        "streamId": "throughput",
        "liveStreamId": "live",
        **params,
    }
    result = Result(impl)
    try:
        with workers(impl, base) as (producer, resumer):
            producer.expect("ready", timeout)
            resumer.expect("ready", timeout)
            started = time.perf_counter()
            producer.send("go")
            producer.expect("paused", timeout)
            resumer.send("join")
            resumer.expect("acked", timeout)
            producer.send("continue")
            done = resumer.expect("done", timeout)
            elapsed = time.perf_counter() - started
            result.wrong = sum(1 for ok in done["oks"] if not ok)
            result.ok = result.wrong == 0 and len(done["oks"]) == params["resumers"]
            result.chunks_per_s = params["chunks"] * params["resumers"] / elapsed
            result.extra["seconds"] = elapsed
            if not result.ok:
                result.extra["chars"] = done["chars"]
            producer.expect("done", timeout)
            producer.expect("live", timeout)
            resumer.send("latency")
            latency = resumer.expect("latency", timeout)["seconds"]
            result.p50_ms = statistics.median(latency) * 1000
            result.p99_ms = percentile(latency, 0.99) * 1000
            result.resumer_rss_mb = resumer.expect("rss", timeout)["maxRssKb"] / 1024
            producer.send("finish")
            result.producer_rss_mb = producer.expect("rss", timeout)["maxRssKb"] / 1024
    except WorkerError as exc:
        result.error = str(exc).splitlines()[0][:200]
        print(f"  {impl} failed:\n{exc}", file=sys.stderr)
    return result


def median_of(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def aggregate(runs: list[Result]) -> Result:
    """Medians over the runs of one implementation (RSS: the largest); errors kept."""
    merged = Result(runs[0].impl, runs=len(runs))
    merged.chunks_per_s = median_of([r.chunks_per_s for r in runs])
    merged.p50_ms = median_of([r.p50_ms for r in runs])
    merged.p99_ms = median_of([r.p99_ms for r in runs])
    rss = [r.producer_rss_mb for r in runs if r.producer_rss_mb is not None]
    merged.producer_rss_mb = max(rss) if rss else None
    rss = [r.resumer_rss_mb for r in runs if r.resumer_rss_mb is not None]
    merged.resumer_rss_mb = max(rss) if rss else None
    merged.ok = all(r.ok for r in runs)
    merged.wrong = sum(r.wrong for r in runs)
    errors = [r.error for r in runs if r.error]
    merged.error = f"{len(errors)}/{len(runs)} runs failed: {errors[0]}" if errors else None
    merged.extra["runs"] = [r.__dict__ for r in runs]
    return merged


def fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def ratio(a: float | None, b: float | None) -> str:
    if a is None or b is None or b == 0:
        return "-"
    return f"{a / b:.2f}x"


def print_table(results: list[Result]) -> None:
    header = (
        f"{'implementation':<14} {'chunks/s':>10} {'p50 ms':>8} {'p99 ms':>8} "
        f"{'prod RSS MB':>11} {'res RSS MB':>10}  output"
    )
    print(header)
    print("-" * len(header))
    for r in results:
        status = r.error or (
            f"ok ({r.runs} runs)"
            if r.ok
            else f"WRONG TEXT at {r.wrong} resumer(s) in {r.runs} runs"
        )
        print(
            f"{r.impl:<14} {fmt(r.chunks_per_s, ',.0f'):>10} {fmt(r.p50_ms, '.2f'):>8} "
            f"{fmt(r.p99_ms, '.2f'):>8} {fmt(r.producer_rss_mb, '.1f'):>11} "
            f"{fmt(r.resumer_rss_mb, '.1f'):>10}  {status}"
        )
    by_name = {r.impl: r for r in results}
    print()
    for ours in ("ours-trio", "ours-asyncio"):
        mine = by_name.get(ours)
        if mine is None:
            continue
        for other in ("node", "pypi"):
            theirs = by_name.get(other)
            if theirs is None:
                continue
            print(
                f"{ours} / {other}: "
                f"throughput {ratio(mine.chunks_per_s, theirs.chunks_per_s)} (higher is better), "
                f"latency p50 {ratio(mine.p50_ms, theirs.p50_ms)} "
                f"p99 {ratio(mine.p99_ms, theirs.p99_ms)} (lower is better), "
                f"producer RSS {ratio(mine.producer_rss_mb, theirs.producer_rss_mb)}"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a small smoke run")
    parser.add_argument("--only", default=",".join(IMPLEMENTATIONS), help="comma-separated")
    parser.add_argument("--repeat", type=int, default=1, help="rounds; medians are reported")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker_main(argparse.Namespace(config=args.worker))
        return

    from resumable_streams.testing import RedisServer

    if args.quick:
        params = {"chunks": 2000, "joinAfter": 100, "resumers": 3}
        params |= {"latencyResumes": 20, "liveChunks": 100}
    else:
        params = {"chunks": 20_000, "joinAfter": 1000, "resumers": 10}
        params |= {"latencyResumes": 200, "liveChunks": 100}
    names = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = sorted(set(names) - set(IMPLEMENTATIONS))
    if unknown:
        parser.error(f"unknown implementations {unknown}; choose from {IMPLEMENTATIONS}")
    timeout = 60.0 if args.quick else 300.0
    print(
        f"workload: {params['chunks']} chunks x 32 chars, {params['resumers']} resumers joining "
        f"after {params['joinAfter']}; {params['latencyResumes']} resumes of a live stream "
        f"with {params['liveChunks']} buffered chunks"
    )
    runs: dict[str, list[Result]] = {name: [] for name in names}
    with RedisServer() as server:
        print(f"redis-server on {server.url}\n")
        for round_number in range(1, args.repeat + 1):
            for name in names:  # interleaved, so that a noisy minute hits everyone
                result = run_impl(name, server.url, params, timeout)
                runs[name].append(result)
                note = result.error or ("ok" if result.ok else f"{result.wrong} wrong texts")
                speed = fmt(result.chunks_per_s, ",.0f")
                print(f"  round {round_number} {name}: {speed} chunks/s, {note}", flush=True)
    results = [aggregate(runs[name]) for name in names]
    print()
    print_table(results)
    if args.json:
        payload = {
            "params": params,
            "repeat": args.repeat,
            "results": [r.__dict__ for r in results],
        }
        args.json.write_text(json.dumps(payload, indent=2) + "\n")


if __name__ == "__main__":
    main()
