// Clickwrap templates: the list, creating one, and one template's settings, draft texts, publishing a
// version (major or minor, effective at a chosen time), its versions, and a preview with placeholders.

import { api } from "./api.js";
import { h, fill, field, time, badge, errorBox, busy, modal, empty, table, toast, localToIso } from "./ui.js";

const enc = encodeURIComponent;
const PLACEHOLDERS = ["fullName", "email", "company", "jobTitle", "phoneNumber", "registrationNumber", "vatNumber", "address", "date"];

function versionText(v) {
  return v ? `${v.version}.${v.versionMinor}` : null;
}

export async function templatesPage(view) {
  const errors = errorBox();
  const body = h("div", {}, h("p", { class: "muted" }, "Loading…"));
  const create = h("button", { type: "button", class: "primary", id: "create-template", onclick: () => createDialog() }, "New template");
  fill(view, h("div", { class: "page-head" }, h("h1", {}, "Templates"), create), h("p", { class: "lead" }, "Agreement texts with versions. Edit the draft, then publish it as a major version (everyone accepts again) or a minor one."), errors, body);
  let list;
  try {
    list = await api("GET", "/templates");
  } catch (e) {
    fill(body);
    return errors.show(e);
  }
  if (list.length === 0) {
    fill(body, empty("No template yet. Create one, write its text, and publish version 1.0 so the widget can show it.", h("button", { type: "button", class: "primary", onclick: () => create.click() }, "Create the first template")));
    return;
  }
  fill(
    body,
    table(
      [
        ["Name", (t) => h("a", { href: `#/templates/${enc(t.id)}`, class: "template-name" }, t.name)],
        ["Tags", (t) => (t.tags.length ? t.tags.join(", ") : h("span", { class: "muted" }, "—"))],
        ["Effective version", (t) => (t.effectiveVersion ? h("span", { class: "effective" }, versionText(t.effectiveVersion)) : h("span", { class: "muted" }, "none published"))],
        ["Effective since", (t) => time(t.effectiveVersion && t.effectiveVersion.effectiveAt)],
        ["Status", (t) => badge(t.enabled ? "Enabled" : "Disabled")],
        ["Actions", (t) => h("a", { class: "button small", href: `#/templates/${enc(t.id)}` }, "Open")],
      ],
      list,
      { class: "templates", rowAttrs: (t) => ({ dataset: { templateId: t.id } }) },
    ),
  );
}

function createDialog() {
  modal("New template", (close) => {
    const errors = errorBox();
    const [nameF, name] = field("Name", h("input", { id: "tpl-name", required: true, placeholder: "Terms of Service" }));
    const [tagsF, tags] = field("Tags", h("input", { id: "tpl-tags", placeholder: "legal, signup" }), "Comma-separated; the API can list templates by tag.");
    const [langF, lang] = field("Default language", h("input", { id: "tpl-lang", value: "en", required: true, maxlength: 35 }));
    const [titleF, title] = field("Title", h("input", { id: "tpl-title", required: true }));
    const [contentF, content] = field("Content (HTML)", h("textarea", { id: "tpl-content", rows: 6, required: true }), "Placeholders such as {{fullName}} or {{company}} are filled per end user.");
    const submit = h("button", { type: "submit", class: "primary" }, "Create draft");
    const form = h("form", { id: "template-form" }, nameF, tagsF, langF, titleF, contentF, errors, h("div", { class: "actions" }, h("button", { type: "button", onclick: close }, "Cancel"), submit));
    form.addEventListener("submit", (e) => {
      e.preventDefault();
      busy(submit, errors, async () => {
        const t = await api("POST", "/templates", {
          name: name.value,
          tags: splitTags(tags.value),
          defaultLanguage: lang.value.trim(),
          languages: { [lang.value.trim()]: { title: title.value, content: content.value } },
        });
        close();
        location.hash = `#/templates/${enc(t.id)}`;
      });
    });
    queueMicrotask(() => name.focus());
    return form;
  });
}

function splitTags(text) {
  return text
    .split(",")
    .map((s) => s.trim())
    .filter(Boolean);
}

export async function templatePage(view, id) {
  const errors = errorBox();
  fill(view, h("p", { class: "crumbs" }, h("a", { href: "#/templates" }, "Templates"), " › Template"), errors);
  let t;
  try {
    t = await api("GET", `/templates/${enc(id)}`);
  } catch (e) {
    return errors.show(e);
  }
  const heading = h("h1", { id: "template-title" }, t.name);
  const effective = h("p", { id: "template-effective", class: "lead" });
  const versionsBox = h("div", { id: "versions" });
  const render = () => {
    heading.textContent = t.name;
    fill(effective, t.effectiveVersion ? ["Effective version ", h("strong", {}, versionText(t.effectiveVersion)), " since ", time(t.effectiveVersion.effectiveAt), "."] : "No version is effective yet: publish the draft to make it visible to the widget.");
    fill(
      versionsBox,
      t.versions.length
        ? table(
            [
              ["Version", (v) => h("span", { class: "version" }, versionText(v))],
              ["Effective at", (v) => time(v.effectiveAt)],
              ["Must accept by", (v) => time(v.mustAcceptBy)],
              ["Published", (v) => time(v.publishedAt)],
              ["", (v) => (t.effectiveVersion && versionText(t.effectiveVersion) === versionText(v) ? badge("Effective") : new Date(v.effectiveAt) > new Date() ? badge("Scheduled") : null)],
            ],
            [...t.versions].reverse(),
            { class: "versions" },
          )
        : empty("No published version yet. Publish the draft below as version 1.0."),
    );
  };
  render();
  view.append(heading, effective, settingsForm(t, (nt) => ((t = nt), render())), draftForm(t, (nt) => (t = nt)), h("h2", {}, "Versions"), versionsBox, publishForm(t, async () => ((t = await api("GET", `/templates/${enc(id)}`)), render())), previewForm(t));
}

function settingsForm(t, updated) {
  const errors = errorBox();
  const [nameF, name] = field("Name", h("input", { id: "set-name", value: t.name, required: true }));
  const [tagsF, tags] = field("Tags", h("input", { id: "set-tags", value: t.tags.join(", ") }));
  const enabled = h("input", { type: "checkbox", id: "set-enabled", role: "switch", checked: t.enabled });
  const reaccept = h("input", { type: "checkbox", id: "set-reaccept", checked: t.alwaysRequireReacceptance });
  const submit = h("button", { type: "submit" }, "Save settings");
  const form = h(
    "form",
    { class: "card", id: "template-settings" },
    h("h2", {}, "Settings"),
    nameF,
    tagsF,
    h("label", { class: "switch" }, enabled, h("span", {}, "Enabled (shown by the widget and listed by the API)")),
    h("label", { class: "switch" }, reaccept, h("span", {}, "Always require re-acceptance")),
    errors,
    h("div", { class: "actions" }, submit),
  );
  const save = (changes, button) =>
    busy(button, errors, async () => {
      const nt = await api("PATCH", `/templates/${enc(t.id)}`, changes);
      t = nt;
      enabled.checked = nt.enabled;
      updated(nt);
      toast("Template saved.");
    });
  enabled.addEventListener("change", () => save({ enabled: enabled.checked }, enabled));
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    save({ name: name.value, tags: splitTags(tags.value), alwaysRequireReacceptance: reaccept.checked }, submit);
  });
  return form;
}

function draftForm(t, updated) {
  const errors = errorBox();
  const languages = Object.keys(t.languages);
  let current = t.defaultLanguage;
  const texts = structuredClone(t.languages);
  const lang = h("select", { id: "draft-lang" }, languages.map((l) => h("option", { value: l, selected: l === current }, l + (l === t.defaultLanguage ? " (default)" : ""))));
  const [titleF, title] = field("Title", h("input", { id: "draft-title", required: true }));
  const [contentF, content] = field("Content (HTML)", h("textarea", { id: "draft-content", rows: 8 }), `Placeholders: ${PLACEHOLDERS.map((p) => `{{${p}}}`).join(" ")} and custom ones.`);
  const [inlineF, inline] = field("Inline content (optional)", h("textarea", { id: "draft-inline", rows: 2 }));
  const newLang = h("input", { id: "draft-new-lang", placeholder: "de", size: 6, "aria-label": "New language code" });
  const addLang = h("button", { type: "button", class: "small" }, "Add language");
  const show = () => {
    const x = texts[current] || { title: "", content: "", inlineContent: null };
    title.value = x.title;
    content.value = x.content;
    inline.value = x.inlineContent || "";
  };
  const keep = () => {
    texts[current] = { title: title.value, content: content.value, inlineContent: inline.value || null };
  };
  lang.addEventListener("change", () => {
    keep();
    current = lang.value;
    show();
  });
  addLang.addEventListener("click", () => {
    const l = newLang.value.trim();
    if (!l || texts[l]) return;
    keep();
    texts[l] = { title: "", content: "", inlineContent: null };
    lang.append(h("option", { value: l }, l));
    lang.value = l;
    current = l;
    newLang.value = "";
    show();
    title.focus();
  });
  show();
  const submit = h("button", { type: "submit", id: "save-draft" }, "Save draft");
  const form = h(
    "form",
    { class: "card", id: "draft" },
    h("h2", {}, "Draft"),
    h("p", { class: "hint" }, "The draft is what the next published version will contain. Published versions never change."),
    h("div", { class: "row lang-row" }, field("Language", lang)[0], newLang, addLang),
    titleF,
    contentF,
    inlineF,
    errors,
    h("div", { class: "actions" }, submit),
  );
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    keep();
    busy(submit, errors, async () => {
      const body = {};
      for (const [l, x] of Object.entries(texts)) body[l] = { title: x.title, content: x.content, inlineContent: x.inlineContent || null };
      updated(await api("PATCH", `/templates/${enc(t.id)}`, { languages: body }));
      toast("Draft saved.");
    });
  });
  return form;
}

function publishForm(t, published) {
  const errors = errorBox();
  const major = h("input", { type: "radio", name: "kind", value: "MAJOR", id: "kind-major", checked: t.versions.length === 0 });
  const minor = h("input", { type: "radio", name: "kind", value: "MINOR", id: "kind-minor", checked: t.versions.length > 0, disabled: t.versions.length === 0 });
  const [effF, eff] = field("Effective at", h("input", { type: "datetime-local", id: "publish-effective" }), "Empty: effective now. A future time schedules the version.");
  const [mustF, must] = field("Must accept by (optional)", h("input", { type: "datetime-local", id: "publish-must" }));
  const result = h("span", { id: "publish-result", "aria-live": "polite" });
  const submit = h("button", { type: "submit", class: "primary", id: "publish" }, "Publish version");
  const form = h(
    "form",
    { class: "card", id: "publish-form" },
    h("h2", {}, "Publish the draft"),
    h(
      "fieldset",
      {},
      h("legend", {}, "Kind of version"),
      h("label", { class: "radio" }, major, " Major (2.0, 3.0 …): everyone must accept again"),
      h("label", { class: "radio" }, minor, " Minor (1.1, 1.2 …): no new prompt for those who accepted the major"),
    ),
    h("div", { class: "filters" }, effF, mustF),
    errors,
    h("div", { class: "actions" }, result, submit),
  );
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    busy(submit, errors, async () => {
      const body = { type: major.checked ? "MAJOR" : "MINOR" };
      if (eff.value) body.effectiveAt = localToIso(eff.value);
      if (must.value) body.mustAcceptBy = localToIso(must.value);
      const v = await api("POST", `/templates/${enc(t.id)}/versions`, body);
      result.textContent = `Version ${v.version}.${v.versionMinor} published.`;
      minor.disabled = false;
      await published();
    });
  });
  return form;
}

function previewForm(t) {
  const errors = errorBox();
  const lang = h("select", { id: "preview-lang" }, Object.keys(t.languages).map((l) => h("option", { value: l, selected: l === t.defaultLanguage }, l)));
  const inputs = PLACEHOLDERS.map((p) => [p, h("input", { id: `ph-${p}`, name: p })]);
  const [customF, custom] = field("Custom placeholders", h("textarea", { id: "ph-custom", rows: 2, placeholder: "plan=Pro" }), "One name=value per line.");
  const out = h("div", { class: "preview", id: "preview-out", "aria-live": "polite" });
  const submit = h("button", { type: "submit", id: "preview-button" }, "Preview");
  const form = h(
    "form",
    { class: "card", id: "preview-form" },
    h("h2", {}, "Preview the draft"),
    h("p", { class: "hint" }, "Rendered by the server exactly as the widget renders it: values are HTML-escaped, a missing placeholder shows as a dash. Nothing is recorded."),
    h("div", { class: "placeholders" }, field("Language", lang)[0], inputs.map(([p, input]) => field(p, input)[0])),
    customF,
    errors,
    h("div", { class: "actions" }, submit),
    out,
  );
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    busy(submit, errors, async () => {
      const values = {};
      for (const [p, input] of inputs) if (input.value) values[p] = input.value;
      for (const line of custom.value.split("\n")) {
        const i = line.indexOf("=");
        if (i > 0) values[line.slice(0, i).trim()] = line.slice(i + 1).trim();
      }
      const r = await api("POST", `/templates/${enc(t.id)}/preview`, { language: lang.value, templatePlaceholders: values });
      const content = h("div", { class: "preview-content", id: "preview-content" });
      content.append(sanitise(r.content));
      fill(out, h("h3", { id: "preview-title" }, r.title), content, r.inlineContent ? h("p", { class: "preview-inline" }, sanitise(r.inlineContent)) : null);
    });
  });
  return form;
}

/**
 * The template's own markup, as the widget shows it, minus anything active: scripts, frames, event
 * handler attributes and javascript: links (the page's Content-Security-Policy forbids them as well).
 */
function sanitise(html) {
  const doc = new DOMParser().parseFromString(`<body>${html}</body>`, "text/html");
  for (const el of doc.body.querySelectorAll("script, style, iframe, object, embed, link, meta, base, form")) el.remove();
  for (const el of doc.body.querySelectorAll("*")) {
    for (const attr of [...el.attributes]) {
      const name = attr.name.toLowerCase();
      if (name.startsWith("on") || ((name === "href" || name === "src" || name === "action") && /^\s*javascript:/i.test(attr.value))) el.removeAttribute(attr.name);
    }
  }
  const frag = document.createDocumentFragment();
  frag.append(...doc.body.childNodes);
  return frag;
}
