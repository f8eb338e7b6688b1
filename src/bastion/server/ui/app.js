/* Bastion web UI: the entry module. Signs in, routes `#view[/param]` to the pages and wires them.
 * Each page lives in its own module beside this one (all served from ui/, no build step). */
import { $, api, hooks, showError, state } from "./core.js";
import { initAdmin, loadAdmin } from "./admin.js";
import { initAudit, loadAudit } from "./audit.js";
import { clearChat, initChat, loadAssistants, stopAsking } from "./chat.js";
import {
  closeSidebar, enterChat, initConversations, resetConversations, sidebarOpen,
} from "./conversations.js";
import { loadEval } from "./evaluation.js";
import { loadHealth, runChecks } from "./health.js";
import { enterSearch, initSearch } from "./search.js";
import { initSources, loadSources, stopJobPolling } from "./sources.js";
import { enterUpload, initUpload, resetUpload } from "./upload.js";
import { closeViewer, initViewer, viewerOpen } from "./viewer.js";

const VIEWS = ["chat", "search", "upload", "sources", "health", "eval", "admin", "audit"];
const ADMIN_VIEWS = new Set(["sources", "health", "eval", "admin", "audit"]);
const WRITER_VIEWS = new Set(["upload"]);
const TITLES = {
  chat: "Chat", search: "Search", upload: "Add documents", sources: "Sources", health: "Data health",
  eval: "Evaluation", admin: "Users", audit: "Audit log", login: "Sign in", forbidden: "Not allowed",
};

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
  const writer = admin || d.role === "editor";
  for (const a of document.querySelectorAll(".admin-only")) a.hidden = !admin;
  for (const a of document.querySelectorAll(".writer-only")) a.hidden = !writer;
  loadAssistants();
}

function dropSession() {
  state.user = state.role = state.csrf = null;
  state.groups = [];
  stopAsking();
  stopJobPolling();
  $("whoami").hidden = true;
  $("nav").hidden = true;
  resetConversations();
  resetUpload();
  clearChat();
  $("search-q").value = "";
}

function sessionExpired(detail) {
  dropSession();
  route();
  showError($("login-error"), detail || "Your session ended; sign in again.");
}
hooks.sessionExpired = sessionExpired;

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
  if (state.sso) { // ends a single sign-on at the provider too, when it offers that
    location.assign(state.sso.logout_url);
    return;
  }
  dropSession();
  history.replaceState(null, "", location.pathname);
  route();
}

/** The login page's ways in (GET /auth/methods, public): a "Sign in with <label>" button when single
 * sign-on is configured; the password fields unless password sign-in is turned off. */
async function loadLoginMethods() {
  try {
    const resp = await fetch("/auth/methods", { credentials: "same-origin", cache: "no-store" });
    if (!resp.ok) return;
    const m = await resp.json();
    state.sso = m.sso || null;
    if (m.sso) {
      $("login-sso").textContent = `Sign in with ${m.sso.label}`;
      $("login-sso").href = m.sso.login_url;
      $("login-sso-part").hidden = false;
    }
    $("login-or").hidden = !m.password;
    $("login-password-part").hidden = !m.password;
    $("login-submit").hidden = !m.password;
  } catch (_) { /* an older server: password sign-in only */ }
}

async function resume() {
  await loadLoginMethods();
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
/** `#view` or `#view/param` (a chat's id, a search's words). */
function currentRoute() {
  const raw = location.hash.replace(/^#\/?/, "");
  const slash = raw.indexOf("/");
  const view = slash < 0 ? raw : raw.slice(0, slash);
  let param = slash < 0 ? "" : raw.slice(slash + 1);
  try { param = decodeURIComponent(param); } catch (_) { /* keep it as typed */ }
  return VIEWS.includes(view) ? { view, param } : { view: "chat", param: "" };
}

function show(id) {
  for (const s of document.querySelectorAll("#views > .view")) s.hidden = s.id !== `view-${id}`;
  document.title = `${TITLES[id] || "Bastion"} · Bastion`;
}

function forbid(text) {
  $("forbidden-text").textContent = text;
  show("forbidden");
}

function route() {
  closeViewer();
  closeSidebar(false);
  if (!state.user) {
    show("login");
    if ($("login-password-part").hidden) $("login-sso").focus();
    else $("login-user").focus();
    return;
  }
  const { view, param } = currentRoute();
  for (const a of document.querySelectorAll("#nav a")) {
    const active = a.dataset.view === view;
    a.classList.toggle("active", active);
    if (active) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
  if (view !== "sources") stopJobPolling(false);
  if (ADMIN_VIEWS.has(view) && state.role !== "admin") {
    forbid(`You need the admin role to see this page. You are signed in as ${state.user} (${state.role}).`);
    return;
  }
  if (WRITER_VIEWS.has(view) && state.role === "member") {
    forbid(`Adding documents needs the editor role. You are signed in as ${state.user} (${state.role}); ask your administrator.`);
    return;
  }
  show(view);
  if (view === "chat") enterChat(param);
  else if (view === "search") enterSearch(param);
  else if (view === "upload") enterUpload();
  else if (view === "sources") loadSources();
  else if (view === "health") loadHealth();
  else if (view === "eval") loadEval();
  else if (view === "admin") loadAdmin();
  else if (view === "audit") loadAudit(true);
}

// -- wiring ------------------------------------------------------------------------------------------
function init() {
  $("skip-link").addEventListener("click", (e) => { // the hash names pages: move the focus, keep the route
    e.preventDefault();
    $("main").focus();
  });
  $("login-form").addEventListener("submit", login);
  $("logout").addEventListener("click", logout);
  initViewer();
  initChat();
  initConversations();
  initSearch();
  initUpload();
  initSources();
  initAdmin();
  initAudit();
  $("health-run").addEventListener("click", runChecks);
  $("eval-refresh").addEventListener("click", loadEval);
  document.addEventListener("keydown", (e) => { // Escape closes the sheet on top (dialogs close themselves)
    if (e.key !== "Escape" || document.querySelector("dialog[open]")) return;
    if (viewerOpen()) closeViewer();
    else if (sidebarOpen()) closeSidebar();
  });
  window.addEventListener("hashchange", route);
  resume();
}

init();
