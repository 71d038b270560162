//! Templates and the public client API's authentication, end to end: the real server on a real port,
//! admin API calls to set things up, the public API (`X-APP-ID` / `X-APP-KEY`) to observe them.

use crate::common;
use crate::common::Call;

use std::time::Duration;

use crate::common::{TestServer, expect_error, keys};
use reqwest::StatusCode;
use serde_json::{Value, json};

/// Calls `GET /public-client/v1/clickwrap-templates` as the integration.
async fn public_templates(
    server: &TestServer,
    app_id: &str,
    app_key: &str,
    query: &str,
) -> reqwest::Response {
    common::client()
        .get(server.url(&format!("/public-client/v1/clickwrap-templates{query}")))
        .header("X-APP-ID", app_id)
        .header("X-APP-KEY", app_key)
        .send()
        .await
        .expect("request")
}

async fn create_template(admin: &reqwest::Client, server: &TestServer, body: Value) -> Value {
    let res = admin
        .post(server.url("/api/v1/templates"))
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = res.status();
    let json: Value = res.json().await.unwrap();
    assert_eq!(status, StatusCode::CREATED, "{json}");
    json
}

fn terms(name: &str) -> Value {
    json!({
        "name": name,
        "tags": ["legal"],
        "defaultLanguage": "en",
        "languages": {"en": {"title": "Terms", "content": "Hello {{fullName}}"}},
    })
}

async fn publish(
    admin: &reqwest::Client,
    server: &TestServer,
    id: &str,
    body: Value,
) -> reqwest::Response {
    admin
        .post(server.url(&format!("/api/v1/templates/{id}/versions")))
        .json(&body)
        .send()
        .await
        .unwrap()
}

/// `(templateId, version, minor)` of each listed template.
async fn listed(
    server: &TestServer,
    app_id: &str,
    app_key: &str,
    query: &str,
) -> Vec<(String, i64, i64)> {
    let res = public_templates(server, app_id, app_key, query).await;
    assert_eq!(res.status(), StatusCode::OK);
    let items: Vec<Value> = res.json().await.unwrap();
    items
        .iter()
        .map(|i| {
            (
                i["clickwrapTemplateId"].as_str().unwrap().to_string(),
                i["clickwrapTemplateVersion"].as_i64().unwrap(),
                i["clickwrapTemplateVersionMinor"].as_i64().unwrap(),
            )
        })
        .collect()
}

#[tokio::test]
async fn public_api_credentials_follow_the_integration_lifecycle() {
    let server = TestServer::start().await;
    let admin = server.admin_client().await;
    let (app_id, key, _) = server.create_integration(&admin, "Web").await;

    assert_eq!(
        public_templates(&server, &app_id, &key, "").await.status(),
        StatusCode::OK
    );

    // Missing or wrong credentials.
    let res = common::client()
        .get(server.url("/public-client/v1/clickwrap-templates"))
        .send()
        .await
        .unwrap();
    expect_error(res, StatusCode::UNAUTHORIZED).await;
    expect_error(
        public_templates(&server, &app_id, "ctk_wrong", "").await,
        StatusCode::UNAUTHORIZED,
    )
    .await;
    expect_error(
        public_templates(&server, "no-such-app", &key, "").await,
        StatusCode::UNAUTHORIZED,
    )
    .await;
    // The key of one integration does not open another.
    let (other_id, other_key, _) = server.create_integration(&admin, "Other").await;
    expect_error(
        public_templates(&server, &other_id, &key, "").await,
        StatusCode::UNAUTHORIZED,
    )
    .await;
    assert_eq!(
        public_templates(&server, &other_id, &other_key, "")
            .await
            .status(),
        StatusCode::OK
    );

    // Regenerate: the old key stops working at once, the new one works.
    let res = admin
        .post(server.url(&format!("/api/v1/integrations/{app_id}/app-key")))
        .send()
        .await
        .unwrap();
    let new_key = res.json::<Value>().await.unwrap()["appKey"]
        .as_str()
        .unwrap()
        .to_string();
    assert_ne!(new_key, key);
    expect_error(
        public_templates(&server, &app_id, &key, "").await,
        StatusCode::UNAUTHORIZED,
    )
    .await;
    assert_eq!(
        public_templates(&server, &app_id, &new_key, "")
            .await
            .status(),
        StatusCode::OK
    );

    // Disabled: 403; enabled again: 200.
    let patch = |status: &str| {
        admin
            .patch(server.url(&format!("/api/v1/integrations/{app_id}")))
            .json(&json!({"status": status}))
            .send()
    };
    assert_eq!(patch("DISABLED").await.unwrap().status(), StatusCode::OK);
    let body = expect_error(
        public_templates(&server, &app_id, &new_key, "").await,
        StatusCode::FORBIDDEN,
    )
    .await;
    assert_eq!(body["code"], "integration_disabled");
    assert_eq!(patch("ENABLED").await.unwrap().status(), StatusCode::OK);
    assert_eq!(
        public_templates(&server, &app_id, &new_key, "")
            .await
            .status(),
        StatusCode::OK
    );

    // Deleted: 401, even though disabled would have been 403.
    admin
        .delete(server.url(&format!("/api/v1/integrations/{app_id}")))
        .json_with(StatusCode::NO_CONTENT)
        .await;
    expect_error(
        public_templates(&server, &app_id, &new_key, "").await,
        StatusCode::UNAUTHORIZED,
    )
    .await;

    // Non-JSON Accept is 406 on the public API too.
    let res = common::client()
        .get(server.url("/public-client/v1/clickwrap-templates"))
        .header("X-APP-ID", &other_id)
        .header("X-APP-KEY", &other_key)
        .header("Accept", "text/html")
        .send()
        .await
        .unwrap();
    expect_error(res, StatusCode::NOT_ACCEPTABLE).await;
    server.stop().await;
}

#[tokio::test]
async fn the_effective_version_follows_effective_at_not_publication_order() {
    let server = TestServer::start().await;
    let admin = server.admin_client().await;
    let (app_id, key, _) = server.create_integration(&admin, "Web").await;
    let t = create_template(&admin, &server, terms("Terms of Service")).await;
    let id = t["id"].as_str().unwrap().to_string();
    assert_eq!(t["effectiveVersion"], Value::Null);
    // Not listed before anything is published.
    assert!(listed(&server, &app_id, &key, "").await.is_empty());

    // A minor version cannot come first.
    let body = expect_error(
        publish(&admin, &server, &id, json!({"type": "MINOR"})).await,
        StatusCode::BAD_REQUEST,
    )
    .await;
    assert!(
        body["message"].as_str().unwrap().starts_with("type:"),
        "{body}"
    );

    let res = publish(&admin, &server, &id, json!({"type": "MAJOR"})).await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let v: Value = res.json().await.unwrap();
    assert_eq!(
        (v["version"].as_i64(), v["versionMinor"].as_i64()),
        (Some(1), Some(0))
    );
    assert_eq!(
        listed(&server, &app_id, &key, "").await,
        vec![(id.clone(), 1, 0)]
    );

    let res = publish(&admin, &server, &id, json!({"type": "MINOR"})).await;
    assert_eq!(res.status(), StatusCode::CREATED);
    assert_eq!(
        listed(&server, &app_id, &key, "").await,
        vec![(id.clone(), 1, 1)]
    );

    // 2.0 published now but effective in the future: 1.1 stays effective until then.
    let soon = time::OffsetDateTime::now_utc() + Duration::from_millis(1500);
    let soon = soon
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    let res = publish(
        &admin,
        &server,
        &id,
        json!({"type": "MAJOR", "effectiveAt": soon}),
    )
    .await;
    assert_eq!(res.status(), StatusCode::CREATED);
    // And 3.0 far in the future: it must not win by being published last.
    let later = "2099-01-01T00:00:00Z";
    let res = publish(
        &admin,
        &server,
        &id,
        json!({"type": "MAJOR", "effectiveAt": later}),
    )
    .await;
    let v: Value = res.json().await.unwrap();
    assert_eq!(v["version"], 3);
    assert_eq!(
        listed(&server, &app_id, &key, "").await,
        vec![(id.clone(), 1, 1)]
    );

    let deadline = std::time::Instant::now() + common::DEADLINE;
    loop {
        let now = listed(&server, &app_id, &key, "").await;
        if now == vec![(id.clone(), 2, 0)] {
            break;
        }
        assert_eq!(
            now,
            vec![(id.clone(), 1, 1)],
            "only 1.1 or 2.0 may be effective"
        );
        assert!(
            std::time::Instant::now() < deadline,
            "2.0 never became effective"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // The admin view lists all four versions and names the effective one.
    let t: Value = admin
        .get(server.url(&format!("/api/v1/templates/{id}")))
        .json_ok()
        .await;
    assert_eq!(t["versions"].as_array().unwrap().len(), 4);
    assert_eq!(t["effectiveVersion"]["version"], 2);

    // The public item has exactly ClickTerm's fields.
    let items: Vec<Value> = public_templates(&server, &app_id, &key, "")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        keys(&items[0]),
        [
            "clickwrapTemplateId",
            "clickwrapTemplateName",
            "clickwrapTemplateVersion",
            "clickwrapTemplateVersionMinor",
            "effectiveAt",
            "mustAcceptBy",
            "tags"
        ]
    );
    assert_eq!(items[0]["clickwrapTemplateName"], "Terms of Service");
    assert_eq!(items[0]["tags"], json!(["legal"]));
    assert!(items[0]["effectiveAt"].as_str().unwrap().ends_with('Z'));
    server.stop().await;
}

#[tokio::test]
async fn visibility_follows_links_tags_and_the_enabled_flag() {
    let server = TestServer::start().await;
    let admin = server.admin_client().await;
    let (a_id, a_key, _) = server.create_integration(&admin, "A").await;
    let (b_id, b_key, _) = server.create_integration(&admin, "B").await;

    let mut open = terms("Open to all");
    open["tags"] = json!(["legal", "web"]);
    let open = create_template(&admin, &server, open).await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let mut for_a = terms("Only A");
    for_a["integrations"] = json!([a_id]);
    for_a["tags"] = json!(["mobile"]);
    let for_a = create_template(&admin, &server, for_a).await["id"]
        .as_str()
        .unwrap()
        .to_string();
    for id in [&open, &for_a] {
        assert_eq!(
            publish(&admin, &server, id, json!({"type": "MAJOR"}))
                .await
                .status(),
            StatusCode::CREATED
        );
    }

    // A has templates linked to it, so it sees only those; B sees the unlinked one.
    assert_eq!(
        listed(&server, &a_id, &a_key, "").await,
        vec![(for_a.clone(), 1, 0)]
    );
    assert_eq!(
        listed(&server, &b_id, &b_key, "").await,
        vec![(open.clone(), 1, 0)]
    );

    // Tags: any of them.
    assert_eq!(listed(&server, &b_id, &b_key, "?tags=web").await.len(), 1);
    assert_eq!(
        listed(&server, &b_id, &b_key, "?tags=nope&tags=legal")
            .await
            .len(),
        1
    );
    assert_eq!(
        listed(&server, &b_id, &b_key, "?tags=mobile").await.len(),
        0
    );
    expect_error(
        public_templates(&server, &b_id, &b_key, "?tag=web").await,
        StatusCode::BAD_REQUEST,
    )
    .await;

    // Disabled templates are not listed.
    admin
        .patch(server.url(&format!("/api/v1/templates/{open}")))
        .json(&json!({"enabled": false}))
        .json_ok()
        .await;
    assert!(listed(&server, &b_id, &b_key, "").await.is_empty());
    server.stop().await;
}

#[tokio::test]
async fn bad_template_input_is_refused_by_name_and_changes_nothing() {
    let server = TestServer::start().await;
    let admin = server.admin_client().await;
    let t = create_template(&admin, &server, terms("Terms")).await;
    let id = t["id"].as_str().unwrap().to_string();

    let cases = [
        (
            json!({"name": "x", "defaultLanguage": "en", "languages": {}}),
            "languages",
        ),
        (
            json!({"name": "x", "defaultLanguage": "de", "languages": {"en": {"title": "t", "content": "c"}}}),
            "languages",
        ),
        (
            json!({"name": "x", "defaultLanguage": "e n", "languages": {"en": {"title": "t", "content": "c"}}}),
            "defaultLanguage",
        ),
        (
            json!({"name": "", "defaultLanguage": "en", "languages": {"en": {"title": "t", "content": "c"}}}),
            "name",
        ),
        (
            json!({"name": "x", "defaultLanguage": "en", "languages": {"en": {"title": "", "content": "c"}}}),
            "languages",
        ),
        (
            json!({"name": "x", "defaultLanguage": "en", "languages": {"en": {"title": "t", "content": "c"}}, "integrations": ["nope"]}),
            "integrations",
        ),
    ];
    for (body, field) in cases {
        let res = admin
            .post(server.url("/api/v1/templates"))
            .json(&body)
            .send()
            .await
            .unwrap();
        let err = expect_error(res, StatusCode::BAD_REQUEST).await;
        assert!(
            err["message"]
                .as_str()
                .unwrap()
                .starts_with(&format!("{field}:")),
            "{body} → {err}"
        );
    }

    // A PATCH that removes the default language's text is refused and leaves the draft as it was.
    let res = admin
        .patch(server.url(&format!("/api/v1/templates/{id}")))
        .json(
            &json!({"name": "Renamed", "languages": {"de": {"title": "AGB", "content": "Hallo"}}}),
        )
        .send()
        .await
        .unwrap();
    expect_error(res, StatusCode::BAD_REQUEST).await;
    let now: Value = admin
        .get(server.url(&format!("/api/v1/templates/{id}")))
        .json_ok()
        .await;
    assert_eq!(now["name"], "Terms");
    assert_eq!(now["languages"]["en"]["title"], "Terms");

    let res = publish(&admin, &server, &id, json!({"type": "MAJOR", "effectiveAt": "2030-01-01T00:00:00Z", "mustAcceptBy": "2029-01-01T00:00:00Z"})).await;
    expect_error(res, StatusCode::BAD_REQUEST).await;
    let res = publish(
        &admin,
        &server,
        &id,
        json!({"type": "MAJOR", "effectiveAt": "tomorrow"}),
    )
    .await;
    expect_error(res, StatusCode::BAD_REQUEST).await;
    let res = publish(&admin, &server, &id, json!({"type": "PATCH"})).await;
    expect_error(res, StatusCode::BAD_REQUEST).await;
    let res = publish(
        &admin,
        &server,
        "no-such-template",
        json!({"type": "MAJOR"}),
    )
    .await;
    expect_error(res, StatusCode::NOT_FOUND).await;
    let now: Value = admin
        .get(server.url(&format!("/api/v1/templates/{id}")))
        .json_ok()
        .await;
    assert_eq!(now["versions"], json!([]));

    // Published versions are immutable in the database itself.
    assert_eq!(
        publish(&admin, &server, &id, json!({"type": "MAJOR"}))
            .await
            .status(),
        StatusCode::CREATED
    );
    let stopped = server.stop().await;
    let db = common::peek::Db::open(&stopped.config, &stopped.data_dir).await;
    let err = db
        .try_batch("UPDATE template_versions SET effective_at = 0")
        .await
        .unwrap_err();
    assert!(err.contains("immutable"), "{err}");
    let err = db
        .try_batch("UPDATE template_version_texts SET content = 'changed'")
        .await
        .unwrap_err();
    assert!(err.contains("immutable"), "{err}");
}
