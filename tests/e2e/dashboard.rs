//! The dashboard in a real headless Chromium against the real server: an operator's day — sign in, create
//! an integration and keep its App Key, point its webhooks at a real TLS receiver (after the policy refused
//! a name that resolves to a forbidden address), watch deliveries succeed, hold and release them,
//! redeliver, regenerate the key, delete — then templates, events, an expired session and a phone screen.
//!
//! Every check reads what the page shows (texts, states), and the effects are confirmed from outside the
//! browser (the receiver's log, the public API). Loopback only: the receiver listens on 127.0.0.1; the
//! refused name resolves to 127.0.0.2, which is judged and refused before anything connects.

use crate::common;
use crate::common::Call;

use std::net::IpAddr;
use std::time::{Duration, Instant};

use crate::common::browser::Browser;
use crate::common::receiver::{Receiver, ReceiverCa};
use crate::common::{ADMIN, DEADLINE, TestServer};
use fantoccini::Locator;
use fantoccini::elements::Element;
use reqwest::StatusCode;
use serde_json::{Value, json};

/// The browser window for the desktop checks and screenshots.
const WIDTH: u32 = 1280;
const HEIGHT: u32 = 900;

/// The browser and the server it shows, with the waits the tests need (all against [`DEADLINE`]).
struct Page {
    browser: Browser,
    base: String,
}

impl Page {
    async fn open(server: &TestServer) -> Page {
        Page {
            browser: Browser::start(WIDTH, HEIGHT).await,
            base: server.base.clone(),
        }
    }

    async fn goto(&self, hash: &str) {
        self.browser
            .client
            .goto(&format!("{}/{hash}", self.base))
            .await
            .expect("open the dashboard");
    }

    /// Sets the fragment without reloading (as a click on a link does).
    async fn hash(&self, hash: &str) {
        self.js(&format!("location.hash = {}", json!(hash))).await;
    }

    async fn js(&self, script: &str) -> Value {
        self.browser
            .client
            .execute(script, vec![])
            .await
            .unwrap_or_else(|e| panic!("script {script:?}: {e}"))
    }

    async fn find(&self, css: &str) -> Element {
        self.browser
            .client
            .wait()
            .at_most(DEADLINE)
            .for_element(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("{css} never appeared: {e}"))
    }

    async fn click(&self, css: &str) {
        self.browser.click(css).await;
    }

    async fn text(&self, css: &str) -> String {
        self.browser.text(css).await
    }

    async fn wait_text(&self, css: &str, pred: impl Fn(&str) -> bool) -> String {
        self.browser.wait_text(css, pred).await
    }

    /// Waits until `css` contains `needle`.
    async fn wait_contains(&self, css: &str, needle: &str) -> String {
        self.wait_text(css, |t| t.contains(needle)).await
    }

    /// Replaces the value of the input matching `css` by typing `value`.
    async fn fill(&self, css: &str, value: &str) {
        let el = self.find(css).await;
        el.clear()
            .await
            .unwrap_or_else(|e| panic!("clear {css}: {e}"));
        el.send_keys(value)
            .await
            .unwrap_or_else(|e| panic!("type into {css}: {e}"));
    }

    /// Sets a value that typing cannot easily produce (a `datetime-local`, a `select`), as the browser
    /// would after the user picked it.
    async fn set(&self, css: &str, value: &str) {
        self.find(css).await;
        self.js(&format!(
            "const el = document.querySelector({}); el.value = {}; el.dispatchEvent(new Event('change', {{bubbles: true}}));",
            json!(css),
            json!(value)
        ))
        .await;
    }

    /// Waits until no element matches `css`.
    async fn wait_gone(&self, css: &str) {
        let deadline = Instant::now() + DEADLINE;
        while self.count(css).await > 0 {
            assert!(Instant::now() < deadline, "{css} is still on the page");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn count(&self, css: &str) -> usize {
        self.js(&format!(
            "return document.querySelectorAll({}).length",
            json!(css)
        ))
        .await
        .as_u64()
        .expect("a count") as usize
    }

    /// Waits until `css` matches exactly `n` elements.
    async fn wait_count(&self, css: &str, n: usize) {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let got = self.count(css).await;
            if got == n {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{css} matched {got} elements, not {n}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The whole visible text of the page.
    async fn body_text(&self) -> String {
        self.js("return document.body.innerText")
            .await
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    async fn login(&self, password: &str) {
        self.fill("#login-form input[name=username]", ADMIN).await;
        self.fill("#login-form input[name=password]", password)
            .await;
        self.click("#login-form button[type=submit]").await;
        self.wait_contains("#who", "Signed in as admin").await;
    }

    /// Saves a screenshot under the target directory (copied into docs/screenshots for the README).
    async fn screenshot(&self, name: &str) {
        // No passing message in the picture.
        self.js("const t = document.getElementById('toast'); t.classList.remove('show'); t.hidden = true;")
            .await;
        self.browser.screenshot(name).await;
        self.js("document.getElementById('toast').hidden = false")
            .await;
    }

    /// A screenshot of the whole page from its top: the window grows to the page's height meanwhile.
    async fn screenshot_page(&self, name: &str) {
        let height = self
            .js("window.scrollTo(0, 0); return document.documentElement.scrollHeight")
            .await
            .as_u64()
            .unwrap_or(HEIGHT as u64)
            .clamp(HEIGHT as u64, 2400) as u32;
        let client = &self.browser.client;
        client
            .set_window_size(WIDTH, height + 150)
            .await
            .expect("resize");
        self.screenshot(name).await;
        client.set_window_size(WIDTH, HEIGHT).await.expect("resize");
    }

    /// The page fits its width: nothing needs horizontal scrolling.
    async fn assert_fits(&self) {
        let widths = self
            .js("return [document.documentElement.scrollWidth, window.innerWidth]")
            .await;
        let (scroll, inner) = (widths[0].as_u64().unwrap(), widths[1].as_u64().unwrap());
        assert!(
            scroll <= inner,
            "the page is {scroll} px wide in a {inner} px window"
        );
    }

    async fn close(self) {
        self.browser.close().await;
    }
}

/// `GET /public-client/v1/clickwrap-templates` as the integration: 200 for a working App Key.
async fn public_status(server: &TestServer, app_id: &str, app_key: &str) -> StatusCode {
    common::client()
        .get(server.url("/public-client/v1/clickwrap-templates"))
        .header("X-APP-ID", app_id)
        .header("X-APP-KEY", app_key)
        .send()
        .await
        .unwrap()
        .status()
}

/// A template published as 1.0 through the admin API; returns its id.
async fn published_template(server: &TestServer, admin: &reqwest::Client, name: &str) -> String {
    let res = admin
        .post(server.url("/api/v1/templates"))
        .json(&json!({"name": name, "defaultLanguage": "en",
                      "languages": {"en": {"title": name, "content": "<p>Hello {{fullName}}.</p>"}}}))
    .json_with(StatusCode::CREATED)
.await;
    let id = res["id"].as_str().unwrap().to_string();
    admin
        .post(server.url(&format!("/api/v1/templates/{id}/versions")))
        .json(&json!({"type": "MAJOR"}))
        .json_with(StatusCode::CREATED)
        .await;
    id
}

/// An end user's action through the SDK endpoint, verified by the backend with the App Key; returns the
/// event id.
async fn verified_event(
    server: &TestServer,
    (app_id, app_key): (&str, &str),
    template: &str,
    user: &str,
    action: &str,
) -> String {
    let acted: Value = common::client()
        .post(server.url("/public-client/v1/clickwrap"))
        .json(&json!({"appId": app_id, "clickwrapTemplateId": template, "endUserId": user, "action": action,
                      "templatePlaceholders": "{\"fullName\":\"Ann\"}"}))
        .json_with(StatusCode::CREATED).await;
    let signature = acted["clicktermSignature"]
        .as_str()
        .unwrap_or_else(|| panic!("no signature: {acted}"));
    let res = common::client()
        .post(server.url("/public-client/v1/clickwrap/verify"))
        .header("X-APP-ID", app_id)
        .header("X-APP-KEY", app_key)
        .json(&json!({"clicktermSignature": signature}))
        .json_ok()
        .await;
    res["clickwrapEventId"].as_str().unwrap().to_string()
}

/// Polls the receiver until `n` requests to `route` arrived; returns them.
async fn received(
    receiver: &Receiver,
    route: &str,
    n: usize,
) -> Vec<common::receiver::ReceivedRequest> {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let got = receiver.requests_to(route);
        if got.len() >= n {
            return got;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {n} requests to {route} arrived",
            got.len()
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_integration_from_creation_to_deletion() {
    // The receiver's certificates exist before the server starts (it trusts their CA); the receiver itself
    // starts once the dashboard has shown the signing secret it is to check.
    let ca = ReceiverCa::generate();
    let ca_file = ca.ca_file.clone();
    let server = TestServer::start_with(|c| {
        c.webhooks.extra_ca_file = Some(ca_file);
        c.webhooks.allow_private_cidrs = vec!["127.0.0.1/32".parse().unwrap()];
        c.webhooks.timeout_secs = 5.0;
        c.webhooks.max_retries = 0;
    })
    .await;
    server
        .dns
        .set("receiver.test", &["127.0.0.1".parse::<IpAddr>().unwrap()]);
    server
        .dns
        .set("internal.test", &["127.0.0.2".parse::<IpAddr>().unwrap()]);
    let admin = server.admin_client().await;
    let template = published_template(&server, &admin, "Terms").await;

    let page = Page::open(&server).await;
    page.goto("#/integrations").await;

    // A wrong password is refused in words; the right one opens the empty integrations page.
    page.find("#login-form").await;
    page.screenshot("login").await;
    page.fill("#login-form input[name=password]", "not-the-password")
        .await;
    page.click("#login-form button[type=submit]").await;
    page.wait_contains("#login-form .error", "wrong user name or password")
        .await;
    page.login(&server.admin_password()).await;
    page.wait_contains(".empty", "No integration yet").await;

    // Create: the App Key and the signing secret are shown once, with a warning.
    page.click("#create-integration").await;
    page.fill("#create-form input[name=name]", "Web Platform")
        .await;
    page.fill("#create-form textarea[name=domains]", "shop.example.com")
        .await;
    page.click("#create-form button[type=submit]").await;
    let app_key = page.text("#create-form .app-key .secret-value").await;
    let signing_secret = page
        .text("#create-form .signing-secret .secret-value")
        .await;
    let app_id = page.text("#create-form .app-id").await;
    assert!(
        page.text("#create-form .app-key .warn")
            .await
            .contains("shown only once"),
    );
    assert_eq!(page.count("#create-form .app-key button.copy").await, 1);
    assert_eq!(
        public_status(&server, &app_id, &app_key).await,
        StatusCode::OK,
        "the App Key the page showed works"
    );
    page.screenshot("integration-created").await;
    page.click("#created-done").await;
    page.wait_gone("dialog").await;
    // The table as in the seed: App name, Created date, Status, Actions; times in the viewer's zone with
    // UTC on hover.
    let row = format!("tr[data-app-id='{app_id}']");
    page.wait_contains(&format!("{row} td[data-label='App name']"), "Web Platform")
        .await;
    let heads = page
        .js("return [...document.querySelectorAll('table.integrations th')].map(th => th.textContent)")
        .await;
    assert_eq!(
        heads,
        json!(["App name", "Created date", "Status", "Actions"])
    );
    assert_eq!(
        page.text(&format!("{row} td[data-label='Status']")).await,
        "Enabled"
    );
    let utc = page
        .js(&format!(
            "return document.querySelector(\"{row} time\").title"
        ))
        .await;
    assert!(utc.as_str().unwrap().ends_with(" UTC"), "{utc}");
    assert!(
        !page.body_text().await.contains(&app_key),
        "the App Key is not shown again"
    );
    page.assert_fits().await;
    page.screenshot("integrations").await;

    // The configuration dialog opens from the keyboard (the gear link, then Enter).
    page.find(&format!("{row} a.configure"))
        .await
        .send_keys("\u{E007}")
        .await
        .unwrap();
    assert_eq!(page.text("#config-app-id").await, app_id);
    assert!(!page.body_text().await.contains(&app_key));

    // A name that resolves to a forbidden address is refused, with the reason under the field.
    page.fill("#config-callback", "https://internal.test/hooks")
        .await;
    page.click("#save-callback").await;
    let reason = page.wait_contains("#callback-error", "127.0.0.2").await;
    assert!(
        reason.contains("allow_private_cidrs: 127.0.0.1/32"),
        "{reason}"
    );
    let stored: Value = admin
        .get(server.url(&format!("/api/v1/integrations/{app_id}")))
        .json_ok()
        .await;
    assert_eq!(stored["callbackUrl"], Value::Null, "nothing was saved");

    // The operator configures their endpoint with the signing secret, then points the callback at it.
    let receiver =
        Receiver::start_prepared(ca, "127.0.0.1".parse().unwrap(), &signing_secret).await;
    page.click("#reveal-secret").await;
    page.wait_text("#signing-secret", |t| t == signing_secret)
        .await;
    page.fill("#config-callback", &receiver.url("receiver.test", "/ok"))
        .await;
    page.click("#save-callback").await;
    page.wait_contains("#callback-saved", "passed the policy")
        .await;
    assert!(
        page.find("#callback-error")
            .await
            .text()
            .await
            .unwrap()
            .is_empty()
    );
    page.wait_contains("#held-count", "0 deliveries held").await;
    page.click("#reveal-secret").await;
    page.wait_text("#signing-secret", |t| t.starts_with("••••"))
        .await;
    page.browser
        .client
        .set_window_size(WIDTH, 1500)
        .await
        .unwrap();
    page.js("document.querySelector('.config-dialog').scrollTop = 0")
        .await;
    page.screenshot("integration-config").await;
    page.browser
        .client
        .set_window_size(WIDTH, HEIGHT)
        .await
        .unwrap();

    // A test webhook succeeds, and the history says so.
    page.click("#send-test").await;
    page.wait_contains("#test-result", "Test webhook queued")
        .await;
    let got = received(&receiver, "/ok", 1).await;
    assert!(got[0].signature_valid, "{:?}", got[0].contract_errors);
    assert!(
        got[0].contract_errors.is_empty(),
        "{:?}",
        got[0].contract_errors
    );
    page.click("#open-history").await;
    page.wait_gone("dialog").await;
    page.wait_contains("h1", "Delivery history · Web Platform")
        .await;
    page.find("table.deliveries tr[data-state='succeeded']")
        .await;
    assert_eq!(
        page.text("table.deliveries td[data-label='Event']").await,
        "Test webhook"
    );
    assert_eq!(
        page.text("table.deliveries td[data-label='Last outcome']")
            .await,
        "Delivered"
    );
    assert_eq!(
        page.text("table.deliveries td[data-label='Attempts']")
            .await,
        "1"
    );

    // The attempt in detail: what was sent, where it connected, what came back, in words.
    page.click("table.deliveries a.details").await;
    page.wait_contains(".attempt .explain", "Delivered. The endpoint answered 200.")
        .await;
    assert_eq!(page.text(".attempt .response-status").await, "200");
    assert_eq!(
        page.text(".attempt .remote-addr").await,
        format!("127.0.0.1:{}", receiver.port)
    );
    page.js("document.querySelectorAll('details').forEach(d => d.open = true)")
        .await;
    let headers = page.text(".attempt table.headers").await;
    assert!(
        headers
            .to_ascii_lowercase()
            .contains("x-clickterm-signature"),
        "{headers}"
    );
    assert!(
        page.text(".attempt .response-body")
            .await
            .contains("received"),
    );
    assert!(
        page.text(".payload pre")
            .await
            .contains("CLICKWRAP_EVENT_VERIFIED"),
    );
    page.screenshot_page("delivery-attempt").await;

    // Delivery off: a verified event is held (kept, not sent), and the dialog counts it.
    page.hash(&format!("#/integrations/{app_id}")).await;
    page.click("#config-delivery").await;
    page.wait_contains("#config-delivery-text", "Paused").await;
    let event_id = verified_event(
        &server,
        (&app_id, &app_key),
        &template,
        "held-user",
        "ACCEPTED",
    )
    .await;
    page.hash(&format!("#/integrations/{app_id}/deliveries"))
        .await;
    page.find("table.deliveries tr[data-state='held']").await;
    assert_eq!(
        page.text("tr[data-state='held'] td[data-label='Next attempt']")
            .await,
        "when delivery is on"
    );
    page.hash(&format!("#/integrations/{app_id}")).await;
    page.wait_contains("#held-count", "1 delivery held").await;
    assert_eq!(
        receiver.requests_to("/ok").len(),
        1,
        "nothing was sent while held"
    );

    // On again: it is delivered.
    page.click("#config-delivery").await;
    page.wait_contains("#config-delivery-text", "Enabled").await;
    page.wait_contains("#held-count", "0 deliveries held").await;
    let got = received(&receiver, "/ok", 2).await;
    assert_eq!(got[1].json()["data"]["clickwrapEventId"], event_id.as_str());
    assert!(got[1].signature_valid);
    page.hash(&format!("#/integrations/{app_id}/deliveries"))
        .await;
    page.wait_count("table.deliveries tr[data-state='succeeded']", 2)
        .await;

    // Redeliver the event's delivery: a new, manual attempt chain reaches the receiver again.
    let event_row = "table.deliveries tbody tr:first-child";
    // The history refreshes itself while deliveries are pending: the browser helpers look an element
    // up again when it was replaced.
    let href = page
        .browser
        .attr(&format!("{event_row} td[data-label='Event'] a"), "href")
        .await;
    assert!(href.unwrap().ends_with(&event_id));
    page.click(&format!("{event_row} button.redeliver")).await;
    let got = received(&receiver, "/ok", 3).await;
    assert_eq!(got[2].json()["data"]["clickwrapEventId"], event_id.as_str());
    page.click(&format!("{event_row} a.details")).await;
    page.wait_contains(".attempt-list", "manual").await;
    page.wait_contains(".attempt-list", "Delivered").await;

    // A failing endpoint: the attempt explains the status; the failed delivery is found by filter and
    // redelivered in bulk once the endpoint is fixed.
    let failing = receiver.url("receiver.test", "/status/500");
    admin
        .patch(server.url(&format!("/api/v1/integrations/{app_id}")))
        .json(&json!({"callbackUrl": failing}))
        .json_ok()
        .await;
    page.hash(&format!("#/integrations/{app_id}")).await;
    page.wait_text("#config-callback", |_| true).await;
    page.click("#send-test").await;
    page.click("#test-result a").await;
    page.wait_contains(".attempt .explain", "HTTP error").await;
    assert!(
        page.text(".attempt .explain").await.contains("500"),
        "the status is named"
    );
    page.hash(&format!("#/integrations/{app_id}/deliveries"))
        .await;
    page.set("#filter-state", "failed").await;
    page.wait_count("table.deliveries tbody tr", 1).await;
    assert!(page.count("table.deliveries tr[data-state='failed']").await == 1);
    assert_eq!(
        page.text("table.deliveries td[data-label='Last outcome']")
            .await,
        "HTTP error"
    );
    admin
        .patch(server.url(&format!("/api/v1/integrations/{app_id}")))
        .json(&json!({"callbackUrl": receiver.url("receiver.test", "/ok")}))
        .json_ok()
        .await;
    page.click("#bulk-redeliver").await;
    page.wait_contains("#bulk-result", "1 failed delivery queued again")
        .await;
    received(&receiver, "/ok", 4).await;
    page.set("#filter-state", "").await;
    page.wait_count("table.deliveries tr[data-state='succeeded']", 3)
        .await;
    page.wait_count("table.deliveries tr[data-state='failed']", 0)
        .await;

    // Regenerate the App Key: confirm, then the new key is shown once; the old one stops working.
    page.hash(&format!("#/integrations/{app_id}")).await;
    page.click("#regenerate-key").await;
    page.wait_contains(".confirm-dialog", "stops working at once")
        .await;
    page.click(".confirm-dialog button.confirm").await;
    let new_key = page
        .wait_text("#new-app-key .secret-value", |t| !t.is_empty())
        .await;
    assert_ne!(new_key, app_key);
    assert!(
        page.text("#new-app-key .warn")
            .await
            .contains("close this window")
    );
    assert_eq!(
        public_status(&server, &app_id, &app_key).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        public_status(&server, &app_id, &new_key).await,
        StatusCode::OK
    );
    page.click(".config-dialog .modal-head .close").await;
    page.wait_gone("dialog").await;
    page.hash(&format!("#/integrations/{app_id}")).await;
    page.find("#config-app-id").await;
    assert!(
        !page.body_text().await.contains(&new_key),
        "shown only once"
    );

    // Delete: the confirmation names the app and says it cannot be undone; Cancel keeps it.
    page.click("#delete-app").await;
    let confirm = page.wait_contains(".confirm-dialog", "Web Platform").await;
    assert!(confirm.contains("cannot be undone"), "{confirm}");
    page.click(".confirm-dialog button.cancel").await;
    page.wait_count(".confirm-dialog", 0).await;
    assert_eq!(
        public_status(&server, &app_id, &new_key).await,
        StatusCode::OK
    );
    page.click("#delete-app").await;
    page.click(".confirm-dialog button.confirm").await;
    page.wait_gone("dialog").await;
    page.wait_contains(".empty", "No integration yet").await;
    assert_eq!(
        public_status(&server, &app_id, &new_key).await,
        StatusCode::UNAUTHORIZED
    );

    page.close().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn templates_versions_preview_and_events() {
    let server = TestServer::start().await;
    let admin = server.admin_client().await;
    let page = Page::open(&server).await;
    page.goto("#/templates").await;
    page.login(&server.admin_password()).await;
    page.wait_contains(".empty", "No template yet").await;

    // Create a template, publish 1.0, edit the draft, publish 1.1, schedule 2.0.
    page.click("#create-template").await;
    page.fill("#tpl-name", "Terms of Service").await;
    page.fill("#tpl-tags", "legal, signup").await;
    page.fill("#tpl-title", "Our terms").await;
    page.fill(
        "#tpl-content",
        "<p>Dear {{fullName}}, these are the terms of {{company}}.</p>",
    )
    .await;
    page.click("#template-form button[type=submit]").await;
    page.wait_contains("#template-title", "Terms of Service")
        .await;
    page.wait_contains("#template-effective", "No version is effective yet")
        .await;
    page.click("#publish").await;
    page.wait_contains("#publish-result", "Version 1.0 published")
        .await;
    page.wait_contains("#template-effective", "Effective version 1.0")
        .await;

    page.fill(
        "#draft-content",
        "<p>Dear {{fullName}}, these are the updated terms of {{company}}.</p>",
    )
    .await;
    page.click("#save-draft").await;
    page.wait_contains("#toast", "Draft saved").await;
    page.click("#kind-minor").await;
    page.click("#publish").await;
    page.wait_contains("#publish-result", "Version 1.1 published")
        .await;
    page.wait_contains("#template-effective", "Effective version 1.1")
        .await;

    page.click("#kind-major").await;
    page.set("#publish-effective", "2099-01-01T09:00").await;
    page.click("#publish").await;
    page.wait_contains("#publish-result", "Version 2.0 published")
        .await;
    page.wait_count("table.versions tbody tr", 3).await;
    let versions = page.text("table.versions").await;
    assert!(versions.contains("Scheduled"), "{versions}");
    assert!(
        page.text("#template-effective").await.contains("1.1"),
        "2.0 is not effective before its time"
    );

    // Preview with placeholders: escaped, a missing one as a dash, nothing recorded.
    page.fill("#ph-fullName", "Ada <b>Lovelace</b>").await;
    page.click("#preview-button").await;
    page.wait_contains("#preview-title", "Our terms").await;
    assert_eq!(
        page.text("#preview-content").await,
        "Dear Ada <b>Lovelace</b>, these are the updated terms of -."
    );
    assert_eq!(page.count("#preview-content b").await, 0, "values are text");
    page.screenshot_page("template").await;

    // Disable: the list says so.
    page.click("#set-enabled").await;
    page.wait_contains("#toast", "Template saved").await;
    page.hash("#/templates").await;
    let template_id = page
        .find("table.templates tbody tr")
        .await
        .attr("data-template-id")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        page.text("table.templates td[data-label='Status']").await,
        "Disabled"
    );
    assert_eq!(
        page.text("table.templates td[data-label='Effective version']")
            .await,
        "1.1"
    );
    admin
        .patch(server.url(&format!("/api/v1/templates/{template_id}")))
        .json(&json!({"enabled": true}))
        .json_ok()
        .await;

    // Events from two integrations: 22 acceptances on the web, one decline on mobile.
    let (web, web_key, _) = server.create_integration(&admin, "Web").await;
    let (mobile, mobile_key, _) = server.create_integration(&admin, "Mobile").await;
    admin
        .patch(server.url(&format!("/api/v1/integrations/{web}")))
        .json(&json!({"callbackUrl": common::HOOKS_URL, "webhookDeliveryEnabled": false}))
        .json_ok()
        .await;
    for n in 0..22 {
        verified_event(
            &server,
            (&web, &web_key),
            &template_id,
            &format!("user-{n:02}"),
            "ACCEPTED",
        )
        .await;
    }
    let declined = verified_event(
        &server,
        (&mobile, &mobile_key),
        &template_id,
        "m-1",
        "DECLINED",
    )
    .await;

    page.hash("#/events").await;
    page.wait_count("table.events tbody tr", 20).await;
    assert_eq!(
        page.text("table.events tbody tr:first-child td[data-label='End user']")
            .await,
        "m-1",
        "newest first"
    );
    assert_eq!(
        page.text("table.events tbody tr:first-child td[data-label='Integration']")
            .await,
        "Mobile"
    );
    page.screenshot("events").await;
    page.click("#page-older").await;
    page.wait_count("table.events tbody tr", 3).await;
    assert_eq!(
        page.text("table.events tbody tr:last-child td[data-label='End user']")
            .await,
        "user-00"
    );
    page.click("#page-newer").await;
    page.wait_count("table.events tbody tr", 20).await;

    // Filters: status, integration, end user, template, a date range.
    page.set("#filter-status", "DECLINED").await;
    page.click("#apply-filters").await;
    page.wait_count("table.events tbody tr", 1).await;
    assert_eq!(
        page.text("table.events td[data-label='Status']").await,
        "Declined"
    );
    page.hash("#/events").await;
    page.wait_count("table.events tbody tr", 20).await;
    page.set("#filter-app", &web).await;
    page.fill("#filter-user", "user-07").await;
    page.set("#filter-template", &template_id).await;
    page.click("#apply-filters").await;
    page.wait_count("table.events tbody tr", 1).await;
    assert_eq!(
        page.text("table.events td[data-label='End user']").await,
        "user-07"
    );
    page.set("#filter-user", "").await;
    page.set("#filter-from", "2099-01-01T00:00").await;
    page.click("#apply-filters").await;
    page.wait_contains(".empty", "No event matches these filters")
        .await;
    page.set("#filter-from", "2000-01-01T00:00").await;
    page.click("#apply-filters").await;
    page.wait_count("table.events tbody tr", 20).await;
    assert_eq!(
        page.js("return [...document.querySelectorAll('table.events td[data-label=Integration]')].every(td => td.textContent === 'Web')").await,
        json!(true)
    );

    // One event with its delivery (held: delivery is off for the web integration).
    page.click("table.events tbody tr:first-child a").await;
    page.wait_contains("#event-facts", "Accepted").await;
    page.find("table.deliveries tr td [data-state='held']")
        .await;
    assert!(page.text("#event-facts").await.contains(&web));
    page.hash(&format!("#/events/{declined}")).await;
    page.wait_contains("#event-facts", "m-1").await;
    page.wait_contains(".empty", "no callback URL").await;

    page.close().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_session_returns_to_login_and_keeps_the_place() {
    let server = TestServer::start().await;
    let admin = server.admin_client().await;
    let (app_id, _, _) = server.create_integration(&admin, "Kiosk").await;
    let page = Page::open(&server).await;
    page.goto(&format!("#/integrations/{app_id}/deliveries?state=held"))
        .await;
    page.login(&server.admin_password()).await;
    page.wait_contains("h1", "Delivery history · Kiosk").await;
    page.wait_contains(".empty", "No delivery matches these filters")
        .await;

    // The password changes on the command line, which ends every session.
    let dir = server.data_dir.to_str().unwrap().to_string();
    let out = tokio::task::spawn_blocking(move || {
        common::clicktermd_with_stdin(
            &[
                "--data-dir",
                &dir,
                "admin",
                "set-password",
                "--username",
                "admin",
                "--password-stdin",
            ],
            &[],
            "a-new-long-password\n",
        )
    })
    .await
    .unwrap();
    common::assert_success(&out, "admin set-password");

    // The next request meets the login form, which says why; the place is still in the URL.
    page.set("#filter-state", "failed").await;
    page.wait_contains("#login-notice", "session has expired")
        .await;
    let hash = page.js("return location.hash").await;
    assert!(
        hash.as_str()
            .unwrap()
            .starts_with(&format!("#/integrations/{app_id}/deliveries")),
        "{hash}"
    );
    page.login("a-new-long-password").await;
    page.wait_contains("h1", "Delivery history · Kiosk").await;
    assert_eq!(
        page.js("return document.getElementById('filter-state').value")
            .await,
        "failed"
    );

    // A phone: the table turns into cards that fit the screen.
    page.browser
        .client
        .set_window_size(390, 844)
        .await
        .expect("resize the window");
    page.hash("#/integrations").await;
    page.wait_contains("table.integrations td[data-label='App name']", "Kiosk")
        .await;
    page.assert_fits().await;
    let before = page
        .js("return getComputedStyle(document.querySelector('table.integrations td'), '::before').content")
        .await;
    assert_eq!(
        before,
        json!("\"App name\""),
        "cells carry their column name"
    );
    page.screenshot("phone-integrations").await;

    // Log out: back at the login form, and the API refuses the old cookie.
    page.click("#logout").await;
    page.wait_contains("#login-notice", "logged out").await;
    let status = page
        .js("return fetch('/api/v1/integrations', {headers: {Accept: 'application/json'}}).then(r => r.status)")
        .await;
    assert_eq!(status, json!(401));

    page.close().await;
    server.stop().await;
}

/// The dashboard is served by the binary itself: every file it loads is embedded, nothing comes from
/// another origin, and the page may not be framed or run inline script.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_is_embedded_and_self_contained() {
    let server = TestServer::start().await;
    let http = common::client();
    let res = http.get(server.url("/")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let header = |name: &str| {
        res.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    };
    assert!(header("content-type").starts_with("text/html"));
    let csp = header("content-security-policy");
    for directive in [
        "default-src 'none'",
        "script-src 'self'",
        "connect-src 'self'",
        "frame-ancestors 'none'",
    ] {
        assert!(csp.contains(directive), "{csp}");
    }
    assert_eq!(header("x-frame-options"), "DENY");
    let index = res.text().await.unwrap();
    assert!(
        !index.contains("http"),
        "the page loads nothing from elsewhere"
    );

    // Every file the page and its modules load, followed from the page itself.
    let mut queue: Vec<String> = index
        .split('"')
        .filter(|s| s.starts_with("/dashboard/"))
        .map(str::to_string)
        .collect();
    let mut seen = std::collections::BTreeSet::new();
    while let Some(path) = queue.pop() {
        if !seen.insert(path.clone()) {
            continue;
        }
        let res = http.get(server.url(&path)).send().await.unwrap();
        assert_eq!(res.status(), StatusCode::OK, "{path}");
        let text = res.text().await.unwrap();
        assert!(
            !text.contains("url(http") && !text.contains("@import"),
            "{path}"
        );
        for line in text.lines().filter(|l| l.starts_with("import ")) {
            let module = line.split('"').nth(1).expect("a quoted module");
            let name = module
                .strip_prefix("./")
                .unwrap_or_else(|| panic!("{path} imports {module} from elsewhere"));
            queue.push(format!("/dashboard/{name}"));
        }
    }
    for file in [
        "/dashboard/app.css",
        "/dashboard/app.js",
        "/dashboard/templates.js",
        "/dashboard/events.js",
    ] {
        assert!(seen.contains(file), "{file} not reached: {seen:?}");
    }

    for path in [
        "/dashboard/missing.js",
        "/dashboard/%2e%2e/demo/index.html",
        "/dashboard/",
    ] {
        let res = http.get(server.url(path)).send().await.unwrap();
        common::expect_error(res, StatusCode::NOT_FOUND).await;
    }
    server.stop().await;
}

/// The admin endpoints added for the dashboard: delivery counts per state, one event with its
/// deliveries, and the draft preview.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_api_has_what_the_dashboard_shows() {
    let server = TestServer::start().await;
    let admin = server.admin_client().await;
    let (app_id, app_key, _) = server.create_integration(&admin, "Counted").await;

    // Counts: every state present, zero before anything happened.
    let counts = |app: String| {
        let (admin, url) = (
            admin.clone(),
            server.url(&format!("/api/v1/integrations/{app}/delivery-counts")),
        );
        async move {
            let res = admin.get(url).send().await.unwrap();
            let status = res.status();
            (status, res.json::<Value>().await.unwrap())
        }
    };
    let (status, zero) = counts(app_id.clone()).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        zero,
        json!({"pending": 0, "in_flight": 0, "succeeded": 0, "failed": 0, "held": 0, "cancelled": 0})
    );
    admin
        .patch(server.url(&format!("/api/v1/integrations/{app_id}")))
        .json(&json!({"callbackUrl": common::HOOKS_URL, "webhookDeliveryEnabled": false}))
        .json_ok()
        .await;
    let template = published_template(&server, &admin, "Terms").await;
    let event_id = verified_event(
        &server,
        (&app_id, &app_key),
        &template,
        "counted-user",
        "ACCEPTED",
    )
    .await;
    admin
        .post(server.url(&format!("/api/v1/integrations/{app_id}/test-webhook")))
        .json_with(StatusCode::ACCEPTED)
        .await;
    let (_, held) = counts(app_id.clone()).await;
    assert_eq!(held["held"], 2, "{held}");
    assert_eq!(held["pending"], 0, "{held}");
    let (status, _) = counts("no-such-app".into()).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // One event, with appId and its delivery (the test webhook is not the event's).
    let res = admin
        .get(server.url(&format!("/api/v1/events/{event_id}")))
        .json_ok()
        .await;
    let event: Value = res;
    assert_eq!(event["clickwrapEventId"], event_id.as_str());
    assert_eq!(event["appId"], app_id.as_str());
    assert_eq!(event["endUserId"], "counted-user");
    assert_eq!(event["clickwrapEventStatus"], "ACCEPTED");
    let deliveries = event["deliveries"].as_array().expect("deliveries");
    assert_eq!(deliveries.len(), 1, "{event}");
    assert_eq!(deliveries[0]["clickwrapEventId"], event_id.as_str());
    assert_eq!(deliveries[0]["state"], "held");
    assert_eq!(deliveries[0]["isTest"], false);
    // An unknown id, and an event that was acted on but never verified, are not found.
    let acted: Value = common::client()
        .post(server.url("/public-client/v1/clickwrap"))
        .json(&json!({"appId": app_id, "clickwrapTemplateId": template, "endUserId": "unverified", "action": "ACCEPTED"}))
        .json_with(StatusCode::CREATED).await;
    for id in [
        acted["clickwrapEventId"].as_str().unwrap(),
        "00000000-0000-4000-8000-000000000000",
    ] {
        let res = admin
            .get(server.url(&format!("/api/v1/events/{id}")))
            .send()
            .await
            .unwrap();
        common::expect_error(res, StatusCode::NOT_FOUND).await;
    }

    // The preview renders the draft as the widget would: escaped values, dashes, language fallback.
    let res = admin
        .post(server.url("/api/v1/templates"))
        .json(&json!({"name": "Previewed", "defaultLanguage": "en", "languages": {
            "en": {"title": "Terms for {{company}}", "content": "<p>Hi {{fullName}} ({{plan}})</p>", "inlineContent": "I agree, {{fullName}}"},
            "de": {"title": "AGB für {{company}}", "content": "<p>Hallo {{fullName}}</p>"},
        }}))
    .json_with(StatusCode::CREATED)
.await;
    let tid = res["id"].as_str().unwrap().to_string();
    let preview = |body: Value| {
        let (admin, url) = (
            admin.clone(),
            server.url(&format!("/api/v1/templates/{tid}/preview")),
        );
        async move { admin.post(url).json(&body).send().await.unwrap() }
    };
    let res = preview(json!({"templatePlaceholders": {"fullName": "<Ann>", "plan": "Pro"}})).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(
        res.json::<Value>().await.unwrap(),
        json!({"language": "en", "title": "Terms for -", "content": "<p>Hi &lt;Ann&gt; (Pro)</p>",
               "inlineContent": "I agree, &lt;Ann&gt;"})
    );
    // ClickTerm's JSON-encoded string works too; de-AT falls back to de.
    let res =
        preview(json!({"language": "de-AT", "templatePlaceholders": "{\"company\":\"ACME\"}"}))
            .await;
    assert_eq!(
        res.json::<Value>().await.unwrap(),
        json!({"language": "de", "title": "AGB für ACME", "content": "<p>Hallo -</p>", "inlineContent": null})
    );
    let res = preview(json!({"templatePlaceholders": ["not", "an", "object"]})).await;
    let err = common::expect_error(res, StatusCode::BAD_REQUEST).await;
    assert!(
        err["message"]
            .as_str()
            .unwrap()
            .contains("templatePlaceholders"),
        "{err}"
    );
    let res = admin
        .post(server.url("/api/v1/templates/no-such-template/preview"))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    common::expect_error(res, StatusCode::NOT_FOUND).await;
    server.stop().await;
}

/// A page of another origin on the same site (another port of 127.0.0.1: the browser sends the
/// dashboard's `SameSite=Strict` cookie along) tries every state-changing admin request a logged-in
/// admin's browser could be made to send — by `fetch` without CORS and by a plain form post. The
/// server refuses them all; the dashboard itself still works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_origin_cannot_make_a_logged_in_admins_browser_change_anything() {
    let server = TestServer::start().await;
    let admin = server.token_client().await;
    let (app_id, app_key, secret) = server.create_integration(&admin, "Target").await;
    admin
        .patch(server.url(&format!("/api/v1/integrations/{app_id}")))
        .json(&json!({"callbackUrl": common::HOOKS_URL}))
        .json_ok()
        .await;
    let test_delivery = admin
        .post(server.url(&format!("/api/v1/integrations/{app_id}/test-webhook")))
        .json_with(StatusCode::ACCEPTED)
        .await;
    let delivery_id = test_delivery["id"]
        .as_str()
        .expect("delivery id")
        .to_string();
    let deliveries = |admin: reqwest::Client| {
        let url = server.url(&format!("/api/v1/integrations/{app_id}/deliveries"));
        async move {
            admin.get(url).json_ok().await["items"]
                .as_array()
                .unwrap()
                .len()
        }
    };
    let before = deliveries(admin.clone()).await;

    // The attacker's page, served from another port of the same host.
    let target = server.base.clone();
    let evil = format!(
        r#"<!doctype html><title>loading</title>
<form id="f" method="POST" target="sink" action="{target}/api/v1/integrations/{app_id}/signing-secret"></form>
<iframe name="sink"></iframe>
<script>
const t = {target:?};
const posts = [
  "/api/v1/integrations/{app_id}/app-key",
  "/api/v1/integrations/{app_id}/signing-secret",
  "/api/v1/integrations/{app_id}/test-webhook",
  "/api/v1/deliveries/{delivery_id}/redeliver",
  "/api/v1/logout",
];
Promise.all(posts.map(p => fetch(t + p, {{method: "POST", mode: "no-cors", credentials: "include"}}).catch(() => null)))
  .then(() => fetch(t + "/api/v1/integrations/{app_id}", {{method: "DELETE", mode: "no-cors", credentials: "include"}}).catch(() => null))
  .then(() => {{
    document.querySelector("iframe").onload = () => {{ document.title = "done"; }};
    document.getElementById("f").submit();
  }});
</script>"#
    );
    let evil_app = axum::Router::new().route(
        "/evil.html",
        axum::routing::get(move || {
            let evil = evil.clone();
            async move { axum::response::Html(evil) }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let evil_url = format!("http://{}/evil.html", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, evil_app).await });

    let page = Page::open(&server).await;
    page.goto("").await;
    page.login(&server.admin_password()).await;
    page.browser
        .client
        .goto(&evil_url)
        .await
        .expect("open the other origin's page");
    let deadline = Instant::now() + DEADLINE;
    while page.browser.client.title().await.unwrap() != "done" {
        assert!(
            Instant::now() < deadline,
            "the other origin's page never finished"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Nothing changed: the App Key and the signing secret are the same, no delivery was added or
    // redelivered, the integration is there, and the session is still alive.
    assert_eq!(
        public_status(&server, &app_id, &app_key).await,
        StatusCode::OK
    );
    let revealed = admin
        .get(server.url(&format!("/api/v1/integrations/{app_id}/signing-secret")))
        .json_ok()
        .await;
    assert_eq!(revealed["signingSecret"], secret.as_str());
    assert_eq!(deliveries(admin.clone()).await, before);
    let shown = admin
        .get(server.url(&format!("/api/v1/deliveries/{delivery_id}")))
        .json_ok()
        .await;
    assert!(
        shown["attemptList"]
            .as_array()
            .unwrap()
            .iter()
            .all(|a| a["trigger"] != "manual"),
        "no manual attempt chain: {shown}"
    );
    let audit = admin.get(server.url("/api/v1/audit")).json_ok().await;
    let actions: Vec<&str> = audit["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["action"].as_str())
        .collect();
    assert!(
        !actions.iter().any(|a| {
            a.contains("app_key") || a.contains("signing_secret.rotate") || a.ends_with(".delete")
        }),
        "{actions:?}"
    );

    // The dashboard itself, logged in all along, still changes things: it regenerates the key.
    page.goto(&format!("#/integrations/{app_id}")).await;
    let same_origin = page
        .js(&format!(
            "return fetch('/api/v1/integrations/{app_id}/app-key', {{method: 'POST', headers: {{Accept: 'application/json'}}}}).then(r => r.status)"
        ))
        .await;
    assert_eq!(
        same_origin, 200,
        "a same-origin change is accepted (Sec-Fetch-Site)"
    );
    assert_eq!(
        public_status(&server, &app_id, &app_key).await,
        StatusCode::UNAUTHORIZED,
        "and it took effect"
    );
    page.close().await;
}
