// The /ops dashboard: sign in as an admin, then read the snapshot stream
// (/api/ops/stream, SSE) with fetch, since EventSource cannot send a bearer
// token. The token lives in this tab's memory only. Every value is written
// with textContent, never as HTML.
"use strict";

let token = null;
let aborter = null;

const $ = (id) => document.getElementById(id);

function setStatus(text, cls) {
  const s = $("status");
  s.textContent = text;
  s.className = cls || "";
}

function fillList(dl, pairs) {
  dl.replaceChildren();
  for (const [k, v] of pairs) {
    const dt = document.createElement("dt");
    dt.textContent = k;
    const dd = document.createElement("dd");
    dd.textContent = v === null || v === undefined ? "–" : String(v);
    dl.append(dt, dd);
  }
}

function fillRows(tbody, rows, cells) {
  tbody.replaceChildren();
  for (const row of rows) {
    const tr = document.createElement("tr");
    for (const [value, cls] of cells(row)) {
      const td = document.createElement("td");
      td.textContent = value === null || value === undefined ? "–" : String(value);
      if (cls) td.className = cls;
      tr.append(td);
    }
    tbody.append(tr);
  }
}

function render(s) {
  fillList($("chats"), [
    ["live", s.chats.live], ["streaming", s.chats.streaming],
    ["queued calls", s.chats.queued_calls], ["subscribers", s.chats.subscribers],
    ["restarts", s.chats.restarts],
  ]);
  fillRows($("chat-rows"), s.chats.top, (c) => [
    [c.chat_id, "id"], [c.streaming ? "yes" : ""], [c.queue_depth], [c.subscribers],
  ]);
  fillList($("users"), [
    ["live", s.users.live], ["sockets", s.users.sockets], ["restarts", s.users.restarts],
  ]);
  fillRows($("user-rows"), s.users.top, (u) => [[u.user_id, "id"], [u.sockets]]);
  fillRows($("provider-rows"), s.providers, (p) => [
    [p.name], [p.circuit, p.circuit],
    [p.slots_in_use === null ? null : `${p.slots_in_use}/${p.concurrency}`],
    [p.requests_last_minute], [p.tokens_last_minute],
  ]);
  fillList($("system"), [
    ["usage writer backlog", s.usage_writer.backlog],
    ["tasks in flight", s.tasks_in_flight],
    ["provider restarts", s.provider_restarts],
    ["limits", s.limits_mode],
    ["taken", new Date(s.taken_at_ms).toLocaleTimeString()],
  ]);
}

// Splits an SSE byte stream into events and hands each `snapshot` to render().
async function follow() {
  if (aborter) aborter.abort();
  aborter = new AbortController();
  const res = await fetch("/api/ops/stream?top=20", {
    headers: { Authorization: `Bearer ${token}`, Accept: "text/event-stream" },
    signal: aborter.signal,
  });
  if (!res.ok) {
    const body = await res.json().catch(() => ({}));
    throw new Error((body.error && body.error.message) || `HTTP ${res.status}`);
  }
  setStatus("live", "live");
  const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
  let buf = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) throw new Error("stream ended");
    buf += value;
    let end;
    while ((end = buf.indexOf("\n\n")) >= 0) {
      const block = buf.slice(0, end);
      buf = buf.slice(end + 2);
      let event = "message";
      let data = "";
      for (const line of block.split("\n")) {
        if (line.startsWith("event:")) event = line.slice(6).trim();
        else if (line.startsWith("data:")) data += line.slice(5).trim();
      }
      if (event === "snapshot" && data) render(JSON.parse(data));
    }
  }
}

async function run() {
  for (;;) {
    try {
      await follow();
    } catch (e) {
      if (e.name === "AbortError") return;
      setStatus(`disconnected: ${e.message}; retrying`, "error");
      if (/admin|token|disabled/i.test(e.message)) return;
    }
    await new Promise((r) => setTimeout(r, 2000));
  }
}

async function signIn(ev) {
  ev.preventDefault();
  const res = await fetch("/api/auth/signin", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ email: $("email").value, password: $("password").value }),
  });
  const body = await res.json().catch(() => ({}));
  if (!res.ok) {
    setStatus((body.error && body.error.message) || `sign-in failed (${res.status})`, "error");
    return;
  }
  token = body.access_token;
  $("password").value = "";
  $("signin").hidden = true;
  $("view").hidden = false;
  run();
}

document.addEventListener("DOMContentLoaded", () => {
  $("signin").addEventListener("submit", signIn);
});
