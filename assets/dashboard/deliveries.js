// Delivery history of one integration (filter by state and outcome, redeliver, bulk redeliver of failed
// deliveries in a time range) and one delivery with every attempt explained.

import { api, query } from "./api.js";
import { h, onLeave, fill, field, time, timeAndRelative, errorBox, busy, stateBadge, outcomeLabel, outcomeWords, OUTCOMES, empty, table, toast, pretty, hashParams, localToIso, isoToLocal } from "./ui.js";

const enc = encodeURIComponent;
const STATES = ["pending", "in_flight", "succeeded", "failed", "held", "cancelled"];
const POLL_MS = 1000;

/** Re-runs `f` every POLL_MS while `wanted()` says so and the page is shown. */
function poll(f, wanted) {
  let timer = null;
  let stopped = false;
  const tick = async () => {
    timer = null;
    if (stopped) return;
    await f();
    if (!stopped && wanted()) timer = setTimeout(tick, POLL_MS);
  };
  onLeave(() => {
    stopped = true;
    if (timer) clearTimeout(timer);
  });
  return () => {
    if (!stopped && !timer && wanted()) timer = setTimeout(tick, POLL_MS);
  };
}

const unsettled = (d) => d.state === "pending" || d.state === "in_flight";

function eventCell(d) {
  if (d.isTest) return h("span", { class: "test-label" }, "Test webhook");
  if (!d.clickwrapEventId) return h("span", { class: "muted" }, "—");
  return h("a", { href: `#/events/${enc(d.clickwrapEventId)}`, class: "mono", title: d.clickwrapEventId }, d.clickwrapEventId.slice(0, 8) + "…");
}

const plural = (n, word) => `${n} ${word}${n === 1 ? "" : "s"}`;

/** Where the delivery's attempt chain stands: "attempt 3 of 4", "gave up after 4 attempts" … */
export function attemptsWords(d) {
  const n = d.attempts;
  const max = d.maxAttempts;
  switch (d.state) {
    case "failed":
      return `gave up after ${plural(n, "attempt")}`;
    case "succeeded":
      return n <= 1 ? "delivered at the first attempt" : `delivered at attempt ${n} of ${max}`;
    case "in_flight":
      return `attempt ${n + 1} of ${max}, sending now`;
    case "pending":
      return n === 0 ? `first of ${max} attempts due` : `attempt ${n} of ${max} failed, retrying`;
    default:
      return n === 0 ? "not attempted" : plural(n, "attempt");
  }
}

/** The last outcome with the HTTP status it came with, if any ("HTTP error 500"). */
function lastOutcomeCell(d) {
  if (!d.lastOutcome) return h("span", { class: "muted" }, "—");
  return h("span", {}, outcomeLabel(d.lastOutcome), d.lastResponseStatus != null ? h("span", { class: "status-code", title: "HTTP status of the latest attempt" }, " " + d.lastResponseStatus) : null);
}

function nextAttemptCell(d, long) {
  if (d.state === "held") return h("span", { class: "muted" }, long ? "when webhook delivery is on and the integration enabled" : "when delivery is on");
  if (d.state === "in_flight") return h("span", { class: "muted" }, "sending now");
  return timeAndRelative(d.nextAttemptAt, true);
}

export async function deliveriesPage(view, appId) {
  const params = hashParams();
  const filter = { state: params.get("state") || "", outcome: params.get("outcome") || "" };
  const errors = errorBox();
  const body = h("div", { id: "history" }, h("p", { class: "muted" }, "Loading…"));
  const title = h("h1", {}, "Delivery history");
  const state = h("select", { id: "filter-state", name: "state" }, h("option", { value: "" }, "Any state"), STATES.map((s) => h("option", { value: s, selected: s === filter.state }, s.replace("_", " "))));
  const outcome = h("select", { id: "filter-outcome", name: "outcome" }, h("option", { value: "" }, "Any last outcome"), Object.entries(OUTCOMES).map(([k, [label]]) => h("option", { value: k, selected: k === filter.outcome }, label)));
  const apply = () => {
    location.hash = `#/integrations/${enc(appId)}/deliveries` + query({ state: state.value, outcome: outcome.value });
  };
  state.addEventListener("change", apply);
  outcome.addEventListener("change", apply);
  const filters = h(
    "form",
    { class: "filters", "aria-label": "Filter deliveries" },
    field("State", state)[0],
    field("Last outcome", outcome)[0],
    h("div", { class: "field buttons" }, h("a", { class: "button link", href: `#/integrations/${enc(appId)}/deliveries` }, "Clear")),
  );
  filters.addEventListener("submit", (e) => (e.preventDefault(), apply()));

  fill(
    view,
    h("p", { class: "crumbs" }, h("a", { href: "#/integrations" }, "Integrations"), " › ", h("span", { id: "app-name" }, appId)),
    h("div", { class: "page-head" }, title, h("a", { class: "button", href: `#/integrations/${enc(appId)}` }, "Configuration")),
    filters,
    errors,
    body,
    bulkForm(appId, () => load()),
  );

  api("GET", `/integrations/${enc(appId)}`)
    .then((app) => {
      document.getElementById("app-name").textContent = app.name;
      title.textContent = `Delivery history · ${app.name}`;
    })
    .catch((e) => errors.show(e));

  let pages = [null];
  let items = [];
  const again = poll(
    () => load(true),
    () => items.some(unsettled),
  );

  async function load(quiet) {
    const before = pages[pages.length - 1];
    let res;
    try {
      res = await api("GET", `/integrations/${enc(appId)}/deliveries` + query({ state: filter.state, outcome: filter.outcome, before, limit: 25 }));
    } catch (e) {
      if (!quiet) fill(body);
      return errors.show(e);
    }
    errors.show(null);
    items = res.items;
    render(res.nextBefore);
    again();
  }

  function render(nextBefore) {
    if (items.length === 0) {
      const filtered = filter.state || filter.outcome;
      fill(
        body,
        empty(
          filtered ? "No delivery matches these filters." : "No delivery yet. Set a callback URL in the configuration and send a test webhook; verified events are delivered here too.",
          filtered ? h("a", { class: "button", href: `#/integrations/${enc(appId)}/deliveries` }, "Clear the filters") : h("a", { class: "button", href: `#/integrations/${enc(appId)}` }, "Open the configuration"),
        ),
      );
      return;
    }
    const rows = table(
      [
        ["Created", (d) => time(d.createdAt)],
        ["Event", eventCell],
        ["State", (d) => stateBadge(d.state)],
        ["Attempts", (d) => h("span", { class: "attempts", dataset: { attempts: d.attempts } }, attemptsWords(d))],
        ["Last outcome", lastOutcomeCell],
        ["Next attempt", (d) => nextAttemptCell(d, false)],
        [
          "Actions",
          (d) =>
            h(
              "span",
              { class: "row-actions" },
              h("a", { class: "button small details", href: `#/deliveries/${enc(d.id)}` }, "Details"),
              redeliverButton(d, () => load(true)),
            ),
        ],
      ],
      items,
      { class: "deliveries", rowAttrs: (d) => ({ dataset: { deliveryId: d.id, state: d.state } }) },
    );
    const nav = h(
      "div",
      { class: "pager" },
      pages.length > 1 ? h("button", { type: "button", onclick: () => (pages.pop(), load()) }, "‹ Newer") : null,
      nextBefore ? h("button", { type: "button", onclick: () => (pages.push(nextBefore), load()) }, "Older ›") : null,
      h("button", { type: "button", class: "link", onclick: () => load() }, "Refresh"),
    );
    fill(body, rows, nav);
  }

  load();
}

function redeliverButton(d, after) {
  const b = h("button", { type: "button", class: "small redeliver", disabled: d.state === "in_flight", "aria-label": `Redeliver ${d.id}` }, "Redeliver");
  b.addEventListener("click", () =>
    busy(b, null, async () => {
      const r = await api("POST", `/deliveries/${enc(d.id)}/redeliver`);
      toast(r.state === "held" ? "Redelivery queued, held while delivery is off." : "Redelivery queued.");
      after();
    }),
  );
  return b;
}

function bulkForm(appId, after) {
  const errors = errorBox();
  const now = new Date();
  const [fromField, from] = field("From", h("input", { type: "datetime-local", id: "bulk-from", value: isoToLocal(new Date(now - 24 * 3600 * 1000).toISOString()), required: true }));
  const [toField, to] = field("To", h("input", { type: "datetime-local", id: "bulk-to", value: isoToLocal(new Date(now.getTime() + 60 * 1000).toISOString()), required: true }));
  const result = h("span", { id: "bulk-result", "aria-live": "polite" });
  const submit = h("button", { type: "submit", id: "bulk-redeliver" }, "Redeliver failed deliveries");
  const form = h(
    "form",
    { class: "card bulk" },
    h("h2", {}, "Redeliver failed deliveries"),
    h("p", { class: "hint" }, "Every delivery that failed and was created in this range (your time zone) gets a new, manual attempt chain."),
    h("div", { class: "filters" }, fromField, toField, h("div", { class: "field buttons" }, submit)),
    result,
    errors,
  );
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    busy(submit, errors, async () => {
      const r = await api("POST", `/integrations/${enc(appId)}/redeliver`, { from: localToIso(from.value), to: localToIso(to.value) });
      result.textContent = r.redelivered === 1 ? "1 failed delivery queued again." : `${r.redelivered} failed deliveries queued again.`;
      after();
    });
  });
  return form;
}

export async function deliveryPage(view, id) {
  const errors = errorBox();
  const body = h("div", { id: "delivery" }, h("p", { class: "muted" }, "Loading…"));
  fill(view, h("p", { class: "crumbs" }, h("a", { href: "#/integrations" }, "Integrations"), " › ", h("span", { id: "crumb-app" }, "…"), " › Delivery"), errors, body);
  let d = null;
  // What the user opened or closed, by section: the page is rebuilt at every refresh while the
  // delivery is still being attempted, and must not fold up what they are reading.
  const opened = new Map();
  const remember = (key, defaultOpen, ...content) => {
    const el = h("details", { dataset: { key }, open: opened.has(key) ? opened.get(key) : defaultOpen }, ...content);
    el.addEventListener("toggle", () => opened.set(key, el.open));
    return el;
  };
  const again = poll(
    () => load(true),
    () => d && unsettled(d),
  );
  async function load(quiet) {
    try {
      d = await api("GET", `/deliveries/${enc(id)}`);
    } catch (e) {
      if (!quiet) fill(body);
      return errors.show(e);
    }
    errors.show(null);
    render();
    again();
  }
  function render() {
    fill(document.getElementById("crumb-app") || h("span"), h("a", { href: `#/integrations/${enc(d.appId)}/deliveries` }, "Delivery history"));
    const summary = h(
      "dl",
      { class: "facts" },
      fact("State", stateBadge(d.state)),
      fact("Event", d.isTest ? "Test webhook (sample CLICKWRAP_EVENT_VERIFIED)" : eventCell(d)),
      fact("Trigger", d.trigger),
      fact("Attempts", h("span", { class: "attempts", dataset: { attempts: d.attempts } }, attemptsWords(d))),
      fact("Last outcome", lastOutcomeCell(d)),
      fact("Next attempt", nextAttemptCell(d, true)),
      fact("Created", time(d.createdAt)),
      fact("Delivery ID", h("code", {}, d.id)),
    );
    const attempts = d.attemptList.length
      ? d.attemptList.map((a, i) => attemptCard(a, i, remember))
      : [empty(d.state === "held" ? "No attempt yet: this delivery is held because webhook delivery is off or the integration is disabled." : "No attempt yet.")];
    fill(
      body,
      h("div", { class: "page-head" }, h("h1", {}, "Delivery"), redeliverButton(d, () => load(true))),
      summary,
      h("h2", {}, "Attempts"),
      h("ol", { class: "attempt-list" }, attempts.map((a) => h("li", {}, a))),
      h("div", { class: "payload" }, remember("payload", false, h("summary", {}, "Payload (the same bytes at every attempt)"), h("pre", {}, pretty(d.payload)))),
    );
  }
  load();
}

function fact(label, value) {
  return [h("dt", {}, label), h("dd", {}, value)];
}

/** One attempt; `remember(key, defaultOpen, ...)` makes its foldable sections (the response body of a
 * failed attempt open by default). `i` is its place in the list, stable across refreshes. */
function attemptCard(a, i, remember) {
  const headers = a.requestHeaders && typeof a.requestHeaders === "object" ? Object.entries(a.requestHeaders) : [];
  return h(
    "article",
    { class: `attempt outcome-${a.outcome}`, dataset: { number: a.number, outcome: a.outcome } },
    h("h3", {}, `Attempt ${a.number}`, h("span", { class: "muted" }, ` · ${a.trigger} · `), time(a.startedAt), h("span", { class: "muted" }, ` · ${a.durationMs} ms`)),
    outcomeWords(a.outcome, a.detail, a.responseStatus),
    h(
      "dl",
      { class: "facts" },
      fact("URL", h("code", {}, a.url)),
      fact("Address connected to", a.remoteAddr ? h("code", { class: "remote-addr" }, a.remoteAddr) : h("span", { class: "muted" }, "none (nothing was connected)")),
      fact("Duration", `${a.durationMs} ms`),
      fact("Response status", a.responseStatus != null ? h("span", { class: "response-status" }, String(a.responseStatus)) : h("span", { class: "muted" }, "no response")),
    ),
    remember(
      `${i}:headers`,
      false,
      h("summary", {}, "Request headers"),
      headers.length ? table([["Header", ([k]) => h("code", {}, k)], ["Value", ([, v]) => h("code", { class: "wrap" }, Array.isArray(v) ? v.join(", ") : String(v))]], headers, { class: "headers" }) : h("p", { class: "muted" }, "No request was sent."),
    ),
    remember(`${i}:body`, a.outcome !== "ok", h("summary", {}, "Response body (first 4 KiB)"), a.responseBody ? h("pre", { class: "response-body" }, a.responseBody) : h("p", { class: "muted" }, "Empty.")),
  );
}
