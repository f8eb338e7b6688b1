/* Bastion web UI: what every page shares. Plain JavaScript modules, no build step, no third-party code.
 *
 * The server's Content-Security-Policy forbids inline scripts, inline styles and event-handler
 * attributes, so everything is wired with addEventListener and styled with classes.
 * Server data (document text above all) is hostile input: it only ever reaches the page through
 * textContent / createTextNode, never innerHTML.
 */

export const API = "/api/v1";

/** What the pages share: who is signed in, and a few cross-page settings. */
export const state = {
  user: null, role: null, groups: [], csrf: null,
};

/** Callbacks the entry module fills in (a module cannot import its importer without a cycle). */
export const hooks = { sessionExpired: (_detail) => {} };

export const $ = (id) => document.getElementById(id);
export const isAdmin = () => state.role === "admin";

/** createElement with classes, attributes and text/element children (strings become text nodes). */
export function el(tag, props, ...children) {
  const node = document.createElement(tag);
  if (props) {
    for (const [k, v] of Object.entries(props)) {
      if (v === undefined || v === null || v === false) continue;
      if (k === "class") node.className = v;
      else if (k === "text") node.textContent = v;
      else if (k === "dataset") Object.assign(node.dataset, v);
      else if (k === "on") for (const [ev, fn] of Object.entries(v)) node.addEventListener(ev, fn);
      else if (k in node && typeof v !== "string") node[k] = v;
      else node.setAttribute(k, v === true ? "" : String(v));
    }
  }
  for (const c of children.flat()) {
    if (c === undefined || c === null || c === false) continue;
    node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return node;
}

export function clear(node) { while (node.firstChild) node.removeChild(node.firstChild); return node; }

export function fmtTime(iso) {
  if (!iso) return "—";
  return String(iso).replace("T", " ").replace(/\.\d+/, "").replace(/Z$/, "");
}

/** "3 minutes ago", "yesterday", or the date: how a chat list says when. */
export function fmtAgo(iso) {
  if (!iso) return "";
  const t = Date.parse(/Z$|[+-]\d\d:?\d\d$/.test(iso) ? iso : `${iso}Z`);
  if (Number.isNaN(t)) return fmtTime(iso);
  const s = Math.max(0, (Date.now() - t) / 1000);
  if (s < 60) return "just now";
  if (s < 3600) return `${Math.floor(s / 60)} min ago`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ago`;
  if (s < 2 * 86400) return "yesterday";
  return new Date(t).toLocaleDateString(undefined, { year: "numeric", month: "short", day: "numeric" });
}

export function fmtBytes(n) {
  if (n == null) return "";
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KB`;
  return `${(n / 1024 / 1024).toFixed(1)} MB`;
}

export const plural = (n, one, many = `${one}s`) => `${n} ${n === 1 ? one : many}`;

let toastTimer = null;
export function toast(text) {
  const t = $("toast");
  t.textContent = text;
  t.hidden = false;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => { t.hidden = true; }, 3500);
}

export function showError(node, text) {
  node.textContent = text || "";
  node.hidden = !text;
}

export function emptyRow(tbody, cols, text) {
  tbody.append(el("tr", { class: "empty-row" }, el("td", { colspan: String(cols), text })));
}

// -- strings ------------------------------------------------------------------------------------
/* The data-health view's labels (English, like the rest of the UI) and the answer warnings,
 * which follow the answer's language (English or Chinese). Code calls t(). */
const STRINGS = {
  en: {
    "health.never": "never synced",
    "health.noAlerts": "No unresolved alerts: the checks found nothing wrong.",
    "health.noSources": "No sources yet.",
    "health.acknowledge": "Acknowledge",
    "health.resolve": "Resolve",
    "health.acknowledged": (id) => `Alert ${id} acknowledged`,
    "health.resolvedToast": (id) => `Alert ${id} resolved`,
    "health.ran": (n) => `Checks ran: ${n} unresolved alert${n === 1 ? "" : "s"}`,
    "health.webhooks": (n) => `${n} webhook notification${n === 1 ? "" : "s"} not delivered yet.`,
    "status.open": "open", "status.acknowledged": "acknowledged", "status.resolved": "resolved",
    "severity.warn": "warn", "severity.hard": "hard",
    "kind.freshness": "freshness", "kind.volume": "volume", "kind.schema": "schema",
    "kind.quality": "quality", "kind.drift": "drift", "kind.parse": "parse",
    "warning.title": "Data-health warning for the cited sources",
    "warning.line": (source, kind, message) => `Source ${source} has an open ${kind} alert: ${message}`,
    // what a member reads instead of the alert's own (technical) message
    "warning.plain.freshness": (source) => `The documents of ${source} may be out of date.`,
    "warning.plain.quality": (source) => `Some documents of ${source} may be garbled or empty, so a quote could be wrong.`,
    "warning.plain.parse": (source) => `Some documents of ${source} could not be read, so something may be missing.`,
    "warning.plain.drift": (source) => `The search index of ${source} is changing; results may be less reliable for now.`,
    "warning.plain.other": (source) => `The documents of ${source} have an open data-health problem.`,
    "abstain.label": "No answer from the sources you can access",
    "abstain.tip": "Try other words, or ask a colleague who can read the right documents.",
    "extracted.label": "Here are the passages that answer this, quoted from the documents.",
  },
  zh: {
    "kind.freshness": "时效", "kind.volume": "数据量", "kind.schema": "结构",
    "kind.quality": "质量", "kind.drift": "漂移", "kind.parse": "解析",
    "warning.title": "所引用的数据源有数据健康告警",
    "warning.line": (source, kind, message) => `数据源 ${source} 有一条未解决的${kind}告警：${message}`,
    "warning.plain.freshness": (source) => `数据源 ${source} 的文档可能不是最新的。`,
    "warning.plain.quality": (source) => `数据源 ${source} 中有些文档可能是乱码或为空，引用可能有误。`,
    "warning.plain.parse": (source) => `数据源 ${source} 中有些文档无法读取，内容可能不完整。`,
    "warning.plain.drift": (source) => `数据源 ${source} 的检索索引正在变化，结果暂时可能不够可靠。`,
    "warning.plain.other": (source) => `数据源 ${source} 有一个未解决的数据健康问题。`,
    "abstain.label": "在您有权访问的资料中没有找到答案",
    "abstain.tip": "请换个说法，或询问能够阅读相关文档的同事。",
    "extracted.label": "以下是文档中回答此问题的原文段落。",
  },
};
const UI_LANG = "en"; // the UI's own labels; an answer's texts take its language

/** The string for key in lang (default: the UI's); a function entry is called with args. */
export function t(key, args = [], lang = UI_LANG) {
  const table = STRINGS[lang] || STRINGS.en;
  const v = key in table ? table[key] : STRINGS.en[key];
  if (v === undefined) return key;
  return typeof v === "function" ? v(...args) : v;
}

/** A server enum (status, kind, severity) in words, or the value itself when unknown. */
export function term(prefix, value, lang = UI_LANG) {
  const key = `${prefix}.${value}`;
  return key in STRINGS.en ? t(key, [], lang) : String(value ?? "");
}

// -- HTTP ---------------------------------------------------------------------------------------
export class ApiError extends Error {
  constructor(status, detail, body, retryAfter) {
    super(detail);
    this.status = status;
    this.detail = detail;
    this.body = body;
    this.retryAfter = retryAfter;
  }
}

/** A problem+json response as an ApiError carrying the server's `detail`. */
export async function problem(resp) {
  let body = null;
  let detail = `${resp.status} ${resp.statusText || "error"}`;
  try {
    body = await resp.json();
    if (body && typeof body.detail === "string" && body.detail) detail = body.detail;
  } catch (_) { /* not JSON */ }
  return new ApiError(resp.status, detail, body, resp.headers.get("Retry-After"));
}

export function headers(method, extra) {
  const h = Object.assign({ Accept: "application/json" }, extra || {});
  if (method !== "GET" && method !== "HEAD" && state.csrf) h["X-CSRF-Token"] = state.csrf;
  return h;
}

export async function api(method, path, body, opts = {}) {
  const init = { method, headers: headers(method), credentials: "same-origin", cache: "no-store" };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  if (opts.signal) init.signal = opts.signal;
  const resp = await fetch(API + path, init);
  if (!resp.ok) {
    const err = await problem(resp);
    if (resp.status === 401 && state.user && !opts.noExpire) hooks.sessionExpired(err.detail);
    throw err;
  }
  if (resp.status === 204) return null;
  const text = await resp.text();
  return text ? JSON.parse(text) : null;
}

export function query(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== undefined && v !== null && v !== "") q.set(k, v);
  const s = q.toString();
  return s ? `?${s}` : "";
}

/** What a member reads when a request fails: plain words, never a setting's name or a threshold.
 * Admins get the same sentence; callers show them the server's detail in a <details> as well. */
export function plainError(err) {
  if (err && err.name === "AbortError") return "Stopped.";
  const status = err && err.status;
  if (status === 400 || status === 422) return "The server could not use that request. Check what you typed and try again.";
  if (status === 403) return "You are not allowed to do this.";
  if (status === 404) return "This is no longer available to you.";
  if (status === 409) return (err.detail && !/\b[a-z_]+\.[a-z_]+\b/.test(err.detail)) ? capitalised(err.detail)
    : "This cannot be done right now. Reload and try again.";
  if (status === 413) return "That is too large for the server.";
  if (status === 429) return "Too many requests right now. Wait a moment and try again.";
  if (status === 504) return "This took too long. Please try again in a moment.";
  if (status >= 500) return "Something went wrong on the server. Please try again; if it keeps happening, tell your administrator.";
  if (!status) return "The server could not be reached. Check your connection and try again.";
  return "That did not work. Please try again.";
}

const capitalised = (s) => s[0].toUpperCase() + s.slice(1);

/** The error for the signed-in user: the plain sentence, and for admins the technical detail folded away. */
export function errorBlock(err, extraClass = "") {
  const box = el("div", { class: `error ${extraClass}`.trim(), role: "alert" },
    el("p", { class: "error-text", text: plainError(err) }));
  const detail = err && (err.detail || String(err));
  if (isAdmin() && detail) box.append(technical(detail));
  return box;
}

/** An admin-only "Technical details" disclosure. */
export function technical(text) {
  return el("details", { class: "technical" }, el("summary", { text: "Technical details" }),
    el("p", { class: "technical-text", text }));
}

// -- icons: SVG built in the DOM (no icon font, no inline markup) ------------------------------------
const ICONS = {
  thumb: "M2 21h4V9H2v12zm20-11c0-1.1-.9-2-2-2h-6.3l.95-4.57.03-.32c0-.41-.17-.79-.44-1.06L13.17 1 "
    + "6.59 7.59C6.22 7.95 6 8.45 6 9v10c0 1.1.9 2 2 2h9c.83 0 1.54-.5 1.84-1.22l3.02-7.05c.09-.23.14-.47.14-.73v-2z",
  plus: "M19 13h-6v6h-2v-6H5v-2h6V5h2v6h6v2z",
  edit: "M3 17.25V21h3.75L17.81 9.94l-3.75-3.75L3 17.25zM20.71 7.04a1 1 0 0 0 0-1.41l-2.34-2.34a1 1 0 0 0-1.41 0l-1.83 1.83 3.75 3.75 1.83-1.83z",
  trash: "M6 19c0 1.1.9 2 2 2h8c1.1 0 2-.9 2-2V7H6v12zM19 4h-3.5l-1-1h-5l-1 1H5v2h14V4z",
  close: "M19 6.41 17.59 5 12 10.59 6.41 5 5 6.41 10.59 12 5 17.59 6.41 19 12 13.41 17.59 19 19 17.59 13.41 12z",
  menu: "M3 18h18v-2H3v2zm0-5h18v-2H3v2zm0-7v2h18V6H3z",
  search: "M15.5 14h-.79l-.28-.27A6.47 6.47 0 0 0 16 9.5 6.5 6.5 0 1 0 9.5 16c1.61 0 3.09-.59 4.23-1.57l.27.28v.79l5 4.99L20.49 19l-4.99-5zm-6 0C7.01 14 5 11.99 5 9.5S7.01 5 9.5 5 14 7.01 14 9.5 11.99 14 9.5 14z",
  file: "M14 2H6c-1.1 0-2 .9-2 2v16c0 1.1.9 2 2 2h12c1.1 0 2-.9 2-2V8l-6-6zm4 18H6V4h7v5h5v11z",
  download: "M19 9h-4V3H9v6H5l7 7 7-7zM5 18v2h14v-2H5z",
  open: "M19 19H5V5h7V3H5a2 2 0 0 0-2 2v14a2 2 0 0 0 2 2h14c1.1 0 2-.9 2-2v-7h-2v7zM14 3v2h3.59l-9.83 9.83 1.41 1.41L19 6.41V10h2V3h-7z",
  upload: "M9 16h6v-6h4l-7-7-7 7h4v6zm-4 2h14v2H5v-2z",
};

export function icon(name, cls = "") {
  const NS = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(NS, "svg");
  svg.setAttribute("viewBox", "0 0 24 24");
  svg.setAttribute("aria-hidden", "true");
  svg.setAttribute("focusable", "false");
  svg.setAttribute("class", `icon ${cls}`.trim());
  const path = document.createElementNS(NS, "path");
  path.setAttribute("d", ICONS[name]);
  svg.append(path);
  return svg;
}

// -- focus: traps for sheets and dialogs ---------------------------------------------------------------
const FOCUSABLE = 'a[href], button:not([disabled]), input:not([disabled]):not([type="hidden"]), select:not([disabled]), '
  + 'textarea:not([disabled]), summary, [tabindex]:not([tabindex="-1"])';

function focusables(container) {
  return [...container.querySelectorAll(FOCUSABLE)].filter((n) => !n.closest("[hidden]") && n.getClientRects().length);
}

/** Keep Tab and Shift+Tab inside container while it is open; returns the keydown handler to remove later. */
function trapFocus(container) {
  const onKey = (e) => {
    if (e.key !== "Tab") return;
    const items = focusables(container);
    if (!items.length) return;
    const first = items[0];
    const last = items[items.length - 1];
    if (e.shiftKey && (document.activeElement === first || !container.contains(document.activeElement))) {
      e.preventDefault();
      last.focus();
    } else if (!e.shiftKey && (document.activeElement === last || !container.contains(document.activeElement))) {
      e.preventDefault();
      first.focus();
    }
  };
  container.addEventListener("keydown", onKey);
  return () => container.removeEventListener("keydown", onKey);
}

/** Make everything but container (and the toast) inert while a full-screen sheet is open: not
 * focusable, not clickable, hidden from screen readers. Returns the function that undoes it. */
function inertOutside(container) {
  const changed = [];
  for (let node = container; node && node.parentElement && node !== document.body; node = node.parentElement) {
    for (const sibling of node.parentElement.children) {
      if (sibling === node || sibling.inert || sibling.id === "toast" || ["DIALOG", "SCRIPT"].includes(sibling.tagName)) continue;
      sibling.inert = true;
      changed.push(sibling);
    }
  }
  return () => { for (const n of changed) n.inert = false; };
}

/** A full-screen sheet: focus kept inside, the page behind inert. Returns the function that releases it. */
export function holdSheet(container) {
  const untrap = trapFocus(container);
  const uninert = inertOutside(container);
  return () => { untrap(); uninert(); };
}

// -- dialogs: native <dialog> opened modal (the page behind is inert), Escape closes, focus returns -------
/** Open a modal dialog; `build(dialog, close)` fills it. Resolves with the value passed to close(). */
function openDialog({ title, label, build, className = "" }) {
  return new Promise((resolve) => {
    const opener = document.activeElement;
    const titleId = `dlg-${Math.random().toString(36).slice(2, 9)}`;
    const dialog = el("dialog", { class: `dialog ${className}`.trim(), "aria-labelledby": titleId });
    const head = el("div", { class: "dialog-head" }, el("h2", { id: titleId, class: "dialog-title", text: title }),
      el("button", { type: "button", class: "btn btn-quiet btn-icon", "aria-label": label || "Close", on: { click: () => close(undefined) } },
        icon("close")));
    dialog.append(head);
    let done = false;
    const release = trapFocus(dialog);
    const close = (value) => {
      if (done) return;
      done = true;
      release();
      if (dialog.open) dialog.close();
      dialog.remove();
      if (opener && document.body.contains(opener) && typeof opener.focus === "function") opener.focus();
      resolve(value);
    };
    dialog.addEventListener("cancel", (e) => { e.preventDefault(); close(undefined); }); // Escape
    build(dialog, close);
    document.body.append(dialog);
    dialog.showModal();
    const first = dialog.querySelector("[autofocus]") || focusables(dialog).find((n) => !n.closest(".dialog-head"))
      || focusables(dialog)[0];
    if (first) first.focus();
  });
}

/** Ask before something that cannot be undone; resolves true when confirmed. */
export function confirmDialog({ title, text, confirm = "Delete", danger = true }) {
  return openDialog({
    title,
    className: "dialog-confirm",
    build: (dialog, close) => {
      dialog.append(el("p", { class: "dialog-text", text }),
        el("div", { class: "dialog-actions" },
          el("button", { type: "button", class: "btn", text: "Cancel", autofocus: true, on: { click: () => close(false) } }),
          el("button", { type: "button", class: danger ? "btn btn-danger-solid" : "btn btn-primary", text: confirm,
            on: { click: () => close(true) } })));
    },
  }).then((v) => v === true);
}

/** A form in a dialog. `fields`: [{name, label, type, value, required, hint, options, placeholder, autocomplete}].
 * `submit(values)` may throw an ApiError: its message shows in the dialog, which stays open. */
export function formDialog({ title, intro, fields, submitLabel = "Save", submit }) {
  return openDialog({
    title,
    build: (dialog, close) => {
      const form = el("form", { class: "dialog-form", novalidate: false });
      if (intro) form.append(el("p", { class: "dialog-text", text: intro }));
      const inputs = {};
      fields.forEach((f, i) => {
        const id = `${dialog.getAttribute("aria-labelledby")}-f${i}`;
        let input;
        if (f.type === "select") {
          input = el("select", { id, name: f.name }, ...f.options.map((o) => {
            const [value, label] = Array.isArray(o) ? o : [o, o];
            return el("option", { value, text: label, selected: value === f.value });
          }));
        } else if (f.type === "textarea") {
          input = el("textarea", { id, name: f.name, rows: "3", placeholder: f.placeholder || null });
          input.value = f.value || "";
        } else {
          input = el("input", { id, name: f.name, type: f.type || "text", placeholder: f.placeholder || null,
            autocomplete: f.autocomplete || "off", maxlength: f.maxlength || null, minlength: f.minlength || null });
          input.value = f.value || "";
        }
        if (f.required) input.required = true;
        const hintId = f.hint ? `${id}-hint` : null;
        if (hintId) input.setAttribute("aria-describedby", hintId);
        inputs[f.name] = input;
        const row = el("div", { class: "field", dataset: { field: f.name } },
          el("label", { for: id, text: f.label }), input, hintId ? el("p", { id: hintId, class: "hint", text: f.hint }) : null);
        if (f.showWhen) row.dataset.showWhen = f.showWhen;
        form.append(row);
      });
      const status = el("div", { class: "dialog-status", role: "alert" });
      const ok = el("button", { type: "submit", class: "btn btn-primary", text: submitLabel });
      form.append(status, el("div", { class: "dialog-actions" },
        el("button", { type: "button", class: "btn", text: "Cancel", on: { click: () => close(undefined) } }), ok));
      const sync = () => { // fields shown only for one value of another field (kind=folder|sql)
        for (const row of form.querySelectorAll("[data-show-when]")) {
          const [name, value] = row.dataset.showWhen.split("=");
          row.hidden = inputs[name].value !== value;
          for (const input of row.querySelectorAll("input, select, textarea")) input.disabled = row.hidden; // not validated
        }
      };
      for (const input of Object.values(inputs)) input.addEventListener("change", sync);
      sync();
      form.addEventListener("submit", async (e) => {
        e.preventDefault();
        clear(status);
        const values = {};
        for (const [k, input] of Object.entries(inputs)) {
          if (!input.closest("[hidden]")) values[k] = input.value;
        }
        ok.disabled = true;
        try {
          const result = await submit(values);
          close(result === undefined ? true : result);
        } catch (err) {
          status.append(el("p", { class: "error", text: err.detail || err.message || String(err) }));
          ok.disabled = false;
        }
      });
      dialog.append(form);
    },
  });
}

// -- text: highlighting a quote or a query's words ---------------------------------------------------------
/** [start, end) of the quote in text: exact, else ignoring whitespace runs and case. */
export function findQuote(text, quote) {
  if (!quote) return null;
  const exact = text.indexOf(quote);
  if (exact >= 0) return [exact, exact + quote.length];
  const map = [];
  let norm = "";
  for (let i = 0; i < text.length; i++) {
    if (/\s/.test(text[i])) {
      if (norm && !norm.endsWith(" ")) { norm += " "; map.push(i); }
    } else { norm += text[i]; map.push(i); }
  }
  const q = quote.replace(/\s+/g, " ").trim();
  if (!q) return null;
  let at = norm.indexOf(q);
  if (at < 0) at = norm.toLowerCase().indexOf(q.toLowerCase());
  if (at < 0) return null;
  return [map[at], map[at + q.length - 1] + 1];
}

const STOP = new Set(("a an and are as at be by can do does for from has have how i in is it its me my of on or "
  + "our per should that the their there this to was we what when where which who why will with you your").split(" "));
const CJK = /[\u3400-\u9fff\uf900-\ufaff]/;

/** The words of a search to highlight: Latin words of two letters or more (not stop words), and
 * Chinese runs (matched as any part of two characters or more). */
export function queryTerms(q) {
  const terms = [];
  for (const word of String(q || "").toLowerCase().match(/[\p{L}\p{N}]+/gu) || []) {
    if (CJK.test(word)) terms.push({ cjk: true, text: word });
    else if (word.length >= 2 && !STOP.has(word)) terms.push({ cjk: false, text: word });
  }
  return terms;
}

/** [start, end) ranges of the terms in text, merged and sorted. */
export function termRanges(text, terms) {
  const lower = text.toLowerCase();
  const ranges = [];
  for (const term of terms) {
    if (!term.cjk) {
      const re = new RegExp(`(^|[^\\p{L}\\p{N}])(${term.text.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")}\\p{L}*)`, "gu");
      let m;
      while ((m = re.exec(lower)) !== null) ranges.push([m.index + m[1].length, m.index + m[0].length]);
    } else {
      const w = term.text;
      for (let len = Math.min(w.length, 12); len >= 2; len--) { // longest pieces first
        for (let i = 0; i + len <= w.length; i++) {
          const piece = w.slice(i, i + len);
          let at = lower.indexOf(piece);
          while (at >= 0) { ranges.push([at, at + len]); at = lower.indexOf(piece, at + len); }
        }
      }
    }
  }
  ranges.sort((a, b) => a[0] - b[0] || b[1] - a[1]);
  const merged = [];
  for (const r of ranges) {
    const last = merged[merged.length - 1];
    if (last && r[0] <= last[1]) last[1] = Math.max(last[1], r[1]);
    else merged.push([...r]);
  }
  return merged;
}

/** Append text to node with the given ranges wrapped in <mark>. Returns the first mark, if any. */
export function appendMarked(node, text, ranges) {
  let last = 0;
  let first = null;
  for (const [a, b] of ranges) {
    if (a > last) node.append(document.createTextNode(text.slice(last, a)));
    const mark = el("mark", { text: text.slice(a, b) });
    first = first || mark;
    node.append(mark);
    last = b;
  }
  if (last < text.length) node.append(document.createTextNode(text.slice(last)));
  return first;
}

export const looksChinese = (s) => CJK.test(s || "");
