// Resume a stream with the npm library and read it to its end.
//
// Config: {prefix, streamId, api: "existing" | "idempotent" | "has", skip?: number (omitted = undefined),
//          chunks?: string[] (the source if the idempotent call ends up producing),
//          doneWatchdogIntervalMs?: number, cancelAfter?: number}
// With cancelAfter, the reader cancels the stream after that many messages (a client leaving):
// cancelled {text} instead of end.
// Events: ready; result {kind: "stream" | "null" | "undefined" | "error", message?} (api "has":
// result {kind: "has", value: hasExistingStream()});
// chunk {index, data} per message received (the empty ack included, as the library enqueues it);
// end {text}; closed. A read error prints error {message}. Exit code 0 unless a script bug.
import { drain, emit, openContext, readConfig } from "./common.mjs";

const cfg = readConfig();
const { ctx, close } = await openContext(cfg);
emit("ready");

function makeStream() {
  const chunks = cfg.chunks ?? [];
  return new ReadableStream({
    start(controller) {
      for (const chunk of chunks) controller.enqueue(chunk);
      controller.close();
    },
  });
}

if (cfg.api === "has") {
  emit("result", { kind: "has", value: await ctx.hasExistingStream(cfg.streamId) });
  await close();
  emit("closed");
  process.exit(0);
}

let stream;
try {
  stream =
    cfg.api === "existing"
      ? await ctx.resumeExistingStream(cfg.streamId, cfg.skip)
      : await ctx.resumableStream(cfg.streamId, makeStream, cfg.skip);
} catch (error) {
  emit("result", { kind: "error", message: String(error?.message ?? error) });
  await close();
  emit("closed");
  process.exit(0);
}
emit("result", { kind: stream === null ? "null" : stream === undefined ? "undefined" : "stream" });
if (stream && cfg.cancelAfter !== undefined) {
  const reader = stream.getReader();
  const parts = [];
  while (parts.length < cfg.cancelAfter) {
    const { done, value } = await reader.read();
    if (done) break;
    parts.push(value);
    emit("chunk", { index: parts.length - 1, data: value });
  }
  await reader.cancel();
  emit("cancelled", { text: parts.join("") });
} else if (stream) {
  try {
    emit("end", { text: await drain(stream) });
  } catch (error) {
    emit("error", { message: String(error?.message ?? error) });
  }
}
await close();
emit("closed");
