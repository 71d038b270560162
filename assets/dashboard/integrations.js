// The integrations table (App name, Created date, Status, webhook health, Actions), creating an
// integration, and the integration configuration dialog of ClickTerm's Integrations page.

import { api } from "./api.js";
import { h, fill, field, time, badge, errorBox, busy, modal, confirmDialog, secretBox, copyButton, copyText, empty, table, toast, healthBadge } from "./ui.js";
import { last24Words, lastFailureCell, queueCell, percent } from "./overview.js";

const enc = encodeURIComponent;

export async function integrationsPage(view, openAppId) {
  const errors = errorBox();
  const createButton = h("button", { type: "button", class: "primary", id: "create-integration", onclick: () => createDialog(() => integrationsPage(view)) }, "New integration");
  const body = h("div", {}, h("p", { class: "muted" }, "Loading…"));
  fill(view, h("div", { class: "page-head" }, h("h1", {}, "Integrations"), createButton), h("p", { class: "lead" }, "The web and mobile applications connected to this server. Each has an App ID (public) and an App Key (secret, for your backend)."), errors, body);
  let list;
  const health = new Map();
  try {
    const [all, overview] = await Promise.all([api("GET", "/integrations"), api("GET", "/stats/overview").catch(() => null)]);
    list = all;
    for (const i of (overview && overview.integrations) || []) health.set(i.appId, i);
  } catch (e) {
    fill(body);
    return errors.show(e);
  }
  const of = (i) => health.get(i.appId);
  if (list.length === 0) {
    fill(body, empty("No integration yet. Create one for each application that shows clickwraps; you will get its App ID and App Key.", h("button", { type: "button", class: "primary", onclick: () => createButton.click() }, "Create the first integration")));
  } else {
    fill(
      body,
      table(
        [
          ["App name", (i) => h("span", { class: "app-name" }, i.name)],
          ["Created date", (i) => time(i.createdAt)],
          ["Status", (i) => badge(i.status === "ENABLED" ? "Enabled" : "Disabled")],
          ["Webhooks, 24 h", (i) => (!i.callbackUrl ? h("span", { class: "muted" }, "no callback URL") : of(i) ? h("div", { class: "webhooks-cell" }, h("div", {}, healthBadge(of(i).health), of(i).last24h.attempts ? h("span", { class: "rate" }, " " + percent(of(i).last24h.successRate)) : null), h("div", { class: "small" }, last24Words(of(i).last24h))) : "—")],
          ["Last failure", (i) => (of(i) ? lastFailureCell(of(i).lastFailure) : "—")],
          ["Queue", (i) => (of(i) ? queueCell(of(i).queue) : "—")],
          [
            "Actions",
            (i) =>
              h(
                "span",
                { class: "row-actions" },
                h("a", { class: "button small configure", href: `#/integrations/${enc(i.appId)}`, "aria-label": `Configure ${i.name}`, title: "Integration configuration" }, "⚙ Configure"),
                h("a", { class: "button small", href: `#/integrations/${enc(i.appId)}/deliveries` }, "Deliveries"),
              ),
          ],
        ],
        list,
        { class: "integrations", rowAttrs: (i) => ({ dataset: { appId: i.appId, health: of(i) ? of(i).health : "" } }) },
      ),
    );
  }
  if (openAppId) {
    const found = list.find((i) => i.appId === openAppId);
    if (found) configDialog(found, () => integrationsPage(view));
    else errors.show(new Error(`There is no integration with App ID ${openAppId}; it may have been deleted.`));
  }
}

function createDialog(refresh) {
  modal("New integration", (close) => {
    const errors = errorBox();
    const [nameField, name] = field("App name", h("input", { name: "name", required: true, maxlength: 200, placeholder: "Web Platform" }), "Shown only in this dashboard, e.g. “Mobile App” or “QA Environment”.");
    const [domainsField, domains] = field("Allowed domains", h("textarea", { name: "domains", rows: 2, placeholder: "shop.example.com" }), "Where the SDK widget may run: one per line; *.example.com for subdomains. Empty: only this server's own pages.");
    const [callbackField, callback] = field("Callback URL", h("input", { name: "callbackUrl", id: "create-callback", type: "url", placeholder: "https://api.example.com/clickterm/webhooks" }), "Optional: where verified events are sent as signed webhooks. You can set it later in the configuration.");
    const submit = h("button", { type: "submit", class: "primary" }, "Create");
    const form = h("form", { id: "create-form" }, nameField, domainsField, callbackField, errors, h("div", { class: "actions" }, h("button", { type: "button", onclick: close }, "Cancel"), submit));
    form.addEventListener("submit", (e) => {
      e.preventDefault();
      busy(submit, errors, async () => {
        const url = callback.value.trim();
        const created = await api("POST", "/integrations", { name: name.value, domains: lines(domains.value), callbackUrl: url === "" ? null : url });
        fill(
          form,
          h("p", {}, "Integration ", h("strong", {}, created.name), " was created."),
          h("div", { class: "kv" }, h("span", {}, "App ID"), h("code", { class: "app-id" }, created.appId), copyButton(created.appId, "Copy App ID")),
          secretBox("App Key", created.appKey, "Store the App Key in your backend's secret manager now: it is shown only once and cannot be displayed again (you can regenerate it).", "app-key"),
          secretBox("Webhook signing secret", created.signingSecret, "Your webhook receiver verifies every request with this secret. You can reveal it again in the configuration.", "signing-secret"),
          h("div", { class: "actions" }, h("button", { type: "button", class: "primary", id: "created-done", onclick: close }, "I have stored the App Key")),
        );
        refresh();
      });
    });
    queueMicrotask(() => name.focus());
    return form;
  });
}

function lines(text) {
  return text
    .split(/[\n,]+/)
    .map((s) => s.trim())
    .filter(Boolean);
}

/** The integration configuration dialog; its state is in the URL, so closing goes back to the table. */
function configDialog(initial, refresh) {
  let app = initial;
  const route = `#/integrations/${enc(app.appId)}`;
  modal(
    "Integration configuration",
    (close) => {
      const root = h("div", { class: "config", dataset: { appId: app.appId } });
      const banner = errorBox();

      const patch = async (changes) => {
        app = await api("PATCH", `/integrations/${enc(app.appId)}`, changes);
        return app;
      };

      // App ID
      const appIdRow = h("div", { class: "kv" }, h("span", {}, "App ID"), h("code", { class: "app-id", id: "config-app-id" }, app.appId), copyButton(app.appId, "Copy App ID"));

      // App name
      const nameErrors = errorBox();
      const [nameField, name] = field("App name", h("input", { id: "config-name", value: app.name, maxlength: 200 }), "Used only inside this dashboard; no effect on the API.");
      const saveName = h("button", { type: "submit", class: "small" }, "Save name");
      const nameForm = h("form", { class: "inline-form" }, nameField, saveName, nameErrors);
      nameForm.addEventListener("submit", (e) => {
        e.preventDefault();
        busy(saveName, nameErrors, async () => {
          await patch({ name: name.value });
          toast("Name saved.");
        });
      });

      // Status
      const statusErrors = errorBox();
      const status = h("input", { type: "checkbox", id: "config-enabled", role: "switch", checked: app.status === "ENABLED" });
      const statusText = h("span", { id: "config-status-text" }, app.status === "ENABLED" ? "Enabled: users can interact" : "Disabled: the SDK and API refuse this integration; webhooks are held");
      status.addEventListener("change", () =>
        busy(status, statusErrors, async () => {
          try {
            await patch({ status: status.checked ? "ENABLED" : "DISABLED" });
          } finally {
            status.checked = app.status === "ENABLED";
          }
          statusText.textContent = app.status === "ENABLED" ? "Enabled: users can interact" : "Disabled: the SDK and API refuse this integration; webhooks are held";
          loadCounts();
        }),
      );
      const statusRow = h("div", { class: "switch-row" }, h("label", { class: "switch" }, status, h("span", {}, "Status")), statusText, statusErrors);

      // Allowed domains
      const domainErrors = errorBox();
      const [domainsField, domains] = field("Allowed domains", h("textarea", { id: "config-domains", rows: 2 }, app.domains.join("\n")), "Origins where the SDK widget may run, one per line.");
      const saveDomains = h("button", { type: "submit", class: "small" }, "Save domains");
      const domainsForm = h("form", { class: "inline-form" }, domainsField, saveDomains, domainErrors);
      domainsForm.addEventListener("submit", (e) => {
        e.preventDefault();
        busy(saveDomains, domainErrors, async () => {
          await patch({ domains: lines(domains.value) });
          domains.value = app.domains.join("\n");
          toast("Allowed domains saved.");
        });
      });

      // Callback URL: saved through the policy; a refusal's reason shows right under the field.
      const callbackErrors = errorBox();
      callbackErrors.id = "callback-error";
      const [callbackField, callback] = field("Callback URL", h("input", { id: "config-callback", type: "url", value: app.callbackUrl || "", placeholder: "https://api.example.com/clickterm/webhooks", "aria-describedby": "callback-error" }), "A public HTTPS endpoint that accepts POST. Checked (scheme, name, every address it resolves to) when saved and at every attempt.");
      const saveCallback = h("button", { type: "submit", class: "small", id: "save-callback" }, "Save URL");
      const callbackSaved = h("span", { class: "ok-text", id: "callback-saved", "aria-live": "polite" });
      const callbackForm = h("form", { class: "inline-form" }, callbackField, h("div", { class: "row" }, saveCallback, callbackSaved), callbackErrors);
      callbackForm.addEventListener("submit", (e) => {
        e.preventDefault();
        callbackSaved.textContent = "";
        busy(saveCallback, callbackErrors, async () => {
          const value = callback.value.trim();
          await patch({ callbackUrl: value === "" ? null : value });
          callback.value = app.callbackUrl || "";
          callbackSaved.textContent = app.callbackUrl ? "Saved: the URL passed the policy." : "Callback URL removed.";
          testButton.disabled = !app.callbackUrl;
        });
      });

      // Webhook delivery toggle, with what is waiting.
      const deliveryErrors = errorBox();
      const delivery = h("input", { type: "checkbox", id: "config-delivery", role: "switch", checked: app.webhookDeliveryEnabled });
      const held = h("span", { id: "held-count", class: "muted", "aria-live": "polite" }, "");
      const loadCounts = async () => {
        try {
          const c = await api("GET", `/integrations/${enc(app.appId)}/delivery-counts`);
          held.dataset.held = c.held;
          held.textContent = c.held === 1 ? "1 delivery held" : `${c.held} deliveries held`;
          if (c.failed) held.textContent += ` · ${c.failed} failed`;
        } catch (e) {
          held.textContent = "";
        }
      };
      delivery.addEventListener("change", () =>
        busy(delivery, deliveryErrors, async () => {
          try {
            await patch({ webhookDeliveryEnabled: delivery.checked });
          } finally {
            delivery.checked = app.webhookDeliveryEnabled;
          }
          deliveryText.textContent = deliveryWords(app.webhookDeliveryEnabled);
          await loadCounts();
        }),
      );
      const deliveryText = h("span", { id: "config-delivery-text" }, deliveryWords(app.webhookDeliveryEnabled));
      const deliveryRow = h("div", { class: "switch-row" }, h("label", { class: "switch" }, delivery, h("span", {}, "Webhook delivery")), deliveryText, held, deliveryErrors);
      loadCounts();

      // Signing secret: hidden until revealed; copy; rotate.
      const secretErrors = errorBox();
      const secret = h("code", { id: "signing-secret", class: "secret-value masked" }, "••••••••••••••••••••••••");
      let secretValue = null;
      const reveal = h("button", { type: "button", class: "small", id: "reveal-secret" }, "Reveal");
      reveal.addEventListener("click", () =>
        busy(reveal, secretErrors, async () => {
          if (secretValue) {
            secretValue = null;
            secret.textContent = "••••••••••••••••••••••••";
            secret.classList.add("masked");
            reveal.textContent = "Reveal";
            return;
          }
          secretValue = (await api("GET", `/integrations/${enc(app.appId)}/signing-secret`)).signingSecret;
          secret.textContent = secretValue;
          secret.classList.remove("masked");
          reveal.textContent = "Hide";
        }),
      );
      const copySecret = h("button", { type: "button", class: "small copy" }, "Copy");
      copySecret.addEventListener("click", () =>
        busy(copySecret, secretErrors, async () => {
          const value = secretValue || (await api("GET", `/integrations/${enc(app.appId)}/signing-secret`)).signingSecret;
          copySecret.textContent = (await copyText(value)) ? "Copied" : "Copy failed";
          setTimeout(() => (copySecret.textContent = "Copy"), 1500);
        }),
      );
      const rotate = h("button", { type: "button", class: "small", id: "rotate-secret" }, "Rotate");
      rotate.addEventListener("click", async () => {
        const ok = await confirmDialog({
          title: "Rotate the signing secret?",
          message: h("p", {}, "Webhooks from now on are signed with a new secret. Your receiver rejects them until it is configured with the new one."),
          confirm: "Rotate secret",
          danger: true,
        });
        if (!ok) return;
        busy(rotate, secretErrors, async () => {
          secretValue = (await api("POST", `/integrations/${enc(app.appId)}/signing-secret`)).signingSecret;
          secret.textContent = secretValue;
          secret.classList.remove("masked");
          reveal.textContent = "Hide";
          toast("Signing secret rotated.");
        });
      });
      const secretSection = h(
        "section",
        { "aria-labelledby": "secret-h" },
        h("h3", { id: "secret-h" }, "Webhook signing secret"),
        h("div", { class: "secret-row" }, secret, reveal, copySecret, rotate),
        h("p", { class: "hint" }, "Keep it in your backend (never in client-side code); verify every webhook with it."),
        secretErrors,
      );

      // Client certificate for receivers that demand mutual TLS: what is set (never the key), upload
      // from two files (read here, sent as PEM text), remove.
      const certSection = clientCertificateSection(app);

      // Test webhook and history.
      const testErrors = errorBox();
      const testResult = h("span", { id: "test-result", "aria-live": "polite" });
      const testButton = h("button", { type: "button", id: "send-test", disabled: !app.callbackUrl, title: app.callbackUrl ? null : "Set a callback URL first" }, "Send test webhook");
      testButton.addEventListener("click", () =>
        busy(testButton, testErrors, async () => {
          const d = await api("POST", `/integrations/${enc(app.appId)}/test-webhook`);
          fill(testResult, d.state === "held" ? "Test webhook queued and held (delivery is off). " : "Test webhook queued. ", h("a", { href: `#/deliveries/${enc(d.id)}` }, "See the attempt"));
          loadCounts();
        }),
      );
      const webhookSection = h(
        "section",
        { "aria-labelledby": "hooks-h" },
        h("h3", { id: "hooks-h" }, "Webhooks"),
        callbackForm,
        deliveryRow,
        h("div", { class: "row" }, testButton, h("a", { class: "button", id: "open-history", href: `#/integrations/${enc(app.appId)}/deliveries` }, "Delivery history"), testResult),
        testErrors,
      );

      // Credentials: regenerate the App Key (confirm, then shown once); delete (confirm naming the app).
      const keyErrors = errorBox();
      const keyOut = h("div", { id: "new-app-key" });
      const regenerate = h("button", { type: "button", id: "regenerate-key" }, "Regenerate App Key");
      regenerate.addEventListener("click", async () => {
        const ok = await confirmDialog({
          title: "Regenerate the App Key?",
          message: h("p", {}, "The current App Key of ", h("strong", {}, app.name), " stops working at once. Every backend using it must be updated with the new key."),
          confirm: "Regenerate key",
          danger: true,
        });
        if (!ok) return;
        busy(regenerate, keyErrors, async () => {
          const { appKey } = await api("POST", `/integrations/${enc(app.appId)}/app-key`);
          fill(keyOut, secretBox("New App Key", appKey, "Store it securely now: once you close this window the key is hidden and cannot be shown again.", "app-key"));
        });
      });
      const remove = h("button", { type: "button", class: "danger", id: "delete-app" }, "Delete integration");
      remove.addEventListener("click", async () => {
        const ok = await confirmDialog({
          title: `Delete the integration “${app.name}”?`,
          message: [
            h("p", {}, "This removes the integration ", h("strong", { class: "delete-name" }, app.name), ` (App ID ${app.appId}). Its App Key stops working, pending webhooks are cancelled, and the SDK refuses it.`),
            h("p", { class: "warn" }, "This action cannot be undone. Events and delivery history are kept."),
          ],
          confirm: "Delete integration",
          danger: true,
        });
        if (!ok) return;
        busy(remove, keyErrors, async () => {
          await api("DELETE", `/integrations/${enc(app.appId)}`);
          toast(`Integration “${app.name}” deleted.`);
          close();
        });
      });
      const dangerSection = h("section", { "aria-labelledby": "creds-h" }, h("h3", { id: "creds-h" }, "App Key and removal"), h("p", { class: "hint" }, "Regenerate the key if it may be compromised, was lost, or to revoke older environments."), h("div", { class: "row" }, regenerate, remove), keyOut, keyErrors);

      fill(root, banner, appIdRow, nameForm, statusRow, domainsForm, webhookSection, secretSection, certSection, dangerSection, h("div", { class: "actions" }, h("button", { type: "button", onclick: close }, "Close")));
      queueMicrotask(() => name.focus());
      return root;
    },
    {
      class: "config-dialog",
      onClose: () => {
        if (location.hash === route) {
          history.replaceState(null, "", "#/integrations");
        }
        refresh();
      },
    },
  );
}

function deliveryWords(on) {
  return on ? "Enabled: events are delivered as they are verified." : "Paused: new deliveries are held (kept, not sent) until you switch it on.";
}

/** The configuration dialog's "Client certificate" section. */
function clientCertificateSection(app) {
  const url = `/integrations/${enc(app.appId)}/client-certificate`;
  const errors = errorBox();
  errors.id = "cert-error";
  const current = h("div", { id: "cert-current", "aria-live": "polite" }, h("p", { class: "muted" }, "Loading…"));
  const [certField, certFile] = field("Certificate (PEM)", h("input", { type: "file", id: "cert-file", accept: ".pem,.crt,.cer,application/x-pem-file" }), "The client certificate, then any intermediate certificates.");
  const [keyField, keyFile] = field("Private key (PEM)", h("input", { type: "file", id: "cert-key-file", accept: ".pem,.key,application/x-pem-file" }), "Unencrypted. Stored on the server like the signing secret and never shown again.");
  const upload = h("button", { type: "submit", class: "small", id: "cert-upload" }, "Upload certificate");
  const remove = h("button", { type: "button", class: "small danger", id: "cert-remove", hidden: true }, "Remove");
  const form = h("form", { class: "inline-form", id: "cert-form" }, certField, keyField, h("div", { class: "row" }, upload, remove), errors);

  const show = (c) => {
    if (!c) {
      fill(current, h("p", { class: "muted", id: "cert-none" }, "None: connections to the receiver present no client certificate."));
      remove.hidden = true;
      form.hidden = false;
      upload.textContent = "Upload certificate";
      return;
    }
    fill(
      current,
      h(
        "dl",
        { class: "facts cert-summary" },
        h("dt", {}, "Subject"),
        h("dd", { id: "cert-subject" }, c.subject),
        h("dt", {}, "Issuer"),
        h("dd", { id: "cert-issuer" }, c.issuer),
        h("dt", {}, "Valid until"),
        h("dd", { id: "cert-not-after" }, time(c.notAfter), expiryWarning(c.notAfter)),
        h("dt", {}, "SHA-256"),
        h("dd", {}, h("code", { id: "cert-fingerprint", class: "fingerprint" }, c.fingerprintSha256)),
        h("dt", {}, "Source"),
        h("dd", { id: "cert-source" }, c.source === "config" ? `the config file (${c.certFile}); change it there` : ["uploaded ", time(c.setAt)]),
      ),
    );
    upload.textContent = "Replace certificate";
    // A certificate named in the config file belongs to the file.
    form.hidden = c.source === "config";
    remove.hidden = c.source === "config";
  };
  const load = async () => {
    try {
      show(await api("GET", url));
    } catch (e) {
      if (e.status === 404 && e.message.startsWith("client certificate")) show(null);
      else errors.show(e);
    }
  };
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    busy(upload, errors, async () => {
      const [cert, key] = [certFile.files[0], keyFile.files[0]];
      if (!cert || !key) throw new Error("Choose both files: the certificate and its private key.");
      const shown = await api("PUT", url, { certificate: await cert.text(), privateKey: await key.text() });
      certFile.value = "";
      keyFile.value = "";
      show(shown);
      toast("Client certificate saved: the next attempt presents it.");
    });
  });
  remove.addEventListener("click", async () => {
    const ok = await confirmDialog({
      title: "Remove the client certificate?",
      message: h("p", {}, "Connections to the receiver of ", h("strong", {}, app.name), " will present no client certificate from the next attempt on. A receiver that requires one refuses them."),
      confirm: "Remove certificate",
      danger: true,
    });
    if (!ok) return;
    busy(remove, errors, async () => {
      await api("DELETE", url);
      show(null);
      toast("Client certificate removed.");
    });
  });
  load();
  return h(
    "section",
    { "aria-labelledby": "cert-h" },
    h("h3", { id: "cert-h" }, "Client certificate (mutual TLS)"),
    h("p", { class: "hint" }, "For receivers that accept only clients with a certificate from your company's CA: presented on this integration's webhook connections only."),
    current,
    form,
  );
}

/** " — expires in 12 days" when a certificate has less than 30 days left: renew it before the receiver refuses it. */
function expiryWarning(notAfter) {
  const days = Math.ceil((new Date(notAfter) - Date.now()) / 86400000);
  if (days > 30) return null;
  return h("span", { class: "expiry-warning", id: "cert-expiry" }, days <= 0 ? " — expired: upload a renewed certificate" : ` — expires in ${days} day${days === 1 ? "" : "s"}: upload a renewed one before then`);
}
