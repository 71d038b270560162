//! End-to-end tests of the foundation: admin login and sessions, the admin API's authentication and
//! integration lifecycle, error shapes, secrets at rest, file permissions, health and shutdown. Each test
//! runs the real server in-process on an ephemeral loopback port with its own data directory.

use crate::common;
use crate::common::Call;

use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;

use crate::common::{ADMIN, TestServer, bearer_client, client, cookie_client, expect_error, keys};
use reqwest::{Method, StatusCode, header};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

fn login_body(password: &str) -> Value {
    json!({"username": ADMIN, "password": password})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_sets_a_strict_httponly_cookie_and_wrong_password_is_401() {
    let server = TestServer::start().await;
    let http = client();

    let res = http
        .post(server.url("/api/v1/login"))
        .json(&login_body(&server.admin_password()))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let cookies: Vec<String> = res
        .headers()
        .get_all(header::SET_COOKIE)
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .collect();
    assert_eq!(cookies.len(), 1, "{cookies:?}");
    let attrs: Vec<String> = cookies[0]
        .split(';')
        .map(|a| a.trim().to_ascii_lowercase())
        .collect();
    assert!(attrs.iter().any(|a| a == "httponly"), "{cookies:?}");
    assert!(attrs.iter().any(|a| a == "samesite=strict"), "{cookies:?}");
    assert!(
        !attrs.iter().any(|a| a == "secure"),
        "no Secure over plain http: {cookies:?}"
    );
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["username"], ADMIN);

    // The cookie is a live session.
    let session = cookies[0].split(';').next().unwrap().to_string();
    let res = http
        .get(server.url("/api/v1/session"))
        .header(header::COOKIE, &session)
        .json_ok()
        .await;
    assert_eq!(res["username"], ADMIN);

    for (user, password) in [
        (ADMIN, "wrong password, long enough"),
        ("nobody", server.admin_password().as_str()),
    ] {
        let res = http
            .post(server.url("/api/v1/login"))
            .json(&json!({"username": user, "password": password}))
            .send()
            .await
            .unwrap();
        assert!(res.headers().get(header::SET_COOKIE).is_none());
        let body = expect_error(res, StatusCode::UNAUTHORIZED).await;
        assert_eq!(body["code"], "unauthorized");
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_is_throttled_after_max_failures_even_with_the_right_password() {
    let server = TestServer::start_with(|c| c.auth.login_max_failures = 3).await;
    let http = client();
    for i in 0..3 {
        let res = http
            .post(server.url("/api/v1/login"))
            .json(&login_body(&format!("wrong password {i}")))
            .send()
            .await
            .unwrap();
        expect_error(res, StatusCode::UNAUTHORIZED).await;
    }
    let res = http
        .post(server.url("/api/v1/login"))
        .json(&login_body(&server.admin_password()))
        .send()
        .await
        .unwrap();
    let retry_after = res
        .headers()
        .get(header::RETRY_AFTER)
        .map(|v| v.to_str().unwrap().to_string());
    assert!(res.headers().get(header::SET_COOKIE).is_none());
    let body = expect_error(res, StatusCode::TOO_MANY_REQUESTS).await;
    assert_eq!(body["code"], "rate_limited");
    let secs: u64 = retry_after
        .expect("Retry-After header")
        .parse()
        .expect("Retry-After is delay-seconds");
    assert!(
        (1..=server.config.auth.login_window_secs).contains(&secs),
        "{secs}"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logout_ends_the_session() {
    let server = TestServer::start().await;
    let http = client();
    let res = http
        .post(server.url("/api/v1/login"))
        .json(&login_body(&server.admin_password()))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let cookie = res
        .headers()
        .get(header::SET_COOKIE)
        .unwrap()
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string();

    let session = |c: &str| {
        http.get(server.url("/api/v1/integrations"))
            .header(header::COOKIE, c.to_string())
            .send()
    };
    assert_eq!(session(&cookie).await.unwrap().status(), StatusCode::OK);

    let res = http
        .post(server.url("/api/v1/logout"))
        .header(header::COOKIE, &cookie)
        .header("x-requested-with", "a-script")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    let cleared = res
        .headers()
        .get(header::SET_COOKIE)
        .expect("logout clears the cookie")
        .to_str()
        .unwrap()
        .to_ascii_lowercase();
    assert!(cleared.contains("max-age=0"), "{cleared}");

    // The very same cookie no longer opens anything.
    expect_error(session(&cookie).await.unwrap(), StatusCode::UNAUTHORIZED).await;
    let res = http
        .get(server.url("/api/v1/session"))
        .header(header::COOKIE, &cookie)
        .send()
        .await
        .unwrap();
    expect_error(res, StatusCode::UNAUTHORIZED).await;
    server.stop().await;
}

/// Every route under /api/v1 but login, in an order where the destructive ones come last.
fn admin_routes(
    app_id: &str,
    template_id: &str,
    delivery_id: &str,
    event_id: &str,
    (token_id, session_id): (&str, &str),
    (new_user, session_user): (&str, &str),
) -> Vec<(Method, String, Option<Value>)> {
    let i = format!("/api/v1/integrations/{app_id}");
    let t = format!("/api/v1/templates/{template_id}");
    let client = rcgen::generate_simple_self_signed(vec!["route-table-client".to_string()])
        .expect("a client certificate");
    let template = json!({
        "name": "unauthorised",
        "defaultLanguage": "en",
        "languages": {"en": {"title": "T", "content": "C"}},
    });
    vec![
        (Method::GET, "/api/v1/events".into(), None),
        (Method::GET, format!("/api/v1/events/{event_id}"), None),
        (Method::GET, "/api/v1/events/export".into(), None),
        (
            Method::GET,
            format!("/api/v1/events/{event_id}/evidence"),
            None,
        ),
        (
            Method::GET,
            format!("/api/v1/events/{event_id}/certificate.pdf"),
            None,
        ),
        (Method::GET, "/api/v1/ledger/head".into(), None),
        (Method::GET, format!("{i}/delivery-counts"), None),
        (
            Method::POST,
            format!("{i}/redeliver"),
            Some(json!({"from": "2020-01-01T00:00:00Z", "to": "2099-01-01T00:00:00Z"})),
        ),
        (Method::GET, format!("{i}/deliveries"), None),
        (Method::POST, format!("{i}/test-webhook"), None),
        (
            Method::GET,
            format!("/api/v1/deliveries/{delivery_id}"),
            None,
        ),
        (
            Method::POST,
            format!("/api/v1/deliveries/{delivery_id}/redeliver"),
            None,
        ),
        (Method::GET, "/api/v1/templates".into(), None),
        (Method::POST, "/api/v1/templates".into(), Some(template)),
        (Method::GET, t.clone(), None),
        (Method::PATCH, t.clone(), Some(json!({"name": "renamed"}))),
        (
            Method::POST,
            format!("{t}/preview"),
            Some(json!({"templatePlaceholders": {"fullName": "Ann"}})),
        ),
        (
            Method::POST,
            format!("{t}/versions"),
            Some(json!({"type": "MAJOR"})),
        ),
        (Method::GET, "/api/v1/session".into(), None),
        (Method::GET, "/api/v1/stats/overview".into(), None),
        (Method::GET, "/api/v1/stats/attempts".into(), None),
        (Method::GET, "/api/v1/stats/events".into(), None),
        (Method::GET, "/api/v1/integrations".into(), None),
        (
            Method::POST,
            "/api/v1/integrations".into(),
            Some(json!({"name": "unauthorised"})),
        ),
        (Method::GET, i.clone(), None),
        (Method::PATCH, i.clone(), Some(json!({"name": "renamed"}))),
        (Method::POST, format!("{i}/app-key"), None),
        (Method::GET, format!("{i}/signing-secret"), None),
        (Method::POST, format!("{i}/signing-secret"), None),
        // Set, shown, removed: in this order each succeeds.
        (
            Method::PUT,
            format!("{i}/client-certificate"),
            Some(
                json!({"certificate": client.cert.pem(), "privateKey": client.signing_key.serialize_pem()}),
            ),
        ),
        (Method::GET, format!("{i}/client-certificate"), None),
        (Method::DELETE, format!("{i}/client-certificate"), None),
        (Method::GET, "/api/v1/audit".into(), None),
        (Method::GET, "/api/v1/tokens".into(), None),
        (
            Method::POST,
            "/api/v1/tokens".into(),
            Some(json!({"name": "made by the route table"})),
        ),
        (Method::DELETE, format!("/api/v1/tokens/{token_id}"), None),
        (Method::GET, "/api/v1/users".into(), None),
        (
            Method::POST,
            "/api/v1/users".into(),
            Some(json!({"username": "route-table", "role": "viewer"})),
        ),
        (
            Method::PATCH,
            format!("/api/v1/users/{new_user}"),
            Some(json!({"role": "admin"})),
        ),
        (
            Method::POST,
            format!("/api/v1/users/{new_user}/password"),
            Some(json!({})),
        ),
        (
            Method::GET,
            format!("/api/v1/users/{session_user}/sessions"),
            None,
        ),
        (
            Method::DELETE,
            format!("/api/v1/users/{session_user}/sessions/{session_id}"),
            None,
        ),
        (
            Method::DELETE,
            format!("/api/v1/users/{session_user}/sessions"),
            None,
        ),
        (Method::DELETE, format!("/api/v1/users/{new_user}"), None),
        (
            Method::POST,
            "/api/v1/session/password".into(),
            Some(json!({"currentPassword": "x", "newPassword": "a long enough password"})),
        ),
        (Method::DELETE, i, None),
        (Method::POST, "/api/v1/logout".into(), None),
    ]
}

/// The (method, path) pairs that src/http/mod.rs registers, read from its source so a route added there
/// is covered by the tests below without a line of its own.
fn registered_routes() -> BTreeSet<(String, String)> {
    let source = include_str!("../../src/http/mod.rs");
    let mut routes = BTreeSet::new();
    for chunk in source.split(".route(").skip(1) {
        let path = chunk.split('"').nth(1).expect("a quoted route path");
        // The method routers of this route: everything up to the next route.
        for method in ["get", "post", "put", "patch", "delete", "head", "options"] {
            let call = format!("{method}(");
            let mut rest = chunk;
            while let Some(at) = rest.find(&call) {
                let before = rest[..at].chars().next_back();
                if !before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
                    routes.insert((method.to_ascii_uppercase(), path.to_string()));
                }
                rest = &rest[at + call.len()..];
            }
        }
    }
    assert!(
        routes.len() > 5,
        "could not read the routes from src/http/mod.rs: {routes:?}"
    );
    routes
}

/// The (method, path) pairs under /api/v1, so a route added there without a line in `admin_routes`
/// fails the test below.
fn registered_api_routes() -> BTreeSet<(String, String)> {
    registered_routes()
        .into_iter()
        .filter(|(_, path)| path.starts_with("/api/v1"))
        .collect()
}

#[test]
fn the_admin_route_table_covers_every_registered_api_route() {
    let mut table: BTreeSet<(String, String)> = admin_routes(
        "{app_id}",
        "{id}",
        "{id}",
        "{id}",
        ("{id}", "{id}"),
        ("{username}", "{username}"),
    )
    .into_iter()
    .map(|(m, p, _)| (m.to_string(), p))
    .collect();
    table.insert(("POST".into(), "/api/v1/login".into()));
    assert_eq!(table, registered_api_routes());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_admin_route_needs_a_session_or_token() {
    let server = TestServer::start().await;
    let admin = server.admin_client().await;
    let (app_id, app_key, _) = server.create_integration(&admin, "Guarded").await;
    let template: Value = admin
        .post(server.url("/api/v1/templates"))
        .json(&json!({
            "name": "Guarded",
            "defaultLanguage": "en",
            "languages": {"en": {"title": "T", "content": "C"}},
        }))
        .json_with(StatusCode::CREATED)
        .await;
    // A callback URL and one (held) delivery, so that the delivery routes have something to act on.
    admin
        .patch(server.url(&format!("/api/v1/integrations/{app_id}")))
        .json(&json!({"callbackUrl": common::HOOKS_URL, "webhookDeliveryEnabled": false}))
        .json_ok()
        .await;
    let delivery: Value = admin
        .post(server.url(&format!("/api/v1/integrations/{app_id}/test-webhook")))
        .json_with(StatusCode::ACCEPTED)
        .await;
    // A verified event, for the event detail route.
    let template_id = template["id"].as_str().unwrap();
    admin
        .post(server.url(&format!("/api/v1/templates/{template_id}/versions")))
        .json(&json!({"type": "MAJOR"}))
        .json_with(StatusCode::CREATED)
        .await;
    let acted: Value = client()
        .post(server.url("/public-client/v1/clickwrap"))
        .json(&json!({"appId": app_id, "clickwrapTemplateId": template_id, "endUserId": "guard", "action": "ACCEPTED"}))
        .json_with(StatusCode::CREATED).await;
    let res = client()
        .post(server.url("/public-client/v1/clickwrap/verify"))
        .header("X-APP-ID", &app_id)
        .header("X-APP-KEY", &app_key)
        .json(&json!({"clicktermSignature": acted["clicktermSignature"]}))
        .json_ok()
        .await;
    let event: Value = res;
    let sessions = admin
        .get(server.url("/api/v1/users/admin/sessions"))
        .json_ok()
        .await;
    let session_id = sessions["items"][0]["id"].as_str().unwrap().to_string();
    let routes = admin_routes(
        &app_id,
        template_id,
        delivery["id"].as_str().unwrap(),
        event["clickwrapEventId"].as_str().unwrap(),
        // The second token: the one the route table's POST makes (the first is minted below); the
        // admin's own session, ended by the table's DELETE.
        ("2", &session_id),
        ("route-table", ADMIN),
    );

    let anonymous = client();
    let bogus_token = bearer_client("ctadm_not-a-real-token");
    for (method, path, body) in &routes {
        let requests = [
            anonymous.request(method.clone(), server.url(path)),
            anonymous
                .request(method.clone(), server.url(path))
                .header(header::COOKIE, "clicktermd_session=forged"),
            anonymous
                .request(method.clone(), server.url(path))
                .header(header::AUTHORIZATION, "Basic YWRtaW46YWRtaW4="),
            bogus_token.request(method.clone(), server.url(path)),
        ];
        for req in requests {
            let req = match body {
                Some(b) => req.json(b),
                None => req,
            };
            let res = req.send().await.unwrap();
            let err = expect_error(res, StatusCode::UNAUTHORIZED).await;
            assert_eq!(err["code"], "unauthorized", "{method} {path}");
        }
    }
    // Nothing the refused requests asked for happened.
    let res = admin
        .get(server.url(&format!("/api/v1/integrations/{app_id}")))
        .json_ok()
        .await;
    assert_eq!(res["name"], "Guarded");
    let list: Value = admin
        .get(server.url("/api/v1/integrations"))
        .json_ok()
        .await;
    assert_eq!(list.as_array().unwrap().len(), 1, "{list}");

    // With a bearer token minted by the binary against the same data directory (an owner's, so that
    // every route is open to it), none is 401.
    let token = server.token_with_role("owner").await;
    assert!(token.starts_with("ctadm_"), "{token}");
    let authed = bearer_client(&token);
    for (method, path, body) in &routes {
        let req = authed.request(method.clone(), server.url(path));
        let req = match body {
            Some(b) => req.json(b),
            None => req,
        };
        let res = req.send().await.unwrap();
        let status = res.status();
        let text = res.text().await.unwrap();
        assert_ne!(status, StatusCode::UNAUTHORIZED, "{method} {path}: {text}");
        if path == "/api/v1/session/password" {
            // A token has no password of its own to change.
            assert_eq!(status, StatusCode::BAD_REQUEST, "{text}");
            assert!(text.contains("bearer token has no password"), "{text}");
            continue;
        }
        assert!(status.is_success(), "{method} {path}: {status} {text}");
    }
    server.stop().await;
}

fn integration_keys() -> Vec<&'static str> {
    let mut k = vec![
        "appId",
        "name",
        "status",
        "domains",
        "createdAt",
        "callbackUrl",
        "webhookDeliveryEnabled",
    ];
    k.sort_unstable();
    k
}

async fn get_integration(server: &TestServer, admin: &reqwest::Client, app_id: &str) -> Value {
    let res = admin
        .get(server.url(&format!("/api/v1/integrations/{app_id}")))
        .json_ok()
        .await;
    let v: Value = res;
    assert_eq!(keys(&v), integration_keys(), "{v}");
    v
}

async fn patch(
    server: &TestServer,
    admin: &reqwest::Client,
    app_id: &str,
    body: Value,
) -> reqwest::Response {
    admin
        .patch(server.url(&format!("/api/v1/integrations/{app_id}")))
        .json(&body)
        .send()
        .await
        .unwrap()
}

async fn patch_ok(
    server: &TestServer,
    admin: &reqwest::Client,
    app_id: &str,
    body: Value,
) -> Value {
    let res = patch(server, admin, app_id, body.clone()).await;
    let status = res.status();
    let v: Value = res.json().await.unwrap();
    assert_eq!(status, StatusCode::OK, "PATCH {body}: {v}");
    assert_eq!(keys(&v), integration_keys(), "{v}");
    // What the PATCH answered is what a GET now shows.
    assert_eq!(get_integration(server, admin, app_id).await, v);
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn integration_lifecycle_through_the_admin_api() {
    let server = TestServer::start().await;
    let admin = server.admin_client().await;

    // Create.
    let res = admin
        .post(server.url("/api/v1/integrations"))
        .json(&json!({"name": "Web shop"}))
        .json_with(StatusCode::CREATED)
        .await;
    let created: Value = res;
    let mut want = integration_keys();
    want.extend(["appKey", "signingSecret"]);
    want.sort_unstable();
    assert_eq!(keys(&created), want, "{created}");
    assert_eq!(created["status"], "ENABLED");
    assert_eq!(created["name"], "Web shop");
    assert_eq!(created["domains"], json!([]));
    assert_eq!(created["callbackUrl"], Value::Null);
    assert_eq!(created["webhookDeliveryEnabled"], true);
    let created_at = created["createdAt"].as_str().unwrap();
    assert!(created_at.ends_with('Z'), "{created_at}");
    let app_id = created["appId"].as_str().unwrap().to_string();
    let app_key = created["appKey"].as_str().unwrap().to_string();
    let secret = created["signingSecret"].as_str().unwrap().to_string();
    assert!(!app_id.is_empty() && !app_key.is_empty() && !secret.is_empty());
    assert_ne!(app_key, secret);

    // List and get show it, without credentials.
    let list: Value = admin
        .get(server.url("/api/v1/integrations"))
        .json_ok()
        .await;
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(keys(&list[0]), integration_keys());
    assert_eq!(list[0]["appId"], app_id.as_str());
    let got = get_integration(&server, &admin, &app_id).await;
    for k in integration_keys() {
        assert_eq!(got[k], created[k], "{k}");
    }

    // PATCH, one field at a time.
    let v = patch_ok(&server, &admin, &app_id, json!({"name": "Shop"})).await;
    assert_eq!(v["name"], "Shop");
    let v = patch_ok(
        &server,
        &admin,
        &app_id,
        json!({"domains": ["App.Example.com"]}),
    )
    .await;
    assert_eq!(v["domains"], json!(["app.example.com"]));
    let v = patch_ok(
        &server,
        &admin,
        &app_id,
        json!({"callbackUrl": "https://hooks.test/clickterm"}),
    )
    .await;
    assert_eq!(v["callbackUrl"], "https://hooks.test/clickterm");
    let res = patch(
        &server,
        &admin,
        &app_id,
        json!({"callbackUrl": "http://hooks.test/clickterm"}),
    )
    .await;
    let err = expect_error(res, StatusCode::BAD_REQUEST).await;
    assert!(
        err["message"].as_str().unwrap().contains("callbackUrl"),
        "{err}"
    );
    assert_eq!(
        get_integration(&server, &admin, &app_id).await["callbackUrl"],
        "https://hooks.test/clickterm"
    );
    let v = patch_ok(&server, &admin, &app_id, json!({"callbackUrl": null})).await;
    assert_eq!(v["callbackUrl"], Value::Null);
    let v = patch_ok(
        &server,
        &admin,
        &app_id,
        json!({"webhookDeliveryEnabled": false}),
    )
    .await;
    assert_eq!(v["webhookDeliveryEnabled"], false);
    let v = patch_ok(&server, &admin, &app_id, json!({"status": "DISABLED"})).await;
    assert_eq!(v["status"], "DISABLED");
    let v = patch_ok(&server, &admin, &app_id, json!({"status": "ENABLED"})).await;
    assert_eq!(v["status"], "ENABLED");
    let before = v;

    // One bad field and nothing changes.
    let res = patch(
        &server,
        &admin,
        &app_id,
        json!({"name": "Should not stick", "domains": ["https://bad.example.com/path"]}),
    )
    .await;
    let err = expect_error(res, StatusCode::BAD_REQUEST).await;
    assert!(
        err["message"].as_str().unwrap().contains("domains"),
        "{err}"
    );
    let res = patch(
        &server,
        &admin,
        &app_id,
        json!({"name": "Should not stick", "status": "PAUSED"}),
    )
    .await;
    expect_error(res, StatusCode::BAD_REQUEST).await;
    assert_eq!(get_integration(&server, &admin, &app_id).await, before);

    // An unknown field is named.
    let res = patch(&server, &admin, &app_id, json!({"colour": "blue"})).await;
    let err = expect_error(res, StatusCode::BAD_REQUEST).await;
    assert!(err["message"].as_str().unwrap().contains("colour"), "{err}");
    assert_eq!(get_integration(&server, &admin, &app_id).await, before);

    // Credentials.
    let res = admin
        .post(server.url(&format!("/api/v1/integrations/{app_id}/app-key")))
        .json_ok()
        .await;
    let new_key: Value = res;
    assert_eq!(keys(&new_key), ["appKey"]);
    let new_key = new_key["appKey"].as_str().unwrap();
    assert!(!new_key.is_empty());
    assert_ne!(new_key, app_key);

    let reveal = |admin: &reqwest::Client| {
        admin
            .get(server.url(&format!("/api/v1/integrations/{app_id}/signing-secret")))
            .send()
    };
    let res = reveal(&admin).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(
        res.json::<Value>().await.unwrap(),
        json!({"signingSecret": secret})
    );
    let res = admin
        .post(server.url(&format!("/api/v1/integrations/{app_id}/signing-secret")))
        .json_ok()
        .await;
    let rotated: Value = res;
    assert_eq!(keys(&rotated), ["signingSecret"]);
    let rotated = rotated["signingSecret"].as_str().unwrap().to_string();
    assert_ne!(rotated, secret);
    let res = reveal(&admin).await.unwrap();
    assert_eq!(
        res.json::<Value>().await.unwrap(),
        json!({"signingSecret": rotated})
    );

    // Delete.
    let url = server.url(&format!("/api/v1/integrations/{app_id}"));
    admin.delete(&url).json_with(StatusCode::NO_CONTENT).await;
    expect_error(admin.get(&url).send().await.unwrap(), StatusCode::NOT_FOUND).await;
    expect_error(
        admin.delete(&url).send().await.unwrap(),
        StatusCode::NOT_FOUND,
    )
    .await;
    expect_error(reveal(&admin).await.unwrap(), StatusCode::NOT_FOUND).await;
    let list: Value = admin
        .get(server.url("/api/v1/integrations"))
        .json_ok()
        .await;
    assert_eq!(list, json!([]));

    // The audit log has each action, by the admin, about this integration.
    let res = admin.get(server.url("/api/v1/audit")).json_ok().await;
    let audit: Value = res;
    let items = audit["items"].as_array().expect("items");
    for action in [
        "integration.create",
        "integration.update",
        "integration.app_key.regenerate",
        "integration.signing_secret.rotate",
        "integration.signing_secret.reveal",
        "integration.delete",
    ] {
        let entry = items
            .iter()
            .find(|e| e["action"] == action)
            .unwrap_or_else(|| panic!("{action} missing from {audit}"));
        assert_eq!(entry["actor"], ADMIN, "{entry}");
        assert_eq!(
            entry["from"], "127.0.0.1",
            "the client it came from: {entry}"
        );
        assert_eq!(entry["target"], app_id.as_str(), "{entry}");
        assert!(entry["at"].as_str().unwrap().ends_with('Z'), "{entry}");
    }
    // Seven successful PATCHes, each one audited; the refused ones are not.
    let updates = items
        .iter()
        .filter(|e| e["action"] == "integration.update")
        .count();
    assert_eq!(updates, 7, "{audit}");
    // Newest first.
    let ids: Vec<i64> = items.iter().map(|e| e["id"].as_i64().unwrap()).collect();
    assert!(ids.windows(2).all(|w| w[0] > w[1]), "{ids:?}");
    assert_eq!(items[0]["action"], "integration.delete");
    server.stop().await;
}

/// Every byte of every regular file under `dir`.
fn all_bytes(dir: &std::path::Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        let path = entry.path();
        if path.is_dir() {
            out.extend(all_bytes(&path));
        } else {
            out.push((path.display().to_string(), std::fs::read(&path).unwrap()));
        }
    }
    out
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn app_keys_are_never_stored_in_plaintext() {
    let server = TestServer::start().await;
    let admin = server.admin_client().await;
    let mut current = Vec::new();
    let mut old = Vec::new();
    let mut secrets = Vec::new();
    for name in ["One", "Two", "Three"] {
        let (id, key, secret) = server.create_integration(&admin, name).await;
        current.push((id, key));
        secrets.push(secret);
    }
    // Regenerate the first key: the old and the new key are both secrets.
    let (id, key) = current[0].clone();
    let res = admin
        .post(server.url(&format!("/api/v1/integrations/{id}/app-key")))
        .json_ok()
        .await;
    let new_key = res["appKey"].as_str().unwrap().to_string();
    old.push(key);
    current[0].1 = new_key;

    let stopped = server.stop().await;
    let files = stored(&stopped).await;
    // The scan does see the data: the signing secrets, which must be kept as they are, are found.
    for secret in &secrets {
        assert!(
            files
                .iter()
                .any(|(_, bytes)| contains(bytes, secret.as_bytes())),
            "signing secret not found in the stored records: the scan misses the data"
        );
    }
    for key in current.iter().map(|(_, k)| k).chain(&old) {
        // Also the part after a prefix, in case the key were stored without it.
        let tail = &key[key.len() - 24..];
        for (path, bytes) in &files {
            assert!(!contains(bytes, key.as_bytes()), "App Key found in {path}");
            assert!(!contains(bytes, tail.as_bytes()), "App Key found in {path}");
        }
    }

    for (id, key) in &current {
        let digests = key_digests(&stopped, "app_id = $1", id).await;
        assert_eq!(digests, [Sha256::digest(key.as_bytes()).to_vec()], "{id}");
    }
    let stale = Sha256::digest(old[0].as_bytes()).to_vec();
    assert!(
        key_digests(&stopped, "app_key_digest = $1", &stale)
            .await
            .is_empty(),
        "the replaced key's digest is gone"
    );
}

/// Where the stopped server's records are, as named bytes: on SQLite every file of the data
/// directory (the database, its log); on PostgreSQL every row of every table of its database, as
/// PostgreSQL writes a row out as text (byte strings in hex), each table a "file".
async fn stored(stopped: &common::StoppedServer) -> Vec<(String, Vec<u8>)> {
    if !crate::POSTGRES {
        let files = all_bytes(&stopped.data_dir);
        assert!(
            files.iter().any(|(p, _)| p.ends_with("clicktermd.db")),
            "{:?}",
            files.iter().map(|(p, _)| p).collect::<Vec<_>>()
        );
        return files;
    }
    let db = postgres_db(stopped).await;
    let tables = db
        .query(
            "SELECT table_name::text FROM information_schema.tables \
             WHERE table_schema = 'public' AND table_type = 'BASE TABLE'",
            &[],
        )
        .await
        .unwrap();
    assert!(tables.len() > 5, "the database's tables: {tables:?}");
    let mut out = Vec::new();
    for t in tables {
        let table: String = t.get(0);
        let rows = db
            .query(&format!("SELECT t::text FROM {table} t"), &[])
            .await
            .unwrap();
        let text: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
        out.push((format!("table {table}"), text.join("\n").into_bytes()));
    }
    out
}

/// The stopped server's PostgreSQL database.
async fn postgres_db(stopped: &common::StoppedServer) -> tokio_postgres::Client {
    let url = stopped.config.storage.postgres_url.as_ref().unwrap();
    let (client, connection) = tokio_postgres::connect(url.expose(), tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    client
}

/// The App Key digests of the integrations where `condition` holds of `value` (`$1`).
async fn key_digests<V>(stopped: &common::StoppedServer, condition: &str, value: &V) -> Vec<Vec<u8>>
where
    V: rusqlite::ToSql + tokio_postgres::types::ToSql + Sync,
{
    let sql = format!("SELECT app_key_digest FROM integrations WHERE {condition}");
    if crate::POSTGRES {
        let db = postgres_db(stopped).await;
        let rows = db.query(&sql, &[value]).await.unwrap();
        return rows.iter().map(|r| r.get(0)).collect();
    }
    let db = rusqlite::Connection::open(stopped.data_dir.join("clicktermd.db")).unwrap();
    let mut stmt = db.prepare(&sql).unwrap();
    stmt.query_map([value], |r| r.get(0))
        .unwrap()
        .collect::<rusqlite::Result<_>>()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_have_the_api_shape_and_status() {
    let server = TestServer::start_with(|c| c.server.max_body_bytes = 2048).await;
    let http = client();
    let login = server.url("/api/v1/login");

    // Wrong content type.
    let res = http
        .post(&login)
        .header(header::CONTENT_TYPE, "text/plain")
        .body(login_body("x").to_string())
        .send()
        .await
        .unwrap();
    let err = expect_error(res, StatusCode::UNSUPPORTED_MEDIA_TYPE).await;
    assert_eq!(err["code"], "unsupported_media_type");
    let res = http.post(&login).send().await.unwrap();
    expect_error(res, StatusCode::UNSUPPORTED_MEDIA_TYPE).await;

    // Malformed JSON.
    let res = http
        .post(&login)
        .header(header::CONTENT_TYPE, "application/json")
        .body(r#"{"username": "admin", "password": "#)
        .send()
        .await
        .unwrap();
    let err = expect_error(res, StatusCode::BAD_REQUEST).await;
    assert_eq!(err["code"], "malformed_json");
    let res = http
        .post(&login)
        .header(header::CONTENT_TYPE, "application/json")
        .body("{username: admin}")
        .send()
        .await
        .unwrap();
    let err = expect_error(res, StatusCode::BAD_REQUEST).await;
    assert_eq!(err["code"], "malformed_json");

    // Well-formed JSON of the wrong shape is a 400 too, but not "malformed".
    let res = http
        .post(&login)
        .json(&json!({"username": "admin"}))
        .send()
        .await
        .unwrap();
    let err = expect_error(res, StatusCode::BAD_REQUEST).await;
    assert_ne!(err["code"], "malformed_json");

    // Over server.max_body_bytes, with and without a Content-Length.
    let big = json!({"username": "admin", "password": "x".repeat(4096)}).to_string();
    let res = http
        .post(&login)
        .header(header::CONTENT_TYPE, "application/json")
        .body(big.clone())
        .send()
        .await
        .unwrap();
    let err = expect_error(res, StatusCode::PAYLOAD_TOO_LARGE).await;
    assert_eq!(err["code"], "body_too_large");
    assert_eq!(
        post_chunked(&server, "/api/v1/login", big.as_bytes()).await,
        413
    );
    // Just under the limit is fine (and is simply a wrong password).
    let res = http
        .post(&login)
        .json(&json!({"username": "admin", "password": "x".repeat(1900)}))
        .send()
        .await
        .unwrap();
    expect_error(res, StatusCode::UNAUTHORIZED).await;

    // Unknown route.
    for path in ["/nope", "/api/v1/nope", "/api/v1/integrations/a/b/c"] {
        let res = http.get(server.url(path)).send().await.unwrap();
        let err = expect_error(res, StatusCode::NOT_FOUND).await;
        assert_eq!(err["code"], "not_found", "{path}");
    }

    // Wrong method.
    for (method, path) in [
        (Method::GET, "/api/v1/login"),
        (Method::DELETE, "/api/v1/login"),
        (Method::POST, "/healthz"),
    ] {
        let res = http
            .request(method.clone(), server.url(path))
            .send()
            .await
            .unwrap();
        let err = expect_error(res, StatusCode::METHOD_NOT_ALLOWED).await;
        assert_eq!(err["code"], "method_not_allowed", "{method} {path}");
    }

    // A client that cannot read JSON.
    let admin = server.admin_client().await;
    for path in ["/api/v1/integrations", "/api/v1/session", "/api/v1/audit"] {
        let res = admin
            .get(server.url(path))
            .header(header::ACCEPT, "text/html")
            .send()
            .await
            .unwrap();
        let err = expect_error(res, StatusCode::NOT_ACCEPTABLE).await;
        assert_eq!(err["code"], "not_acceptable", "{path}");
        let res = admin
            .get(server.url(path))
            .header(header::ACCEPT, "text/html, application/json;q=0.9")
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::OK, "{path}");
    }
    let res = http
        .post(&login)
        .header(header::ACCEPT, "text/html")
        .json(&login_body(&server.admin_password()))
        .send()
        .await
        .unwrap();
    expect_error(res, StatusCode::NOT_ACCEPTABLE).await;
    server.stop().await;
}

/// Sends `body` to `path` with `Transfer-Encoding: chunked` (no Content-Length, so the limit must apply
/// while reading) over a raw connection; returns the response's status code.
async fn post_chunked(server: &TestServer, path: &str, body: &[u8]) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut conn = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let mut req = format!(
        "POST {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\n\
         Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
        server.addr
    )
    .into_bytes();
    for chunk in body.chunks(512) {
        req.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        req.extend_from_slice(chunk);
        req.extend_from_slice(b"\r\n");
    }
    req.extend_from_slice(b"0\r\n\r\n");
    // The server may answer and close before it has read everything; a failed write is fine then.
    let _ = conn.write_all(&req).await;
    let mut response = Vec::new();
    let _ = tokio::time::timeout(common::DEADLINE, conn.read_to_end(&mut response))
        .await
        .expect("response within the deadline");
    let head = String::from_utf8_lossy(&response);
    let status = head
        .strip_prefix("HTTP/1.1 ")
        .and_then(|rest| rest.get(..3))
        .unwrap_or_else(|| panic!("not an HTTP response: {head:?}"));
    status.parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_dir_and_database_are_private_after_first_start() {
    let server = TestServer::start().await;
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&server.data_dir), 0o700);
    let database = server.data_dir.join("clicktermd.db");
    if crate::POSTGRES {
        // The records are in PostgreSQL: a node makes no SQLite database beside them.
        assert!(!database.exists(), "{}", database.display());
    } else {
        assert_eq!(mode(&database), 0o600);
    }
    assert_eq!(mode(&server.data_dir.join("initial-admin-password")), 0o600);
    for entry in std::fs::read_dir(&server.data_dir).unwrap() {
        let path = entry.unwrap().path();
        assert_eq!(
            mode(&path) & 0o077,
            0,
            "{} is open to others",
            path.display()
        );
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthz_is_ok() {
    let server = TestServer::start().await;
    let res = client().get(server.url("/healthz")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert!(
        res.headers()[header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("application/json")
    );
    assert_eq!(res.json::<Value>().await.unwrap(), json!({"status": "ok"}));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_and_restart_keep_the_data() {
    let server = TestServer::start().await;
    let admin = server.admin_client().await;
    let (app_id, _, _) = server.create_integration(&admin, "Survivor").await;
    // An idle keep-alive connection must not hold the shutdown up (stop() has a deadline).
    admin.get(server.url("/healthz")).json_ok().await;
    let password = server.admin_password();
    let stopped = server.stop().await;

    let server = stopped.restart().await;
    assert_eq!(server.admin_password(), password);
    let admin = cookie_client();
    admin
        .post(server.url("/api/v1/login"))
        .json(&login_body(&password))
        .json_ok()
        .await;
    let res = admin
        .get(server.url(&format!("/api/v1/integrations/{app_id}")))
        .json_ok()
        .await;
    assert_eq!(res["name"], "Survivor");
    server.stop().await;
}

/// `path` with every parameter (`{id}`, `{*file}`) replaced by `value`.
fn with_parameters(path: &str, value: &str) -> String {
    path.split('/')
        .map(|segment| {
            if segment.starts_with('{') {
                value
            } else {
                segment
            }
        })
        .collect::<Vec<_>>()
        .join("/")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_with_a_path_parameter_refuses_an_undecodable_one_with_the_json_error() {
    let server = TestServer::start().await;
    // An owner's token: every route is open to it, so each reaches its path's decoding.
    let admin = bearer_client(&server.token_with_role("owner").await);
    let (app_id, app_key, _) = server.create_integration(&admin, "Paths").await;
    let routes: Vec<(String, String)> = registered_routes()
        .into_iter()
        .filter(|(_, path)| path.contains('{'))
        .collect();
    // The 19 of the API (issue #13) and the dashboard's files.
    assert!(routes.len() >= 20, "{routes:?}");
    for (method, path) in &routes {
        // Percent-encoded bytes that are not UTF-8.
        let url = server.url(&with_parameters(path, "%ff%fe"));
        let method = Method::from_bytes(method.as_bytes()).unwrap();
        let mut req = admin
            .request(method.clone(), &url)
            .header("X-APP-ID", &app_id)
            .header("X-APP-KEY", &app_key);
        if method == Method::POST || method == Method::PATCH {
            req = req.json(&json!({}));
        }
        let res = req.send().await.unwrap();
        let err = expect_error(res, StatusCode::BAD_REQUEST).await;
        assert_eq!(err["code"], "invalid_request", "{method} {path}: {err}");
        assert!(
            err["message"].as_str().unwrap().starts_with("path: "),
            "{method} {path}: {err}"
        );
    }
    server.stop().await;
}

/// Sends `request` on a raw connection and asserts an error in the API's shape with `status`.
async fn raw_error(server: &TestServer, request: &str, status: u16) -> Value {
    let res = common::raw::exchange(server.addr, request).await;
    assert_eq!(res.status(), status, "{request:?}: {res:?}");
    assert!(
        res.header("content-type")
            .is_some_and(|t| t.starts_with("application/json")),
        "{request:?}: {res:?}"
    );
    let body = res.json();
    assert_eq!(keys(&body), ["code", "message"], "{body}");
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_long_targets_and_headers_and_bad_hosts_get_the_json_error() {
    let server = TestServer::start().await;
    let http = client();

    let long = server.url(&format!("/healthz?pad={}", "a".repeat(9 * 1024)));
    let err = expect_error(
        http.get(&long).send().await.unwrap(),
        StatusCode::URI_TOO_LONG,
    )
    .await;
    assert_eq!(err["code"], "uri_too_long");
    // Under the limit it is an ordinary request.
    let fits = server.url(&format!("/healthz?pad={}", "a".repeat(7 * 1024)));
    assert_eq!(
        http.get(&fits).send().await.unwrap().status(),
        StatusCode::OK
    );

    // One large header, and many that add up.
    let big = "b".repeat(40 * 1024);
    let res = http
        .get(server.url("/healthz"))
        .header("x-big", &big)
        .send()
        .await
        .unwrap();
    let err = expect_error(res, StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE).await;
    assert_eq!(err["code"], "headers_too_large");
    let mut req = http.get(server.url("/healthz"));
    for i in 0..40 {
        req = req.header(format!("x-part-{i}"), "p".repeat(1024));
    }
    expect_error(
        req.send().await.unwrap(),
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
    )
    .await;
    let host = format!("{}", server.addr);
    for request in [
        format!("GET /healthz HTTP/1.1\r\nHost: {host}\r\nHost: {host}\r\n\r\n"),
        format!("GET /healthz HTTP/1.1\r\nHost: {host}\r\nHost: elsewhere.test\r\n\r\n"),
        "GET /healthz HTTP/1.1\r\nHost: not a host\r\n\r\n".to_string(),
        format!("GET http://elsewhere.test/healthz HTTP/1.1\r\nHost: {host}\r\n\r\n"),
    ] {
        let err = raw_error(&server, &request, 400).await;
        assert_eq!(err["code"], "invalid_request", "{request:?}");
        assert!(
            err["message"].as_str().unwrap().starts_with("Host: "),
            "{request:?}: {err}"
        );
    }
    // The absolute form naming the same host as Host is fine.
    let res = common::raw::exchange(
        server.addr,
        &format!("GET http://{host}/healthz HTTP/1.1\r\nHost: {host}\r\n\r\n"),
    )
    .await;
    assert_eq!(res.status(), 200, "{res:?}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_content_length_over_the_limit_is_413_before_the_body_and_without_100_continue() {
    use tokio::io::AsyncWriteExt;
    let server = TestServer::start_with(|c| c.server.max_body_bytes = 2048).await;
    let head = |length: usize| {
        format!(
            "POST /api/v1/login HTTP/1.1\r\nHost: clicktermd.test\r\nContent-Type: application/json\r\n\
             Content-Length: {length}\r\nExpect: 100-continue\r\n\r\n"
        )
    };

    // Over the limit: the first thing the server says is 413, and it reads no body.
    let mut conn = common::raw::connect(server.addr).await;
    conn.write_all(head(1024 * 1024).as_bytes()).await.unwrap();
    let res = common::raw::read_response(&mut conn).await;
    assert_eq!(
        res.status(),
        413,
        "the first answer must be the 413: {res:?}"
    );
    assert_eq!(res.json()["code"], "body_too_large", "{res:?}");
    assert!(
        common::raw::closed_within(&mut conn, std::time::Duration::from_secs(5))
            .await
            .is_some(),
        "the connection stays open with a body announced and not read"
    );

    // Within it, the client is told to go on, and the request is served.
    let body = login_body("a wrong password").to_string();
    let mut conn = common::raw::connect(server.addr).await;
    conn.write_all(head(body.len()).as_bytes()).await.unwrap();
    let interim = common::raw::read_response(&mut conn).await;
    assert_eq!(interim.status(), 100, "{interim:?}");
    conn.write_all(body.as_bytes()).await.unwrap();
    let res = common::raw::read_response(&mut conn).await;
    assert_eq!(res.status(), 401, "{res:?}");
    server.stop().await;
}
