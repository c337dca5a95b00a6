// The official Durable Streams Node reference server (npm @durable-streams/server, installed in
// tests/node/durable by bench/durable_server_bench.py) for the server benchmark.
// Usage: node ds_server.mjs <node_modules parent dir> <port> [dataDir]
// Without dataDir: the in-memory store. With dataDir: the file-backed store (LMDB metadata,
// one append-only log per stream, fdatasync before each append is acknowledged).
// Prints "READY <url>" once listening; stops on SIGTERM / SIGINT / stdin EOF.
import { createRequire } from "node:module"
import { join } from "node:path"

const [moduleDir, portArg, dataDir] = process.argv.slice(2)
const require = createRequire(join(moduleDir, "package.json"))
const { DurableStreamTestServer } = require("@durable-streams/server")

const options = { port: Number(portArg ?? 0), host: "127.0.0.1" }
if (dataDir) options.dataDir = dataDir
const server = new DurableStreamTestServer(options)
const url = await server.start()
process.stdout.write(`READY ${url}\n`)

let stopping = false
async function stop() {
  if (stopping) return
  stopping = true
  await server.stop()
  process.exit(0)
}
process.on("SIGTERM", stop)
process.on("SIGINT", stop)
process.stdin.on("end", stop)
process.stdin.resume()
