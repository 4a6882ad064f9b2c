// The coordinator's dashboard page: polls the read-only JSON API (/api/...) and redraws.
// Every value goes into the page as text (textContent), never as HTML.
"use strict";

const COLOURS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"];
let refreshMs = 2000;

async function getJson(path) {
  const response = await fetch(path, { credentials: "same-origin", cache: "no-store" });
  const body = await response.json();
  if (!response.ok) throw new Error(`${path}: ${body.error || response.status}`);
  return body;
}

function cell(row, text, className) {
  const td = document.createElement("td");
  td.textContent = text === null || text === undefined ? "–" : String(text);
  if (className) td.className = className;
  row.appendChild(td);
  return td;
}

function fill(tableId, items, render) {
  const body = document.querySelector(`#${tableId} tbody`);
  body.replaceChildren(...items.map((item) => {
    const row = document.createElement("tr");
    render(row, item);
    return row;
  }));
}

const num = (value, digits = 3) => (typeof value === "number" ? value.toFixed(digits) : null);
const secs = (value) => (typeof value === "number" ? `${value.toFixed(1)} s` : null);
const megabytes = (value) => (typeof value === "number" ? `${(value / 1e6).toFixed(1)} MB` : "unknown");
const short = (digest) => (digest && digest !== "unknown" ? `${digest.slice(0, 16)}…` : "unknown");

function ago(seconds) {
  if (typeof seconds !== "number") return "never";
  if (seconds < 90) return `${Math.round(seconds)} s ago`;
  if (seconds < 5400) return `${Math.round(seconds / 60)} min ago`;
  return `${(seconds / 3600).toFixed(1)} h ago`;
}

function showSites(data) {
  fill("sites", data.sites, (row, site) => {
    row.dataset.site = site.name;
    row.dataset.online = String(site.online);
    cell(row, site.registered ? site.name : `${site.name} (key no longer registered)`);
    const state = site.online ? "online" : site.flower_status === "online" ? "offline (heartbeat overdue)" : "offline";
    cell(row, site.flower_status === "never connected" ? "never connected" : state, site.online ? "good" : "bad");
    const seen = cell(row, site.last_seen ? ago(site.last_seen_s_ago) : "never");
    if (site.last_seen) seen.title = site.last_seen;
    cell(row, site.key_fingerprint || "not registered");
    const app = cell(row, short(site.approved_app));
    app.title = `${site.approved_app}: ${site.approved_app_evidence}`;
    cell(row, site.app_version);
    cell(row, site.supernode_version);
  });
}

function showPhase(run) {
  const phase = document.getElementById("run-phase");
  const facts = [];
  const now = run.now || {};
  for (const [label, value] of [
    ["phase", now.phase], ["round", now.round], ["stage", now.stage], ["attempt", now.attempt],
    ["waiting for", now.detail], ["reason", now.reason], ["since", now.since],
    ["coordinator last reported", typeof now.last_report_s_ago === "number" ? ago(now.last_report_s_ago) : null],
  ]) {
    if (value === null || value === undefined || value === "") continue;
    const dt = document.createElement("dt");
    dt.textContent = label;
    const dd = document.createElement("dd");
    dd.textContent = String(value);
    facts.push(dt, dd);
  }
  phase.replaceChildren(...facts);
  const state = document.getElementById("run-state");
  state.textContent = run.state;
  state.className = `state ${now.stale || now.phase === "failed" ? "bad" : now.phase === "paused" ? "warn" : ""}`;
}

function showRounds(run) {
  fill("rounds", run.rounds, (row, r) => {
    row.dataset.round = String(r.round);
    cell(row, r.round);
    cell(row, num(r.global_dice));
    cell(row, Object.entries(r.site_dice).map(([site, dice]) => `${site} ${num(dice) ?? "–"}`).join(", "));
    cell(row, secs(r.round_s));
    cell(row, secs(r.longest_training_s));
    cell(row, r.attempts);
    cell(row, r.sites_online.join(", "));
    const failures = Object.entries(r.failures).map(([site, why]) => `${site}: ${why}`);
    cell(row, failures.length ? failures.join("; ") : "none", failures.length ? "bad" : "muted");
  });
  fill("flower-runs", run.flower_runs, (row, f) => {
    cell(row, f.flower_run);
    const digest = cell(row, short(f.app_digest));
    digest.title = f.app_digest;
    cell(row, megabytes(f.bytes_to_sites));
    cell(row, megabytes(f.bytes_from_sites));
  });
}

function showChart(run) {
  const rounds = run.rounds.map((r) => r.round);
  const sites = [...new Set(run.rounds.flatMap((r) => Object.keys(r.site_dice)))].sort();
  const datasets = [{
    label: "global", data: run.rounds.map((r) => r.global_dice), borderColor: "#000", borderWidth: 3, tension: 0,
  }].concat(sites.map((site, i) => ({
    label: site,
    data: run.rounds.map((r) => r.site_dice[site] ?? null),
    borderColor: COLOURS[i % COLOURS.length],
    borderWidth: 1.5,
    spanGaps: false,
  })));
  if (!window.diceChart) {
    window.diceChart = new Chart(document.getElementById("dice-chart"), {
      type: "line",
      data: { labels: rounds, datasets },
      options: {
        animation: false,
        maintainAspectRatio: false,
        scales: { x: { title: { display: true, text: "round" } }, y: { min: 0, max: 1, title: { display: true, text: "Dice" } } },
      },
    });
    return;
  }
  window.diceChart.data.labels = rounds;
  window.diceChart.data.datasets = datasets;
  window.diceChart.update();
}

function showHistory(data) {
  fill("history", data.runs, (row, run) => {
    row.dataset.run = run.name;
    cell(row, run.name);
    cell(row, run.status ?? "unreadable", run.error ? "bad" : "");
    cell(row, run.error || run.state);
    // Evaluations and statistics train no round: their rounds cell stays empty.
    cell(row, run.error || !run.rounds_planned ? null : `${run.rounds_done} of ${run.rounds_planned}`);
    cell(row, num(run.final_global_dice));
    cell(row, run.created);
  });
}

function showStatistics(data) {
  document.getElementById("statistics-none").hidden = data.run !== null;
  if (data.run === null) return;
  document.getElementById("statistics-run").textContent =
    `(${data.run}, collected ${data.collected}; counts below ${data.min_count} withheld)`;
  const sites = Object.keys(data.rows[0].sites);
  const head = document.querySelector("#statistics-table thead tr");
  head.replaceChildren(...["figure", ...sites].map((name) => {
    const th = document.createElement("th");
    th.textContent = name;
    return th;
  }));
  fill("statistics-table", data.rows, (row, figure) => {
    cell(row, figure.figure);
    sites.forEach((site) => cell(row, figure.sites[site], figure.sites[site].startsWith("failed") ? "bad" : ""));
  });
  if (window.intensityChart && window.intensityChart.collected === `${data.run} ${data.collected}`) return;
  const datasets = Object.entries(data.intensity).flatMap(([site, modalities], i) =>
    Object.entries(modalities).map(([modality, found]) => {
      const counts = found.hist.map((value) => value ?? 0);
      const total = counts.reduce((a, b) => a + b, 0) || 1;
      const [low, high] = found.range;
      const width = (high - low) / counts.length;
      return {
        label: `${site} (${modality})`,
        data: counts.map((count, n) => ({ x: low + (n + 0.5) * width, y: count / total })),
        borderColor: COLOURS[i % COLOURS.length],
        borderWidth: 1.5,
        pointRadius: 0,
      };
    }));
  if (window.intensityChart) window.intensityChart.destroy();
  window.intensityChart = new Chart(document.getElementById("intensity-chart"), {
    type: "line",
    data: { datasets },
    options: {
      animation: false,
      maintainAspectRatio: false,
      scales: {
        x: { type: "linear", title: { display: true, text: "raw scanner units" } },
        y: { title: { display: true, text: "share of voxels" } },
      },
    },
  });
  window.intensityChart.collected = `${data.run} ${data.collected}`;
}

// One row per model and site of every federated evaluation ('insite coord evaluate'); a site
// that gave no score shows its reason instead.
function showEvaluations(data) {
  const rows = [];
  for (const run of data.runs) {
    for (const evaluation of (run.evaluations || []).filter((e) => e.kind === "evaluation")) {
      for (const model of evaluation.models) {
        const sites = [...new Set([...Object.keys(model.sites), ...Object.keys(model.failures)])].sort();
        for (const site of sites) rows.push({ run: run.name, started: evaluation.started, model, site });
      }
    }
  }
  fill("evaluations", rows, (row, item) => {
    const scores = item.model.sites[item.site];
    cell(row, item.run);
    cell(row, item.started);
    cell(row, item.model.name);
    cell(row, item.site);
    if (scores) {
      cell(row, num(scores.dice));
      cell(row, num(scores.hd95, 1));
      cell(row, scores.num_val);
    } else {
      cell(row, item.model.failures[item.site], "bad").colSpan = 3;
    }
  });
}

function showPublication(data) {
  const box = document.getElementById("publication");
  if (!data.manifests.length) return;
  box.replaceChildren(...data.manifests.map((m) => {
    const part = document.createElement("div");
    const title = document.createElement("h3");
    title.textContent = m.error ? m.path : `${m.project} (run ${m.run.name}, round ${m.run.round})`;
    part.appendChild(title);
    const line = document.createElement("p");
    if (m.error) {
      line.textContent = m.error;
      line.className = "bad";
      part.appendChild(line);
      return part;
    }
    const awaiting = m.awaiting === null ? "contributors unknown (run record not found)" :
      m.awaiting.length ? `awaiting ${m.awaiting.join(", ")}` : "every contributing site approved";
    line.textContent = `approved by: ${m.approved_by.join(", ") || "nobody yet"}; ${awaiting}. Manifest ${m.path}`;
    part.appendChild(line);
    const table = document.createElement("table");
    table.className = "assets";
    const head = document.createElement("tr");
    for (const h of ["asset", "decision", "licence", "access", "embargo"]) {
      const th = document.createElement("th");
      th.textContent = h;
      head.appendChild(th);
    }
    table.appendChild(head);
    for (const a of m.assets) {
      const row = document.createElement("tr");
      row.dataset.asset = a.kind;
      cell(row, a.kind);
      cell(row, a.decision, a.decision === "may publish" ? "good" : "warn");
      cell(row, a.licence);
      cell(row, a.access);
      cell(row, a.embargo);
      table.appendChild(row);
    }
    part.appendChild(table);
    for (const [site, why] of Object.entries(m.rejected)) {
      const p = document.createElement("p");
      p.className = "bad";
      p.textContent = `${site}: approval not counted: ${why}`;
      part.appendChild(p);
    }
    return part;
  }));
}

async function refresh() {
  const problems = [];
  const step = async (path, show) => {
    try {
      show(await getJson(path));
    } catch (error) {
      problems.push(error.message);
    }
  };
  await step("/api/overview", (o) => {
    document.getElementById("consortium").textContent = o.consortium;
    document.getElementById("run-name").textContent = o.latest_run ? `(${o.latest_run})` : "(none yet)";
    refreshMs = o.refresh_s * 1000;
    document.getElementById("refresh").textContent = String(o.refresh_s);
  });
  await step("/api/sites", showSites);
  await step("/api/current", (run) => { showPhase(run); showRounds(run); showChart(run); });
  await step("/api/runs", (data) => { showHistory(data); showEvaluations(data); });
  await step("/api/publication", showPublication);
  await step("/api/statistics", showStatistics);
  document.getElementById("problem").textContent = problems.join("; ");
  document.getElementById("updated").textContent = new Date().toLocaleTimeString();
  document.body.dataset.refreshed = String(Date.now());
  setTimeout(refresh, refreshMs);
}

refresh();
