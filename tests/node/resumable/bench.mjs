// Benchmark worker for bench/resumable_bench.py: the npm library in one role per process.
//
// Config: {role: "producer" | "resumer", prefix, streamId, liveStreamId, chunks, joinAfter,
//          resumers, latencyResumes, liveChunks}
// Commands on stdin, events on stdout (JSON lines), the same protocol as the Python workers:
//   producer: ready; "go" -> creates streamId, produces joinAfter chunks -> paused;
//             "continue" -> the rest -> done; then creates liveStreamId with liveChunks and
//             keeps it open -> live; "finish" -> ends it -> rss {maxRssKb}.
//   resumer:  ready; "join" -> `resumers` concurrent resumeExistingStream(streamId), all acked
//             -> acked; read to the end -> done {oks, chars} (per resumer); "latency" -> latencyResumes
//             sequential resumes of liveStreamId, each timed to its first non-empty chunk
//             -> latency {seconds: [...]}; then rss {maxRssKb}.
import { emit, openContext, readConfig, stdinLines } from "./common.mjs";

const cfg = readConfig();
const { ctx, close } = await openContext(cfg);
const stdin = stdinLines();
const FILL = "abcdefghijklmnopqrstuvwx";
const chunk = (i) => String(i).padStart(8, "0") + FILL;

async function expect(command) {
  const line = await stdin.nextLine();
  if (line?.trim() !== command) throw new Error(`expected ${command}, got ${line}`);
}

function deferred() {
  let resolve;
  const promise = new Promise((r) => (resolve = r));
  return { promise, resolve };
}

function source(count, pauseAt, pause) {
  let index = 0;
  return () =>
    new ReadableStream({
      async pull(controller) {
        if (index === pauseAt) await pause;
        if (index >= count) {
          controller.close();
          return;
        }
        controller.enqueue(chunk(index));
        index += 1;
      },
    });
}

async function readOwn(stream, onCount) {
  const reader = stream.getReader();
  let count = 0;
  for (;;) {
    const { done } = await reader.read();
    if (done) return;
    count += 1;
    onCount(count);
  }
}

async function producer() {
  emit("ready");
  await expect("go");
  const resume = deferred();
  const stream = await ctx.createNewResumableStream(
    cfg.streamId,
    source(cfg.chunks, cfg.joinAfter, resume.promise)
  );
  const paused = deferred();
  const own = readOwn(stream, (count) => count === cfg.joinAfter && paused.resolve());
  await paused.promise;
  emit("paused");
  await expect("continue");
  resume.resolve();
  await own;
  while ((await ctx.hasExistingStream(cfg.streamId)) !== "DONE") {
    await new Promise((r) => setTimeout(r, 5));
  }
  emit("done");
  const finish = deferred();
  const live = await ctx.createNewResumableStream(
    cfg.liveStreamId,
    source(cfg.liveChunks, cfg.liveChunks, finish.promise)
  );
  const buffered = deferred();
  const ownLive = readOwn(live, (count) => count === cfg.liveChunks && buffered.resolve());
  await buffered.promise;
  emit("live");
  await expect("finish");
  finish.resolve();
  await ownLive;
}

async function drainText(stream) {
  const reader = stream.getReader();
  const parts = [];
  for (;;) {
    const { done, value } = await reader.read();
    if (done) return parts.join("");
    parts.push(value);
  }
}

async function resumer() {
  emit("ready");
  await expect("join");
  const streams = await Promise.all(
    Array.from({ length: cfg.resumers }, () => ctx.resumeExistingStream(cfg.streamId))
  );
  emit("acked");
  const texts = await Promise.all(streams.map((s) => drainText(s)));
  let expected = "";
  for (let i = 0; i < cfg.chunks; i++) expected += chunk(i);
  emit("done", { oks: texts.map((t) => t === expected), chars: texts.map((t) => t.length) });
  await expect("latency");
  const seconds = [];
  for (let i = 0; i < cfg.latencyResumes; i++) {
    const start = performance.now();
    const stream = await ctx.resumeExistingStream(cfg.liveStreamId);
    const reader = stream.getReader();
    for (;;) {
      const { done, value } = await reader.read();
      if (done) throw new Error("live stream ended");
      if (value) break;
    }
    seconds.push((performance.now() - start) / 1000);
    await reader.cancel();
  }
  emit("latency", { seconds });
}

try {
  await (cfg.role === "producer" ? producer() : resumer());
  stdin.close();
  await close();
  emit("rss", { maxRssKb: process.resourceUsage().maxRSS });
} catch (error) {
  emit("error", { message: String(error?.stack ?? error) });
  process.exit(1);
}
