// The dashboard's entry point: the session (login, logout, expiry) and the router. Pages live in the
// other modules and are chosen by the URL's fragment, so a reload or a new session keeps the place:
//
//   #/overview (and #/)                 webhook health and charts (?appId)
//   #/integrations                      integrations table (+ create)
//   #/integrations/{appId}              … with the configuration dialog open
//   #/integrations/{appId}/deliveries   delivery history (?state&outcome)
//   #/deliveries/{id}                   one delivery with its attempts
//   #/events                            clickwrap events (?appId&templateId&endUserId&status&from&to)
//   #/events/{id}                       one event with its deliveries
//   #/templates, #/templates/{id}       templates and versions
//   #/users                             admin users and their sessions (owners)

import { api, whenSessionExpires } from "./api.js";
import { h, fill, field, errorBox, busy, leavePage } from "./ui.js";
import { overviewPage } from "./overview.js";
import { integrationsPage } from "./integrations.js";
import { deliveriesPage, deliveryPage } from "./deliveries.js";
import { eventsPage, eventPage } from "./events.js";
import { templatesPage, templatePage } from "./templates.js";
import { usersPage, changePasswordForm } from "./users.js";

const main = document.getElementById("main");
const top = document.getElementById("top");

let signedIn = false;
let showingLogin = false;

function routeOf(hash) {
  const path = hash.replace(/^#/, "").split("?")[0];
  return path.split("/").filter(Boolean).map(decodeURIComponent);
}

async function route() {
  leavePage();
  if (!signedIn) return;
  const [section, id, sub] = routeOf(location.hash);
  for (const a of document.querySelectorAll("[data-nav]")) {
    const current = a.dataset.nav === section || (section === "deliveries" && a.dataset.nav === "integrations") || (!section && a.dataset.nav === "overview");
    if (current) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
  const view = h("div", { class: "view" });
  fill(main, view);
  switch (section) {
    case undefined:
    case "overview":
      return overviewPage(view);
    case "integrations":
      if (id && sub === "deliveries") return deliveriesPage(view, id);
      return integrationsPage(view, id);
    case "deliveries":
      return deliveryPage(view, id);
    case "events":
      return id ? eventPage(view, id) : eventsPage(view);
    case "templates":
      return id ? templatePage(view, id) : templatesPage(view);
    case "users":
      return usersPage(view);
    default:
      fill(view, h("h1", {}, "Not found"), h("p", {}, "There is no such page. ", h("a", { href: "#/overview" }, "Go to the overview.")));
  }
}

function closeDialogs() {
  for (const d of document.querySelectorAll("dialog")) d.close();
}

function showLogin(message) {
  signedIn = false;
  if (showingLogin) return;
  showingLogin = true;
  leavePage();
  closeDialogs();
  top.hidden = true;
  const errors = errorBox();
  const [userField, user] = field("User name", h("input", { name: "username", autocomplete: "username", required: true, value: "admin" }));
  const [passField, pass] = field("Password", h("input", { name: "password", type: "password", autocomplete: "current-password", required: true }));
  const submit = h("button", { type: "submit", class: "primary" }, "Sign in");
  const form = h(
    "form",
    { class: "login card", id: "login-form" },
    h("h1", {}, "Sign in to clicktermd"),
    message ? h("p", { class: "notice", id: "login-notice" }, message) : null,
    userField,
    passField,
    errors,
    h("div", { class: "actions" }, submit),
  );
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    busy(submit, errors, async () => {
      await api("POST", "/login", { username: user.value, password: pass.value });
      pass.value = "";
      await start();
    });
  });
  fill(main, form);
  (user.value ? pass : user).focus();
}

async function start() {
  let who;
  try {
    who = await api("GET", "/session");
  } catch (e) {
    showingLogin = false;
    if (e.status === 401) return showLogin(null);
    fill(main, h("div", { class: "error", role: "alert" }, e.message));
    return;
  }
  showingLogin = false;
  if (who.mustChangePassword) {
    top.hidden = true;
    return changePasswordForm(main, () => showLogin("Your password was changed. Sign in with it."));
  }
  signedIn = true;
  top.hidden = false;
  // What the role may do is decided by the server; the page only leaves out what would be refused.
  document.body.dataset.role = who.role;
  document.getElementById("nav-users").hidden = who.role !== "owner";
  document.getElementById("who").textContent = `Signed in as ${who.username} (${who.role})`;
  await route();
  main.focus({ preventScroll: true });
}

whenSessionExpires(() => {
  if (signedIn) showLogin("Your session has expired. Sign in again to continue where you were.");
});

document.getElementById("logout").addEventListener("click", async () => {
  try {
    await api("POST", "/logout");
  } catch (e) {
    // Logged out either way: the cookie is cleared by the server or was already gone.
  }
  signedIn = false;
  location.hash = "#/overview";
  showLogin("You have logged out.");
});

window.addEventListener("hashchange", () => {
  closeDialogs();
  route();
});

start();
