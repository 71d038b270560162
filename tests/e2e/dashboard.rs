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

    /// The attribute `name` of the element matching `css` (null when it has none), without waiting.
    async fn attr_of(&self, css: &str, name: &str) -> Value {
        self.find(css).await;
        self.js(&format!(
            "return document.querySelector({}).getAttribute({})",
            json!(css),
            json!(name)
        ))
        .await
    }

    /// Waits until the field matching `css` holds `value` (a page rebuilt from its URL shows it).
    async fn wait_value(&self, css: &str, value: &str) {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let got = self
                .js(&format!(
                    "const el = document.querySelector({}); return el ? el.value : null",
                    json!(css)
                ))
                .await;
            if got == json!(value) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{css} holds {got}, not {value:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
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
    // The table as in the seed (App name, Created date, Status, Actions) with the webhooks' health
    // between Status and Actions; times in the viewer's zone with UTC on hover.
    let row = format!("tr[data-app-id='{app_id}']");
    page.wait_contains(&format!("{row} td[data-label='App name']"), "Web Platform")
        .await;
    let heads = page
        .js("return [...document.querySelectorAll('table.integrations th')].map(th => th.textContent)")
        .await;
    assert_eq!(
        heads,
        json!([
            "App name",
            "Created date",
            "Status",
            "Webhooks, 24 h",
            "Last failure",
            "Queue",
            "Actions"
        ])
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
        "Delivered 200"
    );
    assert_eq!(
        page.text("table.deliveries td[data-label='Attempts']")
            .await,
        "delivered at the first attempt"
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
    // The status is named, once: no general sentence repeated by the attempt's own detail.
    assert_eq!(
        page.text(".attempt .explain").await,
        "HTTP error. The endpoint answered 500; only 200 counts as delivered."
    );
    page.hash(&format!("#/integrations/{app_id}/deliveries"))
        .await;
    page.set("#filter-state", "failed").await;
    page.wait_count("table.deliveries tbody tr", 1).await;
    assert!(page.count("table.deliveries tr[data-state='failed']").await == 1);
    assert_eq!(
        page.text("table.deliveries td[data-label='Last outcome']")
            .await,
        "HTTP error 500"
    );
    assert_eq!(
        page.text("table.deliveries td[data-label='Attempts']")
            .await,
        "gave up after 1 attempt"
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

    // Filters: status, integration, end user, template, a date range. Each applies as it changes (as
    // on every page of the dashboard), kept in the URL.
    page.set("#filter-status", "DECLINED").await;
    page.wait_count("table.events tbody tr", 1).await;
    assert_eq!(
        page.text("table.events td[data-label='Status']").await,
        "Declined"
    );
    page.hash("#/events").await;
    page.wait_count("table.events tbody tr", 20).await;
    page.set("#filter-app", &web).await;
    page.wait_value("#filter-app", &web).await;
    page.set("#filter-user", "user-07").await;
    page.wait_value("#filter-user", "user-07").await;
    page.wait_value("#filter-app", &web).await;
    page.set("#filter-template", &template_id).await;
    page.wait_value("#filter-template", &template_id).await;
    page.wait_count("table.events tbody tr", 1).await;
    assert_eq!(
        page.text("table.events td[data-label='End user']").await,
        "user-07"
    );
    page.set("#filter-user", "").await;
    page.wait_count("table.events tbody tr", 20).await;
    page.set("#filter-from", "2099-01-01T00:00").await;
    page.wait_contains(".empty", "No event matches these filters")
        .await;
    page.set("#filter-from", "2000-01-01T00:00").await;
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
    // Names, not ids (the ids are on hover).
    assert_eq!(page.text("#event-integration").await, "Web");
    assert_eq!(page.text("#event-template").await, "Terms of Service");
    assert_eq!(
        page.browser
            .attr("#event-integration span", "title")
            .await
            .as_deref(),
        Some(web.as_str())
    );
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
    let store_env = server.cli_env();
    let out = tokio::task::spawn_blocking(move || {
        let env: Vec<(&str, &str)> = store_env.iter().map(|(k, v)| (*k, v.as_str())).collect();
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
            &env,
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

/// A server whose webhooks reach the test receiver at `receiver.test` (127.0.0.1, trusted through its CA),
/// with one quick retry, so a failing endpoint gives up after two attempts within a second.
async fn server_for_receivers(ca: &ReceiverCa, max_retries: u32, retry_secs: f64) -> TestServer {
    let ca_file = ca.ca_file.clone();
    let server = TestServer::start_with(|c| {
        c.webhooks.extra_ca_file = Some(ca_file);
        c.webhooks.allow_private_cidrs = vec!["127.0.0.1/32".parse().unwrap()];
        c.webhooks.timeout_secs = 5.0;
        c.webhooks.max_retries = max_retries;
        c.webhooks.retry_base_secs = retry_secs;
        c.webhooks.retry_cap_secs = retry_secs;
    })
    .await;
    server
        .dns
        .set("receiver.test", &["127.0.0.1".parse::<IpAddr>().unwrap()]);
    server
}

/// Waits until `app_id` has `n` deliveries in `state` (the kept counts, through the admin API).
async fn settled(server: &TestServer, admin: &reqwest::Client, app_id: &str, state: &str, n: u64) {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let counts: Value = admin
            .get(server.url(&format!("/api/v1/integrations/{app_id}/delivery-counts")))
            .json_ok()
            .await;
        if counts[state] == n {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{app_id}: not {n} {state}: {counts}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Verified events for a healthy integration (3: two accepted, one declined) and a failing one (2
/// accepted), each delivered or given up on; returns the healthy one's first event.
async fn traffic(
    server: &TestServer,
    admin: &reqwest::Client,
    template: &str,
    healthy: (&str, &str),
    failing: (&str, &str),
) -> String {
    let first = verified_event(server, healthy, template, "h-1", "ACCEPTED").await;
    verified_event(server, healthy, template, "h-2", "ACCEPTED").await;
    verified_event(server, healthy, template, "h-3", "DECLINED").await;
    verified_event(server, failing, template, "f-1", "ACCEPTED").await;
    verified_event(server, failing, template, "f-2", "ACCEPTED").await;
    settled(server, admin, healthy.0, "succeeded", 3).await;
    settled(server, admin, failing.0, "failed", 2).await;
    first
}

/// The aggregate endpoints behind the overview and its charts, at the HTTP level: real attempts to a
/// real receiver (one endpoint answers 200, the other 500) summed per integration, per hour and per
/// day; every window bounded, and bad input a JSON 400 that names the parameter.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stats_endpoints_sum_real_attempts_and_refuse_unbounded_windows() {
    let ca = ReceiverCa::generate();
    let server = server_for_receivers(&ca, 1, 0.2).await;
    let admin = server.admin_client().await;
    let (healthy, healthy_key, healthy_secret) =
        server.create_integration(&admin, "Healthy shop").await;
    let (broken, broken_key, _) = server.create_integration(&admin, "Broken CRM").await;
    let receiver =
        Receiver::start_prepared(ca, "127.0.0.1".parse().unwrap(), &healthy_secret).await;
    for (app, path) in [(&healthy, "/ok"), (&broken, "/status/500")] {
        admin
            .patch(server.url(&format!("/api/v1/integrations/{app}")))
            .json(&json!({"callbackUrl": receiver.url("receiver.test", path)}))
            .json_ok()
            .await;
    }
    let template = published_template(&server, &admin, "Terms").await;
    traffic(
        &server,
        &admin,
        &template,
        (&healthy, &healthy_key),
        (&broken, &broken_key),
    )
    .await;

    // The overview: one entry per integration, the failing one called so, with its last failure.
    let overview: Value = admin
        .get(server.url("/api/v1/stats/overview"))
        .json_ok()
        .await;
    let of = |app: &str| {
        overview["integrations"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["appId"] == app)
            .unwrap_or_else(|| panic!("{app} is not in {overview}"))
            .clone()
    };
    let h = of(&healthy);
    assert_eq!(h["name"], "Healthy shop");
    assert_eq!(h["health"], "healthy", "{h}");
    assert_eq!(
        h["last24h"],
        json!({"attempts": 3, "delivered": 3, "failed": 0, "gaveUp": 0, "successRate": 1.0,
               "byOutcome": {"ok": 3}})
    );
    assert_eq!(h["lastFailure"], Value::Null);
    assert!(h["lastSuccessAt"].is_string(), "{h}");
    assert_eq!(
        h["queue"],
        json!({"pending": 0, "inFlight": 0, "held": 0, "oldestDueAt": null, "lagSeconds": 0})
    );
    let b = of(&broken);
    assert_eq!(b["health"], "failing", "{b}");
    assert_eq!(
        b["last24h"],
        json!({"attempts": 4, "delivered": 0, "failed": 4, "gaveUp": 2, "successRate": 0.0,
               "byOutcome": {"http_status": 4}})
    );
    let failure = &b["lastFailure"];
    assert_eq!(failure["outcome"], "http_status", "{b}");
    assert_eq!(failure["responseStatus"], 500);
    assert!(
        failure["detail"].as_str().unwrap().contains("500"),
        "{failure}"
    );
    let failed_delivery = failure["deliveryId"].as_str().unwrap();
    let d: Value = admin
        .get(server.url(&format!("/api/v1/deliveries/{failed_delivery}")))
        .json_ok()
        .await;
    assert_eq!(d["appId"], broken.as_str());
    assert_eq!(d["state"], "failed");
    // The history's summaries carry the latest status and the chain's length.
    assert_eq!(d["lastResponseStatus"], 500);
    assert_eq!(d["attempts"], 2);
    assert_eq!(d["maxAttempts"], 2);
    assert_eq!(
        overview["totals"],
        json!({"integrations": 2, "failing": 1, "attempts": 7, "delivered": 3, "failed": 4,
               "gaveUp": 2, "successRate": 3.0 / 7.0})
    );

    // Attempts per hour: every hour of the window present, oldest first, the current one last.
    let sum = |v: &Value, key: &str| -> i64 {
        v["buckets"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b[key].as_i64().unwrap())
            .sum()
    };
    let day: Value = admin
        .get(server.url("/api/v1/stats/attempts"))
        .json_ok()
        .await;
    assert_eq!(day["bucket"], "hour");
    assert_eq!(day["buckets"].as_array().unwrap().len(), 24);
    assert_eq!(sum(&day, "attempts"), 7);
    assert_eq!(sum(&day, "gaveUp"), 2);
    let busy: Vec<&Value> = day["buckets"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|b| b["attempts"].as_i64().unwrap() > 0)
        .collect();
    for b in &busy {
        assert!(b["avgDurationMs"].as_i64().unwrap() <= b["maxDurationMs"].as_i64().unwrap());
    }
    let starts: Vec<&str> = day["buckets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["start"].as_str().unwrap())
        .collect();
    assert!(starts.windows(2).all(|w| w[0] < w[1]), "{starts:?}");
    assert!(starts[0].ends_with(":00:00Z"), "{}", starts[0]);
    let week: Value = admin
        .get(server.url(&format!("/api/v1/stats/attempts?hours=168&appId={broken}")))
        .json_ok()
        .await;
    assert_eq!(week["buckets"].as_array().unwrap().len(), 168);
    assert_eq!(week["appId"], broken.as_str());
    assert_eq!(sum(&week, "attempts"), 4);
    assert_eq!(sum(&week, "delivered"), 0);

    // Verified events per day, accepted and declined.
    let events: Value = admin
        .get(server.url("/api/v1/stats/events"))
        .json_ok()
        .await;
    assert_eq!(events["bucket"], "day");
    assert_eq!(events["buckets"].as_array().unwrap().len(), 14);
    assert_eq!((sum(&events, "accepted"), sum(&events, "declined")), (4, 1));
    let today: Value = admin
        .get(server.url(&format!("/api/v1/stats/events?days=1&appId={healthy}")))
        .json_ok()
        .await;
    assert_eq!(today["buckets"].as_array().unwrap().len(), 1, "{today}");
    assert_eq!((sum(&today, "accepted"), sum(&today, "declined")), (2, 1));
    assert!(
        today["buckets"][0]["start"]
            .as_str()
            .unwrap()
            .ends_with("T00:00:00Z")
    );

    // Bad input: a JSON 400 naming the parameter; an unknown integration is 404; no session is 401.
    for (path, field) in [
        ("/api/v1/stats/attempts?hours=0", "hours"),
        ("/api/v1/stats/attempts?hours=169", "hours"),
        ("/api/v1/stats/attempts?hours=two", "hours"),
        ("/api/v1/stats/attempts?hours=-1", "hours"),
        ("/api/v1/stats/events?days=91", "days"),
        ("/api/v1/stats/events?days=1.5", "days"),
        ("/api/v1/stats/events?since=2020-01-01", "since"),
        ("/api/v1/stats/overview?hours=24", "hours"),
    ] {
        let res = admin.get(server.url(path)).send().await.unwrap();
        let err = common::expect_error(res, StatusCode::BAD_REQUEST).await;
        assert_eq!(err["code"], "invalid_request", "{path}: {err}");
        assert!(
            err["message"].as_str().unwrap().contains(field),
            "{path}: {err}"
        );
    }
    for path in [
        "/api/v1/stats/attempts?appId=no-such-app",
        "/api/v1/stats/events?appId=no-such-app",
    ] {
        let res = admin.get(server.url(path)).send().await.unwrap();
        common::expect_error(res, StatusCode::NOT_FOUND).await;
    }
    for path in [
        "/api/v1/stats/overview",
        "/api/v1/stats/attempts",
        "/api/v1/stats/events",
    ] {
        let res = common::client().get(server.url(path)).send().await.unwrap();
        common::expect_error(res, StatusCode::UNAUTHORIZED).await;
    }
    server.stop().await;
}

/// The overview after login, with real traffic: a healthy integration and one whose endpoint answers
/// 500 (created through the New integration form with its callback URL). The failing one is marked in
/// the overview and in the integrations table, the charts draw the attempts and events that happened,
/// the delivery list names the status code and how the chain ended, the event detail names template
/// and integration, the event filters fit on one row at 1400 px, and the overview fits a phone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_overview_marks_the_failing_integration_and_charts_real_traffic() {
    let ca = ReceiverCa::generate();
    let server = server_for_receivers(&ca, 1, 0.2).await;
    let admin = server.admin_client().await;
    let (healthy, healthy_key, healthy_secret) =
        server.create_integration(&admin, "Healthy shop").await;
    let receiver =
        Receiver::start_prepared(ca, "127.0.0.1".parse().unwrap(), &healthy_secret).await;
    admin
        .patch(server.url(&format!("/api/v1/integrations/{healthy}")))
        .json(&json!({"callbackUrl": receiver.url("receiver.test", "/ok")}))
        .json_ok()
        .await;
    let template = published_template(&server, &admin, "Terms").await;

    // Signing in lands on the overview.
    let page = Page::open(&server).await;
    page.goto("").await;
    page.login(&server.admin_password()).await;
    page.wait_contains("main h1", "Overview").await;
    assert_eq!(
        page.attr_of("a[data-nav='overview']", "aria-current").await,
        json!("page")
    );

    // The New integration form takes the callback URL.
    page.hash("#/integrations").await;
    page.click("#create-integration").await;
    page.fill("#create-form input[name=name]", "Broken CRM")
        .await;
    page.fill(
        "#create-callback",
        &receiver.url("receiver.test", "/status/500"),
    )
    .await;
    page.click("#create-form button[type=submit]").await;
    let broken_key = page.text("#create-form .app-key .secret-value").await;
    let broken = page.text("#create-form .app-id").await;
    page.click("#created-done").await;
    page.wait_gone("dialog").await;
    let stored: Value = admin
        .get(server.url(&format!("/api/v1/integrations/{broken}")))
        .json_ok()
        .await;
    assert_eq!(
        stored["callbackUrl"],
        receiver.url("receiver.test", "/status/500").as_str()
    );

    let event = traffic(
        &server,
        &admin,
        &template,
        (&healthy, &healthy_key),
        (&broken, &broken_key),
    )
    .await;

    // The overview: the failing integration is marked, with its reason; the healthy one is not.
    page.hash("#/overview").await;
    let failing_row = format!("table.health-table tr[data-app-id='{broken}']");
    let healthy_row = format!("table.health-table tr[data-app-id='{healthy}']");
    page.wait_contains(&format!("{failing_row} td[data-label='Health']"), "Failing")
        .await;
    assert_eq!(
        page.attr_of(&failing_row, "data-health").await,
        json!("failing")
    );
    assert_eq!(
        page.text(&format!("{healthy_row} td[data-label='Health']"))
            .await,
        "Healthy"
    );
    assert_eq!(
        page.text(&format!("{failing_row} td[data-label='Success rate']"))
            .await,
        "0 %"
    );
    assert_eq!(
        page.text(&format!("{healthy_row} td[data-label='Success rate']"))
            .await,
        "100 %"
    );
    let failure = page
        .text(&format!("{failing_row} td[data-label='Last failure']"))
        .await;
    assert!(failure.contains("HTTP error 500"), "{failure}");
    assert!(
        failure.contains("only 200 counts as delivered"),
        "{failure}"
    );
    assert_eq!(
        page.text(&format!("{healthy_row} td[data-label='Last failure']"))
            .await,
        "none"
    );
    let last24 = page
        .text(&format!("{failing_row} td[data-label='Last 24 h']"))
        .await;
    assert!(
        last24.contains("4 failed · 2 gave up") && last24.contains("HTTP error 4"),
        "{last24}"
    );
    assert_eq!(page.text("#failing-count").await, "1 failing");

    // The charts draw what happened: 24 hourly bars holding the 7 attempts, 14 daily bars holding the 5
    // verified events, latency points for the hours with attempts.
    let bars = |chart: &str| {
        format!(
            "return [...document.querySelectorAll('#{chart} g.bar')].map(g => Number(g.dataset.total))"
        )
    };
    let totals = |v: Value| -> (usize, u64) {
        let v = v.as_array().unwrap().clone();
        (v.len(), v.iter().map(|n| n.as_u64().unwrap()).sum())
    };
    assert_eq!(totals(page.js(&bars("chart-attempts")).await), (24, 7));
    assert_eq!(totals(page.js(&bars("chart-events")).await), (14, 5));
    assert!(page.count("#chart-latency circle").await >= 2);
    assert!(
        page.count("#chart-attempts rect.c-http").await >= 1,
        "the failures have their colour"
    );
    assert!(page.count("#chart-events rect.c-declined").await >= 1);
    page.screenshot_page("overview").await;

    // The charts of one integration, chosen like any filter.
    page.set("#chart-app", &broken).await;
    page.wait_value("#chart-app", &broken).await;
    let deadline = Instant::now() + DEADLINE;
    while totals(page.js(&bars("chart-attempts")).await) != (24, 4) {
        assert!(
            Instant::now() < deadline,
            "the chart never showed Broken CRM's 4 attempts"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // The integrations table shows the same health.
    page.hash("#/integrations").await;
    let row = format!("table.integrations tr[data-app-id='{broken}']");
    page.wait_contains(&format!("{row} td[data-label='Webhooks, 24 h']"), "Failing")
        .await;
    assert!(
        page.text(&format!(
            "table.integrations tr[data-app-id='{healthy}'] td[data-label='Webhooks, 24 h']"
        ))
        .await
        .starts_with("Healthy")
    );
    assert!(
        page.text(&format!("{row} td[data-label='Last failure']"))
            .await
            .contains("500")
    );
    page.screenshot("integrations-health").await;

    // The delivery list: the status code and how each chain ended.
    page.hash(&format!("#/integrations/{broken}/deliveries"))
        .await;
    page.wait_count("table.deliveries tr[data-state='failed']", 2)
        .await;
    let cells = page
        .js("return [...document.querySelectorAll('table.deliveries tbody tr')].map(tr => [tr.querySelector(\"td[data-label='Last outcome']\").textContent, tr.querySelector(\"td[data-label='Attempts']\").textContent])")
        .await;
    assert_eq!(
        cells,
        json!([
            ["HTTP error 500", "gave up after 2 attempts"],
            ["HTTP error 500", "gave up after 2 attempts"]
        ])
    );
    page.screenshot("deliveries-failing").await;

    // The event detail names its template and integration.
    page.hash(&format!("#/events/{event}")).await;
    page.wait_contains("#event-facts", "h-1").await;
    assert_eq!(page.text("#event-integration").await, "Healthy shop");
    assert_eq!(page.text("#event-template").await, "Terms");

    // The event filters fit on one row at 1400 px.
    page.browser
        .client
        .set_window_size(1400, HEIGHT)
        .await
        .unwrap();
    page.hash("#/events").await;
    page.wait_count("table.events tbody tr", 5).await;
    let rows = page
        .js("return new Set([...document.querySelectorAll('#event-filters > .field')].map(f => Math.round(f.getBoundingClientRect().bottom))).size")
        .await;
    assert_eq!(rows, json!(1), "the filters wrap onto more than one row");
    page.assert_fits().await;
    page.screenshot("events-filters").await;

    // A phone: the overview's tables become cards and its charts shrink to the screen.
    page.browser.client.set_window_size(390, 844).await.unwrap();
    page.hash("#/overview").await;
    page.wait_contains(&format!("{failing_row} td[data-label='Health']"), "Failing")
        .await;
    page.find("#chart-attempts svg").await;
    page.assert_fits().await;
    let chart_width = page
        .js("return document.querySelector('#chart-attempts svg').getBoundingClientRect().width")
        .await;
    assert!(chart_width.as_f64().unwrap() <= 390.0, "{chart_width}");
    page.js("document.getElementById('health').scrollIntoView()")
        .await;
    page.screenshot("phone-overview").await;
    page.close().await;

    // The demo page has a favicon and a way back to the dashboard.
    let demo = common::client()
        .get(server.url("/demo/"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        demo.contains(r#"<link rel="icon" href="/dashboard/favicon.svg""#),
        "{demo}"
    );
    assert!(demo.contains(r#"<a href="/" id="back-to-dashboard">"#));
    let icon = common::client()
        .get(server.url("/dashboard/favicon.svg"))
        .send()
        .await
        .unwrap();
    assert_eq!(icon.status(), StatusCode::OK);
    assert_eq!(icon.headers()["content-type"], "image/svg+xml");
    server.stop().await;
}

/// A delivery that is still being retried refreshes itself every second; what the user opened or
/// closed stays so across those refreshes. A failed attempt's response body is open from the start,
/// and the page says where the chain stands ("attempt 1 of 6 failed, retrying", "in 2 s").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retrying_delivery_keeps_what_the_user_opened_while_it_refreshes() {
    let ca = ReceiverCa::generate();
    // Six attempts 4 s apart: the delivery is still retrying for 20 s, however slow the machine.
    let server = server_for_receivers(&ca, 5, 4.0).await;
    let admin = server.admin_client().await;
    let (app, _, secret) = server.create_integration(&admin, "Flaky").await;
    let receiver = Receiver::start_prepared(ca, "127.0.0.1".parse().unwrap(), &secret).await;
    admin
        .patch(server.url(&format!("/api/v1/integrations/{app}")))
        .json(&json!({"callbackUrl": receiver.url("receiver.test", "/status/503")}))
        .json_ok()
        .await;
    let page = Page::open(&server).await;
    let sent: Value = admin
        .post(server.url(&format!("/api/v1/integrations/{app}/test-webhook")))
        .json_with(StatusCode::ACCEPTED)
        .await;
    let id = sent["id"].as_str().unwrap().to_string();
    page.goto(&format!("#/integrations/{app}/deliveries")).await;
    page.login(&server.admin_password()).await;

    // The list: the status code, the chain's place, the next attempt in words.
    let row = "table.deliveries tr[data-state='pending']";
    page.wait_contains(
        &format!("{row} td[data-label='Last outcome']"),
        "HTTP error 503",
    )
    .await;
    let attempts = page.text(&format!("{row} td[data-label='Attempts']")).await;
    assert!(attempts.ends_with("of 6 failed, retrying"), "{attempts}");
    let next = page
        .text(&format!("{row} td[data-label='Next attempt']"))
        .await;
    assert!(next.starts_with("in ") || next.starts_with("now"), "{next}");

    // The delivery: the failed attempt's response body is open; the user opens the request headers
    // and folds the body away.
    page.hash(&format!("#/deliveries/{id}")).await;
    page.find(".attempt[data-outcome='http_status']").await;
    assert_eq!(
        page.js("return document.querySelector(\"details[data-key='0:body']\").open")
            .await,
        json!(true)
    );
    assert!(
        page.text("details[data-key='0:body'] .response-body")
            .await
            .contains("503")
    );
    assert_eq!(
        page.text(".attempt .explain").await,
        "HTTP error. The endpoint answered 503; only 200 counts as delivered."
    );
    let next = page.text("#delivery dl.facts .relative").await;
    assert!(next.starts_with("in ") || next == "now", "{next}");
    page.click("details[data-key='0:headers'] summary").await;
    page.click("details[data-key='0:body'] summary").await;
    let shown = page.count(".attempt").await;
    assert!(shown < 6, "the delivery is still retrying");
    page.js("document.querySelector('.attempt').dataset.seen = 'before'")
        .await;

    // The next attempt arrives; the page was rebuilt, and still shows what the user chose.
    page.wait_count(".attempt", shown + 1).await;
    assert_eq!(
        page.count(".attempt[data-seen]").await,
        0,
        "the page was rebuilt"
    );
    assert_eq!(
        page.js("return [\"0:headers\", \"0:body\"].map(k => document.querySelector(`details[data-key='${k}']`).open)")
            .await,
        json!([true, false])
    );
    let last = shown;
    assert_eq!(
        page.js(&format!(
            "return document.querySelector(\"details[data-key='{last}:body']\").open"
        ))
        .await,
        json!(true),
        "the new failed attempt's body is open"
    );
    let attempts = page.text("#delivery dl.facts .attempts").await;
    assert!(attempts.ends_with("of 6 failed, retrying"), "{attempts}");
    page.close().await;
    server.stop().await;
}

/// The users page (#16 point 2) in Chromium: an owner invites a viewer, reads the one-time password
/// once, makes her an admin, ends her session; she signs in with the one-time password, must choose
/// her own, and then sees no Users page (an admin's dashboard).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_users_page_invites_changes_roles_and_ends_sessions() {
    let server = TestServer::start().await;
    let owner = server.admin_client().await;
    let page = Page::open(&server).await;
    page.goto("#/users").await;
    page.login(&server.admin_password()).await;
    page.wait_contains("#who", "(owner)").await;
    page.find("#nav-users:not([hidden])").await;
    page.wait_count("table.users tbody tr", 1).await;

    page.click("#invite-user").await;
    page.fill("#invite-username", "carol").await;
    page.set("#invite-role", "viewer").await;
    page.click("#invite-form button[type=submit]").await;
    let one_time = page
        .wait_text(".one-time-password .secret-value", |t| t.len() >= 12)
        .await;
    page.click("#invite-form .actions button.primary").await;
    page.wait_count("table.users tbody tr", 2).await;
    page.wait_contains("tr[data-username=carol]", "Invited")
        .await;

    // Her role changes from the table; the server has it.
    page.set("tr[data-username=carol] select.role", "admin")
        .await;
    let deadline = Instant::now() + DEADLINE;
    loop {
        let users = owner.get(server.url("/api/v1/users")).json_ok().await;
        let carol = users["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|u| u["username"] == "carol")
            .cloned()
            .unwrap();
        if carol["role"] == "admin" {
            break;
        }
        assert!(Instant::now() < deadline, "the role never changed: {carol}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // A session of hers, listed and ended from the page.
    let carol = common::cookie_client();
    carol
        .post(server.url("/api/v1/login"))
        .json(&json!({"username": "carol", "password": one_time}))
        .json_ok()
        .await;
    page.hash("#/overview").await;
    page.hash("#/users").await;
    page.wait_contains("tr[data-username=carol] .sessions", "1 live")
        .await;
    page.click("tr[data-username=carol] .sessions").await;
    page.find("table.sessions .end-session").await;
    assert!(page.text("table.sessions").await.contains("127.0.0.1"));
    page.click("table.sessions .end-session").await;
    page.wait_contains("dialog", "No live session").await;
    let res = carol
        .get(server.url("/api/v1/session"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    page.click("dialog .close").await;
    page.screenshot("users").await;

    // She signs in with the one-time password in the browser: she must choose her own first.
    page.click("#logout").await;
    page.fill("#login-form input[name=username]", "carol").await;
    page.fill("#login-form input[name=password]", &one_time)
        .await;
    page.click("#login-form button[type=submit]").await;
    page.find("#change-password-form").await;
    page.fill("#current-password", &one_time).await;
    page.fill("#new-password", "carol's own long password")
        .await;
    page.click("#change-password-form button[type=submit]")
        .await;
    page.wait_contains("#login-notice", "password was changed")
        .await;
    page.fill("#login-form input[name=username]", "carol").await;
    page.fill(
        "#login-form input[name=password]",
        "carol's own long password",
    )
    .await;
    page.click("#login-form button[type=submit]").await;
    page.wait_contains("#who", "carol (admin)").await;
    assert_eq!(
        page.attr_of("#nav-users", "hidden").await,
        json!(""),
        "an admin is not offered the users page"
    );
    page.close().await;
    server.stop().await;
}

/// The proof of consent in the browser (issue #17): the ledger's head on the overview, an event's
/// evidence and link on its page with a certificate that the browser's session downloads as a PDF, and
/// the events page's export, whose file ends at the head.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ledger_head_an_events_evidence_its_certificate_and_the_export() {
    let server = TestServer::start().await;
    let admin = server.admin_client().await;
    let (app_id, app_key, _) = server.create_integration(&admin, "Web").await;
    let template = server
        .published_template(&admin, "Terms of Service", &[])
        .await;
    let app = (app_id.as_str(), app_key.as_str());
    let first = verified_event(&server, app, &template, "p-1", "ACCEPTED").await;
    verified_event(&server, app, &template, "p-2", "DECLINED").await;
    let head: Value = admin.get(server.url("/api/v1/ledger/head")).json_ok().await;
    assert_eq!(head["position"], 2);
    let evidence: Value = admin
        .get(server.url(&format!("/api/v1/events/{first}/evidence")))
        .json_ok()
        .await;

    let page = Page::open(&server).await;
    page.goto("#/overview").await;
    page.login(&server.admin_password()).await;
    page.wait_contains("#ledger-head", "#2").await;
    assert_eq!(
        page.text("#ledger-hash").await,
        head["hash"].as_str().unwrap()
    );
    assert_eq!(
        page.attr_of("#ledger-head", "data-anchor").await,
        json!(format!("2:{}", head["hash"].as_str().unwrap()))
    );

    page.hash(&format!("#/events/{first}")).await;
    page.wait_contains("#evidence-position", "1").await;
    assert_eq!(
        page.text("#evidence-hash").await,
        evidence["ledger"]["hash"].as_str().unwrap()
    );
    assert_eq!(page.text("#evidence-content").await, "<p>Terms</p>");
    assert_eq!(page.text("#evidence-title").await, "Terms");
    page.screenshot("event-proof").await;
    // What the browser gets from the certificate button, with its own session.
    let got = page
        .js("return fetch(document.querySelector('#event-certificate').href).then(async r => \
             [r.status, r.headers.get('content-type'), new TextDecoder().decode((await r.arrayBuffer()).slice(0, 5))])")
        .await;
    assert_eq!(got, json!([200, "application/pdf", "%PDF-"]));

    // The export of what the events page shows: the file ends at the head.
    page.hash("#/events?endUserId=p-1").await;
    page.wait_count("table.events tbody tr", 1).await;
    let href = page.attr_of("#export-ndjson", "href").await;
    assert_eq!(
        href,
        json!("/api/v1/events/export?endUserId=p-1&format=ndjson")
    );
    let lines = page
        .js("return fetch(document.querySelector('#export-ndjson').href).then(r => r.text()).then(t => t.trim().split('\\n').map(l => JSON.parse(l)))")
        .await;
    assert_eq!(lines[0], evidence);
    assert_eq!(lines[1]["chainHead"], head);
    assert_eq!(lines.as_array().unwrap().len(), 2);
    assert!(
        page.attr_of("#export-csv", "download").await.is_string(),
        "the export is a download"
    );
    page.close().await;
    server.stop().await;
}
