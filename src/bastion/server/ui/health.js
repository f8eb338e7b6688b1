/* Data health (admins): each source's last sync, the unresolved alerts with acknowledge / resolve,
 * run the checks now, the HTML report. */
import { $, api, clear, el, emptyRow, fmtTime, showError, t, term, toast } from "./core.js";
import { statusBadge } from "./sources.js";

export async function loadHealth() {
  showError($("health-error"), "");
  try {
    renderHealth(await api("GET", "/monitor"));
  } catch (err) {
    if (err.status !== 401) showError($("health-error"), err.detail || String(err));
  }
}

function renderHealth(d) {
  const sources = clear($("health-sources").tBodies[0]);
  for (const s of d.sources || []) {
    const run = s.last_run;
    sources.append(el("tr", { dataset: { source: s.name } },
      el("td", { text: s.name }),
      el("td", null, run ? statusBadge(run.status) : el("span", { class: "muted", text: t("health.never") })),
      el("td", { class: "nowrap", text: fmtTime(run && run.finished_at) }),
      el("td", { text: s.documents == null ? "—" : String(s.documents) }),
      el("td", null, el("span", { class: s.open_alerts ? "badge badge-warn" : "badge badge-ok", text: String(s.open_alerts || 0) }))));
  }
  if (!(d.sources || []).length) emptyRow(sources, 5, t("health.noSources"));

  const alerts = clear($("health-alerts").tBodies[0]);
  const open = (d.alerts || []).filter((a) => a.status !== "resolved");
  for (const a of open) {
    const actions = el("td", { class: "actions" });
    if (a.status === "open") actions.append(alertButton(a, "acknowledge", t("health.acknowledge")));
    actions.append(alertButton(a, "resolve", t("health.resolve")));
    alerts.append(el("tr", { dataset: { alert: String(a.id), status: a.status } },
      el("td", { class: "nowrap", text: String(a.id) }), el("td", { text: a.source }),
      el("td", { class: "nowrap", text: term("kind", a.kind) }),
      el("td", null, el("span", { class: a.severity === "hard" ? "badge badge-bad" : "badge badge-warn", text: term("severity", a.severity) })),
      el("td", null, el("span", { class: `badge alert-status ${a.status === "open" ? "badge-warn" : "badge-run"}`,
        dataset: { status: a.status }, text: term("status", a.status) })),
      el("td", { class: "nowrap", text: fmtTime(a.opened_at) }),
      el("td", { class: "wrap", title: a.check || null, text: a.message || "" }),
      actions));
  }
  if (!open.length) emptyRow(alerts, 8, t("health.noAlerts"));

  const pending = Number(d.undelivered_webhooks) || 0;
  $("health-webhooks").textContent = pending ? t("health.webhooks", [pending]) : "";
  $("health-webhooks").hidden = !pending;
}

function alertButton(alert, action, label) {
  const button = el("button", { type: "button", class: `btn btn-small alert-${action}`, text: label });
  button.addEventListener("click", async () => {
    button.disabled = true;
    showError($("health-error"), "");
    try {
      const a = await api("POST", `/monitor/alerts/${encodeURIComponent(alert.id)}/${action}`);
      toast(t(action === "acknowledge" ? "health.acknowledged" : "health.resolvedToast", [a.id]));
    } catch (err) {
      showError($("health-error"), err.detail || String(err)); // 409: someone else got there first
    }
    loadHealth();
  });
  return button;
}

export async function runChecks() {
  const button = $("health-run");
  button.disabled = true;
  showError($("health-error"), "");
  try {
    const d = await api("POST", "/monitor/run");
    toast(t("health.ran", [(d.alerts || []).filter((a) => a.status !== "resolved").length]));
    await loadHealth();
  } catch (err) {
    showError($("health-error"), err.detail || String(err));
  } finally {
    button.disabled = false;
  }
}
