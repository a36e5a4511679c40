// The Migrations page: plain DOM, no build step. Every value is inserted as text (never as HTML).
"use strict";

const BASE = "/bascule";
const app = document.getElementById("app");

function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

const badge = (text) => h("span", { class: `state state-${text}`, "data-state": text }, text ?? "none");

function when(iso) {
  if (!iso) return "";
  return new Date(iso).toLocaleString(undefined, { dateStyle: "medium", timeStyle: "short" });
}

function seconds(s) {
  if (s === null || s === undefined) return "";
  if (s < 90) return `${s.toFixed(1)} s`;
  if (s < 5400) return `${(s / 60).toFixed(1)} min`;
  return `${(s / 3600).toFixed(1)} h`;
}

async function getJson(path) {
  const response = await fetch(BASE + path, { credentials: "same-origin" });
  if (!response.ok) throw new Error(`${path}: HTTP ${response.status}`);
  return response.json();
}

function progressCell(run) {
  if (!run || !run.progress || run.progress.length === 0) return "";
  return run.progress.map((p) => {
    const pct = p.total ? Math.min(100, (100 * p.done) / p.total) : 0;
    return h("div", { class: "small", "data-progress": p.task_id },
      h("div", { class: "bar" }, h("div", { style: `width:${pct.toFixed(1)}%` })),
      `${p.task_id}${p.map_index >= 0 ? `[${p.map_index}]` : ""}: ${p.line || ""}`);
  });
}

function gateCell(row) {
  const g = row.run && row.run.gate;
  if (!g || !g.summary) return h("span", { class: "muted" }, `needs ${row.required} of: ${row.approvers.join(", ")}`);
  return h("div", { "data-gate": row.id },
    h("div", {}, g.summary),
    g.deadline ? h("div", { class: "small muted" }, `deadline ${when(g.deadline)}`) : null);
}

function windowCell(w) {
  return h("div", {},
    h("div", {}, w.open_now ? `open now (until ${w.end} ${w.timezone})` : w.next_opening_local),
    h("div", { class: "small muted" }, `your time: ${when(w.next_opening_utc)} · ${w.days.length} day(s), ${w.start}-${w.end}`));
}

function routingCell(r) {
  return h("div", {}, badge(r.live), r.since ? h("div", { class: "small muted" }, `since ${when(r.since)}`) : null);
}

function reportLink(w, run, report, label) {
  const href = `${BASE}/workloads/${encodeURIComponent(w.id)}/reports/${report}?run=${encodeURIComponent(run.run_id)}`;
  return h("a", { href, target: "_blank", "data-report": report }, label);
}

function evidenceCell(w, run) {
  if (!run) return "";
  const e = run.evidence;
  return h("div", {}, badge(e.chain), e.report ? h("div", { class: "small" }, reportLink(w, run, "evidence", "auditor report")) : null);
}

function listView(data) {
  const rows = data.workloads.map((w) => {
    if (!w.valid) {
      return h("tr", { "data-invalid": w.file },
        h("td", {}, w.file), h("td", { colspan: 8, class: "error" }, `invalid manifest: ${w.error}`));
    }
    const run = w.run;
    return h("tr", { "data-workload": w.id },
      h("td", {}, h("a", { href: `${BASE}/workloads/${encodeURIComponent(w.id)}` }, w.id), h("div", { class: "small muted" }, w.kind)),
      h("td", {}, w.source, h("div", { class: "muted" }, "→ ", w.target)),
      h("td", {}, w.owner),
      h("td", {}, run ? [run.phase || "", " ", badge(run.phase_state || run.state)] : h("span", { class: "muted" }, "never run"),
        progressCell(run)),
      h("td", {}, gateCell(w)),
      h("td", {}, windowCell(w.window)),
      h("td", {}, routingCell(w.routing)),
      h("td", {}, evidenceCell(w, run)),
      h("td", {}, run && run.runbook ? h("a", { href: run.runbook, "data-runbook": "1" }, "runbook") : ""));
  });
  return h("div", {},
    h("h1", {}, "Migrations"),
    h("p", { class: "muted" }, `Signed in as ${data.user}. Times in your zone unless marked.`),
    h("table", {},
      h("thead", {}, h("tr", {}, ["workload", "source → target", "owner", "phase", "gate", "next window", "routing", "evidence", ""].map((t) => h("th", {}, t)))),
      h("tbody", {}, rows)));
}

async function respond(w, option) {
  const reason = document.getElementById("reason").value;
  const run = w.run;
  const path = `/api/v2/dags/${encodeURIComponent(w.dag_id)}/dagRuns/${encodeURIComponent(run.run_id)}/taskInstances/approve_cutover/-1/hitlDetails`;
  // Airflow's own HITL endpoint: it checks the assignment and the permissions, not this page.
  const response = await fetch(path, {
    method: "PATCH", credentials: "same-origin", headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ chosen_options: [option], params_input: { reason } }),
  });
  const out = document.getElementById("respond-result");
  out.textContent = response.ok ? `${option} recorded; the gate is re-evaluating…` : `refused: HTTP ${response.status} ${await response.text()}`;
  if (response.ok) setTimeout(render, 3000);
}

function gateSection(w, user) {
  const g = w.run && w.run.gate;
  if (!g || !g.summary) return h("p", { class: "muted" }, "The gate has not opened for this run.");
  const mayAct = g.open && w.can_respond && (g.waiting_for || []).includes(user);
  return h("div", { class: "gate" },
    h("div", { "data-gate": w.id }, h("strong", {}, g.summary)),
    h("div", { class: "small" }, `evidence digest ${g.evidence_digest || ""}`),
    g.deadline ? h("div", { class: "small" }, `deadline ${when(g.deadline)}`) : null,
    mayAct ? h("div", { style: "margin-top:.5em" },
      h("input", { id: "reason", placeholder: "reason (recorded with your decision)", size: 50 }), " ",
      h("button", { id: "approve", onclick: () => respond(w, "Approve") }, "Approve"),
      h("button", { id: "reject", onclick: () => respond(w, "Reject") }, "Reject"),
      h("span", { id: "respond-result", class: "small" })) : null);
}

function timeline(run) {
  const starts = run.tasks.filter((t) => t.start_date).map((t) => Date.parse(t.start_date));
  const t0 = Math.min(...starts);
  const t1 = Math.max(...run.tasks.map((t) => Date.parse(t.end_date || new Date().toISOString())));
  const span = Math.max(1, t1 - t0);
  return h("table", { class: "timeline" },
    h("thead", {}, h("tr", {}, ["task", "state", "duration", ""].map((t) => h("th", {}, t)))),
    h("tbody", {}, run.tasks.map((t) => {
      const left = t.start_date ? (100 * (Date.parse(t.start_date) - t0)) / span : 0;
      const width = t.start_date ? (100 * ((t.end_date ? Date.parse(t.end_date) : Date.now()) - Date.parse(t.start_date))) / span : 0;
      return h("tr", {},
        h("td", {}, t.task_id + (t.map_index >= 0 ? `[${t.map_index}]` : "")), h("td", {}, badge(t.state)),
        h("td", {}, seconds(t.duration)),
        h("td", { class: "barcell" }, h("div", { class: "tl", style: `margin-left:${left.toFixed(1)}%;width:${width.toFixed(1)}%` })));
    })));
}

function detailView(data) {
  const w = data.workload;
  const run = w.run;
  return h("div", {},
    h("p", {}, h("a", { href: `${BASE}/` }, "← all migrations")),
    h("h1", {}, `${w.id} `, h("span", { class: "muted small" }, w.kind)),
    h("p", {}, w.description),
    h("p", {}, `${w.source} → ${w.target} · owner ${w.owner} · routing `, routingCell(w.routing)),
    run ? h("div", {},
      h("h2", {}, `Run ${run.run_id} `, badge(run.state)),
      run.runbook ? h("p", { class: "error" }, `Failed in ${run.phase}: `, h("a", { href: run.runbook, "data-runbook": "1" }, "open the runbook section")) : null,
      progressCell(run),
      h("h2", {}, "Approval"), gateSection(w, data.user),
      h("h2", {}, "Verdicts"),
      h("table", {}, h("tbody", {},
        h("tr", {}, h("th", {}, "parity"), h("td", {}, badge(run.parity), " ", run.parity !== "not recorded" ? reportLink(w, run, "validation", "report") : null)),
        h("tr", {}, h("th", {}, "shadow run"), h("td", {}, badge(run.shadow))),
        h("tr", {}, h("th", {}, "write-block at cutover"), h("td", {}, run.write_block_seconds === null ? "not cut over" : seconds(run.write_block_seconds))),
        h("tr", {}, h("th", {}, "evidence chain"), h("td", {}, evidenceCell(w, run))))),
      h("h2", {}, "Phases"), timeline(run),
      h("h2", {}, "Recent runs"),
      h("ul", {}, w.runs.map((r) => h("li", {}, h("a", { href: `?run=${encodeURIComponent(r.run_id)}` }, r.run_id), " ", badge(r.state)))))
      : h("p", { class: "muted" }, "No run yet."));
}

async function render() {
  try {
    const match = location.pathname.match(/\/workloads\/([^/]+)$/);
    if (match) {
      const run = new URLSearchParams(location.search).get("run");
      const data = await getJson(`/api/workloads/${match[1]}${run ? `?run=${encodeURIComponent(run)}` : ""}`);
      app.replaceChildren(detailView(data));
    } else {
      app.replaceChildren(listView(await getJson("/api/workloads")));
    }
  } catch (err) {
    app.replaceChildren(h("p", { class: "error" }, String(err)));
  }
}

render();
// Refresh while people watch; the reason being typed is kept by not refreshing then.
setInterval(() => { if (!document.activeElement || document.activeElement.id !== "reason") render(); }, 10000);
