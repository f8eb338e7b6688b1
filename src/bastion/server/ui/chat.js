/* Chat: questions and cited answers (streamed), the assistant picker, and feedback.
 * The saved chats of the sidebar are in conversations.js. */
import {
  $, API, ApiError, clear, el, errorBlock, headers, hooks, icon, isAdmin, problem, state, t, technical, term,
  api, looksChinese,
} from "./core.js";
import { openViewer, closeViewer } from "./viewer.js";
import { conversationSaved, currentConversation, saveTarget } from "./conversations.js";

const MAX_HISTORY_TURNS = 20; // the API takes at most 50 messages
const chat = { history: [], asking: null, assistants: [] };

// -- the assistant picker -------------------------------------------------------------------------
const pickKey = () => `bastion.assistant.${state.user}`;

export async function loadAssistants() {
  const box = $("assistant-picker");
  const select = clear($("assistant"));
  box.hidden = true;
  try {
    chat.assistants = (await api("GET", "/assistants")).assistants || [];
  } catch (_) {
    chat.assistants = [];
  }
  if (chat.assistants.length < 2) return; // nothing to choose
  let saved = null;
  try { saved = localStorage.getItem(pickKey()); } catch (_) { /* storage off */ }
  for (const a of chat.assistants) {
    const label = a.name === "bastion" ? "Standard" : a.name;
    select.append(el("option", { value: a.name, text: a.description ? `${label} — ${a.description}` : label,
      selected: a.name === saved }));
  }
  box.hidden = false;
}

function chosenAssistant() {
  const select = $("assistant");
  return !$("assistant-picker").hidden && select.value ? select.value : undefined;
}

// -- the conversation on screen ------------------------------------------------------------------------
/** Empty the screen for a new chat (the saved chats stay in the sidebar). */
export function clearChat() {
  if (chat.asking) chat.asking.abort();
  const empty = $("chat-empty"); // keep the hint: it is the conversation's only permanent child
  clear($("conversation")).append(empty);
  empty.hidden = false;
  chat.history = [];
  closeViewer();
}

/** Show saved turns (a reopened chat): the same cards as live answers. */
export function showTurns(turns) {
  clearChat();
  for (const turn of turns) {
    $("chat-empty").hidden = true;
    const card = addQuestion(turn.question);
    const decision = turn.decision || (turn.abstained ? "abstained" : "answered");
    renderAnswer({ card, question: turn.question, done: false }, {
      answer: turn.answer, citations: turn.citations || [], decision, abstained: decision === "abstained",
      message: turn.message, lineage_id: turn.lineage_id, language: turn.language, reason: turn.reason,
      warnings: turn.warnings,
    });
  }
  const last = $("conversation").lastElementChild;
  if (last) last.scrollIntoView({ block: "end" });
}

export function focusQuestion() { $("question").focus(); }

function setAsking(ctrl) {
  chat.asking = ctrl;
  $("ask-submit").disabled = !!ctrl;
  $("ask-stop").hidden = !ctrl;
}

function langAttr(language) {
  if (!language) return null;
  return language === "zh" ? "zh-CN" : language;
}

function addQuestion(question) {
  const conv = $("conversation");
  conv.append(el("div", { class: "turn-question", text: question, lang: looksChinese(question) ? "zh-CN" : null }));
  const card = el("article", { class: "turn-answer", "aria-label": "Answer" });
  conv.append(card);
  return card;
}

async function ask(ev) {
  if (ev) ev.preventDefault();
  if (chat.asking) return;
  const box = $("question");
  const question = box.value.trim();
  if (!question) return;
  box.value = "";
  $("chat-empty").hidden = true;

  const card = addQuestion(question);
  const text = el("div", { class: "answer-text thinking", text: "Searching your documents" });
  card.append(text);
  card.scrollIntoView({ block: "nearest" });

  const turn = { question, card, text, done: false };
  const ctrl = new AbortController();
  setAsking(ctrl);
  try {
    const body = { question, stream: true, history: chat.history.slice(-2 * MAX_HISTORY_TURNS) };
    const assistant = chosenAssistant();
    if (assistant) body.assistant = assistant;
    const saving = await saveTarget(); // the open chat, or a new one the server starts from this question
    if (saving) Object.assign(body, saving);
    const resp = await fetch(`${API}/ask`, {
      method: "POST",
      credentials: "same-origin",
      cache: "no-store",
      signal: ctrl.signal,
      headers: headers("POST", { "Content-Type": "application/json", Accept: "text/event-stream" }),
      body: JSON.stringify(body),
    });
    if (!resp.ok) {
      const err = await problem(resp);
      if (resp.status === 401) hooks.sessionExpired(err.detail);
      throw err;
    }
    if (!(resp.headers.get("content-type") || "").includes("text/event-stream")) {
      renderAnswer(turn, await resp.json());
    } else {
      await readEvents(resp, (event, data) => {
        if (event === "draft") renderDraft(turn, data);
        else if (event === "answer") renderAnswer(turn, data);
        else if (event === "error") renderFailure(turn, new ApiError(data.status || 500, data.detail || "the server could not answer", data));
      });
    }
    if (!turn.done) renderFailure(turn, new ApiError(502, "The answer stream ended before the answer arrived."));
  } catch (err) {
    renderFailure(turn, err);
  } finally {
    setAsking(null);
    card.scrollIntoView({ block: "nearest" });
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

function renderFailure(turn, err) {
  if (turn.done) return;
  turn.done = true;
  clear(turn.card).append(errorBlock(err, "answer-error"));
}

// -- answers -----------------------------------------------------------------------------------------
/** Citations with the same quote (the same passage indexed from several sources) become one group:
 * shown once, with every source. A citation's own `sources` (the server's grouping) count too. */
function groupCitations(citations) {
  const groups = [];
  const byQuote = new Map();
  const byN = new Map();
  for (const c of citations || []) {
    const key = String(c.quote || c.chunk_id || "").replace(/\s+/g, " ").trim().toLowerCase();
    let g = key ? byQuote.get(key) : null;
    if (!g) {
      g = { n: groups.length + 1, quote: c.quote, first: c, sources: [] };
      groups.push(g);
      if (key) byQuote.set(key, g);
    }
    byN.set(Number(c.n), g);
    const own = { chunk_id: c.chunk_id, doc_id: c.doc_id, document: c.document, path: c.path, page: c.page, source: c.source };
    for (const s of Array.isArray(c.sources) && c.sources.length ? c.sources : [own]) {
      const entry = { ...s, document: s.document || s.title || s.path };
      if (!entry.chunk_id || g.sources.some((x) => x.chunk_id === entry.chunk_id
        || (x.doc_id && x.doc_id === entry.doc_id && x.source === entry.source && x.path === entry.path))) continue;
      g.sources.push(entry);
    }
  }
  return { groups, byN };
}

/** The answer text without lines that repeat an earlier line of the same quote group (extract answers
 * list each quote on its own line: a quote found in two sources would show twice). */
function dedupeLines(answer, byN) {
  const seen = new Set();
  const out = [];
  for (const line of String(answer || "").split("\n")) {
    const markers = [...line.matchAll(/\[(\d{1,3})\]|【(\d{1,3})】/g)].map((m) => byN.get(Number(m[1] || m[2])));
    const key = `${line.replace(/\[(\d{1,3})\]|【(\d{1,3})】/g, "").replace(/\s+/g, " ").trim()}|${markers.map((g) => g && g.n).join(",")}`;
    if (markers.length && markers.every(Boolean) && seen.has(key)) continue;
    seen.add(key);
    out.push(line);
  }
  return out.join("\n");
}

function renderAnswer(turn, a) {
  if (turn.done) return;
  turn.done = true;
  const card = clear(turn.card);
  const decision = a.decision || (a.abstained ? "abstained" : "answered");
  const abstained = !!a.abstained || decision === "abstained";
  card.classList.toggle("abstained", abstained);
  card.dataset.decision = decision;
  const lang = langAttr(a.language);
  if (lang) card.setAttribute("lang", lang);
  const textLang = a.language === "zh" ? "zh" : "en";
  const { groups, byN } = groupCitations(a.citations);

  // the server's plain sentence for employees (`message`) says what kind of answer this is
  if (abstained) {
    card.append(el("p", { class: "abstain-label", text: t("abstain.label", [], textLang) }),
      el("p", { class: "answer-text answer-message", text: a.message || a.answer || "" }),
      el("p", { class: "answer-tip", text: t("abstain.tip", [], textLang) }));
  } else {
    if (decision === "extracted") card.append(el("p", { class: "extracted-label answer-message", text: a.message || t("extracted.label", [], textLang) }));
    else if (a.message) card.append(el("p", { class: "answer-message", text: a.message }));
    if (Array.isArray(a.warnings) && a.warnings.length) card.append(answerWarnings(a.warnings, a.language));
    const text = el("div", { class: "answer-text" });
    appendCitedText(text, dedupeLines(a.answer, byN), byN);
    card.append(text);
  }
  if (a.reason) { // members get it in plain words from the server; admins the technical reason
    card.append(isAdmin() ? technical(a.reason)
      : el("details", { class: "technical why" }, el("summary", { text: "Why?" }), el("p", { text: capitalise(a.reason) })));
  }

  if (groups.length) {
    const list = el("ol", { class: "source-list" });
    for (const g of groups) list.append(sourceItem(g));
    card.append(el("div", { class: "sources" }, el("h3", { class: "sources-title", text: "Sources" }), list));
  }
  if (a.lineage_id) card.append(feedbackBar(a.lineage_id));
  if (!abstained || a.answer) chat.history.push({ role: "user", content: turn.question }, { role: "assistant", content: a.answer || "" });
  if (a.conversation_id || currentConversation()) conversationSaved(a.conversation_id);
}

const capitalise = (s) => (s ? s[0].toUpperCase() + s.slice(1) : s);

function where(s) {
  return [s.path, s.page ? `p. ${s.page}` : null, s.source].filter(Boolean).join(" · ");
}

function sourceItem(g) {
  const [main, ...others] = g.sources;
  const open = (s, e) => openViewer({ ...s, quote: g.quote, also: g.sources.filter((x) => x !== s) }, e.currentTarget);
  const li = el("li", { dataset: { n: String(g.n) } }, el("button", {
    type: "button", class: "source-link", dataset: { n: String(g.n) }, on: { click: (e) => open(main, e) },
  }, el("span", { class: "source-n", text: `[${g.n}]` }), main.document || main.path,
  el("span", { class: "source-path", text: where(main) })));
  if (others.length) {
    const also = el("ul", { class: "also-list" });
    for (const s of others) {
      also.append(el("li", null, el("button", { type: "button", class: "source-link source-also", on: { click: (e) => open(s, e) } },
        s.document || s.path, el("span", { class: "source-path", text: where(s) }))));
    }
    li.append(el("p", { class: "also-title", text: `The same passage is also in ${others.length === 1 ? "1 other document" : `${others.length} other documents`}:` }), also);
  }
  return li;
}

/** Open data-health alerts of the cited sources: one line each, in the answer's language. */
function answerWarnings(warnings, language) {
  const lang = language === "zh" ? "zh" : "en";
  const list = el("ul", { class: "answer-warning-list" });
  for (const w of warnings) { // admins read the alert itself; members what it means for them, in plain words
    const plain = ["freshness", "quality", "parse", "drift"].includes(w.kind) ? `warning.plain.${w.kind}` : "warning.plain.other";
    list.append(el("li", { dataset: { source: String(w.source ?? ""), alert: String(w.alert_id ?? "") } },
      isAdmin() ? t("warning.line", [w.source, term("kind", w.kind, lang), w.message || ""], lang) : t(plain, [w.source], lang)));
  }
  return el("div", { class: "answer-warning", role: "note", lang: lang === "zh" ? "zh-CN" : "en" },
    el("p", { class: "answer-warning-title", text: t("warning.title", [], lang) }), list);
}

/** The answer text with its [n] markers (and fullwidth 【n】) as buttons that open the passage; markers of
 * one quote group in a row show once. */
function appendCitedText(node, answer, byN) {
  const re = /\[(\d{1,3})\]|【(\d{1,3})】/g;
  let last = 0;
  let previous = null;
  let m;
  while ((m = re.exec(answer)) !== null) {
    const g = byN.get(Number(m[1] || m[2]));
    if (!g) continue;
    const between = answer.slice(last, m.index);
    if (between) node.append(document.createTextNode(between));
    if (!(previous === g && !between.trim())) {
      const main = g.sources[0] || g.first;
      node.append(el("button", {
        type: "button", class: "cite", text: `[${g.n}]`, dataset: { n: String(g.n) },
        title: [main.document, main.page ? `p. ${main.page}` : null].filter(Boolean).join(", "),
        "aria-label": `Source ${g.n}: ${main.document || main.path}`,
        on: { click: (e) => openViewer({ ...main, quote: g.quote, also: g.sources.slice(1) }, e.currentTarget) },
      }));
    }
    previous = g;
    last = m.index + m[0].length;
  }
  if (last < answer.length) node.append(document.createTextNode(answer.slice(last)));
}

function feedbackBar(lineageId) {
  const bar = el("div", { class: "feedback" });
  const up = el("button", { type: "button", class: "btn btn-small" }, icon("thumb"), "Helpful");
  const down = el("button", { type: "button", class: "btn btn-small" }, icon("thumb", "icon-down"), "Not helpful");
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
    const id = `fb-${lineageId}`;
    const area = el("textarea", { id, maxlength: "20000", placeholder: "What should the answer have said? (optional)" });
    const form = el("form", { class: "feedback-form" },
      el("label", { class: "feedback-label", for: id, text: "Corrected answer (optional)" }), area,
      el("div", { class: "row-actions" },
        el("button", { type: "button", class: "btn btn-quiet btn-small", text: "Cancel", on: { click: () => { form.remove(); down.focus(); } } }),
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

export function stopAsking() { if (chat.asking) chat.asking.abort(); }

export function initChat() {
  $("ask-form").addEventListener("submit", ask);
  $("ask-stop").addEventListener("click", stopAsking);
  $("question").addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey && !e.isComposing) { // isComposing: Chinese IME confirms with Enter
      e.preventDefault();
      ask();
    }
  });
  $("assistant").addEventListener("change", () => {
    try { localStorage.setItem(pickKey(), $("assistant").value); } catch (_) { /* storage off */ }
  });
}
