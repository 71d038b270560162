//! The SDK widget in a real headless Chromium, on the demo page the server itself serves: the end user
//! sees the rendered template, clicks Accept, the page receives a clicktermSignature, and the customer's
//! backend (here: this test, with the App Key) verifies it.

use crate::common;
use crate::common::Call;

use crate::common::TestServer;
use crate::common::browser::Browser;
use reqwest::StatusCode;
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accept_in_the_widget_then_verify_the_signature() {
    let server = TestServer::start().await;
    let admin = server.admin_client().await;
    let (app_id, app_key, _) = server.create_integration(&admin, "Demo").await;
    let template: Value = admin
        .post(server.url("/api/v1/templates"))
        .json(&json!({
            "name": "Terms of Service",
            "defaultLanguage": "en",
            "languages": {"en": {
                "title": "Our terms",
                "content": "<p>Dear {{fullName}}, these are the terms of {{company}}.</p>",
            }},
        }))
        .json_with(StatusCode::CREATED)
        .await;
    let template_id = template["id"].as_str().unwrap().to_string();
    admin
        .post(server.url(&format!("/api/v1/templates/{template_id}/versions")))
        .json(&json!({"type": "MAJOR"}))
        .json_with(StatusCode::CREATED)
        .await;

    let browser = Browser::start(1280, 900).await;
    let page = server.url(&format!(
        "/demo/?appId={app_id}&templateId={template_id}&endUserId=browser-user"
    ));
    browser
        .client
        .goto(&page)
        .await
        .expect("open the demo page");
    browser.click("#show").await;

    // The modal shows the rendered version: the placeholder from the page, a dash for the missing one.
    let title = browser.text(".ctw-dialog #ctw-title").await;
    assert_eq!(title, "Our terms");
    let body = browser.text(".ctw-dialog #ctw-body").await;
    assert_eq!(body, "Dear Ada Lovelace, these are the terms of -.");
    let dialog = browser
        .client
        .find(fantoccini::Locator::Css(".ctw-dialog"))
        .await
        .unwrap();
    assert_eq!(
        dialog.attr("role").await.unwrap().as_deref(),
        Some("dialog")
    );
    assert_eq!(
        dialog.attr("aria-modal").await.unwrap().as_deref(),
        Some("true")
    );
    // Both buttons are readable whatever the host page does to bare `button`s (the demo page makes them
    // white on blue): their text colour differs from their background.
    for css in [".ctw-accept", ".ctw-decline"] {
        let script = format!(
            "const s = getComputedStyle(document.querySelector('{css}')); return [s.color, s.backgroundColor];"
        );
        let colors = browser.client.execute(&script, vec![]).await.unwrap();
        assert_ne!(colors[0], colors[1], "{css} text is invisible: {colors}");
    }
    assert_eq!(browser.text(".ctw-decline").await, "Decline");
    browser.screenshot("widget-dialog").await;

    browser.click(".ctw-accept").await;
    let result = browser
        .wait_text("#result", |t| t.contains("clicktermSignature"))
        .await;
    let result: Value =
        serde_json::from_str(&result).expect("the page shows the resolved value as JSON");
    assert_eq!(result["isAlreadyAccepted"], false);
    assert_eq!(result["isCanceled"], false);
    let signature = result["clicktermSignature"]
        .as_str()
        .expect("a signature")
        .to_string();
    // The dialog is gone.
    assert!(
        browser
            .client
            .find(fantoccini::Locator::Css(".ctw-overlay"))
            .await
            .is_err()
    );

    // The backend verifies it.
    let verified: Value = common::client()
        .post(server.url("/public-client/v1/clickwrap/verify"))
        .header("X-APP-ID", &app_id)
        .header("X-APP-KEY", &app_key)
        .json(&json!({"clicktermSignature": signature}))
        .json_ok()
        .await;
    assert_eq!(verified["clickwrapEventStatus"], "ACCEPTED", "{verified}");
    assert_eq!(verified["endUserId"], "browser-user");
    let metadata: Value =
        serde_json::from_str(verified["technicalMetadata"].as_str().unwrap()).unwrap();
    assert!(
        metadata["userAgent"].as_str().unwrap().contains("Chrome"),
        "{metadata}"
    );

    // Shown again, nothing is due: it resolves at once without a dialog.
    browser.click("#show").await;
    let again = browser
        .wait_text("#result", |t| t.contains("\"isAlreadyAccepted\": true"))
        .await;
    let again: Value = serde_json::from_str(&again).unwrap();
    assert_eq!(again["clicktermSignature"], Value::Null);
    assert!(
        browser
            .client
            .find(fantoccini::Locator::Css(".ctw-overlay"))
            .await
            .is_err()
    );

    // Another user declines; Escape on a third user's dialog cancels without recording anything.
    browser
        .client
        .execute(
            "document.getElementById('endUserId').value = 'decliner'",
            vec![],
        )
        .await
        .unwrap();
    browser.click("#show").await;
    browser.click(".ctw-decline").await;
    let declined = browser.wait_text("#result", |t| t.contains("cts1_")).await;
    let declined: Value = serde_json::from_str(&declined).unwrap();
    let res = common::client()
        .post(server.url("/public-client/v1/clickwrap/verify"))
        .header("X-APP-ID", &app_id)
        .header("X-APP-KEY", &app_key)
        .json(&json!({"clicktermSignature": declined["clicktermSignature"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        res.json::<Value>().await.unwrap()["clickwrapEventStatus"],
        "DECLINED"
    );

    browser
        .client
        .execute(
            "document.getElementById('endUserId').value = 'canceller'",
            vec![],
        )
        .await
        .unwrap();
    browser.click("#show").await;
    browser.text(".ctw-dialog").await;
    browser
        .client
        .execute(
            "document.dispatchEvent(new KeyboardEvent('keydown', {key: 'Escape', bubbles: true}))",
            vec![],
        )
        .await
        .unwrap();
    let cancelled = browser
        .wait_text("#result", |t| t.contains("\"isCanceled\": true"))
        .await;
    assert!(
        cancelled.contains("\"clicktermSignature\": null"),
        "{cancelled}"
    );
    let status: Value = common::client()
        .get(server.url("/public-client/v1/clickwraps/canceller/status"))
        .header("X-APP-ID", &app_id)
        .header("X-APP-KEY", &app_key)
        .json_ok()
        .await;
    assert_eq!(status[0]["status"], "PENDING", "{status}");

    browser.close().await;
    server.stop().await;
}
