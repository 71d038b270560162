// The users page (owners only; the server refuses everyone else whatever this page shows): every admin
// user with their role, state and live sessions; inviting a user (a one-time password, shown once, that
// they must change at their first sign-in); changing a role; disabling, enabling, resetting a
// password, removing; a user's sessions, ended one by one or all at once.

import { api } from "./api.js";
import { h, fill, field, time, badge, errorBox, busy, modal, confirmDialog, secretBox, empty, table, toast } from "./ui.js";

const enc = encodeURIComponent;
const ROLES = [
  ["owner", "Owner — everything, and manages users"],
  ["admin", "Admin — everything but users"],
  ["viewer", "Viewer — reads, never a secret, changes nothing"],
];

function roleSelect(value, attrs) {
  return h("select", attrs || {}, ROLES.map(([v, label]) => h("option", { value: v, selected: v === value }, label)));
}

export async function usersPage(view) {
  const errors = errorBox();
  const invite = h("button", { type: "button", class: "primary", id: "invite-user", onclick: () => inviteDialog(() => usersPage(view)) }, "Invite a user");
  const body = h("div", {}, h("p", { class: "muted" }, "Loading…"));
  fill(view, h("div", { class: "page-head" }, h("h1", {}, "Users"), invite), h("p", { class: "lead" }, "Who may use this dashboard and the admin API, and what they may do. The last enabled owner cannot be demoted, disabled or removed."), errors, body);
  let users;
  try {
    users = (await api("GET", "/users")).items;
  } catch (e) {
    fill(body);
    return errors.show(e);
  }
  const refresh = () => usersPage(view);
  if (users.length === 0) return fill(body, empty("No users.", invite));
  fill(
    body,
    table(
      [
        ["User", (u) => h("strong", { class: "username" }, u.username)],
        [
          "Role",
          (u) => {
            const select = roleSelect(u.role, { class: "role", "aria-label": `Role of ${u.username}` });
            select.addEventListener("change", () =>
              busy(select, errors, async () => {
                try {
                  await api("PATCH", `/users/${enc(u.username)}`, { role: select.value });
                  toast(`${u.username} is now ${select.value}.`);
                } finally {
                  refresh();
                }
              }),
            );
            return select;
          },
        ],
        ["State", (u) => (u.disabled ? badge("Disabled", "bad") : u.mustChangePassword ? badge("Invited", "warn") : badge("Enabled", "good"))],
        ["Sessions", (u) => h("button", { type: "button", class: "link sessions", onclick: () => sessionsDialog(u.username, refresh) }, `${u.sessions} live`)],
        ["Created", (u) => time(u.createdAt)],
        [
          "Actions",
          (u) =>
            h(
              "span",
              { class: "row-actions" },
              h("button", { type: "button", class: "small toggle", onclick: (e) => busy(e.target, errors, async () => { await api("PATCH", `/users/${enc(u.username)}`, { disabled: !u.disabled }); toast(`${u.username} is ${u.disabled ? "enabled" : "disabled"}.`); refresh(); }) }, u.disabled ? "Enable" : "Disable"),
              h("button", { type: "button", class: "small reset", onclick: () => resetDialog(u.username, refresh) }, "Reset password"),
              h(
                "button",
                {
                  type: "button",
                  class: "small danger remove",
                  onclick: async (e) => {
                    const yes = await confirmDialog({ title: `Remove ${u.username}?`, message: "They can no longer sign in and their sessions end. Their entries in the audit log stay.", confirm: "Remove", danger: true });
                    if (yes) busy(e.target, errors, async () => { await api("DELETE", `/users/${enc(u.username)}`); toast(`${u.username} was removed.`); refresh(); });
                  },
                },
                "Remove",
              ),
            ),
        ],
      ],
      users,
      { class: "users", rowAttrs: (u) => ({ dataset: { username: u.username } }) },
    ),
  );
}

function inviteDialog(refresh) {
  modal("Invite a user", (close) => {
    const errors = errorBox();
    const [nameField, name] = field("User name", h("input", { name: "username", id: "invite-username", required: true, maxlength: 64, autocomplete: "off" }));
    const [roleField, role] = field("Role", roleSelect("viewer", { name: "role", id: "invite-role" }));
    const submit = h("button", { type: "submit", class: "primary" }, "Invite");
    const form = h("form", { id: "invite-form" }, nameField, roleField, h("p", { class: "muted" }, "They get a one-time password, shown here once; at their first sign-in they must choose their own."), errors, h("div", { class: "actions" }, h("button", { type: "button", onclick: close }, "Cancel"), submit));
    form.addEventListener("submit", (e) => {
      e.preventDefault();
      busy(submit, errors, async () => {
        const created = await api("POST", "/users", { username: name.value, role: role.value });
        fill(form, h("p", {}, h("strong", {}, created.username), ` was invited as ${created.role}.`), secretBox("One-time password", created.oneTimePassword, "Give it to them over a channel you trust: it is shown only now. It works until they change it.", "one-time-password"), h("div", { class: "actions" }, h("button", { type: "button", class: "primary", onclick: close }, "Done")));
        refresh();
      });
    });
    return form;
  });
}

function resetDialog(username, refresh) {
  modal(`Reset ${username}'s password`, (close) => {
    const errors = errorBox();
    const submit = h("button", { type: "button", class: "primary danger", id: "reset-confirm" }, "Reset the password");
    const body = h("div", {}, h("p", {}, "Their sessions end and they get a one-time password, shown here once, which they must change at their next sign-in."), errors, h("div", { class: "actions" }, h("button", { type: "button", onclick: close }, "Cancel"), submit));
    submit.addEventListener("click", () =>
      busy(submit, errors, async () => {
        const done = await api("POST", `/users/${enc(username)}/password`, {});
        fill(body, secretBox("One-time password", done.oneTimePassword, "Shown only now.", "one-time-password"), h("div", { class: "actions" }, h("button", { type: "button", class: "primary", onclick: close }, "Done")));
        refresh();
      }),
    );
    return body;
  });
}

function sessionsDialog(username, refresh) {
  modal(`${username}'s sessions`, () => {
    const errors = errorBox();
    const list = h("div", {}, h("p", { class: "muted" }, "Loading…"));
    const load = async () => {
      let sessions;
      try {
        sessions = (await api("GET", `/users/${enc(username)}/sessions`)).items;
      } catch (e) {
        return errors.show(e);
      }
      if (sessions.length === 0) return fill(list, h("p", { class: "muted" }, "No live session."));
      const end = (id) => async (e) => {
        await busy(e.target, errors, () => api("DELETE", `/users/${enc(username)}/sessions/${enc(id)}`));
        load();
        refresh();
      };
      fill(
        list,
        table(
          [
            ["Started", (s) => time(s.createdAt)],
            ["From", (s) => s.from || "—"],
            ["Browser", (s) => h("span", { class: "small" }, s.userAgent || "—")],
            ["Expires", (s) => time(s.expiresAt)],
            ["", (s) => h("button", { type: "button", class: "small end-session", onclick: end(s.id) }, "End")],
          ],
          sessions,
          { class: "sessions", rowAttrs: (s) => ({ dataset: { session: s.id } }) },
        ),
        h("div", { class: "actions" }, h("button", { type: "button", class: "danger", id: "end-all", onclick: async (e) => { await busy(e.target, errors, () => api("DELETE", `/users/${enc(username)}/sessions`)); load(); refresh(); } }, "End all")),
      );
    };
    load();
    return [errors, list];
  });
}

/** The form a user with a one-time password sees instead of the dashboard until they change it. */
export function changePasswordForm(main, done) {
  const errors = errorBox();
  const [curField, cur] = field("One-time password", h("input", { type: "password", id: "current-password", autocomplete: "current-password", required: true }));
  const [newField, next] = field("New password", h("input", { type: "password", id: "new-password", autocomplete: "new-password", required: true, minlength: 12 }), "At least 12 characters.");
  const submit = h("button", { type: "submit", class: "primary" }, "Change password");
  const form = h("form", { class: "login card", id: "change-password-form" }, h("h1", {}, "Choose your password"), h("p", {}, "You signed in with a one-time password. Choose your own to continue; you will then sign in again."), curField, newField, errors, h("div", { class: "actions" }, submit));
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    busy(submit, errors, async () => {
      await api("POST", "/session/password", { currentPassword: cur.value, newPassword: next.value });
      done();
    });
  });
  fill(main, form);
  cur.focus();
}
