//! The clickwrap flow end to end (SPEC §3): the SDK endpoints a browser calls with only the App ID
//! (present, act, CORS), verify and its webhook delivery row, consent status, the event list and its
//! cursor, details and re-acceptance. The real server runs on a real loopback port; templates are set up
//! through the admin API; the live database (either store's, `common::peek`) is opened read-side (or to
//! install a failing trigger) where the API alone cannot show that nothing was written.

use crate::common;
use crate::common::Call;

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::common::{DEADLINE, TestServer, expect_error, keys};
use reqwest::{Method, StatusCode, header};
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// The User-Agent every SDK request sends; it must come back in `technicalMetadata`.
const UA: &str = "clickwrap-e2e/1.0 (integration test)";

/// The fields of a verify response, and of the webhook's `data` (SPEC §3, §5.2).
const EVENT_FIELDS: [&str; 10] = [
    "clickwrapEventStatus",
    "clickwrapEventId",
    "clickwrapTemplateId",
    "clickwrapTemplateVersion",
    "clickwrapTemplateVersionMinor",
    "endUserId",
    "templatePlaceholders",
    "technicalMetadata",
    "actionAt",
    "effectiveAt",
];

/// Query parameters.
type Query<'a> = Vec<(&'a str, &'a str)>;

/// An integration's public-API credentials.
#[derive(Clone)]
struct App {
    id: String,
    key: String,
}

/// An SDK action's answer.
struct Acted {
    signature: String,
    event_id: String,
}

/// HTTP helpers against one server; cheap to clone into a concurrent task.
#[derive(Clone)]
struct Api {
    base: String,
    admin: reqwest::Client,
    data_dir: PathBuf,
    /// The server's configuration (which store it runs on).
    config: clicktermd::config::Config,
}

/// A running server with an admin session.
struct Ctx {
    server: TestServer,
    api: Api,
}

impl std::ops::Deref for Ctx {
    type Target = Api;
    fn deref(&self) -> &Api {
        &self.api
    }
}

impl Ctx {
    async fn start() -> Ctx {
        Ctx::with(TestServer::start().await).await
    }

    async fn with(server: TestServer) -> Ctx {
        let admin = server.admin_client().await;
        let api = Api {
            base: server.base.clone(),
            admin,
            data_dir: server.data_dir.clone(),
            config: server.config.clone(),
        };
        Ctx { server, api }
    }

    async fn stop(self) {
        self.server.stop().await;
    }
}

/// Asserts the status and returns the JSON body.
async fn body(res: reqwest::Response, status: StatusCode) -> Value {
    let got = res.status();
    let text = res.text().await.expect("response body");
    assert_eq!(got, status, "body: {text}");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text:?}"))
}

/// Asserts an error with `status` whose message names `field` (`field: reason`).
async fn expect_field_error(res: reqwest::Response, status: StatusCode, field: &str) -> Value {
    let err = expect_error(res, status).await;
    let message = err["message"].as_str().unwrap();
    assert!(
        message.starts_with(&format!("{field}:")),
        "expected an error naming {field}, got {err}"
    );
    err
}

/// Unix milliseconds of an ISO-8601 time that ends in `Z`.
fn ms(v: &Value) -> i64 {
    let s = v.as_str().unwrap_or_else(|| panic!("not a time: {v}"));
    assert!(s.ends_with('Z'), "not in UTC with Z: {s}");
    let t = OffsetDateTime::parse(s, &Rfc3339).unwrap_or_else(|e| panic!("{s}: {e}"));
    (t.unix_timestamp_nanos() / 1_000_000) as i64
}

fn now_ms() -> i64 {
    (OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64
}

fn iso(ms: i64) -> String {
    OffsetDateTime::from_unix_timestamp_nanos(ms as i128 * 1_000_000)
        .unwrap()
        .format(&Rfc3339)
        .unwrap()
}

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn is_uuid(v: &Value) -> bool {
    v.as_str().is_some_and(|s| uuid::Uuid::parse_str(s).is_ok())
}

/// A template with two placeholders, visible to every integration that has no linked templates.
fn terms(name: &str) -> Value {
    json!({
        "name": name,
        "tags": ["legal"],
        "defaultLanguage": "en",
        "languages": {"en": {
            "title": "Terms for {{fullName}}",
            "content": "Hello {{fullName}} of {{company}}",
            "inlineContent": "I accept the terms",
        }},
    })
}

/// The ids of a list of events.
fn ids(items: &[Value]) -> HashSet<String> {
    items
        .iter()
        .map(|i| i["clickwrapEventId"].as_str().unwrap().to_string())
        .collect()
}

fn set(ids: &[&str]) -> HashSet<String> {
    ids.iter().map(|s| s.to_string()).collect()
}

impl Api {
    fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    async fn app(&self, name: &str) -> App {
        let (id, key, _) = common::create_integration(&self.admin, &self.base, name).await;
        App { id, key }
    }

    async fn patch_app(&self, app: &App, patch: Value) {
        let res = self
            .admin
            .patch(self.url(&format!("/api/v1/integrations/{}", app.id)))
            .json(&patch)
            .send()
            .await
            .unwrap();
        body(res, StatusCode::OK).await;
    }

    /// Creates a template (not published); returns its id.
    async fn template(&self, spec: Value) -> String {
        let res = self
            .admin
            .post(self.url("/api/v1/templates"))
            .json(&spec)
            .send()
            .await
            .unwrap();
        body(res, StatusCode::CREATED).await["id"]
            .as_str()
            .unwrap()
            .to_string()
    }

    async fn publish(&self, tid: &str, spec: Value) -> Value {
        let res = self
            .admin
            .post(self.url(&format!("/api/v1/templates/{tid}/versions")))
            .json(&spec)
            .send()
            .await
            .unwrap();
        body(res, StatusCode::CREATED).await
    }

    /// `terms(name)` created and published as 1.0, effective now.
    async fn published(&self, name: &str) -> String {
        let tid = self.template(terms(name)).await;
        self.publish(&tid, json!({"type": "MAJOR"})).await;
        tid
    }

    async fn patch_template(&self, tid: &str, patch: Value) {
        let res = self
            .admin
            .patch(self.url(&format!("/api/v1/templates/{tid}")))
            .json(&patch)
            .send()
            .await
            .unwrap();
        body(res, StatusCode::OK).await;
    }

    fn sdk_url(&self, params: &[(&str, &str)]) -> String {
        url::Url::parse_with_params(&self.url("/public-client/v1/clickwrap"), params)
            .unwrap()
            .to_string()
    }

    /// SDK `GET /clickwrap` with these query parameters (no Origin: not a browser).
    async fn sdk_get(&self, params: &[(&str, &str)]) -> reqwest::Response {
        common::client()
            .get(self.sdk_url(params))
            .header(header::USER_AGENT, UA)
            .send()
            .await
            .unwrap()
    }

    /// Presents a template to an end user; asserts 200.
    async fn present(&self, app: &App, tid: &str, user: &str) -> Value {
        let res = self
            .sdk_get(&[
                ("appId", &app.id),
                ("clickwrapTemplateId", tid),
                ("endUserId", user),
            ])
            .await;
        body(res, StatusCode::OK).await
    }

    /// SDK `POST /clickwrap` with this body.
    async fn sdk_post(&self, b: &Value) -> reqwest::Response {
        common::client()
            .post(self.url("/public-client/v1/clickwrap"))
            .header(header::USER_AGENT, UA)
            .json(b)
            .send()
            .await
            .unwrap()
    }

    /// Records an action; asserts 201 and the answer's shape.
    async fn act_with(&self, b: &Value) -> Acted {
        let res = body(self.sdk_post(b).await, StatusCode::CREATED).await;
        assert_eq!(
            keys(&res),
            ["clicktermSignature", "clickwrapEventId"],
            "{res}"
        );
        assert!(is_uuid(&res["clickwrapEventId"]), "{res}");
        Acted {
            signature: res["clicktermSignature"].as_str().unwrap().to_string(),
            event_id: res["clickwrapEventId"].as_str().unwrap().to_string(),
        }
    }

    async fn act(&self, app: &App, tid: &str, user: &str, action: &str) -> Acted {
        self.act_with(&json!({
            "appId": app.id, "clickwrapTemplateId": tid, "endUserId": user, "action": action,
        }))
        .await
    }

    async fn verify_raw(&self, app: &App, b: &Value) -> reqwest::Response {
        common::client()
            .post(self.url("/public-client/v1/clickwrap/verify"))
            .header("X-APP-ID", &app.id)
            .header("X-APP-KEY", &app.key)
            .json(b)
            .send()
            .await
            .unwrap()
    }

    async fn verify(&self, app: &App, signature: &str) -> reqwest::Response {
        self.verify_raw(app, &json!({"clicktermSignature": signature}))
            .await
    }

    async fn verify_ok(&self, app: &App, signature: &str) -> Value {
        body(self.verify(app, signature).await, StatusCode::OK).await
    }

    /// Acts ACCEPTED and verifies; returns the verify response.
    async fn accept(&self, app: &App, tid: &str, user: &str) -> Value {
        let a = self.act(app, tid, user, "ACCEPTED").await;
        let v = self.verify_ok(app, &a.signature).await;
        assert_eq!(v["clickwrapEventId"], a.event_id.as_str());
        v
    }

    /// A public-API GET as the integration.
    async fn get(&self, app: &App, path: &str) -> reqwest::Response {
        common::client()
            .get(self.url(path))
            .header("X-APP-ID", &app.id)
            .header("X-APP-KEY", &app.key)
            .send()
            .await
            .unwrap()
    }

    async fn status(&self, app: &App, user: &str) -> Vec<Value> {
        let res = self
            .get(app, &format!("/public-client/v1/clickwraps/{user}/status"))
            .await;
        let v = body(res, StatusCode::OK).await;
        v.as_array()
            .unwrap_or_else(|| panic!("status is not an array: {v}"))
            .clone()
    }

    /// The end user's status entry for one template.
    async fn status_of(&self, app: &App, user: &str, tid: &str) -> Value {
        let all = self.status(app, user).await;
        all.iter()
            .find(|s| s["clickwrapTemplateId"] == tid)
            .unwrap_or_else(|| panic!("no status for {tid} in {all:?}"))
            .clone()
    }

    async fn events(&self, app: &App, params: &[(&str, &str)]) -> reqwest::Response {
        let url =
            url::Url::parse_with_params(&self.url("/public-client/v1/clickwrap-events"), params)
                .unwrap();
        common::client()
            .get(url.as_str())
            .header("X-APP-ID", &app.id)
            .header("X-APP-KEY", &app.key)
            .send()
            .await
            .unwrap()
    }

    /// One page of events; asserts 200 and the envelope.
    async fn events_ok(&self, app: &App, params: &[(&str, &str)]) -> Vec<Value> {
        let page = body(self.events(app, params).await, StatusCode::OK).await;
        assert_eq!(keys(&page), ["items", "nextPageCursor"], "{page}");
        page["items"].as_array().unwrap().clone()
    }

    async fn reaccept(&self, app: &App, b: &Value) -> reqwest::Response {
        common::client()
            .post(self.url("/public-client/v1/clickwraps/re-accept"))
            .header("X-APP-ID", &app.id)
            .header("X-APP-KEY", &app.key)
            .json(b)
            .send()
            .await
            .unwrap()
    }

    /// The live database, opened beside the running server (SQLite: its file, in WAL mode).
    async fn db(&self) -> common::peek::Db {
        common::peek::Db::open(&self.config, &self.data_dir).await
    }

    /// `(state, payload, is_test)` of every delivery row of an event.
    async fn deliveries(&self, event_id: &str) -> Vec<(String, Vec<u8>, i64)> {
        self.db()
            .await
            .rows(
                "SELECT d.state, d.payload, d.is_test FROM deliveries d JOIN events e ON e.id = d.event_id \
                 WHERE e.event_id = $1 ORDER BY d.id",
                &[event_id],
            )
            .await
            .into_iter()
            .map(|r| (r[0].text(), r[1].bytes(), r[2].int().unwrap()))
            .collect()
    }

    async fn verified_at(&self, event_id: &str) -> Option<i64> {
        self.db()
            .await
            .int(
                "SELECT verified_at FROM events WHERE event_id = $1",
                &[event_id],
            )
            .await
    }

    async fn count(&self, sql: &str, param: &str) -> i64 {
        self.db().await.int(sql, &[param]).await.unwrap()
    }
}

/// Asserts a verify response or list item has exactly ClickTerm's fields with their JSON types.
fn assert_event_shape(v: &Value, listed: bool) {
    let mut expected: Vec<&str> = EVENT_FIELDS.to_vec();
    if listed {
        expected.push("presentedAt");
    }
    expected.sort_unstable();
    assert_eq!(keys(v), expected, "{v}");
    for (field, types) in [
        ("clickwrapEventStatus", &["string"][..]),
        ("clickwrapEventId", &["string"]),
        ("clickwrapTemplateId", &["string"]),
        ("clickwrapTemplateVersion", &["integer"]),
        ("clickwrapTemplateVersionMinor", &["integer"]),
        ("endUserId", &["string"]),
        ("templatePlaceholders", &["string", "null"]),
        ("technicalMetadata", &["string"]),
        ("actionAt", &["string"]),
        ("effectiveAt", &["string"]),
    ] {
        assert!(
            types.contains(&json_type(&v[field])),
            "{field} is {} in {v}",
            json_type(&v[field])
        );
    }
    assert!(is_uuid(&v["clickwrapEventId"]), "{v}");
    assert!(is_uuid(&v["clickwrapTemplateId"]), "{v}");
    assert!(
        ["ACCEPTED", "DECLINED"].contains(&v["clickwrapEventStatus"].as_str().unwrap()),
        "{v}"
    );
    ms(&v["actionAt"]);
    ms(&v["effectiveAt"]);
    if listed {
        assert!(
            matches!(json_type(&v["presentedAt"]), "string" | "null"),
            "{v}"
        );
        if !v["presentedAt"].is_null() {
            ms(&v["presentedAt"]);
        }
    }
}

#[tokio::test]
async fn the_whole_flow_from_presentation_to_verified_acceptance() {
    let ctx = Ctx::start().await;
    let app = ctx.app("Web").await;
    let tid = ctx.published("Terms of Service").await;

    // Nothing yet.
    let s = ctx.status_of(&app, "ann", &tid).await;
    assert_eq!(
        keys(&s),
        [
            "clickwrapEventId",
            "clickwrapTemplateId",
            "clickwrapTemplateName",
            "clickwrapTemplateVersion",
            "clickwrapTemplateVersionMinor",
            "effectiveAt",
            "lastStatusUpdate",
            "mustAcceptBy",
            "reAcceptanceRequired",
            "status",
            "tags"
        ]
    );
    assert_eq!(s["status"], "NO_DATA", "{s}");
    assert_eq!(s["clickwrapEventId"], Value::Null);
    assert_eq!(s["lastStatusUpdate"], Value::Null);
    assert_eq!(s["clickwrapTemplateName"], "Terms of Service");
    assert_eq!(s["tags"], json!(["legal"]));

    // Present: rendered with the placeholder HTML-escaped and the missing one as a dash.
    let res = ctx
        .sdk_get(&[
            ("appId", &app.id),
            ("clickwrapTemplateId", &tid),
            ("endUserId", "ann"),
            ("language", "en"),
            ("templatePlaceholders", r#"{"fullName":"<b>Ann</b>"}"#),
        ])
        .await;
    let p = body(res, StatusCode::OK).await;
    assert_eq!(
        keys(&p),
        [
            "clickwrapTemplateId",
            "clickwrapTemplateName",
            "clickwrapTemplateVersion",
            "clickwrapTemplateVersionMinor",
            "content",
            "effectiveAt",
            "inlineContent",
            "isAlreadyAccepted",
            "language",
            "mustAcceptBy",
            "reAcceptanceRequired",
            "title"
        ]
    );
    assert_eq!(p["clickwrapTemplateId"], tid.as_str());
    assert_eq!(p["clickwrapTemplateName"], "Terms of Service");
    assert_eq!(p["clickwrapTemplateVersion"], 1);
    assert_eq!(p["clickwrapTemplateVersionMinor"], 0);
    assert_eq!(p["content"], "Hello &lt;b&gt;Ann&lt;/b&gt; of -");
    assert_eq!(p["title"], "Terms for &lt;b&gt;Ann&lt;/b&gt;");
    assert_eq!(p["inlineContent"], "I accept the terms");
    assert_eq!(p["language"], "en");
    assert_eq!(p["mustAcceptBy"], Value::Null);
    assert_eq!(p["isAlreadyAccepted"], false);
    assert_eq!(p["reAcceptanceRequired"], false);
    ms(&p["effectiveAt"]);

    // Presented, not acted on: PENDING since the presentation.
    let s = ctx.status_of(&app, "ann", &tid).await;
    assert_eq!(s["status"], "PENDING", "{s}");
    assert_eq!(s["clickwrapEventId"], Value::Null);
    assert!(!s["lastStatusUpdate"].is_null(), "{s}");

    // Act: unverified until the backend verifies.
    let acted = ctx
        .act_with(&json!({
            "appId": app.id, "clickwrapTemplateId": tid, "endUserId": "ann", "action": "ACCEPTED",
            "templatePlaceholders": r#"{"fullName":"<b>Ann</b>"}"#, "language": "en",
        }))
        .await;
    assert!(acted.signature.starts_with("cts1_"), "{}", acted.signature);
    let s = ctx.status_of(&app, "ann", &tid).await;
    assert_eq!(s["status"], "UNVERIFIED", "{s}");
    assert_eq!(s["clickwrapEventId"], acted.event_id.as_str());
    // Not listed while unverified.
    assert!(ctx.events_ok(&app, &[]).await.is_empty());

    let v = ctx.verify_ok(&app, &acted.signature).await;
    assert_eq!(v["clickwrapEventStatus"], "ACCEPTED");
    assert_eq!(v["clickwrapEventId"], acted.event_id.as_str());
    assert_eq!(v["clickwrapTemplateId"], tid.as_str());
    assert_eq!(v["endUserId"], "ann");
    assert_eq!(v["effectiveAt"], p["effectiveAt"]);

    let s = ctx.status_of(&app, "ann", &tid).await;
    assert_eq!(s["status"], "ACCEPTED", "{s}");
    assert_eq!(s["clickwrapEventId"], acted.event_id.as_str());
    assert_eq!(s["lastStatusUpdate"], v["actionAt"]);
    assert_eq!(s["reAcceptanceRequired"], false);

    // Listed with the presentation time, and the same through details.
    let items = ctx.events_ok(&app, &[]).await;
    assert_eq!(items.len(), 1, "{items:?}");
    let item = &items[0];
    assert_eq!(item["clickwrapEventId"], acted.event_id.as_str());
    assert!(!item["presentedAt"].is_null(), "{item}");
    assert!(ms(&item["presentedAt"]) <= ms(&item["actionAt"]), "{item}");
    for f in EVENT_FIELDS {
        assert_eq!(item[f], v[f], "{f}");
    }
    let res = ctx
        .get(
            &app,
            &format!(
                "/public-client/v1/clickwrap-events/{}/details",
                acted.event_id
            ),
        )
        .await;
    assert_eq!(&body(res, StatusCode::OK).await, item);

    // Shown again: already accepted.
    let p = ctx.present(&app, &tid, "ann").await;
    assert_eq!(p["isAlreadyAccepted"], true, "{p}");
    assert_eq!(p["reAcceptanceRequired"], false, "{p}");
    // Someone else has not.
    let p = ctx.present(&app, &tid, "bob").await;
    assert_eq!(p["isAlreadyAccepted"], false, "{p}");
    ctx.stop().await;
}

#[tokio::test]
async fn verify_responses_and_listed_events_have_clickterms_fields_and_types() {
    let ctx = Ctx::start().await;
    let app = ctx.app("Web").await;
    let tid = ctx.published("Terms").await;

    ctx.present(&app, &tid, "ann").await;
    let with = ctx
        .act_with(&json!({
            "appId": app.id, "clickwrapTemplateId": tid, "endUserId": "ann", "action": "ACCEPTED",
            "templatePlaceholders": r#"{"fullName":"Ann Smith","plan":"pro"}"#,
        }))
        .await;
    let v = ctx.verify_ok(&app, &with.signature).await;
    assert_event_shape(&v, false);
    assert_eq!(v["clickwrapTemplateVersion"], 1);
    assert_eq!(v["clickwrapTemplateVersionMinor"], 0);
    let placeholders: Value =
        serde_json::from_str(v["templatePlaceholders"].as_str().unwrap()).unwrap();
    assert_eq!(
        placeholders,
        json!({"fullName": "Ann Smith", "plan": "pro"})
    );
    let metadata: Value = serde_json::from_str(v["technicalMetadata"].as_str().unwrap()).unwrap();
    assert!(metadata.is_object(), "{metadata}");
    assert_eq!(metadata["userAgent"], UA, "{metadata}");
    assert_eq!(metadata["ip"], "127.0.0.1", "{metadata}");

    // Without placeholders: null, not an empty string or "{}".
    let without = ctx.act(&app, &tid, "bob", "DECLINED").await;
    let w = ctx.verify_ok(&app, &without.signature).await;
    assert_event_shape(&w, false);
    assert_eq!(w["templatePlaceholders"], Value::Null, "{w}");
    assert_eq!(w["clickwrapEventStatus"], "DECLINED");

    // Listed items: the same fields plus presentedAt (null for bob, who was never shown it).
    let items = ctx.events_ok(&app, &[]).await;
    assert_eq!(items.len(), 2);
    for item in &items {
        assert_event_shape(item, true);
        let verified = if item["clickwrapEventId"] == v["clickwrapEventId"] {
            &v
        } else {
            &w
        };
        for f in EVENT_FIELDS {
            assert_eq!(item[f], verified[f], "{f}");
        }
    }
    let bob = items.iter().find(|i| i["endUserId"] == "bob").unwrap();
    assert_eq!(bob["presentedAt"], Value::Null);
    let ann = items.iter().find(|i| i["endUserId"] == "ann").unwrap();
    assert_eq!(json_type(&ann["presentedAt"]), "string");
    ctx.stop().await;
}

#[tokio::test]
async fn a_declined_action_reads_declined_in_verify_status_and_list() {
    let ctx = Ctx::start().await;
    let app = ctx.app("Web").await;
    let tid = ctx.published("Terms").await;
    ctx.present(&app, &tid, "ann").await;
    let a = ctx.act(&app, &tid, "ann", "DECLINED").await;
    assert_eq!(
        ctx.status_of(&app, "ann", &tid).await["status"],
        "UNVERIFIED"
    );
    let v = ctx.verify_ok(&app, &a.signature).await;
    assert_eq!(v["clickwrapEventStatus"], "DECLINED");

    let s = ctx.status_of(&app, "ann", &tid).await;
    assert_eq!(s["status"], "DECLINED", "{s}");
    assert_eq!(s["clickwrapEventId"], a.event_id.as_str());
    assert_eq!(s["lastStatusUpdate"], v["actionAt"]);
    // Declining is not accepting.
    let p = ctx.present(&app, &tid, "ann").await;
    assert_eq!(p["isAlreadyAccepted"], false, "{p}");
    let declined = ctx
        .events_ok(&app, &[("clickwrapEventStatus", "DECLINED")])
        .await;
    assert_eq!(ids(&declined), set(&[&a.event_id]));
    assert!(
        ctx.events_ok(&app, &[("clickwrapEventStatus", "ACCEPTED")])
            .await
            .is_empty()
    );
    ctx.stop().await;
}

#[tokio::test]
async fn a_second_verify_is_409_and_writes_nothing() {
    let ctx = Ctx::start().await;
    let app = ctx.app("Web").await;
    ctx.patch_app(&app, json!({"callbackUrl": common::HOOKS_URL}))
        .await;
    let tid = ctx.published("Terms").await;

    let a = ctx.act(&app, &tid, "ann", "ACCEPTED").await;
    let first = ctx.verify_ok(&app, &a.signature).await;
    assert_eq!(ctx.deliveries(&a.event_id).await.len(), 1);
    let verified_at = ctx.verified_at(&a.event_id).await;
    assert!(verified_at.is_some());

    let err = expect_error(ctx.verify(&app, &a.signature).await, StatusCode::CONFLICT).await;
    assert_eq!(err["code"], "conflict", "{err}");
    assert_eq!(
        ctx.deliveries(&a.event_id).await.len(),
        1,
        "a second delivery row"
    );
    assert_eq!(ctx.verified_at(&a.event_id).await, verified_at);
    let s = ctx.status_of(&app, "ann", &tid).await;
    assert_eq!(s["status"], "ACCEPTED");
    assert_eq!(s["lastStatusUpdate"], first["actionAt"]);

    // Two verifies racing: exactly one wins, one delivery row.
    let b = ctx.act(&app, &tid, "bob", "ACCEPTED").await;
    let (r1, r2) = tokio::join!(
        ctx.verify(&app, &b.signature),
        ctx.verify(&app, &b.signature)
    );
    let mut codes = [r1.status(), r2.status()];
    codes.sort();
    assert_eq!(codes, [StatusCode::OK, StatusCode::CONFLICT]);
    assert_eq!(ctx.deliveries(&b.event_id).await.len(), 1);
    let listed = ctx.events_ok(&app, &[("endUserId", "bob")]).await;
    assert_eq!(listed.len(), 1);
    ctx.stop().await;
}

#[tokio::test]
async fn verify_freezes_the_webhook_payload_in_a_delivery_row() {
    let ctx = Ctx::start().await;
    let app = ctx.app("Web").await;
    ctx.patch_app(&app, json!({"callbackUrl": common::HOOKS_URL}))
        .await;
    let tid = ctx.published("Terms").await;
    ctx.present(&app, &tid, "ann").await;
    let a = ctx
        .act_with(&json!({
            "appId": app.id, "clickwrapTemplateId": tid, "endUserId": "ann", "action": "ACCEPTED",
            "templatePlaceholders": r#"{"fullName":"Ann"}"#,
        }))
        .await;
    // Nothing is delivered for an unverified event.
    assert!(ctx.deliveries(&a.event_id).await.is_empty());
    let v = ctx.verify_ok(&app, &a.signature).await;

    let rows = ctx.deliveries(&a.event_id).await;
    assert_eq!(rows.len(), 1, "one delivery row per verified event");
    let (state, payload, is_test) = &rows[0];
    // The dispatcher may already be attempting it (towards the harness's sink).
    assert!(state == "pending" || state == "in_flight", "{state}");
    assert_eq!(*is_test, 0);
    let p: Value = serde_json::from_slice(payload).expect("the payload is JSON");
    assert_eq!(keys(&p), ["data", "eventType"], "{p}");
    assert_eq!(p["eventType"], "CLICKWRAP_EVENT_VERIFIED");
    let mut expected = EVENT_FIELDS.to_vec();
    expected.sort_unstable();
    assert_eq!(keys(&p["data"]), expected, "{p}");
    for f in EVENT_FIELDS {
        assert_eq!(p["data"][f], v[f], "data.{f}");
    }

    // Delivery paused: the row is written held.
    ctx.patch_app(&app, json!({"webhookDeliveryEnabled": false}))
        .await;
    let b = ctx.act(&app, &tid, "bob", "DECLINED").await;
    let vb = ctx.verify_ok(&app, &b.signature).await;
    let rows = ctx.deliveries(&b.event_id).await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].0, "held");
    let p: Value = serde_json::from_slice(&rows[0].1).unwrap();
    assert_eq!(p["data"]["clickwrapEventStatus"], "DECLINED");
    assert_eq!(p["data"]["clickwrapEventId"], vb["clickwrapEventId"]);

    // No callback URL: no row at all.
    let plain = ctx.app("No webhooks").await;
    let c = ctx.act(&plain, &tid, "carl", "ACCEPTED").await;
    ctx.verify_ok(&plain, &c.signature).await;
    assert!(ctx.deliveries(&c.event_id).await.is_empty());
    let total = ctx.count(
        "SELECT count(*) FROM deliveries WHERE integration_id = (SELECT id FROM integrations WHERE app_id = $1)",
        &plain.id,
    ).await;
    assert_eq!(total, 0);
    ctx.stop().await;
}

#[tokio::test]
async fn a_signature_verifies_only_for_the_integration_it_was_issued_to() {
    let ctx = Ctx::start().await;
    let a = ctx.app("A").await;
    let b = ctx.app("B").await;
    let tid = ctx.published("Terms").await;
    let acted = ctx.act(&a, &tid, "ann", "ACCEPTED").await;

    let err = expect_field_error(
        ctx.verify(&b, &acted.signature).await,
        StatusCode::BAD_REQUEST,
        "clicktermSignature",
    )
    .await;
    assert_eq!(err["code"], "invalid_request");
    // Exactly what a forged signature gets: B cannot tell A's genuine signature from a fake.
    let mut forged: Vec<char> = acted.signature.chars().collect();
    let mid = forged.len() / 2;
    forged[mid] = if forged[mid] == 'A' { 'B' } else { 'A' };
    let forged: String = forged.into_iter().collect();
    let forged_err = expect_error(ctx.verify(&b, &forged).await, StatusCode::BAD_REQUEST).await;
    assert_eq!(
        err, forged_err,
        "another integration's signature reads as forged"
    );
    assert_eq!(ctx.verified_at(&acted.event_id).await, None);
    assert_eq!(ctx.status_of(&a, "ann", &tid).await["status"], "UNVERIFIED");
    assert!(ctx.events_ok(&b, &[]).await.is_empty());

    let v = ctx.verify_ok(&a, &acted.signature).await;
    assert_eq!(v["clickwrapEventId"], acted.event_id.as_str());
    // And now B still cannot (400, not 409: it learns nothing about A's events).
    expect_field_error(
        ctx.verify(&b, &acted.signature).await,
        StatusCode::BAD_REQUEST,
        "clicktermSignature",
    )
    .await;
    ctx.stop().await;
}

#[tokio::test]
async fn tampered_garbage_and_missing_signatures_are_400_and_change_nothing() {
    let ctx = Ctx::start().await;
    let app = ctx.app("Web").await;
    let tid = ctx.published("Terms").await;
    let a = ctx.act(&app, &tid, "ann", "ACCEPTED").await;

    // One character in the middle changed.
    let mut chars: Vec<char> = a.signature.chars().collect();
    let mid = chars.len() / 2;
    chars[mid] = if chars[mid] == 'A' { 'B' } else { 'A' };
    let tampered: String = chars.into_iter().collect();
    assert_ne!(tampered, a.signature);

    for bad in [
        json!({"clicktermSignature": tampered}),
        json!({"clicktermSignature": "garbage"}),
        json!({"clicktermSignature": "cts1_!!!!"}),
        json!({"clicktermSignature": ""}),
        json!({"clicktermSignature": a.signature[..a.signature.len() - 3]}),
    ] {
        expect_field_error(
            ctx.verify_raw(&app, &bad).await,
            StatusCode::BAD_REQUEST,
            "clicktermSignature",
        )
        .await;
    }
    for bad in [
        json!({}),
        json!({"signature": a.signature}),
        json!({"clicktermSignature": 42}),
        json!({"clicktermSignature": a.signature, "extra": true}),
    ] {
        let err = expect_error(ctx.verify_raw(&app, &bad).await, StatusCode::BAD_REQUEST).await;
        assert!(
            err["message"]
                .as_str()
                .unwrap()
                .contains("clicktermSignature")
                || err["message"].as_str().unwrap().contains("extra")
                || err["message"].as_str().unwrap().contains("signature"),
            "{bad} → {err}"
        );
    }
    // Not JSON at all.
    let res = common::client()
        .post(ctx.url("/public-client/v1/clickwrap/verify"))
        .header("X-APP-ID", &app.id)
        .header("X-APP-KEY", &app.key)
        .header(header::CONTENT_TYPE, "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    expect_error(res, StatusCode::BAD_REQUEST).await;

    // None of that touched the event.
    assert_eq!(ctx.verified_at(&a.event_id).await, None);
    let s = ctx.status_of(&app, "ann", &tid).await;
    assert_eq!(s["status"], "UNVERIFIED", "{s}");
    assert!(ctx.events_ok(&app, &[]).await.is_empty());
    // The genuine signature still works.
    let v = ctx.verify_ok(&app, &a.signature).await;
    assert_eq!(v["clickwrapEventId"], a.event_id.as_str());
    ctx.stop().await;
}

#[tokio::test]
async fn an_expired_signature_is_410() {
    let server = TestServer::start_with(|c| c.clickwrap.signature_ttl_secs = 1).await;
    let ctx = Ctx::with(server).await;
    let app = ctx.app("Web").await;
    let tid = ctx.published("Terms").await;

    // Within the TTL it verifies.
    let fresh = ctx.act(&app, &tid, "bob", "ACCEPTED").await;
    ctx.verify_ok(&app, &fresh.signature).await;

    let a = ctx.act(&app, &tid, "ann", "ACCEPTED").await;
    // The signature was issued before the answer arrived; wait until more than 1 s has passed since.
    let acted = Instant::now();
    tokio::time::sleep_until((acted + Duration::from_millis(1100)).into()).await;
    let err = expect_error(ctx.verify(&app, &a.signature).await, StatusCode::GONE).await;
    assert_eq!(err["code"], "gone", "{err}");
    assert_eq!(ctx.verified_at(&a.event_id).await, None);
    let s = ctx.status_of(&app, "ann", &tid).await;
    assert_eq!(s["status"], "UNVERIFIED", "{s}");
    assert_eq!(
        ids(&ctx.events_ok(&app, &[]).await),
        set(&[&fresh.event_id])
    );
    ctx.stop().await;
}

#[tokio::test]
async fn minor_versions_do_not_reprompt_and_majors_do_from_their_effective_time() {
    let ctx = Ctx::start().await;
    let app = ctx.app("Web").await;
    let tid = ctx.published("Terms").await;
    ctx.present(&app, &tid, "ann").await;
    ctx.accept(&app, &tid, "ann").await;

    // 1.1: no new prompt.
    let v = ctx.publish(&tid, json!({"type": "MINOR"})).await;
    assert_eq!(
        (v["version"].as_i64(), v["versionMinor"].as_i64()),
        (Some(1), Some(1))
    );
    let p = ctx.present(&app, &tid, "ann").await;
    assert_eq!(
        (
            &p["clickwrapTemplateVersion"],
            &p["clickwrapTemplateVersionMinor"]
        ),
        (&json!(1), &json!(1))
    );
    assert_eq!(p["isAlreadyAccepted"], true, "{p}");
    let s = ctx.status_of(&app, "ann", &tid).await;
    assert_eq!(s["status"], "ACCEPTED", "{s}");
    assert_eq!(
        (
            &s["clickwrapTemplateVersion"],
            &s["clickwrapTemplateVersionMinor"]
        ),
        (&json!(1), &json!(1))
    );

    // 2.0 effective in 2 s: until then 1.1 stays effective and accepted.
    let effective = now_ms() + 2000;
    let v = ctx
        .publish(
            &tid,
            json!({"type": "MAJOR", "effectiveAt": iso(effective)}),
        )
        .await;
    assert_eq!(v["version"], 2);
    let p = ctx.present(&app, &tid, "ann").await;
    let s = ctx.status_of(&app, "ann", &tid).await;
    assert!(
        now_ms() < effective,
        "the checks before 2.0 takes effect took too long"
    );
    assert_eq!(
        (
            &p["clickwrapTemplateVersion"],
            &p["clickwrapTemplateVersionMinor"]
        ),
        (&json!(1), &json!(1))
    );
    assert_eq!(p["isAlreadyAccepted"], true, "{p}");
    assert_eq!(s["status"], "ACCEPTED", "{s}");
    assert_eq!(s["clickwrapTemplateVersion"], 1);

    // Watch the status (which records nothing) until 2.0 is effective.
    let start = Instant::now();
    let s = loop {
        let s = ctx.status_of(&app, "ann", &tid).await;
        let version = (
            s["clickwrapTemplateVersion"].as_i64().unwrap(),
            s["clickwrapTemplateVersionMinor"].as_i64().unwrap(),
        );
        if version == (2, 0) {
            assert!(
                now_ms() >= effective,
                "2.0 was effective before its effectiveAt"
            );
            break s;
        }
        assert_eq!(version, (1, 1), "only 1.1 or 2.0 may be effective");
        assert_eq!(s["status"], "ACCEPTED", "{s}");
        assert!(start.elapsed() < DEADLINE, "2.0 never became effective");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(ms(&s["effectiveAt"]), effective);
    // Ann accepted 1.x but was never shown 2.0; nor was Bob anything.
    assert_eq!(s["status"], "NO_DATA", "{s}");
    assert_eq!(s["clickwrapEventId"], Value::Null);
    let bob = ctx.status_of(&app, "bob", &tid).await;
    assert_eq!(bob["status"], "NO_DATA", "{bob}");

    // Shown 2.0: asked again, and PENDING since.
    let p = ctx.present(&app, &tid, "ann").await;
    assert_eq!(
        (
            &p["clickwrapTemplateVersion"],
            &p["clickwrapTemplateVersionMinor"]
        ),
        (&json!(2), &json!(0))
    );
    assert_eq!(p["isAlreadyAccepted"], false, "{p}");
    let s = ctx.status_of(&app, "ann", &tid).await;
    assert_eq!(s["status"], "PENDING", "{s}");
    assert!(!s["lastStatusUpdate"].is_null(), "{s}");
    assert_eq!(ctx.status_of(&app, "bob", &tid).await["status"], "NO_DATA");

    // Accepting 2.0 records it on 2.0.
    let v = ctx.accept(&app, &tid, "ann").await;
    assert_eq!(v["clickwrapTemplateVersion"], 2);
    assert_eq!(v["clickwrapTemplateVersionMinor"], 0);
    assert_eq!(ms(&v["effectiveAt"]), effective);
    assert_eq!(ctx.status_of(&app, "ann", &tid).await["status"], "ACCEPTED");
    ctx.stop().await;
}

#[tokio::test]
async fn after_must_accept_by_a_user_without_acceptance_is_overdue() {
    let ctx = Ctx::start().await;
    let app = ctx.app("Web").await;
    let tid = ctx.template(terms("Terms")).await;
    let now = now_ms();
    let deadline = now + 1500;
    let v = ctx
        .publish(
            &tid,
            json!({"type": "MAJOR", "effectiveAt": iso(now), "mustAcceptBy": iso(deadline)}),
        )
        .await;
    assert_eq!(ms(&v["mustAcceptBy"]), deadline);

    // Before the deadline.
    let fresh = ctx.status_of(&app, "never", &tid).await;
    assert_eq!(ms(&fresh["mustAcceptBy"]), deadline);
    let p = ctx.present(&app, &tid, "shown").await;
    assert_eq!(ms(&p["mustAcceptBy"]), deadline);
    let shown = ctx.status_of(&app, "shown", &tid).await;
    ctx.present(&app, &tid, "accepted").await;
    let accepted = ctx.accept(&app, &tid, "accepted").await;
    assert!(
        now_ms() < deadline,
        "the checks before the deadline took too long"
    );
    assert_eq!(fresh["status"], "NO_DATA", "{fresh}");
    assert_eq!(shown["status"], "PENDING", "{shown}");
    let shown_at = shown["lastStatusUpdate"].clone();
    assert!(!shown_at.is_null());

    // Poll until the deadline has passed.
    let start = Instant::now();
    loop {
        let s = ctx.status_of(&app, "never", &tid).await;
        if s["status"] == "OVERDUE" {
            assert!(now_ms() > deadline, "OVERDUE before mustAcceptBy");
            assert_eq!(s["clickwrapEventId"], Value::Null);
            break;
        }
        assert_eq!(s["status"], "NO_DATA", "{s}");
        assert!(start.elapsed() < DEADLINE, "never OVERDUE");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let s = ctx.status_of(&app, "shown", &tid).await;
    assert_eq!(s["status"], "OVERDUE", "{s}");
    assert_eq!(s["clickwrapEventId"], Value::Null);
    let s = ctx.status_of(&app, "accepted", &tid).await;
    assert_eq!(s["status"], "ACCEPTED", "{s}");
    assert_eq!(s["clickwrapEventId"], accepted["clickwrapEventId"]);
    assert_eq!(s["lastStatusUpdate"], accepted["actionAt"]);
    // A user presented only after the deadline is overdue too.
    ctx.present(&app, &tid, "late").await;
    assert_eq!(ctx.status_of(&app, "late", &tid).await["status"], "OVERDUE");
    ctx.stop().await;
}

#[tokio::test]
async fn reaccept_requests_ask_accepted_users_again() {
    let ctx = Ctx::start().await;
    let app = ctx.app("Web").await;
    let tid = ctx.published("Terms").await;
    let first = ctx.accept(&app, &tid, "ann").await;

    let res = ctx
        .reaccept(
            &app,
            &json!({"endUserIds": ["ann", "bob"], "clickwrapTemplateIds": [tid, "no-such-template"], "reason": "Terms changed"}),
        )
        .await;
    let r = body(res, StatusCode::OK).await;
    assert_eq!(keys(&r), ["results", "summary"], "{r}");
    let results = r["results"].as_array().unwrap();
    let find = |user: &str, t: &str| {
        results
            .iter()
            .find(|x| x["endUserId"] == user && x["clickwrapTemplateId"] == t)
            .unwrap_or_else(|| panic!("no result for {user}/{t} in {r}"))
            .clone()
    };
    assert_eq!(results.len(), 4, "{r}");
    let ann = find("ann", &tid);
    assert_eq!(ann["status"], "re_accept_requested", "{ann}");
    assert_eq!(ann.get("reason"), None, "{ann}");
    let bob = find("bob", &tid);
    assert_eq!(bob["status"], "skipped", "{bob}");
    assert_eq!(bob["reason"], "no_prior_acceptance", "{bob}");
    let unknown = find("ann", "no-such-template");
    assert_eq!(unknown["status"], "skipped", "{unknown}");
    assert!(unknown["reason"].is_string(), "{unknown}");
    assert_eq!(
        r["summary"],
        json!({"total": 4, "reAcceptRequested": 1, "skipped": 3})
    );

    // Still ACCEPTED (the acceptance stands) but asked again.
    let s = ctx.status_of(&app, "ann", &tid).await;
    assert_eq!(s["status"], "ACCEPTED", "{s}");
    assert_eq!(s["clickwrapEventId"], first["clickwrapEventId"]);
    assert_eq!(s["reAcceptanceRequired"], true, "{s}");
    let p = ctx.present(&app, &tid, "ann").await;
    assert_eq!(p["isAlreadyAccepted"], false, "{p}");
    assert_eq!(p["reAcceptanceRequired"], true, "{p}");
    let s = ctx.status_of(&app, "bob", &tid).await;
    assert_eq!(s["reAcceptanceRequired"], false, "{s}");

    // Accepting again answers the request.
    let second = ctx.accept(&app, &tid, "ann").await;
    let s = ctx.status_of(&app, "ann", &tid).await;
    assert_eq!(s["status"], "ACCEPTED", "{s}");
    assert_eq!(s["clickwrapEventId"], second["clickwrapEventId"]);
    assert_eq!(s["reAcceptanceRequired"], false, "{s}");
    let p = ctx.present(&app, &tid, "ann").await;
    assert_eq!(p["isAlreadyAccepted"], true, "{p}");
    assert_eq!(p["reAcceptanceRequired"], false, "{p}");

    // A template that always asks.
    let mut always = terms("Always");
    always["alwaysRequireReacceptance"] = json!(true);
    let always = ctx.template(always).await;
    ctx.publish(&always, json!({"type": "MAJOR"})).await;
    ctx.accept(&app, &always, "ann").await;
    let s = ctx.status_of(&app, "ann", &always).await;
    assert_eq!(s["status"], "ACCEPTED", "{s}");
    assert_eq!(s["reAcceptanceRequired"], true, "{s}");
    let p = ctx.present(&app, &always, "ann").await;
    assert_eq!(p["isAlreadyAccepted"], false, "{p}");
    assert_eq!(p["reAcceptanceRequired"], true, "{p}");

    // Reason: at most 500 characters.
    let res = ctx
        .reaccept(
            &app,
            &json!({"endUserIds": ["ann"], "clickwrapTemplateIds": [tid], "reason": "r".repeat(501)}),
        )
        .await;
    expect_field_error(res, StatusCode::BAD_REQUEST, "reason").await;
    // Refused before anything was written: ann is still not asked again.
    assert_eq!(
        ctx.status_of(&app, "ann", &tid).await["reAcceptanceRequired"],
        false
    );
    let res = ctx
        .reaccept(
            &app,
            &json!({"endUserIds": ["ann"], "clickwrapTemplateIds": [tid], "reason": "r".repeat(500)}),
        )
        .await;
    body(res, StatusCode::OK).await;
    assert_eq!(
        ctx.status_of(&app, "ann", &tid).await["reAcceptanceRequired"],
        true
    );
    let res = ctx
        .reaccept(
            &app,
            &json!({"endUserIds": [], "clickwrapTemplateIds": [tid]}),
        )
        .await;
    expect_field_error(res, StatusCode::BAD_REQUEST, "endUserIds").await;
    ctx.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_event_list_walks_every_event_once_under_concurrent_inserts() {
    let ctx = Ctx::start().await;
    let app = ctx.app("Web").await;
    let tid = ctx.published("Terms").await;

    let mut originals = HashSet::new();
    for i in 0..40 {
        let user = format!("user-{}", i % 4);
        let action = if i % 5 == 0 { "DECLINED" } else { "ACCEPTED" };
        let a = ctx.act(&app, &tid, &user, action).await;
        ctx.verify_ok(&app, &a.signature).await;
        originals.insert(a.event_id);
    }

    // Without a limit: 20 per page.
    let page = body(ctx.events(&app, &[]).await, StatusCode::OK).await;
    assert_eq!(page["items"].as_array().unwrap().len(), 20, "{page}");
    assert!(page["nextPageCursor"].is_string(), "{page}");

    // A concurrent writer keeps adding verified events for the whole walk.
    let stop = Arc::new(AtomicBool::new(false));
    let made = Arc::new(AtomicUsize::new(0));
    let writer = tokio::spawn({
        let (api, app, tid) = (ctx.api.clone(), app.clone(), tid.clone());
        let (stop, made) = (stop.clone(), made.clone());
        async move {
            let mut added = HashSet::new();
            while !stop.load(Ordering::SeqCst) {
                let a = api.act(&app, &tid, "concurrent", "ACCEPTED").await;
                api.verify_ok(&app, &a.signature).await;
                added.insert(a.event_id);
                made.fetch_add(1, Ordering::SeqCst);
            }
            added
        }
    });

    let mut seen: Vec<(String, i64)> = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        // At least one more event is inserted before every page.
        let before = made.load(Ordering::SeqCst);
        let start = Instant::now();
        while made.load(Ordering::SeqCst) == before {
            assert!(start.elapsed() < DEADLINE, "the concurrent writer stalled");
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let mut params = vec![("limit", "7")];
        if let Some(c) = &cursor {
            params.push(("cursor", c.as_str()));
        }
        let page = body(ctx.events(&app, &params).await, StatusCode::OK).await;
        let items = page["items"].as_array().unwrap();
        pages += 1;
        for item in items {
            seen.push((
                item["clickwrapEventId"].as_str().unwrap().to_string(),
                ms(&item["actionAt"]),
            ));
        }
        match &page["nextPageCursor"] {
            Value::Null => break,
            Value::String(c) => {
                assert_eq!(items.len(), 7, "a page before the last is full: {page}");
                cursor = Some(c.clone());
            }
            other => panic!("nextPageCursor is {other}"),
        }
        assert!(pages < 100, "the walk does not end");
    }
    stop.store(true, Ordering::SeqCst);
    let added = writer.await.unwrap();
    assert!(!added.is_empty());

    let mut once = HashSet::new();
    for (id, _) in &seen {
        assert!(once.insert(id.clone()), "{id} seen twice");
    }
    for id in &originals {
        assert!(once.contains(id), "{id} never seen");
    }
    for (id, _) in &seen {
        assert!(
            originals.contains(id) || added.contains(id),
            "{id} is not an event of this integration"
        );
    }
    for pair in seen.windows(2) {
        assert!(pair[0].1 >= pair[1].1, "not newest first: {pair:?}");
    }
    assert!(pages >= 40 / 7, "only {pages} pages");
    ctx.stop().await;
}

#[tokio::test]
async fn the_event_list_filters_and_keeps_to_the_calling_integration() {
    let ctx = Ctx::start().await;
    let a = ctx.app("A").await;
    let b = ctx.app("B").await;
    let t1 = ctx.published("One").await;
    let t2 = ctx.published("Two").await;

    let e1 = ctx.accept(&a, &t1, "u1").await;
    let e2 = {
        let x = ctx.act(&a, &t1, "u2", "DECLINED").await;
        ctx.verify_ok(&a, &x.signature).await
    };
    let e3 = ctx.accept(&a, &t2, "u1").await;
    let unverified = ctx.act(&a, &t1, "u3", "ACCEPTED").await;
    let other = ctx.accept(&b, &t1, "u1").await;
    let id = |v: &Value| v["clickwrapEventId"].as_str().unwrap().to_string();
    let (e1, e2, e3, other) = (id(&e1), id(&e2), id(&e3), id(&other));

    let all = ctx.events_ok(&a, &[("limit", "100")]).await;
    assert_eq!(ids(&all), set(&[&e1, &e2, &e3]));
    let at: BTreeMap<String, i64> = all.iter().map(|i| (id(i), ms(&i["actionAt"]))).collect();
    assert_eq!(ids(&ctx.events_ok(&b, &[]).await), set(&[&other]));

    // Filters.
    let cases: Vec<(Query, HashSet<String>)> = vec![
        (vec![("endUserId", "u1")], set(&[&e1, &e3])),
        (vec![("endUserId", "u3")], set(&[])),
        (vec![("clickwrapEventStatus", "DECLINED")], set(&[&e2])),
        (vec![("clickwrapEventStatus", "ACCEPTED")], set(&[&e1, &e3])),
        (vec![("clickwrapTemplateId", t2.as_str())], set(&[&e3])),
        (
            vec![("clickwrapTemplateId", t1.as_str()), ("endUserId", "u1")],
            set(&[&e1]),
        ),
    ];
    for (params, expected) in cases {
        assert_eq!(
            ids(&ctx.events_ok(&a, &params).await),
            expected,
            "{params:?}"
        );
    }
    // from/to are inclusive.
    let t = iso(at[&e2]);
    let exactly = ctx.events_ok(&a, &[("from", &t), ("to", &t)]).await;
    let expected: HashSet<String> = at
        .iter()
        .filter(|(_, m)| **m == at[&e2])
        .map(|(k, _)| k.clone())
        .collect();
    assert!(expected.contains(&e2));
    assert_eq!(ids(&exactly), expected);
    let t = iso(at[&e1]);
    let until = ctx.events_ok(&a, &[("to", &t)]).await;
    let expected: HashSet<String> = at
        .iter()
        .filter(|(_, m)| **m <= at[&e1])
        .map(|(k, _)| k.clone())
        .collect();
    assert_eq!(ids(&until), expected);
    let since = ctx.events_ok(&a, &[("from", &t)]).await;
    assert_eq!(ids(&since), set(&[&e1, &e2, &e3]));

    // Bad queries are refused by name.
    let bad: Vec<(Query, &str)> = vec![
        (vec![("cursor", "not-a-cursor")], "cursor"),
        (vec![("cursor", "eDp5")], "cursor"),
        (
            vec![
                ("from", "2030-01-02T00:00:00Z"),
                ("to", "2030-01-01T00:00:00Z"),
            ],
            "to",
        ),
        (vec![("limit", "0")], "limit"),
        (vec![("limit", "101")], "limit"),
        (vec![("from", "yesterday")], "from"),
        (
            vec![("clickwrapEventStatus", "MAYBE")],
            "clickwrapEventStatus",
        ),
    ];
    for (params, field) in bad {
        expect_field_error(
            ctx.events(&a, &params).await,
            StatusCode::BAD_REQUEST,
            field,
        )
        .await;
    }
    assert_eq!(ctx.events_ok(&a, &[("limit", "1")]).await.len(), 1);
    assert_eq!(ctx.events_ok(&a, &[("limit", "100")]).await.len(), 3);

    // Details: only verified events of the caller.
    let details = |app: App, event: String| {
        let api = ctx.api.clone();
        async move {
            api.get(
                &app,
                &format!("/public-client/v1/clickwrap-events/{event}/details"),
            )
            .await
        }
    };
    let d = body(details(a.clone(), e1.clone()).await, StatusCode::OK).await;
    assert_eq!(d, all.iter().find(|i| id(i) == e1).unwrap().clone());
    expect_error(
        details(a.clone(), other.clone()).await,
        StatusCode::NOT_FOUND,
    )
    .await;
    expect_error(details(b.clone(), e1.clone()).await, StatusCode::NOT_FOUND).await;
    expect_error(
        details(a.clone(), unverified.event_id.clone()).await,
        StatusCode::NOT_FOUND,
    )
    .await;
    expect_error(
        details(a.clone(), uuid::Uuid::new_v4().to_string()).await,
        StatusCode::NOT_FOUND,
    )
    .await;
    body(details(b.clone(), other.clone()).await, StatusCode::OK).await;

    // The admin list: across integrations, or one with appId; items carry their appId.
    let admin_list = |query: String| {
        let api = ctx.api.clone();
        async move {
            let res = api
                .admin
                .get(api.url(&format!("/api/v1/events{query}")))
                .send()
                .await
                .unwrap();
            body(res, StatusCode::OK).await["items"]
                .as_array()
                .unwrap()
                .clone()
        }
    };
    let items = admin_list(format!("?appId={}&limit=100", a.id)).await;
    assert_eq!(ids(&items), set(&[&e1, &e2, &e3]));
    for item in &items {
        assert_eq!(item["appId"], a.id.as_str(), "{item}");
        let public = all.iter().find(|i| id(i) == id(item)).unwrap();
        for f in EVENT_FIELDS {
            assert_eq!(item[f], public[f], "{f}");
        }
    }
    let items = admin_list("?limit=100".into()).await;
    assert_eq!(ids(&items), set(&[&e1, &e2, &e3, &other]));
    let o = items.iter().find(|i| id(i) == other).unwrap();
    assert_eq!(o["appId"], b.id.as_str());
    let items = admin_list(format!("?appId={}&endUserId=u1", a.id)).await;
    assert_eq!(ids(&items), set(&[&e1, &e3]));
    ctx.stop().await;
}

#[tokio::test]
async fn sdk_cors_follows_the_integrations_domains() {
    let ctx = Ctx::start().await;
    let app = ctx.app("Web").await;
    ctx.patch_app(&app, json!({"domains": ["app.example.com"]}))
        .await;
    let tid = ctx.published("Terms").await;
    let good = "https://app.example.com";
    let evil = "https://evil.example.com";
    let acao = |res: &reqwest::Response| {
        res.headers()
            .get(header::ACCESS_CONTROL_ALLOW_ORIGIN)
            .map(|v| v.to_str().unwrap().to_string())
    };
    let get = |origin: &'static str, user: &'static str| {
        let url = ctx.sdk_url(&[
            ("appId", &app.id),
            ("clickwrapTemplateId", &tid),
            ("endUserId", user),
        ]);
        async move {
            common::client()
                .get(url)
                .header(header::ORIGIN, origin)
                .send()
                .await
                .unwrap()
        }
    };
    let post = |origin: &'static str, user: &'static str| {
        let (url, b) = (
            ctx.url("/public-client/v1/clickwrap"),
            json!({"appId": app.id, "clickwrapTemplateId": tid, "endUserId": user, "action": "ACCEPTED"}),
        );
        async move {
            common::client()
                .post(url)
                .header(header::ORIGIN, origin)
                .json(&b)
                .send()
                .await
                .unwrap()
        }
    };

    // The allowed origin.
    let res = get(good, "ann").await;
    assert_eq!(acao(&res).as_deref(), Some(good));
    body(res, StatusCode::OK).await;
    assert_eq!(ctx.status_of(&app, "ann", &tid).await["status"], "PENDING");
    let res = post(good, "ann").await;
    assert_eq!(acao(&res).as_deref(), Some(good));
    body(res, StatusCode::CREATED).await;

    // Another origin: refused before anything is recorded.
    let res = get(evil, "eve").await;
    assert_eq!(acao(&res), None);
    let err = expect_error(res, StatusCode::FORBIDDEN).await;
    assert_eq!(err["code"], "origin_not_allowed", "{err}");
    assert_eq!(ctx.status_of(&app, "eve", &tid).await["status"], "NO_DATA");
    // Look-alikes are other origins too.
    for origin in [
        "https://app.example.com.evil.net",
        "https://evilapp.example.com",
        "https://sub.app.example.com",
    ] {
        let res = get(origin, "eve").await;
        assert_eq!(acao(&res), None, "{origin}");
        expect_error(res, StatusCode::FORBIDDEN).await;
    }
    let res = post(evil, "eve").await;
    assert_eq!(acao(&res), None);
    expect_error(res, StatusCode::FORBIDDEN).await;
    assert_eq!(ctx.status_of(&app, "eve", &tid).await["status"], "NO_DATA");
    assert_eq!(
        ctx.count("SELECT count(*) FROM events WHERE end_user_id = $1", "eve")
            .await,
        0
    );
    assert_eq!(
        ctx.count(
            "SELECT count(*) FROM presentations WHERE end_user_id = $1",
            "eve"
        )
        .await,
        0
    );

    // Preflight.
    let preflight = |origin: &'static str| {
        let url = ctx.url(&format!("/public-client/v1/clickwrap?appId={}", app.id));
        async move {
            common::client()
                .request(Method::OPTIONS, url)
                .header(header::ORIGIN, origin)
                .header(header::ACCESS_CONTROL_REQUEST_METHOD, "POST")
                .header(header::ACCESS_CONTROL_REQUEST_HEADERS, "content-type")
                .send()
                .await
                .unwrap()
        }
    };
    let res = preflight(good).await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    assert_eq!(acao(&res).as_deref(), Some(good));
    let methods = res
        .headers()
        .get(header::ACCESS_CONTROL_ALLOW_METHODS)
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    assert!(
        methods.split(',').any(|m| m.trim() == "POST"),
        "allow-methods {methods:?}"
    );
    let res = preflight(evil).await;
    assert_eq!(acao(&res), None);
    expect_error(res, StatusCode::FORBIDDEN).await;
    ctx.stop().await;
}

#[tokio::test]
async fn verify_and_its_delivery_row_are_atomic() {
    let ctx = Ctx::start().await;
    let app = ctx.app("Web").await;
    ctx.patch_app(&app, json!({"callbackUrl": common::HOOKS_URL}))
        .await;
    let tid = ctx.published("Terms").await;
    let a = ctx.act(&app, &tid, "ann", "ACCEPTED").await;

    // A delivery that cannot be inserted, in each engine's trigger language.
    let db = ctx.db().await;
    db.batch(if crate::POSTGRES {
        "CREATE FUNCTION fail_delivery() RETURNS trigger LANGUAGE plpgsql AS $$ \
         BEGIN RAISE EXCEPTION 'injected failure'; END $$; \
         CREATE TRIGGER fail_delivery BEFORE INSERT ON deliveries \
         FOR EACH ROW EXECUTE FUNCTION fail_delivery();"
    } else {
        "CREATE TRIGGER fail_delivery BEFORE INSERT ON deliveries \
         BEGIN SELECT RAISE(ABORT, 'injected failure'); END;"
    })
    .await;
    let err = expect_error(
        ctx.verify(&app, &a.signature).await,
        StatusCode::INTERNAL_SERVER_ERROR,
    )
    .await;
    assert!(
        !err["message"].as_str().unwrap().contains("injected"),
        "the cause leaks: {err}"
    );
    assert_eq!(
        ctx.verified_at(&a.event_id).await,
        None,
        "verified without its delivery"
    );
    assert!(ctx.deliveries(&a.event_id).await.is_empty());
    let s = ctx.status_of(&app, "ann", &tid).await;
    assert_eq!(s["status"], "UNVERIFIED", "{s}");
    assert!(ctx.events_ok(&app, &[]).await.is_empty());

    db.batch(if crate::POSTGRES {
        "DROP TRIGGER fail_delivery ON deliveries;"
    } else {
        "DROP TRIGGER fail_delivery;"
    })
    .await;
    let v = ctx.verify_ok(&app, &a.signature).await;
    assert_eq!(v["clickwrapEventId"], a.event_id.as_str());
    assert_eq!(ctx.deliveries(&a.event_id).await.len(), 1);
    assert_eq!(ctx.status_of(&app, "ann", &tid).await["status"], "ACCEPTED");
    ctx.stop().await;
}

/// Actions arriving together are written together (SQLite: the writer's group commit; PostgreSQL:
/// the node's action batch, one statement for all) — each recorded as it was asked for, and one
/// whose row cannot be written fails alone: the others of its batch are recorded.
#[tokio::test]
async fn concurrent_actions_are_each_recorded_and_one_that_fails_fails_alone() {
    let ctx = Ctx::start().await;
    let (web, shop) = (ctx.app("Web").await, ctx.app("Shop").await);
    let (terms, privacy) = (ctx.published("Terms").await, ctx.published("Privacy").await);
    let db = ctx.db().await;
    db.batch(if crate::POSTGRES {
        "CREATE FUNCTION fail_event() RETURNS trigger LANGUAGE plpgsql AS $$ \
         BEGIN IF NEW.end_user_id LIKE 'poison-%' THEN RAISE EXCEPTION 'injected failure'; END IF; \
         RETURN NEW; END $$; \
         CREATE TRIGGER fail_event BEFORE INSERT ON events \
         FOR EACH ROW EXECUTE FUNCTION fail_event();"
    } else {
        "CREATE TRIGGER fail_event BEFORE INSERT ON events WHEN NEW.end_user_id LIKE 'poison-%' \
         BEGIN SELECT RAISE(ABORT, 'injected failure'); END;"
    })
    .await;

    // Two rounds of 64 at once, over two integrations and two templates; every 16th poisoned.
    let mut asked = Vec::new();
    for round in 0..2 {
        let calls = (0..64).map(|i| {
            let (api, app) = (ctx.api.clone(), if i % 2 == 0 { &web } else { &shop });
            let tid = if i % 3 == 0 { &terms } else { &privacy };
            let user = match i % 16 {
                7 => format!("poison-{round}-{i}"),
                _ => format!("user-{round}-{i}"),
            };
            let action = if i % 5 == 0 { "DECLINED" } else { "ACCEPTED" };
            let placeholders = format!("{{\"n\":\"{round}-{i}\"}}");
            let b = json!({
                "appId": app.id, "clickwrapTemplateId": tid, "endUserId": user,
                "action": action, "templatePlaceholders": placeholders,
            });
            let asked = (app.clone(), tid.clone(), user, action, placeholders);
            async move { (asked, api.sdk_post(&b).await) }
        });
        asked.extend(futures_util::future::join_all(calls).await);
    }

    let mut recorded = 0;
    for ((app, tid, user, action, placeholders), res) in asked {
        if user.starts_with("poison-") {
            let err = expect_error(res, StatusCode::INTERNAL_SERVER_ERROR).await;
            assert!(
                !err["message"].as_str().unwrap().contains("injected"),
                "the cause leaks: {err}"
            );
            continue;
        }
        let acted = body(res, StatusCode::CREATED).await;
        let signature = acted["clicktermSignature"].as_str().unwrap();
        let v = ctx.verify_ok(&app, signature).await;
        assert_eq!(v["clickwrapEventId"], acted["clickwrapEventId"], "{v}");
        assert_eq!(v["clickwrapTemplateId"], tid.as_str(), "{v}");
        assert_eq!(v["endUserId"], user.as_str(), "{v}");
        assert_eq!(v["clickwrapEventStatus"], action, "{v}");
        assert_eq!(v["templatePlaceholders"], placeholders.as_str(), "{v}");
        recorded += 1;
    }
    assert_eq!(recorded, 2 * 60);
    let poisoned = db
        .int(
            "SELECT count(*) FROM events WHERE end_user_id LIKE 'poison-%'",
            &[],
        )
        .await;
    assert_eq!(poisoned, Some(0));
    let all = db.int("SELECT count(*) FROM events", &[]).await;
    assert_eq!(all, Some(2 * 60), "one row per recorded action");
    ctx.stop().await;
}

#[tokio::test]
async fn sdk_bad_input_is_refused_by_name_and_records_nothing() {
    let ctx = Ctx::start().await;
    let app = ctx.app("Web").await;
    let tid = ctx.published("Terms").await;
    let get = |user: String, extra: Vec<(&'static str, &'static str)>| {
        let mut params: Vec<(&str, &str)> = vec![
            ("appId", &app.id),
            ("clickwrapTemplateId", &tid),
            ("endUserId", &user),
        ];
        params.extend(extra);
        let url = ctx.sdk_url(&params);
        async move { common::client().get(url).send().await.unwrap() }
    };
    let act = |b: Value| {
        let api = ctx.api.clone();
        async move { api.sdk_post(&b).await }
    };
    let act_body = |user: &str, action: &str| json!({"appId": app.id, "clickwrapTemplateId": tid, "endUserId": user, "action": action});

    // endUserId: 256 characters are fine, 257 are not.
    let long = "u".repeat(257);
    let just = "u".repeat(256);
    expect_field_error(
        get(long.clone(), vec![]).await,
        StatusCode::BAD_REQUEST,
        "endUserId",
    )
    .await;
    expect_field_error(
        act(act_body(&long, "ACCEPTED")).await,
        StatusCode::BAD_REQUEST,
        "endUserId",
    )
    .await;
    expect_field_error(
        get(String::new(), vec![]).await,
        StatusCode::BAD_REQUEST,
        "endUserId",
    )
    .await;
    body(get(just.clone(), vec![]).await, StatusCode::OK).await;
    body(act(act_body(&just, "ACCEPTED")).await, StatusCode::CREATED).await;

    // action.
    expect_field_error(
        act(act_body("ann", "MAYBE")).await,
        StatusCode::BAD_REQUEST,
        "action",
    )
    .await;
    expect_field_error(
        act(act_body("ann", "accepted")).await,
        StatusCode::BAD_REQUEST,
        "action",
    )
    .await;

    // templatePlaceholders that are not a JSON object.
    for bad in ["[1]", "not json", "\"text\""] {
        expect_field_error(
            get("ann".into(), vec![("templatePlaceholders", bad)]).await,
            StatusCode::BAD_REQUEST,
            "templatePlaceholders",
        )
        .await;
        let mut b = act_body("ann", "ACCEPTED");
        b["templatePlaceholders"] = json!(bad);
        expect_field_error(
            act(b).await,
            StatusCode::BAD_REQUEST,
            "templatePlaceholders",
        )
        .await;
    }
    for bad in [json!([1]), json!(5), json!({"nested": {"a": 1}})] {
        let mut b = act_body("ann", "ACCEPTED");
        b["templatePlaceholders"] = bad;
        expect_field_error(
            act(b).await,
            StatusCode::BAD_REQUEST,
            "templatePlaceholders",
        )
        .await;
    }

    // Unknown App ID: 401.
    let res = ctx
        .sdk_get(&[
            ("appId", "no-such-app"),
            ("clickwrapTemplateId", &tid),
            ("endUserId", "ann"),
        ])
        .await;
    expect_error(res, StatusCode::UNAUTHORIZED).await;
    let mut b = act_body("ann", "ACCEPTED");
    b["appId"] = json!("no-such-app");
    expect_error(act(b).await, StatusCode::UNAUTHORIZED).await;
    let res = ctx
        .sdk_get(&[("clickwrapTemplateId", &tid), ("endUserId", "ann")])
        .await;
    expect_field_error(res, StatusCode::BAD_REQUEST, "appId").await;

    // Unknown template: 404; disabled template: 404.
    let res = ctx
        .sdk_get(&[
            ("appId", &app.id),
            ("clickwrapTemplateId", "no-such-template"),
            ("endUserId", "ann"),
        ])
        .await;
    expect_error(res, StatusCode::NOT_FOUND).await;
    let off = ctx.published("Switched off").await;
    ctx.present(&app, &off, "ann").await;
    ctx.patch_template(&off, json!({"enabled": false})).await;
    let res = ctx
        .sdk_get(&[
            ("appId", &app.id),
            ("clickwrapTemplateId", &off),
            ("endUserId", "ann"),
        ])
        .await;
    expect_error(res, StatusCode::NOT_FOUND).await;
    let mut b = act_body("ann", "ACCEPTED");
    b["clickwrapTemplateId"] = json!(off);
    expect_error(act(b).await, StatusCode::NOT_FOUND).await;
    // Unpublished template: 404.
    let draft = ctx.template(terms("Draft")).await;
    let mut b = act_body("ann", "ACCEPTED");
    b["clickwrapTemplateId"] = json!(draft);
    expect_error(act(b).await, StatusCode::NOT_FOUND).await;

    // A template linked only to another integration: 403.
    let other = ctx.app("Other").await;
    let mut linked = terms("Other's");
    linked["integrations"] = json!([other.id]);
    let linked = ctx.template(linked).await;
    ctx.publish(&linked, json!({"type": "MAJOR"})).await;
    let res = ctx
        .sdk_get(&[
            ("appId", &app.id),
            ("clickwrapTemplateId", &linked),
            ("endUserId", "ann"),
        ])
        .await;
    let err = expect_error(res, StatusCode::FORBIDDEN).await;
    assert_eq!(err["code"], "template_not_linked", "{err}");
    let mut b = act_body("ann", "ACCEPTED");
    b["clickwrapTemplateId"] = json!(linked);
    expect_error(act(b).await, StatusCode::FORBIDDEN).await;
    // The integration it is linked to may use it.
    ctx.present(&other, &linked, "ann").await;

    // Nothing of the refused requests was recorded: ann has no events, one presentation of each of
    // `off` (before it was disabled) and `linked` (through Other).
    assert_eq!(
        ctx.count("SELECT count(*) FROM events WHERE end_user_id = $1", "ann")
            .await,
        0
    );
    assert_eq!(
        ctx.count(
            "SELECT count(*) FROM presentations WHERE end_user_id = $1",
            "ann"
        )
        .await,
        2
    );

    // A disabled integration: 403 for both.
    ctx.patch_app(&app, json!({"status": "DISABLED"})).await;
    let err = expect_error(get("ann".into(), vec![]).await, StatusCode::FORBIDDEN).await;
    assert_eq!(err["code"], "integration_disabled", "{err}");
    let err = expect_error(
        act(act_body("ann", "ACCEPTED")).await,
        StatusCode::FORBIDDEN,
    )
    .await;
    assert_eq!(err["code"], "integration_disabled", "{err}");
    assert_eq!(
        ctx.count("SELECT count(*) FROM events WHERE end_user_id = $1", "ann")
            .await,
        0
    );
    ctx.stop().await;
}

/// The server keeps integrations' credentials in memory; every change to them must still take effect on
/// the very next request. Each step below first makes sure the credentials are cached (a successful or
/// refused call), then changes them through the admin API and calls again at once.
#[tokio::test]
async fn credential_changes_take_effect_on_the_next_request() {
    let ctx = Ctx::start().await;
    let app = ctx.app("Cached").await;
    let path = "/public-client/v1/clickwraps/ann/status";
    let call = |app: &App| {
        let (ctx, app) = (&ctx, app.clone());
        async move { ctx.get(&app, path).await.status() }
    };
    assert_eq!(call(&app).await, StatusCode::OK);
    assert_eq!(call(&app).await, StatusCode::OK);

    // A regenerated key: the old one is refused at once, the new one works.
    let res = ctx
        .admin
        .post(ctx.url(&format!("/api/v1/integrations/{}/app-key", app.id)))
        .send()
        .await
        .unwrap();
    let fresh = App {
        id: app.id.clone(),
        key: body(res, StatusCode::OK).await["appKey"]
            .as_str()
            .unwrap()
            .to_string(),
    };
    assert_eq!(call(&app).await, StatusCode::UNAUTHORIZED);
    assert_eq!(call(&fresh).await, StatusCode::OK);

    // Disabled: 403 at once; enabled again: 200 at once.
    ctx.patch_app(&fresh, json!({"status": "DISABLED"})).await;
    assert_eq!(call(&fresh).await, StatusCode::FORBIDDEN);
    ctx.patch_app(&fresh, json!({"status": "ENABLED"})).await;
    assert_eq!(call(&fresh).await, StatusCode::OK);

    // Changes that do not touch the credentials leave them working.
    ctx.patch_app(&fresh, json!({"name": "Cached, renamed"}))
        .await;
    assert_eq!(call(&fresh).await, StatusCode::OK);

    // Deleted: 401 at once.
    ctx.admin
        .delete(ctx.url(&format!("/api/v1/integrations/{}", fresh.id)))
        .json_with(StatusCode::NO_CONTENT)
        .await;
    assert_eq!(call(&fresh).await, StatusCode::UNAUTHORIZED);
    assert_eq!(call(&app).await, StatusCode::UNAUTHORIZED);
    ctx.stop().await;
}
