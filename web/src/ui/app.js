// Amdahl's web UI: hash routes over the REST API, live through the event stream.
// Everything shown is set as text (never as HTML), so names from DAG files cannot inject
// markup. The token lives in this tab's session storage and goes out as a Bearer header.
"use strict";

const main = () => document.getElementById("main");
const token = () => sessionStorage.getItem("amdahl-token");
let live = null; // the AbortController of the current page's event stream

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") node.className = v;
    // Through the CSSOM: the page's content security policy refuses inline style attributes.
    else if (k === "style") node.style.cssText = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v);
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined) continue;
    node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return node;
}

function svg(tag, attrs, ...children) {
  const node = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
  for (const c of children.flat()) node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return node;
}

async function api(path, options = {}) {
  const headers = { Authorization: `Bearer ${token()}` };
  if (options.body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(path, { ...options, headers });
  const body = await response.json().catch(() => ({}));
  if (!response.ok) {
    const error = new Error(body.error || `${response.status}`);
    error.status = response.status;
    if (response.status === 401) sessionStorage.removeItem("amdahl-token");
    throw error;
  }
  return body;
}

/// Calls `onEvent(name, data)` for each server-sent event of `path` until the page changes.
async function stream(path, onEvent) {
  if (live) live.abort();
  live = new AbortController();
  const signal = live.signal;
  try {
    const response = await fetch(path, { headers: { Authorization: `Bearer ${token()}` }, signal });
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true });
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        const block = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        let name = "message";
        const data = [];
        for (const line of block.split("\n")) {
          if (line.startsWith("event:")) name = line.slice(6).trim();
          else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
        }
        if (data.length) { const raw = data.join("\n"); onEvent(name, JSON.parse(raw), raw); }
      }
    }
  } catch (e) {
    if (!signal.aborted) console.warn("event stream ended", e);
  }
}

const state = (s) => el("span", { class: `state ${s}` }, s);
const device = (d) => (d ? el("span", { class: `device ${d}` }, d) : "–");
// SQL with its keywords, strings and comments marked (for the task page's rendered query).
const SQL_WORDS = /(--[^\n]*)|('(?:[^']|'')*')|\b(SELECT|FROM|WHERE|GROUP|BY|ORDER|HAVING|JOIN|LEFT|RIGHT|FULL|INNER|OUTER|CROSS|ON|AS|AND|OR|NOT|IN|IS|NULL|CASE|WHEN|THEN|ELSE|END|WITH|UNION|ALL|DISTINCT|LIMIT|OFFSET|BETWEEN|LIKE|EXISTS|CAST|INTERVAL|DATE|ASC|DESC|OVER|PARTITION|VALUES|TRUE|FALSE)\b/gi;
function sql(text) {
  const parts = [];
  let last = 0;
  for (const m of text.matchAll(SQL_WORDS)) {
    parts.push(text.slice(last, m.index));
    const cls = m[1] ? "comment" : m[2] ? "string" : "keyword";
    parts.push(el("span", { class: cls }, m[0]));
    last = m.index + m[0].length;
  }
  parts.push(text.slice(last));
  return parts;
}
// What an attempt ran after templating, and the plan of a query (collapsed).
function ran(attempt) {
  if (!attempt || !attempt.rendered) return [];
  const query = attempt.plan !== null && attempt.plan !== undefined;
  return [el("h2", {}, `What attempt ${attempt.attempt} ran`),
    el("pre", { id: "rendered", class: query ? "rendered sql" : "rendered" }, query ? sql(attempt.rendered) : attempt.rendered),
    query ? el("details", { id: "plan" }, el("summary", {}, "Physical plan"), el("pre", {}, attempt.plan)) : null];
}
// The first rows of a task's output: its columns with their types, and how many rows in all.
function outputPreview(preview) {
  if (!preview) return [];
  if (preview.error) return [el("h2", {}, "Output"), el("p", { id: "preview-error" }, preview.error)];
  return [el("h2", {}, "Output"),
    el("p", { id: "preview-size" }, `first ${preview.rows.length} of ${preview.total_rows} rows` +
      (preview.bytes !== null ? `, ${preview.bytes} bytes in all` : "")),
    el("div", { class: "scroll" }, el("table", { id: "preview" },
      el("tr", {}, preview.columns.map((c) => el("th", { title: c.type }, c.name, el("span", { class: "type" }, ` ${c.type}`)))),
      preview.rows.map((row) => el("tr", {}, row.map((cell) => el("td", {}, cell))))))];
}
// A moment (ms since the epoch, or RFC 3339 text) in the browser's zone, with UTC on hover.
function at(value) {
  const ms = typeof value === "number" ? value : Date.parse(value);
  if (!value || Number.isNaN(ms)) return value || "–";
  const iso = new Date(ms).toISOString();
  return el("time", { datetime: iso, title: iso.replace("T", " ").replace(/\.\d+Z$/, " UTC") },
    new Date(ms).toLocaleString());
}
function duration(from, to) {
  if (!from) return "–";
  const ms = (to || Date.now()) - from;
  return ms < 1000 ? `${ms} ms` : ms < 60000 ? `${(ms / 1000).toFixed(1)} s` : `${(ms / 60000).toFixed(1)} min`;
}
const micros = (us) => (us === null || us === undefined ? "–" : us < 1000 ? `${us} µs` : us < 1e6 ? `${(us / 1000).toFixed(1)} ms` : `${(us / 1e6).toFixed(2)} s`);

function show(...nodes) {
  main().replaceChildren(...nodes.filter((n) => n !== null && n !== undefined));
}

function failure(e) {
  show(el("p", { class: "error" }, e.message));
}

function login(why) {
  const input = el("input", { type: "password", id: "token", placeholder: "amd_…", autocomplete: "off" });
  const message = el("p", { class: "error", id: "login-error" }, why || "");
  const form = el("form", { class: "login", id: "login" },
    el("h1", {}, "Log in"),
    el("p", {}, "Paste an API token (", el("code", {}, "amdahl tokens create --role viewer"), ")."),
    input, el("p", {}, el("button", { type: "submit" }, "Log in")), message);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    sessionStorage.setItem("amdahl-token", input.value.trim());
    try {
      await api("/api/v1/me");
      location.hash = "#/";
      route();
    } catch (e) {
      message.textContent = e.message;
    }
  });
  show(form);
}

/// A red banner per DAG file that stopped validating, with its first problem located and
/// every problem behind a click.
function importErrors(errors) {
  if (!errors.length) return null;
  return el("div", { id: "import-errors" }, errors.map((e) => el("div", { class: "banner error", "data-path": e.path },
    el("strong", {}, `${e.path}:${e.line}:${e.column}`), `: ${e.message}`,
    e.problems > 1 ? ` (and ${e.problems - 1} more)` : "",
    e.dag_id ? el("span", { class: "note" }, ` · DAG ${e.dag_id} keeps its last good version`) : "",
    el("details", {}, el("summary", {}, "every problem"), el("pre", {}, e.details)))));
}

// A schedule with its zone when the DAG is not on UTC: `0 6 * * * (Europe/Paris)`.
function scheduleText(d) {
  return d.timezone && d.timezone !== "UTC" ? `${d.schedule} (${d.timezone})` : d.schedule;
}

async function dagsPage() {
  const [dags, me, errors] = await Promise.all([api("/api/v1/dags"), api("/api/v1/me"), api("/api/v1/import-errors")]);
  const admin = me.role === "admin";
  const rows = dags.map((d) => el("tr", { "data-dag": d.dag_id },
    el("td", {}, el("a", { href: `#/dags/${encodeURIComponent(d.dag_id)}` }, d.dag_id)),
    el("td", { class: "recent" }, d.recent_run_states.length
      ? d.recent_run_states.slice().reverse().map((s) => el("span", { class: `dot ${s}`, title: s })) : "–"),
    el("td", {}, d.runs),
    el("td", {}, d.schedule ? scheduleText(d) : (d.waits_on || "–")),
    el("td", { class: "next-run" }, at(d.next_run_at_ms)),
    el("td", {}, d.paused ? "paused" : "active",
      admin ? el("button", { class: "pause", onclick: async () => {
        await api(`/api/v1/dags/${encodeURIComponent(d.dag_id)}/${d.paused ? "unpause" : "pause"}`, { method: "POST" });
        route();
      } }, d.paused ? "Unpause" : "Pause") : null),
    el("td", {}, admin ? el("button", { class: "trigger", onclick: () => { location.hash = `#/dags/${encodeURIComponent(d.dag_id)}`; } }, "Trigger…") : null)));
  show(el("h1", {}, "DAGs"), importErrors(errors),
    dags.length ? el("table", { id: "dags" }, el("tr", {}, ["DAG", "Recent runs (newest right)", "Runs", "Schedule", "Next run", "", ""].map((h) => el("th", {}, h))), rows)
      : el("p", {}, "No DAGs yet: put DAG files in the DAG folder the scheduler reads, or run one with `amdahl run`."));
}

function layers(tasks) {
  const depth = {};
  for (const t of tasks) depth[t.task_id] = Math.max(0, ...t.needs.map((n) => (depth[n] ?? 0) + 1));
  return depth;
}

const BIG_GRAPH = 300;

/// A DAG too large to draw node by node: each layer (tasks at the same depth) is a column of
/// small squares coloured by state, wrapping into several columns when tall, with the edges
/// as faint lines under them. Hover names a task; in a run, a click opens it.
function bigGraph(tasks, states, runId) {
  const depth = layers(tasks);
  const columns = {};
  for (const t of tasks) (columns[depth[t.task_id]] ||= []).push(t.task_id);
  const cell = 8, perColumn = 120, gap = 14;
  const at = [];
  let x = 0;
  for (const d of Object.keys(columns).map(Number).sort((a, b) => a - b)) {
    const ids = columns[d];
    ids.forEach((id, i) => at.push([id, x + Math.floor(i / perColumn) * cell, (i % perColumn) * cell]));
    x += Math.ceil(ids.length / perColumn) * cell + gap;
  }
  const height = Math.min(tasks.length, perColumn) * cell;
  const canvas = el("canvas", { id: "graph-canvas", width: Math.min(x, 30000), height });
  const ctx = canvas.getContext("2d");
  // Edges first, faint, in one path: a 10,000-task DAG's edges draw in a few milliseconds.
  const place = new Map(at.map(([id, px, py]) => [id, [px + cell / 2, py + cell / 2]]));
  ctx.beginPath();
  for (const t of tasks) for (const n of t.needs) {
    const [x1, y1] = place.get(n), [x2, y2] = place.get(t.task_id);
    ctx.moveTo(x1, y1); ctx.lineTo(x2, y2);
  }
  ctx.strokeStyle = "rgba(110, 119, 129, 0.25)"; ctx.lineWidth = 0.5; ctx.stroke();
  const colour = { success: "#2e8540", failed: "#c0392b", upstream_failed: "#e8a09a", running: "#1f6feb", queued: "#b08800" };
  for (const [id, px, py] of at) {
    ctx.fillStyle = colour[(states[id] || {}).state] || "#8a939e";
    ctx.fillRect(px + 1, py + 1, cell - 2, cell - 2);
  }
  const hover = el("p", { class: "note" }, `${tasks.length} tasks in ${Object.keys(columns).length} layers`);
  const hit = (event) => {
    const box = canvas.getBoundingClientRect();
    const mx = event.clientX - box.left, my = event.clientY - box.top;
    return at.find(([, px, py]) => mx >= px && mx < px + cell && my >= py && my < py + cell);
  };
  canvas.addEventListener("mousemove", (event) => {
    const found = hit(event);
    if (found) hover.textContent = `${found[0]}: ${(states[found[0]] || {}).state || "task"}`;
  });
  canvas.addEventListener("click", (event) => {
    const found = hit(event);
    if (found && runId) location.hash = `#/runs/${runId}/tasks/${encodeURIComponent(found[0])}`;
  });
  return el("div", { class: "scroll" }, canvas, hover);
}

/// A mapped instance's value as a person reads it: a string bare, anything else as JSON.
function mapLabel(value) { return typeof value === "string" ? value : JSON.stringify(value); }

const INSTANCE = /^(.*)\[(\d+)\]$/;
const SUMMED = ["failed", "upstream_failed", "running", "queued", "up_for_retry", "scheduled"];

/// A run's tasks with each mapped task's instances (`task[3]`) folded into the task: one
/// node whose state sums theirs up (the first of SUMMED one has) and says how many there are.
function foldMapped(tasks) {
  const instances = {};
  for (const t of tasks) {
    const m = INSTANCE.exec(t.task_id);
    if (m && t.map_index !== null && t.map_index !== undefined) (instances[m[1]] ||= []).push(t);
  }
  const base = (id) => { const m = INSTANCE.exec(id); return m && instances[m[1]] ? m[1] : id; };
  const shape = [], states = {};
  for (const t of tasks) {
    if (base(t.task_id) !== t.task_id) continue;
    shape.push({ task_id: t.task_id, kind: t.kind, needs: [...new Set(t.needs.map(base))] });
    const mine = instances[t.task_id];
    states[t.task_id] = mine
      ? { ...t, state: SUMMED.find((s) => mine.some((i) => i.state === s)) || t.state, mapped: mine.length } : t;
  }
  return { shape, states };
}

/// The DAG as a layered graph: columns by depth, one node per task, edges from needs.
function graph(tasks, states, runId) {
  if (tasks.length > BIG_GRAPH) return bigGraph(tasks, states, runId);
  const depth = layers(tasks);
  const columns = {};
  for (const t of tasks) (columns[depth[t.task_id]] ||= []).push(t.task_id);
  const at = {};
  const w = 170, h = 44, gap = 16;
  let rows = 0;
  for (const [d, ids] of Object.entries(columns)) ids.forEach((id, i) => { at[id] = [d * (w + 50) + 10, i * (h + gap) + 10]; rows = Math.max(rows, i + 1); });
  const width = (Object.keys(columns).length) * (w + 50) + 20;
  const root = svg("svg", { width, height: rows * (h + gap) + 20, id: "graph" });
  for (const t of tasks) for (const n of t.needs) {
    const [x1, y1] = at[n], [x2, y2] = at[t.task_id];
    root.append(svg("line", { x1: x1 + w, y1: y1 + h / 2, x2, y2: y2 + h / 2, stroke: "#8a939e" }));
  }
  const colour = { success: "#2e8540", failed: "#c0392b", upstream_failed: "#c0392b", running: "#1f6feb", queued: "#b08800", scheduled: "#c9ced6" };
  for (const t of tasks) {
    const [x, y] = at[t.task_id];
    const s = states[t.task_id] || {};
    root.append(svg("g", { "data-task": t.task_id },
      svg("rect", { x, y, width: w, height: h, rx: 5, fill: "#fff", stroke: colour[s.state] || "#8a939e", "stroke-width": 3 }),
      svg("text", { x: x + 8, y: y + 17 }, s.mapped ? `${t.task_id} ×${s.mapped}` : t.task_id),
      svg("text", { x: x + 8, y: y + 34 }, `${s.state || t.kind}${s.device ? " · " + s.device : ""}`)));
  }
  return root;
}

const CELL = 14;
const STATE_COLOUR = { success: "#2e8540", failed: "#c0392b", upstream_failed: "#e8a09a", running: "#1f6feb", queued: "#b08800",
  scheduled: "#d0d7de", up_for_retry: "#e3b341", cancelled: "#6e7781", skipped: "#afb8c1", timed_out: "#c0392b", lost: "#6e7781" };

/// Runs × tasks on a canvas (one draw, however many cells): the server pages both the runs
/// and the tasks across; clicking a cell opens that task of that run.
function gridView(dagId, grid, onPage) {
  if (!grid.runs.length) return el("p", { id: "grid" }, "No runs yet.");
  const tasks = grid.tasks;
  const labelWidth = 90;
  const canvas = el("canvas", { id: "grid-canvas", width: labelWidth + tasks.length * CELL, height: grid.runs.length * CELL + 2 });
  const ctx = canvas.getContext("2d");
  ctx.font = "11px system-ui";
  grid.runs.forEach((run, r) => {
    ctx.fillStyle = "#1b1f24";
    ctx.fillText(`run ${run.run_id}`, 2, r * CELL + 11);
    for (let c = 0; c < tasks.length; c++) {
      const cell = run.cells[c];
      ctx.fillStyle = cell ? STATE_COLOUR[cell.state] || "#8a939e" : "#ffffff";
      ctx.fillRect(labelWidth + c * CELL + 1, r * CELL + 1, CELL - 2, CELL - 2);
      // A mapped task's cell is striped: several instances live in it.
      if (cell && cell.instances) { ctx.fillStyle = "#ffffff"; ctx.fillRect(labelWidth + c * CELL + 2, r * CELL + 6, CELL - 4, 2); }
      if (cell && cell.device === "gpu") { ctx.fillStyle = "#ffffff"; ctx.fillRect(labelWidth + c * CELL + 5, r * CELL + 5, 4, 4); }
    }
  });
  const hover = el("p", { class: "note", id: "grid-hover" }, "Hover a cell; click to open it.");
  const at = (event) => {
    const box = canvas.getBoundingClientRect();
    const c = Math.floor((event.clientX - box.left - labelWidth) / CELL), r = Math.floor((event.clientY - box.top) / CELL);
    const run = grid.runs[r];
    if (!run || c < 0 || c >= tasks.length) return null;
    return { run, task: tasks[c], cell: run.cells[c] };
  };
  canvas.addEventListener("mousemove", (event) => {
    const hit = at(event);
    const instances = (cell) => cell.instances
      ? ` · ${Object.values(cell.instances).reduce((a, b) => a + b, 0)} instances: ` +
        Object.entries(cell.instances).map(([s, n]) => `${n} ${s}`).join(", ") : "";
    hover.textContent = hit ? `run ${hit.run.run_id} · ${hit.task}: ${hit.cell ? hit.cell.state + (hit.cell.device ? " on " + hit.cell.device : "") + instances(hit.cell) : "not in this run"}` : "";
  });
  canvas.addEventListener("click", (event) => {
    const hit = at(event);
    if (hit && hit.cell) location.hash = `#/runs/${hit.run.run_id}/tasks/${encodeURIComponent(hit.task)}`;
  });
  const from = grid.tasks_from, shown = Math.min(grid.task_count, from + tasks.length);
  const pager = el("p", {},
    from > 0 ? el("button", { id: "grid-left", onclick: () => onPage(grid.before, Math.max(0, from - tasks.length)) }, "← earlier tasks") : null,
    grid.next_tasks_from ? el("button", { id: "grid-right", onclick: () => onPage(grid.before, grid.next_tasks_from) }, "later tasks →") : null,
    grid.before ? el("button", { id: "grid-newer", onclick: () => onPage(null, from) }, "newest runs") : null,
    grid.next_before ? el("button", { id: "grid-older", onclick: () => onPage(grid.next_before, from) }, "older runs") : null,
    el("span", { id: "grid-columns" }, grid.task_count > tasks.length ? ` tasks ${from + 1}–${shown} of ${grid.task_count}` : ` ${grid.task_count} task(s)`));
  return el("div", { id: "grid" }, el("div", { class: "scroll" }, canvas), hover, pager);
}

async function dagPage(dagId, search) {
  const dagPath = `/api/v1/dags/${encodeURIComponent(dagId)}`;
  const [detail, me, versions] = await Promise.all([api(dagPath), api("/api/v1/me"), api(`${dagPath}/versions`)]);
  const form = paramsForm(detail.params, detail.param_specs || {});
  const message = el("p", { class: "error", id: "trigger-error" });
  const trigger = me.role === "admin" ? el("div", {},
    el("h2", {}, "Trigger a run"), form.fields,
    el("p", {}, el("button", { id: "trigger", onclick: async () => {
      try {
        message.textContent = "";
        const body = { params: form.values() };
        const made = await api(`/api/v1/dags/${encodeURIComponent(dagId)}/runs`, { method: "POST", body: JSON.stringify(body) });
        location.hash = `#/runs/${made.run_id}`;
      } catch (e) { message.textContent = e.message; }
    } }, "Trigger")), message) : null;
  const gridBox = el("div", {});
  const page = async (before, tasksFrom) => {
    const query = new URLSearchParams({ tasks_from: tasksFrom });
    if (before) query.set("before", before);
    const grid = await api(`/api/v1/dags/${encodeURIComponent(dagId)}/grid?${query}`);
    grid.before = before;
    gridBox.replaceChildren(gridView(dagId, grid, (b, c) => page(b, c).catch(failure)));
  };
  await page(null, 0);
  show(el("h1", {}, `DAG ${detail.dag.dag_id}`),
    el("p", { class: "note" }, detail.description || "", detail.schedule ? ` · schedule ${scheduleText(detail.dag)}` : "", detail.dag.waits_on ? ` · runs ${detail.dag.waits_on}` : "", detail.dag.paused ? " · paused" : ""),
    el("h2", {}, "Runs × tasks"), gridBox,
    el("h2", {}, "Graph"), graph(detail.tasks, {}),
    trigger,
    el("h2", {}, "Latest runs"), runsTable(detail.runs),
    await sourceView(dagPath, versions, Number(search.get("version")) || versions[0].version_id));
}

// The trigger form: one field per param, by what it declares (or its default's type): a
// select for choices, a number field with its bounds, a checkbox, a text field, JSON for lists
// and objects. The server checks the same rules and names the field it refuses.
function paramsForm(defaults, specs) {
  const names = Object.keys(defaults);
  const kindOf = (name) => {
    const declared = specs[name] && specs[name].type;
    if (declared) return declared;
    const v = defaults[name];
    if (Array.isArray(v)) return "array";
    if (v === null) return "string";
    return typeof v === "object" ? "object" : typeof v;
  };
  const inputs = {};
  const rows = names.map((name) => {
    const spec = specs[name] || {};
    const kind = kindOf(name);
    const v = defaults[name];
    const id = `param-${name}`;
    let input;
    if (spec.enum && spec.enum.length) {
      input = el("select", { id }, spec.enum.map((c) => el("option", { value: JSON.stringify(c), ...(JSON.stringify(c) === JSON.stringify(v) ? { selected: "" } : {}) }, String(c))));
    } else if (kind === "number" || kind === "integer") {
      input = el("input", { id, type: "number", step: kind === "integer" ? "1" : "any", value: v === null ? "" : v,
        ...(spec.minimum !== null && spec.minimum !== undefined ? { min: spec.minimum } : {}),
        ...(spec.maximum !== null && spec.maximum !== undefined ? { max: spec.maximum } : {}) });
    } else if (kind === "boolean") {
      input = el("input", { id, type: "checkbox", ...(v ? { checked: "" } : {}) });
    } else if (kind === "array" || kind === "object") {
      input = el("textarea", { id, rows: 2 }, JSON.stringify(v));
    } else {
      input = el("input", { id, type: "text", value: v === null ? "" : v });
    }
    inputs[name] = { input, kind, choices: !!(spec.enum && spec.enum.length) };
    const bounds = [spec.minimum !== null && spec.minimum !== undefined ? `≥ ${spec.minimum}` : "", spec.maximum !== null && spec.maximum !== undefined ? `≤ ${spec.maximum}` : ""].filter(Boolean).join(", ");
    return el("tr", {}, el("td", {}, el("label", { for: id }, name)), el("td", {}, input),
      el("td", { class: "note" }, [kind, bounds, spec.description || ""].filter(Boolean).join(" · ")));
  });
  const values = () => {
    const out = {};
    for (const [name, { input, kind, choices }] of Object.entries(inputs)) {
      if (choices) out[name] = JSON.parse(input.value);
      else if (kind === "boolean") out[name] = input.checked;
      else if (kind === "number" || kind === "integer") {
        if (input.value.trim() === "") continue;
        out[name] = Number(input.value);
      } else if (kind === "array" || kind === "object") {
        try { out[name] = JSON.parse(input.value); } catch { throw new Error(`param \`${name}\`: not valid JSON`); }
      } else out[name] = input.value;
    }
    return out;
  };
  const fields = names.length ? el("table", { id: "params" }, rows) : el("p", { class: "note" }, "This DAG declares no params.");
  return { fields, values };
}

// A DAG version's YAML, the recorded versions with the runs that used each, and a unified
// diff between any two (`from` and `to` picked in the table).
async function sourceView(dagPath, versions, shown) {
  const source = await api(`${dagPath}/versions/${shown}`);
  const diffBox = el("pre", { id: "diff", class: "diff", hidden: true });
  const pick = (name, id, checked) => el("input", { type: "radio", name, value: id, ...(checked ? { checked: "" } : {}) });
  const older = versions.length > 1 ? versions[1].version_id : versions[0].version_id;
  const compare = el("button", { id: "compare", onclick: async () => {
    const value = (name) => document.querySelector(`input[name=${name}]:checked`).value;
    const got = await api(`${dagPath}/diff?from=${value("from")}&to=${value("to")}`);
    diffBox.hidden = false;
    diffBox.replaceChildren(...(got.diff ? got.diff.split("\n").filter((l) => l !== "").map((l) =>
      el("span", { class: l.startsWith("@@") ? "hunk" : l.startsWith("+") ? "added" : l.startsWith("-") ? "removed" : "" }, `${l}\n`)) : ["the two versions are the same"]));
  } }, "Compare");
  return el("div", { id: "source-section" },
    el("h2", {}, `Source: version ${source.version_id}`),
    el("p", { class: "note" }, `${source.source_path} · sha256 ${source.hash.slice(0, 12)}`),
    el("pre", { id: "source", class: "yaml" }, yaml(source.yaml)),
    el("h2", {}, "Versions"),
    el("table", { id: "versions" }, el("tr", {}, ["Version", "Recorded", "Runs", "Latest run", "From", "To"].map((h) => el("th", {}, h))),
      versions.map((v) => el("tr", { "data-version": v.version_id },
        el("td", {}, el("a", { href: `#/dags/${encodeURIComponent(source.dag_id)}?version=${v.version_id}` }, v.version_id)),
        el("td", {}, at(v.recorded_at_ms)), el("td", {}, v.runs),
        el("td", {}, v.last_run_id ? el("a", { href: `#/runs/${v.last_run_id}` }, v.last_run_id) : "–"),
        el("td", {}, pick("from", v.version_id, v.version_id === older)),
        el("td", {}, pick("to", v.version_id, v.version_id === versions[0].version_id))))),
    el("p", {}, compare), diffBox);
}

// YAML with its comments and keys marked.
function yaml(text) {
  return text.split("\n").map((line) => {
    const comment = line.match(/^(\s*)(#.*)$/);
    if (comment) return [comment[1], el("span", { class: "comment" }, comment[2]), "\n"];
    const key = line.match(/^(\s*(?:- )?)([A-Za-z_][\w.-]*)(:)(.*)$/);
    if (key) return [key[1], el("span", { class: "key" }, key[2]), key[3], key[4], "\n"];
    return [line, "\n"];
  }).flat();
}

function runsTable(runs) {
  return el("table", { id: "runs" }, el("tr", {}, ["Run", "DAG", "State", "Logical date", "Started", "Took"].map((h) => el("th", {}, h))),
    runs.map((r) => el("tr", { "data-run": r.run_id },
      el("td", {}, el("a", { href: `#/runs/${r.run_id}` }, r.run_id)), el("td", {}, r.dag_id), el("td", {}, state(r.state)),
      el("td", {}, at(r.logical_date)), el("td", {}, at(r.started_at_ms)), el("td", {}, duration(r.started_at_ms, r.finished_at_ms)))));
}

const RUN_STATES = ["queued", "running", "success", "failed", "cancelled"];

// The runs, newest first, filtered by DAG and state (kept in the address: `#/runs?dag=…&state=…`).
async function runsPage(filter) {
  const dag = filter.get("dag") || "";
  const wanted = filter.get("state") || "";
  const query = new URLSearchParams({ limit: "100" });
  if (dag) query.set("dag", dag);
  if (wanted) query.set("state", wanted);
  const url = `/api/v1/runs?${query}`;
  const [dags, runs] = await Promise.all([api("/api/v1/dags"), api(url)]);
  const go = (d, s) => {
    const next = new URLSearchParams();
    if (d) next.set("dag", d);
    if (s) next.set("state", s);
    location.hash = next.toString() ? `#/runs?${next}` : "#/runs";
  };
  // A DAG named in the address but not (or no longer) recorded is still the filter shown.
  const names = dags.map((d) => d.dag_id);
  if (dag && !names.includes(dag)) names.push(dag);
  const option = (value, label, chosen) => el("option", value === chosen ? { value, selected: "" } : { value }, label);
  const filters = el("p", { class: "filters" },
    el("label", {}, "DAG ", el("select", { id: "filter-dag", onchange: (e) => go(e.target.value, wanted) },
      option("", "all DAGs", dag), names.map((name) => option(name, name, dag)))),
    " ",
    el("label", {}, "state ", el("select", { id: "filter-state", onchange: (e) => go(dag, e.target.value) },
      option("", "any state", wanted), RUN_STATES.map((s) => option(s, s, wanted)))));
  const title = el("h1", {}, "Runs");
  show(title, filters, runsTable(runs));
  stream("/api/v1/events", async (name) => {
    if (name === "runs") show(title, filters, runsTable(await api(url)));
  });
}

/// Attempts as bars on one time axis, in a lane per device (CPU, then GPU), and a third lane
/// for the host↔device copies of the attempts that made any (each attempt's copy time drawn
/// from its start, as one bar: the attempt does not say when within it they happened).
function gantt(detail) {
  const attempts = detail.attempts;
  if (!attempts.length) return el("p", {}, "No attempts yet.");
  const start = Math.min(...attempts.map((a) => a.started_at_ms));
  const end = Math.max(...attempts.map((a) => a.finished_at_ms || Date.now()));
  const span = Math.max(1, end - start), width = 700, row = 20;
  const lanes = [["cpu", "CPU", "#1f6feb"], ["gpu", "GPU", "#7a3ff2"]]
    .map(([key, name, colour]) => [name, colour, attempts.filter((a) => (a.device || "cpu") === key), (a) => (a.finished_at_ms || Date.now()) - a.started_at_ms])
    .concat([["Copies", "#e16f24", attempts.filter((a) => a.transfer_us), (a) => a.transfer_us / 1000]])
    .filter(([, , list]) => list.length);
  const rows = lanes.reduce((n, [, , list]) => n + list.length + 1, 0);
  const root = svg("svg", { width: width + 160, height: rows * row + 24, id: "gantt" });
  let y = 0;
  for (const [name, colour, list, length] of lanes) {
    root.append(svg("text", { x: 0, y: y + 13, "font-weight": "bold", "data-lane": name }, name === "Copies" ? "host↔device copies" : `${name} lane`));
    root.append(svg("line", { x1: 0, x2: width + 150, y1: y + 17, y2: y + 17, stroke: "#d0d7de" }));
    y += row;
    for (const a of list) {
      const x = 150 + ((a.started_at_ms - start) / span) * width;
      const ms = length(a);
      const w = Math.max(2, (ms / span) * width);
      root.append(svg("text", { x: 8, y: y + 13 }, `${a.task_id} #${a.attempt}`));
      root.append(svg("rect", { x, y: y + 2, width: w, height: row - 8, fill: colour },
        svg("title", {}, `${a.task_id}: ${name} ${name === "Copies" ? micros(a.transfer_us) : duration(a.started_at_ms, a.finished_at_ms)}`)));
      y += row;
    }
  }
  root.append(svg("text", { x: 150, y: y + 16 }, `${duration(start, end)} in all`));
  return root;
}

/// Where the run's time went: I/O, copies, compute, the rest.
function breakdown(detail) {
  let io = 0, transfer = 0, compute = 0, total = 0;
  for (const a of detail.attempts) {
    if (!a.finished_at_ms) continue;
    total += (a.finished_at_ms - a.started_at_ms) * 1000;
    io += a.io_us || 0; transfer += a.transfer_us || 0; compute += a.compute_us || 0;
  }
  if (!total) return el("p", {}, "No finished attempts yet.");
  const other = Math.max(0, total - io - transfer - compute);
  const part = (cls, us) => el("span", { class: cls, style: `width:${(100 * us) / total}%`, title: `${cls} ${micros(us)}` });
  const ceiling = total / Math.max(1, total - compute);
  return el("div", { id: "breakdown" },
    el("div", { class: "bar" }, part("io", io), part("transfer", transfer), part("compute", compute), part("other", other)),
    el("p", { class: "legend" }, el("span", { class: "io" }), `I/O ${micros(io)}`, el("span", { class: "transfer" }), `copies ${micros(transfer)}`,
      el("span", { class: "compute" }), `compute ${micros(compute)}`, el("span", { class: "other" }), `other ${micros(other)}`),
    el("p", {}, `Faster devices can speed this run up ${ceiling.toFixed(2)}× at most.`));
}

const TASK_ROWS = 500;

/// The tasks a run page lists: all of them, or for a huge run the most telling first.
function shownTasks(tasks) {
  if (tasks.length <= TASK_ROWS) return tasks;
  const rank = { running: 0, failed: 1, up_for_retry: 2, queued: 3, upstream_failed: 4 };
  return tasks.map((t, i) => [rank[t.state] ?? 9, i, t]).sort((a, b) => a[0] - b[0] || a[1] - b[1]).slice(0, TASK_ROWS).map((x) => x[2]);
}

function runView(detail, admin) {
  const run = detail.run;
  const { shape, states } = foldMapped(detail.tasks);
  const cancel = admin && !["success", "failed", "cancelled"].includes(run.state)
    ? el("button", { id: "cancel", onclick: async () => { await api(`/api/v1/runs/${run.run_id}/cancel`, { method: "POST" }); } }, "Cancel run") : null;
  return [
    el("h1", {}, `Run ${run.run_id} of `, el("a", { href: `#/dags/${encodeURIComponent(run.dag_id)}` }, run.dag_id), " ", el("span", { id: "run-state", class: `state ${run.state}` }, run.state)),
    el("p", { class: "note" }, "logical date ", at(run.logical_date), " · started ", at(run.started_at_ms), ` · took ${duration(run.started_at_ms, run.finished_at_ms)}`,
      " · ", el("a", { id: "run-version", href: `#/dags/${encodeURIComponent(run.dag_id)}?version=${run.dag_version_id}` }, `DAG version ${run.dag_version_id}`),
      run.note ? ` · ${run.note}` : ""),
    detail.caused_by && detail.caused_by.length ? el("p", { id: "run-cause" }, "Started by ",
      detail.caused_by.flatMap((e, i) => [i ? ", " : "", el("a", { href: assetHref(e.asset) }, e.asset.startsWith("dag:") ? `${e.asset.slice(4)} succeeding` : `${e.asset} event ${e.id}`)])) : null,
    cancel,
    el("h2", {}, "Tasks"),
    el("p", { id: "counts" }, `${detail.task_count} task(s): `, Object.entries(detail.counts).map(([s, n]) => `${n} ${s}`).join(" · ")),
    detail.tasks.length > TASK_ROWS ? el("p", { class: "note" }, `${TASK_ROWS} of ${detail.tasks.length} tasks: those running, failed or waiting first; the graph below has them all`) : null,
    el("table", { id: "tasks" }, el("tr", {}, ["Task", "State", "Device", "Attempts", "Took", "Rows", "Error"].map((h) => el("th", {}, h))),
      shownTasks(detail.tasks).map((t) => el("tr", { "data-task": t.task_id },
        el("td", {}, el("a", { href: `#/runs/${run.run_id}/tasks/${encodeURIComponent(t.task_id)}` }, t.task_id),
          t.map_value !== null && t.map_value !== undefined ? el("span", { class: "note map-value" }, ` = ${mapLabel(t.map_value)}`) : ""),
        el("td", {}, state(t.state)),
        el("td", {}, device(t.device)), el("td", {}, t.attempts), el("td", {}, duration(t.started_at_ms, t.finished_at_ms)),
        el("td", {}, t.rows_out ?? "–"), el("td", { class: "error" }, t.error || "")))),
    el("h2", {}, "Graph"), graph(shape, states, run.run_id),
    el("h2", {}, "Gantt"), gantt(detail),
    el("h2", {}, "Where the time went"), breakdown(detail),
    notifications(detail.notifications || []),
  ];
}

/// Who was told about the run, and how delivery went.
function notifications(notes) {
  if (!notes.length) return null;
  return el("div", {},
    el("h2", {}, "Notifications"),
    el("table", { id: "notifications" }, el("tr", {}, ["About", "To", "State", "Attempts", "Answer", "Last error"].map((h) => el("th", {}, h))),
      notes.map((n) => el("tr", { "data-event": n.event },
        el("td", {}, n.task_id ? `${n.task_id} ${n.event} (attempt ${n.occurrence})` : `run ${n.event}`),
        el("td", {}, n.target), el("td", {}, el("span", { class: `state ${n.state === "delivered" ? "success" : n.state}` }, n.state)),
        el("td", {}, n.attempts), el("td", {}, n.response_code ?? "–"),
        el("td", { class: "error" }, n.state === "delivered" ? "" : (n.last_error || ""))))));
}

async function runPage(runId) {
  const admin = (await api("/api/v1/me")).role === "admin";
  // A run that does not exist is an error here, not an empty stream; a small run is drawn at
  // once, a large one when the stream's first event brings all its tasks.
  const first = await api(`/api/v1/runs/${runId}`);
  if (first.next_tasks_from === null) show(...runView(first, admin));
  else show(el("h1", {}, `Run ${runId}`), el("p", { class: "note" }, `loading ${first.task_count} tasks…`));
  // The stream sends every task first, then only the tasks that changed (with all their
  // attempts): kept here by task id, in DAG order.
  const tasks = new Map(), attempts = new Map();
  stream(`/api/v1/events?run=${runId}`, (name, event) => {
    if (name !== "run") return;
    if (event.full) { tasks.clear(); attempts.clear(); }
    for (const t of event.tasks) { tasks.set(t.task_id, t); attempts.set(t.task_id, []); }
    for (const a of event.attempts) (attempts.get(a.task_id) || []).push(a);
    show(...runView({ run: event.run, counts: event.counts, task_count: event.task_count, tasks: [...tasks.values()], attempts: [...attempts.values()].flat(), notifications: event.notifications, caused_by: first.caused_by }, admin));
  });
}

const UNFINISHED = ["running", "queued", "scheduled", "up_for_retry"];

async function taskPage(runId, taskId) {
  const admin = (await api("/api/v1/me")).role === "admin";
  const path = `/api/v1/runs/${runId}/tasks/${encodeURIComponent(taskId)}`;
  const render = async () => {
    const [detail, logs] = await Promise.all([api(path), api(`${path}/logs`)]);
    const { task, attempts } = detail;
    // The output's first rows, once it is published (read again only while the page polls).
    const preview = task.rows_out !== null && !UNFINISHED.includes(task.state)
      ? await api(`${path}/preview?limit=100`).catch((e) => ({ error: e.message })) : null;
    const finished = ["success", "failed", "cancelled"].includes(detail.run.state);
    const clearButton = admin && finished ? el("button", { id: "clear", onclick: async () => {
      await api(`${path}/clear`, { method: "POST", body: JSON.stringify({ downstream: true }) });
      location.hash = `#/runs/${runId}`;
    } }, "Clear: run it again, with what needs it") : null;
    show(el("h1", {}, el("a", { href: `#/runs/${runId}` }, `Run ${runId}`), ` · task ${taskId} `, state(task.state)),
      task.map_value !== null && task.map_value !== undefined
        ? el("p", { id: "map-value" }, `instance ${task.map_index} of mapped task `,
          el("a", { href: `#/runs/${runId}/tasks/${encodeURIComponent(taskId.replace(INSTANCE, "$1"))}` }, taskId.replace(INSTANCE, "$1")),
          `: ${mapLabel(task.map_value)}`) : null,
      el("p", { id: "sizes" }, `output ${task.rows_out ?? "–"} rows, ${task.bytes_out ?? "–"} bytes`,
        detail.inputs.length ? " · inputs: " + detail.inputs.map((up) =>
          `${up.task_id} (${up.rows_out !== null ? up.rows_out + " rows, " + up.bytes_out + " bytes" : "no data"})`).join(", ") : ""),
      el("p", { id: "rule" }, `runs when: ${task.trigger}`,
        task.depends_on_past ? " · after the same task of the previous scheduled run (depends_on_past)" : "",
        task.depends_on_past && task.state === "scheduled"
          ? " · waiting until it succeeded or was skipped (a failed one holds this task until it is cleared and succeeds)" : "",
        task.kind === "wait" && task.pokes > 0
          ? ` · sensor: ${task.pokes} poke${task.pokes === 1 ? "" : "s"} found nothing yet` +
            (task.state === "up_for_retry" && task.retry_at_ms ? `; next poke at ${new Date(task.retry_at_ms).toLocaleString()}` : "") : "",
        task.error ? ` · ${task.error}` : ""),
      clearButton,
      el("h2", {}, "Attempts and placement"),
      el("table", { id: "attempts" }, el("tr", {}, ["#", "State", "Route", "Device", "Why there", "Predicted CPU", "Predicted GPU", "Actual", "I/O", "Copies", "Compute"].map((h) => el("th", {}, h))),
        attempts.map((a) => el("tr", {}, el("td", {}, a.attempt), el("td", {}, state(a.state)), el("td", { class: "route" }, a.route || "–"), el("td", {}, device(a.device)),
          el("td", { class: "note" }, a.device_note || ""), el("td", {}, micros(a.predicted_cpu_us)), el("td", {}, micros(a.predicted_gpu_us)),
          el("td", {}, duration(a.started_at_ms, a.finished_at_ms)), el("td", {}, micros(a.io_us)), el("td", {}, micros(a.transfer_us)), el("td", {}, micros(a.compute_us))))),
      ...ran(attempts[attempts.length - 1]),
      ...outputPreview(preview),
      el("h2", {}, "Logs"),
      el("pre", { class: "logs", id: "logs" }, logs.map((l) => el("span", { class: l.stream }, `[${l.attempt}] ${l.line}\n`))));
    return !finished || UNFINISHED.includes(task.state);
  };
  // While the task or its run is unfinished, look again every second: state, attempts and
  // the log lines written meanwhile (one task's worth, however large the run).
  const hash = location.hash;
  const poll = async () => {
    if (location.hash !== hash) return;
    if (await render().catch((e) => { failure(e); return false; })) setTimeout(poll, 1000);
  };
  if (await render()) setTimeout(poll, 1000);
}

/// Where an asset event came from: a task of a run, a run of a DAG, or a post.
function eventOrigin(e) {
  const run = e.run_id ? el("a", { href: `#/runs/${e.run_id}` }, `run ${e.run_id}`) : null;
  if (e.source === "task") return [`${e.dag_id}.${e.task_id} in `, run];
  if (e.source === "run") return [run, ` of ${e.dag_id} succeeded`];
  return "posted";
}

const assetHref = (name) => `#/assets/${encodeURIComponent(name)}`;

async function assetsPage() {
  const assets = await api("/api/v1/assets");
  show(el("h1", {}, "Assets"),
    assets.length ? el("table", { id: "assets" },
      el("tr", {}, ["Asset", "Events", "Last event", "From", "Produced by", "Starts"].map((h) => el("th", {}, h))),
      assets.map((a) => el("tr", { "data-asset": a.name },
        el("td", {}, el("a", { href: assetHref(a.name) }, a.name)), el("td", {}, a.events),
        el("td", {}, a.last_event ? at(a.last_event.created_at_ms) : "–"),
        el("td", {}, a.last_event ? eventOrigin(a.last_event) : "–"),
        el("td", {}, a.producers.join(", ") || "–"),
        el("td", {}, a.consumers.length ? a.consumers.flatMap((d, i) => [i ? ", " : "", el("a", { href: `#/dags/${encodeURIComponent(d)}` }, d)]) : "–"))))
      : el("p", {}, "No assets yet: a task declares one with `produces: NAME`, and a DAG with `schedule: { assets: [NAME] }` runs when it changes."));
}

async function assetPage(name) {
  const [asset, me] = await Promise.all([api(`/api/v1/assets/${encodeURIComponent(name)}`), api("/api/v1/me")]);
  const extra = el("input", { id: "event-extra", placeholder: '{"rows": 1200} (optional)', size: 30 });
  const message = el("span", { id: "event-message", class: "note" });
  const post = me.role === "admin" && !name.startsWith("dag:") ? el("p", {}, extra, " ",
    el("button", { id: "post-event", onclick: async () => {
      let body = {};
      try {
        if (extra.value.trim()) body = { extra: JSON.parse(extra.value) };
      } catch (e) { message.textContent = `extra is not JSON: ${e.message}`; return; }
      try {
        const e = await api(`/api/v1/assets/${encodeURIComponent(name)}/events`, { method: "POST", body: JSON.stringify(body) });
        message.textContent = `event ${e.id} recorded`;
        setTimeout(() => { if (location.hash === assetHref(name)) route(); }, 1000);
      } catch (e) { message.textContent = e.message; }
    } }, "Post event"), " ", message) : null;
  show(el("h1", {}, `Asset ${asset.name}`),
    el("p", {}, "Produced by ", asset.producers.join(", ") || "– (posted from outside)", " · starts ",
      asset.consumers.length ? asset.consumers.flatMap((d, i) => [i ? ", " : "", el("a", { href: `#/dags/${encodeURIComponent(d)}` }, d)]) : "no DAG",
      ` · ${asset.events} event(s)`),
    post,
    el("h2", {}, "Events"),
    asset.recent.length ? el("table", { id: "asset-events" },
      el("tr", {}, ["Event", "At", "From", "Extra", "Started"].map((h) => el("th", {}, h))),
      asset.recent.map((e) => el("tr", { "data-event": e.id },
        el("td", {}, e.id), el("td", {}, at(e.created_at_ms)), el("td", {}, eventOrigin(e)),
        el("td", { class: "extra" }, e.extra === null || e.extra === undefined ? "–" : JSON.stringify(e.extra)),
        el("td", { class: "started" }, e.runs.length ? e.runs.flatMap((r, i) => [i ? ", " : "", el("a", { href: `#/runs/${r}` }, `run ${r}`)]) : "–"))))
      : el("p", {}, "No event yet."));
}

async function route() {
  if (live) { live.abort(); live = null; }
  const logout = document.getElementById("logout");
  if (!token()) { logout.hidden = true; document.getElementById("who").textContent = ""; return login(); }
  logout.hidden = false;
  const [path, search] = location.hash.replace(/^#\/?/, "").split("?");
  const parts = path.split("/").map(decodeURIComponent);
  try {
    const me = await api("/api/v1/me");
    document.getElementById("who").textContent = `token ${me.token_id} (${me.role})`;
    if (parts[0] === "dags" && parts[1]) await dagPage(parts[1], new URLSearchParams(search || ""));
    else if (parts[0] === "runs" && parts[1] && parts[2] === "tasks") await taskPage(parts[1], parts[3]);
    else if (parts[0] === "runs" && parts[1]) await runPage(parts[1]);
    else if (parts[0] === "runs") await runsPage(new URLSearchParams(search || ""));
    else if (parts[0] === "assets" && parts[1]) await assetPage(parts[1]);
    else if (parts[0] === "assets") await assetsPage();
    else await dagsPage();
  } catch (e) {
    if (e.status === 401) login(e.message);
    else failure(e);
  }
}

window.addEventListener("hashchange", route);
document.addEventListener("DOMContentLoaded", () => {
  document.getElementById("logout").addEventListener("click", () => { sessionStorage.removeItem("amdahl-token"); route(); });
  route();
});
