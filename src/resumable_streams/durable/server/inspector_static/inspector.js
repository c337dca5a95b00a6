// The resumable-streams inspector: lists streams and live-tails one of them over the
// Durable Streams SSE read (?live=sse). No framework, no build step.
//
// Resuming: the protocol's SSE events carry no `id:`, so the browser's own EventSource retry
// would start again from the first offset. Instead, every `control` event's
// streamNextOffset is remembered, and on any error (server restart, network cut, the server
// ending the response) the EventSource is closed and a new one opened from that offset.
// Data is shown only once its `control` event has arrived, so a batch cut in the middle is
// read again whole, never twice.
"use strict";

(() => {
  const API = "/_inspector/api/streams";
  const REFRESH_MS = 2000;
  const MAX_ROWS = 500;

  const $ = (id) => document.getElementById(id);
  const streams = new Map();
  let listed = false; // whether the last listing request succeeded
  const tail = {
    name: null,
    kind: "text",
    es: null,
    offset: "-1",
    pending: [],
    retries: 0,
    timer: null,
    closed: false,
    events: 0,
    bytes: 0,
  };

  function encodePath(name) {
    return name.split("/").map(encodeURIComponent).join("/");
  }

  function shortOffset(offset) {
    if (offset === "-1") return "0";
    if (!offset || !offset.includes("_")) return offset || "–";
    const [segment, position] = offset.split("_");
    const pos = String(Number(position));
    return Number(segment) === 0 ? pos : `${Number(segment)}:${pos}`;
  }

  function human(n) {
    if (n < 1024) return `${n} B`;
    const units = ["KiB", "MiB", "GiB", "TiB"];
    let value = n;
    let unit = "B";
    for (const u of units) {
      if (value < 1024) break;
      value /= 1024;
      unit = u;
    }
    return `${value.toFixed(1)} ${unit}`;
  }

  function duration(seconds) {
    const s = Math.round(seconds);
    if (s < 120) return `${s}s`;
    if (s < 7200) return `${Math.round(s / 60)}m`;
    if (s < 172800) return `${Math.round(s / 3600)}h`;
    return `${Math.round(s / 86400)}d`;
  }

  function expiryText(info) {
    const left = info.expires_in == null ? "" : ` (${duration(info.expires_in)} left)`;
    if (info.ttl_seconds != null) return `TTL ${duration(info.ttl_seconds)}${left}`;
    if (info.expires_at != null) return `until ${info.expires_at}${left}`;
    return "none";
  }

  function kindOf(contentType) {
    const media = (contentType || "").split(";")[0].trim().toLowerCase();
    if (media === "application/json" || media.endsWith("+json")) return "json";
    if (media.startsWith("text/")) return "text";
    return "binary";
  }

  function setStatus(element, text, cls) {
    element.textContent = text;
    element.className = `status ${cls || ""}`;
  }

  // ---------------------------------------------------------------- the list

  function cell(row, text, cls, title) {
    const td = document.createElement("td");
    td.textContent = text;
    if (cls) td.className = cls;
    if (title) td.title = title;
    row.appendChild(td);
  }

  function render(body) {
    streams.clear();
    const tbody = $("streams").querySelector("tbody");
    tbody.replaceChildren();
    for (const info of body.streams) {
      streams.set(info.name, info);
      const row = document.createElement("tr");
      row.dataset.name = info.name;
      if (info.name === tail.name) row.classList.add("selected");
      cell(row, info.name, "name", info.path);
      cell(row, info.content_type);
      cell(row, human(info.size), "num", `${info.size} bytes`);
      cell(row, shortOffset(info.next_offset), "offset", info.next_offset);
      cell(row, info.closed ? "closed" : "open", info.closed ? "state-closed" : "state-open");
      cell(row, expiryText(info));
      row.addEventListener("click", () => select(info.name));
      tbody.appendChild(row);
    }
    const more = body.truncated ? ` (first ${body.limit})` : "";
    $("stream-count").textContent = `${body.streams.length}${more}`;
    $("streams-empty").hidden = body.streams.length > 0;
  }

  async function refresh() {
    try {
      const response = await fetch(API, { cache: "no-store" });
      if (response.ok) {
        render(await response.json());
        listed = true;
        setStatus($("server-status"), "server connected", "ok");
        if (tail.name === null) selectFromHash();
      } else {
        listed = false;
        const reason = await response.text();
        setStatus($("server-status"), `listing failed: HTTP ${response.status}: ${reason}`, "bad");
      }
    } catch (error) {
      listed = false;
      setStatus($("server-status"), `server unreachable, retrying (${error.message})`, "bad");
    } finally {
      setTimeout(refresh, REFRESH_MS);
    }
  }

  // ---------------------------------------------------------------- the tail

  function selectFromHash() {
    const match = /(?:^#|&)stream=([^&]+)/.exec(window.location.hash);
    if (match) {
      const name = decodeURIComponent(match[1]);
      if (streams.has(name)) select(name);
    }
  }

  function stopTail() {
    if (tail.es !== null) tail.es.close();
    if (tail.timer !== null) clearTimeout(tail.timer);
    tail.es = null;
    tail.timer = null;
  }

  function select(name) {
    stopTail();
    Object.assign(tail, {
      name,
      kind: kindOf(streams.get(name)?.content_type),
      offset: "-1",
      pending: [],
      retries: 0,
      closed: false,
      events: 0,
      bytes: 0,
    });
    history.replaceState(null, "", `#stream=${encodeURIComponent(name)}`);
    for (const row of $("streams").querySelectorAll("tbody tr")) {
      row.classList.toggle("selected", row.dataset.name === name);
    }
    $("tail-name").textContent = name;
    $("tail").replaceChildren();
    showCounters();
    openTail();
  }

  function showCounters() {
    const offset = $("tail-offset");
    offset.textContent = tail.offset;
    $("tail-events").textContent = String(tail.events);
    $("tail-bytes").textContent = String(tail.bytes);
  }

  function decode(data) {
    if (tail.kind === "json") {
      const messages = JSON.parse(data);
      return { text: messages.map((m) => JSON.stringify(m)).join("\n"), size: data.length };
    }
    if (tail.kind === "binary") {
      const raw = atob(data);
      let hex = "";
      for (let i = 0; i < Math.min(raw.length, 48); i++) {
        hex += raw.charCodeAt(i).toString(16).padStart(2, "0") + " ";
      }
      return { text: `(${raw.length} bytes) ${hex}${raw.length > 48 ? "…" : ""}`, size: raw.length };
    }
    return { text: data, size: new TextEncoder().encode(data).length };
  }

  // One row per batch: the data events up to a control event share one offset range (the
  // protocol gives no offsets inside a batch), so the range is shown once, with each event's
  // text on its own line. A note row has from === null and one text.
  function addRow(from, to, texts, cls) {
    const list = $("tail");
    const item = document.createElement("li");
    if (cls) item.className = cls;
    if (from !== null) {
      item.dataset.from = from;
      item.dataset.to = to;
      const range = document.createElement("span");
      range.className = "range";
      range.textContent = `${shortOffset(from)} → ${shortOffset(to)}`;
      range.title = `${from} → ${to}` + (texts.length > 1 ? ` (${texts.length} events)` : "");
      item.appendChild(range);
    }
    const batch = document.createElement("div");
    for (const text of texts) {
      const data = document.createElement("span");
      data.className = "data";
      data.textContent = text;
      batch.appendChild(data);
    }
    item.appendChild(batch);
    const atBottom = list.scrollTop + list.clientHeight >= list.scrollHeight - 4;
    list.appendChild(item);
    while (list.childElementCount > MAX_ROWS) list.firstElementChild.remove();
    if (atBottom) list.scrollTop = list.scrollHeight;
  }

  function openTail() {
    const name = tail.name;
    const url = `/v1/stream/${encodePath(name)}?offset=${encodeURIComponent(tail.offset)}&live=sse`;
    const es = new EventSource(url);
    tail.es = es;
    tail.pending = [];
    es.addEventListener("data", (event) => {
      tail.pending.push(event.data);
    });
    es.addEventListener("control", (event) => {
      const control = JSON.parse(event.data);
      const next = control.streamNextOffset;
      const texts = [];
      for (const data of tail.pending) {
        const { text, size } = decode(data);
        texts.push(text);
        tail.events += 1;
        tail.bytes += size;
      }
      if (texts.length) addRow(tail.offset, next, texts);
      tail.pending = [];
      if (next) tail.offset = next;
      tail.retries = 0;
      showCounters();
      if (control.streamClosed) {
        tail.closed = true;
        stopTail();
        setStatus($("tail-status"), "stream closed: complete", "");
      } else {
        setStatus($("tail-status"), control.upToDate ? "live, up to date" : "catching up", "ok");
      }
    });
    es.addEventListener("error", () => {
      if (tail.es !== es) return;
      stopTail();
      tail.pending = [];
      if (tail.closed || tail.name !== name) return;
      if (listed && !streams.has(name)) {
        setStatus($("tail-status"), "stream not found (deleted or expired?)", "bad");
        addRow(null, null, [`stopped: ${name} is no longer listed`], "note");
        return;
      }
      const delay = Math.min(5000, 250 * 2 ** tail.retries);
      tail.retries += 1;
      setStatus($("tail-status"), `connection lost, resuming from ${shortOffset(tail.offset)}`, "bad");
      if (tail.retries === 2) {
        addRow(null, null, [`connection lost; resuming from offset ${tail.offset}`], "note");
      }
      tail.timer = setTimeout(openTail, delay);
    });
  }

  refresh();
})();
