// Chronos dashboard: plain JavaScript, no build step. Data comes from the JSON API; live updates
// from /events/stream (read with fetch so the bearer token can be sent, resumed with Last-Event-ID).
"use strict";

const STAGES = ["convert", "chunk", "embed"];
const docs = new Map(); // document_id -> row (documents projection, updated live from events)
let token = "";
let lastEventId = null;
let refreshTimer = null;
let costTimer = null;

// ---- helpers ---------------------------------------------------------------------------------
function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "text") node.textContent = v;
    else if (k === "class") node.className = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v);
  }
  for (const c of children) node.append(c);
  return node;
}

function svg(tag, attrs = {}) {
  const node = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "text") node.textContent = v;
    else node.setAttribute(k, String(v));
  }
  return node;
}

function headers(extra = {}) {
  return token ? { ...extra, Authorization: `Bearer ${token}` } : extra;
}

async function api(path, options = {}) {
  const response = await fetch(path, { ...options, headers: headers(options.headers || {}) });
  const body = response.headers.get("content-type")?.includes("json") ? await response.json() : await response.text();
  if (!response.ok) {
    const message = body && body.error ? `${body.error.code}: ${body.error.message}` : `HTTP ${response.status}`;
    throw new Error(message);
  }
  return body;
}

const when = (iso) => (iso ? new Date(iso).toLocaleString() : "");
const usd = (n) => `$${Number(n || 0).toFixed(n && n < 0.01 ? 6 : 4)}`;
const seconds = (a, b) => (a && b ? Math.max(0, (new Date(b) - new Date(a)) / 1000) : null);

// ---- token ------------------------------------------------------------------------------------
function initToken() {
  const match = location.hash.match(/token=([^&]+)/);
  if (match) {
    localStorage.setItem("chronos-token", decodeURIComponent(match[1]));
    history.replaceState(null, "", location.pathname + location.search);
  }
  token = localStorage.getItem("chronos-token") || "";
  const input = document.getElementById("token");
  input.value = token;
  document.getElementById("token-form").addEventListener("submit", (e) => {
    e.preventDefault();
    token = input.value.trim();
    localStorage.setItem("chronos-token", token);
    loadAll();
  });
}

// ---- documents ----------------------------------------------------------------------------------
function merge(row) {
  const known = docs.get(row.document_id);
  if (!known || (row.last_position ?? 0) >= (known.last_position ?? 0)) docs.set(row.document_id, { ...known, ...row });
}

async function loadDocuments() {
  const [recent, failed] = await Promise.all([
    api("/documents?limit=50"),
    api("/documents?status=failed&limit=50"),
  ]);
  for (const row of [...recent.documents, ...failed.documents]) merge(row);
  render();
}

function stageStates(d) {
  // done / failed / active / waiting for each stage, from the row's timestamps and status.
  const order = { uploaded: 0, converting: 0, converted: 1, chunking: 1, chunked: 2, embedding: 2, searchable: 3 };
  const reached = d.status === "failed" ? STAGES.indexOf(d.failed_stage || "convert") : order[d.status] ?? 0;
  const starts = [d.requested_at && d.status === "converting" ? d.requested_at : d.uploaded_at, d.converted_at, d.chunked_at];
  const ends = [d.converted_at, d.chunked_at, d.embedded_at];
  return STAGES.map((stage, i) => {
    let state = "waiting";
    if (d.status === "deleted") state = i < (d.embedded_at ? 3 : d.chunked_at ? 2 : d.converted_at ? 1 : 0) ? "done" : "waiting";
    else if (i < reached) state = "done";
    else if (i === reached && d.status === "failed") state = "failed";
    else if (i === reached) state = "active";
    const took = state === "done" ? seconds(starts[i], ends[i]) : null;
    return { stage, state, took };
  });
}

function timeline(d) {
  const box = el("div", { class: "timeline" });
  const states = stageStates(d);
  const total = states.reduce((s, x) => s + (x.took || 0), 0);
  for (const s of states) {
    const seg = el("div", { class: `seg ${s.state}`, "data-stage": s.stage, "data-state": s.state });
    seg.title = `${s.stage}: ${s.state}${s.took != null ? ` in ${s.took.toFixed(2)} s` : ""}`;
    if (s.took != null && total > 0) seg.style.flexGrow = String(0.3 + (3 * s.took) / total);
    box.append(seg);
  }
  return box;
}

function render() {
  const rows = [...docs.values()].sort((a, b) => String(b.uploaded_at).localeCompare(String(a.uploaded_at)));
  const tbody = document.querySelector("#documents tbody");
  tbody.replaceChildren(
    ...rows.slice(0, 50).map((d) =>
      el(
        "tr",
        { "data-document-id": d.document_id },
        el("td", { class: "name", title: d.filename }, d.filename || "(upload)", el("small", { text: d.document_id })),
        el("td", {}, el("span", { class: "status", "data-status": d.status, text: d.status })),
        el("td", {}, timeline(d)),
        el("td", { text: when(d.uploaded_at) }),
        el("td", { text: usd(d.total_cost_usd) }),
      ),
    ),
  );
  document.getElementById("no-documents").hidden = rows.length > 0;
  renderFailures(rows.filter((d) => d.status === "failed"));
}

function renderFailures(failed) {
  const tbody = document.querySelector("#failures tbody");
  tbody.replaceChildren(
    ...failed.map((d) => {
      const button = el("button", { class: "retry", type: "button", text: "Retry" });
      button.addEventListener("click", () => retry(d, button));
      return el(
        "tr",
        { "data-document-id": d.document_id },
        el("td", { class: "name", title: d.filename }, d.filename || "", el("small", { text: d.document_id })),
        el("td", { text: d.failed_stage || "" }),
        el("td", { class: "reason", text: `${d.error_class ? d.error_class + ": " : ""}${d.last_error || ""}` }),
        el("td", { text: when(d.failed_at) }),
        el("td", {}, button),
      );
    }),
  );
  document.getElementById("no-failures").hidden = failed.length > 0;
  document.getElementById("failures").hidden = failed.length === 0;
}

async function retry(d, button) {
  button.disabled = true;
  try {
    const result = await api(`/documents/${d.document_id}/reprocess`, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ stage: d.failed_stage || undefined, reason: "retry from the dashboard" }),
    });
    button.textContent = `requested ${result.stage}`;
    document.getElementById("retry-status").textContent = `Retry requested: ${d.filename} (${result.stage})`;
  } catch (err) {
    button.textContent = "Retry";
    button.disabled = false;
    document.getElementById("retry-status").textContent = `Retry of ${d.filename} failed: ${err.message}`;
  }
}

// ---- live events ------------------------------------------------------------------------------
const STATUS_AFTER = {
  DocumentUploaded: "uploaded",
  ConversionRequested: "converting",
  DocumentConverted: "converted",
  ChunkingRequested: "chunking",
  DocumentChunked: "chunked",
  EmbeddingRequested: "embedding",
  ChunksEmbedded: "searchable",
  DocumentDeleted: "deleted",
};
const STAMP = {
  DocumentUploaded: "uploaded_at",
  ConversionRequested: "requested_at",
  ChunkingRequested: "requested_at",
  EmbeddingRequested: "requested_at",
  DocumentConverted: "converted_at",
  DocumentChunked: "chunked_at",
  ChunksEmbedded: "embedded_at",
  DocumentDeleted: "deleted_at",
};
const FAILED = { ConversionFailed: "convert", ChunkingFailed: "chunk", EmbeddingFailed: "embed" };

function apply(e) {
  if (!e.document_id) return;
  let d = docs.get(e.document_id);
  if (!d) {
    if (e.type !== "DocumentUploaded") { scheduleRefresh(); return; }
    d = { document_id: e.document_id, total_cost_usd: 0 };
    docs.set(e.document_id, d);
  }
  const data = e.data || {};
  if (e.type === "DocumentUploaded") Object.assign(d, { filename: data.filename, media_type: data.media_type });
  if (e.type === "CostIncurred") {
    d.total_cost_usd = Number(d.total_cost_usd || 0) + Number(data.amount_usd || 0);
    scheduleCosts();
  } else if (d.status !== "deleted" || e.type === "DocumentUploaded") {
    if (STATUS_AFTER[e.type]) d.status = STATUS_AFTER[e.type];
    if (STAMP[e.type]) d[STAMP[e.type]] = e.recorded_at;
    if (FAILED[e.type]) {
      d.last_error = data.message;
      d.error_class = data.error_class;
      if (data.final) Object.assign(d, { status: "failed", failed_stage: FAILED[e.type], failed_at: e.recorded_at });
    }
  }
  d.last_position = Math.max(d.last_position || 0, e.position);
  render();
  scheduleRefresh();
}

function scheduleRefresh() {
  clearTimeout(refreshTimer);
  refreshTimer = setTimeout(() => loadDocuments().catch(() => {}), 1500);
}

function scheduleCosts() {
  clearTimeout(costTimer);
  costTimer = setTimeout(() => loadCosts().catch(() => {}), 2000);
}

function setLive(on, text) {
  const live = document.getElementById("live");
  live.className = `live ${on ? "on" : "off"}`;
  live.textContent = text;
}

async function follow() {
  // Server-Sent Events over fetch (EventSource cannot send a bearer token); resumes with Last-Event-ID.
  for (;;) {
    try {
      const h = { Accept: "text/event-stream" };
      if (lastEventId) h["Last-Event-ID"] = lastEventId;
      const response = await fetch("/events/stream?data=summary", { headers: headers(h) });
      if (!response.ok) throw new Error(`HTTP ${response.status}`);
      setLive(true, "live");
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += value;
        let cut;
        while ((cut = buffer.indexOf("\n\n")) >= 0) {
          const block = buffer.slice(0, cut);
          buffer = buffer.slice(cut + 2);
          let id = null;
          const data = [];
          for (const line of block.split("\n")) {
            if (line.startsWith("id: ")) id = line.slice(4);
            else if (line.startsWith("data: ")) data.push(line.slice(6));
          }
          if (id) lastEventId = id;
          if (data.length) apply(JSON.parse(data.join("\n")));
        }
      }
    } catch (err) {
      setLive(false, `reconnecting (${err.message})`);
    }
    setLive(false, "reconnecting…");
    await new Promise((r) => setTimeout(r, 2000));
  }
}

// ---- costs ------------------------------------------------------------------------------------
async function loadCosts() {
  const now = new Date();
  const first = new Date(Date.UTC(now.getUTCFullYear(), now.getUTCMonth(), 1));
  const last = new Date(Date.UTC(now.getUTCFullYear(), now.getUTCMonth() + 1, 0));
  const iso = (d) => d.toISOString().slice(0, 10);
  const costs = await api(`/costs?from=${iso(first)}&to=${iso(last)}`);
  drawCosts(costs, first, last.getUTCDate());
}

function drawCosts(costs, first, days) {
  const W = 640, H = 220, L = 58, R = 12, T = 14, B = 26;
  const byDay = new Map(costs.days.map((d) => [d.day, d.usd]));
  const daily = [];
  let cumulative = 0;
  const cumul = [];
  for (let i = 0; i < days; i++) {
    const day = new Date(first.getTime() + i * 86400000).toISOString().slice(0, 10);
    const v = byDay.get(day) || 0;
    daily.push(v);
    cumulative += v;
    cumul.push(cumulative);
  }
  const budget = costs.month.budget_usd;
  const top = Math.max(budget, cumulative, 1e-9) * 1.08;
  const maxDaily = Math.max(...daily, 1e-9);
  const x = (i) => L + ((W - L - R) * (i + 0.5)) / days;
  const y = (v) => T + (H - T - B) * (1 - v / top);
  const chart = svg("svg", { viewBox: `0 0 ${W} ${H}`, role: "img" });
  chart.append(svg("title", { text: `Cost per day; month to date ${usd(cumulative)} of ${usd(budget)} budget` }));
  const bw = Math.max(2, ((W - L - R) / days) * 0.7);
  daily.forEach((v, i) => {
    const h = ((H - T - B) * 0.6 * v) / maxDaily;
    const bar = svg("rect", { class: "day", x: x(i) - bw / 2, y: H - B - h, width: bw, height: h, fill: "#90caf9" });
    bar.append(svg("title", { text: `${i + 1}: ${usd(v)}` }));
    chart.append(bar);
  });
  chart.append(svg("polyline", {
    class: "cumulative", fill: "none", stroke: "#1565c0", "stroke-width": 2,
    points: cumul.map((v, i) => `${x(i)},${y(v)}`).join(" "),
  }));
  chart.append(svg("line", {
    class: "budget", x1: L, x2: W - R, y1: y(budget), y2: y(budget), stroke: "#c62828", "stroke-dasharray": "6 4",
  }));
  chart.append(svg("text", { class: "legend", x: W - R, y: y(budget) - 4, "text-anchor": "end", text: `monthly budget ${usd(budget)}` }));
  chart.append(svg("line", { x1: L, x2: W - R, y1: H - B, y2: H - B, stroke: "#999" }));
  chart.append(svg("text", { class: "legend", x: L - 4, y: T + 8, "text-anchor": "end", text: `$${top < 1 ? top.toFixed(4) : top.toFixed(2)}` }));
  chart.append(svg("text", { class: "legend", x: L - 4, y: H - B, "text-anchor": "end", text: "$0" }));
  for (const i of [0, Math.floor(days / 2), days - 1]) {
    chart.append(svg("text", { class: "legend", x: x(i), y: H - 8, "text-anchor": "middle", text: String(i + 1) }));
  }
  document.getElementById("cost-chart").replaceChildren(chart);
  document.getElementById("cost-month").textContent = costs.month.month.slice(0, 7);
  const over = costs.month.over_budget ? " — over budget!" : "";
  document.getElementById("cost-summary").textContent =
    `Month to date ${usd(costs.month.spent_usd)} of ${usd(budget)}${over}. Bars: spend per day; line: cumulative.`;
}

// ---- upload -----------------------------------------------------------------------------------
function initUpload() {
  const form = document.getElementById("upload-form");
  const status = document.getElementById("upload-status");
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    const files = [...document.getElementById("file").files];
    if (!files.length) { status.textContent = "Choose a file first."; return; }
    const lines = [];
    for (const file of files) {
      const body = new FormData();
      body.append("file", file, file.name);
      try {
        const r = await api("/documents", { method: "POST", body });
        merge({ document_id: r.document_id, filename: r.filename, status: docs.get(r.document_id)?.status || "uploaded",
                uploaded_at: docs.get(r.document_id)?.uploaded_at || new Date().toISOString(), last_position: 0 });
        lines.push(`${r.filename}: ${r.created ? "uploaded" : "already stored"} (${r.document_id})`);
      } catch (err) {
        lines.push(`${file.name}: ${err.message}`);
      }
    }
    status.textContent = lines.join(" · ");
    render();
    scheduleRefresh();
  });
}

function loadAll() {
  loadDocuments().catch((err) => setLive(false, err.message));
  loadCosts().catch(() => {});
}

initToken();
initUpload();
follow();
loadAll();
setInterval(loadAll, 30000);
