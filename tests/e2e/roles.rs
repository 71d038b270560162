//! Admin users and roles (#16 point 2), through the real server: every admin route walked with every
//! role — a viewer is refused every change and never sees a secret, an admin every user change —; the
//! last enabled owner stays; one-time passwords; disabling; sessions listed and ended; the command
//! line's user commands.

use std::collections::BTreeMap;

use clicktermd::http::extract::ROUTE_ROLES;
use clicktermd::model::Role;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::common::{self, ADMIN, Call, HOOKS_URL, TestServer};

const PASSWORD: &str = "a-password-long-enough";

/// A client logged in as `user` with `password` (cookie and the dashboard's header).
async fn session(server: &TestServer, user: &str, password: &str) -> reqwest::Client {
    let client = common::cookie_client();
    let res = client
        .post(server.url("/api/v1/login"))
        .json(&json!({"username": user, "password": password}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK, "login as {user}");
    client
}

async fn create_user(
    owner: &reqwest::Client,
    server: &TestServer,
    user: &str,
    role: &str,
) -> Value {
    owner
        .post(server.url("/api/v1/users"))
        .json(&json!({"username": user, "role": role, "password": PASSWORD}))
        .json_with(StatusCode::CREATED)
        .await
}

async fn token(owner: &reqwest::Client, server: &TestServer, name: &str, role: &str) -> String {
    let made = owner
        .post(server.url("/api/v1/tokens"))
        .json(&json!({"name": name, "role": role}))
        .json_with(StatusCode::CREATED)
        .await;
    made["token"].as_str().unwrap().to_string()
}

/// What the walk needs to exist: an integration with a callback URL, a published template, a
/// verified event with its delivery, a token and another user.
struct Fixtures {
    app_id: String,
    app_key: String,
    signing_secret: String,
    template: String,
    event: String,
    delivery: String,
    token_id: i64,
    client_key: String,
}

async fn fixtures(server: &TestServer, owner: &reqwest::Client) -> Fixtures {
    let created = common::create_integration_with(
        owner,
        &server.base,
        &json!({"name": "Shop", "domains": [], "callbackUrl": HOOKS_URL}),
    )
    .await;
    let app_id = created["appId"].as_str().unwrap().to_string();
    let app_key = created["appKey"].as_str().unwrap().to_string();
    let signing_secret = created["signingSecret"].as_str().unwrap().to_string();
    let template = server.published_template(owner, "Terms", &[]).await;
    let acted = common::client()
        .post(server.url("/public-client/v1/clickwrap"))
        .json(&json!({"appId": app_id, "clickwrapTemplateId": template, "endUserId": "ann", "action": "ACCEPTED"}))
        .json_with(StatusCode::CREATED)
        .await;
    let verified = common::client()
        .post(server.url("/public-client/v1/clickwrap/verify"))
        .header("X-APP-ID", &app_id)
        .header("X-APP-KEY", &app_key)
        .json(&json!({"clicktermSignature": acted["clicktermSignature"]}))
        .json_ok()
        .await;
    let event = verified["clickwrapEventId"].as_str().unwrap().to_string();
    let deliveries = owner
        .get(server.url(&format!("/api/v1/integrations/{app_id}/deliveries")))
        .json_ok()
        .await;
    let delivery = deliveries["items"][0]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("no delivery: {deliveries}"))
        .to_string();
    token(owner, server, "deploy", "admin").await;
    let tokens = owner.get(server.url("/api/v1/tokens")).json_ok().await;
    let token_id = tokens["items"][0]["id"].as_i64().unwrap();
    create_user(owner, server, "someone", "admin").await;
    // A client certificate, so that its route shows something (and never the key).
    let client = rcgen::generate_simple_self_signed(vec!["shop-client".to_string()]).unwrap();
    let key = client.signing_key.serialize_pem();
    owner
        .put(server.url(&format!("/api/v1/integrations/{app_id}/client-certificate")))
        .json(&json!({"certificate": client.cert.pem(), "privateKey": key}))
        .json_ok()
        .await;
    Fixtures {
        app_id,
        app_key,
        signing_secret,
        template,
        event,
        delivery,
        token_id,
        client_key: key,
    }
}

/// The route with its parameters filled in: with what exists (`real`), or with what does not.
fn path_of(route: &str, f: &Fixtures, real: bool) -> String {
    let pick = |real_value: String, missing: &str| {
        if real {
            real_value
        } else {
            missing.to_string()
        }
    };
    let mut path = route.replace(
        "{app_id}",
        &pick(f.app_id.clone(), "00000000-0000-4000-8000-000000000000"),
    );
    let id = if route.starts_with("/api/v1/templates") {
        pick(f.template.clone(), "00000000-0000-4000-8000-000000000000")
    } else if route.starts_with("/api/v1/events") {
        pick(f.event.clone(), "00000000-0000-4000-8000-000000000000")
    } else if route.starts_with("/api/v1/deliveries") {
        pick(f.delivery.clone(), "00000000-0000-7000-8000-000000000000")
    } else if route.starts_with("/api/v1/tokens") {
        pick(f.token_id.to_string(), "999999")
    } else {
        "0000000000000000".to_string()
    };
    path = path.replace("{id}", &id);
    path.replace("{username}", &pick("someone".into(), "nobody-at-all"))
}

/// A body that would make the change if the role were not checked.
fn body_of(method: &str, route: &str) -> Value {
    match (method, route) {
        ("POST", "/api/v1/integrations") => json!({"name": "a viewer's", "domains": []}),
        ("PATCH", "/api/v1/integrations/{app_id}") => json!({"name": "renamed"}),
        ("POST", "/api/v1/templates") => json!({"name": "x", "defaultLanguage": "en",
            "languages": {"en": {"title": "t", "content": "c"}}}),
        ("PATCH", "/api/v1/templates/{id}") => json!({"name": "renamed"}),
        ("POST", "/api/v1/templates/{id}/versions") => json!({"type": "MAJOR"}),
        ("POST", "/api/v1/tokens") => json!({"name": "escalated", "role": "owner"}),
        ("POST", "/api/v1/users") => {
            json!({"username": "intruder", "role": "owner", "password": PASSWORD})
        }
        ("PATCH", "/api/v1/users/{username}") => json!({"role": "owner"}),
        ("POST", "/api/v1/users/{username}/password") => json!({"password": PASSWORD}),
        ("POST", "/api/v1/integrations/{app_id}/redeliver") => {
            json!({"from": "2000-01-01T00:00:00Z", "to": "2100-01-01T00:00:00Z"})
        }
        _ => json!({}),
    }
}

async fn send(
    client: &reqwest::Client,
    server: &TestServer,
    method: &str,
    path: &str,
    body: &Value,
) -> (StatusCode, String) {
    let method = Method::from_bytes(method.as_bytes()).unwrap();
    let mut req = client.request(method.clone(), server.url(path));
    if method != Method::GET && method != Method::DELETE {
        req = req.json(body);
    }
    let res = req.send().await.unwrap();
    let status = res.status();
    (status, res.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_admin_route_is_refused_to_a_role_that_may_not_use_it_and_a_viewer_sees_no_secret() {
    let server = TestServer::start().await;
    let owner = server.admin_client().await;
    let f = fixtures(&server, &owner).await;
    create_user(&owner, &server, "vera", "viewer").await;
    create_user(&owner, &server, "adam", "admin").await;
    let viewer_token = token(&owner, &server, "read-only", "viewer").await;
    let admin_token = token(&owner, &server, "scripts", "admin").await;
    let callers: Vec<(&str, Role, reqwest::Client)> = vec![
        (
            "viewer session",
            Role::Viewer,
            session(&server, "vera", PASSWORD).await,
        ),
        (
            "viewer token",
            Role::Viewer,
            common::bearer_client(&viewer_token),
        ),
        (
            "admin session",
            Role::Admin,
            session(&server, "adam", PASSWORD).await,
        ),
        (
            "admin token",
            Role::Admin,
            common::bearer_client(&admin_token),
        ),
    ];
    let secrets = [
        f.app_key.as_str(),
        f.signing_secret.as_str(),
        viewer_token.as_str(),
        admin_token.as_str(),
        PASSWORD,
        "whsec_",
        "PRIVATE KEY",
        // The key's base64, without its armour.
        f.client_key.lines().nth(1).unwrap(),
    ];
    assert!(ROUTE_ROLES.len() > 35, "the table holds every admin route");
    // The policy, stated apart from the table: no change is a viewer's but their own session's and a
    // preview (which records nothing), no secret is read below admin, and users are owners' alone.
    for &(method, route, needed) in ROUTE_ROLES {
        let own = matches!(
            route,
            "/api/v1/logout" | "/api/v1/session/password" | "/api/v1/templates/{id}/preview"
        );
        if method != "GET" && !own {
            assert_ne!(needed, Role::Viewer, "{method} {route} changes something");
        }
        if route.starts_with("/api/v1/users") {
            assert_eq!(needed, Role::Owner, "{method} {route}");
        }
        if route.ends_with("/signing-secret") || route == "/api/v1/tokens" {
            assert_ne!(
                needed,
                Role::Viewer,
                "{method} {route} shows a secret or a credential"
            );
        }
    }
    let mut refused = 0;
    for (who, role, client) in &callers {
        for &(method, route, needed) in ROUTE_ROLES {
            // Logging out would end the session the rest of the walk uses; it is checked below.
            if route == "/api/v1/logout" {
                continue;
            }
            if !role.allows(needed) {
                let (status, text) = send(
                    client,
                    &server,
                    method,
                    &path_of(route, &f, true),
                    &body_of(method, route),
                )
                .await;
                assert_eq!(
                    status,
                    StatusCode::FORBIDDEN,
                    "{who}: {method} {route}: {text}"
                );
                let err: Value = serde_json::from_str(&text).unwrap();
                assert_eq!(
                    err["code"], "role_forbidden",
                    "{who}: {method} {route}: {err}"
                );
                assert!(
                    err["message"].as_str().unwrap().contains(needed.as_str()),
                    "{who}: the refusal names the role needed: {err}"
                );
                refused += 1;
            } else if method == "GET" {
                let (status, text) = send(
                    client,
                    &server,
                    method,
                    &path_of(route, &f, true),
                    &json!({}),
                )
                .await;
                assert!(
                    status.is_success(),
                    "{who}: {method} {route}: {status} {text}"
                );
                if *role == Role::Viewer {
                    for secret in secrets {
                        assert!(
                            !text.contains(secret),
                            "{who}: {method} {route} showed a secret: {text}"
                        );
                    }
                }
            } else {
                // Allowed: asked of something that does not exist (or with a body short of what it
                // needs), so the walk changes nothing, and it is not refused for the role.
                let (status, text) = send(
                    client,
                    &server,
                    method,
                    &path_of(route, &f, false),
                    &json!({}),
                )
                .await;
                assert_ne!(
                    status,
                    StatusCode::FORBIDDEN,
                    "{who}: {method} {route}: {text}"
                );
                assert!(
                    status.is_client_error(),
                    "{who}: {method} {route}: {status} {text}"
                );
            }
        }
    }
    assert!(refused > 60, "{refused} refusals");

    // Nothing the refused requests asked for happened.
    let integration = owner
        .get(server.url(&format!("/api/v1/integrations/{}", f.app_id)))
        .json_ok()
        .await;
    assert_eq!(integration["name"], "Shop");
    let templates = common::client()
        .get(server.url("/public-client/v1/clickwrap-templates"))
        .header("X-APP-ID", &f.app_id)
        .header("X-APP-KEY", &f.app_key)
        .json_ok()
        .await;
    assert!(
        templates.to_string().contains(&f.template),
        "the App Key still works: {templates}"
    );
    let secret = owner
        .get(server.url(&format!("/api/v1/integrations/{}/signing-secret", f.app_id)))
        .json_ok()
        .await;
    assert_eq!(secret["signingSecret"], f.signing_secret.as_str());
    let users = owner.get(server.url("/api/v1/users")).json_ok().await;
    let roles: BTreeMap<String, String> = users["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| {
            (
                u["username"].as_str().unwrap().to_string(),
                u["role"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        roles,
        BTreeMap::from([
            ("adam".into(), "admin".into()),
            ("admin".into(), "owner".into()),
            ("someone".into(), "admin".into()),
            ("vera".into(), "viewer".into()),
        ])
    );
    let tokens = owner.get(server.url("/api/v1/tokens")).json_ok().await;
    assert_eq!(tokens["items"].as_array().unwrap().len(), 3, "{tokens}");
    let versions = owner
        .get(server.url(&format!("/api/v1/templates/{}", f.template)))
        .json_ok()
        .await;
    assert_eq!(versions["name"], "Terms");

    // Nobody mints a token above their own role.
    let res = callers[2]
        .2
        .post(server.url("/api/v1/tokens"))
        .json(&json!({"name": "mine", "role": "owner"}))
        .send()
        .await
        .unwrap();
    let err = common::expect_error(res, StatusCode::FORBIDDEN).await;
    assert_eq!(err["code"], "role_too_high", "{err}");

    // A viewer may log out.
    let (status, _) = send(&callers[0].2, &server, "POST", "/api/v1/logout", &json!({})).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = send(&callers[0].2, &server, "GET", "/api/v1/session", &json!({})).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_last_owner_stays_and_every_user_change_is_audited_with_who_and_from_where() {
    let server = TestServer::start().await;
    let owner = server.admin_client().await;
    let patch = |user: &str, body: Value| {
        owner
            .patch(server.url(&format!("/api/v1/users/{user}")))
            .json(&body)
            .send()
    };
    for body in [
        json!({"role": "admin"}),
        json!({"disabled": true}),
        json!({"role": "viewer", "disabled": false}),
    ] {
        let err = common::expect_error(
            patch(ADMIN, body.clone()).await.unwrap(),
            StatusCode::CONFLICT,
        )
        .await;
        assert!(
            err["message"]
                .as_str()
                .unwrap()
                .contains("last enabled owner"),
            "{body}: {err}"
        );
    }
    let res = owner
        .delete(server.url("/api/v1/users/admin"))
        .send()
        .await
        .unwrap();
    common::expect_error(res, StatusCode::CONFLICT).await;
    // A second owner, disabled, does not count: the first still cannot step down.
    create_user(&owner, &server, "olga", "owner").await;
    patch("olga", json!({"disabled": true}))
        .await
        .unwrap()
        .error_for_status()
        .unwrap();
    common::expect_error(
        patch(ADMIN, json!({"role": "admin"})).await.unwrap(),
        StatusCode::CONFLICT,
    )
    .await;
    // Enabled, she is one: now the first may become an admin, and is refused user management at once.
    let olga = patch("olga", json!({"disabled": false})).await.unwrap();
    assert_eq!(olga.status(), StatusCode::OK);
    let demoted = patch(ADMIN, json!({"role": "admin"})).await.unwrap();
    assert_eq!(demoted.status(), StatusCode::OK);
    let res = owner.get(server.url("/api/v1/users")).send().await.unwrap();
    let err = common::expect_error(res, StatusCode::FORBIDDEN).await;
    assert_eq!(err["code"], "role_forbidden");
    // And olga, the last owner now, stays one.
    let olga = session(&server, "olga", PASSWORD).await;
    let res = olga
        .patch(server.url("/api/v1/users/olga"))
        .json(&json!({"role": "viewer"}))
        .send()
        .await
        .unwrap();
    common::expect_error(res, StatusCode::CONFLICT).await;

    let audit = olga
        .get(server.url("/api/v1/audit?limit=50"))
        .json_ok()
        .await;
    let lines: Vec<(String, String, String, String)> = audit["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"].as_str().unwrap().starts_with("admin."))
        .map(|e| {
            (
                e["actor"].as_str().unwrap_or_default().to_string(),
                e["action"].as_str().unwrap().to_string(),
                e["target"].as_str().unwrap_or_default().to_string(),
                e["from"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    let by_admin = |action: &str, target: &str| {
        lines.iter().any(|(actor, a, t, from)| {
            actor == ADMIN && a == action && t == target && from == "127.0.0.1"
        })
    };
    assert!(by_admin("admin.create", "olga"), "{lines:?}");
    assert!(by_admin("admin.update", "olga"), "{lines:?}");
    assert!(by_admin("admin.update", "admin"), "{lines:?}");
    // Refused changes left no entry.
    assert_eq!(
        lines
            .iter()
            .filter(|(_, a, t, _)| a == "admin.update" && t == "admin")
            .count(),
        1,
        "{lines:?}"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invited_user_must_change_the_one_time_password_and_sessions_can_be_listed_and_ended() {
    let server = TestServer::start().await;
    let owner = server.admin_client().await;
    let invited = owner
        .post(server.url("/api/v1/users"))
        .json(&json!({"username": "carol", "role": "admin"}))
        .json_with(StatusCode::CREATED)
        .await;
    assert_eq!(invited["mustChangePassword"], true, "{invited}");
    let one_time = invited["oneTimePassword"].as_str().unwrap().to_string();
    let carol = common::cookie_client();
    let login = carol
        .post(server.url("/api/v1/login"))
        .header("user-agent", "carol's browser")
        .json(&json!({"username": "carol", "password": one_time}))
        .json_ok()
        .await;
    assert_eq!(login["mustChangePassword"], true, "{login}");
    assert_eq!(login["role"], "admin");
    let res = carol
        .get(server.url("/api/v1/integrations"))
        .send()
        .await
        .unwrap();
    let err = common::expect_error(res, StatusCode::FORBIDDEN).await;
    assert_eq!(err["code"], "password_change_required", "{err}");

    // The owner sees her session, where it came from, and can end it.
    let sessions = owner
        .get(server.url("/api/v1/users/carol/sessions"))
        .json_ok()
        .await;
    let items = sessions["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{sessions}");
    assert_eq!(items[0]["from"], "127.0.0.1");
    assert_eq!(items[0]["userAgent"], "carol's browser");
    let id = items[0]["id"].as_str().unwrap();
    assert_eq!(id.len(), 16);
    let res = owner
        .delete(server.url(&format!("/api/v1/users/carol/sessions/{id}")))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    let res = carol
        .get(server.url("/api/v1/session"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        res.status(),
        StatusCode::UNAUTHORIZED,
        "an ended session is refused at once"
    );

    // She signs in again and changes it: a wrong current password is refused; the right one ends her
    // sessions and lifts the restriction.
    let carol = session(&server, "carol", &one_time).await;
    let res = carol
        .post(server.url("/api/v1/session/password"))
        .json(&json!({"currentPassword": "not-the-password", "newPassword": PASSWORD}))
        .send()
        .await
        .unwrap();
    let err = common::expect_error(res, StatusCode::BAD_REQUEST).await;
    assert!(
        err["message"].as_str().unwrap().contains("currentPassword"),
        "{err}"
    );
    let res = carol
        .post(server.url("/api/v1/session/password"))
        .json(&json!({"currentPassword": one_time, "newPassword": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    let res = carol
        .get(server.url("/api/v1/session"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    let carol = session(&server, "carol", PASSWORD).await;
    carol
        .get(server.url("/api/v1/integrations"))
        .json_ok()
        .await;

    // Disabled: her sessions end and she cannot sign in; enabled, she can again.
    owner
        .patch(server.url("/api/v1/users/carol"))
        .json(&json!({"disabled": true}))
        .json_ok()
        .await;
    let res = carol
        .get(server.url("/api/v1/integrations"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    let res = common::cookie_client()
        .post(server.url("/api/v1/login"))
        .json(&json!({"username": "carol", "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    owner
        .patch(server.url("/api/v1/users/carol"))
        .json(&json!({"disabled": false}))
        .json_ok()
        .await;
    let carol = session(&server, "carol", PASSWORD).await;

    // A reset gives a new one-time password and ends her sessions; ending all at once works too.
    let reset = owner
        .post(server.url("/api/v1/users/carol/password"))
        .json(&json!({}))
        .json_ok()
        .await;
    let again = reset["oneTimePassword"].as_str().unwrap();
    assert_ne!(again, one_time);
    let res = carol
        .get(server.url("/api/v1/session"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    session(&server, "carol", again).await;
    session(&server, "carol", again).await;
    let ended = owner
        .delete(server.url("/api/v1/users/carol/sessions"))
        .json_ok()
        .await;
    assert_eq!(ended["ended"], 2);

    // A role that is not one, a user that is not one: errors that name them.
    let res = owner
        .post(server.url("/api/v1/users"))
        .json(&json!({"username": "dave", "role": "superuser"}))
        .send()
        .await
        .unwrap();
    let err = common::expect_error(res, StatusCode::BAD_REQUEST).await;
    assert!(err["message"].as_str().unwrap().contains("role"), "{err}");
    let res = owner
        .delete(server.url("/api/v1/users/nobody"))
        .send()
        .await
        .unwrap();
    common::expect_error(res, StatusCode::NOT_FOUND).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_command_line_manages_users_and_roles() {
    let server = TestServer::start().await;
    let dir = server.data_dir.to_str().unwrap().to_string();
    let store_env = server.cli_env();
    let env: Vec<(&str, &str)> = store_env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let cli = |args: &[&str]| {
        let mut all = vec!["--data-dir", dir.as_str()];
        all.extend_from_slice(args);
        common::clicktermd(&all, &env)
    };
    let out = cli(&["admin", "create", "--username", "viv", "--role", "viewer"]);
    common::assert_success(&out, "admin create --role viewer");
    let password = common::stdout(&out).trim().to_string();
    let viv = session(&server, "viv", &password).await;
    let res = viv
        .delete(server.url("/api/v1/integrations/x"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    common::assert_success(
        &cli(&["admin", "set-role", "--username", "viv", "--role", "admin"]),
        "set-role",
    );
    let res = viv
        .delete(server.url("/api/v1/integrations/x"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        res.status(),
        StatusCode::NOT_FOUND,
        "the new role holds at once"
    );
    let list = cli(&["admin", "list", "--json"]);
    common::assert_success(&list, "admin list");
    let users: Value = serde_json::from_str(&common::stdout(&list)).unwrap();
    assert!(
        users
            .as_array()
            .unwrap()
            .iter()
            .any(|u| u["username"] == "viv" && u["role"] == "admin"),
        "{users}"
    );
    // The last owner cannot be disabled from here either; an unknown role is a usage error.
    let out = cli(&["admin", "disable", "--username", ADMIN]);
    assert!(!out.status.success());
    assert!(
        common::stderr(&out).contains("last enabled owner"),
        "{}",
        common::stderr(&out)
    );
    let out = cli(&["admin", "create", "--username", "x", "--role", "root"]);
    assert_eq!(out.status.code(), Some(2), "{}", common::stderr(&out));
    let listed = cli(&["admin", "sessions", "--username", "viv"]);
    common::assert_success(&listed, "admin sessions");
    assert!(
        common::stdout(&listed).contains("127.0.0.1"),
        "{}",
        common::stdout(&listed)
    );
    let ended = cli(&["admin", "end-sessions", "--username", "viv"]);
    common::assert_success(&ended, "admin end-sessions");
    assert!(
        common::stdout(&ended).contains("ended 1 session"),
        "{}",
        common::stdout(&ended)
    );
    let res = viv.get(server.url("/api/v1/session")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    let viv = session(&server, "viv", &password).await;
    common::assert_success(&cli(&["admin", "disable", "--username", "viv"]), "disable");
    let res = viv.get(server.url("/api/v1/session")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    // A viewer token from the command line reads and changes nothing.
    let out = cli(&[
        "admin", "token", "create", "--name", "ro", "--role", "viewer",
    ]);
    common::assert_success(&out, "token create --role viewer");
    let ro = common::bearer_client(common::stdout(&out).trim());
    ro.get(server.url("/api/v1/integrations")).json_ok().await;
    let res = ro
        .post(server.url("/api/v1/integrations"))
        .json(&json!({"name": "n"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    server.stop().await;
}
