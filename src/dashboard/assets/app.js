// The kcluster dashboard page. The server sends a snapshot, then deltas; the page keeps the live
// state plus a log of what changed in the last minutes, so a paused view can be scrubbed back.
"use strict";

const KEEP_MS = 10 * 60 * 1000; // how far back the timeline reaches
const KINDS = ["nodes", "pods", "deployments", "replicasets", "services", "endpointslices",
  "horizontalpodautoscalers", "events", "nodemetrics", "podmetrics"];
const WATCHED = KINDS.filter((k) => !k.endsWith("metrics"));

const emptyState = () => {
  const s = { objects: {}, status: {} };
  for (const k of KINDS) { s.objects[k] = new Map(); s.status[k] = { state: "loading", message: "" }; }
  return s;
};
let live = emptyState();
// The state at the start of `log`, and every change since, with the time it arrived.
let base = emptyState();
let log = [];
let paused = false;
let viewAt = null; // replay time while paused
let namespace = "";
let dirty = true;
// Test and benchmark hook: when each pod key was first drawn.
window.kc = { seen: {}, renders: 0, lastRenderMs: 0, snapshots: 0 };

const $ = (id) => document.getElementById(id);
const esc = (s) => String(s ?? "").replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));

function applyDelta(state, d) {
  if (d.t === "upsert") state.objects[d.kind].set(d.key, d.obj);
  else if (d.t === "delete") state.objects[d.kind].delete(d.key);
  else if (d.t === "status") state.status[d.kind] = d.status;
}

function cloneState(s) {
  const c = emptyState();
  for (const k of KINDS) { c.objects[k] = new Map(s.objects[k]); c.status[k] = s.status[k]; }
  return c;
}

// A snapshot after a reconnect becomes the deltas between what the page had and what is true
// now, so the timeline stays continuous.
function snapshotDeltas(snap) {
  const out = [];
  for (const k of KINDS) {
    const kind = snap.kinds[k];
    if (!kind) continue;
    out.push({ t: "status", kind: k, status: kind.status });
    const fresh = kind.objects;
    for (const key of live.objects[k].keys()) if (!(key in fresh)) out.push({ t: "delete", kind: k, key });
    for (const [key, obj] of Object.entries(fresh)) {
      const old = live.objects[k].get(key);
      if (!old || JSON.stringify(old) !== JSON.stringify(obj)) out.push({ t: "upsert", kind: k, key, obj });
    }
  }
  return out;
}

function record(deltas) {
  const now = Date.now();
  for (const d of deltas) applyDelta(live, d);
  log.push({ time: now, deltas });
  // Fold what fell out of the window into the base state.
  while (log.length && log[0].time < now - KEEP_MS) {
    for (const d of log.shift().deltas) applyDelta(base, d);
  }
  if (!paused) dirty = true;
  updateTimeline();
}

function stateAt(time) {
  const s = cloneState(base);
  for (const entry of log) {
    if (entry.time > time) break;
    for (const d of entry.deltas) applyDelta(s, d);
  }
  return s;
}

// --- connection ---------------------------------------------------------------------------
let source = null;
function connect() {
  source = new EventSource("/events");
  source.onmessage = (e) => {
    const msg = JSON.parse(e.data);
    if (msg.t === "snapshot") {
      window.kc.snapshots++;
      $("cluster").textContent = msg.cluster;
      document.title = `kcluster ${msg.cluster}`;
      record(snapshotDeltas(msg));
      setConn("live", "live");
    } else if (msg.t === "deltas") {
      record(msg.items);
    }
  };
  source.onerror = () => {
    setConn("reconnecting", "dashboard connection lost — reconnecting…");
    // The browser retries by itself unless the stream was refused outright.
    if (source.readyState === EventSource.CLOSED) { source.close(); setTimeout(connect, 2000); }
  };
}
function setConn(state, text) { const c = $("conn"); c.dataset.state = state; c.textContent = text; }

// --- rendering ----------------------------------------------------------------------------
const cpu = (m) => (m >= 1000 ? `${(m / 1000).toFixed(m % 1000 ? 1 : 0)}` : `${m}m`);
const mem = (b) => (b >= 1 << 30 ? `${(b / (1 << 30)).toFixed(1)}Gi` : `${Math.round(b / (1 << 20))}Mi`);
const pct = (a, b) => (b > 0 ? Math.min(100, (100 * a) / b) : 0);
const inNs = (obj) => !namespace || obj.namespace === namespace;

function bar(label, requested, used, total, fmt) {
  const u = used == null ? "" : `<div class="use" style="width:${pct(used, total)}%"></div>`;
  const usedText = used == null ? "" : `, using ${fmt(used)}`;
  return `<div class="meter">${label}: requested ${fmt(requested)} of ${fmt(total)}${usedText}</div>` +
    `<div class="bar"><div class="req" style="width:${pct(requested, total)}%"></div>${u}</div>`;
}

function ownerChain(s, pod) {
  const o = pod.owner;
  if (!o) return "";
  if (o.kind === "ReplicaSet") {
    const rs = s.objects.replicasets.get(`${pod.namespace}/${o.name}`);
    if (rs && rs.owner) return `${rs.owner.kind}/${rs.owner.name} → ReplicaSet/${o.name}`;
  }
  return `${o.kind}/${o.name}`;
}

function podHtml(s, key, p, withReason) {
  const cls = ["pod", esc(p.phase)];
  if (!p.ready && p.phase === "Running") cls.push("notready");
  if (p.deleting) cls.push("deleting");
  const badges = [];
  if (p.restarts > 0) badges.push(`<span class="badge" title="restarts">↻${p.restarts}</span>`);
  if (p.oomKilled) badges.push(`<span class="badge" title="a container was OOM-killed">OOMKilled</span>`);
  if (p.probeFailing || recentUnhealthy(s, key)) badges.push(`<span class="badge" title="a probe is failing">probe</span>`);
  if (p.waiting) badges.push(`<span class="badge">${esc(p.waiting)}</span>`);
  const usage = s.objects.podmetrics.get(key);
  const title = [key, ownerChain(s, p), p.ip, usage ? `cpu ${cpu(usage.cpu)}, memory ${mem(usage.memory)}` : ""]
    .filter(Boolean).join("\n");
  const name = namespace ? p.name : key;
  let reason = "";
  if (withReason && p.unschedulable) reason = `<span class="reason">${esc(p.unschedulable.message || p.unschedulable.reason)}</span>`;
  return `<div class="${cls.join(" ")}" data-key="${esc(key)}" data-owner="${esc(p.owner ? `${p.owner.kind}/${p.owner.name}` : "")}" title="${esc(title)}">${esc(name)}${badges.join("")}${reason}</div>`;
}

function recentUnhealthy(s, podKey) {
  const now = viewAt ?? Date.now();
  for (const e of s.objects.events.values()) {
    if (e.reason === "Unhealthy" && e.object.kind === "Pod" && `${e.object.namespace}/${e.object.name}` === podKey &&
      now - Date.parse(e.time) < 60000) return true;
  }
  return false;
}

function laneHtml(s, node, pods) {
  const tags = [];
  tags.push(node.ready === "True" ? `<span class="tag good">Ready</span>` : `<span class="tag bad">NotReady</span>`);
  if (node.unschedulable) tags.push(`<span class="tag warn">cordoned</span>`);
  for (const r of node.roles) tags.push(`<span class="tag">${esc(r)}</span>`);
  for (const t of node.taints) tags.push(`<span class="tag warn" title="taint">${esc(t)}</span>`);
  for (const [k, v] of Object.entries(node.labels || {})) {
    if (!k.includes("kubernetes.io")) tags.push(`<span class="tag" title="label">${esc(k)}=${esc(v)}</span>`);
  }
  let reqCpu = 0, reqMem = 0;
  for (const [, p] of pods) if (p.phase !== "Succeeded" && p.phase !== "Failed") { reqCpu += p.cpu; reqMem += p.memory; }
  const usage = s.objects.nodemetrics.get(node.name);
  const cls = ["lane"];
  if (node.ready !== "True") cls.push("notready");
  if (node.unschedulable) cls.push("cordoned");
  return `<div class="${cls.join(" ")}" data-node="${esc(node.name)}"><h3>${esc(node.name)} ${tags.join(" ")}</h3>` +
    bar("CPU", reqCpu, usage && usage.cpu, node.cpu, cpu) + bar("Memory", reqMem, usage && usage.memory, node.memory, mem) +
    `<div class="pods">${pods.map(([k, p]) => podHtml(s, k, p, false)).join("")}</div></div>`;
}

function workloadsHtml(s) {
  const parts = [];
  const deps = [...s.objects.deployments].filter(([, d]) => inNs(d));
  if (deps.length) parts.push("<h2>Deployments</h2>");
  for (const [key, d] of deps) {
    const sets = [...s.objects.replicasets].filter(([, r]) => r.owner && r.owner.kind === "Deployment" &&
      r.owner.name === d.name && r.namespace === d.namespace && (r.replicas > 0 || r.ready > 0));
    const rows = sets.map(([, r]) => `<div class="sub">ReplicaSet ${esc(r.name)}${r.revision ? ` (rev ${esc(r.revision)})` : ""}: ${r.ready}/${r.replicas}</div>`).join("");
    const hpa = [...s.objects.horizontalpodautoscalers.values()].find((h) => h.namespace === d.namespace && h.target && h.target.kind === "Deployment" && h.target.name === d.name);
    const hpaRow = hpa ? `<div class="sub hpa">HPA ${esc(hpa.name)}: current ${hpa.current}, desired ${hpa.desired} (${hpa.min}–${hpa.max}${hpa.cpuTarget != null ? `, CPU ${hpa.cpuCurrent ?? "?"}%/${hpa.cpuTarget}%` : ""})</div>` : "";
    parts.push(`<div class="card" data-edges="deployment" data-key="${esc(key)}"><h4>${esc(namespace ? d.name : key)} <span class="tag">${d.ready}/${d.replicas} ready</span></h4>${rows}${hpaRow}</div>`);
  }
  const svcs = [...s.objects.services].filter(([, v]) => inNs(v));
  if (svcs.length) parts.push("<h2>Services</h2>");
  for (const [key, v] of svcs) {
    const slices = [...s.objects.endpointslices.values()].filter((e) => e.namespace === v.namespace && e.service === v.name);
    const eps = slices.flatMap((e) => e.endpoints);
    const ready = eps.filter((e) => e.ready).length;
    parts.push(`<div class="card" data-edges="service" data-key="${esc(key)}"><h4>${esc(namespace ? v.name : key)} <span class="tag">${esc(v.type)}</span></h4>` +
      `<div class="sub">${esc(v.clusterIP || "")} ${esc(v.ports.join(", "))} → ${slices.length} EndpointSlice(s), ${ready}/${eps.length} ready endpoints</div></div>`);
  }
  const orphanHpas = [...s.objects.horizontalpodautoscalers].filter(([, h]) => inNs(h) && !(h.target && s.objects.deployments.has(`${h.namespace}/${h.target.name}`)));
  for (const [key, h] of orphanHpas) {
    parts.push(`<div class="card hpa"><h4>HPA ${esc(key)}</h4><div class="sub">current ${h.current}, desired ${h.desired}</div></div>`);
  }
  return parts.join("");
}

// The pods an element of the workloads panel stands for: a Deployment's through its
// ReplicaSets, a Service's through its EndpointSlices.
function edgePods(s, card) {
  const key = card.dataset.key;
  if (card.dataset.edges === "deployment") {
    const d = s.objects.deployments.get(key);
    if (!d) return [];
    const sets = new Set([...s.objects.replicasets.values()].filter((r) => r.owner && r.owner.name === d.name && r.namespace === d.namespace).map((r) => r.name));
    return [...s.objects.pods].filter(([, p]) => p.namespace === d.namespace && p.owner && sets.has(p.owner.name)).map(([k]) => k);
  }
  const v = s.objects.services.get(key);
  if (!v) return [];
  return [...s.objects.endpointslices.values()].filter((e) => e.namespace === v.namespace && e.service === v.name).flatMap((e) => e.endpoints.map((x) => x.pod).filter(Boolean));
}

let hovered = null;
function drawEdges(s) {
  const svg = $("edges");
  svg.setAttribute("width", document.documentElement.scrollWidth);
  svg.setAttribute("height", document.documentElement.scrollHeight);
  document.querySelectorAll(".pod.lit").forEach((e) => e.classList.remove("lit"));
  // The panel is redrawn under the pointer: find the card again by what it stands for.
  const card = hovered && document.querySelector(`.card[data-edges="${hovered.edges}"][data-key="${CSS.escape(hovered.key)}"]`);
  if (!card) { svg.innerHTML = ""; return; }
  card.classList.add("lit");
  const from = card.getBoundingClientRect();
  const lines = [];
  for (const key of edgePods(s, card)) {
    const el = document.querySelector(`.pod[data-key="${CSS.escape(key)}"]`);
    if (!el) continue;
    el.classList.add("lit");
    const to = el.getBoundingClientRect();
    lines.push(`<line x1="${from.left + scrollX}" y1="${from.top + from.height / 2 + scrollY}" x2="${to.right + scrollX}" y2="${to.top + to.height / 2 + scrollY}"/>`);
  }
  svg.innerHTML = lines.join("");
}

function notesHtml(s) {
  const notes = [];
  const down = WATCHED.every((k) => s.status[k].state === "unreachable");
  if (down) notes.push(`<div class="down" id="down">The cluster is down or unreachable: ${esc(s.status.nodes.message)} — retrying…</div>`);
  for (const k of KINDS) {
    const st = s.status[k];
    if (st.limited && st.state !== "forbidden") notes.push(`<div class="limited" data-kind="${k}">Only ${k} of your namespace are shown: ${esc(st.limited)}</div>`);
    if (st.state === "forbidden") notes.push(`<div class="forbidden" data-kind="${k}">You may not list ${k}: ${esc(st.message)}. The rest of the view still works.</div>`);
    else if (st.state === "error" && !k.endsWith("metrics")) notes.push(`<div class="error" data-kind="${k}">Cannot read ${k}: ${esc(st.message)}</div>`);
    else if (st.state === "unreachable" && !down) notes.push(`<div class="error" data-kind="${k}">Lost the watch of ${k}: ${esc(st.message)} — retrying…</div>`);
  }
  return notes.join("");
}

function tickerHtml(s) {
  const events = [...s.objects.events.values()].filter(inNs).sort((a, b) => (b.time || "").localeCompare(a.time || "")).slice(0, 200);
  return events.map((e) => `<li class="event ${esc(e.type)}"><time>${esc((e.time || "").slice(11, 19))}</time><b>${esc(e.reason)}</b>` +
    `${esc(e.object.kind)}/${esc(e.object.name)}${e.count > 1 ? ` ×${e.count}` : ""}: ${esc(e.message)}</li>`).join("");
}

function setHtml(el, html) { if (el._html !== html) { el.innerHTML = html; el._html = html; } }

function render() {
  const started = performance.now();
  const s = paused && viewAt != null ? stateAt(viewAt) : live;
  // Namespaces seen anywhere, for the filter.
  const select = $("namespace");
  const seen = new Set();
  for (const k of ["pods", "deployments", "services"]) for (const o of s.objects[k].values()) seen.add(o.namespace);
  if (namespace) seen.add(namespace);
  const opts = `<option value="">All namespaces</option>` + [...seen].sort().map((n) => `<option value="${esc(n)}">${esc(n)}</option>`).join("");
  setHtml(select, opts);
  select.value = namespace;

  const byNode = new Map();
  const pending = [];
  const pods = [...s.objects.pods].filter(([, p]) => inNs(p)).sort(([a], [b]) => a.localeCompare(b));
  for (const entry of pods) {
    const node = entry[1].node;
    if (!node) pending.push(entry);
    else { if (!byNode.has(node)) byNode.set(node, []); byNode.get(node).push(entry); }
  }
  const lanes = [...s.objects.nodes.values()].sort((a, b) => a.name.localeCompare(b.name))
    .map((n) => laneHtml(s, n, byNode.get(n.name) || []));
  lanes.push(`<div class="lane pending" data-node=""><h3>Pending <span class="tag">${pending.length}</span></h3>` +
    `<div class="pods">${pending.map(([k, p]) => podHtml(s, k, p, true)).join("")}</div></div>`);
  setHtml($("lanes"), lanes.join(""));
  setHtml($("workloads"), workloadsHtml(s));
  setHtml($("notes"), notesHtml(s));
  setHtml($("ticker"), tickerHtml(s));
  drawEdges(s);
  const now = Date.now();
  for (const [k] of pods) if (!(k in window.kc.seen)) window.kc.seen[k] = now;
  window.kc.renders++;
  // Style and layout are due before the next paint anyway: doing them now lets the time below
  // say what the whole update costs the page.
  void document.body.offsetHeight;
  window.kc.lastRenderMs = performance.now() - started;
}

function frame() {
  if (dirty) { dirty = false; render(); }
  requestAnimationFrame(frame);
}

// --- controls -----------------------------------------------------------------------------
function updateTimeline() {
  const t = $("timeline");
  const first = log.length ? log[0].time : Date.now();
  t.min = first; t.max = Date.now();
  if (!paused) t.value = t.max;
}

function fromHash() {
  const params = new URLSearchParams(location.hash.slice(1));
  namespace = params.get("ns") || "";
  document.documentElement.classList.toggle("projector", params.get("projector") === "1");
  dirty = true;
}
function toHash() {
  const params = new URLSearchParams();
  if (namespace) params.set("ns", namespace);
  if (document.documentElement.classList.contains("projector")) params.set("projector", "1");
  history.replaceState(null, "", `#${params}`);
}

$("namespace").onchange = (e) => { namespace = e.target.value; toHash(); dirty = true; };
$("projector").onclick = () => { document.documentElement.classList.toggle("projector"); toHash(); dirty = true; };
let scale = 1;
const resize = (f) => { scale = Math.max(0.6, Math.min(3, scale * f)); document.documentElement.style.setProperty("--scale", scale); dirty = true; };
$("smaller").onclick = () => resize(1 / 1.15);
$("larger").onclick = () => resize(1.15);
$("pause").onclick = () => {
  paused = !paused;
  document.body.classList.toggle("paused", paused);
  $("pause").textContent = paused ? "Live" : "Pause";
  $("timeline").disabled = !paused;
  viewAt = paused ? Date.now() : null;
  $("when").textContent = paused ? new Date(viewAt).toLocaleTimeString() : "live";
  updateTimeline();
  dirty = true;
};
$("timeline").oninput = (e) => {
  viewAt = Number(e.target.value);
  $("when").textContent = `${new Date(viewAt).toLocaleTimeString()} (${Math.round((Date.now() - viewAt) / 1000)} s ago)`;
  dirty = true;
};
$("workloads").addEventListener("mouseover", (e) => {
  const c = e.target.closest(".card[data-edges]");
  const next = c ? { edges: c.dataset.edges, key: c.dataset.key } : null;
  if (JSON.stringify(next) !== JSON.stringify(hovered)) { hovered = next; dirty = true; }
});
$("workloads").addEventListener("mouseleave", () => { hovered = null; dirty = true; });
window.addEventListener("hashchange", fromHash);
window.addEventListener("resize", () => { dirty = true; });

fromHash();
connect();
requestAnimationFrame(frame);
// Hidden or headless pages may get no animation frames: keep drawing at a slower pace.
setInterval(() => { if (dirty) { dirty = false; render(); } }, 250);
