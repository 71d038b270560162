// The overview, the landing page after login: webhook health per integration (last 24 hours, success
// rate, last failure with its reason, queue lag, a "Failing" badge) and the charts — attempts per
// hour by outcome, verified events per day, attempt latency — for every integration or one
// (?appId, kept in the URL like every filter). Everything comes from GET /api/v1/stats/*.

import { api, query } from "./api.js";
import { h, fill, field, errorBox, empty, table, healthBadge, outcomeLabel, relativeWords, durationWords, hashParams, OUTCOMES } from "./ui.js";
import { stackedBars, lineChart } from "./charts.js";

const enc = encodeURIComponent;

/** The outcomes drawn in the attempts chart, each its own colour; the rarer failures share one. */
const OUTCOME_SERIES = [
  ["ok", "Delivered", "c-ok"],
  ["http_status", "HTTP error", "c-http"],
  ["timeout", "Timed out", "c-timeout"],
  ["connect_error", "Connection failed", "c-connect"],
  ["tls_error", "TLS error", "c-tls"],
];
const OTHER = Object.keys(OUTCOMES).filter((k) => !OUTCOME_SERIES.some(([o]) => o === k));

const hourFormat = new Intl.DateTimeFormat(undefined, { hour: "2-digit", minute: "2-digit" });
const dayFormat = new Intl.DateTimeFormat(undefined, { month: "short", day: "numeric", timeZone: "UTC" });

export function percent(rate) {
  if (rate === null || rate === undefined) return "—";
  const p = rate * 100;
  return (p === 100 || p === 0 ? p.toFixed(0) : p.toFixed(1)) + " %";
}

/** "12 delivered · 3 failed" for a last24h block, and the failures by outcome ("HTTP error 2 · Timed out 1"). */
export function last24Words(t) {
  if (!t.attempts) return h("span", { class: "muted" }, "no attempts");
  const failures = Object.entries(t.byOutcome).filter(([k]) => k !== "ok");
  return h(
    "span",
    { class: "last24" },
    h("span", { class: "n-ok" }, `${t.delivered} delivered`),
    " · ",
    h("span", { class: t.failed ? "n-failed" : "muted" }, `${t.failed} failed`),
    t.gaveUp ? h("span", { class: "n-failed" }, ` · ${t.gaveUp} gave up`) : null,
    failures.length ? h("span", { class: "by-outcome" }, failures.map(([k, n]) => `${(OUTCOMES[k] || [k])[0]} ${n}`).join(" · ")) : null,
  );
}

/** The latest failure: when, what (outcome, status) and why, linking to its delivery. */
export function lastFailureCell(f) {
  if (!f) return h("span", { class: "muted" }, "none");
  const what = [outcomeLabel(f.outcome), f.responseStatus != null ? h("span", { class: "status-code" }, ` ${f.responseStatus}`) : null];
  const when = h("span", { class: "muted" }, " · " + relativeWords(f.at));
  const reason = f.detail ? h("div", { class: "failure-detail", title: f.detail }, f.detail) : null;
  const body = [what, when, reason];
  return h("div", { class: "last-failure" }, f.deliveryId ? h("a", { href: `#/deliveries/${enc(f.deliveryId)}`, class: "failure-link" }, body) : body);
}

/** Pending and in flight, with how late the oldest due one is. */
export function queueCell(q) {
  const waiting = q.pending + q.inFlight;
  if (!waiting && !q.held) return h("span", { class: "muted" }, "empty");
  const parts = [];
  if (waiting) parts.push(`${waiting} waiting`);
  if (q.held) parts.push(`${q.held} held`);
  return h("span", { class: "queue" }, parts.join(" · "), q.lagSeconds > 0 ? h("span", { class: q.lagSeconds >= 60 ? "lag late" : "lag" }, ` · ${durationWords(q.lagSeconds)} behind`) : null);
}

export async function overviewPage(view) {
  const params = hashParams();
  const appId = params.get("appId") || "";
  const errors = errorBox();
  const summary = h("div", { class: "summary", id: "summary" });
  const health = h("div", { id: "health" }, h("p", { class: "muted" }, "Loading…"));
  const charts = h("div", { class: "charts", id: "charts" });
  const chooser = h("select", { id: "chart-app", name: "appId" }, h("option", { value: "" }, "All integrations"));
  chooser.addEventListener("change", () => (location.hash = "#/overview" + query({ appId: chooser.value })));
  const filters = h("form", { class: "filters", "aria-label": "Filter the charts" }, field("Integration", chooser)[0], h("div", { class: "field buttons" }, h("a", { class: "button link", href: "#/overview" }, "Clear")));
  filters.addEventListener("submit", (e) => e.preventDefault());
  fill(
    view,
    h("div", { class: "page-head" }, h("h1", {}, "Overview"), h("button", { type: "button", class: "link", onclick: () => overviewPage(view) }, "Refresh")),
    h("p", { class: "lead" }, "Webhook health of every integration over the last 24 hours, and what happened over time."),
    errors,
    summary,
    h("h2", {}, "Webhooks by integration"),
    health,
    h("div", { class: "page-head charts-head" }, h("h2", {}, "Over time"), filters),
    charts,
  );

  let overview, attempts, events, head;
  try {
    [overview, attempts, events, head] = await Promise.all([
      api("GET", "/stats/overview"),
      api("GET", "/stats/attempts" + query({ hours: 24, appId })),
      api("GET", "/stats/events" + query({ days: 14, appId })),
      api("GET", "/ledger/head"),
    ]);
  } catch (e) {
    fill(health);
    return errors.show(e);
  }
  for (const i of overview.integrations) chooser.append(h("option", { value: i.appId, selected: i.appId === appId }, i.name));

  const t = overview.totals;
  fill(
    summary,
    stat("Integrations", String(t.integrations), t.failing ? h("span", { class: "n-failed", id: "failing-count" }, `${t.failing} failing`) : h("span", { class: "muted" }, "none failing")),
    stat("Attempts, 24 h", String(t.attempts), t.attempts ? `${t.delivered} delivered · ${t.failed} failed` : "none"),
    stat("Success rate, 24 h", percent(t.successRate), "delivered attempts of all attempts"),
    stat("Gave up, 24 h", String(t.gaveUp), "deliveries that failed every attempt"),
    ledgerStat(head),
  );

  if (overview.integrations.length === 0) {
    fill(health, empty("No integration yet. Create one for each application that shows clickwraps.", h("a", { class: "button primary", href: "#/integrations" }, "Go to the integrations")));
  } else {
    fill(
      health,
      table(
        [
          ["App name", (i) => h("a", { class: "app-name", href: `#/integrations/${enc(i.appId)}/deliveries` }, i.name)],
          ["Health", (i) => healthBadge(i.health)],
          ["Last 24 h", (i) => last24Words(i.last24h)],
          ["Success rate", (i) => h("span", { class: "rate" }, percent(i.last24h.successRate))],
          ["Last failure", (i) => lastFailureCell(i.lastFailure)],
          ["Queue", (i) => queueCell(i.queue)],
        ],
        overview.integrations,
        { class: "health-table", rowAttrs: (i) => ({ dataset: { appId: i.appId, health: i.health } }) },
      ),
    );
  }

  const hourLabel = (b, i) => (i % 4 === 0 ? hourFormat.format(new Date(b.start)) : null);
  const series = [
    ...OUTCOME_SERIES.map(([key, label, cls]) => ({ label, cls, value: (b) => b.byOutcome[key] || 0 })),
    { label: "Other failure", cls: "c-other", value: (b) => OTHER.reduce((n, k) => n + (b.byOutcome[k] || 0), 0) },
  ];
  const attemptsChart = stackedBars({
    label: "Delivery attempts per hour by outcome, last 24 hours",
    buckets: attempts.buckets,
    series,
    xLabel: (b, i) => (i % 2 === 0 ? hourFormat.format(new Date(b.start)) : null),
    width: 1240,
    title: (b, total) => `${hourFormat.format(new Date(b.start))}: ${total} attempts` + Object.entries(b.byOutcome).map(([k, n]) => `\n${(OUTCOMES[k] || [k])[0]}: ${n}`).join(""),
  });
  const eventsChart = stackedBars({
    label: "Verified events per day, last 14 days",
    buckets: events.buckets,
    series: [
      { label: "Accepted", cls: "c-accepted", value: (b) => b.accepted },
      { label: "Declined", cls: "c-declined", value: (b) => b.declined },
    ],
    xLabel: (b, i) => (i % 2 === 0 ? dayFormat.format(new Date(b.start)) : null),
    title: (b, total) => `${dayFormat.format(new Date(b.start))} (UTC): ${total} verified\nAccepted: ${b.accepted}\nDeclined: ${b.declined}`,
  });
  const latencyChart = lineChart({
    label: "Attempt latency per hour, mean and slowest, last 24 hours",
    buckets: attempts.buckets,
    lines: [
      { label: "Slowest", cls: "c-max", value: (b) => b.maxDurationMs },
      { label: "Mean", cls: "c-avg", value: (b) => b.avgDurationMs },
    ],
    xLabel: hourLabel,
    title: (b, l, v) => `${hourFormat.format(new Date(b.start))}: ${l.label.toLowerCase()} ${v} ms`,
  });
  const totalAttempts = attempts.buckets.reduce((n, b) => n + b.attempts, 0);
  const totalEvents = events.buckets.reduce((n, b) => n + b.accepted + b.declined, 0);
  fill(
    charts,
    chart("chart-attempts", "Delivery attempts per hour", `${totalAttempts} attempts in the last 24 hours`, attemptsChart, series),
    chart("chart-events", "Verified events per day", `${totalEvents} verified in the last 14 days (days in UTC)`, eventsChart, [
      { label: "Accepted", cls: "c-accepted" },
      { label: "Declined", cls: "c-declined" },
    ]),
    chart("chart-latency", "Attempt latency", "mean and slowest attempt per hour, in milliseconds", latencyChart, [
      { label: "Mean", cls: "c-avg" },
      { label: "Slowest", cls: "c-max" },
    ]),
  );
}

/** The proof-of-consent ledger's head: how many verified events it chains and the hash that covers
 * them all, to note somewhere else (a ticket, a daily note) and check later with
 * `clicktermd verify-ledger --anchor POSITION:HASH`. */
function ledgerStat(head) {
  const anchor = `${head.position}:${head.hash}`;
  const card = stat("Ledger head", `#${head.position}`, h("span", {}, h("code", { class: "hash", id: "ledger-hash", title: "verify-ledger --anchor " + anchor }, head.hash)));
  card.id = "ledger-head";
  card.dataset.anchor = anchor;
  return card;
}

function stat(label, value, note) {
  return h("div", { class: "stat card" }, h("div", { class: "stat-label" }, label), h("div", { class: "stat-value" }, value), h("div", { class: "stat-note" }, note));
}

function chart(id, title, note, svg, legend) {
  return h(
    "figure",
    { class: "chart card", id },
    h("figcaption", {}, h("strong", {}, title), h("span", { class: "muted" }, " · " + note)),
    svg,
    h("ul", { class: "legend" }, legend.map((l) => h("li", {}, h("span", { class: `swatch ${l.cls}`, "aria-hidden": "true" }), l.label))),
  );
}

