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
  if (e.type && e.type.startsWith("Budget")) scheduleCosts(); // an alert crossed or delivered: show it
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
  const chosen = document.getElementById("cost-collection").value;
  const only = chosen ? `&collection=${encodeURIComponent(chosen)}` : "";
  const costs = await api(`/costs?from=${iso(first)}&to=${iso(last)}${only}`);
  drawCosts(costs, first, last.getUTCDate());
  drawCollections(costs);
}

// The collections the token sees, each with its month to date and its own budget; choosing one in the
// selector draws the chart for that collection against its budget (none: no budget line).
function drawCollections(costs) {
  const select = document.getElementById("cost-collection");
  const names = (costs.collections || []).map((c) => c.collection);
  const have = [...select.options].map((o) => o.value).filter((v) => v);
  if (!costs.collection && names.join("\n") !== have.join("\n")) {
    select.replaceChildren(el("option", { value: "", text: "every collection" }),
      ...names.map((n) => el("option", { value: n, text: n })));
  }
  document.getElementById("cost-collections").replaceChildren(...(costs.collections || []).map((c) => el("li", {
    "data-collection": c.collection, "data-usd": c.spent_usd, class: c.over_budget ? "over" : "",
    text: `${c.collection}: ${usd(c.spent_usd)} ${c.budget_usd === null ? "(no budget of its own)" : `of ${usd(c.budget_usd)}`}${c.over_budget ? " — over budget!" : ""}`,
  })));
}

// One honest scale: bars (spend per day, stacked by provider and stage), the cumulative line and the
// budget line all use the same dollars-to-pixels mapping, labelled on the axis. A day of $0.0004
// against a $54 budget is a sliver at the bottom, as it should be; the amounts are in the tooltips,
// the legend and the summary. Modal's share paying for cold starts and idle containers is drawn as
// the hatched top of its segment.
const PALETTE = ["#1e88e5", "#43a047", "#fb8c00", "#8e24aa", "#00897b", "#e53935", "#6d4c41", "#546e7a"];

function niceTop(v) {
  // The smallest round step (1, 1.2, 1.5, 2, ... 8 x 10^n) at or above v: the axis ends on a round number.
  const p = Math.pow(10, Math.floor(Math.log10(v)));
  for (const m of [1, 1.2, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10]) if (m * p >= v * (1 - 1e-12)) return m * p;
  return 10 * p;
}

const axisUsd = (v, top) => `$${top < 0.01 ? v.toPrecision(2) : top < 10 ? v.toFixed(2) : v.toFixed(0)}`;

function drawCosts(costs, first, days) {
  const W = 640, H = 240, L = 58, R = 12, T = 14, B = 26;
  const byDay = new Map(costs.days.map((d) => [d.day, d]));
  const keyOf = (p) => `${p.provider} · ${p.stage}`;
  const totals = new Map(); // key -> month's usd
  let overheadTotal = 0, modalTotal = 0;
  const daily = [];
  let cumulative = 0;
  const cumul = [];
  for (let i = 0; i < days; i++) {
    const day = new Date(first.getTime() + i * 86400000).toISOString().slice(0, 10);
    const d = byDay.get(day);
    const parts = d ? (d.parts || Object.entries(d.by_stage || {}).map(([stage, usd]) => ({ stage, provider: "", usd, overhead_usd: 0 }))) : [];
    for (const p of parts) {
      totals.set(keyOf(p), (totals.get(keyOf(p)) || 0) + p.usd);
      overheadTotal += p.overhead_usd || 0;
      if (p.provider === "modal") modalTotal += p.usd;
    }
    const v = d ? d.usd : 0;
    daily.push({ day, usd: v, parts });
    cumulative += v;
    cumul.push(cumulative);
  }
  const keys = [...totals.keys()].sort();
  const colour = new Map(keys.map((k, i) => [k, PALETTE[i % PALETTE.length]]));
  const budget = costs.month.budget_usd; // null: a collection without a budget of its own
  const maxDaily = Math.max(0, ...daily.map((d) => d.usd));
  const top = niceTop(Math.max(budget || 0, cumulative, maxDaily, 1e-6));
  const plot = H - T - B;
  const x = (i) => L + ((W - L - R) * (i + 0.5)) / days;
  const y = (v) => T + plot * (1 - v / top);
  const chart = svg("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "data-top-usd": top, "data-plot-top": T, "data-plot-bottom": H - B });
  const of = budget === null ? "no budget of its own" : `${usd(budget)} budget`;
  const scope = costs.collection ? ` in collection ${costs.collection}` : "";
  chart.append(svg("title", { text: `Cost per day${scope}, stacked by provider and stage; month to date ${usd(cumulative)} of ${of}` }));
  const defs = svg("defs");
  const hatch = svg("pattern", { id: "overhead-hatch", width: 4, height: 4, patternUnits: "userSpaceOnUse", patternTransform: "rotate(45)" });
  hatch.append(svg("rect", { width: 4, height: 4, fill: "#fff", "fill-opacity": 0.45 }));
  hatch.append(svg("line", { x1: 0, y1: 0, x2: 0, y2: 4, stroke: "#fff", "stroke-width": 2 }));
  defs.append(hatch);
  chart.append(defs);
  // Axis ticks and grid lines at quarters of the (round) top.
  for (let t = 0; t <= 4; t++) {
    const v = (top * t) / 4;
    chart.append(svg("line", { class: "grid", x1: L, x2: W - R, y1: y(v), y2: y(v), stroke: t ? "#eceff3" : "#999" }));
    chart.append(svg("text", { class: "legend axis", x: L - 4, y: y(v) + 4, "text-anchor": "end", "data-usd": v, text: axisUsd(v, top) }));
  }
  const bw = Math.max(2, ((W - L - R) / days) * 0.7);
  daily.forEach((d, i) => {
    let base = 0;
    const parts = [...d.parts].sort((a, b) => keyOf(a).localeCompare(keyOf(b)));
    for (const p of parts) {
      if (p.usd <= 0) continue;
      const y0 = y(base), y1 = y(base + p.usd);
      const seg = svg("rect", {
        class: "day part", x: x(i) - bw / 2, y: y1, width: bw, height: y0 - y1, fill: colour.get(keyOf(p)),
        "data-day": d.day, "data-key": keyOf(p), "data-usd": p.usd,
      });
      seg.append(svg("title", { text: `${d.day} ${keyOf(p)}: ${usd(p.usd)}` }));
      chart.append(seg);
      const over = Math.min(p.overhead_usd || 0, p.usd);
      if (over > 0) {
        const yo = y(base + p.usd - over);
        const o = svg("rect", {
          class: "overhead", x: x(i) - bw / 2, y: y1, width: bw, height: yo - y1, fill: "url(#overhead-hatch)",
          "data-day": d.day, "data-key": keyOf(p), "data-usd": over,
        });
        o.append(svg("title", { text: `${d.day} ${keyOf(p)}: ${usd(over)} of it paid for cold starts and idle containers` }));
        chart.append(o);
      }
      base += p.usd;
    }
  });
  chart.append(svg("polyline", {
    class: "cumulative", fill: "none", stroke: "#1d2330", "stroke-width": 1.5,
    points: cumul.map((v, i) => `${x(i)},${y(v)}`).join(" "),
  }));
  for (const pct of budget === null ? [] : [80, 100]) {
    const v = (budget * pct) / 100;
    chart.append(svg("line", {
      class: pct === 100 ? "budget" : "budget-80", x1: L, x2: W - R, y1: y(v), y2: y(v),
      stroke: pct === 100 ? "#c62828" : "#ef9a9a", "stroke-dasharray": "6 4", "data-usd": v,
    }));
    chart.append(svg("text", { class: "legend", x: W - R, y: y(v) - 4, "text-anchor": "end",
                               text: pct === 100 ? `monthly budget ${usd(budget)}` : `80 % ${usd(v)}` }));
  }
  for (const i of [0, Math.floor(days / 2), days - 1]) {
    chart.append(svg("text", { class: "legend", x: x(i), y: H - 8, "text-anchor": "middle", text: String(i + 1) }));
  }
  document.getElementById("cost-chart").replaceChildren(chart);
  document.getElementById("cost-legend").replaceChildren(
    ...keys.map((k) => {
      const swatch = el("span", { class: "swatch" });
      swatch.style.background = colour.get(k); // CSSOM, not a style attribute: the CSP forbids inline styles
      return el("li", { "data-key": k }, swatch, `${k} ${usd(totals.get(k))}`);
    }),
    ...(modalTotal > 0 ? [el("li", { class: "overhead-share" }, el("span", { class: "swatch hatched" }),
      `Modal cold starts + idle: ${usd(overheadTotal)} (${((100 * overheadTotal) / modalTotal).toFixed(0)} % of Modal)`)] : []),
  );
  document.getElementById("cost-month").textContent = (costs.month.month || first.toISOString()).slice(0, 7) + scope;
  const over = costs.month.over_budget ? " — over budget!" : "";
  const tiny = maxDaily > 0 && (plot * maxDaily) / top < 1 ? ` The largest day, ${usd(maxDaily)}, is under a pixel at this scale.` : "";
  document.getElementById("cost-summary").textContent =
    `Month to date${scope} ${usd(costs.month.spent_usd)} of ${budget === null ? "no budget of its own" : usd(budget)}${over}. Bars: spend per day by provider and stage, on the axis's scale; line: cumulative.${tiny}`;
  drawAlerts(costs.month);
}

function drawAlerts(month) {
  const list = document.getElementById("cost-alerts");
  const alerts = month.alerts || [];
  list.replaceChildren(...alerts.map((a) => {
    const state = a.delivery === "delivered" ? "delivered to the webhook"
      : a.delivery === "failed" ? `not delivered: ${a.last_error}`
      : month.alert_webhook ? "delivery pending" : "not sent (no webhook configured)";
    return el("li", { class: `alert ${a.delivery}`, "data-threshold": a.threshold_pct, "data-delivery": a.delivery,
                      text: `${a.threshold_pct} % of the budget crossed ${when(a.crossed_at)} at ${usd(a.spent_usd)} — ${state}` });
  }));
  list.hidden = alerts.length === 0;
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
document.getElementById("cost-collection").addEventListener("change", () => loadCosts().catch(() => {}));
follow();
loadAll();
setInterval(loadAll, 30000);
