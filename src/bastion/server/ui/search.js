/* Search: documents, not answers. Each result is a document with the best matching passage as a
 * snippet (the search words marked); it opens in the viewer. With no search, the documents the user
 * may read are listed. */
import {
  $, api, appendMarked, clear, el, errorBlock, fmtAgo, looksChinese, plural, queryTerms, termRanges,
} from "./core.js";
import { openViewer } from "./viewer.js";

const search = { seq: 0, last: null };
const SNIPPET = 240;

/** The router's entry: `#search` (the document list) or `#search/QUERY`. */
export function enterSearch(q) {
  const box = $("search-q");
  if (q !== box.value) box.value = q || "";
  if (q) runSearch(q);
  else listDocuments();
  box.focus();
}

function submit(ev) {
  ev.preventDefault();
  const q = $("search-q").value.trim();
  if (!q) return;
  const hash = `#search/${encodeURIComponent(q)}`;
  if (location.hash === hash) runSearch(q); // the same search again: no hashchange
  else location.hash = hash;
}

const norm = (s) => String(s || "").replace(/\s+/g, " ").trim().toLowerCase();

/** One result per document (its hits in score order), and a passage found in several documents (the
 * same file indexed from two sources) once, with the others as "also in". */
function groupHits(hits) {
  const results = [];
  const byDoc = new Map();
  const byText = new Map();
  for (const h of hits) {
    const key = norm(h.text);
    const same = byText.get(key);
    if (same && same.doc_id !== h.doc_id) {
      if (!same.also.some((a) => a.doc_id === h.doc_id)) {
        same.also.push({ chunk_id: h.chunk_id, doc_id: h.doc_id, document: h.document, path: h.path, source: h.source });
      }
      continue;
    }
    let r = byDoc.get(h.doc_id);
    if (!r) {
      r = { doc_id: h.doc_id, document: h.document, path: h.path, source: h.source, hits: [], also: [] };
      byDoc.set(h.doc_id, r);
      results.push(r);
    }
    r.hits.push(h);
    if (!byText.has(key)) byText.set(key, r);
  }
  return results;
}

async function runSearch(q) {
  const seq = ++search.seq;
  const list = clear($("search-results"));
  const status = $("search-status");
  clear($("search-error"));
  $("search-heading").textContent = "Results";
  status.textContent = "Searching…";
  list.setAttribute("aria-busy", "true");
  try {
    const d = await api("POST", "/search", { query: q, k: 30 });
    if (seq !== search.seq) return;
    const results = groupHits(d.hits || []);
    const terms = queryTerms(q);
    status.textContent = results.length
      ? `${plural(results.length, "document")} match “${q}”.`
      : `No documents you can read match “${q}”. Try other or fewer words.`;
    for (const r of results) list.append(resultItem(r, terms));
  } catch (err) {
    if (seq !== search.seq) return;
    status.textContent = "";
    $("search-error").append(errorBlock(err));
  } finally {
    if (seq === search.seq) list.removeAttribute("aria-busy");
  }
}

/** The text around the first marked word, cut at words, with its ranges moved along. */
function snippet(text, ranges) {
  const flat = text.replace(/\s+/g, " ");
  const r = termRanges(flat, ranges.terms);
  if (flat.length <= SNIPPET) return { text: flat, ranges: r };
  const first = r.length ? r[0][0] : 0;
  let start = Math.max(0, first - 60);
  if (start > 0) {
    const space = flat.lastIndexOf(" ", start);
    start = space > start - 30 ? space + 1 : start;
  }
  let end = Math.min(flat.length, start + SNIPPET);
  if (end < flat.length) {
    const space = flat.indexOf(" ", end);
    end = space > 0 && space < end + 30 ? space : end;
  }
  const pre = start > 0 ? "…" : "";
  const post = end < flat.length ? "…" : "";
  const shown = `${pre}${flat.slice(start, end)}${post}`;
  const moved = r.filter(([a, b]) => a >= start && b <= end).map(([a, b]) => [a - start + pre.length, b - start + pre.length]);
  return { text: shown, ranges: moved };
}

function resultItem(r, terms) {
  const best = r.hits[0];
  const title = r.document || r.path;
  const open = (h, e) => openViewer({ chunk_id: h.chunk_id, doc_id: r.doc_id, document: title, path: r.path, terms,
    also: r.also }, e.currentTarget);
  const titleButton = el("button", { type: "button", class: "result-open", on: { click: (e) => open(best, e) } }, title);
  const meta = [r.path, best.page ? `page ${best.page}` : null, best.section ? `§ ${best.section}` : null, r.source]
    .filter(Boolean).join(" · ");
  const s = snippet(best.text || "", { terms });
  const text = el("p", { class: "result-snippet", lang: looksChinese(s.text) ? "zh-CN" : null });
  appendMarked(text, s.text, s.ranges);
  const item = el("li", { class: "result", dataset: { doc: r.doc_id } },
    el("h3", { class: "result-title" }, titleButton),
    el("p", { class: "result-meta", text: meta }), text);
  if (r.hits.length > 1) {
    const more = el("ul", { class: "result-more" });
    r.hits.slice(1, 4).forEach((h, i) => {
      const where = [h.page ? `page ${h.page}` : null, h.section ? `§ ${h.section}` : null].filter(Boolean).join(", ");
      more.append(el("li", null, el("button", { type: "button", class: "source-link", on: { click: (e) => open(h, e) } },
        `Another matching passage${where ? ` (${where})` : ` (${i + 2})`}`)));
    });
    item.append(more);
  }
  if (r.also.length) {
    item.append(el("p", { class: "result-also", text: `The same passage is also in: ${r.also.map((a) => [a.path, a.source].filter(Boolean).join(" · ")).join("; ")}` }));
  }
  return item;
}

/** No search yet: the documents the user may read, newest first. */
async function listDocuments() {
  const seq = ++search.seq;
  const list = clear($("search-results"));
  clear($("search-error"));
  $("search-heading").textContent = "Your documents";
  const status = $("search-status");
  status.textContent = "Loading…";
  try {
    const d = await api("GET", "/documents?limit=200");
    if (seq !== search.seq) return;
    const docs = (d.documents || []).filter((x) => x.status !== "deleted")
      .sort((a, b) => String(b.updated_at || "").localeCompare(String(a.updated_at || "")));
    const more = docs.length > 50 ? " The 50 changed last are listed." : "";
    status.textContent = docs.length ? `${plural(docs.length, "document")} you can read.${more} Search to find what is inside them.`
      : "There are no documents you can read yet.";
    for (const doc of docs.slice(0, 50)) {
      const title = doc.title || doc.path;
      list.append(el("li", { class: "result result-doc", dataset: { doc: doc.id } },
        el("h3", { class: "result-title" }, el("button", { type: "button", class: "result-open",
          on: { click: (e) => openViewer({ doc_id: doc.id, document: title, path: doc.path }, e.currentTarget) } }, title)),
        el("p", { class: "result-meta", text: [doc.path, doc.source, doc.updated_at ? `updated ${fmtAgo(doc.updated_at)}` : null].filter(Boolean).join(" · ") })));
    }
  } catch (err) {
    if (seq !== search.seq) return;
    status.textContent = "";
    $("search-error").append(errorBlock(err));
  }
}

export function initSearch() {
  $("search-form").addEventListener("submit", submit);
}
