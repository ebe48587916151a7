// Bud Foundry dashboard: a client of the same /api the CLI and curl use (no server-side state of its own).
// Live parts (tables, status, progress, charts) re-render on each poll; forms render when a view or selection
// opens, so typing is never overwritten. Clicks and submits are delegated through data-action / data-form.
import { formatNumber, lineChart, scatterPlot } from "/ui/static/charts.js";

const POLL_MS = 2000;
const state = {
  token: localStorage.getItem("bud-token") || "", projectId: null, temporalUi: "", namespace: "default",
  tab: localStorage.getItem("bud-tab") || "endpoints", endpointId: null, modelId: null, routeName: null,
  minutes: 5, usageHours: 24, progress: {}, lastSeriesAt: 0, renderedRecommendation: "",
};
const $ = (selector, root = document) => root.querySelector(selector);
const $$ = (selector, root = document) => [...root.querySelectorAll(selector)];
const esc = (value) => String(value ?? "").replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

async function api(method, path, body) {
  const response = await fetch(path, {
    method,
    headers: { Authorization: `Bearer ${state.token}`, "Content-Type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const payload = response.status === 204 ? null : await response.json().catch(() => null);
  if (!response.ok) {
    const error = new Error(payload?.error?.message || `${method} ${path}: HTTP ${response.status}`);
    error.status = response.status;
    throw error;
  }
  return payload;
}

function say(text, kind = "error") {
  const box = $("#message");
  box.textContent = text || "";
  box.className = text ? kind : "";
}

// ---------------------------------------------------------------------------------------------------- formats
function parameters(count) {
  if (!count) return "not measured";
  for (const [size, unit] of [[1e12, "T"], [1e9, "B"], [1e6, "M"], [1e3, "k"]]) {
    if (count >= size) return `${(count / size).toFixed(count / size >= 100 ? 0 : 1)} ${unit}`;
  }
  return String(count);
}

function bytes(size) {
  if (size === null || size === undefined) return "";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let value = size, unit = 0;
  while (value >= 1024 && unit < units.length - 1) { value /= 1024; unit += 1; }
  return `${unit ? value.toFixed(1) : value} ${units[unit]}`;
}

const ms = (value) => (value === null || value === undefined ? "not measured" : `${formatNumber(value)} ms`);
const usd = (value) => (value === null || value === undefined ? "—" : `$${Number(value).toFixed(value >= 100 ? 0 : 2)}`);
const when = (iso) => (iso ? new Date(iso).toLocaleString() : "");
const badge = (value) => `<span class="badge status-${esc(value)}">${esc(value)}</span>`;

function workflowLink(workflowId, text) {
  if (!workflowId) return "";
  const url = `${state.temporalUi}/namespaces/${encodeURIComponent(state.namespace)}/workflows/${encodeURIComponent(workflowId)}`;
  return `<a href="${url}" target="_blank" rel="noopener">${esc(text || "workflow in Temporal")}</a>`;
}

function field(label, input, hint = "") {
  return `<label>${esc(label)}${input}${hint ? `<small>${esc(hint)}</small>` : ""}</label>`;
}
const numberInput = (name, value = "", attrs = "") =>
  `<input name="${name}" type="number" step="any" value="${esc(value ?? "")}" ${attrs}>`;
function formValues(form) {
  const values = {};
  for (const [key, value] of new FormData(form).entries()) values[key] = typeof value === "string" ? value.trim() : value;
  return values;
}
const numberOrNull = (value) => (value === "" || value === undefined ? null : Number(value));

// ---------------------------------------------------------------------------------------------------- models
function renderModelsView() {
  $("#models").innerHTML = `
    <div class="split">
      <div class="grow">
        <h2>Models</h2>
        <form data-form="model-filters" class="filters">
          ${field("status", `<select name="status"><option value="">any</option>${["AVAILABLE", "SCANNING", "QUARANTINED", "FAILED"]
            .map((s) => `<option value="${s}">${s}</option>`).join("")}</select>`)}
          ${field("architecture", '<input name="architecture" placeholder="llama">')}
          ${field("license", '<input name="license" placeholder="apache-2.0 or permissive">')}
          ${field("parameters from (B)", numberInput("min_b"))}
          ${field("to (B)", numberInput("max_b"))}
          ${field("sort", `<select name="sort">${[["-created_at", "newest"], ["name", "name"], ["parameters", "smallest"],
            ["-parameters", "largest"]].map(([v, t]) => `<option value="${v}">${t}</option>`).join("")}</select>`)}
          <button type="submit">Filter</button>
        </form>
        <table class="list"><thead><tr><th>name</th><th>version</th><th>status</th><th>architecture</th>
          <th>parameters</th><th>context</th><th>license</th><th>benchmarks</th><th>registered</th></tr></thead>
          <tbody id="model-rows"></tbody></table>
      </div>
      <aside class="card guidance">
        <h3>Add a model</h3>
        <p>A model folder holds <code>config.json</code>, <code>*.safetensors</code> and the tokenizer files. Upload it
          with your token; the registry then scans every file (checksums, ClamAV, pickle opcodes, safetensors headers,
          config facts, license) and makes it <b>AVAILABLE</b> or <b>QUARANTINED</b>.</p>
        <pre>bud models make-example ./example-model   # a small valid folder to try
bud models upload ./example-model \\
    --name example --license apache-2.0</pre>
        <p>Or over HTTP: <code>PUT /api/models/uploads/NAME/VERSION/PATH</code> for each file, then
          <code>POST /api/models</code> with the name, architecture, parameter count, context length and
          <code>source_path</code>. A new model appears here while it is scanned.</p>
      </aside>
    </div>
    <div id="model-detail"></div>`;
}

function modelQuery() {
  const form = $('[data-form="model-filters"]');
  const values = form ? formValues(form) : {};
  const query = new URLSearchParams({ limit: "100", sort: values.sort || "-created_at" });
  for (const key of ["status", "architecture", "license"]) if (values[key]) query.set(key, values[key]);
  if (values.min_b) query.set("min_parameters", String(Math.round(Number(values.min_b) * 1e9)));
  if (values.max_b) query.set("max_parameters", String(Math.round(Number(values.max_b) * 1e9)));
  return query;
}

async function refreshModels() {
  const page = await api("GET", `/api/models?${modelQuery()}`);
  $("#model-rows").innerHTML = page.items.map((m) => `
    <tr data-action="model" data-id="${m.id}" class="${m.id === state.modelId ? "selected" : ""}">
    <td>${esc(m.name)}</td><td>${esc(m.version)}</td><td>${badge(m.status)}</td><td>${esc(m.architecture)}</td>
    <td title="${m.effective_parameter_count.toLocaleString()} parameters">${parameters(m.effective_parameter_count)}</td>
    <td>${m.context_length.toLocaleString()} tokens</td>
    <td>${esc(m.license || "unknown")}${m.license_category ? ` <small>(${esc(m.license_category)})</small>` : ""}</td>
    <td>${m.benchmarks.map((b) => `${esc(b.benchmark ?? b.name)} ${esc(b.score)}`).join(", ") || "—"}</td>
    <td>${when(m.created_at)}</td></tr>`).join("") || '<tr><td colspan="9">No model matches these filters.</td></tr>';
  if (state.modelId) await refreshModel();
}

async function refreshModel() {
  const m = await api("GET", `/api/models/${state.modelId}`);
  const report = m.scan_report || {};
  const files = report.files || [];
  const findings = report.findings || [];
  const findingsOf = (path) => findings.filter((f) => f.file === path);
  const progress = m.progress ? `<p>Scanning: ${esc(m.progress.step)} (${esc(m.progress.files_done)}/${esc(m.progress.files_total)} checks)</p>` : "";
  $("#model-detail").innerHTML = `<div class="card">
    <h3>${esc(m.name)} ${esc(m.version)} ${badge(m.status)}</h3>
    <dl class="facts">
      <dt>parameters</dt><dd>${parameters(m.effective_parameter_count)} effective${m.real_parameter_count ? `, ${parameters(m.real_parameter_count)} counted in the weights` : ""}, ${parameters(m.parameter_count)} declared</dd>
      <dt>architecture</dt><dd>${esc(m.architecture)}</dd>
      <dt>context</dt><dd>${m.context_length.toLocaleString()} tokens</dd>
      <dt>license</dt><dd>${esc(m.license || "unknown")} ${m.license_category ? `(${esc(m.license_category)})` : ""}</dd>
      <dt>files</dt><dd><code>${esc(m.source_path)}</code></dd>
      <dt>scan</dt><dd>${workflowLink(m.workflow_id)} ${report.finished_at ? `finished ${when(report.finished_at)}` : ""}
        ${report.large_file_policy ? `<small>${esc(report.large_file_policy)}</small>` : ""}</dd>
    </dl>
    ${m.error ? `<p class="alert">${esc(m.error)}</p>` : ""}${progress}
    <h4>Scan report: ${files.length} files, ${findings.length ? `${findings.length} findings` : "no findings"}</h4>
    <table class="scan"><thead><tr><th>file</th><th>size</th><th>sha256</th><th>checks</th></tr></thead><tbody>
    ${files.map((f) => `<tr><td><code>${esc(f.path)}</code></td><td>${bytes(f.size)}</td>
      <td><code title="${esc(f.sha256)}">${esc((f.sha256 || "").slice(0, 12))}</code></td>
      <td><ul class="checks">${Object.entries(f.checks || {}).map(([check, outcome]) => `<li><b>${esc(check)}</b> ${esc(outcome)}</li>`).join("")}
        ${findingsOf(f.path).map((x) => `<li class="${x.blocking ? "alert" : "warn"}">${esc(x.check)}/${esc(x.code)}: ${esc(x.message)}</li>`).join("")}</ul></td></tr>`).join("")
      || '<tr><td colspan="4">No file scanned yet.</td></tr>'}</tbody></table>
    ${findings.filter((f) => !files.some((file) => file.path === f.file)).map((f) =>
      `<p class="${f.blocking ? "alert" : "warn"}">${esc(f.file || "model")}: ${esc(f.check)}/${esc(f.code)}: ${esc(f.message)}</p>`).join("")}
    </div>`;
}

// ---------------------------------------------------------------------------------------------------- endpoints
async function renderEndpointsView() {
  const [models, clusters] = await Promise.all([api("GET", "/api/models?status=AVAILABLE&limit=200"), api("GET", "/api/clusters")]);
  $("#endpoints").innerHTML = `
    <h2>Endpoints</h2>
    <form data-form="create-endpoint" class="filters">
      ${field("name", '<input name="name" required pattern="[a-z0-9]([-a-z0-9]*[a-z0-9])?" maxlength="53" placeholder="my-llm">', "also the model name clients send")}
      ${field("model", `<select name="model_id" required>${models.items.map((m) => `<option value="${m.id}">${esc(m.name)} ${esc(m.version)} (${parameters(m.effective_parameter_count)})</option>`).join("")}</select>`)}
      ${field("cluster", `<select name="cluster_id">${clusters.map((c) => `<option value="${c.id}">${esc(c.name)} (${esc(c.kind)}, ${c.gpus.map((g) => `${g.count}× ${esc(g.gpu_type)}`).join(", ")})</option>`).join("")}</select>`)}
      <button type="submit">Create endpoint</button>
    </form>
    <table class="list"><thead><tr><th>name</th><th>status</th><th>step</th><th>replicas</th><th>runtime</th><th>config</th>
      <th>alerts</th><th>workflow</th></tr></thead><tbody id="endpoint-rows"></tbody></table>
    <div id="endpoint-detail"></div>`;
  if (state.endpointId) await openEndpoint(state.endpointId);
}

const configText = (c) => (c ? `TP${c.tensor_parallel_size} PP${c.pipeline_parallel_size}, ${c.max_num_seqs} seqs, ${formatNumber(c.max_model_len)} ctx` : "—");

async function refreshEndpoints() {
  const rows = await api("GET", "/api/endpoints");
  $("#endpoint-rows").innerHTML = rows.map((e) => `
    <tr data-action="endpoint" data-id="${e.id}" class="${e.id === state.endpointId ? "selected" : ""}">
    <td>${esc(e.name)}</td><td>${badge(e.status)}</td><td>${esc(e.step || "")}</td>
    <td>${e.deployment.ready_replicas}/${e.deployment.replicas}</td><td>${esc(e.deployment.runtime)}</td>
    <td>${configText(e.deployment.config)}${e.pending_config ? ' <small class="warn">change pending</small>' : ""}</td>
    <td class="alert">${(e.monitoring?.alerts || []).length || ""}</td><td>${workflowLink(e.workflow_id, "deploy")}</td></tr>`).join("")
    || '<tr><td colspan="8">No endpoint yet: create one above from an AVAILABLE model.</td></tr>';
  if (state.endpointId && !rows.some((e) => e.id === state.endpointId)) {
    state.endpointId = null;
    $("#endpoint-detail").innerHTML = "";
  }
  if (state.endpointId) await refreshEndpoint();
}

async function openEndpoint(id) {
  state.endpointId = id;
  state.renderedRecommendation = "";
  state.lastSeriesAt = 0;
  const e = await api("GET", `/api/endpoints/${id}`);
  const c = e.deployment.config || {}, t = e.performance_targets || {}, a = e.autoscaling || {};
  const queueTarget = a.metrics?.[0]?.external?.target?.value ?? 100;
  $("#endpoint-detail").innerHTML = `<div class="card">
    <div id="ep-live"></div>
    <div class="columns">
      <form data-form="configure" class="panel">
        <h4>Configure</h4>
        <div class="radios">
          <label><input type="radio" name="mode" value="auto" ${e.optimization_method === "MANUAL" ? "" : "checked"}> automatic, with targets</label>
          <label><input type="radio" name="mode" value="MANUAL" ${e.optimization_method === "MANUAL" ? "checked" : ""}> manual</label>
        </div>
        <div class="row">${field("runtime", `<select name="runtime">${["vllm", "sglang", "tensorrt-llm"].map((r) => `<option ${r === e.deployment.runtime ? "selected" : ""}>${r}</option>`).join("")}</select>`)}
          ${field("method", `<select name="method">${["REGRESSOR", "HEURISTIC"].map((m) => `<option ${m === e.optimization_method ? "selected" : ""}>${m}</option>`).join("")}</select>`)}</div>
        <fieldset data-mode="auto"><legend>targets</legend><div class="row">
          ${field("max latency (ms)", numberInput("max_latency_ms", t.max_latency_ms))}
          ${field("max TTFT (ms)", numberInput("max_ttft_ms", t.max_ttft_ms))}
          ${field("min throughput (tok/s)", numberInput("min_throughput_tps", t.min_throughput_tps))}
          ${field("max cost ($/h)", numberInput("max_cost_per_hour", t.max_cost_per_hour))}</div>
          <div class="row">${field("input tokens", numberInput("input_tokens", 256, 'min="1"'))}
          ${field("output tokens", numberInput("output_tokens", 64, 'min="1"'))}
          ${field("concurrency", numberInput("concurrency", 8, 'min="1"'))}</div></fieldset>
        <fieldset data-mode="MANUAL"><legend>configuration</legend><div class="row">
          ${field("tensor parallel", numberInput("tensor_parallel_size", c.tensor_parallel_size ?? 1, 'min="1"'))}
          ${field("pipeline parallel", numberInput("pipeline_parallel_size", c.pipeline_parallel_size ?? 1, 'min="1"'))}
          ${field("max model len", numberInput("max_model_len", c.max_model_len ?? 2048, 'min="16"'))}
          ${field("max seqs", numberInput("max_num_seqs", c.max_num_seqs ?? 8, 'min="1"'))}
          ${field("GPU memory", numberInput("gpu_memory_utilization", c.gpu_memory_utilization ?? 0.9))}
          ${field("replicas", numberInput("replicas", e.deployment.replicas || 1, 'min="1"'))}</div></fieldset>
        <button type="submit">Save configuration</button>
      </form>
      <div class="panel">
        <form data-form="scale"><h4>Scale</h4><div class="row">
          ${field("replicas", numberInput("replicas", e.deployment.replicas, 'min="0"'))}<button type="submit">Scale</button></div></form>
        <form data-form="autoscale"><h4>Autoscale</h4>
          <label class="inline"><input type="checkbox" name="enabled" ${a.enabled === false || !e.autoscaling ? "" : "checked"}> enabled</label>
          <div class="row">${field("min", numberInput("min_replicas", a.min_replicas ?? 1, 'min="0"'))}
          ${field("max", numberInput("max_replicas", a.max_replicas ?? 4, 'min="1"'))}
          ${field("queue depth per replica", numberInput("queue_target", queueTarget, 'min="1"'), "inference_queue_depth target")}</div>
          <button type="submit">Apply autoscaling</button></form>
        <div id="ep-autoscaling"></div>
      </div>
    </div>
    <div id="ep-recommendation"></div>
    <div id="ep-monitoring"></div>
    <div id="ep-benchmarks"></div>
  </div>`;
  syncConfigureMode();
  await refreshEndpoints();
}

function syncConfigureMode() {
  const form = $('[data-form="configure"]');
  if (!form) return;
  const mode = form.querySelector('input[name="mode"]:checked').value;
  for (const set of $$("fieldset[data-mode]", form)) set.hidden = set.dataset.mode !== mode;
  form.querySelector('select[name="method"]').disabled = mode === "MANUAL";
}

// The steps a deploy went through, as this page saw them (the endpoint's `step` at each poll).
function trackProgress(e) {
  const seen = state.progress[e.id] || (state.progress[e.id] = []);
  const now = Date.now();
  const current = `${e.status}${e.step ? `: ${e.step}` : ""}`;
  if (!seen.length || seen[seen.length - 1].text !== current) seen.push({ text: current, at: now });
  if (seen.length > 30) seen.splice(0, seen.length - 30);
  return seen;
}

// What a pending configuration changes from what the replicas run, field by field.
function configChanges(e) {
  const pending = e.pending_config, serving = e.deployment;
  if (!pending) return [];
  const changes = [];
  const compare = (label, before, after) => {
    if ((before && typeof before === "object") || (after && typeof after === "object")) {
      const a = before || {}, b = after || {};
      for (const key of [...new Set([...Object.keys(a), ...Object.keys(b)])].sort()) compare(key, a[key], b[key]);
    } else if ((before ?? null) !== (after ?? null)) {
      changes.push(`${label} ${before ?? "—"} → ${after ?? "—"}`);
    }
  };
  compare("runtime", serving.runtime, pending.runtime);
  if (pending.config === null) changes.push("config: the optimizer is choosing it");
  else compare("config", serving.config, pending.config);
  compare("resources", serving.resources, pending.resources);
  compare("replicas", serving.replicas, pending.replicas);
  return changes;
}

function generationText(e) {
  const generation = e.deployment.generation ?? "—";
  const to = e.status === "UPDATING" ? e.rollout?.to_generation : null;
  return to ? `${esc(generation)} <span class="step">(updating to ${esc(to)})</span>` : esc(generation);
}

// The last rolling update: its status, plan and each planned step with what became of it, then the rollback's.
function rolloutView(e) {
  const r = e.rollout;
  if (!r) return "";
  const planned = r.steps || [], done = r.done || [];
  const doneCount = done.filter((s) => s.outcome === "done").length;
  const stepOutcome = (i) => {
    if (i < doneCount) return '<span class="ok">done</span>';
    if (i === doneCount && ["PENDING", "RUNNING"].includes(r.status)) return r.status === "RUNNING" ? "<b>in progress</b>" : "next";
    return ["PENDING", "RUNNING"].includes(r.status) ? "to do" : "not run";
  };
  const row = (label, s, outcome) => `<tr><td>${esc(label)}</td><td>${esc(s.action)}</td><td>${esc(s.new_replicas)}</td>
    <td>${esc(s.old_replicas)}</td><td>${outcome}</td></tr>`;
  const generations = r.to_generation ? `generation ${esc(r.from_generation)} → ${esc(r.to_generation)}, ` : "";
  return `<h4>Rolling update ${badge(r.status)} <small>${generations}${doneCount}/${planned.length} steps done</small></h4>
    <p class="rollout-plan">${esc(r.plan || "")}</p>
    ${r.error ? `<p class="alert">${r.status === "REVERTED" ? "Reverted" : "Stopped"} at ${esc(r.error.step)}: ${esc(r.error.reason)}</p>` : ""}
    <table class="list rollout-steps"><thead><tr><th>step</th><th>action</th><th>new replicas</th><th>old replicas</th><th>outcome</th></tr></thead><tbody>
    ${planned.map((s, i) => row(`${i + 1}/${planned.length}`, s, stepOutcome(i))).join("")}
    ${done.filter((s) => s.outcome !== "done").map((s, i) => row(`back ${i + 1}`, s, `<span class="warn">${esc(s.outcome)}</span>`)).join("")}
    </tbody></table>`;
}

async function refreshEndpoint() {
  const e = await api("GET", `/api/endpoints/${state.endpointId}`);
  const steps = trackProgress(e);
  const busy = ["DEPLOYING", "DELETING", "PENDING", "UPDATING"].includes(e.status) || e.optimization_status === "RUNNING";
  const changes = configChanges(e);
  const checks = e.health ? Object.entries(e.health).filter(([k, v]) => typeof v !== "object" && !k.includes("text")).map(([k, v]) => `${esc(k)}: ${esc(v)}`).join(", ") : "";
  $("#ep-live").innerHTML = `
    <h3>${esc(e.name)} ${badge(e.status)} <span class="step">${esc(e.step || "")}</span></h3>
    ${e.error ? `<p class="alert">Failed at ${esc(e.error.step)}: ${esc(e.error.reason)}</p>` : ""}
    <div class="actions">
      <button data-action="deploy" ${["DEPLOYING", "DELETING", "UPDATING"].includes(e.status) ? "disabled" : ""}>${e.status === "RUNNING" && e.pending_config ? "Deploy (rolling update)" : "Deploy"}</button>
      <button data-action="observe" ${e.status === "RUNNING" ? "" : "disabled"}>Observe now</button>
      <button data-action="delete" class="danger">Delete…</button>
      ${workflowLink(e.workflow_id, "deploy workflow")} ${workflowLink(e.optimization_workflow_id, "optimizer workflow")}
    </div>
    <dl class="facts">
      <dt>inference</dt><dd><code>${esc(e.inference_url || "—")}</code> as model <code>${esc(e.name)}</code></dd>
      <dt>replicas</dt><dd>${e.deployment.ready_replicas} ready of ${e.deployment.replicas}</dd>
      <dt>running</dt><dd>${esc(e.deployment.runtime)} ${configText(e.deployment.config)}${e.deployment.resources ? `, ${e.deployment.resources.gpu_count}× ${esc(e.deployment.resources.gpu_type)} per replica` : ""}</dd>
      <dt>generation</dt><dd>${generationText(e)}</dd>
      <dt>pending config</dt><dd class="pending-config">${changes.length ? changes.map(esc).join("; ") : "none: the replicas run the configuration"}</dd>
      <dt>optimizer</dt><dd>${esc(e.optimization_method || "—")} ${e.optimization_status ? badge(e.optimization_status) : ""}</dd>
      ${checks ? `<dt>health</dt><dd>${checks}</dd>` : ""}
    </dl>
    <div id="ep-rollout">${rolloutView(e)}</div>
    <ol class="progress ${busy ? "live" : ""}">${steps.map((s, i) => `<li class="${i === steps.length - 1 ? "current" : ""}">${esc(s.text)} <small>${new Date(s.at).toLocaleTimeString()}</small></li>`).join("")}</ol>`;
  $("#ep-autoscaling").innerHTML = e.autoscaling_state ? `<dl class="facts">${Object.entries(e.autoscaling_state)
    .filter(([, v]) => v !== null && typeof v !== "object").map(([k, v]) => `<dt>${esc(k.replaceAll("_", " "))}</dt><dd>${esc(v)}</dd>`).join("")}</dl>` : "<p><small>Autoscaling off.</small></p>";
  const recommendationKey = JSON.stringify(e.recommendation || null);
  if (recommendationKey !== state.renderedRecommendation) {
    state.renderedRecommendation = recommendationKey;
    $("#ep-recommendation").innerHTML = recommendationView(e);
  }
  if (Date.now() - state.lastSeriesAt > 10_000) {
    state.lastSeriesAt = Date.now();
    await refreshMonitoring(e);
  }
}

// ---------------------------------------------------------------------------------------------------- recommendation
function candidateDetails(c) {
  const k = c.config, p = c.prediction;
  return `TP${k.tensor_parallel_size} PP${k.pipeline_parallel_size} × ${k.replicas} replicas, ${k.max_num_seqs} seqs\n`
    + `end-to-end ${formatNumber(p.e2e_latency_ms)} ms, TTFT ${formatNumber(p.ttft_ms)} ms, TPOT ${formatNumber(p.tpot_ms)} ms\n`
    + `capacity ${formatNumber(p.max_throughput_tps)} tok/s, ${usd(p.cost_per_hour)}/h, ${usd(p.cost_per_million_tokens)} per M tokens`;
}

function recommendationView(e) {
  const result = e.recommendation;
  if (!result) return e.optimization_status === "RUNNING" ? "<h4>Recommendation</h4><p>The optimizer is choosing a configuration…</p>" : "";
  const chosen = result.recommendation;
  const same = (a, b) => a && b && ["tensor_parallel_size", "pipeline_parallel_size", "max_num_seqs", "replicas", "max_model_len"].every((k) => a[k] === b[k]);
  const points = (result.pareto || []).map((c) => ({
    x: c.prediction.e2e_latency_ms, y: c.prediction.max_throughput_tps, chosen: same(c.config, chosen?.config),
    label: `TP${c.config.tensor_parallel_size} ×${c.config.replicas}, ${usd(c.prediction.cost_per_hour)}/h`, details: candidateDetails(c),
  }));
  if (chosen && !points.some((p) => p.chosen)) {
    points.push({ x: chosen.prediction.e2e_latency_ms, y: chosen.prediction.max_throughput_tps, chosen: true,
      label: `TP${chosen.config.tensor_parallel_size} ×${chosen.config.replicas}, ${usd(chosen.prediction.cost_per_hour)}/h`, details: candidateDetails(chosen) });
  }
  state.paretoPoints = points;
  const p = chosen?.prediction;
  const interval = (lo, hi) => (lo !== null && lo !== undefined && hi !== null && hi !== undefined ? ` <small>(P10–P90 ${formatNumber(lo)}–${formatNumber(hi)})</small>` : "");
  return `<h4>Recommendation <small>${esc(result.method)} on ${esc(result.gpu_type)}, ${result.evaluated} configs predicted</small></h4>
    <div class="columns">
      <div>${points.length ? scatterPlot({ points, xLabel: "end-to-end latency per request (ms)", yLabel: "capacity (output tokens/s)" }) : "<p>No Pareto set.</p>"}
        <p class="hover-detail" id="pareto-detail">Hover a point for its configuration, predictions and cost.</p></div>
      ${chosen ? `<dl class="facts chosen-config">
        <dt>chosen</dt><dd>${configText(chosen.config)}, ${chosen.config.replicas} replicas ${chosen.meets_targets ? '<span class="ok">meets the targets</span>' : '<span class="alert">misses a target</span>'}</dd>
        <dt>TTFT</dt><dd>${ms(p.ttft_ms)}${interval(p.ttft_p10_ms, p.ttft_p90_ms)}</dd>
        <dt>TPOT</dt><dd>${ms(p.tpot_ms)}${interval(p.tpot_p10_ms, p.tpot_p90_ms)}</dd>
        <dt>end-to-end</dt><dd>${ms(p.e2e_latency_ms)}${interval(p.e2e_latency_p10_ms, p.e2e_latency_p90_ms)}</dd>
        <dt>throughput</dt><dd>${formatNumber(p.output_throughput_tps)} tok/s at the workload, capacity ${formatNumber(p.max_throughput_tps)} tok/s</dd>
        <dt>cost</dt><dd>${usd(p.cost_per_hour)} per hour, ${usd(p.cost_per_million_tokens)} per million output tokens</dd>
        <dt>why</dt><dd>${esc(chosen.reason)}</dd>
        ${(chosen.failed_targets || []).map((m) => `<dt class="alert">${esc(m.target)}</dt><dd class="alert">predicted ${formatNumber(m.predicted)} against ${formatNumber(m.limit)} (${formatNumber(m.shortfall_pct)} % over)</dd>`).join("")}
      </dl>` : `<p class="alert">${esc(result.message)}</p>`}
    </div>`;
}

// ---------------------------------------------------------------------------------------------------- monitoring
async function refreshMonitoring(e) {
  const box = $("#ep-monitoring");
  if (!box) return;
  const m = e.monitoring;
  const targets = e.performance_targets || {};
  let charts = "";
  try {
    const data = await api("GET", `/api/endpoints/${e.id}/metrics/series?minutes=${state.minutes}`);
    const start = Date.parse(data.start) / 1000, end = Date.parse(data.end) / 1000;
    const chart = (key, title, threshold) => lineChart({ title, unit: data.units[key], points: data.series[key] || [], start, end,
      threshold, integer: key === "replicas" });
    charts = `<div class="charts">
      ${chart("ttft_p99_ms", "TTFT p99", 500)}${chart("inference_latency_p99_ms", "latency p99", 2000)}
      ${chart("throughput_tps", "throughput", targets.min_throughput_tps)}${chart("queue_depth", "queue depth", 100)}
      ${chart("replicas", "replicas")}${chart("requests_per_s", "requests")}</div>`;
  } catch (error) {
    charts = `<p class="alert">Charts unavailable: ${esc(error.message)}</p>`;
  }
  let live = null;
  try { live = await api("GET", `/api/endpoints/${e.id}/metrics`); } catch (error) { live = { error: error.message }; }
  const metrics = m?.metrics || {};
  const alertItem = (a) => `<li class="${a.state === "firing" ? "alert" : "warn"}"><b>${esc(a.name)}</b> ${esc(a.state)}${a.severity ? ` (${esc(a.severity)})` : ""}
    ${a.summary ? `: ${esc(a.summary)}` : ""}${a.active_since ? ` <small>since ${when(a.active_since)}</small>` : ""}</li>`;
  const promAlerts = live?.alerts;
  const gpu = live?.gpu;
  const mib = (value) => (typeof value === "number" ? bytes(value * 1024 * 1024) : "not measured");
  const gpuText = (value, unit) => (value === "not measured" || value === null || value === undefined ? "not measured" : `${formatNumber(value)} ${unit}`);
  box.innerHTML = `<h4>Monitoring <small>last ${state.minutes} minutes from Prometheus; dashed lines are alert thresholds</small>
      <select data-action="minutes">${[5, 15, 60, 360].map((v) => `<option value="${v}" ${v === state.minutes ? "selected" : ""}>${v} min</option>`).join("")}</select></h4>
    ${charts}
    <div class="columns">
      <div><h5>Alerts now <small>from Prometheus's rules</small></h5>
        ${promAlerts ? `<ul>${[...promAlerts.firing, ...promAlerts.pending].map(alertItem).join("") || '<li class="ok">none firing or pending</li>'}</ul>
          ${promAlerts.error ? `<p class="alert">${esc(promAlerts.error)}</p>` : ""}` : `<p><small>${esc(live?.error || "not read")}</small></p>`}
        ${gpu ? `<h5>GPUs now <small>DCGM</small></h5><dl class="facts"><dt>GPUs</dt><dd>${gpuText(gpu.gpus, "")}</dd>
          <dt>utilization</dt><dd>${gpuText(gpu.utilization_percent, "%")}</dd><dt>memory</dt><dd>${mib(gpu.memory_used_mib)} used, ${mib(gpu.memory_free_mib)} free</dd>
          <dt>power</dt><dd>${gpuText(gpu.power_w, "W")}</dd></dl>` : ""}
        <h5>Alerts of the last observation</h5>${m ? `<ul>${(m.alerts || []).map((a) => `<li class="alert">${esc(a)}</li>`).join("") || '<li class="ok">no alert firing</li>'}</ul>` : "<p>No observation yet: Observe now, or wait for the schedule.</p>"}
        ${m?.error ? `<p class="alert">Last observation failed: ${esc(m.error)}</p>` : ""}</div>
      ${m ? `<div><h5>Last observation <small>${when(m.at)}, over ${m.window_s} s</small></h5><dl class="facts">
        <dt>TTFT</dt><dd>p50 ${ms(metrics.ttft_p50_ms)}, p99 ${ms(metrics.ttft_p99_ms)} (predicted ${ms(m.expectation?.predicted_ttft_ms)})</dd>
        <dt>TPOT</dt><dd>p50 ${ms(metrics.tpot_p50_ms)} (predicted ${ms(m.expectation?.predicted_tpot_ms)})</dd>
        <dt>throughput</dt><dd>${formatNumber(metrics.throughput_tps)} tok/s, ${formatNumber(metrics.requests_per_s)} requests/s</dd>
        <dt>GPU</dt><dd>${metrics.gpu_utilization === null || metrics.gpu_utilization === undefined ? "not measured" : `${formatNumber(metrics.gpu_utilization)} %`}</dd>
        <dt>drift</dt><dd>${Object.entries(m.drift || {}).map(([k, v]) => `${esc(k)} × ${formatNumber(v)}`).join(", ") || "none measured"}</dd>
        ${(m.reoptimize_because || []).length ? `<dt>advice</dt><dd>re-optimize: ${m.reoptimize_because.map(esc).join("; ")}</dd>` : ""}
        ${m.recommendation?.config ? `<dt></dt><dd><button data-action="accept-advice">Use the advised configuration</button></dd>` : ""}
      </dl></div>` : ""}
    </div>`;
  await refreshBenchmarks(e);
}

async function refreshBenchmarks(e) {
  const runs = await api("GET", `/api/endpoints/${e.id}/benchmarks`);
  const latest = runs[0];
  const p = e.recommendation?.recommendation?.prediction;
  $("#ep-benchmarks").innerHTML = `<h4>Benchmark: predicted against measured
      <button data-action="benchmark" ${e.status === "RUNNING" ? "" : "disabled"}>Run a benchmark (1, 4, 8 clients)</button></h4>
    ${latest ? `<p>${badge(latest.status)} ${esc(latest.step || "")} ${when(latest.created_at)} ${workflowLink(latest.workflow_id)} ${latest.error ? `<span class="alert">${esc(latest.error)}</span>` : ""}</p>
    <table class="list"><thead><tr><th>clients</th><th>TTFT predicted</th><th>TTFT measured p50 / p99</th><th>TPOT predicted</th><th>TPOT measured p50</th><th>throughput predicted / measured</th></tr></thead><tbody>
    ${latest.levels.map((level) => {
      const r = level.result || level, plan = level.plan || level, pred = r.predicted || plan.predicted || {};
      return `<tr><td>${esc(plan.concurrency)}</td><td>${ms(pred.ttft_ms)}</td><td>${ms(r.ttft_p50_ms)} / ${ms(r.ttft_p99_ms)}</td>
        <td>${ms(pred.tpot_ms)}</td><td>${ms(r.tpot_p50_ms)}</td><td>${formatNumber(pred.throughput_tps)} / ${formatNumber(r.throughput_tps)} tok/s</td></tr>`;
    }).join("")}</tbody></table>
    ${p?.ttft_p10_ms ? `<p><small>The optimizer's interval at the configured workload: TTFT ${formatNumber(p.ttft_p10_ms)}–${formatNumber(p.ttft_p90_ms)} ms, TPOT ${formatNumber(p.tpot_p10_ms)}–${formatNumber(p.tpot_p90_ms)} ms (P10–P90).</small></p>` : ""}`
    : "<p><small>No benchmark yet.</small></p>"}`;
}

// ---------------------------------------------------------------------------------------------------- traffic
async function renderRoutesView() {
  $("#routes").innerHTML = `<h2>Traffic</h2>
    <p><small>A route is the model name clients send to the gateway; its weights spread requests over endpoints. A shift
      moves a route to a new endpoint: blue-green at once, or gradually, each step judged against the stable version.</small></p>
    <div id="route-cards"></div><div id="route-forms"></div>`;
  await renderRouteForms();
}

async function renderRouteForms() {
  const [routes, endpoints] = await Promise.all([api("GET", "/api/routes"), api("GET", "/api/endpoints")]);
  const running = endpoints.filter((e) => e.status === "RUNNING");
  const options = running.map((e) => `<option value="${e.id}">${esc(e.name)}</option>`).join("");
  const route = routes.find((r) => r.name === state.routeName) || routes[0];
  state.routeName = route?.name || null;
  const weights = Object.fromEntries((route?.backends || []).map((b) => [b.endpoint_id, b.weight]));
  $("#route-forms").innerHTML = `<div class="columns">
    ${route ? `<form data-form="weights" class="panel"><h4>Weights of <select name="route" data-action="pick-route">${routes.map((r) => `<option ${r.name === route.name ? "selected" : ""}>${esc(r.name)}</option>`).join("")}</select></h4>
      <div class="row">${running.map((e) => field(e.name, numberInput(`w-${e.id}`, weights[e.id] ?? 0, 'min="0" max="100"'))).join("")}</div>
      <button type="submit">Set weights</button> <small>they add up to 100</small></form>
    <form data-form="shift" class="panel"><h4>Shift ${esc(route.name)}</h4><div class="row">
      ${field("to endpoint", `<select name="to_endpoint_id">${options}</select>`)}
      ${field("strategy", '<select name="strategy"><option value="gradual">gradual</option><option value="blue-green">blue-green</option></select>')}
      ${field("steps (%)", '<input name="steps" value="10,50,100">')}
      ${field("step interval (s)", numberInput("step_interval_s", 60, 'min="0"'))}
      ${field("min requests per step", numberInput("min_requests", 20, 'min="1"'))}
      ${field("wait for traffic (s)", numberInput("traffic_wait_s", 300, 'min="0"'))}
      ${field("drain before done (s)", numberInput("drain_s", 30, 'min="0"'))}</div>
      <button type="submit">Start shift</button></form>` : ""}
    <form data-form="new-route" class="panel"><h4>New route</h4><div class="row">
      ${field("name", '<input name="name" required placeholder="my-model">', "the model name clients send")}
      ${field("endpoint", `<select name="endpoint_id">${options}</select>`)}</div>
      <button type="submit" ${running.length ? "" : "disabled"}>Create route</button></form></div>`;
}

function stepRows(steps) {
  if (!steps?.length) return "";
  const side = (s) => (s ? `${formatNumber(s.ttft_p99_ms)} ms TTFT p99, ${s.requests} req, ${s.errors} err` : "—");
  return `<table class="list steps"><thead><tr><th>weight</th><th>decision</th><th>canary</th><th>stable</th><th>reasons</th></tr></thead><tbody>
    ${steps.map((s) => `<tr><td>${s.weight} %</td><td>${badge(s.verdict)}</td><td>${side(s.canary)}</td><td>${side(s.stable)}</td>
      <td>${(s.reasons || []).map(esc).join("; ") || "within the SLO"}</td></tr>`).join("")}</tbody></table>`;
}

async function refreshRoutes() {
  const [routes, endpoints] = await Promise.all([api("GET", "/api/routes"), api("GET", "/api/endpoints")]);
  const names = Object.fromEntries(endpoints.map((e) => [e.id, e.name]));
  $("#route-cards").innerHTML = routes.map((r) => {
    const s = r.shift;
    const revertible = s && s.status !== "RUNNING" && s.original && Object.keys(s.original).length
      && JSON.stringify(Object.fromEntries(r.backends.map((b) => [b.endpoint_id, b.weight]))) !== JSON.stringify(s.original);
    return `<div class="card route" data-route="${esc(r.name)}"><h3>${esc(r.name)} <small>updated ${when(r.updated_at)}</small></h3>
      <div class="weights">${r.backends.map((b) => `<div class="weight"><span>${esc(b.endpoint_name || `${b.provider_name}/${b.model}`)} ${b.status ? badge(b.status) : ""}</span>
        <div class="bar"><div style="width:${b.weight}%"></div></div><b>${b.weight} %</b></div>`).join("")}</div>
      ${r.fallbacks.length ? `<p><small>fallbacks: ${r.fallbacks.map((f) => esc(f.endpoint_name || `${f.provider_name}/${f.model}`)).join(" → ")}</small></p>` : ""}
      ${s ? `<div class="shift"><p>Shift to <b>${esc(s.to_endpoint || names[s.to_endpoint_id] || s.to_endpoint_id)}</b> (${esc(s.strategy)}): ${badge(s.status)}
          <span class="step">${esc(s.step || "")}</span> ${s.reason ? `<span class="${s.status === "COMPLETED" ? "" : "alert"}">${esc(s.reason)}</span>` : ""} ${workflowLink(s.workflow_id, "shift workflow")}</p>
        ${stepRows(s.steps)}</div>` : "<p><small>No shift yet.</small></p>"}
      <div class="actions">
        ${s?.status === "RUNNING" ? `<button data-action="abort" data-route="${esc(r.name)}" class="danger">Abort shift</button>` : ""}
        ${revertible ? `<button data-action="revert" data-route="${esc(r.name)}">Revert to the weights before the shift</button>` : ""}
      </div></div>`;
  }).join("") || "<p>No route yet: create one below from a RUNNING endpoint (each endpoint also serves under its own name).</p>";
}

// ---------------------------------------------------------------------------------------------------- usage
function renderUsageView() {
  $("#usage").innerHTML = `<h2>Usage and cost</h2>
    <p>Window: <select data-action="usage-hours">${[[1, "last hour"], [24, "last 24 hours"], [168, "last 7 days"], [720, "last 30 days"]]
      .map(([h, t]) => `<option value="${h}" ${h === state.usageHours ? "selected" : ""}>${t}</option>`).join("")}</select>
      <small>requests through the gateway; endpoint cost is their GPU time, provider cost their token prices</small></p>
    <div id="usage-tables"></div>`;
}

function usageTable(report, title) {
  const max = Math.max(...report.groups.map((g) => g.cost_usd), 0) || 1;
  const row = (g, name) => `<tr><td>${esc(name)}</td><td>${g.requests.toLocaleString()}</td><td>${g.errors.toLocaleString()}</td>
    <td>${g.prompt_tokens.toLocaleString()}</td><td>${g.completion_tokens.toLocaleString()}</td>
    <td>${usd(g.cost_usd)}${g.group !== undefined ? `<div class="bar small"><div style="width:${(100 * g.cost_usd) / max}%"></div></div>` : ""}</td>
    <td>${g.realized_usd_per_mtok === null ? "—" : usd(g.realized_usd_per_mtok)}</td></tr>`;
  return `<h4>${esc(title)}</h4><table class="list usage"><thead><tr><th>${esc(report.group_by)}</th><th>requests</th><th>errors</th>
    <th>prompt tokens</th><th>completion tokens</th><th>cost</th><th>$ per M tokens</th></tr></thead><tbody>
    ${report.groups.map((g) => row(g, g.name && g.name !== g.group ? `${g.name}` : g.group || "(no key)")).join("") || '<tr><td colspan="7">No request in this window.</td></tr>'}
    </tbody><tfoot>${row(report.totals, "total")}</tfoot></table>
    ${report.unattributed_gpu_usd ? `<p><small>${usd(report.unattributed_gpu_usd)} of GPU time no request used (idle replicas).</small></p>` : ""}`;
}

async function refreshUsage() {
  const from = new Date(Date.now() - state.usageHours * 3600_000).toISOString();
  const [byProject, byRoute] = await Promise.all([
    api("GET", `/api/usage?group_by=project&from=${encodeURIComponent(from)}`),
    api("GET", `/api/usage?group_by=route&from=${encodeURIComponent(from)}`)]);
  $("#usage-tables").innerHTML = usageTable(byProject, "Per project") + usageTable(byRoute, "Per route");
}

// ---------------------------------------------------------------------------------------------------- actions
async function withEndpoint(fn) { const id = state.endpointId; await fn(id); await openEndpoint(id); }

const actions = {
  model: async (el) => { state.modelId = el.dataset.id; await refreshModels(); $("#model-detail").scrollIntoView({ block: "nearest" }); },
  endpoint: async (el) => { await openEndpoint(el.dataset.id); },
  deploy: () => withEndpoint(async (id) => { await api("POST", `/api/endpoints/${id}/deploy`, {}); say("Deploying: the steps show below as they happen.", "info"); }),
  observe: () => withEndpoint(async (id) => { await api("POST", `/api/endpoints/${id}/metrics/refresh`); say("Observing: the observation shows in a few seconds.", "info"); }),
  delete: async (el) => { el.dataset.action = "delete-confirm"; el.textContent = "Really delete? Click again"; },
  "delete-confirm": async () => {
    await api("DELETE", `/api/endpoints/${state.endpointId}`);
    say("Deleting: the replicas stop, then the endpoint leaves the list.", "info");
    await refreshEndpoints();
  },
  benchmark: () => withEndpoint(async (id) => {
    await api("POST", `/api/endpoints/${id}/benchmark`, { input_tokens: 256, output_tokens: 64, concurrency: [1, 4, 8] });
    say("Benchmark started.", "info");
  }),
  "accept-advice": () => withEndpoint(async (id) => {
    const e = await api("GET", `/api/endpoints/${id}`);
    const c = e.monitoring.recommendation.config;
    await api("PUT", `/api/endpoints/${id}/config`, {
      runtime: e.deployment.runtime, optimization_method: "MANUAL", replicas: c.replicas,
      config: { tensor_parallel_size: c.tensor_parallel_size, pipeline_parallel_size: c.pipeline_parallel_size,
        max_model_len: c.max_model_len, max_num_seqs: c.max_num_seqs, gpu_memory_utilization: c.gpu_memory_utilization },
    });
    say("The advised configuration is saved: Deploy applies it.", "info");
  }),
  abort: async (el) => { await api("POST", `/api/routes/${encodeURIComponent(el.dataset.route)}/shift/abort`, { reason: "aborted from the dashboard" }); say("Abort sent: the weights go back to where they were.", "info"); await refreshRoutes(); },
  revert: async (el) => {
    const route = await api("GET", `/api/routes/${encodeURIComponent(el.dataset.route)}`);
    const backends = Object.entries(route.shift.original).filter(([, w]) => w > 0).map(([endpoint_id, weight]) => ({ endpoint_id, weight }));
    await api("PUT", `/api/routes/${encodeURIComponent(route.name)}`, { backends });
    say(`Route ${route.name} is back on its weights from before the shift.`, "info");
    await renderRouteForms(); await refreshRoutes();
  },
};

const changes = {
  minutes: async (el) => { state.minutes = Number(el.value); state.lastSeriesAt = 0; await refreshEndpoint(); },
  "usage-hours": async (el) => { state.usageHours = Number(el.value); await refreshUsage(); },
  "pick-route": async (el) => { state.routeName = el.value; await renderRouteForms(); },
};

function targetsOf(v) {
  const targets = {};
  for (const key of ["max_latency_ms", "max_ttft_ms", "min_throughput_tps", "max_cost_per_hour"]) {
    if (v[key] !== "") targets[key] = Number(v[key]);
  }
  return targets;
}

const forms = {
  "model-filters": async () => { await refreshModels(); },
  "create-endpoint": async (form) => {
    const v = formValues(form);
    const created = await api("POST", "/api/endpoints", { name: v.name, project_id: state.projectId, model_id: v.model_id, cluster_id: v.cluster_id });
    say(`Endpoint ${created.name} created: configure it, then deploy.`, "info");
    form.reset();
    await openEndpoint(created.id);
  },
  configure: (form) => withEndpoint(async (id) => {
    const v = formValues(form);
    const body = v.mode === "MANUAL"
      ? { runtime: v.runtime, optimization_method: "MANUAL", replicas: Number(v.replicas), config: {
          tensor_parallel_size: Number(v.tensor_parallel_size), pipeline_parallel_size: Number(v.pipeline_parallel_size),
          max_model_len: numberOrNull(v.max_model_len), max_num_seqs: Number(v.max_num_seqs), gpu_memory_utilization: Number(v.gpu_memory_utilization) } }
      : { runtime: v.runtime, optimization_method: v.method, performance_targets: targetsOf(v),
          workload: { input_tokens: Number(v.input_tokens), output_tokens: Number(v.output_tokens), concurrency: Number(v.concurrency) } };
    await api("PUT", `/api/endpoints/${id}/config`, body);
    say(v.mode === "MANUAL" ? "Manual configuration saved: it is checked and predicted." : "The optimizer is choosing a configuration for these targets.", "info");
  }),
  scale: (form) => withEndpoint(async (id) => {
    await api("POST", `/api/endpoints/${id}/scale`, { replicas: Number(formValues(form).replicas) });
    say("Scaling.", "info");
  }),
  autoscale: (form) => withEndpoint(async (id) => {
    const v = formValues(form);
    await api("PUT", `/api/endpoints/${id}/autoscaling`, {
      enabled: form.querySelector('[name="enabled"]').checked, min_replicas: Number(v.min_replicas), max_replicas: Number(v.max_replicas),
      metrics: [{ type: "External", external: { metric: { name: "inference_queue_depth" }, target: { type: "Value", value: Number(v.queue_target) } } }],
    });
    say("Autoscaling applied.", "info");
  }),
  weights: async (form) => {
    const v = formValues(form);
    const backends = Object.entries(v).filter(([k, w]) => k.startsWith("w-") && Number(w) > 0)
      .map(([k, w]) => ({ endpoint_id: k.slice(2), weight: Number(w) }));
    await api("PUT", `/api/routes/${encodeURIComponent(v.route)}`, { backends });
    say(`Route ${v.route} set.`, "info");
    await refreshRoutes();
  },
  shift: async (form) => {
    const v = formValues(form);
    const steps = v.steps.split(",").map((s) => Number(s.trim())).filter((s) => s);
    await api("POST", `/api/routes/${encodeURIComponent(state.routeName)}/shift`, {
      to_endpoint_id: v.to_endpoint_id, strategy: v.strategy, step_interval_s: Number(v.step_interval_s), drain_s: Number(v.drain_s),
      ...(v.strategy === "gradual" ? { steps } : {}),
      slo: { min_requests: Number(v.min_requests), traffic_wait_s: Number(v.traffic_wait_s) },
    });
    say(`Shift of ${state.routeName} started.`, "info");
    await refreshRoutes();
  },
  "new-route": async (form) => {
    const v = formValues(form);
    await api("PUT", `/api/routes/${encodeURIComponent(v.name)}`, { backends: [{ endpoint_id: v.endpoint_id, weight: 100 }] });
    state.routeName = v.name;
    say(`Route ${v.name} created.`, "info");
    await renderRouteForms(); await refreshRoutes();
  },
};

const guarded = (fn) => async (...args) => { try { await fn(...args); } catch (error) { say(error.message); if (error.status === 401) signOut(); } };

document.addEventListener("click", (event) => {
  const el = event.target.closest("[data-action]");
  if (!el || el.tagName === "SELECT" || !actions[el.dataset.action]) return;
  if (el.tagName === "A") return;
  event.preventDefault();
  say("");
  guarded(actions[el.dataset.action])(el);
});
document.addEventListener("change", (event) => {
  const el = event.target;
  if (el.name === "mode") syncConfigureMode();
  if (el.dataset?.action && changes[el.dataset.action]) guarded(changes[el.dataset.action])(el);
});
document.addEventListener("submit", (event) => {
  const form = event.target.closest("[data-form]");
  if (!form || !forms[form.dataset.form]) return;
  event.preventDefault();
  say("");
  guarded(forms[form.dataset.form])(form);
});

// Pareto hover: the point's configuration, predictions and cost beside the cursor and under the plot.
document.addEventListener("mouseover", (event) => {
  const point = event.target.closest?.("g.point");
  const tip = $("#tooltip");
  if (!point || !state.paretoPoints) { tip.hidden = true; return; }
  const details = state.paretoPoints[Number(point.dataset.index)].details;
  tip.textContent = details;
  tip.hidden = false;
  tip.style.left = `${event.pageX + 14}px`;
  tip.style.top = `${event.pageY + 14}px`;
  const detail = $("#pareto-detail");
  if (detail) detail.textContent = details.replaceAll("\n", "; ");
});

// ---------------------------------------------------------------------------------------------------- shell
const views = {
  models: { render: renderModelsView, refresh: refreshModels },
  endpoints: { render: renderEndpointsView, refresh: refreshEndpoints },
  routes: { render: renderRoutesView, refresh: refreshRoutes },
  usage: { render: renderUsageView, refresh: refreshUsage },
};

async function show(tab) {
  state.tab = views[tab] ? tab : "endpoints";
  localStorage.setItem("bud-tab", state.tab);
  for (const button of $$("#tabs button")) button.classList.toggle("active", button.dataset.tab === state.tab);
  $("#welcome").hidden = Boolean(state.token);
  for (const name of Object.keys(views)) $(`#${name}`).hidden = !state.token || name !== state.tab;
  if (!state.token) return;
  say("");
  $(`#${state.tab}`).innerHTML = '<p class="loading">Loading…</p>';  // no stale form from the last visit meanwhile
  await views[state.tab].render();
  await views[state.tab].refresh();
}

function signOut() {
  state.token = "";
  localStorage.removeItem("bud-token");
  $("#signin").hidden = false;
  $("#session").hidden = true;
  show(state.tab);
}

async function signedIn() {
  const projects = await api("GET", "/api/projects");
  state.projectId = projects[0]?.id || null;
  $("#who").textContent = `project ${projects[0]?.name || "?"}`;
  $("#signin").hidden = true;
  $("#session").hidden = false;
}

async function signInWithToken(token) {
  state.token = token;
  try {
    await signedIn();
  } catch (error) {
    state.token = "";
    throw error.status === 401 ? new Error("This token is not valid (revoked, expired or mistyped).") : error;
  }
  localStorage.setItem("bud-token", token);
}

// A one-time link from `bud dev up`: /ui/login?code=... is traded once for a token, then leaves the address bar.
async function redeemLink() {
  const code = new URLSearchParams(location.search).get("code");
  if (location.pathname !== "/ui/login" || !code) return;
  history.replaceState(null, "", "/ui");
  const response = await fetch("/ui/login", { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ code }) });
  const payload = await response.json().catch(() => null);
  if (!response.ok) throw new Error(payload?.error?.message || `sign-in link refused: HTTP ${response.status}`);
  await signInWithToken(payload.token);
  say(`Signed in with the link; this session's token is valid until ${when(payload.expires_at)}.`, "info");
}

async function start() {
  const config = await (await fetch("/ui/config.json")).json();
  state.temporalUi = config.temporal_ui_url;
  state.namespace = config.temporal_namespace || "default";
  for (const button of $$("#tabs button")) button.onclick = guarded(() => show(button.dataset.tab));
  $("#signout").onclick = signOut;
  $("#signin").onsubmit = guarded(async (event) => {
    event.preventDefault();
    await signInWithToken($("#token").value.trim());
    $("#token").value = "";
    await show(state.tab);
  });
  try {
    await redeemLink();
    if (state.token && !state.projectId) await signInWithToken(state.token);
  } catch (error) {
    say(error.message);
    if (!state.projectId) { state.token = ""; localStorage.removeItem("bud-token"); }
  }
  await guarded(show)(state.tab);
  let polling = false;
  setInterval(async () => {
    if (!state.token || polling || document.hidden) return;
    polling = true;
    try { await views[state.tab].refresh(); } catch (error) { say(error.message); } finally { polling = false; }
  }, POLL_MS);
}

start();
