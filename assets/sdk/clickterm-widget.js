/*
 * clicktermd SDK widget: window.Clickterm = { ClicktermClient, ClicktermDialog }.
 *
 *   Clickterm.ClicktermClient.initialize(appId, { baseUrl });      // baseUrl defaults to this script's origin
 *   const r = await Clickterm.ClicktermDialog.show(
 *     { endUserId, clickwrapTemplateId, templatePlaceholders, language },
 *     { disableClose });
 *   // r = { clicktermSignature, isAlreadyAccepted, isCanceled }
 *
 * It asks the server for the effective version (rendered for this end user); when nothing is due it
 * resolves at once with isAlreadyAccepted. Otherwise it shows an accessible modal dialog with the text and
 * Accept / Decline, records the choice and resolves with the clicktermSignature that the customer's backend
 * passes to POST /public-client/v1/clickwrap/verify. No dependencies.
 */
(function () {
  "use strict";

  var script = document.currentScript;
  var scriptOrigin = script && script.src ? new URL(script.src, location.href).origin : location.origin;
  var settings = { appId: null, baseUrl: scriptOrigin };
  var open = null; // the dialog being shown, if any

  var CSS =
    ".ctw-overlay{position:fixed;inset:0;background:rgba(15,23,42,.55);display:flex;align-items:center;" +
    "justify-content:center;z-index:2147483000;padding:16px}" +
    ".ctw-dialog{background:#fff;color:#0f172a;max-width:640px;width:100%;max-height:90vh;display:flex;" +
    "flex-direction:column;border-radius:10px;box-shadow:0 20px 50px rgba(0,0,0,.3);" +
    "font:15px/1.5 system-ui,-apple-system,Segoe UI,Roboto,sans-serif}" +
    ".ctw-head{display:flex;align-items:center;justify-content:space-between;padding:16px 20px;" +
    "border-bottom:1px solid #e2e8f0}" +
    ".ctw-title{margin:0;font-size:18px;font-weight:600}" +
    ".ctw-close{border:0;margin:0;background:none;font-size:22px;line-height:1;cursor:pointer;color:#475569;padding:4px 8px}" +
    ".ctw-body{padding:16px 20px;overflow:auto}" +
    ".ctw-inline{padding:0 20px 8px;color:#334155}" +
    ".ctw-foot{display:flex;gap:12px;justify-content:flex-end;padding:16px 20px;border-top:1px solid #e2e8f0}" +
    // Host pages style bare elements (button{color:#fff}); every property that shows is set here.
    ".ctw-btn{font:inherit;margin:0;padding:8px 18px;border-radius:6px;cursor:pointer;text-transform:none;" +
    "border:1px solid #cbd5e1;background:#fff;color:#0f172a;min-width:96px}" +
    ".ctw-btn:focus-visible,.ctw-close:focus-visible{outline:3px solid #2563eb;outline-offset:2px}" +
    ".ctw-accept{background:#2563eb;border-color:#2563eb;color:#fff}" +
    ".ctw-error{color:#b91c1c;padding:0 20px}" +
    ".ctw-btn[disabled]{opacity:.6;cursor:wait}";

  function injectStyle() {
    if (document.getElementById("ctw-style")) return;
    var style = document.createElement("style");
    style.id = "ctw-style";
    style.textContent = CSS;
    document.head.appendChild(style);
  }

  function api(method, path, body) {
    var init = { method: method, headers: { Accept: "application/json" }, credentials: "omit" };
    if (body !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    return fetch(settings.baseUrl.replace(/\/$/, "") + path, init).then(function (res) {
      return res.json().then(
        function (json) {
          if (!res.ok) throw new Error((json && json.message) || "request failed with status " + res.status);
          return json;
        },
        function () {
          throw new Error("request failed with status " + res.status);
        }
      );
    });
  }

  var ClicktermClient = {
    initialize: function (appId, options) {
      if (!appId || typeof appId !== "string") throw new Error("ClicktermClient.initialize: appId is required");
      settings.appId = appId;
      if (options && options.baseUrl) settings.baseUrl = String(options.baseUrl);
    },
  };

  function placeholdersText(p) {
    if (p === undefined || p === null) return null;
    return typeof p === "string" ? p : JSON.stringify(p);
  }

  function show(request, options) {
    options = options || {};
    if (!settings.appId) return Promise.reject(new Error("call Clickterm.ClicktermClient.initialize(appId) first"));
    if (!request || !request.endUserId || !request.clickwrapTemplateId) {
      return Promise.reject(new Error("ClicktermDialog.show: endUserId and clickwrapTemplateId are required"));
    }
    if (open) return Promise.reject(new Error("a clickwrap dialog is already open"));
    var placeholders = placeholdersText(request.templatePlaceholders);
    var query = new URLSearchParams({
      appId: settings.appId,
      clickwrapTemplateId: request.clickwrapTemplateId,
      endUserId: request.endUserId,
    });
    if (request.language) query.set("language", request.language);
    if (placeholders) query.set("templatePlaceholders", placeholders);

    return api("GET", "/public-client/v1/clickwrap?" + query.toString()).then(function (view) {
      if (view.isAlreadyAccepted && !view.reAcceptanceRequired) {
        return { clicktermSignature: null, isAlreadyAccepted: true, isCanceled: false };
      }
      return new Promise(function (resolve, reject) {
        open = render(view, request, placeholders, options, resolve, reject);
      });
    });
  }

  function render(view, request, placeholders, options, resolve, reject) {
    injectStyle();
    var previousFocus = document.activeElement;
    var overlay = document.createElement("div");
    overlay.className = "ctw-overlay";
    var dialog = document.createElement("div");
    dialog.className = "ctw-dialog";
    dialog.setAttribute("role", "dialog");
    dialog.setAttribute("aria-modal", "true");
    dialog.setAttribute("aria-labelledby", "ctw-title");
    dialog.setAttribute("aria-describedby", "ctw-body");

    var head = document.createElement("div");
    head.className = "ctw-head";
    var title = document.createElement("h2");
    title.className = "ctw-title";
    title.id = "ctw-title";
    // Titles and content come rendered from the server: placeholder values are HTML-escaped there,
    // the surrounding text is the template author's own markup.
    title.innerHTML = view.title;
    head.appendChild(title);
    var close = null;
    if (!options.disableClose) {
      close = document.createElement("button");
      close.type = "button";
      close.className = "ctw-close";
      close.setAttribute("aria-label", "Close");
      close.textContent = "\u00d7";
      head.appendChild(close);
    }

    var body = document.createElement("div");
    body.className = "ctw-body";
    body.id = "ctw-body";
    body.tabIndex = 0;
    body.innerHTML = view.content;

    var inline = null;
    if (view.inlineContent) {
      inline = document.createElement("p");
      inline.className = "ctw-inline";
      inline.innerHTML = view.inlineContent;
    }
    var error = document.createElement("p");
    error.className = "ctw-error";
    error.setAttribute("role", "alert");

    var foot = document.createElement("div");
    foot.className = "ctw-foot";
    var decline = document.createElement("button");
    decline.type = "button";
    decline.className = "ctw-btn ctw-decline";
    decline.textContent = "Decline";
    var accept = document.createElement("button");
    accept.type = "button";
    accept.className = "ctw-btn ctw-accept";
    accept.textContent = "Accept";
    foot.appendChild(decline);
    foot.appendChild(accept);

    dialog.appendChild(head);
    dialog.appendChild(body);
    if (inline) dialog.appendChild(inline);
    dialog.appendChild(error);
    dialog.appendChild(foot);
    overlay.appendChild(dialog);
    document.body.appendChild(overlay);

    function finish(result, failure) {
      document.removeEventListener("keydown", onKey, true);
      overlay.remove();
      open = null;
      if (previousFocus && previousFocus.focus) previousFocus.focus();
      if (failure) reject(failure);
      else resolve(result);
    }

    function act(action) {
      accept.disabled = decline.disabled = true;
      error.textContent = "";
      var payload = {
        appId: settings.appId,
        clickwrapTemplateId: request.clickwrapTemplateId,
        endUserId: request.endUserId,
        action: action,
        templatePlaceholders: placeholders,
      };
      if (request.language) payload.language = request.language;
      api("POST", "/public-client/v1/clickwrap", payload).then(
        function (res) {
          finish({ clicktermSignature: res.clicktermSignature, isAlreadyAccepted: false, isCanceled: false });
        },
        function (e) {
          // Leave the dialog open so the end user can try again; say what went wrong.
          error.textContent = e.message;
          accept.disabled = decline.disabled = false;
        }
      );
    }

    function onKey(e) {
      if (e.key === "Escape" && !options.disableClose) {
        e.preventDefault();
        finish({ clicktermSignature: null, isAlreadyAccepted: false, isCanceled: true });
      } else if (e.key === "Tab") {
        // Keep focus inside the dialog while it is open.
        var items = Array.prototype.filter.call(
          dialog.querySelectorAll("button, [href], [tabindex]:not([tabindex='-1'])"),
          function (el) { return !el.disabled; }
        );
        if (!items.length) return;
        var first = items[0], last = items[items.length - 1];
        if (e.shiftKey && document.activeElement === first) {
          e.preventDefault();
          last.focus();
        } else if (!e.shiftKey && document.activeElement === last) {
          e.preventDefault();
          first.focus();
        }
      }
    }

    accept.addEventListener("click", function () { act("ACCEPTED"); });
    decline.addEventListener("click", function () { act("DECLINED"); });
    if (close) {
      close.addEventListener("click", function () {
        finish({ clicktermSignature: null, isAlreadyAccepted: false, isCanceled: true });
      });
    }
    document.addEventListener("keydown", onKey, true);
    body.focus();
    return { overlay: overlay };
  }

  window.Clickterm = {
    ClicktermClient: ClicktermClient,
    ClicktermDialog: { show: show },
  };
})();
