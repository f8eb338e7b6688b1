/* The document viewer: a side panel on wide screens, a full-screen sheet on phones. It shows the cited
 * (or found) passage with the quote or the search words marked, the whole document on request, and
 * links to open or download the original file. */
import {
  $, API, api, appendMarked, clear, el, findQuote, icon, plainError, termRanges, holdSheet,
} from "./core.js";

const NARROW = window.matchMedia("(max-width: 760px)");
const view = { seq: 0, opener: null, release: null, target: null };

/** What to show: {chunk_id, doc_id?, document?, path?, quote?, terms?, also?: [{...source}]}. */
export async function openViewer(target, opener) {
  const seq = ++view.seq;
  view.target = target;
  const panel = $("passage-panel");
  const body = clear($("passage-body"));
  clear($("passage-actions"));
  clear($("passage-also"));
  if (view.opener && view.opener !== opener) view.opener.classList.remove("active");
  view.opener = opener || null;
  if (opener) opener.classList.add("active");
  $("passage-title").textContent = target.document || target.path || "Document";
  $("passage-meta").textContent = "Loading…";
  panel.hidden = false;
  document.body.classList.add("panel-open");
  if (view.release) view.release();
  view.release = NARROW.matches ? holdSheet(panel) : null; // a full-screen sheet keeps the focus inside
  $("passage-close").focus({ preventScroll: true });
  if (!target.chunk_id) { // a document from the list: all of it
    await openDocument(target, seq);
    return;
  }
  try {
    const p = await api("GET", `/passages/${encodeURIComponent(target.chunk_id)}`);
    if (seq !== view.seq) return;
    $("passage-title").textContent = target.document || p.document || p.path;
    const meta = [p.path, p.page ? `page ${p.page}` : null, p.section ? `§ ${p.section}` : null, p.source ? `source ${p.source}` : null];
    $("passage-meta").textContent = meta.filter(Boolean).join(" · ");
    renderAlso(target.also || []);
    renderActions(p.doc_id || target.doc_id, p);
    renderSingle(body, p, target);
  } catch (err) {
    if (seq !== view.seq) return;
    $("passage-meta").textContent = target.path || "";
    body.append(el("p", { class: "error", role: "alert", text: err.status === 404
      ? "This passage is no longer available to you (removed, re-indexed or no longer readable)."
      : plainError(err) }));
  }
}

async function openDocument(target, seq) {
  try {
    const doc = await api("GET", `/documents/${encodeURIComponent(target.doc_id)}`);
    if (seq !== view.seq) return;
    $("passage-title").textContent = doc.title || target.document || doc.path;
    $("passage-meta").textContent = [doc.path, doc.source ? `source ${doc.source}` : null].filter(Boolean).join(" · ");
    renderActions(doc.id || target.doc_id, { path: doc.path }, false);
    const body = $("passage-body");
    for (const p of doc.passages || []) body.append(el("div", { class: "doc-passage", dataset: { chunk: p.chunk_id } }, p.text || ""));
    if (!(doc.passages || []).length) body.append(el("p", { class: "muted", text: "This document has no text you can read." }));
  } catch (err) {
    if (seq !== view.seq) return;
    $("passage-meta").textContent = target.path || "";
    $("passage-body").append(el("p", { class: "error", role: "alert", text: err.status === 404
      ? "This document is no longer available to you." : plainError(err) }));
  }
}

/** The passage in the text around it (muted), the quote or the search words marked. */
function renderSingle(body, p, target) {
  if (p.before) body.append(el("span", { class: "passage-context", text: `…${p.before}` }));
  const current = el("span", { class: "passage-current-text" });
  body.append(current);
  if (p.after) body.append(el("span", { class: "passage-context", text: `${p.after}…` }));
  renderPassage(current, p.text || "", target, true);
}

/** The passage text with the quote marked (else the search words); returns the first mark. */
function renderPassage(node, text, target, scroll) {
  let first = null;
  const span = findQuote(text, target.quote);
  if (span) {
    first = appendMarked(node, text, [span]);
  } else if (target.terms && target.terms.length) {
    first = appendMarked(node, text, termRanges(text, target.terms));
  } else {
    node.append(document.createTextNode(text));
    if (target.quote) {
      node.append(el("p", { class: "passage-quote-label", text: "Quoted in the answer:" }),
        el("blockquote", null, el("mark", { text: target.quote })));
    }
  }
  if (scroll && first) first.scrollIntoView({ block: "nearest" });
  return first;
}

/** The same quote found in other documents (a citation with several sources). */
function renderAlso(also) {
  const box = $("passage-also");
  if (!also.length) return;
  const list = el("ul", { class: "also-list" });
  for (const s of also) {
    list.append(el("li", null, el("button", {
      type: "button", class: "source-link",
      on: { click: () => openViewer({ ...view.target, ...s, also: swapAlso(view.target, s) }, view.opener) },
    }, s.document || s.title || s.path, el("span", { class: "source-path", text: [s.path, s.source].filter(Boolean).join(" · ") }))));
  }
  box.append(el("p", { class: "also-title", text: "The same passage is also in:" }), list);
}

function swapAlso(current, chosen) {
  const me = { chunk_id: current.chunk_id, doc_id: current.doc_id, document: current.document, path: current.path,
    source: current.source };
  return [me, ...(current.also || []).filter((s) => s.chunk_id !== chosen.chunk_id)];
}

function renderActions(docId, passage, withWhole = true) {
  const bar = $("passage-actions");
  if (!docId) return;
  const original = passage.original || `${API}/documents/${encodeURIComponent(docId)}/original`;
  const name = (passage.path || "document").split("/").pop();
  const whole = el("button", { type: "button", class: "btn btn-small", id: "passage-whole", "aria-pressed": "false" },
    icon("file"), "Whole document");
  whole.addEventListener("click", () => toggleWhole(docId, passage, whole));
  const page = /^https?:\/\//.test(passage.original_url || "") ? passage.original_url : null;
  if (page) {  // a web page: its original is the page itself, opened at its own address
    bar.append(el("a", { class: "btn btn-small", href: page, target: "_blank", rel: "noopener noreferrer",
      id: "passage-original" }, icon("open"), "Open page"));
  } else {
    bar.append(
      el("a", { class: "btn btn-small", href: original, target: "_blank", rel: "noopener", id: "passage-original" },
        icon("open"), "Open original"),
      el("a", { class: "btn btn-small", href: `${original}?download=true`, download: name, id: "passage-download" },
        icon("download"), "Download"));
  }
  if (withWhole) bar.append(whole);
}

/** Show every passage of the document the user may read, the current one marked; or back to the one. */
async function toggleWhole(docId, passage, button) {
  const seq = view.seq;
  const body = $("passage-body");
  if (button.getAttribute("aria-pressed") === "true") {
    button.setAttribute("aria-pressed", "false");
    clear(body);
    renderSingle(body, passage, view.target);
    return;
  }
  if (!passage.chunk_id) return;
  button.disabled = true;
  try {
    const doc = await api("GET", `/documents/${encodeURIComponent(docId)}`);
    if (seq !== view.seq) return;
    clear(body);
    let current = null;
    for (const p of doc.passages || []) {
      const block = el("div", { class: "doc-passage", dataset: { chunk: p.chunk_id } });
      if (p.chunk_id === passage.chunk_id) {
        block.classList.add("passage-current");
        renderPassage(block, p.text || "", view.target, false);
        current = block;
      } else {
        block.append(document.createTextNode(p.text || ""));
      }
      body.append(block);
    }
    button.setAttribute("aria-pressed", "true");
    if (current) (current.querySelector("mark") || current).scrollIntoView({ block: "center" });
  } catch (err) {
    body.append(el("p", { class: "error", role: "alert", text: plainError(err) }));
  } finally {
    button.disabled = false;
  }
}

export function viewerOpen() { return !$("passage-panel").hidden; }

export function closeViewer() {
  view.seq++;
  const panel = $("passage-panel");
  if (!panel || panel.hidden) return;
  panel.hidden = true;
  document.body.classList.remove("panel-open");
  if (view.release) view.release();
  view.release = null;
  if (view.opener) {
    view.opener.classList.remove("active");
    if (document.body.contains(view.opener)) view.opener.focus({ preventScroll: true });
    view.opener = null;
  }
}

export function initViewer() {
  $("passage-close").addEventListener("click", closeViewer);
}
