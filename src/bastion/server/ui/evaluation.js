/* Evaluation (admins): runs of question sets, one row per run and configuration, and their reports. */
import { $, API, api, clear, el, emptyRow, fmtTime, showError } from "./core.js";
import { statusBadge } from "./sources.js";

const EVAL_SHARES = ["contains", "f1", "groundedness", "citation_accuracy",
  "abstention_recall_unanswerable", "abstention_recall_forbidden"];

function fmtNumber(v, digits) {
  return typeof v === "number" && Number.isFinite(v) ? v.toFixed(digits) : "—";
}

export async function loadEval() {
  showError($("eval-error"), "");
  try {
    renderEval((await api("GET", "/eval/runs")).runs || []);
  } catch (err) {
    if (err.status !== 401) showError($("eval-error"), err.detail || String(err));
  }
}

/** One row per run × configuration; the run's own cells (and its report link) span its rows. */
function renderEval(runs) {
  const tbody = clear($("eval-runs").tBodies[0]);
  for (const r of runs) {
    const configs = (r.configs || []).length ? r.configs : [null];
    const span = String(configs.length);
    const set = r.set || {};
    const report = el("a", { class: "btn btn-small eval-report", href: `${API}/eval/runs/${encodeURIComponent(r.run_id)}/report`,
      target: "_blank", rel: "noopener", text: "Open report" });
    configs.forEach((c, i) => {
      const m = (c && c.metrics) || {};
      const leaks = typeof m.leaks === "number" ? m.leaks : null;
      const row = el("tr", { dataset: { run: r.run_id, config: c ? c.name : "" } });
      if (i === 0) {
        row.append(el("td", { class: "nowrap", rowspan: span, text: fmtTime(r.started_at) }),
          el("td", { class: "nowrap", rowspan: span, text: `${set.name ?? "—"} v${set.version ?? "?"}` }),
          el("td", { rowspan: span }, statusBadge(r.status || "unknown")));
      }
      row.append(el("td", { class: "eval-config", text: c ? c.name : "—" }),
        el("td", { class: "num", text: m.items == null ? "—" : String(m.items) }),
        ...EVAL_SHARES.map((k) => el("td", { class: `num eval-${k}`, text: fmtNumber(m[k], 2) })),
        el("td", { class: leaks ? "num eval-leaks leak" : "num eval-leaks", text: leaks === null ? "—" : String(leaks) }),
        el("td", { class: "num", text: fmtNumber(m.latency_p95_ms, 0) }));
      if (i === 0) row.append(el("td", { class: "actions", rowspan: span }, report));
      tbody.append(row);
    });
  }
  if (!runs.length) emptyRow(tbody, 14, "No evaluation runs yet.");
}
