// Small building blocks shared by the pages: element creation, times, badges, copy buttons, dialogs,
// tables, messages. No framework: every page builds its DOM with `h` and replaces it when data changes.

/** h("button", {class: "primary", onclick: f}, "Save") */
export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on") && typeof v === "function") el.addEventListener(k.slice(2), v);
    else if (k === "class") el.className = v;
    else if (k === "dataset") Object.assign(el.dataset, v);
    else if (k === "value") el.value = v;
    else if (k === "checked") el.checked = true;
    else if (v === true) el.setAttribute(k, "");
    else el.setAttribute(k, v);
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children.flat(Infinity)) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

/** Replaces the children of `el`. */
export function fill(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

let ids = 0;
/** A fresh element id, for label/field pairs. */
export function uid(prefix) {
  ids += 1;
  return `${prefix}-${ids}`;
}

/** A labelled field: returns [wrapper, input]. */
export function field(label, input, hint) {
  if (!input.id) input.id = uid("f");
  const hintEl = hint ? h("span", { class: "hint", id: input.id + "-hint" }, hint) : null;
  if (hintEl) input.setAttribute("aria-describedby", hintEl.id);
  return [h("div", { class: "field" }, h("label", { for: input.id }, label), input, hintEl), input];
}

const localFormat = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "medium" });

/** A time in the viewer's zone, with the UTC value on hover. */
export function time(iso) {
  if (!iso) return h("span", { class: "muted" }, "—");
  const d = new Date(iso);
  return h("time", { datetime: iso, title: iso.replace(/\.\d+Z$/, "Z").replace("T", " ").replace("Z", " UTC") }, localFormat.format(d));
}

/** "in 2 min", "5 min ago", "just now": how far `iso` is from now, in words. */
export function relativeWords(iso, now) {
  if (!iso) return "";
  const ms = new Date(iso) - (now || Date.now());
  const secs = Math.round(ms / 1000);
  const a = Math.abs(secs);
  if (a < 5) return ms > 0 ? "now" : "just now";
  const span = a < 60 ? `${a} s` : a < 3600 ? `${Math.round(a / 60)} min` : a < 86400 ? `${Math.round(a / 3600)} h` : `${Math.round(a / 86400)} d`;
  return secs > 0 ? `in ${span}` : `${span} ago`;
}

/** A time in words relative to now ("in 2 min"), with the exact local time beside it. */
export function timeAndRelative(iso, due) {
  if (!iso) return h("span", { class: "muted" }, "—");
  const overdue = due && new Date(iso) <= Date.now();
  return h("span", { class: "when" }, h("span", { class: "relative", dataset: { at: iso } }, overdue ? "due now" : relativeWords(iso)), " ", h("span", { class: "muted" }, "(", time(iso), ")"));
}

/** A duration in seconds, in words: "45 s", "3 min", "2 h". */
export function durationWords(secs) {
  if (secs < 60) return `${secs} s`;
  if (secs < 3600) return `${Math.round(secs / 60)} min`;
  return `${Math.round(secs / 3600)} h`;
}

const HEALTH_WORDS = {
  failing: ["Failing", "The latest attempt in the last 24 hours failed and none has succeeded since."],
  degraded: ["Some failures", "Some attempts failed in the last 24 hours; the latest one succeeded."],
  healthy: ["Healthy", "Every attempt in the last 24 hours succeeded."],
  idle: ["No traffic", "No webhook attempt in the last 24 hours."],
};

/** An integration's webhook health in one badge. */
export function healthBadge(word) {
  const [label, meaning] = HEALTH_WORDS[word] || [word, ""];
  return h("span", { class: `badge health health-${word}`, dataset: { health: word }, title: meaning }, label);
}

/** `<input type="datetime-local">` value → ISO-8601 UTC, or "" when empty. */
export function localToIso(value) {
  if (!value) return "";
  const d = new Date(value);
  return isNaN(d) ? "" : d.toISOString().replace(".000Z", "Z");
}

/** ISO-8601 → a `datetime-local` value in the viewer's zone. */
export function isoToLocal(iso) {
  if (!iso) return "";
  const d = new Date(iso);
  if (isNaN(d)) return "";
  const pad = (n) => String(n).padStart(2, "0");
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}T${pad(d.getHours())}:${pad(d.getMinutes())}`;
}

export function badge(text, kind) {
  return h("span", { class: `badge ${kind || text.toLowerCase().replace(/[^a-z]+/g, "-")}` }, text);
}

const STATE_WORDS = {
  pending: "Pending",
  in_flight: "Sending",
  succeeded: "Succeeded",
  failed: "Failed",
  held: "Held",
  cancelled: "Cancelled",
};

export function stateBadge(state) {
  return h("span", { class: `badge state-${state}`, dataset: { state } }, STATE_WORDS[state] || state);
}

export const OUTCOMES = {
  ok: ["Delivered", "The endpoint answered 200."],
  http_status: ["HTTP error", "The endpoint answered with a status other than 200; only 200 counts as delivered."],
  redirect_refused: ["Redirect refused", "The endpoint answered with a redirect; webhooks never follow redirects."],
  timeout: ["Timed out", "The attempt did not finish within the webhook timeout."],
  dns_error: ["DNS error", "The callback host name could not be resolved."],
  blocked_address: ["Blocked address", "The callback host resolved to an address the callback-URL policy forbids; nothing was sent."],
  connect_error: ["Connection failed", "No connection could be made to the callback address."],
  tls_error: ["TLS error", "The TLS handshake failed (certificate or protocol)."],
  invalid_url: ["Invalid URL", "The callback URL is not acceptable."],
};

export function outcomeLabel(outcome) {
  if (!outcome) return h("span", { class: "muted" }, "—");
  const [label] = OUTCOMES[outcome] || [outcome];
  return h("span", { class: `outcome outcome-${outcome}`, title: outcome }, label);
}

/**
 * An outcome in words: what it means, and the attempt's own detail. An HTTP error says its status
 * once ("The endpoint answered 500; only 200 counts as delivered.") instead of the general meaning
 * followed by the detail, which says the same.
 */
export function outcomeWords(outcome, detail, status) {
  const [label, meaning] = OUTCOMES[outcome] || [outcome, ""];
  if (outcome === "http_status" && status != null) {
    return h("p", { class: `explain outcome-${outcome}` }, h("strong", {}, label + ". "), `The endpoint answered ${status}; only 200 counts as delivered.`);
  }
  return h("p", { class: `explain outcome-${outcome}` }, h("strong", {}, label + ". "), meaning, detail ? h("span", { class: "detail" }, " " + capitalise(detail) + ".") : null);
}

function capitalise(s) {
  return s.charAt(0).toUpperCase() + s.slice(1);
}

/** Copies text to the clipboard; falls back to a selection copy where the Clipboard API is unavailable. */
export async function copyText(text) {
  try {
    await navigator.clipboard.writeText(text);
    return true;
  } catch (e) {
    const t = h("textarea", { class: "offscreen", readonly: true }, text);
    document.body.append(t);
    t.select();
    let ok = false;
    try {
      ok = document.execCommand("copy");
    } catch (_) {
      ok = false;
    }
    t.remove();
    return ok;
  }
}

export function copyButton(getText, label) {
  const b = h("button", { type: "button", class: "small copy", "aria-label": label || "Copy" }, "Copy");
  b.addEventListener("click", async () => {
    const ok = await copyText(typeof getText === "function" ? getText() : getText);
    b.textContent = ok ? "Copied" : "Select and copy";
    setTimeout(() => (b.textContent = "Copy"), 1500);
  });
  return b;
}

/** A secret shown once: the value, a copy button and the warning. */
export function secretBox(label, value, warning, cls) {
  return h(
    "div",
    { class: `secret ${cls || ""}` },
    h("div", { class: "secret-label" }, label),
    h("div", { class: "secret-row" }, h("code", { class: "secret-value" }, value), copyButton(value, "Copy " + label)),
    warning ? h("p", { class: "warn", role: "note" }, warning) : null,
  );
}

/** An error region: shows an error's message in words, or nothing. */
export function errorBox() {
  const el = h("div", { class: "error", role: "alert", hidden: true });
  el.show = (err) => {
    if (!err) {
      el.hidden = true;
      el.textContent = "";
      return;
    }
    el.hidden = false;
    el.textContent = err.message || String(err);
  };
  return el;
}

let toastTimer;
export function toast(message) {
  const t = document.getElementById("toast");
  t.textContent = message;
  t.classList.add("show");
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => t.classList.remove("show"), 4000);
}

/**
 * A modal `<dialog>` (focus stays inside, Escape closes). `build(close)` returns the body; the dialog is
 * removed from the page when closed. Returns {dialog, close}.
 */
export function modal(title, build, opts) {
  const headingId = uid("dlg");
  const dialog = h("dialog", { class: `modal ${(opts && opts.class) || ""}`, "aria-labelledby": headingId });
  const close = () => {
    if (dialog.open) dialog.close();
  };
  dialog.addEventListener("close", () => {
    dialog.remove();
    if (opts && opts.onClose) opts.onClose();
  });
  const head = h("div", { class: "modal-head" }, h("h2", { id: headingId }, title), h("button", { type: "button", class: "icon close", "aria-label": "Close", onclick: close }, "×"));
  dialog.append(head, h("div", { class: "modal-body" }, build(close)));
  document.body.append(dialog);
  dialog.showModal();
  return { dialog, close };
}

/** Asks for confirmation; resolves true only if the confirming button was pressed. */
export function confirmDialog({ title, message, confirm, danger }) {
  return new Promise((resolve) => {
    let answered = false;
    modal(
      title,
      (close) => {
        const yes = h("button", { type: "button", class: danger ? "danger confirm" : "primary confirm", onclick: () => ((answered = true), close()) }, confirm);
        const no = h("button", { type: "button", class: "cancel", onclick: close }, "Cancel");
        queueMicrotask(() => no.focus());
        return [h("div", { class: "confirm-message" }, message), h("div", { class: "actions" }, no, yes)];
      },
      { class: "confirm-dialog", onClose: () => resolve(answered) },
    );
  });
}

/** An empty state: what is missing and what to do next. */
export function empty(message, action) {
  return h("div", { class: "empty" }, h("p", {}, message), action || null);
}

/** A table; `columns` are [label, cell(row)] pairs. Cells carry their label for the phone layout. */
export function table(columns, rows, opts) {
  return h(
    "div",
    { class: "table-wrap" },
    h(
      "table",
      { class: (opts && opts.class) || "" },
      h("thead", {}, h("tr", {}, columns.map(([label]) => h("th", { scope: "col" }, label)))),
      h(
        "tbody",
        {},
        rows.map((r) => {
          const tr = h("tr", opts && opts.rowAttrs ? opts.rowAttrs(r) : {});
          for (const [label, cell] of columns) tr.append(h("td", { "data-label": label }, cell(r)));
          return tr;
        }),
      ),
    ),
  );
}

/** Runs `f` with `button` disabled meanwhile; shows a thrown error in `errors`. */
export async function busy(button, errors, f) {
  if (button) button.disabled = true;
  if (errors) errors.show(null);
  try {
    return await f();
  } catch (e) {
    if (errors) errors.show(e);
    else toast(e.message);
    return undefined;
  } finally {
    if (button) button.disabled = false;
  }
}

/** Pretty JSON when it parses, else the text as is. */
export function pretty(text) {
  if (text === null || text === undefined) return "";
  if (typeof text !== "string") return JSON.stringify(text, null, 2);
  try {
    return JSON.stringify(JSON.parse(text), null, 2);
  } catch (e) {
    return text;
  }
}

/** The hash route's query parameters. */
export function hashParams() {
  const i = location.hash.indexOf("?");
  return new URLSearchParams(i < 0 ? "" : location.hash.slice(i + 1));
}

/** Cleanups of the current page (pollers), run by the router when the page changes. */
const leaving = [];
export function onLeave(f) {
  leaving.push(f);
}
export function leavePage() {
  for (const f of leaving.splice(0)) f();
}
