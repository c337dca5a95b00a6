// Shared helpers of the interop scripts: JSON-lines output, config, Redis clients.
//
// Every script takes one JSON argument (its config) and REDIS_URL from the environment, prints one
// JSON object per line on stdout ({"event": ...}), and closes its Redis clients before exiting.
import { createClient } from "redis";
import { createResumableStreamContext } from "resumable-stream/redis";

export function emit(event, fields = {}) {
  process.stdout.write(JSON.stringify({ event, ...fields }) + "\n");
}

export function readConfig() {
  const raw = process.argv[2];
  if (!raw) {
    throw new Error("usage: node <script>.mjs '<json config>'");
  }
  return JSON.parse(raw);
}

// The library's `redis` entry would create these two node-redis v4 clients itself (createClient
// with REDIS_URL) but never closes them; we create the same clients so that we can quit them.
export async function openContext(cfg) {
  const url = process.env.REDIS_URL;
  if (!url) {
    throw new Error("REDIS_URL environment variable is not set");
  }
  const publisher = createClient({ url });
  const subscriber = createClient({ url });
  await Promise.all([publisher.connect(), subscriber.connect()]);
  const pending = [];
  const ctx = createResumableStreamContext({
    keyPrefix: cfg.prefix,
    waitUntil: (promise) => pending.push(promise),
    publisher,
    subscriber,
    doneWatchdogIntervalMs: cfg.doneWatchdogIntervalMs,
  });
  async function close() {
    // Let producers finish their done-cleanup (SET DONE, UNSUBSCRIBE, DONE messages) first.
    await Promise.all(pending);
    await Promise.all([publisher.quit(), subscriber.quit()]);
  }
  return { ctx, publisher, subscriber, close };
}

// Lines from stdin as an async queue: `await nextLine()` gives the next line, or null at EOF.
export function stdinLines() {
  const lines = [];
  const waiters = [];
  let buffer = "";
  let ended = false;
  process.stdin.setEncoding("utf8");
  process.stdin.on("data", (data) => {
    buffer += data;
    let index;
    while ((index = buffer.indexOf("\n")) >= 0) {
      const line = buffer.slice(0, index);
      buffer = buffer.slice(index + 1);
      const waiter = waiters.shift();
      if (waiter) waiter(line);
      else lines.push(line);
    }
  });
  process.stdin.on("end", () => {
    ended = true;
    for (const waiter of waiters.splice(0)) waiter(null);
  });
  return {
    nextLine() {
      if (lines.length) return Promise.resolve(lines.shift());
      if (ended) return Promise.resolve(null);
      return new Promise((resolve) => waiters.push(resolve));
    },
    close() {
      process.stdin.pause();
      process.stdin.destroy();
    },
  };
}

export function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

// Read a ReadableStream<string> to its end, emitting one "chunk" event per value.
export async function drain(stream, { emitChunks = true } = {}) {
  const reader = stream.getReader();
  const parts = [];
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    parts.push(value);
    if (emitChunks) emit("chunk", { index: parts.length - 1, data: value });
  }
  return parts.join("");
}
