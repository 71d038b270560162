//! The webhook dispatcher end to end: real deliveries from the real server, over TLS, to a receiver
//! (Python, standard library) that checks the seed's signature on its own, with host names answered by a
//! real DNS server. Loopback only: the receiver listens on 127.0.0.1 (and 127.0.0.2 for "blocked" cases,
//! which are refused before anything connects there); `allow_private_cidrs = ["127.0.0.1/32"]`.

use crate::common;
use crate::common::Call;

use std::time::{Duration, Instant};

use crate::common::dns::DnsServer;
use crate::common::peek::Db;
use crate::common::receiver::Receiver;
use crate::common::{DEADLINE, TestServer};
use reqwest::StatusCode;
use serde_json::{Value, json};

/// The receiver checks signatures with this secret; `use_receiver_secret` gives it to an integration.
pub(crate) const RECEIVER_SECRET: &str = "whsec_receiver_test_secret";

struct World {
    server: TestServer,
    admin: reqwest::Client,
    receiver: Receiver,
    dns: DnsServer,
}

/// A server that trusts the receiver's CA, asks our DNS server, and may deliver to 127.0.0.1 only.
async fn world(timeout_secs: f64, tweak: impl FnOnce(&mut clicktermd::config::Config)) -> World {
    let receiver = Receiver::start(RECEIVER_SECRET).await;
    let dns = DnsServer::start().await;
    dns.set("receiver.test", &["127.0.0.1".parse().unwrap()]);
    let (ca, dns_server) = (receiver.ca_file.clone(), dns.server_string());
    let server = TestServer::start_with(|c| {
        c.webhooks.dns_servers = vec![dns_server.parse().unwrap()];
        c.webhooks.extra_ca_file = Some(ca);
        c.webhooks.allow_private_cidrs = vec!["127.0.0.1/32".parse().unwrap()];
        c.webhooks.timeout_secs = timeout_secs;
        c.webhooks.retry_base_secs = 0.05;
        c.webhooks.retry_cap_secs = 0.2;
        tweak(c);
    })
    .await;
    let admin = server.admin_client().await;
    World {
        server,
        admin,
        receiver,
        dns,
    }
}

impl World {
    /// An integration whose signing secret is the receiver's and whose callback is `host` + `path`.
    async fn integration(&self, host: &str, path: &str) -> String {
        let (app_id, _, _) = self
            .server
            .create_integration(&self.admin, "Receiver")
            .await;
        self.patch(
            &app_id,
            json!({"callbackUrl": self.receiver.url(host, path)}),
        )
        .await;
        app_id
    }

    async fn patch(&self, app_id: &str, body: Value) -> Value {
        let res = self
            .admin
            .patch(self.server.url(&format!("/api/v1/integrations/{app_id}")))
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = res.status();
        let json: Value = res.json().await.unwrap();
        assert_eq!(status, StatusCode::OK, "{body} → {json}");
        json
    }

    async fn test_webhook(&self, app_id: &str) -> String {
        let res = self
            .admin
            .post(
                self.server
                    .url(&format!("/api/v1/integrations/{app_id}/test-webhook")),
            )
            .send()
            .await
            .unwrap();
        let status = res.status();
        let json: Value = res.json().await.unwrap();
        assert_eq!(status, StatusCode::ACCEPTED, "{json}");
        json["id"].as_str().unwrap().to_string()
    }

    async fn delivery(&self, id: &str) -> Value {
        self.admin
            .get(self.server.url(&format!("/api/v1/deliveries/{id}")))
            .json_ok()
            .await
    }

    /// Polls a delivery until its state is one of `states`.
    async fn until_state(&self, id: &str, states: &[&str]) -> Value {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let d = self.delivery(id).await;
            if states.contains(&d["state"].as_str().unwrap_or("")) {
                return d;
            }
            assert!(
                Instant::now() < deadline,
                "delivery never reached {states:?}: {d}"
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// The receiver checks with one secret: make it the integration's signing secret (as an operator
    /// would configure the receiver with the integration's secret, the other way round).
    async fn use_receiver_secret(&self, app_id: &str) {
        let db = Db::open(&self.server.config, &self.server.data_dir).await;
        let changed = db
            .rows(
                "UPDATE integrations SET signing_secret = $1 WHERE app_id = $2 RETURNING id",
                &[&self.receiver.secret, app_id],
            )
            .await;
        assert_eq!(changed.len(), 1);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_verified_event_arrives_signed_over_pinned_tls() {
    let w = world(5.0, |_| {}).await;
    let app_id = w.integration("receiver.test", "/ok").await;
    w.use_receiver_secret(&app_id).await;
    // A template, an end user's acceptance through the SDK, and the backend's verify.
    let (key, tid) = {
        let res = w
            .admin
            .post(
                w.server
                    .url(&format!("/api/v1/integrations/{app_id}/app-key")),
            )
            .send()
            .await
            .unwrap();
        let key = res.json::<Value>().await.unwrap()["appKey"]
            .as_str()
            .unwrap()
            .to_string();
        let t: Value = w
            .admin
            .post(w.server.url("/api/v1/templates"))
            .json(&json!({"name": "T", "defaultLanguage": "en", "languages": {"en": {"title": "T", "content": "C"}}}))
            .json_with(StatusCode::CREATED).await;
        let tid = t["id"].as_str().unwrap().to_string();
        w.admin
            .post(w.server.url(&format!("/api/v1/templates/{tid}/versions")))
            .json(&json!({"type": "MAJOR"}))
            .json_with(StatusCode::CREATED)
            .await;
        (key, tid)
    };
    let acted: Value = common::client()
        .post(w.server.url("/public-client/v1/clickwrap"))
        .json(&json!({"appId": app_id, "clickwrapTemplateId": tid, "endUserId": "u1", "action": "ACCEPTED",
                      "templatePlaceholders": "{\"fullName\":\"Ann\"}"}))
        .json_with(StatusCode::CREATED).await;
    let verified: Value = common::client()
        .post(w.server.url("/public-client/v1/clickwrap/verify"))
        .header("X-APP-ID", &app_id)
        .header("X-APP-KEY", &key)
        .json(&json!({"clicktermSignature": acted["clicktermSignature"]}))
        .json_ok()
        .await;
    assert_eq!(verified["clickwrapEventStatus"], "ACCEPTED", "{verified}");

    // The receiver checked it independently: signature, timestamp skew, content type, method.
    let got = w.receiver.wait_for(1, DEADLINE).await;
    let req = &got[0];
    assert!(req.signature_valid, "{req:?}");
    assert!(req.contract_errors.is_empty(), "{:?}", req.contract_errors);
    assert_eq!(
        req.sni.as_deref(),
        Some("receiver.test"),
        "SNI is the URL's host name"
    );
    assert_eq!(
        req.header("user-agent"),
        Some(concat!("clicktermd/", env!("CARGO_PKG_VERSION")))
    );
    let body = req.json();
    assert_eq!(body["eventType"], "CLICKWRAP_EVENT_VERIFIED");
    for (k, v) in verified.as_object().unwrap() {
        assert_eq!(&body["data"][k], v, "data.{k}");
    }
    assert_eq!(body["data"].as_object().unwrap().len(), 10);

    // History: one attempt, ok, to the address that was checked.
    let list: Value = w
        .admin
        .get(
            w.server
                .url(&format!("/api/v1/integrations/{app_id}/deliveries")),
        )
        .json_ok()
        .await;
    let id = list["items"][0]["id"].as_str().unwrap().to_string();
    let d = w.until_state(&id, &["succeeded"]).await;
    assert_eq!(d["attempts"], 1);
    assert_eq!(d["clickwrapEventId"], verified["clickwrapEventId"]);
    let a = &d["attemptList"][0];
    assert_eq!(a["outcome"], "ok");
    assert_eq!(a["responseStatus"], 200);
    assert_eq!(a["remoteAddr"], format!("127.0.0.1:{}", w.receiver.port));
    // The history records exactly the headers that were sent: each one byte for byte as the
    // receiver got it, signature included, and the receiver got no other but those the HTTP layer
    // adds for any request (its host and the body's length).
    let recorded = a["requestHeaders"].as_object().unwrap();
    assert_eq!(d["eventType"], "CLICKWRAP_EVENT_VERIFIED", "{d}");
    for (name, value) in recorded {
        assert_eq!(
            req.header(&name.to_ascii_lowercase()),
            Some(value.as_str().unwrap()),
            "{name}"
        );
    }
    let mut sent: Vec<String> = recorded.keys().map(|k| k.to_ascii_lowercase()).collect();
    sent.extend(["content-length".to_string(), "host".to_string()]);
    sent.sort();
    assert_eq!(req.headers.keys().cloned().collect::<Vec<_>>(), sent);
    assert!(
        recorded.contains_key("X-Clickterm-Signature")
            && recorded.contains_key("X-Clickterm-Timestamp"),
        "{recorded:?}"
    );
    // The payload the receiver got is byte for byte the frozen one.
    assert_eq!(d["payload"].as_str().unwrap(), req.body);
    assert_eq!(
        req.header("x-clickterm-test"),
        None,
        "a real event is no test"
    );

    // A test webhook says so in a header (sent and recorded alike); its body has the real one's shape.
    let id = w.test_webhook(&app_id).await;
    let d = w.until_state(&id, &["succeeded", "failed"]).await;
    assert_eq!(d["state"], "succeeded", "{d}");
    let got = w.receiver.wait_for(2, DEADLINE).await;
    let test = &got[1];
    assert!(test.signature_valid, "{test:?}");
    assert_eq!(test.header("x-clickterm-test"), Some("true"), "{test:?}");
    assert_eq!(
        d["attemptList"][0]["requestHeaders"]["X-Clickterm-Test"], "true",
        "{d}"
    );
    let test_body = test.json();
    assert_eq!(common::keys(&test_body), common::keys(&body));
    assert_eq!(
        common::keys(&test_body["data"]),
        common::keys(&body["data"])
    );
    assert_eq!(test_body["eventType"], body["eventType"]);
    w.server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_200_counts_and_redirects_are_not_followed() {
    let w = world(5.0, |_| {}).await;
    let cases = [
        ("/status/201", "http_status"),
        ("/status/204", "http_status"),
        ("/status/301", "redirect_refused"),
        ("/redirect", "redirect_refused"),
        ("/status/400", "http_status"),
        ("/status/500", "http_status"),
    ];
    let mut started = Vec::new();
    for (path, outcome) in cases {
        let app_id = w.integration("receiver.test", path).await;
        w.use_receiver_secret(&app_id).await;
        started.push((path, outcome, w.test_webhook(&app_id).await));
    }
    for (path, outcome, id) in started {
        let d = w.until_state(&id, &["failed", "succeeded"]).await;
        assert_eq!(d["state"], "failed", "{path}: {d}");
        assert_eq!(d["attempts"], 4, "{path}: 1 attempt + 3 retries");
        let attempts = d["attemptList"].as_array().unwrap();
        assert_eq!(attempts.len(), 4, "{path}");
        assert!(
            attempts.iter().all(|a| a["outcome"] == outcome),
            "{path}: {d}"
        );
        let numbers: Vec<i64> = attempts
            .iter()
            .map(|a| a["number"].as_i64().unwrap())
            .collect();
        assert_eq!(numbers, [1, 2, 3, 4]);
        // Every attempt was signed afresh.
        assert!(
            attempts
                .iter()
                .all(|a| a["requestHeaders"]["X-Clickterm-Signature"].is_string())
        );
    }
    assert!(
        w.receiver.requests_to("/redirect-target").is_empty(),
        "a redirect was followed"
    );
    assert_eq!(w.receiver.requests_to("/redirect").len(), 4);

    // And 200 succeeds at the first attempt.
    let app_id = w.integration("receiver.test", "/ok").await;
    w.use_receiver_secret(&app_id).await;
    let id = w.test_webhook(&app_id).await;
    let d = w.until_state(&id, &["succeeded", "failed"]).await;
    assert_eq!(
        (d["state"].as_str(), d["attempts"].as_i64()),
        (Some("succeeded"), Some(1)),
        "{d}"
    );
    assert_eq!(d["isTest"], true);
    w.server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_endpoints_end_at_the_timeout_and_huge_bodies_are_cut() {
    let w = world(1.0, |c| c.webhooks.max_retries = 0).await;
    for path in ["/hang", "/trickle"] {
        let app_id = w.integration("receiver.test", path).await;
        w.use_receiver_secret(&app_id).await;
        let id = w.test_webhook(&app_id).await;
        let d = w.until_state(&id, &["failed", "succeeded"]).await;
        let a = &d["attemptList"][0];
        assert_eq!(a["outcome"], "timeout", "{path}: {d}");
        let ms = a["durationMs"].as_i64().unwrap();
        assert!(
            (900..3000).contains(&ms),
            "{path}: the attempt took {ms} ms with a 1 s timeout"
        );
    }
    // 50 MB answers, three at once: reading stops at the 4 KiB excerpt, long before the body (or the
    // timeout) ends, and the memory of the process (server and test alike) stays flat.
    let before = rss_kib();
    let app_id = w.integration("receiver.test", "/huge").await;
    w.use_receiver_secret(&app_id).await;
    let mut ids = Vec::new();
    for _ in 0..3 {
        ids.push(w.test_webhook(&app_id).await);
    }
    for id in &ids {
        let d = w.until_state(id, &["failed", "succeeded"]).await;
        let a = &d["attemptList"][0];
        assert_eq!(a["outcome"], "ok", "{d}");
        assert_eq!(a["responseBody"].as_str().unwrap().len(), 4096);
    }
    let grown = rss_kib().saturating_sub(before);
    assert!(
        grown < 20 * 1024,
        "memory grew by {grown} KiB while 150 MB were offered"
    );
    w.server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_are_judged_again_at_every_attempt() {
    let w = world(3.0, |c| c.webhooks.max_retries = 0).await;
    // Every name answers 127.0.0.1 when it is saved (the save-time check passes), then changes:
    // 127.0.0.2 is loopback but outside allow_private_cidrs = 127.0.0.1/32.
    let loopback: std::net::IpAddr = "127.0.0.1".parse().unwrap();
    let outside: std::net::IpAddr = "127.0.0.2".parse().unwrap();
    for name in [
        "other.receiver.test",
        "mixed.receiver.test",
        "rebind.receiver.test",
        "gone.test",
    ] {
        w.dns.set(name, &[loopback]);
    }
    let forbidden = w.integration("other.receiver.test", "/ok").await;
    let mixed = w.integration("mixed.receiver.test", "/ok").await;
    let rebind = w.integration("rebind.receiver.test", "/ok").await;
    let gone = w.integration("gone.test", "/ok").await;
    w.dns.set("other.receiver.test", &[outside]);
    w.dns.set("mixed.receiver.test", &[loopback, outside]);
    w.dns.set("rebind.receiver.test", &[outside]);
    w.dns.remove("gone.test");
    for app_id in [&forbidden, &mixed, &rebind] {
        w.use_receiver_secret(app_id).await;
        let id = w.test_webhook(app_id).await;
        let d = w.until_state(&id, &["failed", "succeeded"]).await;
        let a = &d["attemptList"][0];
        assert_eq!(a["outcome"], "blocked_address", "{d}");
        let detail = a["detail"].as_str().unwrap();
        assert!(detail.contains("127.0.0.2"), "{detail}");
        assert!(
            detail.contains("127.0.0.1/32"),
            "the message names the configured exceptions: {detail}"
        );
        assert_eq!(a["remoteAddr"], Value::Null, "nothing was connected to");
    }
    // A name the certificate does not cover: TLS verification against the URL's host name refuses it,
    // whichever address was dialled.
    w.dns.set("wrongname.test", &["127.0.0.1".parse().unwrap()]);
    let wrong = w.integration("wrongname.test", "/ok").await;
    let id = w.test_webhook(&wrong).await;
    let d = w.until_state(&id, &["failed"]).await;
    assert_eq!(d["attemptList"][0]["outcome"], "tls_error", "{d}");
    assert!(
        d["attemptList"][0]["detail"]
            .as_str()
            .unwrap()
            .contains("wrongname.test"),
        "{d}"
    );
    // A name that stopped resolving is a DNS error.
    let id = w.test_webhook(&gone).await;
    let d = w.until_state(&id, &["failed"]).await;
    assert_eq!(d["attemptList"][0]["outcome"], "dns_error", "{d}");
    // Nothing reached the receiver over HTTP (the TLS handshake above never completed).
    assert!(
        w.receiver.requests().is_empty(),
        "the receiver must not have been reached: {:?}",
        w.receiver.requests()
    );
    // With the name answering 127.0.0.1 again, the same integration is delivered to.
    w.dns
        .set("rebind.receiver.test", &["127.0.0.1".parse().unwrap()]);
    let id = w.test_webhook(&rebind).await;
    let d = w.until_state(&id, &["failed", "succeeded"]).await;
    assert_eq!(d["state"], "succeeded", "{d}");
    w.server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callback_urls_are_resolved_and_judged_when_saved() {
    let w = world(3.0, |_| {}).await;
    // Over the length limit is refused before anything else, with the sentence the CLI prints too.
    let res = w
        .admin
        .post(w.server.url("/api/v1/integrations"))
        .json(&json!({"name": "Long", "callbackUrl": w.receiver.url("receiver.test", &format!("/{}", "a".repeat(2048)))}))
        .send()
        .await
        .unwrap();
    let err = common::expect_error(res, StatusCode::BAD_REQUEST).await;
    assert_eq!(
        err["message"], "callbackUrl: must be at most 2048 characters",
        "{err}"
    );
    w.dns.set("bad.test", &["127.0.0.2".parse().unwrap()]);
    w.dns.set(
        "mixed.test",
        &["127.0.0.1".parse().unwrap(), "127.0.0.2".parse().unwrap()],
    );
    let app_id = w.integration("receiver.test", "/ok").await;
    let saved = w.receiver.url("receiver.test", "/ok");
    let cases = [
        ("bad.test", "blocked_address", "127.0.0.2"),
        ("mixed.test", "blocked_address", "127.0.0.2"),
        ("nowhere.test", "dns_error", "nowhere.test"),
    ];
    for (host, code, named) in cases {
        let url = w.receiver.url(host, "/ok");
        let res = w
            .admin
            .patch(w.server.url(&format!("/api/v1/integrations/{app_id}")))
            .json(&json!({"callbackUrl": url}))
            .send()
            .await
            .unwrap();
        let err = common::expect_error(res, StatusCode::BAD_REQUEST).await;
        assert_eq!(err["code"], "callback_url_refused", "{url}: {err}");
        let message = err["message"].as_str().unwrap();
        assert!(message.contains(named), "{url}: {message}");
        if code == "blocked_address" {
            assert!(message.contains("loopback"), "names the rule: {message}");
            assert!(
                message.contains("127.0.0.1/32"),
                "names the exceptions: {message}"
            );
        }
        // Creating an integration with it is refused the same way, and creates nothing.
        let res = w
            .admin
            .post(w.server.url("/api/v1/integrations"))
            .json(&json!({"name": "Refused", "callbackUrl": url}))
            .send()
            .await
            .unwrap();
        common::expect_error(res, StatusCode::BAD_REQUEST).await;
    }
    let current: Value = w
        .admin
        .get(w.server.url(&format!("/api/v1/integrations/{app_id}")))
        .json_ok()
        .await;
    assert_eq!(
        current["callbackUrl"],
        saved.as_str(),
        "a refused URL changed nothing"
    );
    let all = w
        .admin
        .get(w.server.url("/api/v1/integrations"))
        .json_ok()
        .await;
    assert_eq!(
        all.as_array().map(Vec::len),
        Some(1),
        "a refused create created nothing: {all}"
    );
    w.server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_holds_resume_releases_delete_cancels_and_redeliver_starts_a_manual_chain() {
    let w = world(5.0, |_| {}).await;
    let app_id = w.integration("receiver.test", "/ok").await;
    w.use_receiver_secret(&app_id).await;
    w.patch(&app_id, json!({"webhookDeliveryEnabled": false}))
        .await;
    let held = w.test_webhook(&app_id).await;
    assert_eq!(w.delivery(&held).await["state"], "held");
    w.server.dispatcher_quiet().await;
    assert!(w.receiver.requests().is_empty(), "a held delivery was sent");
    w.patch(&app_id, json!({"webhookDeliveryEnabled": true}))
        .await;
    let d = w.until_state(&held, &["succeeded"]).await;
    assert_eq!(d["attempts"], 1);
    assert_eq!(w.receiver.wait_for(1, DEADLINE).await.len(), 1);

    // Disabled integration: held too.
    w.patch(&app_id, json!({"status": "DISABLED"})).await;
    let second = w.test_webhook(&app_id).await;
    assert_eq!(w.delivery(&second).await["state"], "held");

    // Redeliver the succeeded one: a new chain, marked manual.
    w.patch(&app_id, json!({"status": "ENABLED"})).await;
    w.admin
        .post(
            w.server
                .url(&format!("/api/v1/deliveries/{held}/redeliver")),
        )
        .json_ok()
        .await;
    w.until_state(&held, &["succeeded"]).await;
    w.server.dispatcher_quiet().await;
    let d = w.delivery(&held).await;
    assert_eq!(d["trigger"], "manual", "{d}");
    assert_eq!(d["attemptList"][1]["trigger"], "manual", "{d}");
    w.until_state(&second, &["succeeded"]).await;

    // Delete: pending and held deliveries are cancelled, history stays readable.
    w.patch(&app_id, json!({"webhookDeliveryEnabled": false}))
        .await;
    let third = w.test_webhook(&app_id).await;
    w.admin
        .delete(w.server.url(&format!("/api/v1/integrations/{app_id}")))
        .json_with(StatusCode::NO_CONTENT)
        .await;
    assert_eq!(w.delivery(&third).await["state"], "cancelled");
    assert_eq!(w.delivery(&held).await["state"], "succeeded");
    w.server.stop().await;
}

/// A hold larger than one batch (1 200 deliveries; 500 per write job): switching delivery on answers
/// at once with the first batch released in its own transaction, the settling task releases the rest,
/// and each delivery arrives exactly once. Deleting an integration with 1 200 held cancels them the
/// same way, the first 500 at once. The delivery counts follow every step.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hold_larger_than_a_batch_is_released_and_cancelled_in_batches() {
    let w = world(5.0, |_| {}).await;
    let app_id = w.integration("receiver.test", "/ok").await;
    w.use_receiver_secret(&app_id).await;
    let (world, app) = (&w, app_id.as_str());
    let counts = move || async move {
        let c: Value = world
            .admin
            .get(
                world
                    .server
                    .url(&format!("/api/v1/integrations/{app}/delivery-counts")),
            )
            .json_ok()
            .await;
        c
    };
    let hold = move |n: usize| async move {
        world
            .patch(app, json!({"webhookDeliveryEnabled": false}))
            .await;
        futures_buffered((0..n).map(|_| world.test_webhook(app)), 16).await
    };
    let held = hold(1_200).await;
    assert_eq!(counts().await["held"], 1_200);

    w.patch(&app_id, json!({"webhookDeliveryEnabled": true}))
        .await;
    let right_after = counts().await;
    assert!(
        right_after["held"].as_i64().unwrap() <= 700,
        "the first batch is released with the change: {right_after}"
    );
    let arrived = w.receiver.wait_for(1_200, DEADLINE).await;
    let ids: std::collections::BTreeSet<String> = arrived
        .iter()
        .map(|r| {
            r.json()["data"]["clickwrapEventId"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(ids.len(), 1_200, "each delivery once");
    w.server.dispatcher_quiet().await;
    assert_eq!(w.receiver.requests().len(), 1_200, "and no more");
    for id in [&held[0], &held[1_199]] {
        w.until_state(id, &["succeeded"]).await;
    }

    let held = hold(1_200).await;
    w.admin
        .delete(w.server.url(&format!("/api/v1/integrations/{app_id}")))
        .json_with(StatusCode::NO_CONTENT)
        .await;
    let right_after = counts().await;
    assert!(
        right_after["cancelled"].as_i64().unwrap() >= 500,
        "the first batch is cancelled with the delete: {right_after}"
    );
    let deadline = Instant::now() + DEADLINE;
    loop {
        let c = counts().await;
        if c["cancelled"] == 1_200 {
            assert_eq!(
                (c["held"].as_i64(), c["pending"].as_i64()),
                (Some(0), Some(0)),
                "{c}"
            );
            assert_eq!(c["succeeded"], 1_200, "{c}");
            break;
        }
        assert!(Instant::now() < deadline, "{c}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(w.delivery(&held[1_199]).await["state"], "cancelled");
    assert_eq!(
        w.receiver.requests().len(),
        1_200,
        "nothing cancelled was sent"
    );
    w.server.stop().await;
}

/// Runs `calls` at most `width` at a time, concurrently on this task; their results in order.
async fn futures_buffered<F: std::future::Future>(
    calls: impl Iterator<Item = F>,
    width: usize,
) -> Vec<F::Output> {
    let mut calls = calls.peekable();
    let mut out = Vec::new();
    while calls.peek().is_some() {
        let mut chunk: Vec<_> = calls.by_ref().take(width).map(Box::pin).collect();
        let mut done: Vec<Option<F::Output>> = (0..chunk.len()).map(|_| None).collect();
        std::future::poll_fn(|cx| {
            let mut pending = false;
            for (f, slot) in chunk.iter_mut().zip(done.iter_mut()) {
                if slot.is_none() {
                    match f.as_mut().poll(cx) {
                        std::task::Poll::Ready(v) => *slot = Some(v),
                        std::task::Poll::Pending => pending = true,
                    }
                }
            }
            if pending {
                std::task::Poll::Pending
            } else {
                std::task::Poll::Ready(())
            }
        })
        .await;
        out.extend(done.into_iter().map(|v| v.expect("ready")));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_endpoint_does_not_delay_other_integrations() {
    let w = world(3.0, |c| {
        c.webhooks.max_retries = 0;
        c.webhooks.max_in_flight = 8;
        c.webhooks.max_in_flight_per_integration = 2;
    })
    .await;
    let slow = w.integration("receiver.test", "/hang").await;
    let fast = w.integration("receiver.test", "/ok").await;
    w.use_receiver_secret(&slow).await;
    w.use_receiver_secret(&fast).await;
    // Fill far more than the hanging integration's share of the queue first.
    for _ in 0..10 {
        w.test_webhook(&slow).await;
    }
    // Both of the hanging integration's slots are taken before the healthy deliveries are queued.
    w.receiver.wait_for(2, DEADLINE).await;
    let start = Instant::now();
    let mut ids = Vec::new();
    for _ in 0..5 {
        ids.push(w.test_webhook(&fast).await);
    }
    for id in &ids {
        w.until_state(id, &["succeeded"]).await;
    }
    let took = start.elapsed();
    assert!(
        took < Duration::from_millis(2500),
        "healthy deliveries waited {took:?} behind a callback that hangs for 3 s"
    );
    assert_eq!(w.receiver.requests_to("/ok").len(), 5);
    w.server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_url_explains_the_policy_without_sending_anything() {
    let dns = DnsServer::start().await;
    dns.set("good.test", &["127.0.0.1".parse().unwrap()]);
    dns.set("bad.test", &["127.0.0.2".parse().unwrap()]);
    dns.set(
        "mixed.test",
        &["127.0.0.1".parse().unwrap(), "127.0.0.2".parse().unwrap()],
    );
    let servers = format!("[\"{}\"]", dns.server_string());
    let env = [
        ("CLICKTERMD_WEBHOOKS__DNS_SERVERS", servers.as_str()),
        (
            "CLICKTERMD_WEBHOOKS__ALLOW_PRIVATE_CIDRS",
            "[\"127.0.0.1/32\"]",
        ),
    ];
    let cases: &[(&str, i32, &str)] = &[
        ("https://good.test:9443/hook", 0, "127.0.0.1/32"),
        ("https://bad.test/hook", 1, "127.0.0.2"),
        ("https://mixed.test/hook", 1, "127.0.0.2"),
        ("https://nowhere.test/hook", 1, "dns_error"),
        ("http://good.test/hook", 1, "scheme"),
        ("https://0x7f.2/", 1, "127.0.0.2"),
        ("https://[::ffff:10.0.0.5]/", 1, "private"), // a policy decision: check-url never connects
        ("https://localhost/", 1, "localhost"),
        ("https://127.0.0.1:8080/", 1, "self_address"),
        ("not a url", 1, "invalid_url"),
    ];
    for (url, code, needle) in cases {
        let out = common::clicktermd_async(&["check-url", url], &env).await;
        let text = common::stdout(&out);
        assert_eq!(
            out.status.code(),
            Some(*code),
            "{url}: {text} {}",
            common::stderr(&out)
        );
        assert!(
            text.contains(needle),
            "{url}: {text:?} should mention {needle:?}"
        );
    }
    // A configuration error is a usage error.
    let out = common::clicktermd_async(
        &["check-url", "https://good.test/"],
        &[("CLICKTERMD_WEBHOOKS__DNS_SERVERS", "[\"x\"]")],
    )
    .await;
    assert_eq!(out.status.code(), Some(2), "{}", common::stderr(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_deliveries_of_a_time_range_are_redelivered_in_bulk() {
    let w = world(5.0, |c| c.webhooks.max_retries = 0).await;
    let app_id = w.integration("receiver.test", "/status/500").await;
    w.use_receiver_secret(&app_id).await;
    let before = time::OffsetDateTime::now_utc() - Duration::from_secs(1);
    let ids = [w.test_webhook(&app_id).await, w.test_webhook(&app_id).await];
    for id in &ids {
        assert_eq!(
            w.until_state(id, &["failed"]).await["lastOutcome"],
            "http_status"
        );
    }
    let rfc = |t: time::OffsetDateTime| {
        t.format(&time::format_description::well_known::Rfc3339)
            .unwrap()
    };
    let bulk = |from: String, to: String| {
        w.admin
            .post(
                w.server
                    .url(&format!("/api/v1/integrations/{app_id}/redeliver")),
            )
            .json(&json!({"from": from, "to": to}))
            .send()
    };
    // A range before they were created touches nothing; a reversed range is refused by name.
    let res: Value = bulk(rfc(before - Duration::from_secs(60)), rfc(before))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(res["redelivered"], 0);
    let res = bulk(rfc(before), rfc(before - Duration::from_secs(60)))
        .await
        .unwrap();
    let err = common::expect_error(res, StatusCode::BAD_REQUEST).await;
    assert!(err["message"].as_str().unwrap().starts_with("to:"), "{err}");

    // The endpoint is fixed; both are redelivered as a manual chain and succeed.
    w.patch(
        &app_id,
        json!({"callbackUrl": w.receiver.url("receiver.test", "/ok")}),
    )
    .await;
    let now = time::OffsetDateTime::now_utc() + Duration::from_secs(1);
    let res: Value = bulk(rfc(before), rfc(now))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(res["redelivered"], 2);
    for id in &ids {
        let d = w.until_state(id, &["succeeded"]).await;
        assert_eq!(d["trigger"], "manual");
        let attempts = d["attemptList"].as_array().unwrap();
        assert_eq!(attempts.len(), 2, "{d}");
        assert_eq!(
            (
                attempts[0]["outcome"].as_str(),
                attempts[1]["outcome"].as_str()
            ),
            (Some("http_status"), Some("ok"))
        );
    }
    w.server.stop().await;
}

/// This process's resident memory (the server runs in it), from /proc.
fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/self/status")
}

/// The value of the sample `name` (with its labels, as written) in a metrics text.
fn sample(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

/// What `/metrics` says now.
async fn metrics_text(server: &TestServer) -> String {
    common::client()
        .get(server.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_report_attempts_the_queue_its_lag_and_verify_requests() {
    let w = world(2.0, |c| {
        c.webhooks.max_retries = 0;
        c.webhooks.max_in_flight_per_integration = 1;
    })
    .await;
    let ok = w.integration("receiver.test", "/ok").await;
    let failing = w.integration("receiver.test", "/status/500").await;
    let paused = w.integration("receiver.test", "/ok").await;
    let hanging = w.integration("receiver.test", "/hang").await;
    for app_id in [&ok, &failing, &paused, &hanging] {
        w.use_receiver_secret(app_id).await;
    }
    let id = w.test_webhook(&ok).await;
    w.until_state(&id, &["succeeded"]).await;
    let id = w.test_webhook(&failing).await;
    w.until_state(&id, &["failed"]).await;
    w.patch(&paused, json!({"webhookDeliveryEnabled": false}))
        .await;
    w.test_webhook(&paused).await;
    // One slot for the hanging integration: its first delivery hangs, the second waits, due.
    let first = w.test_webhook(&hanging).await;
    w.until_state(&first, &["in_flight"]).await;
    w.test_webhook(&hanging).await;
    // A verify with no credentials is counted too, with the status it got.
    common::client()
        .post(w.server.url("/public-client/v1/clickwrap/verify"))
        .json(&json!({"clicktermSignature": "x"}))
        .json_with(StatusCode::UNAUTHORIZED)
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;

    let res = common::client()
        .get(w.server.url("/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let content_type = res.headers()["content-type"].to_str().unwrap().to_string();
    assert!(
        content_type.starts_with("application/openmetrics-text"),
        "{content_type}"
    );
    let text = res.text().await.unwrap();
    let expect = [
        ("clicktermd_webhook_attempts_total{outcome=\"ok\"}", 1.0),
        (
            "clicktermd_webhook_attempts_total{outcome=\"http_status\"}",
            1.0,
        ),
        (
            "clicktermd_webhook_deliveries_finished_total{state=\"succeeded\"}",
            1.0,
        ),
        (
            "clicktermd_webhook_deliveries_finished_total{state=\"failed\"}",
            1.0,
        ),
        ("clicktermd_webhook_attempt_duration_seconds_count", 2.0),
        ("clicktermd_webhook_queue_depth{state=\"held\"}", 1.0),
        ("clicktermd_webhook_queue_depth{state=\"in_flight\"}", 1.0),
        ("clicktermd_webhook_queue_depth{state=\"pending\"}", 1.0),
        ("clicktermd_verify_requests_total{status=\"401\"}", 1.0),
    ];
    for (name, want) in expect {
        assert_eq!(sample(&text, name), Some(want), "{name} in\n{text}");
    }
    let lag = sample(&text, "clicktermd_webhook_oldest_due_age_seconds").unwrap();
    assert!(
        lag >= 0.2,
        "the waiting delivery has been due a while: {lag}\n{text}"
    );
    let beat = sample(&text, "clicktermd_dispatcher_heartbeat_age_seconds").unwrap();
    assert!(
        (0.0..61.0).contains(&beat),
        "the dispatcher is alive: {beat}"
    );
    if !crate::POSTGRES {
        // The database writer's totals: every write so far went through it, in batches, each made durable
        // by a sync of the log before it was answered.
        let figure =
            |name: &str| sample(&text, name).unwrap_or_else(|| panic!("{name} in\n{text}"));
        let (batches, jobs) = (
            figure("clicktermd_db_write_batches_total"),
            figure("clicktermd_db_write_jobs_total"),
        );
        assert!(
            batches >= 5.0 && jobs >= batches,
            "{batches} batches, {jobs} jobs"
        );
        let syncs = figure("clicktermd_db_log_syncs_total");
        assert!(
            (1.0..=batches).contains(&syncs),
            "{syncs} syncs for {batches} batches"
        );
        assert!(figure("clicktermd_db_writer_busy_seconds_total") > 0.0);
        assert!(figure("clicktermd_db_log_sync_seconds_total") > 0.0);
    } else {
        // A PostgreSQL node has no writer of its own (PostgreSQL orders the nodes' transactions); its
        // queue figures are the database's, so they are the cluster's: a delivery another node
        // queued (a row written straight into the database, held) is in this node's figures.
        let db = Db::open(&w.server.config, &w.server.data_dir).await;
        db.batch(&format!(
            "INSERT INTO deliveries (delivery_id, integration_id, is_test, payload, state, \
             next_attempt_at, created_at, updated_at) \
             SELECT 'from-another-node', id, true, '\\x7b7d'::bytea, 'held', 0, 0, 0 \
             FROM integrations WHERE app_id = '{paused}'"
        ))
        .await;
        let text = metrics_text(&w.server).await;
        assert_eq!(
            sample(&text, "clicktermd_webhook_queue_depth{state=\"held\"}"),
            Some(2.0),
            "{text}"
        );
    }
    // When the hanging attempt times out, its outcome is counted.
    w.until_state(&first, &["failed"]).await;
    let text = metrics_text(&w.server).await;
    assert_eq!(
        sample(
            &text,
            "clicktermd_webhook_attempts_total{outcome=\"timeout\"}"
        ),
        Some(1.0),
        "{text}"
    );
    w.server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_attempts_of_finished_deliveries_are_pruned_in_batches() {
    let server = TestServer::start_with(|c| {
        c.webhooks.max_retries = 0;
        c.webhooks.attempt_retention_days = 30;
    })
    .await;
    let admin = server.admin_client().await;
    let set = |app_id: String, body: Value| {
        let (admin, url) = (
            admin.clone(),
            server.url(&format!("/api/v1/integrations/{app_id}")),
        );
        async move {
            admin.patch(url).json(&body).json_ok().await;
        }
    };
    let (done_app, _, _) = server.create_integration(&admin, "Finished").await;
    set(done_app.clone(), json!({"callbackUrl": common::HOOKS_URL})).await;
    let (held_app, _, _) = server.create_integration(&admin, "Held").await;
    set(
        held_app.clone(),
        json!({"callbackUrl": common::HOOKS_URL, "webhookDeliveryEnabled": false}),
    )
    .await;
    let mut ids = Vec::new();
    for app_id in [&done_app, &held_app] {
        let res = admin
            .post(server.url(&format!("/api/v1/integrations/{app_id}/test-webhook")))
            .send()
            .await
            .unwrap();
        let v: Value = res.json().await.unwrap();
        ids.push(v["id"].as_str().unwrap().to_string());
    }
    // The harness's sink refuses connections: one attempt, then failed.
    let start = Instant::now();
    let failed = loop {
        let d: Value = admin
            .get(server.url(&format!("/api/v1/deliveries/{}", ids[0])))
            .json_ok()
            .await;
        if d["state"] == "failed" {
            break d;
        }
        assert!(start.elapsed() < DEADLINE, "{d}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    };
    assert_eq!(failed["attemptList"].as_array().unwrap().len(), 1);

    // History from long ago, written straight into the database: 1 234 attempts 40 days old for the
    // failed delivery (more than two batches), 7 for the held one, and 5 from yesterday.
    let db = Db::open(&server.config, &server.data_dir).await;
    let row = |id: &str| {
        let db = &db;
        let id = id.to_string();
        async move {
            db.int("SELECT id FROM deliveries WHERE delivery_id = $1", &[&id])
                .await
                .unwrap()
        }
    };
    let (done_row, held_row) = (row(&ids[0]).await, row(&ids[1]).await);
    let day = 86_400_000i64;
    let now = common::receiver::unix_now() as i64 * 1000;
    let insert = |delivery: i64, n: i64, at: i64| {
        let db = &db;
        async move {
            db.batch(&format!(
                "WITH RECURSIVE k(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM k WHERE i < {n}) \
                 INSERT INTO attempts (delivery_id, number, trigger, started_at, duration_ms, url, \
                 request_headers, outcome) \
                 SELECT {delivery}, 1, 'automatic', {at} + i, 5, 'https://hooks.test/ct', '{{}}', \
                 'connect_error' FROM k"
            ))
            .await;
        }
    };
    insert(done_row, 1234, now - 40 * day).await;
    insert(held_row, 7, now - 40 * day).await;
    insert(done_row, 5, now - day).await;
    let count = |sql: String| {
        let db = &db;
        async move { db.int(&sql, &[]).await.unwrap() }
    };
    assert_eq!(
        count("SELECT count(*) FROM attempts".into()).await,
        1234 + 7 + 5 + 1
    );

    // Pruning runs at start (and hourly).
    let server = server.stop().await.restart().await;
    let old = format!(
        "SELECT count(*) FROM attempts WHERE delivery_id = {done_row} AND started_at < {}",
        now - 30 * day
    );
    let start = Instant::now();
    loop {
        let left = count(old.clone()).await;
        if left == 0 {
            break;
        }
        assert!(start.elapsed() < DEADLINE, "{left} old attempts left");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(
        count(format!(
            "SELECT count(*) FROM attempts WHERE delivery_id = {done_row}"
        ))
        .await,
        6,
        "yesterday's attempts and the real one stay"
    );
    assert_eq!(
        count(format!(
            "SELECT count(*) FROM attempts WHERE delivery_id = {held_row}"
        ))
        .await,
        7,
        "a delivery that is not finished keeps its history"
    );
    assert_eq!(
        count("SELECT count(*) FROM deliveries".into()).await,
        2,
        "deliveries stay"
    );
    let admin = server.admin_client().await;
    let d: Value = admin
        .get(server.url(&format!("/api/v1/deliveries/{}", ids[0])))
        .json_ok()
        .await;
    assert_eq!(d["state"], "failed");
    assert_eq!(d["attemptList"].as_array().unwrap().len(), 6, "{d}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliveries_to_one_address_reuse_the_connection() {
    let w = world(5.0, |_| {}).await;
    let app_id = w.integration("receiver.test", "/ok").await;
    w.use_receiver_secret(&app_id).await;
    for _ in 0..5 {
        let id = w.test_webhook(&app_id).await;
        w.until_state(&id, &["succeeded"]).await;
    }
    let requests = w.receiver.requests();
    assert_eq!(requests.len(), 5);
    let remotes: std::collections::BTreeSet<&str> =
        requests.iter().map(|r| r.remote.as_str()).collect();
    assert_eq!(
        remotes.len(),
        1,
        "five deliveries, one after the other, over one kept-alive connection: {remotes:?}"
    );
    assert!(requests.iter().all(|r| r.signature_valid));
    w.server.stop().await;
}

/// An HTTP/2 receiver, a server that trusts it and may deliver to 127.0.0.1, and an integration whose
/// callback is the receiver's `path` (with `settings` patched in as well): receiver, server, admin
/// client, App ID.
async fn h2_world(
    path: &str,
    settings: Value,
) -> (
    common::h2receiver::H2Receiver,
    TestServer,
    reqwest::Client,
    String,
) {
    let receiver = common::h2receiver::H2Receiver::start().await;
    let ca = receiver.ca_file.clone();
    let server = TestServer::start_with(|c| {
        c.webhooks.extra_ca_file = Some(ca);
        c.webhooks.allow_private_cidrs = vec!["127.0.0.1/32".parse().unwrap()];
    })
    .await;
    let admin = server.admin_client().await;
    let (app_id, _, _) = server.create_integration(&admin, "H2").await;
    let mut body = json!({"callbackUrl": receiver.url(path)});
    body.as_object_mut()
        .unwrap()
        .extend(settings.as_object().unwrap().clone());
    admin
        .patch(server.url(&format!("/api/v1/integrations/{app_id}")))
        .json(&body)
        .json_ok()
        .await;
    (receiver, server, admin, app_id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_offering_http2_gets_one_multiplexed_connection() {
    let (receiver, server, admin, app_id) = h2_world("/h2", json!({})).await;
    // One delivery opens the connection; ten more while it is pooled all travel on it.
    for (batch, total) in [(1, 1), (10, 11)] {
        for _ in 0..batch {
            admin
                .post(server.url(&format!("/api/v1/integrations/{app_id}/test-webhook")))
                .json_with(StatusCode::ACCEPTED)
                .await;
        }
        let start = Instant::now();
        while receiver.seen().len() < total {
            assert!(start.elapsed() < DEADLINE, "{:?}", receiver.seen());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let seen = receiver.seen();
    assert_eq!(seen.len(), 11, "{seen:?}");
    assert!(
        seen.iter().all(|s| s.version == http::Version::HTTP_2),
        "{seen:?}"
    );
    let connections: std::collections::BTreeSet<usize> =
        seen.iter().map(|s| s.connection).collect();
    assert_eq!(connections.len(), 1, "{seen:?}");
    server.stop().await;
}

/// A burst of deliveries to a receiver nothing is connected to yet — sixteen released at once, as
/// many as the integration may send at a time — opens one TLS connection when the receiver speaks
/// HTTP/2, not one per delivery.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_to_a_new_http2_receiver_opens_one_connection() {
    let (receiver, server, admin, app_id) =
        h2_world("/burst", json!({"webhookDeliveryEnabled": false})).await;
    let integration = server.url(&format!("/api/v1/integrations/{app_id}"));
    let burst = server.config.webhooks.max_in_flight_per_integration;
    assert!(burst >= 8, "the default allows a real burst: {burst}");
    for _ in 0..burst {
        admin
            .post(server.url(&format!("/api/v1/integrations/{app_id}/test-webhook")))
            .json_with(StatusCode::ACCEPTED)
            .await;
    }
    assert_eq!(receiver.accepted(), 0);
    admin
        .patch(&integration)
        .json(&json!({"webhookDeliveryEnabled": true}))
        .json_ok()
        .await;
    let start = Instant::now();
    while receiver.seen().len() < burst {
        assert!(start.elapsed() < DEADLINE, "{:?}", receiver.seen());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let seen = receiver.seen();
    assert!(
        seen.iter()
            .all(|s| s.version == http::Version::HTTP_2 && s.connection == 1),
        "{seen:?}"
    );
    assert_eq!(receiver.accepted(), 1, "connections accepted");
    server.stop().await;
}

/// Issue #14: a receiver with the usual `openssl req -x509` certificate (self-signed, `CA:TRUE`) is
/// trusted when that certificate is in `webhooks.extra_ca_file` (pinned), refused with a sentence
/// saying so when it is not, and a change to the file applies at the next connection, no restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_self_signed_ca_certificate_in_extra_ca_file_is_pinned_and_the_file_is_read_again() {
    use crate::common::receiver::ReceiverCa;
    let localhost = "127.0.0.1".parse().unwrap();
    let listed =
        Receiver::start_prepared(ReceiverCa::self_signed(), localhost, RECEIVER_SECRET).await;
    let unlisted =
        Receiver::start_prepared(ReceiverCa::self_signed(), localhost, RECEIVER_SECRET).await;
    let dir = tempfile::tempdir().unwrap();
    let trusted = dir.path().join("trusted.pem");
    std::fs::write(&trusted, &listed.ca_pem).unwrap();
    let ca_file = trusted.clone();
    let server = TestServer::start_with(|c| {
        c.webhooks.extra_ca_file = Some(ca_file);
        c.webhooks.allow_private_cidrs = vec!["127.0.0.1/32".parse().unwrap()];
        c.webhooks.max_retries = 0;
    })
    .await;
    let admin = server.admin_client().await;
    let w = World {
        server,
        admin,
        receiver: listed,
        dns: DnsServer::start().await,
    };
    let integration = |url: String| {
        let w = &w;
        async move {
            let (app_id, _, _) = w.server.create_integration(&w.admin, "Self-signed").await;
            w.patch(&app_id, json!({"callbackUrl": url})).await;
            w.use_receiver_secret(&app_id).await;
            app_id
        }
    };

    // Listed: delivered, and the receiver's own check of the signature passes.
    let good = integration(w.receiver.url("127.0.0.1", "/ok")).await;
    let d = w
        .until_state(&w.test_webhook(&good).await, &["succeeded", "failed"])
        .await;
    assert_eq!(d["state"], "succeeded", "{d}");
    assert!(w.receiver.wait_for(1, DEADLINE).await[0].signature_valid);

    // Not listed: a TLS error that says what is wrong and what to do, not rustls's variant name.
    let other = integration(unlisted.url("127.0.0.1", "/ok")).await;
    let d = w
        .until_state(&w.test_webhook(&other).await, &["succeeded", "failed"])
        .await;
    let a = &d["attemptList"][0];
    assert_eq!(a["outcome"], "tls_error", "{d}");
    let detail = a["detail"].as_str().unwrap();
    for needle in ["CA:TRUE", "webhooks.extra_ca_file", "pinned"] {
        assert!(detail.contains(needle), "{needle:?} in {detail}");
    }
    assert!(!detail.contains("CaUsedAsEndEntity"), "{detail}");
    assert!(unlisted.requests().is_empty());

    // The operator adds the second certificate to the file (a new file moved into place, as editors
    // and config management do): the next attempt trusts it, with the server still running.
    let next = dir.path().join("trusted.pem.new");
    std::fs::write(&next, format!("{}{}", w.receiver.ca_pem, unlisted.ca_pem)).unwrap();
    std::fs::rename(&next, &trusted).unwrap();
    let d = w
        .until_state(&w.test_webhook(&other).await, &["succeeded", "failed"])
        .await;
    assert_eq!(d["state"], "succeeded", "{d}");
    let got = unlisted.wait_for(1, DEADLINE).await;
    assert!(got[0].signature_valid, "{:?}", got[0]);
    w.server.stop().await;
}

/// A receiver that demands a client certificate is refused with a sentence that says so, although
/// in TLS 1.3 its refusal comes after the client has finished its part of the handshake; one that
/// only asks for one still gets its webhooks (over HTTP/2, whose first frame the check must keep).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_demanding_a_client_certificate_is_explained() {
    use crate::common::h2receiver::H2Receiver;
    let receiver = H2Receiver::asking_for_client_certificates(false).await;
    let optional = H2Receiver::asking_for_client_certificates(true).await;
    let ca = receiver.ca_file.clone();
    let optional_ca = std::fs::read_to_string(&optional.ca_file).unwrap();
    let both = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        both.path(),
        std::fs::read_to_string(&ca).unwrap() + &optional_ca,
    )
    .unwrap();
    let ca = both.path().to_path_buf();
    let server = TestServer::start_with(|c| {
        c.webhooks.extra_ca_file = Some(ca);
        c.webhooks.allow_private_cidrs = vec!["127.0.0.1/32".parse().unwrap()];
        c.webhooks.max_retries = 0;
    })
    .await;
    let admin = server.admin_client().await;
    let w = World {
        server,
        admin,
        receiver: Receiver::start(RECEIVER_SECRET).await,
        dns: DnsServer::start().await,
    };
    let (app_id, _, _) = w.server.create_integration(&w.admin, "mTLS").await;
    w.patch(&app_id, json!({"callbackUrl": receiver.url("/hook")}))
        .await;
    let d = w
        .until_state(&w.test_webhook(&app_id).await, &["succeeded", "failed"])
        .await;
    let a = &d["attemptList"][0];
    assert_eq!(a["outcome"], "tls_error", "{d}");
    let detail = a["detail"].as_str().unwrap();
    assert!(detail.contains("client certificate"), "{detail}");
    assert!(receiver.seen().is_empty());

    let (app_id, _, _) = w.server.create_integration(&w.admin, "optional mTLS").await;
    w.patch(&app_id, json!({"callbackUrl": optional.url("/hook")}))
        .await;
    let d = w
        .until_state(&w.test_webhook(&app_id).await, &["succeeded", "failed"])
        .await;
    assert_eq!(d["state"], "succeeded", "{d}");
    let seen = optional.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].version, http::Version::HTTP_2);
    w.server.stop().await;
}
