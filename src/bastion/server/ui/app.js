/* Bastion web UI. Plain JavaScript, no build step, no third-party code.
 *
 * The server's Content-Security-Policy forbids inline scripts, inline styles and event-handler
 * attributes, so everything is wired here with addEventListener and styled with classes.
 * Server data (document text above all) is hostile input: it only ever reaches the page through
 * textContent / createTextNode, never innerHTML.
 */
"use strict";

(() => {
  const API = "/api/v1";
  const VIEWS = ["chat", "sources", "health", "eval", "admin", "audit"];
  const ADMIN_VIEWS = new Set(["sources", "health", "eval", "admin", "audit"]);
  const FINAL_JOB = new Set(["completed", "failed", "interrupted"]);
  const MAX_HISTORY_TURNS = 20; // the API takes at most 50 messages

  const state = {
    user: null, role: null, groups: [], csrf: null,
    history: [], asking: null, passageSeq: 0, activeCite: null,
    jobTimer: null, liveJob: null, auditAfter: null,
  };

  const $ = (id) => document.getElementById(id);

  /** createElement with classes, attributes and text/element children (strings become text nodes). */
  function el(tag, props, ...children) {
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

  function clear(node) { while (node.firstChild) node.removeChild(node.firstChild); return node; }

  // -- strings ------------------------------------------------------------------------------------
  /* The data-health view's labels (English, like the rest of the UI) and the answer warnings,
   * which follow the answer's language (English or Chinese). Code calls t(). */
  const STRINGS = {
    en: {
      "nav.health": "Data health",
      "health.title": "Data health",
      "health.run": "Run checks now",
      "health.report": "Open report",
      "health.sources": "Sources",
      "health.alerts": "Alerts",
      "health.col.source": "Source",
      "health.col.lastSync": "Last sync",
      "health.col.when": "When",
      "health.col.documents": "Live documents",
      "health.col.openAlerts": "Open alerts",
      "health.col.id": "Id",
      "health.col.kind": "Kind",
      "health.col.severity": "Severity",
      "health.col.status": "Status",
      "health.col.opened": "Opened",
      "health.col.message": "Message",
      "health.noAlerts": "No unresolved alerts: the checks found nothing wrong.",
      "health.noSources": "No sources yet.",
      "health.never": "never synced",
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
    },
    zh: {
      "kind.freshness": "时效", "kind.volume": "数据量", "kind.schema": "结构",
      "kind.quality": "质量", "kind.drift": "漂移", "kind.parse": "解析",
      "warning.title": "所引用的数据源有数据健康告警",
      "warning.line": (source, kind, message) => `数据源 ${source} 有一条未解决的${kind}告警：${message}`,
    },
  };
  const UI_LANG = "en"; // the UI's own labels; a warning takes its answer's language

  /** The string for key in lang (default: the UI's); a function entry is called with args. */
  function t(key, args = [], lang = UI_LANG) {
    const table = STRINGS[lang] || STRINGS.en;
    const v = key in table ? table[key] : STRINGS.en[key];
    if (v === undefined) return key;
    return typeof v === "function" ? v(...args) : v;
  }

  /** A server enum (status, kind, severity) in words, or the value itself when unknown. */
  function term(prefix, value, lang = UI_LANG) {
    const key = `${prefix}.${value}`;
    return key in STRINGS.en ? t(key, [], lang) : String(value ?? "");
  }

  function fmtTime(iso) {
    if (!iso) return "—";
    return String(iso).replace("T", " ").replace(/\.\d+/, "").replace(/Z$/, "");
  }

  let toastTimer = null;
  function toast(text) {
    const t = $("toast");
    t.textContent = text;
    t.hidden = false;
    clearTimeout(toastTimer);
    toastTimer = setTimeout(() => { t.hidden = true; }, 3500);
  }

  function showError(node, text) {
    node.textContent = text || "";
    node.hidden = !text;
  }

  // -- HTTP ---------------------------------------------------------------------------------------
  class ApiError extends Error {
    constructor(status, detail, body, retryAfter) {
      super(detail);
      this.status = status;
      this.detail = detail;
      this.body = body;
      this.retryAfter = retryAfter;
    }
  }

  /** A problem+json response as an ApiError carrying the server's `detail`. */
  async function problem(resp) {
    let body = null;
    let detail = `${resp.status} ${resp.statusText || "error"}`;
    try {
      body = await resp.json();
      if (body && typeof body.detail === "string" && body.detail) detail = body.detail;
    } catch (_) { /* not JSON */ }
    return new ApiError(resp.status, detail, body, resp.headers.get("Retry-After"));
  }

  function headers(method, extra) {
    const h = Object.assign({ Accept: "application/json" }, extra || {});
    if (method !== "GET" && method !== "HEAD" && state.csrf) h["X-CSRF-Token"] = state.csrf;
    return h;
  }

  async function api(method, path, body, opts = {}) {
    const init = { method, headers: headers(method), credentials: "same-origin", cache: "no-store" };
    if (body !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    if (opts.signal) init.signal = opts.signal;
    const resp = await fetch(API + path, init);
    if (!resp.ok) {
      const err = await problem(resp);
      if (resp.status === 401 && state.user && !opts.noExpire) sessionExpired(err.detail);
      throw err;
    }
    if (resp.status === 204) return null;
    return resp.json();
  }

  function query(params) {
    const q = new URLSearchParams();
    for (const [k, v] of Object.entries(params)) if (v !== undefined && v !== null && v !== "") q.set(k, v);
    const s = q.toString();
    return s ? `?${s}` : "";
  }

  // -- session ------------------------------------------------------------------------------------
  function setSession(d) {
    state.user = d.user;
    state.role = d.role;
    state.groups = d.groups || [];
    state.csrf = d.csrf_token || null;
    $("who-user").textContent = d.user;
    $("who-role").textContent = d.role;
    $("whoami").hidden = false;
    $("nav").hidden = false;
    const admin = d.role === "admin";
    for (const a of document.querySelectorAll(".admin-only")) a.hidden = !admin;
  }

  function dropSession() {
    state.user = state.role = state.csrf = null;
    state.groups = [];
    state.history = [];
    if (state.asking) state.asking.abort();
    stopJobPolling();
    $("whoami").hidden = true;
    $("nav").hidden = true;
    newConversation();
  }

  function sessionExpired(detail) {
    dropSession();
    route();
    showError($("login-error"), detail || "Your session ended; sign in again.");
  }

  async function login(ev) {
    ev.preventDefault();
    const user = $("login-user").value.trim();
    const password = $("login-password").value;
    const button = $("login-submit");
    showError($("login-error"), "");
    button.disabled = true;
    try {
      const d = await api("POST", "/auth/login", { username: user, password }, { noExpire: true });
      $("login-password").value = "";
      setSession(d);
      route();
    } catch (err) {
      let text = err.detail || String(err);
      if (err.status === 429 && err.retryAfter) {
        const s = Number(err.retryAfter);
        if (!text.includes(String(s))) text += ` (try again in ${s} s)`;
      }
      showError($("login-error"), text);
      $("login-password").select();
    } finally {
      button.disabled = false;
    }
  }

  async function logout() {
    try {
      await api("POST", "/auth/logout", {}, { noExpire: true });
    } catch (_) { /* the session may already be gone: log out locally anyway */ }
    dropSession();
    history.replaceState(null, "", location.pathname);
    route();
  }

  async function resume() {
    try {
      const d = await api("GET", "/auth/me", undefined, { noExpire: true });
      setSession(d);
    } catch (err) {
      if (err.status !== 401) showError($("login-error"), err.detail || String(err));
    }
    $("loading").hidden = true;
    route();
  }

  // -- routing ------------------------------------------------------------------------------------
  function currentView() {
    const v = location.hash.replace(/^#\/?/, "");
    return VIEWS.includes(v) ? v : "chat";
  }

  function show(id) {
    for (const s of document.querySelectorAll("main > .view")) s.hidden = s.id !== `view-${id}`;
  }

  function route() {
    if (!state.user) {
      show("login");
      $("login-user").focus();
      return;
    }
    const view = currentView();
    for (const a of document.querySelectorAll("#nav a")) a.classList.toggle("active", a.dataset.view === view);
    if (view !== "sources") stopJobPolling(false);
    if (ADMIN_VIEWS.has(view) && state.role !== "admin") {
      $("forbidden-text").textContent =
        `You need the admin role to see this page. You are signed in as ${state.user} (${state.role}).`;
      show("forbidden");
      return;
    }
    show(view);
    if (view === "chat") $("question").focus();
    else if (view === "sources") loadSources();
    else if (view === "health") loadHealth();
    else if (view === "eval") loadEval();
    else if (view === "admin") loadAdmin();
    else if (view === "audit") loadAudit(true);
  }

  // -- chat ---------------------------------------------------------------------------------------
  function newConversation() {
    if (state.asking) state.asking.abort();
    const empty = $("chat-empty"); // keep the hint: it is the conversation's only permanent child
    clear($("conversation")).append(empty);
    empty.hidden = false;
    state.history = [];
    closePassage();
    if (state.user && !$("view-chat").hidden) $("question").focus();
  }

  function setAsking(ctrl) {
    state.asking = ctrl;
    $("ask-submit").disabled = !!ctrl;
    $("ask-stop").hidden = !ctrl;
  }

  function langAttr(language) {
    if (!language) return null;
    return language === "zh" ? "zh-CN" : language;
  }

  async function ask(ev) {
    if (ev) ev.preventDefault();
    if (state.asking) return;
    const box = $("question");
    const question = box.value.trim();
    if (!question) return;
    box.value = "";
    $("chat-empty").hidden = true;

    const conv = $("conversation");
    conv.append(el("div", { class: "turn-question", text: question, lang: /[\u3400-\u9fff]/.test(question) ? "zh-CN" : null }));
    const text = el("div", { class: "answer-text thinking", text: "Searching your sources" });
    const card = el("article", { class: "turn-answer" }, text);
    conv.append(card);
    card.scrollIntoView({ block: "nearest" });

    const turn = { question, card, text, done: false };
    const ctrl = new AbortController();
    setAsking(ctrl);
    try {
      const resp = await fetch(`${API}/ask`, {
        method: "POST",
        credentials: "same-origin",
        cache: "no-store",
        signal: ctrl.signal,
        headers: headers("POST", { "Content-Type": "application/json", Accept: "text/event-stream" }),
        body: JSON.stringify({ question, stream: true, history: state.history.slice(-2 * MAX_HISTORY_TURNS) }),
      });
      if (!resp.ok) {
        const err = await problem(resp);
        if (resp.status === 401) sessionExpired(err.detail);
        throw err;
      }
      if (!(resp.headers.get("content-type") || "").includes("text/event-stream")) {
        renderAnswer(turn, await resp.json());
      } else {
        await readEvents(resp, (event, data) => {
          if (event === "draft") renderDraft(turn, data);
          else if (event === "answer") renderAnswer(turn, data);
          else if (event === "error") renderFailure(turn, data.detail || "the server could not answer");
        });
      }
      if (!turn.done) renderFailure(turn, "The answer stream ended before the answer arrived.");
    } catch (err) {
      if (err && err.name === "AbortError") renderFailure(turn, "Stopped.");
      else renderFailure(turn, (err && err.detail) || String(err));
    } finally {
      setAsking(null);
      if (state.user) box.focus();
    }
  }

  /** Server-Sent Events over a fetch body (EventSource cannot POST). */
  async function readEvents(resp, onEvent) {
    const reader = resp.body.getReader();
    const decoder = new TextDecoder("utf-8");
    let buf = "";
    const dispatch = (block) => {
      let event = "message";
      const data = [];
      for (const line of block.split("\n")) {
        if (!line || line.startsWith(":")) continue;
        const i = line.indexOf(":");
        const field = i < 0 ? line : line.slice(0, i);
        let value = i < 0 ? "" : line.slice(i + 1);
        if (value.startsWith(" ")) value = value.slice(1);
        if (field === "event") event = value;
        else if (field === "data") data.push(value);
      }
      if (!data.length) return;
      let parsed;
      try { parsed = JSON.parse(data.join("\n")); } catch (_) { return; }
      onEvent(event, parsed);
    };
    for (;;) {
      const { value, done } = await reader.read();
      if (value) buf += decoder.decode(value, { stream: true });
      if (done) buf += decoder.decode();
      buf = buf.replace(/\r\n/g, "\n");
      let idx;
      while ((idx = buf.indexOf("\n\n")) >= 0) {
        const block = buf.slice(0, idx);
        buf = buf.slice(idx + 2);
        dispatch(block);
      }
      if (done) {
        if (buf.trim()) dispatch(buf);
        return;
      }
    }
  }

  function renderDraft(turn, data) {
    if (turn.done) return;
    if (!turn.draft) {
      turn.draft = true;
      turn.text.classList.remove("thinking");
      turn.text.classList.add("draft");
      turn.text.textContent = "";
      turn.card.insertBefore(el("div", { class: "draft-label", text: "Draft — not yet checked against the sources" }), turn.text);
    }
    turn.text.append(document.createTextNode(data.text || ""));
  }

  function renderFailure(turn, detail) {
    if (turn.done) return;
    turn.done = true;
    clear(turn.card).append(el("p", { class: "error answer-error", role: "alert", text: detail }));
  }

  function renderAnswer(turn, a) {
    if (turn.done) return;
    turn.done = true;
    const card = clear(turn.card);
    card.classList.toggle("abstained", !!a.abstained);
    card.dataset.decision = a.decision || "";
    const lang = langAttr(a.language);
    if (lang) card.setAttribute("lang", lang);
    const cites = new Map((a.citations || []).map((c) => [Number(c.n), c]));

    if (a.abstained) card.append(el("div", { class: "abstain-label", text: "No answer from the sources you can access" }));
    if (Array.isArray(a.warnings) && a.warnings.length) card.append(answerWarnings(a.warnings, a.language));
    const text = el("div", { class: "answer-text" });
    if (a.abstained) text.textContent = a.answer || "";
    else appendCitedText(text, a.answer || "", cites);
    card.append(text);
    if (a.reason) card.append(el("p", { class: "answer-reason", text: a.reason }));

    if (cites.size) {
      const list = el("ol");
      for (const c of cites.values()) {
        const where = [c.path, c.page ? `p. ${c.page}` : null].filter(Boolean).join(", ");
        list.append(el("li", null, el("button", {
          type: "button", class: "source-link", dataset: { n: String(c.n) },
          on: { click: (e) => openPassage(c, e.currentTarget) },
        }, el("span", { class: "source-n", text: `[${c.n}]` }), c.document || c.path,
        el("span", { class: "source-path", text: where }))));
      }
      card.append(el("div", { class: "sources" }, el("p", { class: "sources-title", text: "Sources" }), list));
    }
    if (a.lineage_id) card.append(feedbackBar(a.lineage_id));
    state.history.push({ role: "user", content: turn.question }, { role: "assistant", content: a.answer || "" });
  }

  /** Open data-health alerts of the cited sources: one line each, in the answer's language. */
  function answerWarnings(warnings, language) {
    const lang = language === "zh" ? "zh" : language === "en" ? "en" : UI_LANG;
    const list = el("ul", { class: "answer-warning-list" });
    for (const w of warnings) {
      list.append(el("li", { dataset: { source: String(w.source ?? ""), alert: String(w.alert_id ?? "") } },
        t("warning.line", [w.source, term("kind", w.kind, lang), w.message || ""], lang)));
    }
    return el("div", { class: "answer-warning", role: "note", lang: lang === "zh" ? "zh-CN" : "en" },
      el("p", { class: "answer-warning-title", text: t("warning.title", [], lang) }), list);
  }

  /** The answer text with its [n] markers (and fullwidth 【n】) as buttons that open the passage. */
  function appendCitedText(node, answer, cites) {
    const re = /\[(\d{1,3})\]|【(\d{1,3})】/g;
    let last = 0;
    let m;
    while ((m = re.exec(answer)) !== null) {
      const n = Number(m[1] || m[2]);
      const c = cites.get(n);
      if (!c) continue;
      if (m.index > last) node.append(document.createTextNode(answer.slice(last, m.index)));
      node.append(el("button", {
        type: "button", class: "cite", text: `[${n}]`, dataset: { n: String(n) },
        title: [c.document, c.page ? `p. ${c.page}` : null].filter(Boolean).join(", "),
        "aria-label": `Source ${n}: ${c.document || c.path}`,
        on: { click: (e) => openPassage(c, e.currentTarget) },
      }));
      last = m.index + m[0].length;
    }
    if (last < answer.length) node.append(document.createTextNode(answer.slice(last)));
  }

  /** A thumb icon as inline SVG (no emoji font needed; SVG built in the DOM is fine under the CSP). */
  function thumb(down) {
    const NS = "http://www.w3.org/2000/svg";
    const svg = document.createElementNS(NS, "svg");
    svg.setAttribute("viewBox", "0 0 24 24");
    svg.setAttribute("aria-hidden", "true");
    svg.setAttribute("class", down ? "icon icon-down" : "icon");
    const path = document.createElementNS(NS, "path");
    path.setAttribute("d", "M2 21h4V9H2v12zm20-11c0-1.1-.9-2-2-2h-6.3l.95-4.57.03-.32c0-.41-.17-.79-.44-1.06L13.17 1 "
      + "6.59 7.59C6.22 7.95 6 8.45 6 9v10c0 1.1.9 2 2 2h9c.83 0 1.54-.5 1.84-1.22l3.02-7.05c.09-.23.14-.47.14-.73v-2z");
    svg.append(path);
    return svg;
  }

  function feedbackBar(lineageId) {
    const bar = el("div", { class: "feedback" });
    const up = el("button", { type: "button", class: "btn btn-small" }, thumb(false), "Helpful");
    const down = el("button", { type: "button", class: "btn btn-small" }, thumb(true), "Not helpful");
    const status = el("span", { class: "feedback-label", text: "Was this answer useful?" });
    bar.append(status, up, down);

    const send = async (rating, correction, form) => {
      up.disabled = down.disabled = true;
      try {
        const body = { lineage_id: lineageId, rating };
        if (correction) body.correction = correction;
        await api("POST", "/feedback", body);
        clear(bar).append(el("span", {
          class: "feedback-done", role: "status",
          text: rating === "up" ? "Thanks — your feedback was saved." : "Thanks — your feedback and correction were saved.",
        }));
      } catch (err) {
        up.disabled = down.disabled = false;
        status.textContent = `Feedback not saved: ${err.detail || err}`;
        if (form) form.querySelector("button[type=submit]").disabled = false;
      }
    };
    up.addEventListener("click", () => send("up"));
    down.addEventListener("click", () => {
      if (bar.querySelector(".feedback-form")) return;
      const area = el("textarea", { maxlength: "20000", placeholder: "What should the answer have said? (optional)", "aria-label": "Corrected answer" });
      const form = el("form", { class: "feedback-form" },
        el("label", { class: "feedback-label", text: "Corrected answer (optional)" }), area,
        el("div", { class: "row-actions" },
          el("button", { type: "button", class: "btn btn-quiet btn-small", text: "Cancel", on: { click: () => form.remove() } }),
          el("button", { type: "submit", class: "btn btn-primary btn-small", text: "Send feedback" })));
      form.addEventListener("submit", (e) => {
        e.preventDefault();
        form.querySelector("button[type=submit]").disabled = true;
        send("down", area.value.trim(), form);
      });
      bar.append(form);
      area.focus();
    });
    return bar;
  }

  // -- passage panel ------------------------------------------------------------------------------
  /** [start, end) of the quote in text: exact, else ignoring whitespace runs and case. */
  function findQuote(text, quote) {
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

  async function openPassage(cite, button) {
    const seq = ++state.passageSeq;
    const panel = $("passage-panel");
    const body = clear($("passage-body"));
    if (state.activeCite) state.activeCite.classList.remove("active");
    state.activeCite = button || null;
    if (button) button.classList.add("active");
    $("passage-title").textContent = cite.document || cite.path || "Source";
    $("passage-meta").textContent = "Loading…";
    panel.hidden = false;
    panel.closest(".chat-layout").classList.add("with-panel");
    document.body.classList.add("panel-open");
    $("passage-close").focus({ preventScroll: true });
    try {
      const p = await api("GET", `/passages/${encodeURIComponent(cite.chunk_id)}`);
      if (seq !== state.passageSeq) return;
      $("passage-title").textContent = cite.document || p.document || p.path;
      const meta = [p.path, p.page ? `page ${p.page}` : null, p.section ? `§ ${p.section}` : null, p.source ? `source ${p.source}` : null];
      $("passage-meta").textContent = meta.filter(Boolean).join(" · ");
      const text = p.text || "";
      const span = findQuote(text, cite.quote);
      if (span) {
        const mark = el("mark", { text: text.slice(span[0], span[1]) });
        body.append(document.createTextNode(text.slice(0, span[0])), mark, document.createTextNode(text.slice(span[1])));
        mark.scrollIntoView({ block: "nearest" });
      } else {
        body.append(document.createTextNode(text));
        if (cite.quote) {
          body.append(el("p", { class: "passage-quote-label", text: "Quoted in the answer:" }), el("blockquote", null, el("mark", { text: cite.quote })));
        }
      }
    } catch (err) {
      if (seq !== state.passageSeq) return;
      $("passage-meta").textContent = cite.path || "";
      body.append(el("p", { class: "error", text: err.status === 404
        ? "This passage is no longer available to you (removed, re-indexed or no longer readable)."
        : (err.detail || String(err)) }));
    }
  }

  function closePassage() {
    state.passageSeq++;
    const panel = $("passage-panel");
    if (!panel) return;
    panel.hidden = true;
    panel.closest(".chat-layout").classList.remove("with-panel");
    document.body.classList.remove("panel-open");
    if (state.activeCite) {
      state.activeCite.classList.remove("active");
      if (document.body.contains(state.activeCite)) state.activeCite.focus({ preventScroll: true });
      state.activeCite = null;
    }
  }

  // -- sources & sync -----------------------------------------------------------------------------
  function emptyRow(tbody, cols, text) {
    tbody.append(el("tr", { class: "empty-row" }, el("td", { colspan: String(cols), text })));
  }

  async function loadSources() {
    showError($("sources-error"), "");
    try {
      const [src, jobs] = await Promise.all([api("GET", "/sources"), api("GET", "/sync/jobs?limit=20")]);
      const tbody = clear($("sources-table").tBodies[0]);
      for (const s of src.sources) {
        const cfg = s.config || {};
        const where = cfg.path || cfg.url || cfg.table || "";
        tbody.append(el("tr", { dataset: { source: s.name } },
          el("td", { text: s.name }), el("td", { text: s.kind }), el("td", { class: "mono wrap", text: where }),
          el("td", { class: "nowrap", text: fmtTime(s.created_at) }),
          el("td", { class: "actions" }, el("button", {
            type: "button", class: "btn btn-small sync-now", text: "Sync now",
            on: { click: () => startSync(s.name) },
          }))));
      }
      if (!src.sources.length) emptyRow(tbody, 5, "No sources yet: add one with `bastion source add`.");
      renderJobs(jobs.jobs);
      const running = jobs.jobs.find((j) => !FINAL_JOB.has(j.status));
      if (running && !state.jobTimer) watchJob(running);
    } catch (err) {
      if (err.status !== 401) showError($("sources-error"), err.detail || String(err));
    }
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

  function statusBadge(status) {
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

  async function startSync(source) {
    showError($("sources-error"), "");
    for (const b of document.querySelectorAll(".sync-now, #sync-all")) b.disabled = true;
    try {
      const job = await api("POST", "/sync", source ? { source } : {});
      toast(`Sync of ${source || "all sources"} started`);
      watchJob(job);
    } catch (err) {
      showError($("sources-error"), err.detail || String(err));
      for (const b of document.querySelectorAll(".sync-now, #sync-all")) b.disabled = false;
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
    state.liveJob = job.id;
    renderLiveJob(job);
    const tick = async () => {
      state.jobTimer = null;
      try {
        const j = await api("GET", `/sync/jobs/${encodeURIComponent(job.id)}`);
        if (state.liveJob !== job.id) return;
        renderLiveJob(j);
        if (FINAL_JOB.has(j.status)) {
          state.liveJob = null;
          for (const b of document.querySelectorAll(".sync-now, #sync-all")) b.disabled = false;
          const jobs = await api("GET", "/sync/jobs?limit=20");
          renderJobs(jobs.jobs);
          return;
        }
      } catch (err) {
        if (err.status === 401) return;
        $("job-live-text").textContent = `Could not read the job: ${err.detail || err}`;
      }
      if (state.liveJob === job.id) state.jobTimer = setTimeout(tick, 1000);
    };
    state.jobTimer = setTimeout(tick, 1000);
  }

  function stopJobPolling(hide = true) {
    if (state.jobTimer) clearTimeout(state.jobTimer);
    state.jobTimer = null;
    state.liveJob = null;
    for (const b of document.querySelectorAll(".sync-now, #sync-all")) b.disabled = false;
    if (hide && $("job-live")) $("job-live").hidden = true;
  }

  // -- data health -----------------------------------------------------------------------------------
  async function loadHealth() {
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

  async function runChecks() {
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

  // -- evaluation ------------------------------------------------------------------------------------
  const EVAL_SHARES = ["contains", "f1", "groundedness", "citation_accuracy",
    "abstention_recall_unanswerable", "abstention_recall_forbidden"];

  function fmtNumber(v, digits) {
    return typeof v === "number" && Number.isFinite(v) ? v.toFixed(digits) : "—";
  }

  async function loadEval() {
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

  // -- admin: users, groups, keys -------------------------------------------------------------------
  const splitGroups = (s) => s.split(/[,，\s]+/).map((g) => g.trim()).filter(Boolean);

  async function loadAdmin() {
    showError($("admin-error"), "");
    try {
      const [users, groups, keys] = await Promise.all([api("GET", "/users"), api("GET", "/groups"), api("GET", "/keys")]);
      renderUsers(users.users);
      renderGroups(groups.groups);
      renderKeys(keys.keys);
    } catch (err) {
      if (err.status !== 401) showError($("admin-error"), err.detail || String(err));
    }
  }

  function renderUsers(users) {
    const tbody = clear($("users-table").tBodies[0]);
    for (const u of users) {
      const role = el("select", { "aria-label": `Role of ${u.user}` },
        ...["member", "editor", "admin"].map((r) => el("option", { value: r, text: r, selected: r === u.role })));
      const groups = el("input", { class: "groups-input", value: u.groups.join(", "), "aria-label": `Groups of ${u.user}` });
      const save = el("button", { type: "button", class: "btn btn-small", text: "Save" });
      save.addEventListener("click", async () => {
        save.disabled = true;
        showError($("admin-error"), "");
        try {
          const d = await api("PATCH", `/users/${encodeURIComponent(u.user)}`, { role: role.value, groups: splitGroups(groups.value) });
          toast(`Saved ${d.user}: ${d.role}, ${d.groups.join(", ") || "no groups"}`);
          loadAdmin();
        } catch (err) {
          showError($("admin-error"), err.detail || String(err));
        } finally {
          save.disabled = false;
        }
      });
      tbody.append(el("tr", { dataset: { user: u.user } },
        el("td", { class: "user-name", text: u.user }), el("td", null, role), el("td", null, groups),
        el("td", { class: "actions" }, save)));
    }
    if (!users.length) emptyRow(tbody, 4, "No users.");
  }

  function renderGroups(groups) {
    const tbody = clear($("groups-table").tBodies[0]);
    const names = Object.keys(groups).sort();
    for (const g of names) tbody.append(el("tr", null, el("td", { text: g }), el("td", { text: groups[g].join(", ") })));
    if (!names.length) emptyRow(tbody, 2, "No groups.");
  }

  function renderKeys(keys) {
    const tbody = clear($("keys-table").tBodies[0]);
    for (const k of keys) {
      const stateText = k.active ? "active" : k.revoked_at ? "revoked" : "expired";
      const cell = el("td", { class: "actions" });
      if (k.active) {
        const revoke = el("button", { type: "button", class: "btn btn-small btn-danger", text: "Revoke" });
        revoke.addEventListener("click", async () => {
          if (revoke.dataset.armed !== "1") { // two clicks: no window.confirm, which a CSP'd kiosk may block
            revoke.dataset.armed = "1";
            revoke.textContent = "Confirm revoke";
            return;
          }
          revoke.disabled = true;
          try {
            await api("DELETE", `/keys/${encodeURIComponent(k.id)}`);
            toast(`Key ${k.id} revoked`);
            loadAdmin();
          } catch (err) {
            showError($("admin-error"), err.detail || String(err));
            revoke.disabled = false;
          }
        });
        cell.append(revoke);
      }
      tbody.append(el("tr", { dataset: { key: k.id } },
        el("td", { class: "mono", text: k.id }), el("td", { text: k.user }), el("td", { text: k.name || "" }),
        el("td", { class: "nowrap", text: fmtTime(k.created_at) }), el("td", { class: "nowrap", text: fmtTime(k.expires_at) }),
        el("td", { class: "nowrap", text: fmtTime(k.last_used_at) }),
        el("td", null, el("span", { class: k.active ? "badge badge-ok" : "badge badge-bad", text: stateText })), cell));
    }
    if (!keys.length) emptyRow(tbody, 8, "No API keys.");
  }

  function formStatus(form, text, ok) {
    const s = form.querySelector(".form-status");
    s.textContent = text;
    s.classList.toggle("ok", ok === true);
    s.classList.toggle("bad", ok === false);
  }

  async function addUser(ev) {
    ev.preventDefault();
    const f = ev.currentTarget;
    const body = { user: f.user.value.trim(), groups: splitGroups(f.groups.value), role: f.role.value };
    if (f.password.value) body.password = f.password.value;
    try {
      const d = await api("POST", "/users", body);
      f.reset();
      formStatus(f, `Added ${d.user} (${d.role}).`, true);
      loadAdmin();
    } catch (err) {
      formStatus(f, err.detail || String(err), false);
    }
  }

  async function createKey(ev) {
    ev.preventDefault();
    const f = ev.currentTarget;
    const body = {};
    for (const k of ["user", "name", "expires_in"]) if (f[k].value.trim()) body[k] = f[k].value.trim();
    try {
      const d = await api("POST", "/keys", body);
      f.reset();
      formStatus(f, `Created key ${d.id} for ${d.user}.`, true);
      $("new-key-value").value = d.key;
      $("new-key-hint").textContent = "Store it in your password manager or the client's configuration; Bastion keeps only a hash.";
      $("new-key").hidden = false;
      $("new-key-value").select();
      loadAdmin();
    } catch (err) {
      formStatus(f, err.detail || String(err), false);
    }
  }

  async function copyKey() {
    const input = $("new-key-value");
    input.select();
    try {
      await navigator.clipboard.writeText(input.value);
      $("new-key-hint").textContent = "Copied to the clipboard.";
    } catch (_) {
      $("new-key-hint").textContent = "Selected: press Ctrl+C (⌘C) to copy.";
    }
  }

  // -- audit ------------------------------------------------------------------------------------------
  function auditFilters() {
    const f = $("audit-form");
    let since = "";
    if (f.since.value) {
      const d = new Date(f.since.value); // local time in the picker -> UTC for the API
      if (!Number.isNaN(d.getTime())) since = d.toISOString();
    }
    return { actor: f.actor.value.trim(), action: f.action.value.trim(), outcome: f.outcome.value, since };
  }

  async function loadAudit(reset) {
    const f = $("audit-form");
    const filters = auditFilters();
    const limit = Math.max(1, Math.min(1000, Number(f.limit.value) || 200));
    $("audit-export").href = `${API}/audit/export${query(filters)}`;
    showError($("audit-error"), "");
    const tbody = $("audit-table").tBodies[0];
    if (reset) state.auditAfter = null;
    try {
      const d = await api("GET", `/audit${query({ ...filters, limit, order: "desc", before_id: state.auditAfter })}`);
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
      if (d.entries.length) state.auditAfter = d.entries[d.entries.length - 1].id;
      if (reset && !d.entries.length) emptyRow(tbody, 9, "No entries match.");
      const shown = tbody.querySelectorAll("tr:not(.empty-row)").length;
      $("audit-count").textContent = `${shown} entr${shown === 1 ? "y" : "ies"}, newest first.`;
      $("audit-more").hidden = d.entries.length < limit;
    } catch (err) {
      if (err.status !== 401) showError($("audit-error"), err.detail || String(err));
    }
  }

  // -- wiring ------------------------------------------------------------------------------------------
  function init() {
    $("login-form").addEventListener("submit", login);
    $("logout").addEventListener("click", logout);
    $("ask-form").addEventListener("submit", ask);
    $("ask-stop").addEventListener("click", () => state.asking && state.asking.abort());
    $("question").addEventListener("keydown", (e) => {
      if (e.key === "Enter" && !e.shiftKey && !e.isComposing) { // isComposing: Chinese IME confirms with Enter
        e.preventDefault();
        ask();
      }
    });
    $("new-chat").addEventListener("click", newConversation);
    $("passage-close").addEventListener("click", closePassage);
    document.addEventListener("keydown", (e) => {
      if (e.key === "Escape" && !$("passage-panel").hidden) closePassage();
    });
    $("sync-all").addEventListener("click", () => startSync(null));
    $("health-run").addEventListener("click", runChecks);
    $("eval-refresh").addEventListener("click", loadEval);
    $("user-form").addEventListener("submit", addUser);
    $("key-form").addEventListener("submit", createKey);
    $("new-key-copy").addEventListener("click", copyKey);
    $("audit-form").addEventListener("submit", (e) => { e.preventDefault(); loadAudit(true); });
    $("audit-more").addEventListener("click", () => loadAudit(false));
    window.addEventListener("hashchange", route);
    resume();
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", init);
  else init();
})();
