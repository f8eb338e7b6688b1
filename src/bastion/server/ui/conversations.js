/* Saved chats: the sidebar's list (new, reopen, rename, delete one, delete all), per user on the server.
 * A chat is created when its first question is asked; each answer is saved into it by /ask. */
import {
  $, api, clear, confirmDialog, el, fmtAgo, formDialog, holdSheet, icon, plural, toast,
} from "./core.js";
import { clearChat, focusQuestion, showTurns } from "./chat.js";

const NARROW = window.matchMedia("(max-width: 760px)");
const conv = { available: null, list: [], current: null, title: null, listSeq: 0, release: null, reload: null, titlePending: false };

const titleOf = (c) => (c && c.title) || "Untitled chat";

export function currentConversation() { return conv.current; }

function setTitle(title) {
  conv.title = title;
  $("chat-title").textContent = title || "New chat";
}

/** Forget everything of the previous user (log out, session ended). */
export function resetConversations() {
  conv.available = null;
  conv.list = [];
  conv.current = null;
  conv.listSeq++;
  setTitle(null);
  clear($("conv-list"));
}

async function loadConversations() {
  const seq = ++conv.listSeq;
  const status = $("conv-status");
  try {
    const d = await api("GET", "/conversations");
    if (seq !== conv.listSeq) return;
    conv.available = true;
    conv.list = Array.isArray(d) ? d : (d && (d.conversations || d.items)) || [];
    status.textContent = conv.list.length ? "" : "No saved chats yet. Your questions and answers are kept here.";
    const current = conv.list.find((c) => c.id === conv.current);
    if (current && conv.titlePending) {
      conv.titlePending = false;
      setTitle(titleOf(current));
    }
  } catch (err) {
    if (seq !== conv.listSeq) return;
    if (err.status === 404 || err.status === 405) {
      conv.available = false;
      conv.list = [];
      status.textContent = "Chats are not saved on this server.";
    } else if (err.status !== 401) {
      status.textContent = "Your saved chats could not be loaded. Reload the page to try again.";
    }
  }
  renderList();
}

function renderList() {
  const ul = clear($("conv-list"));
  conv.list.sort((a, b) => String(b.updated || b.created || "").localeCompare(String(a.updated || a.created || "")));
  for (const c of conv.list) {
    const current = c.id === conv.current;
    const turns = typeof c.turns === "number" ? c.turns : Array.isArray(c.turns) ? c.turns.length : null;
    const link = el("a", { class: "conv-link", href: `#chat/${encodeURIComponent(c.id)}`, "aria-current": current ? "page" : null },
      el("span", { class: "conv-title", text: titleOf(c) }),
      el("span", { class: "conv-when", text: [fmtAgo(c.updated || c.created), turns != null ? plural(turns, "question") : null].filter(Boolean).join(" · ") }));
    link.addEventListener("click", () => closeSidebar(false));
    ul.append(el("li", { class: current ? "conv-item current" : "conv-item", dataset: { conv: c.id } }, link,
      el("div", { class: "conv-actions" },
        el("button", { type: "button", class: "btn btn-quiet btn-icon conv-rename", "aria-label": `Rename chat: ${titleOf(c)}`,
          title: "Rename", on: { click: () => renameConversation(c) } }, icon("edit")),
        el("button", { type: "button", class: "btn btn-quiet btn-icon conv-delete", "aria-label": `Delete chat: ${titleOf(c)}`,
          title: "Delete", on: { click: () => deleteConversation(c) } }, icon("trash")))));
  }
  $("delete-all-chats").hidden = !conv.list.length;
}

/** What /ask needs to save this question: the open chat's id, or `save` to start a new one (the server
 * titles it from the question); null when this server keeps no chats (the question is asked unsaved). */
export async function saveTarget() {
  if (conv.available === null) await loadConversations();
  if (!conv.available) return null;
  return conv.current ? { conversation_id: conv.current } : { save: true };
}

/** After an answer: the server saved it into conversation `id` (it may have made the chat itself). */
export function conversationSaved(id) {
  if (id && id !== conv.current) {
    conv.current = id;
    history.replaceState(null, "", `#chat/${encodeURIComponent(id)}`);
    conv.titlePending = true;
  }
  clearTimeout(conv.reload);
  conv.reload = setTimeout(loadConversations, 150);
}

/** The router's entry: `#chat` keeps what is on screen, `#chat/ID` opens that saved chat. */
export async function enterChat(id) {
  loadConversations();
  if (id && id !== conv.current) await openConversation(id);
  else {
    if (!id && conv.current) history.replaceState(null, "", `#chat/${encodeURIComponent(conv.current)}`); // reload reopens it
    focusQuestion();
  }
}

async function openConversation(id) {
  conv.current = id;
  setTitle("Loading…");
  clearChat();
  $("chat-empty").hidden = true;
  try {
    const c = await api("GET", `/conversations/${encodeURIComponent(id)}`);
    if (conv.current !== id) return;
    setTitle(titleOf(c));
    showTurns(c.turns || []);
    if (!(c.turns || []).length) $("chat-empty").hidden = false;
  } catch (err) {
    if (conv.current !== id || err.status === 401) return;
    conv.current = null;
    setTitle(null);
    $("chat-empty").hidden = false;
    toast(err.status === 404 ? "That chat no longer exists." : "That chat could not be opened.");
    history.replaceState(null, "", "#chat");
  }
  renderList();
  focusQuestion();
}

function newChat() {
  conv.current = null;
  setTitle(null);
  clearChat();
  if (location.hash !== "#chat") history.replaceState(null, "", "#chat");
  renderList();
  closeSidebar(false);
  focusQuestion();
}

async function renameConversation(c) {
  const renamed = await formDialog({
    title: "Rename chat",
    fields: [{ name: "title", label: "Name", value: titleOf(c), required: true, maxlength: "200" }],
    submitLabel: "Rename",
    submit: async (v) => api("PATCH", `/conversations/${encodeURIComponent(c.id)}`, { title: v.title.trim() }),
  });
  if (!renamed) return;
  c.title = renamed.title || c.title;
  if (c.id === conv.current) setTitle(titleOf(c));
  renderList();
  toast("Chat renamed");
  focusItem(c.id, ".conv-rename");
}

async function deleteConversation(c) {
  const ok = await confirmDialog({
    title: "Delete this chat?",
    text: `“${titleOf(c)}” and its answers will be deleted for good.`,
    confirm: "Delete chat",
  });
  if (!ok) return;
  try {
    await api("DELETE", `/conversations/${encodeURIComponent(c.id)}`);
  } catch (err) {
    if (err.status !== 404) { toast("The chat could not be deleted. Please try again."); return; }
  }
  const index = conv.list.findIndex((x) => x.id === c.id);
  conv.list = conv.list.filter((x) => x.id !== c.id);
  if (c.id === conv.current) newChat();
  renderList();
  toast("Chat deleted");
  const next = conv.list[Math.min(index, conv.list.length - 1)];
  if (next) focusItem(next.id, ".conv-link");
  else $("new-chat").focus();
}

async function deleteAll() {
  const ok = await confirmDialog({
    title: "Delete all chats?",
    text: `All ${plural(conv.list.length, "saved chat")} and their answers will be deleted for good.`,
    confirm: "Delete all",
  });
  if (!ok) return;
  try {
    await api("DELETE", "/conversations");
  } catch (_) {
    toast("The chats could not be deleted. Please try again.");
    return;
  }
  conv.list = [];
  newChat();
  await loadConversations();
  toast("All chats deleted");
  $("new-chat").focus();
}

function focusItem(id, selector) {
  const item = [...$("conv-list").children].find((li) => li.dataset.conv === id);
  const target = item && item.querySelector(selector);
  if (target) target.focus();
}

// -- the sidebar as a sheet on phones -----------------------------------------------------------------
function openSidebar() {
  const side = $("chat-sidebar");
  side.classList.add("open");
  $("chats-toggle").setAttribute("aria-expanded", "true");
  if (conv.release) conv.release();
  conv.release = holdSheet(side);
  $("new-chat").focus();
}

export function sidebarOpen() { return $("chat-sidebar").classList.contains("open"); }

export function closeSidebar(returnFocus = true) {
  const side = $("chat-sidebar");
  if (!side.classList.contains("open")) return;
  side.classList.remove("open");
  $("chats-toggle").setAttribute("aria-expanded", "false");
  if (conv.release) conv.release();
  conv.release = null;
  if (returnFocus) $("chats-toggle").focus();
}

export function initConversations() {
  $("new-chat").addEventListener("click", newChat);
  $("delete-all-chats").addEventListener("click", deleteAll);
  $("chats-toggle").addEventListener("click", () => (sidebarOpen() ? closeSidebar() : openSidebar()));
  $("chats-close").addEventListener("click", () => closeSidebar());
  NARROW.addEventListener("change", () => closeSidebar(false));
}
