/* Sources (admins): list with each source's last sync and its errors; add, edit, remove; sync now with
 * live progress; recent sync jobs. */
import {
  $, api, clear, confirmDialog, el, emptyRow, fmtTime, formDialog, plural, showError, state, toast,
} from "./core.js";

const FINAL_JOB = new Set(["completed", "failed", "interrupted"]);
const sync = { timer: null, live: null };

const splitList = (s) => String(s || "").split(/[,\n]+/).map((x) => x.trim()).filter(Boolean);

export async function loadSources() {
  showError($("sources-error"), "");
  try {
    const [src, jobs] = await Promise.all([api("GET", "/sources"), api("GET", "/sync/jobs?limit=50")]);
    renderSources(src.sources || [], jobs.jobs || []);
    renderJobs((jobs.jobs || []).slice(0, 20));
    const running = (jobs.jobs || []).find((j) => !FINAL_JOB.has(j.status));
    if (running && !sync.timer) watchJob(running);
  } catch (err) {
    if (err.status !== 401) showError($("sources-error"), err.detail || String(err));
  }
}

/** The newest API job for this source (on its own or with all the others) that failed as a whole. */
function failedJob(name, jobs) {
  const j = jobs.find((x) => x.source == null || x.source === name);
  return j && j.error && FINAL_JOB.has(j.status) && j.status !== "completed" ? j : null;
}

function lastSyncCell(s, jobs) {
  const cell = el("td", { class: "source-last" });
  const last = s.last_sync;
  const job = failedJob(s.name, jobs);
  if (last) {
    const bad = last.status !== "completed";
    cell.append(el("span", { class: bad ? "badge badge-bad" : "badge badge-ok", text: last.status }),
      el("span", { class: "muted small nowrap", text: ` ${fmtTime(last.finished_at || last.started_at)}` }));
  } else if (!job) cell.append(el("span", { class: "muted", text: "never synced" }));
  const active = s.documents && s.documents.active;
  if (active != null) cell.append(el("div", { class: "muted small", text: plural(active, "document") }));
  const errors = [];
  if (job) errors.push({ what: `sync job ${fmtTime(job.finished_at)}`, reason: job.error });
  for (const e of (last && last.errors) || []) errors.push({ what: e.file, reason: e.reason });
  for (const d of s.failed_documents || []) {
    if (!errors.some((e) => e.what === d.path)) errors.push({ what: d.path, reason: d.reason });
  }
  const total = Math.max(errors.length, ((last && last.errors_total) || 0) + (job ? 1 : 0));
  if (errors.length) cell.append(problemList(`${plural(total, "error")}`, errors, total, "source-errors"));
  const skipped = ((last && last.skipped) || []).map((e) => ({ what: e.file, reason: e.reason }));
  if (skipped.length) cell.append(problemList(`${plural(last.skipped_total || skipped.length, "item")} skipped`, skipped, last.skipped_total, "source-skipped"));
  for (const q of (last && last.quarantined) || []) cell.append(el("p", { class: "small bad-text", text: `Held for review: ${q}` }));
  return cell;
}

function problemList(label, items, total, cls) {
  const list = el("ul", { class: "error-list" });
  for (const e of items.slice(0, 20)) list.append(el("li", null, e.what ? el("span", { class: "mono", text: `${e.what}: ` }) : null, e.reason || ""));
  if ((total || items.length) > 20) list.append(el("li", { class: "muted", text: `… and ${(total || items.length) - 20} more` }));
  return el("details", { class: cls }, el("summary", { text: label }), list);
}

function renderSources(sources, jobs) {
  const tbody = clear($("sources-table").tBodies[0]);
  for (const s of sources) {
    const cfg = s.config || {};
    const where = cfg.path || cfg.url || cfg.table || "";
    tbody.append(el("tr", { dataset: { source: s.name } },
      el("td", { class: "source-name", text: s.name }), el("td", { text: s.kind }), el("td", { class: "mono wrap", text: where }),
      el("td", { class: "wrap", text: cfg.acl || "nobody" }),
      lastSyncCell(s, jobs),
      el("td", { class: "actions" },
        el("button", { type: "button", class: "btn btn-small sync-now", text: "Sync now", "aria-label": `Sync ${s.name} now`,
          on: { click: () => startSync(s.name) } }),
        el("button", { type: "button", class: "btn btn-small source-edit", text: "Edit", "aria-label": `Edit ${s.name}`,
          on: { click: () => editSource(s) } }),
        el("button", { type: "button", class: "btn btn-small btn-danger source-remove", text: "Remove", "aria-label": `Remove ${s.name}`,
          on: { click: () => removeSource(s) } }))));
  }
  if (!sources.length) emptyRow(tbody, 6, "No sources yet: add a folder or a database table.");
}

const FOLDER = "kind=folder";
const SQL = "kind=sql";

async function addSource() {
  const added = await formDialog({
    title: "Add a source",
    intro: "A folder on the server, or a database table (one document per row).",
    fields: [
      { name: "name", label: "Name", required: true, maxlength: "100", hint: "Short, without spaces, e.g. hr-policies." },
      { name: "kind", label: "Kind", type: "select", value: "folder", options: [["folder", "Folder on the server"], ["sql", "Database table"]] },
      { name: "path", label: "Folder path", required: true, showWhen: FOLDER, placeholder: "/srv/share/hr" },
      { name: "url", label: "Database URL", required: true, showWhen: SQL, placeholder: "postgresql+psycopg://user@db/crm" },
      { name: "table", label: "Table", required: true, showWhen: SQL },
      { name: "text_template", label: "Text of each row", required: true, showWhen: SQL, placeholder: "{title}\n{body}", type: "textarea" },
      { name: "id_column", label: "Id column", value: "id", showWhen: SQL },
      { name: "acl", label: "Who may read", type: "textarea", required: true, placeholder: "e.g. everyone, or group:finance",
        hint: "everyone, group:NAME or user:NAME, separated by commas." },
      { name: "uploaders", label: "Who may add files", showWhen: FOLDER, hint: "e.g. group:staff (editors only). Empty: admins only." },
      { name: "exclude", label: "Leave out (patterns)", showWhen: FOLDER, placeholder: "drafts/*, *.tmp" },
    ],
    submitLabel: "Add source",
    submit: (v) => {
      const body = { name: v.name.trim(), kind: v.kind, acl: v.acl.trim() };
      if (v.kind === "folder") Object.assign(body, { path: v.path.trim(), uploaders: v.uploaders.trim(), exclude: splitList(v.exclude) });
      else Object.assign(body, { url: v.url.trim(), table: v.table.trim(), text_template: v.text_template, id_column: v.id_column.trim() || "id" });
      return api("POST", "/sources", body);
    },
  });
  if (!added) return;
  toast(`Source ${added.name} added. Sync it to make its documents searchable.`);
  await loadSources();
  const sync = document.querySelector(`#sources-table tr[data-source="${CSS.escape(added.name)}"] .sync-now`);
  if (sync) sync.focus();
}

const ACL_HINT = "everyone, group:NAME or user:NAME, separated by commas. Empty: nobody.";

async function editSource(s) {
  const cfg = s.config || {};
  const folder = s.kind === "folder" || s.kind === "filesystem";
  const current = folder ? {
    path: cfg.path || "", acl: cfg.acl || "", uploaders: cfg.uploaders || "",
    include: (cfg.include || []).join(", "), exclude: (cfg.exclude || []).join(", "),
  } : { url: cfg.url || "", table: cfg.table || "", text_template: cfg.template || cfg.text_template || "", acl: cfg.acl || "" };
  const fields = folder ? [
    { name: "path", label: "Folder path", value: current.path, required: true },
    { name: "acl", label: "Who may read", value: current.acl, type: "textarea", hint: ACL_HINT },
    { name: "uploaders", label: "Who may add files", value: current.uploaders, hint: "e.g. group:staff (editors only). Empty: admins only." },
    { name: "include", label: "Only these (patterns)", value: current.include, placeholder: "*.md, policies/*" },
    { name: "exclude", label: "Leave out (patterns)", value: current.exclude, placeholder: "drafts/*" },
  ] : [
    { name: "url", label: "Database URL", value: current.url, required: true, hint: "The password shows as ***: leave it to keep it." },
    { name: "table", label: "Table", value: current.table },
    { name: "text_template", label: "Text of each row", value: current.text_template, type: "textarea", required: true },
    { name: "acl", label: "Who may read", value: current.acl, type: "textarea", hint: `For rows without their own. ${ACL_HINT}` },
  ];
  const saved = await formDialog({
    title: `Edit source ${s.name}`,
    intro: "Saving starts a sync that applies the changes.",
    fields,
    submit: (v) => {
      const body = {};
      for (const [k, value] of Object.entries(v)) {
        if (value.trim() === current[k].trim()) continue;
        if (k === "include" || k === "exclude") body[k] = splitList(value);
        else if (k === "table" && !value.trim()) body[k] = null;
        else body[k] = k === "text_template" ? value : value.trim();
      }
      if (!Object.keys(body).length) return { unchanged: true };
      return api("PATCH", `/sources/${encodeURIComponent(s.name)}`, body);
    },
  });
  if (!saved) return;
  if (saved.unchanged) { toast("Nothing changed"); return; }
  toast(`Source ${s.name} saved${saved.job ? "; syncing" : ""}`);
  await loadSources();
  if (saved.job) watchJob(saved.job);
}

async function removeSource(s) {
  const ok = await confirmDialog({
    title: `Remove source ${s.name}?`,
    text: "Its documents disappear from search and answers for everyone. Files and database rows themselves are not touched.",
    confirm: "Remove source",
  });
  if (!ok) return;
  try {
    await api("DELETE", `/sources/${encodeURIComponent(s.name)}`);
    toast(`Source ${s.name} removed`);
  } catch (err) {
    showError($("sources-error"), err.detail || String(err));
  }
  await loadSources();
  $("source-add").focus();
}

function jobProgressText(j) {
  const p = j.progress || {};
  const parts = [];
  if (p.stage) parts.push(`stage ${p.stage}`);
  if (p.documents_total != null) parts.push(`${p.documents_done || 0} / ${p.documents_total} documents`);
  else if (p.documents_done) parts.push(`${p.documents_done} documents`);
  if (p.chunks_embedded) parts.push(`${p.chunks_embedded} chunks embedded`);
  return parts.join(" · ");
}

function jobResultText(j) {
  if (j.error) return j.error;
  const r = j.report;
  if (!r) return "";
  const parts = [];
  for (const [k, label] of [["documents_added", "added"], ["documents_updated", "updated"], ["documents_deleted", "deleted"],
    ["documents_unchanged", "unchanged"], ["documents_failed", "failed"]]) {
    if (r[k]) parts.push(`${r[k]} ${label}`);
  }
  if (r.seconds != null) parts.push(`${Number(r.seconds).toFixed(1)} s`);
  return parts.join(", ") || "nothing to do";
}

export function statusBadge(status) {
  const cls = status === "completed" ? "badge badge-ok" : (status === "failed" || status === "interrupted")
    ? "badge badge-bad" : status === "quarantined" ? "badge badge-warn" : "badge badge-run";
  return el("span", { class: cls, text: status });
}

function renderJobs(jobs) {
  const tbody = clear($("jobs-table").tBodies[0]);
  for (const j of jobs) {
    tbody.append(el("tr", { dataset: { job: j.id } },
      el("td", { class: "nowrap", text: fmtTime(j.created_at) }), el("td", { text: j.source || "all sources" }),
      el("td", { text: j.started_by || "" }), el("td", null, statusBadge(j.status)),
      el("td", { text: jobProgressText(j) }), el("td", { text: jobResultText(j) })));
  }
  if (!jobs.length) emptyRow(tbody, 6, "No sync jobs yet.");
}

const syncButtons = () => document.querySelectorAll(".sync-now, #sync-all");

async function startSync(source) {
  showError($("sources-error"), "");
  for (const b of syncButtons()) b.disabled = true;
  try {
    const job = await api("POST", "/sync", source ? { source } : {});
    toast(`Sync of ${source || "all sources"} started`);
    watchJob(job);
  } catch (err) {
    showError($("sources-error"), err.detail || String(err));
    for (const b of syncButtons()) b.disabled = false;
  }
}

function renderLiveJob(j) {
  $("job-live").hidden = false;
  $("job-live-name").textContent = `${j.source || "all sources"} — ${j.status}`;
  const bar = $("job-bar");
  const p = j.progress || {};
  bar.className = "progress-bar";
  let pct = null;
  if (j.status === "completed") pct = 100;
  else if (p.documents_total) pct = Math.min(100, Math.round((100 * (p.documents_done || 0)) / p.documents_total));
  if (j.status === "failed" || j.status === "interrupted") bar.classList.add("failed", "p100");
  else if (pct === null) bar.classList.add("indeterminate");
  else bar.classList.add(`p${Math.round(pct / 5) * 5}`);
  if (j.status === "completed") bar.classList.add("done");
  $("job-progress").value = pct || 0;
  const extra = FINAL_JOB.has(j.status) ? jobResultText(j) : jobProgressText(j);
  $("job-live-text").textContent = [j.status, extra].filter(Boolean).join(": ");
}

function watchJob(job) {
  stopJobPolling(false);
  sync.live = job.id;
  renderLiveJob(job);
  const tick = async () => {
    sync.timer = null;
    try {
      const j = await api("GET", `/sync/jobs/${encodeURIComponent(job.id)}`);
      if (sync.live !== job.id) return;
      renderLiveJob(j);
      if (FINAL_JOB.has(j.status)) {
        sync.live = null;
        for (const b of syncButtons()) b.disabled = false;
        if (state.user) await loadSources();
        return;
      }
    } catch (err) {
      if (err.status === 401) return;
      $("job-live-text").textContent = `Could not read the job: ${err.detail || err}`;
    }
    if (sync.live === job.id) sync.timer = setTimeout(tick, 1000);
  };
  sync.timer = setTimeout(tick, 1000);
}

export function stopJobPolling(hide = true) {
  if (sync.timer) clearTimeout(sync.timer);
  sync.timer = null;
  sync.live = null;
  for (const b of syncButtons()) b.disabled = false;
  if (hide && $("job-live")) $("job-live").hidden = true;
}

export function initSources() {
  $("sync-all").addEventListener("click", () => startSync(null));
  $("source-add").addEventListener("click", addSource);
}
