// Produce one resumable stream with the npm library and read it to its end.
//
// Config: {prefix, streamId, api: "explicit" | "idempotent", chunks: string[], delayMs?: number,
//          gated?: boolean, doneWatchdogIntervalMs?: number}
// With gated, each chunk waits for permission on stdin: a line "<n>" releases n more chunks,
// "all" releases the rest. Otherwise chunk i is produced after delayMs.
// Events: ready; started {result: "stream" | "null"}; chunk {index, data} (the library has
// buffered the chunk by then); end {text}; closed. Errors: error {message}, exit code 1.
import { drain, emit, openContext, readConfig, sleep, stdinLines } from "./common.mjs";

const cfg = readConfig();
const { ctx, close } = await openContext(cfg);
const stdin = cfg.gated ? stdinLines() : null;
emit("ready");

let released = cfg.gated ? 0 : Infinity;
function makeStream() {
  let index = 0;
  return new ReadableStream({
    async pull(controller) {
      while (index >= released) {
        const line = await stdin.nextLine();
        if (line === null || line.trim() === "all") released = Infinity;
        else released += Number(line);
      }
      if (cfg.delayMs) await sleep(cfg.delayMs);
      if (index >= cfg.chunks.length) {
        controller.close();
        return;
      }
      controller.enqueue(cfg.chunks[index]);
      index += 1;
    },
  });
}

try {
  const stream =
    cfg.api === "explicit"
      ? await ctx.createNewResumableStream(cfg.streamId, makeStream)
      : await ctx.resumableStream(cfg.streamId, makeStream);
  emit("started", { result: stream === null ? "null" : "stream" });
  if (stream !== null) {
    emit("end", { text: await drain(stream) });
  }
  stdin?.close();
  await close();
  emit("closed");
} catch (error) {
  emit("error", { message: String(error?.message ?? error) });
  process.exit(1);
}
