// Verified clickwrap events across integrations: filters (integration, template, end user, status, date
// range) kept in the URL, keyset pagination, and one event with its webhook deliveries.

import { api, query } from "./api.js";
import { attemptsWords } from "./deliveries.js";
import { h, fill, field, time, errorBox, stateBadge, outcomeLabel, badge, empty, table, pretty, hashParams, localToIso, isoToLocal } from "./ui.js";

const enc = encodeURIComponent;

/** Cursors of the pages before the current one, per filter, so "Newer" can go back. */
const cursorStack = new Map();

export async function eventsPage(view) {
  const p = hashParams();
  const filter = {
    appId: p.get("appId") || "",
    clickwrapTemplateId: p.get("templateId") || "",
    endUserId: p.get("endUserId") || "",
    clickwrapEventStatus: p.get("status") || "",
    from: p.get("from") || "",
    to: p.get("to") || "",
  };
  const cursor = p.get("cursor") || "";
  const errors = errorBox();
  const body = h("div", { id: "events" }, h("p", { class: "muted" }, "Loading…"));

  const integration = h("select", { id: "filter-app", name: "appId" }, h("option", { value: "" }, "All integrations"));
  const template = h("select", { id: "filter-template", name: "templateId" }, h("option", { value: "" }, "All templates"));
  const endUser = h("input", { id: "filter-user", name: "endUserId", value: filter.endUserId, placeholder: "exact end user ID" });
  const status = h("select", { id: "filter-status", name: "status" }, [["", "Any status"], ["ACCEPTED", "Accepted"], ["DECLINED", "Declined"]].map(([v, l]) => h("option", { value: v, selected: v === filter.clickwrapEventStatus }, l)));
  const from = h("input", { id: "filter-from", type: "datetime-local", value: isoToLocal(filter.from) });
  const to = h("input", { id: "filter-to", type: "datetime-local", value: isoToLocal(filter.to) });
  const form = h(
    "form",
    { class: "filters", "aria-label": "Filter events", id: "event-filters" },
    field("Integration", integration)[0],
    field("Template", template)[0],
    field("End user", endUser)[0],
    field("Status", status)[0],
    field("From", from)[0],
    field("To", to)[0],
    h("div", { class: "field buttons" }, h("button", { type: "submit", class: "visually-hidden", id: "apply-filters", tabindex: "-1" }, "Apply"), h("a", { class: "button link", href: "#/events" }, "Clear")),
  );
  // The evidence of every event these filters match, streamed by the server as a file (NDJSON ends
  // with the chain head it reaches; both name it in the file name).
  const exportHref = (format) => "/api/v1/events/export" + query({ ...filter, format });
  const exports = h(
    "p",
    { class: "exports", id: "event-exports" },
    "Export the evidence of these events: ",
    h("a", { class: "button small", id: "export-ndjson", href: exportHref("ndjson"), download: "" }, "NDJSON"),
    " ",
    h("a", { class: "button small", id: "export-csv", href: exportHref("csv"), download: "" }, "CSV"),
  );
  // Like every filter of the dashboard: applied as soon as it changes (the end user when the field
  // is left or Enter is pressed), kept in the URL, and cleared by "Clear".
  // Until the names have loaded, the two lists cannot show the URL's choice yet: keep it.
  let named = false;
  const apply = () => {
    const next =
      "#/events" +
      query({ appId: named ? integration.value : filter.appId, templateId: named ? template.value : filter.clickwrapTemplateId, endUserId: endUser.value.trim(), status: status.value, from: localToIso(from.value), to: localToIso(to.value) });
    if (next !== location.hash) location.hash = next;
  };
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    apply();
  });
  for (const el of [integration, template, status, from, to, endUser]) el.addEventListener("change", apply);
  fill(view, h("h1", {}, "Clickwrap events"), h("p", { class: "lead" }, "Verified acceptances and declines, newest first. Times are in your time zone; hover for UTC."), form, exports, errors, body);

  // Names for the filters and the table.
  const names = { apps: new Map(), templates: new Map() };
  try {
    const [apps, templates] = await Promise.all([api("GET", "/integrations"), api("GET", "/templates")]);
    for (const a of apps) {
      names.apps.set(a.appId, a.name);
      integration.append(h("option", { value: a.appId, selected: a.appId === filter.appId }, a.name));
    }
    for (const t of templates) {
      names.templates.set(t.id, t.name);
      template.append(h("option", { value: t.id, selected: t.id === filter.clickwrapTemplateId }, t.name));
    }
    named = true;
  } catch (e) {
    errors.show(e);
  }

  const key = JSON.stringify(filter);
  const stack = cursorStack.get(key) || [];
  cursorStack.clear();
  cursorStack.set(key, stack);
  // Arriving at the first page (no cursor) forgets the way back.
  if (!cursor) stack.length = 0;

  let page;
  try {
    page = await api("GET", "/events" + query({ ...filter, limit: 20, cursor }));
  } catch (e) {
    fill(body);
    return errors.show(e);
  }
  const filtered = Object.values(filter).some(Boolean);
  if (page.items.length === 0) {
    fill(
      body,
      filtered
        ? empty("No event matches these filters.", h("a", { class: "button", href: "#/events" }, "Clear the filters"))
        : empty("No verified event yet. Events appear here once an end user acts in the widget and your backend verifies the clicktermSignature (POST /public-client/v1/clickwrap/verify).", h("a", { class: "button", href: "#/templates" }, "Set up a template")),
    );
    return;
  }
  const base = { appId: filter.appId, templateId: filter.clickwrapTemplateId, endUserId: filter.endUserId, status: filter.clickwrapEventStatus, from: filter.from, to: filter.to };
  const newer = () => {
    const prev = stack.pop();
    location.hash = "#/events" + query({ ...base, cursor: prev || "" });
  };
  const older = () => {
    stack.push(cursor);
    location.hash = "#/events" + query({ ...base, cursor: page.nextPageCursor });
  };
  fill(
    body,
    table(
      [
        ["Action at", (e) => time(e.actionAt)],
        ["Status", (e) => badge(e.clickwrapEventStatus === "ACCEPTED" ? "Accepted" : "Declined")],
        ["End user", (e) => h("span", { class: "end-user" }, e.endUserId)],
        ["Template", (e) => h("span", {}, names.templates.get(e.clickwrapTemplateId) || e.clickwrapTemplateId, h("span", { class: "muted" }, ` v${e.clickwrapTemplateVersion}.${e.clickwrapTemplateVersionMinor}`))],
        ["Integration", (e) => names.apps.get(e.appId) || e.appId],
        ["", (e) => h("a", { class: "button small", href: `#/events/${enc(e.clickwrapEventId)}`, "aria-label": `Details of the event of ${e.endUserId}` }, "Details")],
      ],
      page.items,
      { class: "events", rowAttrs: (e) => ({ dataset: { eventId: e.clickwrapEventId } }) },
    ),
    h(
      "div",
      { class: "pager" },
      cursor ? h("button", { type: "button", id: "page-newer", onclick: newer }, "‹ Newer") : null,
      page.nextPageCursor ? h("button", { type: "button", id: "page-older", onclick: older }, "Older ›") : null,
    ),
  );
}

export async function eventPage(view, id) {
  const errors = errorBox();
  fill(view, h("p", { class: "crumbs" }, h("a", { href: "#/events" }, "Clickwrap events"), " › Event"), errors);
  let e;
  try {
    e = await api("GET", `/events/${enc(id)}`);
  } catch (err) {
    return errors.show(err);
  }
  const fact = (label, value) => [h("dt", {}, label), h("dd", {}, value)];
  // Names, not ids: the template's and the integration's (a deleted integration keeps its App ID).
  const [template, app] = await Promise.all([api("GET", `/templates/${enc(e.clickwrapTemplateId)}`).catch(() => null), api("GET", `/integrations/${enc(e.appId)}`).catch(() => null)]);
  const withId = (name, id) => (name ? h("span", { title: id }, name) : h("span", { class: "mono" }, id));
  // The proof of consent: what the end user was shown, and the event's link in the ledger.
  const evidence = await api("GET", `/events/${enc(id)}/evidence`).catch((err) => {
    errors.show(err);
    return null;
  });
  view.append(
    h("h1", {}, "Clickwrap event"),
    h(
      "dl",
      { class: "facts", id: "event-facts" },
      fact("Status", badge(e.clickwrapEventStatus === "ACCEPTED" ? "Accepted" : "Declined")),
      fact("End user", h("span", { class: "end-user" }, e.endUserId)),
      fact("Template", h("a", { href: `#/templates/${enc(e.clickwrapTemplateId)}`, id: "event-template" }, withId(template && template.name, e.clickwrapTemplateId))),
      fact("Version", `${e.clickwrapTemplateVersion}.${e.clickwrapTemplateVersionMinor}`),
      fact("Integration", app ? h("a", { href: `#/integrations/${enc(e.appId)}`, id: "event-integration" }, withId(app.name, e.appId)) : h("span", { id: "event-integration" }, withId(null, e.appId), h("span", { class: "muted" }, " (deleted)"))),
      fact("Presented", time(e.presentedAt)),
      fact("Action at", time(e.actionAt)),
      fact("Version effective since", time(e.effectiveAt)),
      fact("Event ID", h("code", {}, e.clickwrapEventId)),
    ),
    h("h2", {}, "Proof of consent"),
    h(
      "p",
      { class: "buttons" },
      h("a", { class: "button primary", id: "event-certificate", href: `/api/v1/events/${enc(id)}/certificate.pdf`, target: "_blank", rel: "noopener" }, "Certificate (PDF)"),
      " ",
      h("a", { class: "button", id: "event-evidence-json", href: `/api/v1/events/${enc(id)}/evidence`, target: "_blank", rel: "noopener" }, "Evidence (JSON)"),
    ),
    evidence
      ? h(
          "dl",
          { class: "facts", id: "event-evidence" },
          fact("Chain position", h("span", { id: "evidence-position" }, String(evidence.ledger.position))),
          fact("Link hash", h("code", { class: "hash", id: "evidence-hash" }, evidence.ledger.hash)),
          fact("Evidence digest", h("code", { class: "hash" }, evidence.ledger.evidenceDigest)),
          fact("Previous hash", h("code", { class: "hash" }, evidence.ledger.previousHash)),
          fact("Verified", time(evidence.verifiedAt)),
          fact("Client", h("span", {}, evidence.clientAddress || "—", h("span", { class: "muted" }, evidence.userAgent ? " · " + evidence.userAgent : ""))),
          fact("Title shown", h("span", { id: "evidence-title" }, evidence.title || "—")),
          fact("Content shown", h("pre", { class: "shown", id: "evidence-content" }, evidence.content || "—")),
        )
      : null,
    h("h2", {}, "Placeholders"),
    e.templatePlaceholders ? h("pre", {}, pretty(e.templatePlaceholders)) : h("p", { class: "muted" }, "None."),
    h("h2", {}, "Technical metadata"),
    h("pre", {}, pretty(e.technicalMetadata)),
    h("h2", {}, "Webhook deliveries"),
    e.deliveries.length
      ? table(
          [
            ["Created", (d) => time(d.createdAt)],
            ["State", (d) => stateBadge(d.state)],
            ["Attempts", (d) => attemptsWords(d)],
            ["Last outcome", (d) => h("span", {}, outcomeLabel(d.lastOutcome), d.lastResponseStatus != null ? h("span", { class: "status-code" }, " " + d.lastResponseStatus) : null)],
            ["", (d) => h("a", { class: "button small", href: `#/deliveries/${enc(d.id)}` }, "Details")],
          ],
          e.deliveries,
          { class: "deliveries" },
        )
      : empty("No webhook for this event: the integration had no callback URL when it was verified."),
  );
}
