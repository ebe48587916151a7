// Bud Foundry dashboard: a thin client of the same /api the CLI and curl use (no server-side state of its own).
"use strict";

const state = { token: localStorage.getItem("bud-token") || "", temporalUi: "", tab: "endpoints" };
const $ = (selector, root = document) => root.querySelector(selector);
const escapeHtml = (value) => String(value ?? "").replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

async function api(method, path, body) {
  const response = await fetch(path, {
    method,
    headers: { Authorization: `Bearer ${state.token}`, "Content-Type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const payload = response.status === 204 ? null : await response.json();
  if (!response.ok) throw new Error(payload?.error?.message || `${method} ${path}: ${response.status}`);
  return payload;
}

function say(text) { $("#message").textContent = text || ""; }

function workflowLink(workflowId) {
  if (!workflowId) return "";
  const url = `${state.temporalUi}/namespaces/default/workflows/${encodeURIComponent(workflowId)}`;
  return `<a href="${url}" target="_blank" rel="noopener">${escapeHtml(workflowId)}</a>`;
}

function status(value) { return `<span class="status-${escapeHtml(value)}">${escapeHtml(value)}</span>`; }

// ---------------------------------------------------------------------------------------------------- models
async function showModels() {
  const page = await api("GET", "/api/models?limit=100");
  $("#models tbody").innerHTML = page.items.map((m) => `
    <tr data-id="${m.id}"><td>${escapeHtml(m.name)}</td><td>${escapeHtml(m.version)}</td><td>${status(m.status)}</td>
    <td>${escapeHtml(m.architecture)}</td><td>${(m.parameter_count / 1e9).toFixed(2)} B</td>
    <td>${escapeHtml(m.license || "")}</td><td>${m.benchmarks.length}</td></tr>`).join("");
  for (const row of document.querySelectorAll("#models tbody tr")) row.onclick = () => showModel(row.dataset.id);
}

async function showModel(id) {
  const m = await api("GET", `/api/models/${id}`);
  const findings = m.scan_report?.findings || [];
  $("#model-detail").innerHTML = `<h3>${escapeHtml(m.name)} ${escapeHtml(m.version)} — ${status(m.status)}</h3>
    <p>Workflow: ${workflowLink(m.workflow_id)} ${m.error ? `<span class="alert">${escapeHtml(m.error)}</span>` : ""}</p>
    <h4>Scan findings (${findings.length})</h4>
    <ul>${findings.map((f) => `<li class="${f.blocking ? "alert" : ""}">${escapeHtml(f.file || "")} [${escapeHtml(f.check)}/${escapeHtml(f.code)}] ${escapeHtml(f.message)}</li>`).join("") || "<li>none</li>"}</ul>
    <h4>Benchmarks</h4><pre>${escapeHtml(JSON.stringify(m.benchmarks, null, 1))}</pre>`;
}

// ---------------------------------------------------------------------------------------------------- endpoints
async function showEndpoints() {
  const endpoints = await api("GET", "/api/endpoints");
  $("#endpoints tbody").innerHTML = endpoints.map((e) => `
    <tr data-id="${e.id}"><td>${escapeHtml(e.name)}</td><td>${status(e.status)}</td><td>${escapeHtml(e.step || "")}</td>
    <td>${e.deployment.ready_replicas}/${e.deployment.replicas}</td><td>${escapeHtml(e.deployment.runtime)}</td>
    <td class="alert">${(e.monitoring?.alerts || []).length || ""}</td><td>${workflowLink(e.workflow_id)}</td></tr>`).join("");
  for (const row of document.querySelectorAll("#endpoints tbody tr")) row.onclick = () => showEndpoint(row.dataset.id);
}

// The optimizer's Pareto set: end-to-end latency (x) against capacity (y); the recommendation is filled.
function paretoPlot(result) {
  const points = (result?.pareto || []).map((c) => ({
    x: c.prediction.e2e_latency_ms, y: c.prediction.max_throughput_tps, cost: c.prediction.cost_per_hour,
    chosen: JSON.stringify(c.config) === JSON.stringify(result.recommendation?.config), config: c.config,
  }));
  if (!points.length) return "<p>No Pareto set.</p>";
  const [w, h, pad] = [520, 260, 40];
  const xs = points.map((p) => p.x), ys = points.map((p) => p.y);
  const sx = (x) => pad + ((x - Math.min(...xs)) / (Math.max(...xs) - Math.min(...xs) || 1)) * (w - 2 * pad);
  const sy = (y) => h - pad - ((y - Math.min(...ys)) / (Math.max(...ys) - Math.min(...ys) || 1)) * (h - 2 * pad);
  const dots = points.map((p) => `<circle cx="${sx(p.x)}" cy="${sy(p.y)}" r="${p.chosen ? 7 : 4}"
      fill="${p.chosen ? "#4f7cff" : "#9aa6c4"}"><title>TP${p.config.tensor_parallel_size} PP${p.config.pipeline_parallel_size} x${p.config.replicas}, seqs ${p.config.max_num_seqs}: ${p.x.toFixed(0)} ms, ${p.y.toFixed(0)} tok/s, $${p.cost.toFixed(2)}/h</title></circle>`).join("");
  return `<svg class="pareto" width="${w}" height="${h}">${dots}
    <text x="${w / 2}" y="${h - 8}" text-anchor="middle" font-size="11">end-to-end latency (ms)</text>
    <text x="12" y="${h / 2}" transform="rotate(-90 12 ${h / 2})" text-anchor="middle" font-size="11">capacity (tokens/s)</text></svg>`;
}

async function showEndpoint(id) {
  const e = await api("GET", `/api/endpoints/${id}`);
  const advice = e.monitoring?.recommendation;
  $("#endpoint-detail").innerHTML = `<h3>${escapeHtml(e.name)} — ${status(e.status)} ${escapeHtml(e.step || "")}</h3>
    ${e.error ? `<p class="alert">Failed at ${escapeHtml(e.error.step)}: ${escapeHtml(e.error.reason)}</p>` : ""}
    <p>Inference: <code>${escapeHtml(e.inference_url || "—")}</code> (model <code>${escapeHtml(e.name)}</code>)</p>
    <div class="actions">
      <button id="deploy">Deploy</button>
      <input id="replicas" type="number" min="0" value="${e.deployment.replicas}" style="width:4rem">
      <button id="scale">Scale</button><button id="refresh">Refresh metrics</button>
      ${advice?.config ? '<button id="accept">Accept re-optimization advice</button>' : ""}
    </div>
    <h4>Configuration</h4><pre>${escapeHtml(JSON.stringify(e.deployment.config, null, 1))}</pre>
    <h4>Optimizer's Pareto set</h4>${paretoPlot(e.recommendation)}
    <h4>Monitoring</h4>
    ${e.monitoring ? `<ul>${(e.monitoring.alerts || []).map((a) => `<li class="alert">${escapeHtml(a)}</li>`).join("") || "<li>no alerts</li>"}</ul>
      <pre>${escapeHtml(JSON.stringify({ metrics: e.monitoring.metrics, drift: e.monitoring.drift, advice }, null, 1))}</pre>`
      : "<p>No observation yet.</p>"}
    <h4>Autoscaling</h4><pre>${escapeHtml(JSON.stringify({ spec: e.autoscaling, state: e.autoscaling_state }, null, 1))}</pre>`;
  const act = (fn) => async () => { try { say(""); await fn(); await showEndpoint(id); } catch (error) { say(error.message); } };
  $("#deploy").onclick = act(() => api("POST", `/api/endpoints/${id}/deploy`));
  $("#scale").onclick = act(() => api("POST", `/api/endpoints/${id}/scale`, { replicas: Number($("#replicas").value) }));
  $("#refresh").onclick = act(() => api("POST", `/api/endpoints/${id}/metrics/refresh`));
  if (advice?.config) {
    // Accepting applies the advised config as a MANUAL configuration; the user then deploys it.
    const c = advice.config;
    $("#accept").onclick = act(() => api("PUT", `/api/endpoints/${id}/config`, {
      runtime: e.deployment.runtime, optimization_method: "MANUAL", replicas: c.replicas,
      config: { tensor_parallel_size: c.tensor_parallel_size, pipeline_parallel_size: c.pipeline_parallel_size,
        max_model_len: c.max_model_len, max_num_seqs: c.max_num_seqs, gpu_memory_utilization: c.gpu_memory_utilization },
    }));
  }
}

// ---------------------------------------------------------------------------------------------------- traffic
async function showRoutes() {
  const routes = await api("GET", "/api/routes");
  $("#routes tbody").innerHTML = routes.map((r) => `
    <tr><td>${escapeHtml(r.name)}</td>
    <td>${r.backends.map((b) => `${escapeHtml(b.endpoint_name)} ${b.weight} %`).join(", ")}</td>
    <td>${r.shift ? `${status(r.shift.status)} ${escapeHtml(r.shift.step || "")} ${escapeHtml(r.shift.reason || "")}` : ""}</td>
    <td>${r.shift?.status === "RUNNING" ? `<button data-abort="${escapeHtml(r.name)}">Abort shift</button>` : ""}</td></tr>`).join("");
  for (const button of document.querySelectorAll("[data-abort]")) {
    button.onclick = async (event) => {
      event.stopPropagation();
      try { await api("POST", `/api/routes/${encodeURIComponent(button.dataset.abort)}/shift/abort`, {}); await showRoutes(); }
      catch (error) { say(error.message); }
    };
  }
}

// ---------------------------------------------------------------------------------------------------- shell
const views = { models: showModels, endpoints: showEndpoints, routes: showRoutes };

async function show(tab) {
  state.tab = tab;
  for (const button of document.querySelectorAll("#tabs button")) button.classList.toggle("active", button.dataset.tab === tab);
  for (const name of Object.keys(views)) $(`#${name}`).hidden = name !== tab;
  if (!state.token) { say("Paste an API token (the first one is in .bud/admin-token)."); return; }
  try { say(""); await views[tab](); } catch (error) { say(error.message); }
}

async function start() {
  state.temporalUi = (await (await fetch("/ui/config.json")).json()).temporal_ui_url;
  $("#token").value = state.token;
  $("#signin").onsubmit = (event) => {
    event.preventDefault();
    state.token = $("#token").value.trim();
    localStorage.setItem("bud-token", state.token);
    show(state.tab);
  };
  for (const button of document.querySelectorAll("#tabs button")) button.onclick = () => show(button.dataset.tab);
  await show(state.tab);
  setInterval(() => views[state.tab] && state.token && views[state.tab]().catch(() => {}), 5000);
}

start();
