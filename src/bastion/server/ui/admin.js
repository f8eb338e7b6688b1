/* Users, groups and API keys (admins): role and groups in place, add a user, reset a password, delete a
 * user (with confirmation); groups; everyone's keys with create (shown once) and revoke. */
import {
  $, api, clear, confirmDialog, el, emptyRow, fmtTime, formDialog, showError, state, toast,
} from "./core.js";

const splitGroups = (s) => s.split(/[,，\s]+/).map((g) => g.trim()).filter(Boolean);

export async function loadAdmin() {
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
    const save = el("button", { type: "button", class: "btn btn-small", text: "Save", "aria-label": `Save ${u.user}` });
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
    const reset = el("button", { type: "button", class: "btn btn-small user-password", text: "Reset password",
      "aria-label": `Reset the password of ${u.user}`, on: { click: () => resetPassword(u.user) } });
    const remove = el("button", { type: "button", class: "btn btn-small btn-danger user-delete", text: "Delete",
      "aria-label": `Delete user ${u.user}`, disabled: u.user === state.user,
      title: u.user === state.user ? "You cannot delete yourself" : null, on: { click: () => deleteUser(u.user) } });
    tbody.append(el("tr", { dataset: { user: u.user } },
      el("td", { class: "user-name", text: u.user }), el("td", null, role), el("td", null, groups),
      el("td", { class: "actions" }, save, reset, remove)));
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


async function resetPassword(user) {
  const done = await formDialog({
    title: `Reset the password of ${user}`,
    intro: "They will be signed out everywhere and sign in with the new password. Give it to them in person or another safe way.",
    fields: [
      { name: "password", label: "New password", type: "password", required: true, autocomplete: "new-password", maxlength: "1024" },
      { name: "again", label: "New password again", type: "password", required: true, autocomplete: "new-password", maxlength: "1024" },
    ],
    submitLabel: "Set password",
    submit: (v) => {
      if (v.password !== v.again) throw new Error("The two passwords are not the same.");
      return api("PATCH", `/users/${encodeURIComponent(user)}`, { password: v.password });
    },
  });
  if (done) toast(`Password of ${user} reset; their sessions were ended`);
}

async function deleteUser(user) {
  const ok = await confirmDialog({
    title: `Delete user ${user}?`,
    text: `${user} can no longer sign in; their API keys and sessions stop working at once. This cannot be undone.`,
    confirm: "Delete user",
  });
  if (!ok) return;
  showError($("admin-error"), "");
  try {
    await api("DELETE", `/users/${encodeURIComponent(user)}`);
    toast(`User ${user} deleted`);
  } catch (err) {
    showError($("admin-error"), err.detail || String(err));
  }
  await loadAdmin();
  $("user-form").querySelector("input").focus();
}

export function initAdmin() {
  $("user-form").addEventListener("submit", addUser);
  $("key-form").addEventListener("submit", createKey);
  $("new-key-copy").addEventListener("click", copyKey);
}
