//! One hostile client must not take clicktermd down: logins that cannot exhaust memory or dodge the
//! limiter, requests whose work is bounded, rate limits that slow only the source of a flood, and the
//! other holes an attacker on the public endpoints would try. Through the real server on a real port
//! (the real binary where the process's own memory is the subject).

use crate::common;

use std::collections::BTreeMap;
use std::net::IpAddr;

use crate::common::Call;
use crate::common::serving::serve;
use reqwest::StatusCode;
use serde_json::json;

/// The tests that measure speed under load run one at a time: on two cores, a neighbour's load
/// would be measured as theirs.
static LOAD: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A number field of the process's `/proc/PID/status` (a `kB` one in KiB).
fn proc_status(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read /proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("{field} in /proc status"))
}

/// The process's peak resident memory (`VmHWM`), in KiB.
fn peak_rss_kib(pid: u32) -> u64 {
    proc_status(pid, "VmHWM")
}

/// The process's current thread count.
fn threads(pid: u32) -> u64 {
    proc_status(pid, "Threads")
}

/// A client whose connections come from `ip` (any 127.0.0.0/8 address is ours on loopback).
fn client_from(ip: IpAddr) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(ip)
        .build()
        .expect("client")
}

/// Sends `n` logins at once, each from `from(i)` for user `user(i)` with a wrong password; returns how
/// many were answered with each status.
async fn concurrent_wrong_logins(
    base: &str,
    n: usize,
    from: impl Fn(usize) -> IpAddr,
    user: impl Fn(usize) -> String,
) -> BTreeMap<u16, usize> {
    let mut tasks = Vec::new();
    for i in 0..n {
        let client = client_from(from(i));
        let url = format!("{base}/api/v1/login");
        let body = json!({"username": user(i), "password": format!("wrong password {i}")});
        tasks.push(tokio::spawn(async move {
            let res = client.post(url).json(&body).send().await.expect("login");
            let status = res.status();
            if status == StatusCode::TOO_MANY_REQUESTS || status == StatusCode::SERVICE_UNAVAILABLE
            {
                assert!(
                    res.headers().contains_key(reqwest::header::RETRY_AFTER),
                    "{status} without Retry-After"
                );
            }
            status.as_u16()
        }));
    }
    let mut counts = BTreeMap::new();
    for t in tasks {
        *counts.entry(t.await.unwrap()).or_insert(0) += 1;
    }
    counts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_wrong_logins_check_few_passwords_and_keep_memory_bounded() {
    let _alone = LOAD.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (serving, base) = serve(&data, &dir.path().join("log"), &[]).await;
    let pid = serving.child.id();
    let idle = peak_rss_kib(pid);

    // A hundred at once from one address: the limiter reserves each attempt before its hash, so at
    // most `login_max_failures` (5) passwords are checked; every other attempt is answered at once.
    let one: IpAddr = "127.0.0.1".parse().unwrap();
    let counts = concurrent_wrong_logins(&base, 100, |_| one, |i| format!("user{i}")).await;
    let checked = counts.get(&401).copied().unwrap_or(0);
    assert!(
        (1..=5).contains(&checked),
        "passwords checked from one address: {counts:?}"
    );
    assert!(
        counts.keys().all(|s| [401, 429, 503].contains(s)),
        "{counts:?}"
    );

    // Two hundred at once from fifty addresses, each naming its own user: the per-address limits let
    // up to 250 through, so the bound on hashes at once is what keeps memory flat.
    let counts = concurrent_wrong_logins(
        &base,
        200,
        |i| IpAddr::from([127, 0, 1, (i % 50) as u8 + 1]),
        |i| format!("guess{i}"),
    )
    .await;
    assert!(
        counts.keys().all(|s| [401, 429, 503].contains(s)),
        "{counts:?}"
    );
    eprintln!("from fifty addresses: {counts:?}");

    // Each argon2id check takes ~19 MiB; two at once (the default) and the server's own needs stay far
    // below what unbounded checks took (hundreds of MiB here, 2.7 GB with slower hashes).
    let peak = peak_rss_kib(pid);
    eprintln!("peak RSS {peak} KiB, idle {idle} KiB");
    assert!(
        peak < 150 * 1024,
        "peak RSS {peak} KiB (idle {idle} KiB) under concurrent wrong logins"
    );
    assert!(common::wait_healthy(&base).await);

    // The real admin still gets in from another address: the failures above named other users.
    let password = common::read_admin_password(&data);
    let res = client_from("127.0.0.200".parse().unwrap())
        .post(format!("{base}/api/v1/login"))
        .json(&json!({"username": common::ADMIN, "password": password}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    drop(serving);
}

/// Every `/healthz` reads the database on a pooled connection. Three hundred at once, again and
/// again, wait for the pool's eight connections as tasks: the server's threads stay bounded (the
/// runtime's 16 blocking threads, two workers and the store's own), where each waiting read once
/// parked a blocking thread of its own (tokio allows 512) and 64 clients kept 60 of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_reads_waits_for_the_pool_without_a_thread_each() {
    let _alone = LOAD.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let (serving, base) = serve(&dir.path().join("data"), &dir.path().join("log"), &[]).await;
    let pid = serving.child.id();
    let before = threads(pid);
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(300)
        .build()
        .expect("client");
    let mut most = before;
    for _ in 0..5 {
        let mut tasks = Vec::new();
        for _ in 0..300 {
            let (client, url) = (client.clone(), format!("{base}/healthz"));
            tasks.push(tokio::spawn(async move {
                client.get(url).send().await.expect("healthz").status()
            }));
        }
        for t in tasks {
            assert_eq!(t.await.unwrap(), StatusCode::OK);
        }
        most = most.max(threads(pid));
    }
    eprintln!("threads: {before} idle, at most {most} under the bursts");
    assert!(
        most <= before + 18,
        "the server grew from {before} to {most} threads for 300 reads at once"
    );
    drop(serving);
}

#[tokio::test]
async fn a_success_on_one_account_does_not_reset_the_guesses_against_another() {
    let server = common::TestServer::start_with(|c| c.auth.login_max_failures = 3).await;
    // A second account the attacker controls.
    let out = common::clicktermd_with_stdin(
        &[
            "--data-dir",
            server.data_dir.to_str().unwrap(),
            "admin",
            "create",
            "--username",
            "eve",
            "--password-stdin",
        ],
        &[],
        "eve's own password\n",
    );
    common::assert_success(&out, "admin create eve");
    let client = common::client();
    let login = |user: &'static str, password: String| {
        let client = client.clone();
        let url = server.url("/api/v1/login");
        async move {
            client
                .post(url)
                .json(&json!({"username": user, "password": password}))
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    assert_eq!(
        login("admin", "guess 1".into()).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        login("admin", "guess 2".into()).await,
        StatusCode::UNAUTHORIZED
    );
    // The attacker's own successful login resets nothing for its address...
    assert_eq!(
        login("eve", "eve's own password".into()).await,
        StatusCode::OK
    );
    assert_eq!(
        login("admin", "guess 3".into()).await,
        StatusCode::UNAUTHORIZED
    );
    // ...so the next guess is refused before it is checked, even the right password.
    let res_status = login("admin", server.admin_password()).await;
    assert_eq!(res_status, StatusCode::TOO_MANY_REQUESTS);
}

#[tokio::test]
async fn cookie_changes_need_proof_of_origin_and_bearer_tokens_do_not() {
    let server = common::TestServer::start().await;
    let bare = common::bare_cookie_client();
    bare.post(server.url("/api/v1/login"))
        .json(&json!({"username": common::ADMIN, "password": server.admin_password()}))
        .json_ok()
        .await;
    let create = |client: &reqwest::Client| {
        client
            .post(server.url("/api/v1/integrations"))
            .json(&json!({"name": "Origin check"}))
    };
    // Reading with the cookie alone is fine; changing is not.
    bare.get(server.url("/api/v1/integrations")).json_ok().await;
    let body =
        common::expect_error(create(&bare).send().await.unwrap(), StatusCode::FORBIDDEN).await;
    assert_eq!(body["code"], "cross_origin", "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("bearer token"),
        "{body}"
    );
    for (name, value) in [
        ("origin", "http://127.0.0.1:1"),
        ("origin", "null"),
        ("sec-fetch-site", "same-site"),
        ("sec-fetch-site", "cross-site"),
    ] {
        let res = create(&bare).header(name, value).send().await.unwrap();
        common::expect_error(res, StatusCode::FORBIDDEN).await;
    }
    // Our own origin, the browser's same-origin mark, or the dashboard's header are each enough.
    let ours = server.base.clone();
    for (name, value) in [
        ("origin", ours.as_str()),
        ("sec-fetch-site", "same-origin"),
        ("x-requested-with", "a-script"),
    ] {
        create(&bare)
            .header(name, value)
            .json_with(StatusCode::CREATED)
            .await;
    }
    // Logging out is a change too.
    let res = bare
        .post(server.url("/api/v1/logout"))
        .header("origin", "http://127.0.0.1:1")
        .send()
        .await
        .unwrap();
    common::expect_error(res, StatusCode::FORBIDDEN).await;
    bare.get(server.url("/api/v1/session")).json_ok().await;
    // A login from another origin is refused; a script's login (no browser headers) is not.
    let res = common::client()
        .post(server.url("/api/v1/login"))
        .header("origin", "http://127.0.0.1:1")
        .json(&json!({"username": common::ADMIN, "password": server.admin_password()}))
        .send()
        .await
        .unwrap();
    common::expect_error(res, StatusCode::FORBIDDEN).await;
    // Bearer tokens carry no ambient authority: no proof needed, whatever the headers.
    let token = server.token_client().await;
    create(&token)
        .header("origin", "http://127.0.0.1:1")
        .json_with(StatusCode::CREATED)
        .await;
}

#[tokio::test]
async fn small_holes_port_zero_language_case_hidden_characters() {
    let server = common::TestServer::start().await;
    let admin = server.token_client().await;
    let (app_id, key, _) = server.create_integration(&admin, "Holes").await;

    // A callback URL with port 0 is refused with the reason, by the API and by check-url.
    let res = admin
        .patch(server.url(&format!("/api/v1/integrations/{app_id}")))
        .json(&json!({"callbackUrl": "https://hooks.test:0/ct"}))
        .send()
        .await
        .unwrap();
    let body = common::expect_error(res, StatusCode::BAD_REQUEST).await;
    assert!(
        body["message"].as_str().unwrap().contains("port 0"),
        "{body}"
    );
    let out = common::clicktermd(&["check-url", "https://example.com:0/hook"], &[]);
    assert_eq!(out.status.code(), Some(1), "{}", common::stdout(&out));
    assert!(
        common::stdout(&out).contains("port 0"),
        "{}",
        common::stdout(&out)
    );

    // `en` and `EN` are one language: refused, not merged.
    let res = admin
        .post(server.url("/api/v1/templates"))
        .json(
            &json!({"name": "Terms", "defaultLanguage": "en", "languages": {
            "en": {"title": "One", "content": "<p>one</p>"},
            "EN": {"title": "Two", "content": "<p>two</p>"}}}),
        )
        .send()
        .await
        .unwrap();
    let body = common::expect_error(res, StatusCode::BAD_REQUEST).await;
    assert!(
        body["message"].as_str().unwrap().contains("same language"),
        "{body}"
    );
    let templates = admin.get(server.url("/api/v1/templates")).json_ok().await;
    assert_eq!(
        templates.as_array().unwrap().len(),
        0,
        "nothing was created"
    );

    // Names shown to admins hold no bidi overrides or invisible characters.
    for name in ["\u{202E}moc.elgoog", "pay\u{200B}pal", "a\u{2066}b\u{2069}"] {
        let res = admin
            .post(server.url("/api/v1/integrations"))
            .json(&json!({"name": name}))
            .send()
            .await
            .unwrap();
        let body = common::expect_error(res, StatusCode::BAD_REQUEST).await;
        assert!(
            body["message"].as_str().unwrap().starts_with("name:"),
            "{body}"
        );
        let res = admin
            .post(server.url("/api/v1/templates"))
            .json(&json!({"name": name, "defaultLanguage": "en",
                          "languages": {"en": {"title": "t", "content": "c"}}}))
            .send()
            .await
            .unwrap();
        common::expect_error(res, StatusCode::BAD_REQUEST).await;
        let res = admin
            .post(server.url("/api/v1/tokens"))
            .json(&json!({"name": name}))
            .send()
            .await
            .unwrap();
        common::expect_error(res, StatusCode::BAD_REQUEST).await;
    }
    let list = admin
        .get(server.url("/api/v1/integrations"))
        .json_ok()
        .await;
    assert_eq!(list.as_array().unwrap().len(), 1, "{list}");

    // Every list in a request is bounded, and the refusal names the limit.
    let many_apps: Vec<String> = (0..1001).map(|i| format!("app-{i}")).collect();
    let many_languages: serde_json::Map<String, serde_json::Value> = (0..101u8)
        .map(|i| {
            let tag = format!("x{}{}", (b'a' + i / 26) as char, (b'a' + i % 26) as char);
            (tag, json!({"title": "t", "content": "c"}))
        })
        .collect();
    for (field, body) in [
        (
            "integrations",
            json!({"name": "T", "defaultLanguage": "en",
            "languages": {"en": {"title": "t", "content": "c"}}, "integrations": many_apps}),
        ),
        (
            "languages",
            json!({"name": "T", "defaultLanguage": "xaa", "languages": many_languages}),
        ),
    ] {
        let res = admin
            .post(server.url("/api/v1/templates"))
            .json(&body)
            .send()
            .await
            .unwrap();
        let err = common::expect_error(res, StatusCode::BAD_REQUEST).await;
        let message = err["message"].as_str().unwrap();
        assert!(
            message.starts_with(field) && message.contains("at most"),
            "{err}"
        );
    }
    let tags: String = (0..51).map(|i| format!("tags=t{i}&")).collect();
    let res = common::client()
        .get(server.url(&format!("/public-client/v1/clickwrap-templates?{tags}")))
        .header("X-APP-ID", &app_id)
        .header("X-APP-KEY", &key)
        .send()
        .await
        .unwrap();
    let err = common::expect_error(res, StatusCode::BAD_REQUEST).await;
    assert!(
        err["message"].as_str().unwrap().contains("at most 50 tags"),
        "{err}"
    );
}

#[tokio::test]
async fn admin_tokens_are_listed_and_revoked_at_once() {
    let server = common::TestServer::start().await;
    let admin = server.admin_client().await;
    let created = admin
        .post(server.url("/api/v1/tokens"))
        .json(&json!({"name": "deploy"}))
        .json_with(StatusCode::CREATED)
        .await;
    let token = created["token"].as_str().unwrap().to_string();
    let bearer = common::bearer_client(&token);
    bearer
        .get(server.url("/api/v1/integrations"))
        .json_ok()
        .await;

    let listed = admin.get(server.url("/api/v1/tokens")).json_ok().await;
    let items = listed["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{listed}");
    assert_eq!(common::keys(&items[0]), ["createdAt", "id", "name", "role"]);
    assert_eq!(items[0]["name"], "deploy");
    assert_eq!(
        items[0]["role"], "admin",
        "a token's role when none is asked for"
    );
    assert!(
        !listed.to_string().contains(&token),
        "the token itself is never listed"
    );

    // The command line sees the same tokens and revokes one by id.
    let dir = server.data_dir.to_str().unwrap().to_string();
    let out = common::clicktermd_async(
        &["--data-dir", &dir, "admin", "token", "list", "--json"],
        &[],
    )
    .await;
    common::assert_success(&out, "admin token list");
    let cli: serde_json::Value = serde_json::from_str(&common::stdout(&out)).unwrap();
    assert_eq!(cli[0]["name"], "deploy");
    let id = cli[0]["id"].to_string();
    let out =
        common::clicktermd_async(&["--data-dir", &dir, "admin", "token", "revoke", &id], &[]).await;
    common::assert_success(&out, "admin token revoke");
    // Refused on the very next request.
    let res = bearer
        .get(server.url("/api/v1/integrations"))
        .send()
        .await
        .unwrap();
    common::expect_error(res, StatusCode::UNAUTHORIZED).await;
    let out =
        common::clicktermd_async(&["--data-dir", &dir, "admin", "token", "revoke", &id], &[]).await;
    assert_eq!(
        out.status.code(),
        Some(1),
        "revoking it again: {}",
        common::stderr(&out)
    );

    // Through the API as well, and each change is in the audit log with who made it.
    let second = admin
        .post(server.url("/api/v1/tokens"))
        .json(&json!({"name": "ci"}))
        .json_with(StatusCode::CREATED)
        .await;
    let listed = admin.get(server.url("/api/v1/tokens")).json_ok().await;
    let id = listed["items"][0]["id"].as_i64().unwrap();
    let res = admin
        .delete(server.url(&format!("/api/v1/tokens/{id}")))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    let res = common::bearer_client(second["token"].as_str().unwrap())
        .get(server.url("/api/v1/session"))
        .send()
        .await
        .unwrap();
    common::expect_error(res, StatusCode::UNAUTHORIZED).await;
    let res = admin
        .delete(server.url(&format!("/api/v1/tokens/{id}")))
        .send()
        .await
        .unwrap();
    common::expect_error(res, StatusCode::NOT_FOUND).await;
    let audit = admin.get(server.url("/api/v1/audit")).json_ok().await;
    let entries: Vec<(String, String, String)> = audit["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"].as_str().unwrap().starts_with("admin.token."))
        .map(|e| {
            (
                e["action"].as_str().unwrap().to_string(),
                e["actor"].as_str().unwrap().to_string(),
                e["target"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let want = |a: &str, who: &str, t: &str| (a.to_string(), who.to_string(), t.to_string());
    assert_eq!(
        entries,
        [
            want("admin.token.revoke", "admin", "ci"),
            want("admin.token.create", "admin", "ci"),
            want("admin.token.revoke", "cli", "deploy"),
            want("admin.token.create", "admin", "deploy"),
        ]
    );
}

/// An integration as these tests use it.
struct App {
    id: String,
    key: String,
}

/// An integration with a published template visible to it; returns it and the template id.
async fn app_with_template(
    server: &common::TestServer,
    admin: &reqwest::Client,
    name: &str,
) -> (App, String) {
    let (id, key, _) = server.create_integration(admin, name).await;
    let tid = server
        .published_template(admin, &format!("{name} terms"), &[&id])
        .await;
    (App { id, key }, tid)
}

/// An SDK action by `user`, from `client`; returns the response.
async fn sdk_act(
    client: &reqwest::Client,
    base: &str,
    app: &App,
    tid: &str,
    user: &str,
) -> reqwest::Response {
    client
        .post(format!("{base}/public-client/v1/clickwrap"))
        .json(&json!({"appId": app.id, "clickwrapTemplateId": tid, "endUserId": user, "action": "ACCEPTED"}))
        .send()
        .await
        .unwrap()
}

async fn signature(
    client: &reqwest::Client,
    base: &str,
    app: &App,
    tid: &str,
    user: &str,
) -> String {
    let res = sdk_act(client, base, app, tid, user).await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let v: serde_json::Value = res.json().await.unwrap();
    v["clicktermSignature"].as_str().unwrap().to_string()
}

async fn verify(client: &reqwest::Client, base: &str, app: &App, signature: &str) -> StatusCode {
    client
        .post(format!("{base}/public-client/v1/clickwrap/verify"))
        .header("X-APP-ID", &app.id)
        .header("X-APP-KEY", &app.key)
        .json(&json!({"clicktermSignature": signature}))
        .send()
        .await
        .unwrap()
        .status()
}

/// Verifies `signatures` with eight concurrent clients, as a backend with a few workers would; returns
/// verifies per second. (Concurrent, so the measure is the server's throughput for this integration,
/// not one client's wait for each log sync, which any other write nearby lengthens.)
async fn verify_rate(
    client: &reqwest::Client,
    base: &str,
    app: &App,
    signatures: &[String],
) -> f64 {
    let start = std::time::Instant::now();
    let mut workers = Vec::new();
    for chunk in signatures.chunks(signatures.len().div_ceil(8)) {
        let (client, base, chunk) = (client.clone(), base.to_string(), chunk.to_vec());
        let app = App {
            id: app.id.clone(),
            key: app.key.clone(),
        };
        workers.push(tokio::spawn(async move {
            for s in &chunk {
                assert_eq!(verify(&client, &base, &app, s).await, StatusCode::OK);
            }
        }));
    }
    for w in workers {
        w.await.unwrap();
    }
    signatures.len() as f64 / start.elapsed().as_secs_f64()
}

#[tokio::test]
async fn a_re_accept_over_the_pair_limit_is_400_and_changes_nothing() {
    let server = common::TestServer::start().await;
    let admin = server.token_client().await;
    let (app, tid) = app_with_template(&server, &admin, "Bounded").await;
    let http = common::client();
    let s = signature(&http, &server.base, &app, &tid, "ann").await;
    assert_eq!(verify(&http, &server.base, &app, &s).await, StatusCode::OK);

    // 100 end users × 11 templates: 1 100 pairs, over the 1 000 one request may ask for.
    let users: Vec<String> = std::iter::once("ann".to_string())
        .chain((1..100).map(|i| format!("user{i}")))
        .collect();
    let templates: Vec<String> = std::iter::once(tid.clone())
        .chain((1..11).map(|i| format!("00000000-0000-4000-8000-{i:012}")))
        .collect();
    let res = http
        .post(server.url("/public-client/v1/clickwraps/re-accept"))
        .header("X-APP-ID", &app.id)
        .header("X-APP-KEY", &app.key)
        .json(&json!({"endUserIds": users, "clickwrapTemplateIds": templates}))
        .send()
        .await
        .unwrap();
    let body = common::expect_error(res, StatusCode::BAD_REQUEST).await;
    let message = body["message"].as_str().unwrap();
    assert!(
        message.contains("1100 pairs") && message.contains("at most 1000"),
        "{body}"
    );
    let status: serde_json::Value = http
        .get(server.url("/public-client/v1/clickwraps/ann/status"))
        .header("X-APP-ID", &app.id)
        .header("X-APP-KEY", &app.key)
        .json_ok()
        .await;
    assert_eq!(status[0]["status"], "ACCEPTED");
    assert_eq!(
        status[0]["reAcceptanceRequired"], false,
        "nothing was asked: {status}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_re_accept_flood_from_one_integration_leaves_anothers_verifies_their_speed() {
    let _alone = LOAD.lock().await;
    // The SDK limit is lifted here only so that the setup can make its signatures quickly.
    let server =
        common::TestServer::start_with(|c| c.limits.sdk_requests_per_sec_per_address = 0).await;
    let admin = server.token_client().await;
    let (victim, victim_tid) = app_with_template(&server, &admin, "Victim").await;
    let (flooder, flooder_tid) = app_with_template(&server, &admin, "Flooder").await;
    let http = common::client();
    let mut signatures = Vec::new();
    for i in 0..600 {
        signatures
            .push(signature(&http, &server.base, &victim, &victim_tid, &format!("v{i}")).await);
    }
    let (alone, during) = signatures.split_at(300);
    let base_rate = verify_rate(&http, &server.base, &victim, alone).await;

    // Two loops of the largest re-accept there is, 25 a second each: 50 000 pairs a second asked for,
    // fifty times the limit and far more than the writer could do. (Paced, so that what is measured is
    // what the server spends on them, not the test's own CPU on two cores.)
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let users: Vec<String> = (0..1000).map(|i| format!("f{i}")).collect();
    let mut loops = Vec::new();
    for _ in 0..2 {
        let (stop, http, url) = (
            stop.clone(),
            http.clone(),
            server.url("/public-client/v1/clickwraps/re-accept"),
        );
        let body = json!({"endUserIds": users, "clickwrapTemplateIds": [flooder_tid]});
        let (id, key) = (flooder.id.clone(), flooder.key.clone());
        loops.push(tokio::spawn(async move {
            let mut statuses = BTreeMap::new();
            let mut tick = tokio::time::interval(std::time::Duration::from_millis(40));
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                tick.tick().await;
                let res = http
                    .post(&url)
                    .header("X-APP-ID", &id)
                    .header("X-APP-KEY", &key)
                    .json(&body)
                    .send()
                    .await
                    .unwrap();
                if res.status() == StatusCode::TOO_MANY_REQUESTS {
                    assert!(res.headers().contains_key(reqwest::header::RETRY_AFTER));
                }
                *statuses.entry(res.status().as_u16()).or_insert(0u32) += 1;
            }
            statuses
        }));
    }
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let flooded_rate = verify_rate(&http, &server.base, &victim, during).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut flood = BTreeMap::new();
    for l in loops {
        for (status, n) in l.await.unwrap() {
            *flood.entry(status).or_insert(0) += n;
        }
    }
    let ratio = flooded_rate / base_rate;
    eprintln!(
        "victim {base_rate:.0}/s alone, {flooded_rate:.0}/s during the flood (ratio {ratio:.2}); flood: {flood:?}"
    );
    assert!(
        flood.get(&429).copied().unwrap_or(0) > 0,
        "the flooder was limited: {flood:?}"
    );
    assert!(
        ratio > 0.5,
        "the victim kept {ratio:.2} of its speed; flood {flood:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_sdk_flood_from_one_address_slows_only_that_address() {
    let _alone = LOAD.lock().await;
    let server = common::TestServer::start_with(|c| {
        c.limits.sdk_requests_per_sec_per_address = 50;
        c.limits.sdk_burst_per_address = 60;
    })
    .await;
    let admin = server.token_client().await;
    let (app, tid) = app_with_template(&server, &admin, "Shop").await;
    let base = server.base.clone();

    // Eight end users' browsers, each its own address, acting concurrently; acts per second.
    let timed_acts = |subnet: u8, n: usize| {
        let (base, id, tid) = (base.clone(), app.id.clone(), tid.clone());
        async move {
            let start = std::time::Instant::now();
            let mut browsers = Vec::new();
            for b in 0..8u8 {
                let (base, id, tid) = (base.clone(), id.clone(), tid.clone());
                browsers.push(tokio::spawn(async move {
                    let from = IpAddr::from([127, 0, subnet, b + 1]);
                    let client = client_from(from);
                    let app = App {
                        id,
                        key: String::new(),
                    };
                    for i in 0..n {
                        let res = sdk_act(&client, &base, &app, &tid, &format!("{from}-{i}")).await;
                        assert_eq!(res.status(), StatusCode::CREATED, "{from}: act {i}");
                    }
                }));
            }
            for b in browsers {
                b.await.unwrap();
            }
            (8 * n) as f64 / start.elapsed().as_secs_f64()
        }
    };
    let alone = timed_acts(3, 40).await;

    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut loops = Vec::new();
    for l in 0..4 {
        let (stop, base, id, tid) = (stop.clone(), base.clone(), app.id.clone(), tid.clone());
        loops.push(tokio::spawn(async move {
            let client = client_from("127.0.5.66".parse().unwrap());
            let (mut created, mut limited) = (0u32, 0u32);
            let mut i = 0;
            // 4 × 100 a second from one address, eight times its limit.
            let mut tick = tokio::time::interval(std::time::Duration::from_millis(10));
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                tick.tick().await;
                let res = sdk_act(
                    &client,
                    &base,
                    &App {
                        id: id.clone(),
                        key: String::new(),
                    },
                    &tid,
                    &format!("flood-{l}-{i}"),
                )
                .await;
                match res.status() {
                    StatusCode::CREATED => created += 1,
                    StatusCode::TOO_MANY_REQUESTS => {
                        assert!(res.headers().contains_key(reqwest::header::RETRY_AFTER));
                        limited += 1
                    }
                    other => panic!("flood answered {other}"),
                }
                i += 1;
            }
            (created, limited)
        }));
    }
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let during = timed_acts(4, 40).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (mut created, mut limited) = (0, 0);
    for l in loops {
        let (c, r) = l.await.unwrap();
        created += c;
        limited += r;
    }
    let ratio = during / alone;
    eprintln!(
        "acts {alone:.0}/s alone, {during:.0}/s beside the flood (ratio {ratio:.2}); flood created {created}, limited {limited}"
    );
    assert!(
        limited > created,
        "the flooding address was mostly refused: {created} created, {limited} limited"
    );
    assert!(ratio > 0.5, "another address kept {ratio:.2} of its speed");
}

#[tokio::test]
async fn repeated_sdk_views_record_one_presentation_until_the_user_acts() {
    let server = common::TestServer::start().await;
    let admin = server.token_client().await;
    let (app, tid) = app_with_template(&server, &admin, "Views").await;
    let http = common::client();
    let view = || {
        let url = url::Url::parse_with_params(
            &server.url("/public-client/v1/clickwrap"),
            &[
                ("appId", app.id.as_str()),
                ("clickwrapTemplateId", &tid),
                ("endUserId", "ann"),
            ],
        )
        .unwrap();
        let http = http.clone();
        async move { http.get(url).json_ok().await }
    };
    let rows = || {
        let db = rusqlite::Connection::open(server.data_dir.join("clicktermd.db")).unwrap();
        db.query_row("SELECT count(*) FROM presentations", [], |r| {
            r.get::<_, i64>(0)
        })
        .unwrap()
    };
    for _ in 0..50 {
        view().await;
    }
    assert_eq!(
        rows(),
        1,
        "fifty views of one version before any action: one presentation"
    );
    let status = |http: reqwest::Client| {
        let url = server.url("/public-client/v1/clickwraps/ann/status");
        let (id, key) = (app.id.clone(), app.key.clone());
        async move {
            http.get(url)
                .header("X-APP-ID", id)
                .header("X-APP-KEY", key)
                .json_ok()
                .await
        }
    };
    let pending = status(http.clone()).await;
    assert_eq!(pending[0]["status"], "PENDING");
    // An action, then a view again: that is a new presentation (the user may be asked again).
    let s = signature(&http, &server.base, &app, &tid, "ann").await;
    assert_eq!(verify(&http, &server.base, &app, &s).await, StatusCode::OK);
    view().await;
    view().await;
    assert_eq!(rows(), 2);
    // A new minor version shown is recorded once too.
    admin
        .post(server.url(&format!("/api/v1/templates/{tid}/versions")))
        .json(&json!({"type": "MINOR"}))
        .json_with(StatusCode::CREATED)
        .await;
    view().await;
    view().await;
    assert_eq!(rows(), 3);
}
