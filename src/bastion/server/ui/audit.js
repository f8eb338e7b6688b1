/* The audit log (admins): filters, newest first, next page, JSON Lines export. */
import { $, API, api, clear, el, emptyRow, fmtTime, query, showError } from "./core.js";

const audit = { before: null };

function auditFilters() {
  const f = $("audit-form");
  let since = "";
  if (f.since.value) {
    const d = new Date(f.since.value); // local time in the picker -> UTC for the API
    if (!Number.isNaN(d.getTime())) since = d.toISOString();
  }
  return { actor: f.actor.value.trim(), action: f.action.value.trim(), outcome: f.outcome.value, since };
}

export async function loadAudit(reset) {
  const f = $("audit-form");
  const filters = auditFilters();
  const limit = Math.max(1, Math.min(1000, Number(f.limit.value) || 200));
  $("audit-export").href = `${API}/audit/export${query(filters)}`;
  showError($("audit-error"), "");
  const tbody = $("audit-table").tBodies[0];
  if (reset) audit.before = null;
  try {
    const d = await api("GET", `/audit${query({ ...filters, limit, order: "desc", before_id: audit.before })}`);
    if (reset) clear(tbody);
    for (const e of d.entries) {
      const detail = e.detail && Object.keys(e.detail).length ? JSON.stringify(e.detail) : "";
      tbody.append(el("tr", { dataset: { id: String(e.id), action: e.action } },
        el("td", { class: "nowrap", text: String(e.id) }), el("td", { class: "nowrap", text: fmtTime(e.at) }),
        el("td", { text: e.actor || "—" }), el("td", { class: "nowrap", text: e.via || "" }),
        el("td", { class: "mono nowrap", text: e.action }), el("td", { class: "wrap", text: e.target || "" }),
        el("td", null, el("span", { class: e.outcome === "ok" ? "badge badge-ok" : "badge badge-bad", text: e.outcome })),
        el("td", { class: "mono nowrap", text: e.ip || "" }),
        el("td", { class: "detail", title: detail, text: detail.length > 240 ? `${detail.slice(0, 240)}…` : detail })));
    }
    if (d.entries.length) audit.before = d.entries[d.entries.length - 1].id;
    if (reset && !d.entries.length) emptyRow(tbody, 9, "No entries match.");
    const shown = tbody.querySelectorAll("tr:not(.empty-row)").length;
    $("audit-count").textContent = `${shown} entr${shown === 1 ? "y" : "ies"}, newest first.`;
    $("audit-more").hidden = d.entries.length < limit;
  } catch (err) {
    if (err.status !== 401) showError($("audit-error"), err.detail || String(err));
  }
}


export function initAudit() {
  $("audit-form").addEventListener("submit", (e) => { e.preventDefault(); loadAudit(true); });
  $("audit-more").addEventListener("click", () => loadAudit(false));
}
