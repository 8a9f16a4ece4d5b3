// Hearth's page: chat with the served model, and a live dashboard of the
// node. Plain JavaScript, no dependencies, nothing fetched from elsewhere.
// Model output is never parsed as HTML: markdown is turned into DOM nodes
// whose text is set with textContent.
"use strict";

const $ = (id) => document.getElementById(id);
const store = { key: "hearth-key", chats: "hearth-conversations", current: "hearth-current" };

// ---------- the server ----------

function apiKey() { return sessionStorage.getItem(store.key) || ""; }

async function api(path, init = {}) {
  const headers = Object.assign({ "Content-Type": "application/json" }, init.headers || {});
  const key = apiKey();
  if (key) headers["Authorization"] = "Bearer " + key;
  const res = await fetch(path, Object.assign({}, init, { headers }));
  if (res.status === 401) {
    askForKey(key ? "That key was refused by the server." : "");
    throw new Error("the server needs an API key");
  }
  if (!res.ok) {
    let message = res.status + " " + res.statusText;
    try { const body = await res.json(); message = (body.error && (body.error.message || body.error)) || message; } catch (_) {}
    throw new Error(message);
  }
  return res;
}

function askForKey(error) {
  $("key-banner").hidden = false;
  $("key-error").textContent = error;
  $("key-input").focus();
}

// Server-sent events read from a fetch body (EventSource cannot send the key).
async function readEvents(res, onData) {
  const reader = res.body.getReader();
  const decoder = new TextDecoder();
  let buf = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buf += decoder.decode(value, { stream: true });
    let cut;
    while ((cut = buf.indexOf("\n\n")) >= 0) {
      const event = buf.slice(0, cut);
      buf = buf.slice(cut + 2);
      for (const line of event.split("\n")) {
        if (!line.startsWith("data: ")) continue;
        const data = line.slice(6);
        if (data === "[DONE]") return;
        try { onData(JSON.parse(data)); } catch (_) { /* a comment or keep-alive */ }
      }
    }
  }
}

// ---------- markdown, safely ----------

function inline(text, parent) {
  // `code`, **bold**, *italic*; everything else is text.
  const re = /(`[^`\n]+`|\*\*[^*\n]+\*\*|\*[^*\n]+\*)/g;
  let last = 0, m;
  while ((m = re.exec(text))) {
    if (m.index > last) parent.append(document.createTextNode(text.slice(last, m.index)));
    const tok = m[0];
    const el = document.createElement(tok.startsWith("`") ? "code" : tok.startsWith("**") ? "strong" : "em");
    el.textContent = tok.startsWith("**") ? tok.slice(2, -2) : tok.slice(1, -1);
    parent.append(el);
    last = m.index + tok.length;
  }
  if (last < text.length) parent.append(document.createTextNode(text.slice(last)));
}

function copyButton(getText, label) {
  const b = document.createElement("button");
  b.type = "button";
  b.className = "copy";
  b.textContent = "Copy";
  b.setAttribute("aria-label", label);
  b.addEventListener("click", () => {
    navigator.clipboard && navigator.clipboard.writeText(getText()).then(() => { b.textContent = "Copied"; setTimeout(() => (b.textContent = "Copy"), 1200); });
  });
  return b;
}

function renderMarkdown(text, into) {
  into.replaceChildren();
  const parts = text.split(/^```/m);
  parts.forEach((part, i) => {
    if (i % 2 === 1) {
      const nl = part.indexOf("\n");
      const code = nl >= 0 ? part.slice(nl + 1) : "";
      const pre = document.createElement("pre");
      const c = document.createElement("code");
      c.textContent = code.replace(/\n$/, "");
      pre.append(c, copyButton(() => c.textContent, "Copy code"));
      into.append(pre);
      return;
    }
    for (const block of part.split(/\n{2,}/)) {
      if (!block.trim()) continue;
      const lines = block.split("\n");
      const bullet = /^\s*([-*]|\d+\.)\s+/;
      if (lines.every((l) => bullet.test(l))) {
        const list = document.createElement(/^\s*\d/.test(lines[0]) ? "ol" : "ul");
        for (const l of lines) { const li = document.createElement("li"); inline(l.replace(bullet, ""), li); list.append(li); }
        into.append(list);
      } else {
        const p = document.createElement("p");
        inline(block, p);
        into.append(p);
      }
    }
  });
}

// ---------- conversations (kept in this browser) ----------

let chats = [];
let current = null;
let running = null; // { controller, li }

function loadChats() {
  try { chats = JSON.parse(localStorage.getItem(store.chats) || "[]"); } catch (_) { chats = []; }
  current = localStorage.getItem(store.current);
  if (!chats.some((c) => c.id === current)) newChat();
}
function saveChats() {
  localStorage.setItem(store.chats, JSON.stringify(chats));
  localStorage.setItem(store.current, current);
}
function chat() { return chats.find((c) => c.id === current); }
function newChat() {
  const c = { id: String(Date.now()) + Math.random().toString(16).slice(2, 6), title: "New chat", messages: [] };
  chats.unshift(c);
  current = c.id;
  saveChats();
}

function renderList() {
  const ul = $("chat-list");
  ul.replaceChildren();
  for (const c of chats) {
    const li = document.createElement("li");
    if (c.id === current) li.setAttribute("aria-current", "true");
    const open = document.createElement("button");
    open.className = "open";
    open.type = "button";
    open.textContent = c.title;
    open.addEventListener("click", () => { current = c.id; saveChats(); renderAll(); });
    const del = document.createElement("button");
    del.type = "button";
    del.textContent = "×";
    del.setAttribute("aria-label", "Delete " + c.title);
    del.addEventListener("click", () => {
      chats = chats.filter((x) => x.id !== c.id);
      if (!chats.length) newChat();
      if (current === c.id) current = chats[0].id;
      saveChats();
      renderAll();
    });
    li.append(open, del);
    ul.append(li);
  }
}

function messageItem(m) {
  const li = document.createElement("li");
  li.className = m.role;
  const who = document.createElement("div");
  who.className = "who";
  const name = document.createElement("span");
  name.textContent = m.role === "user" ? "You" : "Model";
  const stats = document.createElement("span");
  stats.className = "stats";
  stats.textContent = m.stats || "";
  const body = document.createElement("div");
  body.className = "body";
  who.append(name, stats, copyButton(() => m.content, "Copy message"));
  li.append(who, body);
  renderMarkdown(m.content, body);
  return li;
}

function renderMessages() {
  const ol = $("messages");
  ol.replaceChildren(...chat().messages.map(messageItem));
  ol.scrollTop = ol.scrollHeight;
}
function renderAll() { renderList(); renderMessages(); }

async function send(text) {
  const c = chat();
  c.messages.push({ role: "user", content: text });
  if (c.title === "New chat") c.title = text.slice(0, 40);
  const reply = { role: "assistant", content: "", stats: "" };
  c.messages.push(reply);
  saveChats();
  renderAll();
  const li = $("messages").lastElementChild;
  const body = li.querySelector(".body");
  const stats = li.querySelector(".stats");
  const history = [];
  const system = $("system").value.trim();
  if (system) history.push({ role: "system", content: system });
  for (const m of c.messages.slice(0, -1)) history.push({ role: m.role, content: m.content });
  const request = {
    model: $("model").value || undefined,
    messages: history,
    stream: true,
    stream_options: { include_usage: true },
    temperature: Number($("temperature").value),
    max_tokens: Number($("max-tokens").value),
  };
  const schema = $("schema").value.trim();
  if (schema) {
    let parsed;
    try { parsed = JSON.parse(schema); } catch (e) { parsed = null; }
    if (!parsed) {
      reply.content = "⚠ The JSON schema in the settings is not valid JSON.";
      renderMarkdown(reply.content, body);
      li.dataset.done = "error";
      saveChats();
      return;
    }
    request.response_format = { type: "json_schema", json_schema: { name: "reply", schema: parsed, strict: true } };
  } else if ($("json-mode").checked) {
    request.response_format = { type: "json_object" };
  }
  const controller = new AbortController();
  running = { controller, li };
  setRunning(true);
  const t0 = performance.now();
  let first = null, tokens = 0, finish = "";
  try {
    const res = await api("/v1/chat/completions", { method: "POST", body: JSON.stringify(request), signal: controller.signal });
    await readEvents(res, (chunk) => {
      if (chunk.usage) tokens = chunk.usage.completion_tokens;
      if (chunk.error) throw new Error(chunk.error.message);
      const choice = chunk.choices && chunk.choices[0];
      if (!choice) return;
      const piece = (choice.delta && choice.delta.content) || "";
      if (piece) {
        if (first === null) first = performance.now();
        reply.content += piece;
        renderMarkdown(reply.content, body);
        $("messages").scrollTop = $("messages").scrollHeight;
      }
      if (choice.finish_reason) finish = choice.finish_reason;
    });
  } catch (e) {
    if (controller.signal.aborted) finish = "stopped";
    else { finish = "error"; reply.content += (reply.content ? "\n\n" : "") + "⚠ " + e.message; renderMarkdown(reply.content, body); }
  }
  const end = performance.now();
  const parts = [];
  if (first !== null) parts.push("TTFT " + Math.round(first - t0) + " ms");
  if (tokens && first !== null && end > first) parts.push((tokens / ((end - first) / 1000)).toFixed(1) + " tok/s");
  if (finish) parts.push(finish);
  reply.stats = parts.join(" · ");
  stats.textContent = reply.stats;
  li.dataset.done = finish || "done";
  running = null;
  setRunning(false);
  saveChats();
  renderList();
}

function setRunning(on) {
  $("send").hidden = on;
  $("stop").hidden = !on;
  $("input").disabled = on;
  if (!on) $("input").focus();
}

// ---------- dashboard ----------

const series = { tps: [], running: [], waiting: [], kv: [] };
let statsController = null;
let updates = 0;

function card(id, label) {
  let el = $("stat-" + id);
  if (!el) {
    const div = document.createElement("div");
    div.className = "card";
    const l = document.createElement("div");
    l.className = "label";
    l.textContent = label;
    el = document.createElement("div");
    el.className = "value";
    el.id = "stat-" + id;
    div.append(l, el);
    $("cards").append(div);
  }
  return el;
}

const ms = (s) => (s * 1000 < 10 ? (s * 1000).toFixed(1) : Math.round(s * 1000)) + " ms";

function showStats(s) {
  updates += 1;
  document.body.dataset.statsUpdates = String(updates);
  const n = s.now;
  card("running", "Running").textContent = n.running;
  card("waiting", "Waiting").textContent = n.waiting;
  card("kv", "KV blocks used").textContent = n.kv_blocks_used + " / " + n.kv_blocks_total;
  card("hit", "Prefix cache hits").textContent = (100 * n.prefix_cache_hit_rate).toFixed(1) + " %";
  card("tps", "Tokens/s (5 s)").textContent = n.tokens_per_second.toFixed(1);
  card("generated", "Tokens generated").textContent = n.generation_tokens;
  card("ttft", "TTFT p50 / p90 / p99").textContent = n.ttft_seconds.map(ms).join(" / ");
  card("itl", "Inter-token p50 / p90 / p99").textContent = n.itl_seconds.map(ms).join(" / ");
  card("finished", "Requests done").textContent = n.requests_finished;
  card("rejected", "Refused (429…)").textContent = n.requests_rejected;
  card("preempted", "Preemptions").textContent = n.preemptions;
  const c = s.capacity;
  $("capacity").textContent = c
    ? c.more_users + " more users of " + c.context + "-token context fit now (" + c.free_tokens + " KV tokens free)"
    : "The default model is not loaded now (it loads on the next request).";
  for (const [k, v] of [["tps", n.tokens_per_second], ["running", n.running], ["waiting", n.waiting], ["kv", n.kv_blocks_used]]) {
    series[k].push(v);
    if (series[k].length > 120) series[k].shift();
  }
  draw("chart-tps", [series.tps], ["#b4471f"]);
  draw("chart-load", [series.running, series.waiting], ["#2e7d32", "#c0392b"]);
  draw("chart-kv", [series.kv], ["#1f6fb4"], n.kv_blocks_total);
  const tbody = $("models-table").tBodies[0];
  tbody.replaceChildren(...s.models.map((m) => {
    const tr = document.createElement("tr");
    for (const v of [m.name, m.architecture, m.state, (m.weights_bytes / 1e6).toFixed(1) + " MB", m.context, m.parallel]) {
      const td = document.createElement("td");
      td.textContent = v;
      tr.append(td);
    }
    return tr;
  }));
}

function draw(id, lines, colors, fixedMax) {
  const canvas = $(id);
  const ctx = canvas.getContext("2d");
  const w = canvas.width, h = canvas.height;
  ctx.clearRect(0, 0, w, h);
  const max = fixedMax || Math.max(1, ...lines.flat());
  lines.forEach((pts, k) => {
    ctx.strokeStyle = colors[k];
    ctx.lineWidth = 2;
    ctx.beginPath();
    pts.forEach((v, i) => {
      const x = (i / 119) * w, y = h - 4 - (v / max) * (h - 8);
      i ? ctx.lineTo(x, y) : ctx.moveTo(x, y);
    });
    ctx.stroke();
  });
  canvas.dataset.points = String(lines[0].length);
}

async function watchStats() {
  if (statsController) return;
  statsController = new AbortController();
  try {
    const res = await api("/ui/stats/stream", { signal: statsController.signal });
    $("server-status").textContent = "live";
    await readEvents(res, showStats);
  } catch (e) {
    if (!statsController.signal.aborted) $("server-status").textContent = "dashboard: " + e.message;
  }
  statsController = null;
}

function stopStats() { if (statsController) statsController.abort(); statsController = null; }

// ---------- wiring ----------

function selectTab(name) {
  for (const [tab, view] of [["tab-chat", "view-chat"], ["tab-dash", "view-dash"]]) {
    const on = tab === "tab-" + name;
    $(tab).setAttribute("aria-selected", String(on));
    $(tab).tabIndex = on ? 0 : -1;
    $(view).hidden = !on;
  }
  if (name === "dash") watchStats(); else stopStats();
}

async function loadModels() {
  try {
    const res = await api("/v1/models");
    const list = (await res.json()).data || [];
    $("model").replaceChildren(...list.filter((m) => !(m.meta && m.meta.dimensions)).map((m) => {
      const o = document.createElement("option");
      o.value = o.textContent = m.id;
      return o;
    }));
    $("server-status").textContent = "connected";
  } catch (e) {
    $("server-status").textContent = e.message;
  }
}

document.addEventListener("DOMContentLoaded", () => {
  loadChats();
  renderAll();
  $("tab-chat").addEventListener("click", () => selectTab("chat"));
  $("tab-dash").addEventListener("click", () => selectTab("dash"));
  // Arrow keys move between the tabs (the ARIA tabs pattern).
  for (const [id, other] of [["tab-chat", "dash"], ["tab-dash", "chat"]]) {
    $(id).addEventListener("keydown", (e) => {
      if (e.key === "ArrowRight" || e.key === "ArrowLeft") { selectTab(other); $("tab-" + other).focus(); }
    });
  }
  $("new-chat").addEventListener("click", () => { newChat(); renderAll(); $("input").focus(); });
  $("composer").addEventListener("submit", (e) => {
    e.preventDefault();
    const text = $("input").value.trim();
    if (!text || running) return;
    $("input").value = "";
    send(text);
  });
  $("input").addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey) { e.preventDefault(); $("composer").requestSubmit(); }
  });
  $("stop").addEventListener("click", () => running && running.controller.abort());
  $("key-form").addEventListener("submit", (e) => {
    e.preventDefault();
    sessionStorage.setItem(store.key, $("key-input").value);
    $("key-banner").hidden = true;
    $("key-error").textContent = "";
    loadModels();
    if (!$("view-dash").hidden) watchStats();
  });
  loadModels();
});
