// Starts the official Durable Streams Node reference server for the client interop tests.
// Usage: node server.mjs <port> [longPollTimeoutMs]
// Prints "READY <url>" on stdout once listening; stops on SIGTERM / SIGINT / stdin EOF.
import { DurableStreamTestServer } from "@durable-streams/server"

const port = Number(process.argv[2] ?? 0)
const longPollTimeout = Number(process.argv[3] ?? 500)
const server = new DurableStreamTestServer({ port, host: "127.0.0.1", longPollTimeout })
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
