// maskwatch set-up page: live view, status, zones, test alert. Plain JS, no library, no CDN.
"use strict";

const csrf = document.querySelector('meta[name="csrf-token"]').content;
const $ = (id) => document.getElementById(id);
let status = null;          // the last /api/status answer
let zones = {ignore_regions: [], entrance_region: null};
let frameSize = [640, 480]; // the camera frame's pixels (zones are saved in these)
let still = null;           // the zone editor's picture

async function post(url, body) {
  const r = await fetch(url, {method: "POST", credentials: "same-origin",
    headers: {"Content-Type": "application/json", "X-CSRF-Token": csrf},
    body: body === undefined ? "{}" : JSON.stringify(body)});
  if (r.status === 401) { location.href = "/login"; }
  let data = {};
  try { data = await r.json(); } catch (e) { /* empty body */ }
  return {ok: r.ok, status: r.status, data};
}

function text(id, value) { $(id).textContent = value === null || value === undefined ? "–" : String(value); }

function fmtTime(unixSeconds) { return new Date(unixSeconds * 1000).toLocaleTimeString(); }

// ---------------------------------------------------------------------------- status

function showState(s) {
  if (!s) { return; }
  text("device", s.device_id);
  text("state-time", s.time);
  text("fps", s.fps);
  const lat = s.latency_ms || {};
  text("latency", Object.keys(lat).filter((k) => lat[k] !== null).map((k) => `${k} ${lat[k]}`).join(" · "));
  const cam = s.camera || {};
  text("camera", cam.status ? `${cam.status}${cam.last_error ? " (" + cam.last_error + ")" : ""}` : null);
  const m = s.mqtt;
  text("mqtt", m === null || m === undefined ? null
    : (typeof m === "object" ? `${m.connected ? "connected" : "disconnected"}, ${m.queued} queued`
      + (m.last_error ? ` (${m.last_error})` : "") : m));
  text("people-present", s.people_present);
  const today = $("today");
  today.replaceChildren();
  for (const key of Object.keys(s).filter((k) => k.endsWith("_today")).sort()) {
    const tr = document.createElement("tr");
    const th = document.createElement("th");
    th.textContent = key.replace(/_today$/, "").replace("_", " ") + " today";
    const td = document.createElement("td");
    td.id = "count-" + key;
    td.textContent = s[key];
    tr.append(th, td);
    today.append(tr);
  }
  const model = s.model || {};
  text("model", model.name ? `${model.name} (${model.quantization}, sha256 ${model.sha256.slice(0, 12)}…)` : null);
  $("model").title = model.sha256 || "";
  text("threshold", model.threshold);
}

function showEvents(events) {
  const body = $("events").querySelector("tbody");
  body.replaceChildren();
  for (const e of events) {
    const tr = document.createElement("tr");
    if (e.type === "test") { tr.className = "test"; }
    for (const v of [fmtTime(e.time), e.type === "test" ? "test alert" : `${e.type} #${e.track_id}`,
                     e.label, e.score.toFixed(2)]) {
      const td = document.createElement("td");
      td.textContent = v;
      tr.append(td);
    }
    body.append(tr);
  }
}

async function refresh() {
  try {
    const r = await fetch("/api/status", {credentials: "same-origin"});
    if (r.status === 401) { location.href = "/login"; return; }
    status = await r.json();
    showState(status.state);
    showEvents(status.events);
    if (status.frame_size) { frameSize = status.frame_size; }
    $("blur-note").textContent = status.blur_faces
      ? "Faces are pixelated (web.blur_faces = true)." : "Faces are shown (web.blur_faces = false).";
  } catch (e) { /* the daemon restarts: try again next time */ }
}

// ---------------------------------------------------------------------------- tabs

function showTab(name) {
  const live = name === "live";
  $("tab-live").classList.toggle("active", live);
  $("tab-zones").classList.toggle("active", !live);
  $("live-panel").classList.toggle("hidden", !live);
  $("zones-panel").classList.toggle("hidden", live);
  // The stream is only open while it is shown: the daemon encodes nothing for a hidden view.
  $("live").src = live ? "/stream.mjpg?" + Date.now() : "";
  if (!live) { loadZones(); }
}

// ---------------------------------------------------------------------------- zones

function cloneZones(z) { return JSON.parse(JSON.stringify(z)); }

async function loadZones() {
  await refresh();
  if (status) { zones = cloneZones(status.zones); }
  await loadStill();
}

function loadStill() {
  return new Promise((resolve) => {
    const img = new Image();
    img.onload = () => { still = img; draw(); resolve(); };
    img.onerror = () => { $("zones-message").textContent = "No picture from the camera yet."; resolve(); };
    img.src = "/frame.jpg?" + Date.now();
  });
}

function draw() {
  const c = $("zones-canvas");
  const ctx = c.getContext("2d");
  c.width = frameSize[0];
  c.height = frameSize[1];
  ctx.fillStyle = "#000";
  ctx.fillRect(0, 0, c.width, c.height);
  if (still) { ctx.drawImage(still, 0, 0, c.width, c.height); }
  const rect = (r, colour, label) => {
    ctx.strokeStyle = colour;
    ctx.lineWidth = 3;
    ctx.fillStyle = colour + "33";
    ctx.fillRect(r[0], r[1], r[2] - r[0], r[3] - r[1]);
    ctx.strokeRect(r[0], r[1], r[2] - r[0], r[3] - r[1]);
    ctx.fillStyle = colour;
    ctx.font = "16px sans-serif";
    ctx.fillText(label, r[0] + 4, r[1] + 18);
  };
  zones.ignore_regions.forEach((r, i) => rect(r, "#ff00ff", `ignore ${i + 1}`));
  if (zones.entrance_region) { rect(zones.entrance_region, "#00c8ff", "entrance"); }
  if (drag) { rect(box(drag.x0, drag.y0, drag.x1, drag.y1), "#ffffff", ""); }
  const list = $("zones-list");
  list.replaceChildren();
  const item = (t) => { const li = document.createElement("li"); li.textContent = t; list.append(li); };
  zones.ignore_regions.forEach((r, i) => item(`ignore ${i + 1}: [${r.join(", ")}]`));
  if (zones.entrance_region) { item(`entrance: [${zones.entrance_region.join(", ")}]`); }
}

function box(x0, y0, x1, y1) {
  const clamp = (v, hi) => Math.max(0, Math.min(hi, Math.round(v)));
  return [clamp(Math.min(x0, x1), frameSize[0]), clamp(Math.min(y0, y1), frameSize[1]),
          clamp(Math.max(x0, x1), frameSize[0]), clamp(Math.max(y0, y1), frameSize[1])];
}

function framePoint(ev) {
  const c = $("zones-canvas");
  const r = c.getBoundingClientRect();
  return [(ev.clientX - r.left) * frameSize[0] / r.width, (ev.clientY - r.top) * frameSize[1] / r.height];
}

const inside = (r, p) => r[0] <= p[0] && p[0] <= r[2] && r[1] <= p[1] && p[1] <= r[3];
let drag = null;

function onDown(ev) {
  const [x, y] = framePoint(ev);
  drag = {x0: x, y0: y, x1: x, y1: y};
}

function onMove(ev) {
  if (!drag) { return; }
  [drag.x1, drag.y1] = framePoint(ev);
  draw();
}

function onUp(ev) {
  if (!drag) { return; }
  [drag.x1, drag.y1] = framePoint(ev);
  const r = box(drag.x0, drag.y0, drag.x1, drag.y1);
  drag = null;
  if (r[2] - r[0] < 4 || r[3] - r[1] < 4) {  // a click: remove the zone under it
    const p = [r[0], r[1]];
    const i = zones.ignore_regions.findIndex((z) => inside(z, p));
    if (i >= 0) { zones.ignore_regions.splice(i, 1); }
    else if (zones.entrance_region && inside(zones.entrance_region, p)) { zones.entrance_region = null; }
  } else if ($("mode-entrance").checked) {
    zones.entrance_region = r;
  } else {
    zones.ignore_regions.push(r);
  }
  $("zones-message").textContent = "Not saved yet.";
  draw();
}

async function saveZones() {
  const r = await post("/api/zones", zones);
  if (r.ok) {
    zones = cloneZones(r.data.zones);
    $("zones-message").textContent = `Saved into ${r.data.saved}; the daemon uses them from the next frame.`;
  } else {
    $("zones-message").textContent = `Not saved: ${r.data.field ? r.data.field + ": " : ""}${r.data.error || r.status}`;
  }
  draw();
}

// ---------------------------------------------------------------------------- actions

async function testAlert() {
  const r = await post("/api/test-alert");
  $("alert-message").textContent = r.ok
    ? `Test alert sent (event ${r.data.event.event_id.slice(0, 8)}, type "test"); it is never counted.`
    : `Test alert failed: ${r.data.error || r.status}`;
  setTimeout(refresh, 500);
}

async function logout() {
  await post("/logout");
  location.href = "/login";
}

window.addEventListener("DOMContentLoaded", () => {
  $("tab-live").addEventListener("click", () => showTab("live"));
  $("tab-zones").addEventListener("click", () => showTab("zones"));
  $("test-alert").addEventListener("click", testAlert);
  $("logout").addEventListener("click", logout);
  $("zones-save").addEventListener("click", saveZones);
  $("zones-clear").addEventListener("click", () => {
    zones = {ignore_regions: [], entrance_region: null};
    $("zones-message").textContent = "Not saved yet.";
    draw();
  });
  $("zones-reload").addEventListener("click", loadStill);
  const c = $("zones-canvas");
  c.addEventListener("mousedown", onDown);
  c.addEventListener("mousemove", onMove);
  window.addEventListener("mouseup", onUp);
  showTab("live");
  refresh();
  setInterval(refresh, 1000);
});
