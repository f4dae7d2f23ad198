// userlb web view: polls /api/state every second and draws the LVS overview's Figure 10-1
// (clients, the active and backup router with the VIPs, real servers on the private
// segment) as SVG, with the sampled packets animated along the path they took.
// No framework, no build step; server data only ever reaches the page as textContent.
"use strict";

const POLL_MS = 1000;
const SVG_NS = "http://www.w3.org/2000/svg";
const LEG_MS = 900;            // one leg of a packet's trip (client ↔ router ↔ server)
const LAUNCH_EVERY_MS = 1000;  // packets of the connection being shown, one after another
const G = {mid: 230, pubX: 250, privX: 610, routerX: 320, routerW: 230, serverX: 660, serverW: 530,
           clientX: 24, clientW: 176};

let state = null;
let lastPlayed = -1;           // highest sample seq already shown
let geometry = {clients: {}, servers: {}, router: null, maxY: 0};
const queue = [];
const flying = [];

function el(tag, attrs, text) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
  if (text !== undefined) node.textContent = text;
  return node;
}

function html(tag, attrs, text) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
  if (text !== undefined) node.textContent = text;
  return node;
}

const hostOf = (endpoint) => String(endpoint).split(":")[0];

function rate(bytes) {
  if (bytes >= 1e6) return (bytes / 1e6).toFixed(1) + " MB/s";
  if (bytes >= 1e3) return (bytes / 1e3).toFixed(1) + " kB/s";
  return bytes + " B/s";
}

// ---- model: real servers grouped by address, clients from the table and the samples ----
function serversOf(st) {
  const byAddr = new Map();
  for (const svc of st.services) {
    for (const d of svc.dests) {
      const addr = hostOf(d.name);
      if (!byAddr.has(addr)) byAddr.set(addr, {address: addr, rows: []});
      byAddr.get(addr).rows.push({svc, d});
    }
  }
  const rank = {down: 3, pending: 2, up: 1, unchecked: 0};   // unchecked only if nothing is
  for (const s of byAddr.values()) {
    s.health = s.rows.map(r => r.d.health).sort((a, b) => rank[b] - rank[a])[0] || "unchecked";
    s.quiescedIn = s.rows.filter(r => r.d.weight === 0).map(r => svcShort(r.svc));
    s.active = s.rows.reduce((n, r) => n + r.d.active, 0);
    s.inactive = s.rows.reduce((n, r) => n + r.d.inactive, 0);
  }
  return [...byAddr.values()];
}

function clientsOf(st) {
  const list = st.clients.map(c => ({address: c.address, connections: c.connections}));
  for (const s of st.samples.slice(-6)) {
    const addr = hostOf(s.client);
    if (!list.some(c => c.address === addr) && list.length < 5) list.push({address: addr, connections: 0});
  }
  return list;
}

// ---- drawing --------------------------------------------------------------------------
function drawNet(st, servers) {
  const layer = document.getElementById("layer-net");
  layer.replaceChildren();
  const bottom = geometry.maxY + 20;
  document.getElementById("figure").setAttribute("viewBox", `0 0 1200 ${bottom + 56}`);
  layer.append(el("line", {x1: G.pubX, y1: 40, x2: G.pubX, y2: bottom, class: "segment"}));
  layer.append(el("text", {x: G.pubX, y: 28, class: "seg-label", "text-anchor": "middle"},
                  "public network (clients)"));
  layer.append(el("line", {x1: G.privX, y1: 40, x2: G.privX, y2: bottom, class: "segment private"}));
  layer.append(el("text", {x: G.privX, y: 28, class: "seg-label", "text-anchor": "middle"},
                  "private segment (real servers)"));
  layer.append(el("text", {x: G.serverX, y: bottom + 44, class: "caption"},
    `${st.connections} connections in a table of ${st.table_size}` +
    (Object.keys(st.drops).length ? " · drops: " + Object.entries(st.drops).map(([k, v]) => `${k} ${v}`).join(", ") : " · no drops")));
}

function drawClients(layer, clients) {
  const n = Math.max(clients.length, 1), gap = 64, top = G.mid - (n * gap) / 2;
  geometry.clients = {};
  if (!clients.length) {
    layer.append(el("text", {x: G.clientX, y: G.mid + 4, class: "muted"}, "no clients yet"));
  }
  clients.forEach((c, i) => {
    const y = top + i * gap;
    const g = el("g", {class: "client", "data-client": c.address});
    g.append(el("rect", {x: G.clientX, y, width: G.clientW, height: 46, rx: 8}));
    g.append(el("text", {x: G.clientX + 12, y: y + 19, class: "title"}, "client " + c.address));
    g.append(el("text", {x: G.clientX + 12, y: y + 36, class: "small"},
                `${c.connections} connection${c.connections === 1 ? "" : "s"}`));
    g.append(el("line", {x1: G.clientX + G.clientW, y1: y + 23, x2: G.pubX, y2: y + 23, class: "link"}));
    layer.append(g);
    geometry.clients[c.address] = {x: G.clientX + G.clientW, y: y + 23};
    geometry.maxY = Math.max(geometry.maxY, y + 46);
  });
}

function drawRouters(layer, st) {
  const [me, peer] = st.routers;
  const active = !peer || me.role === "MASTER" || me.role === "ACTIVE";
  const boxes = [];
  if (active || !peer) boxes.push({r: me, y: 70, main: true});
  else boxes.push({r: peer, y: 70, main: true, inferred: true});
  if (peer) boxes.push(active ? {r: peer, y: 300, main: false, inferred: true}
                              : {r: me, y: 300, main: false});
  for (const b of boxes) {
    const h = b.main ? 200 : 110, role = String(b.r.role || "?");
    const linkY = b.y + (b.main ? h - 25 : 75);   // packets cross below the router's text
    const cls = role.startsWith("MASTER") || role === "ACTIVE" ? "active" :
                role.startsWith("BACKUP") ? "backup" : "unknown";
    const g = el("g", {class: `router ${cls}`, "data-role": role, "data-self": b.r.self});
    g.append(el("rect", {x: G.routerX, y: b.y, width: G.routerW, height: h, rx: 10}));
    g.append(el("text", {x: G.routerX + 14, y: b.y + 24, class: "title"},
                (b.r.self ? "this router" : "peer router") + (b.r.address ? " " + b.r.address : "")));
    g.append(el("text", {x: G.routerX + 14, y: b.y + 44, class: "role"},
                role + (b.r.ha ? ` · ${b.r.ha}` : " · no HA configured")));
    if (b.main) {
      st.vips.forEach((v, i) => {
        g.append(el("rect", {x: G.routerX + 14, y: b.y + 58 + i * 26, width: G.routerW - 28, height: 22, rx: 5, class: "vip"}));
        g.append(el("text", {x: G.routerX + 22, y: b.y + 74 + i * 26, class: "vip-text"}, "VIP " + v));
      });
      const svcs = st.services.map(s => `${s.name} ${s.scheduler}`).slice(0, 4);
      svcs.forEach((t, i) => g.append(el("text", {x: G.routerX + 14, y: b.y + 74 + st.vips.length * 26 + i * 16, class: "small"}, t)));
    }
    g.append(el("line", {x1: G.pubX, y1: linkY, x2: G.routerX, y2: linkY, class: "link"}));
    g.append(el("line", {x1: G.routerX + G.routerW, y1: linkY, x2: G.privX, y2: linkY, class: "link"}));
    layer.append(g);
    geometry.maxY = Math.max(geometry.maxY, b.y + h);
    if (b.main) geometry.router = {left: {x: G.routerX, y: linkY}, right: {x: G.routerX + G.routerW, y: linkY}};
  }
}

function drawServers(layer, servers) {
  const heights = servers.map(s => 40 + 17 * s.rows.length);
  const total = heights.reduce((a, b) => a + b, 0) + 16 * Math.max(servers.length - 1, 0);
  let y = Math.max(44, G.mid - total / 2);
  geometry.servers = {};
  servers.forEach((s, i) => {
    const h = heights[i];
    const g = el("g", {class: `server health-${s.health}${s.quiescedIn.length ? " quiesced" : ""}`,
                       "data-server": s.address, "data-health": s.health,
                       "data-quiesced": s.quiescedIn.join(","),
                       "data-active": s.active, "data-inactive": s.inactive});
    g.append(el("rect", {x: G.serverX, y, width: G.serverW, height: h, rx: 8}));
    g.append(el("circle", {cx: G.serverX + 16, cy: y + 17, r: 7, class: "lamp"}));
    g.append(el("text", {x: G.serverX + 30, y: y + 22, class: "title"},
                `real server ${s.address} · ${s.health}` +
                (s.quiescedIn.length ? ` · quiesced (weight 0) in ${s.quiescedIn.join(", ")}` : "")));
    s.rows.forEach((r, k) => {
      const d = r.d;
      g.append(el("text", {x: G.serverX + 14, y: y + 40 + k * 17, class: d.weight ? "row" : "row zero"},
        `${svcShort(r.svc)} → :${hostPort(d.name)}  weight ${d.weight}  act ${d.active}  ` +
        `inact ${d.inactive}  ${d.cps} conn/s  ${d.inpps + d.outpps} pkt/s  ${rate(d.inbps + d.outbps)}`));
    });
    g.append(el("line", {x1: G.privX, y1: y + 17, x2: G.serverX, y2: y + 17, class: "link"}));
    layer.append(g);
    geometry.servers[s.address] = {x: G.serverX, y: y + 17};
    geometry.maxY = Math.max(geometry.maxY, y + h);
    y += h + 16;
  });
}

const hostPort = (endpoint) => String(endpoint).split(":")[1] || "";
const svcShort = (svc) => svc.fwmark ? `FWM ${svc.fwmark}` : `${svc.protocol} :${svc.port}`;

// ---- packets: the path a sample took, and its animation --------------------------------
function route(sample) {
  const c = geometry.clients[hostOf(sample.client)], s = geometry.servers[hostOf(sample.server)];
  const r = geometry.router;
  if (!c || !s || !r) return null;
  const toRouter = [c, {x: G.pubX, y: c.y}, {x: G.pubX, y: r.left.y}, r.left];
  const toServer = [r.right, {x: G.privX, y: r.right.y}, {x: G.privX, y: s.y}, s];
  if (sample.direction === "in") return [toRouter, toServer];
  return [toServer.slice().reverse(), toRouter.slice().reverse()];
}

function drawPath(sample) {
  const layer = document.getElementById("layer-paths");
  layer.replaceChildren();
  const legs = route(sample);
  if (!legs) return;
  const pts = [...legs[0], ...legs[1]].map(p => `${p.x},${p.y}`).join(" ");
  const g = el("g", {class: `sample-path ${sample.nat.toLowerCase()}`, "data-label": sample.label});
  g.append(el("polyline", {points: pts, "marker-end": "url(#arrow)"}));
  g.append(el("text", {x: G.pubX + 12, y: geometry.maxY + 40, class: "path-label"}, "last sampled: " + sample.label));
  layer.append(g);
}

function along(points, t) {
  const segs = [];
  let total = 0;
  for (let i = 1; i < points.length; i++) {
    const len = Math.hypot(points[i].x - points[i - 1].x, points[i].y - points[i - 1].y);
    segs.push(len);
    total += len;
  }
  let d = t * total;
  for (let i = 0; i < segs.length; i++) {
    if (d <= segs[i] || i === segs.length - 1) {
      const f = segs[i] ? Math.min(d / segs[i], 1) : 1;
      return {x: points[i].x + (points[i + 1].x - points[i].x) * f,
              y: points[i].y + (points[i + 1].y - points[i].y) * f};
    }
    d -= segs[i];
  }
  return points[points.length - 1];
}

function launch(sample) {
  const legs = route(sample);
  if (!legs) return;
  const cls = sample.nat.toLowerCase();
  const g = el("g", {class: `packet ${cls}`, "data-seq": sample.seq});
  const dot = el("circle", {r: 7});
  const label = el("text", {class: "packet-label", x: 0, y: -12, "text-anchor": "middle"});
  g.append(dot, label);
  document.getElementById("layer-packets").append(g);
  for (const f of flying) f.g.classList.add("quiet");   // only the newest packet is labelled
  flying.push({g, label, legs, sample, start: performance.now()});
  drawPath(sample);
}

function frame(now) {
  for (let i = flying.length - 1; i >= 0; i--) {
    const f = flying[i], t = (now - f.start) / LEG_MS;
    if (t >= 2.3) { f.g.remove(); flying.splice(i, 1); continue; }
    const leg = t < 1 ? 0 : 1;
    let p;
    if (leg === 1 && t < 1.15) {        // crossing the router: the rewrite happens here
      const a = f.legs[0][f.legs[0].length - 1], b = f.legs[1][0], k = (t - 1) / 0.15;
      p = {x: a.x + (b.x - a.x) * k, y: a.y + (b.y - a.y) * k};
    } else {
      p = along(f.legs[leg], Math.min(leg ? t - 1.15 : t, 1));
    }
    f.g.setAttribute("transform", `translate(${p.x},${p.y})`);
    const side = leg === 0 ? f.sample.before : f.sample.after;
    f.label.textContent = `${f.sample.flags} ${side.src} → ${side.dst}`;
  }
  requestAnimationFrame(frame);
}

// One connection at a time: its packets leave one after another; then the newest
// connection sampled meanwhile (older ones are skipped, the table lists them all).
function nextConnection() {
  if (!state) return;
  const fresh = state.samples.filter(s => s.seq > lastPlayed);
  if (!fresh.length) return;
  const conn = fresh[fresh.length - 1].conn;
  const first = fresh.findIndex(s => s.conn === conn);
  for (const s of fresh.slice(first)) if (s.conn === conn) queue.push(s);
  lastPlayed = fresh[fresh.length - 1].seq;
}

setInterval(() => {
  if (!queue.length) nextConnection();
  if (queue.length) launch(queue.shift());
}, LAUNCH_EVERY_MS);

// ---- side panels ------------------------------------------------------------------------
function drawServices(st) {
  const box = document.getElementById("services");
  box.replaceChildren();
  for (const svc of st.services) {
    const t = html("table", {class: "service", "data-service": svc.name});
    const cap = html("caption", {}, `${svc.name} · ${svc.scheduler} · ${svc.cps} conn/s · ${svc.inpps + svc.outpps} pkt/s`);
    t.append(cap);
    const head = html("tr");
    for (const h of ["real server", "health", "weight", "active", "inactive", "conn/s", "pkt/s"]) head.append(html("th", {}, h));
    t.append(head);
    for (const d of svc.dests) {
      const tr = html("tr", {class: `dest health-${d.health}`, "data-server": d.name, "data-health": d.health});
      for (const v of [d.name, d.health, d.weight, d.active, d.inactive, d.cps, d.inpps + d.outpps]) tr.append(html("td", {}, String(v)));
      t.append(tr);
    }
    box.append(t);
  }
}

function drawSamples(st) {
  const body = document.querySelector("#samples tbody");
  body.replaceChildren();
  for (const s of st.samples.slice(-12).reverse()) {
    const tr = html("tr", {class: `sample ${s.nat.toLowerCase()}`, "data-seq": s.seq});
    const hop = s.direction === "in" ? `client ${hostOf(s.client)} → router → ${s.server}`
                                     : `${s.server} → router → client ${hostOf(s.client)}`;
    tr.append(html("td", {}, String(s.conn)), html("td", {class: "label"}, s.label), html("td", {}, hop));
    body.append(tr);
  }
  if (!st.samples.length) {
    const tr = html("tr"); tr.append(html("td", {colspan: 3, class: "muted"}, "waiting for a new connection…"));
    body.append(tr);
  }
}

function drawDrops(st) {
  const box = document.getElementById("drops");
  const drops = Object.entries(st.drops);
  box.textContent = `${st.connections} / ${st.table_size} connections · forwarded unmodified: ${st.passed_unmodified} · ` +
    (drops.length ? "drops: " + drops.map(([k, v]) => `${k} ${v}`).join(", ") : "no drops");
}

function fillForm(st) {
  const svcSel = document.getElementById("w-service"), srvSel = document.getElementById("w-server");
  const keep = svcSel.value, keepSrv = srvSel.value;
  const names = st.services.map(s => s.name);
  if ([...svcSel.options].map(o => o.value).join() !== names.join()) {
    svcSel.replaceChildren(...names.map(n => html("option", {value: n}, n)));
    if (names.includes(keep)) svcSel.value = keep;
  }
  const svc = st.services.find(s => s.name === svcSel.value) || st.services[0];
  const dests = svc ? svc.dests.map(d => d.name) : [];
  if ([...srvSel.options].map(o => o.value).join() !== dests.join()) {
    srvSel.replaceChildren(...dests.map(n => html("option", {value: n}, n)));
    if (dests.includes(keepSrv)) srvSel.value = keepSrv;
  }
  document.getElementById("w-set").title = st.writable ? "" : "read-only: the balancer has no web_token";
}

async function sendWeight(weight) {
  const out = document.getElementById("weight-result");
  const token = document.getElementById("w-token").value.trim();
  const body = {service: document.getElementById("w-service").value,
                server: document.getElementById("w-server").value, weight};
  const headers = {"content-type": "application/json"};
  if (token) headers.authorization = "Bearer " + token;
  try {
    const r = await fetch("/api/weight", {method: "POST", headers, body: JSON.stringify(body)});
    const data = await r.json();
    out.dataset.status = r.status;
    out.className = "result " + (r.ok ? "ok" : "refused");
    out.textContent = r.ok ? `weight of ${data.server} in ${data.service}: ${data.was} → ${data.weight}`
                           : `HTTP ${r.status}: ${data.error}`;
  } catch (e) {
    out.dataset.status = "error";
    out.textContent = "request failed: " + e;
  }
  poll();
}

// ---- polling ------------------------------------------------------------------------------
function render(st) {
  const servers = serversOf(st), clients = clientsOf(st);
  const nodes = document.getElementById("layer-nodes");
  nodes.replaceChildren();
  geometry.maxY = 0;
  drawClients(nodes, clients);
  drawRouters(nodes, st);
  drawServers(nodes, servers);
  drawNet(st, servers);
  drawServices(st);
  drawSamples(st);
  drawDrops(st);
  fillForm(st);
  if (!flying.length && st.samples.length) drawPath(st.samples[st.samples.length - 1]);
}

async function poll() {
  const status = document.getElementById("status");
  try {
    const r = await fetch("/api/state", {cache: "no-store"});
    if (!r.ok) throw new Error("HTTP " + r.status);
    state = await r.json();
    render(state);
    status.textContent = `live · ${new Date().toLocaleTimeString()} · ${state.writable ? "weights changeable with the token" : "read-only"}`;
    status.className = "status live";
  } catch (e) {
    status.textContent = "no answer from the balancer (" + e.message + "), retrying";
    status.className = "status lost";
  }
}

document.addEventListener("DOMContentLoaded", () => {
  document.getElementById("weight-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    sendWeight(parseInt(document.getElementById("w-weight").value, 10));
  });
  document.getElementById("w-quiesce").addEventListener("click", () => sendWeight(0));
  document.getElementById("w-service").addEventListener("change", () => state && fillForm(state));
  poll();
  setInterval(() => document.hidden || poll(), POLL_MS);   // a hidden tab asks for no samples
  requestAnimationFrame(frame);
});
