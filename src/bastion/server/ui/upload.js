/* Add documents: upload files into a folder source (editors where the source admits them; admins),
 * with upload progress, then the indexing job followed until the file can be found. */
import {
  $, API, ApiError, api, clear, el, fmtBytes, headers, hooks, isAdmin, plainError, state,
} from "./core.js";

const FINAL = new Set(["completed", "failed", "interrupted"]);
const upload = { loaded: false };

/** The router's entry. */
export async function enterUpload() {
  if (!upload.loaded) await loadTargets();
  $("upload-file").focus();
}

export function resetUpload() {
  upload.loaded = false;
  clear($("upload-list"));
}

/** Where the user may add files: an admin's folder sources; for an editor the sources of the documents
 * they can read (the server refuses the others with a clear message). */
async function loadTargets() {
  const select = clear($("upload-source"));
  const note = $("upload-note");
  let names = [];
  try {
    if (isAdmin()) {
      const d = await api("GET", "/sources");
      names = (d.sources || []).filter((s) => s.kind === "folder" || s.kind === "filesystem").map((s) => s.name);
    } else {
      const d = await api("GET", "/documents?limit=1000");
      names = [...new Set((d.documents || []).map((x) => x.source).filter(Boolean))].sort();
    }
    upload.loaded = true;
  } catch (err) {
    note.textContent = plainError(err);
    note.hidden = false;
    return;
  }
  for (const n of names) select.append(el("option", { value: n, text: n }));
  const none = !names.length;
  note.textContent = none ? "There is no document collection you can add files to yet. Ask your administrator." : "";
  note.hidden = !none;
  $("upload-submit").disabled = none;
}

function targetPath(folder, file) {
  const dir = folder.trim().replace(/\\/g, "/").replace(/^\/+|\/+$/g, "");
  return dir ? `${dir}/${file.name}` : file.name;
}

async function submit(ev) {
  ev.preventDefault();
  const files = [...$("upload-file").files];
  const source = $("upload-source").value;
  if (!files.length || !source) return;
  const folder = $("upload-folder").value;
  $("upload-file").value = "";
  for (const file of files) await send(source, targetPath(folder, file), file); // one at a time: one sync each
}

function uploadRow(path, file) {
  const bar = el("progress", { max: "100", value: "0", "aria-label": `Upload of ${path}` });
  const status = el("p", { class: "upload-status", text: "Uploading…" });
  const row = el("li", { class: "upload-item", dataset: { path, state: "uploading" } },
    el("p", { class: "upload-name" }, el("span", { class: "upload-path", text: path }), el("span", { class: "muted small", text: ` ${fmtBytes(file.size)}` })),
    bar, status);
  $("upload-list").prepend(row);
  return { row, bar, status };
}

function setState(ui, stateName, text, ok) {
  ui.row.dataset.state = stateName;
  ui.status.textContent = text;
  ui.status.classList.toggle("ok", ok === true);
  ui.status.classList.toggle("bad", ok === false);
}

/** POST the file with XMLHttpRequest (fetch cannot report upload progress). */
function post(source, path, file, onProgress) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open("POST", `${API}/sources/${encodeURIComponent(source)}/documents`);
    for (const [k, v] of Object.entries(headers("POST"))) xhr.setRequestHeader(k, v);
    xhr.upload.addEventListener("progress", (e) => { if (e.lengthComputable) onProgress(e.loaded / e.total); });
    xhr.addEventListener("load", () => {
      let body = null;
      try { body = JSON.parse(xhr.responseText); } catch (_) { /* not JSON */ }
      if (xhr.status >= 200 && xhr.status < 300) resolve(body);
      else reject(new ApiError(xhr.status, (body && body.detail) || `${xhr.status} ${xhr.statusText}`, body));
    });
    xhr.addEventListener("error", () => reject(new ApiError(0, "network error")));
    const form = new FormData();
    form.append("file", file, file.name);
    form.append("path", path);
    xhr.send(form);
  });
}

async function send(source, path, file) {
  const ui = uploadRow(path, file);
  let accepted;
  try {
    accepted = await post(source, path, file, (share) => {
      ui.bar.value = Math.round(share * 100);
      ui.status.textContent = `Uploading… ${Math.round(share * 100)} %`;
    });
  } catch (err) {
    if (err.status === 401 && state.user) hooks.sessionExpired(err.detail);
    ui.bar.remove();
    // the server's reason is about the user's own file or folder (type, size, where): shown as it is
    const reason = [403, 404, 400, 422].includes(err.status) && err.detail ? err.detail
      : err.status === 413 ? "This file is larger than the server accepts." : plainError(err);
    setState(ui, "failed", `Not uploaded: ${reason}`, false);
    return;
  }
  ui.bar.value = 100;
  setState(ui, "indexing", `Uploaded (${fmtBytes(accepted.bytes)}). Indexing so that it can be found…`);
  ui.bar.removeAttribute("value"); // indeterminate while the sync runs
  const job = await follow(accepted.job);
  ui.bar.remove();
  const outcome = outcomeOf(job, accepted.path);
  if (outcome.outcome === "indexed") setState(ui, "indexed", `Ready: ${accepted.path} can now be found in Search and in answers.`, true);
  else if (outcome.outcome === "held") setState(ui, "held", "Uploaded. It will be searchable once an administrator approves the update.");
  else if (outcome.outcome === "skipped" || outcome.outcome === "failed") {
    setState(ui, outcome.outcome, `Uploaded, but it could not be read: ${outcome.reason || "unknown reason"}.`, false);
  } else setState(ui, "failed", "Uploaded, but it could not be indexed. An administrator can see why in the sync jobs.", false);
}

/** Poll the sync job the upload started until it ends. */
async function follow(job) {
  let j = job;
  for (let i = 0; i < 600 && !FINAL.has(j.status); i++) {
    await new Promise((r) => { setTimeout(r, 1000); });
    try {
      j = await api("GET", `/sync/jobs/${encodeURIComponent(job.id)}`);
    } catch (err) {
      if (err.status === 401) return j;
    }
  }
  return j;
}

/** The file's outcome: the member view says it; an admin's whole job is read the same way. */
function outcomeOf(job, path) {
  if (job.upload && job.upload.outcome) return job.upload;
  if (job.status !== "completed" || !job.report) return { outcome: "not indexed" };
  const report = job.report;
  if ((report.sources || []).some((r) => r.status === "quarantined")) return { outcome: "held" };
  for (const kind of ["errors", "skipped"]) {
    for (const entry of report[kind] || []) {
      if (entry.file === path) return { outcome: kind === "errors" ? "failed" : "skipped", reason: entry.reason };
    }
  }
  return { outcome: "indexed" };
}

export function initUpload() {
  $("upload-form").addEventListener("submit", submit);
  const drop = $("upload-drop");
  drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    drop.classList.remove("over");
    if (e.dataTransfer && e.dataTransfer.files.length) $("upload-file").files = e.dataTransfer.files;
  });
}
