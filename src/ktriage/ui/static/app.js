// ktriage triage UI: detections, a detection's chain, process view, search, SQL box. No framework, no CDN.
"use strict";
const app = document.getElementById("app");
let timer = null;

// A value JSON cannot hold comes as {"$type": T, "value": text}: a blob as hex, inf/nan, PostgreSQL types.
function isMarked(v) { return v !== null && typeof v === "object" && "$type" in v; }
function shown(v) { return isMarked(v) ? (v.$type === "blob" ? `x'${v.value}'` : v.value) : v; }
function esc(v) {
  return String(shown(v) ?? "").replace(/[&<>"']/g, c => ({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;"}[c]));
}
function time(ns) { return ns ? new Date(Number(BigInt(ns) / 1000000n)).toISOString().replace("T", " ") : ""; }
function sev(n) { return `<span class="sev sev-${esc(n)}">${esc(n)}</span>`; }
function procLink(pid, host, label) {
  if (pid === null || pid === undefined) return "";
  const q = new URLSearchParams({pid: pid}); if (host) q.set("host", host);
  return `<a class="proc-link" href="#/process?${q}">${esc(label ?? pid)}</a>`;
}
function technique(t) {
  return (t || "").split(",").filter(Boolean).map(id =>
    `<a class="technique" href="https://attack.mitre.org/techniques/${id.replace(".", "/")}/" target="_blank" rel="noopener">${esc(id)}</a>`).join(" ");
}
// The per-start token comes once in the page's URL (?token=…, printed by `ktriage ui`); it is kept in this
// tab's sessionStorage, removed from the address bar, and sent as a header on every API call.
const TOKEN_KEY = "ktriage-token";
(function takeToken() {
  const url = new URL(location.href);
  const token = url.searchParams.get("token");
  if (!token) return;
  sessionStorage.setItem(TOKEN_KEY, token);
  url.searchParams.delete("token");
  history.replaceState(null, "", url.pathname + url.search + url.hash);
})();
async function api(path, params = {}) {
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (!token) throw new Error("no token: open the URL that `ktriage ui` printed (it ends in ?token=…)");
  const res = await fetch(`/api/${path}?${new URLSearchParams(params)}`,
                          {headers: {"X-Ktriage-Token": token}, credentials: "omit", cache: "no-store"});
  const body = await res.json();
  if (!body.ok) throw new Error(`${body.error.code}: ${body.error.message}`);
  return body.result;
}
function cell(v) {
  return isMarked(v) ? `<td class="marked" title="${esc(v.$type)}">${esc(v)}</td>` : `<td>${esc(v)}</td>`;
}
function fail(e) { app.innerHTML = `<p class="error">${esc(e.message)}</p>`; }
function params() { return new URLSearchParams(location.hash.split("?")[1] || ""); }

async function detectionsView() {
  const meta = await api("meta");
  const p = params();
  const opts = (list, sel) => ['<option value="">any</option>', ...list.map(x =>
    `<option ${x === sel ? "selected" : ""}>${esc(x)}</option>`)].join("");
  app.innerHTML = `<h2>Detections <small>newest first, live</small></h2>
    <form class="filters" id="filters">
      <label>min severity<select name="min_severity">${[1,2,3,4,5,6,7,8].map(n =>
        `<option ${String(n) === (p.get("min_severity") || "1") ? "selected" : ""}>${n}</option>`).join("")}</select></label>
      <label>name<select name="name">${opts(meta.detection_names, p.get("name"))}</select></label>
      <label>host<select name="host">${opts(meta.hosts, p.get("host"))}</select></label>
      <label>pid<input name="pid" size="8" value="${esc(p.get("pid") || "")}"></label>
      <button>filter</button>
    </form>
    <table id="detections"><thead><tr><th>time</th><th>sev</th><th>detection</th><th>actor</th><th>target</th><th>reason</th><th>host</th></tr></thead><tbody></tbody></table>`;
  document.getElementById("filters").onsubmit = ev => {
    ev.preventDefault();
    const q = new URLSearchParams([...new FormData(ev.target)].filter(([, v]) => v));
    location.hash = `#/?${q}`;
  };
  const load = async () => {
    const q = Object.fromEntries([...params()].filter(([, v]) => v));
    const rows = await api("detections", q);
    document.querySelector("#detections tbody").innerHTML = rows.map(d => `
      <tr class="clickable" data-id="${esc(d.id)}">
        <td>${time(d.ts)}</td><td>${sev(d.severity)}</td><td class="name">${esc(d.name)}</td>
        <td>${procLink(d.actor_pid, d.host, `${d.actor_pid} ${d.image || ""}`)}</td>
        <td>${procLink(d.target_pid, d.host, d.target_pid === null ? "" : `${d.target_pid} ${d.target_image || ""}`)}</td>
        <td>${esc(d.reason)}</td><td>${esc(d.host)}</td></tr>`).join("");
    document.querySelectorAll("#detections tr.clickable").forEach(tr => tr.onclick = ev => {
      if (ev.target.tagName !== "A") location.hash = `#/detection?id=${encodeURIComponent(tr.dataset.id)}`;
    });
    document.getElementById("status").textContent = `${rows.length} detections · updated ${new Date().toLocaleTimeString()}`;
  };
  await load();
  timer = setInterval(() => load().catch(fail), 2000);
}

async function detectionView() {
  const r = await api("detection", {id: params().get("id")});
  const d = r.detection;
  app.innerHTML = `<h2 id="detection-name">${sev(d.severity)} ${esc(d.name)}</h2>
    <p class="reason">${esc(d.reason)}</p>
    <p>actor ${procLink(d.actor_pid, d.host, `${d.actor_pid} ${d.image || ""}`)}
       ${d.target_pid !== null ? `→ target ${procLink(d.target_pid, d.host, `${d.target_pid} ${d.target_image || ""}`)}` : ""}
       · ${time(d.ts)} · host ${esc(d.host)} · seed ${esc(d.seed_name || "—")} · ATT&amp;CK ${technique(d.technique)}</p>
    <h3>The chain behind it <small>(${r.chain.length} events)</small></h3>
    <div id="chain">${r.chain.map(c => `<div class="chain-event" data-id="${esc(c.id)}">
      <div><b>${esc(c.label || "")}</b> <code>${esc(c.id)}</code> ${procLink(c.event.pid, c.event.host, "process")}</div>
      <pre>${esc(c.preview)}</pre></div>`).join("")}</div>`;
}

async function processView() {
  const p = params();
  const q = {pid: p.get("pid")}; if (p.get("host")) q.host = p.get("host");
  const v = await api("process", q);
  const me = v.process || {};
  const anc = [...v.ancestors].reverse();
  app.innerHTML = `<h2 id="process-title">process ${esc(v.pid)} <small>${esc(me.image || "")}</small></h2>
    <p><code>${esc(me.cmdline || "")}</code> · host ${esc(v.host || "")}</p>
    <div class="grid"><div><h3>Process tree</h3><ul class="tree" id="process-tree">
      ${anc.map(a => `<li class="ancestor">${procLink(a.pid, v.host, `${a.pid} ${a.image || ""}`)}</li>`).join("")}
      <li class="self">${esc(v.pid)} ${esc(me.image || "")}<ul>
        ${v.children.map(c => `<li class="child">${procLink(c.pid, v.host, `${c.pid} ${c.image || ""}`)} <code>${esc(c.cmdline || "")}</code></li>`).join("")}
      </ul></li></ul>
      ${v.injected_into.map(e => `<div class="edge-into">injected into ${procLink(e.pid, v.host, `${e.pid} ${e.image || ""}`)}: ${sev(e.severity)} ${esc(e.detection)}</div>`).join("")}
      ${v.injected_by.map(e => `<div class="edge-by">injected by ${procLink(e.pid, v.host, `${e.pid} ${e.image || ""}`)}: ${sev(e.severity)} ${esc(e.detection)}</div>`).join("")}
      <h3>Network peers</h3><table id="peers">${v.network_peers.map(n => `<tr><td>${esc(n.op)}</td><td>${esc(n.proto)}</td><td>${esc(n.raddr)}:${esc(n.rport)}</td><td>${n.count}</td></tr>`).join("") || "<tr><td>none</td></tr>"}</table>
      <h3>Files written</h3><table id="files">${v.files_written.map(f => `<tr><td>${esc(f.op)}</td><td>${esc(f.path)}${f.path2 ? " → " + esc(f.path2) : ""}</td><td>${f.count}</td></tr>`).join("") || "<tr><td>none</td></tr>"}</table>
      <h3>Images</h3><ul id="images">${v.images.map(i => `<li>${esc(i)}</li>`).join("")}</ul></div>
    <div><h3>Timeline <small>newest first</small></h3><table id="timeline">${v.timeline.map(t =>
      `<tr class="clickable" data-id="${esc(t.id)}"><td>${time(t.ts)}</td><td>${esc(t.family)}</td><td>${esc(t.summary)}</td></tr>`).join("")}</table>
      <pre id="event-detail" hidden></pre></div></div>`;
  document.querySelectorAll("#timeline tr.clickable").forEach(tr => tr.onclick = async () => {
    const e = await api("event", {id: tr.dataset.id});
    const pre = document.getElementById("event-detail"); pre.hidden = false; pre.textContent = e.preview;
  });
}

async function searchView() {
  app.innerHTML = `<h2>Search <small>paths, command lines, addresses, registry keys</small></h2>
    <form id="search" class="filters"><input name="q" size="50" value="${esc(params().get("q") || "")}"><button>search</button></form>
    <table id="results"></table>`;
  document.getElementById("search").onsubmit = ev => { ev.preventDefault(); location.hash = `#/search?q=${encodeURIComponent(ev.target.q.value)}`; };
  const text = params().get("q");
  if (!text) return;
  const rows = await api("search", {q: text});
  document.getElementById("results").innerHTML = rows.map(r => `<tr><td>${time(r.ts)}</td><td>${esc(r.family)}</td>
    <td>${procLink(r.pid, r.host)}</td><td>${esc(r.summary)}</td></tr>`).join("") || "<tr><td>no match</td></tr>";
}

async function sqlView() {
  app.innerHTML = `<h2>SQL <small>read-only, 3 s limit, 1000 rows, 4 MiB</small></h2>
    <form id="sql"><textarea name="q" rows="5">${esc(params().get("q") || "select name, count(*) from detection group by name order by 2 desc")}</textarea><button>run</button></form>
    <p id="sql-note"></p><table id="sql-result"></table>`;
  document.getElementById("sql").onsubmit = async ev => {
    ev.preventDefault();
    try {
      const r = await api("sql", {q: ev.target.q.value});
      const cut = {rows: `first ${r.row_limit} rows shown`, bytes: `first ${r.rows.length} rows shown (the ${r.byte_limit} byte limit)`};
      document.getElementById("sql-note").textContent = r.truncated ? cut[r.truncated] : `${r.rows.length} rows`;
      document.getElementById("sql-result").innerHTML = `<tr>${r.columns.map(c => `<th>${esc(c)}</th>`).join("")}</tr>` +
        r.rows.map(row => `<tr>${row.map(cell).join("")}</tr>`).join("");
    } catch (e) { document.getElementById("sql-note").innerHTML = `<span class="error">${esc(e.message)}</span>`; }
  };
}

const routes = {"": detectionsView, "detection": detectionView, "process": processView, "search": searchView, "sql": sqlView};
async function route() {
  clearInterval(timer);
  const name = (location.hash.replace(/^#\/?/, "").split("?")[0]);
  try { await (routes[name] || detectionsView)(); } catch (e) { fail(e); }
}
window.addEventListener("hashchange", route);
route();
