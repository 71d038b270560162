//! What only the PostgreSQL store has: several real `clicktermd serve` processes on one database (issue
//! #12). Each test makes a database of its own in the harness's cluster and starts the nodes as child
//! processes on loopback ports; webhooks go to the harness's TLS receiver through its DNS server.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::common::dns::DnsServer;
use crate::common::postgres::{self, PASSWORD};
use crate::common::receiver::Receiver;
use crate::common::serving::{Serving, serve};
use crate::common::{self, Call, DEADLINE, clicktermd_command, read_admin_password};

/// The variables that make a node of the database `url`, plus `extra`.
fn node_env(url: &str, extra: &[(&str, String)]) -> Vec<(String, String)> {
    let mut env = vec![
        (
            "CLICKTERMD_STORAGE__BACKEND".to_string(),
            "postgres".to_string(),
        ),
        (
            "CLICKTERMD_STORAGE__POSTGRES_URL".to_string(),
            url.to_string(),
        ),
        (
            "CLICKTERMD_STORAGE__POSTGRES_POOL_SIZE".to_string(),
            "8".to_string(),
        ),
    ];
    env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.clone())));
    env
}

/// Starts a node with its own data directory `dir/name`; returns it and its base URL.
async fn node(dir: &Path, name: &str, env: &[(String, String)]) -> (Serving, String) {
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    serve(&dir.join(name), &dir.join(format!("{name}.log")), &env).await
}

/// `clicktermd serve` with `env` that must fail to start: its exit status and standard error.
async fn failed_start(dir: &Path, env: &[(String, String)]) -> String {
    let data = dir.join("refused");
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let mut env = env.clone();
    let listen = format!("127.0.0.1:{}", common::free_port());
    env.push(("CLICKTERMD_SERVER__LISTEN", &listen));
    let mut cmd = clicktermd_command(&["--data-dir", data.to_str().unwrap(), "serve"], &env);
    let out = tokio::task::spawn_blocking(move || cmd.output().expect("run clicktermd serve"))
        .await
        .unwrap();
    assert!(
        !out.status.success(),
        "clicktermd serve started: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The admin password a node created at first start, from whichever data directory holds it.
fn admin_password(dirs: &[&Path]) -> String {
    let held: Vec<&&Path> = dirs
        .iter()
        .filter(|d| d.join("initial-admin-password").exists())
        .collect();
    assert_eq!(held.len(), 1, "exactly one node creates the first admin");
    read_admin_password(held[0])
}

async fn login(base: &str, password: &str) -> reqwest::Client {
    let admin = common::cookie_client();
    admin
        .post(format!("{base}/api/v1/login"))
        .json(&json!({"username": common::ADMIN, "password": password}))
        .json_ok()
        .await;
    admin
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_url_a_refused_connection_a_failed_login_or_a_missing_database_is_a_clear_start_up_error()
 {
    let cluster = postgres::cluster();
    let dir = tempfile::tempdir().unwrap();
    let closed = common::free_port();
    let cases = [
        (
            format!("postgres://clicktermd:{PASSWORD}@127.0.0.1:{closed}/x?sslmode=disable"),
            vec![
                format!(
                    "cannot connect to PostgreSQL at postgres://clicktermd:***@127.0.0.1:{closed}/x"
                ),
                "refused".to_string(),
            ],
        ),
        (
            cluster.url("no_such_database"),
            vec!["database \"no_such_database\" does not exist".to_string()],
        ),
        (
            format!(
                "postgres://clicktermd:wrong-password@127.0.0.1:{}/postgres?sslmode=disable",
                cluster.port
            ),
            vec!["password authentication failed".to_string()],
        ),
        (
            format!("postgres://clicktermd:{PASSWORD}@127.0.0.1/x?sslmode=sometimes"),
            vec![
                "storage.postgres_url".to_string(),
                "sslmode=sometimes".to_string(),
            ],
        ),
    ];
    for (url, says) in cases {
        let err = failed_start(dir.path(), &node_env(&url, &[])).await;
        for said in says {
            assert!(err.contains(&said), "{url}: expected {said:?} in:\n{err}");
        }
        assert!(!err.contains(PASSWORD), "the password was printed:\n{err}");
        assert!(
            !err.contains("wrong-password"),
            "the password was printed:\n{err}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_starting_together_on_an_empty_database_migrate_it_once_and_a_newer_one_is_refused_untouched()
 {
    let cluster = postgres::cluster();
    let database = cluster.create_database().await;
    let url = cluster.url(&database);
    let dir = tempfile::tempdir().unwrap();
    let env = node_env(&url, &[]);
    let (a, b, c) = tokio::join!(
        node(dir.path(), "a", &env),
        node(dir.path(), "b", &env),
        node(dir.path(), "c", &env)
    );
    let logs = [a.0.log(), b.0.log(), c.0.log()];
    let created = logs
        .iter()
        .filter(|l| l.contains("created the clicktermd schema"))
        .count();
    assert_eq!(created, 1, "the schema is created once:\n{logs:#?}");
    let db = cluster.connect(&database).await;
    let versions: Vec<i64> = db
        .query("SELECT version FROM schema_version", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(versions, vec![clicktermd::store::SCHEMA_VERSION]);
    let admins: i64 = db
        .query_one("SELECT count(*) FROM admin_users", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(admins, 1, "one first admin, however many nodes started");
    admin_password(&[
        &dir.path().join("a"),
        &dir.path().join("b"),
        &dir.path().join("c"),
    ]);
    for (serving, _) in [a, b, c] {
        assert!(serving.terminate().success());
    }

    db.execute("UPDATE schema_version SET version = 99", &[])
        .await
        .unwrap();
    let err = failed_start(dir.path(), &env).await;
    assert!(err.contains("schema version 99"), "{err}");
    assert!(!err.contains(PASSWORD), "{err}");
    let version: i64 = db
        .query_one("SELECT version FROM schema_version", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(version, 99, "a newer database is left untouched");
}

/// What a database's schema defines, one line per column, index, function and trigger, sorted.
async fn catalog(db: &tokio_postgres::Client) -> Vec<String> {
    db.query(
        "SELECT 'column ' || table_name || '.' || column_name || ' ' || data_type || ' ' \
                || is_nullable || ' ' || coalesce(column_default, '') \
         FROM information_schema.columns WHERE table_schema = current_schema() \
         UNION ALL SELECT 'index ' || indexdef FROM pg_indexes WHERE schemaname = current_schema() \
         UNION ALL SELECT 'function ' || pg_get_functiondef(p.oid) FROM pg_proc p \
                   JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = current_schema() \
         UNION ALL SELECT 'trigger ' || pg_get_triggerdef(t.oid) FROM pg_trigger t \
                   JOIN pg_class c ON c.oid = t.tgrelid JOIN pg_namespace n ON n.oid = c.relnamespace \
                   WHERE NOT t.tgisinternal AND n.nspname = current_schema() \
         ORDER BY 1",
        &[],
    )
    .await
    .unwrap()
    .iter()
    .map(|r| r.get(0))
    .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_of_the_first_postgres_schema_is_migrated_to_the_one_a_new_database_gets() {
    let cluster = postgres::cluster();
    let dir = tempfile::tempdir().unwrap();
    let old = cluster.create_database().await;
    cluster
        .connect(&old)
        .await
        .batch_execute(include_str!("../e2e/fixtures/schema-postgres-v7.sql"))
        .await
        .unwrap();
    let (serving, _) = node(dir.path(), "old", &node_env(&cluster.url(&old), &[])).await;
    let log = serving.log();
    assert!(log.contains("migrated the schema"), "{log}");
    assert!(serving.terminate().success());
    let new = cluster.create_database().await;
    let (serving, _) = node(dir.path(), "new", &node_env(&cluster.url(&new), &[])).await;
    assert!(serving.terminate().success());

    let (old, new) = (cluster.connect(&old).await, cluster.connect(&new).await);
    for db in [&old, &new] {
        let version: i64 = db
            .query_one("SELECT version FROM schema_version", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(version, clicktermd::store::SCHEMA_VERSION);
    }
    let (migrated, created) = (catalog(&old).await, catalog(&new).await);
    assert!(
        migrated
            .iter()
            .any(|l| l.contains("deliveries_integration_fixed")),
        "{migrated:#?}"
    );
    assert_eq!(migrated, created, "the migrated schema is the new one");
}

/// `GET /public-client/v1/clickwrap-templates` as the integration on `base`.
async fn public_status(base: &str, app_id: &str, app_key: &str) -> StatusCode {
    common::client()
        .get(format!("{base}/public-client/v1/clickwrap-templates"))
        .header("X-APP-ID", app_id)
        .header("X-APP-KEY", app_key)
        .send()
        .await
        .unwrap()
        .status()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_on_one_node_is_valid_on_the_other_and_a_key_regenerated_or_an_integration_disabled_on_one_is_refused_by_the_other_at_once()
 {
    let cluster = postgres::cluster();
    let database = cluster.create_database().await;
    let dir = tempfile::tempdir().unwrap();
    let env = node_env(&cluster.url(&database), &[]);
    let (_a, a) = node(dir.path(), "a", &env).await;
    let (_b, b) = node(dir.path(), "b", &env).await;
    let password = admin_password(&[&dir.path().join("a"), &dir.path().join("b")]);

    // The session cookie A set is a session on B.
    let admin = login(&a, &password).await;
    let me: Value = admin.get(format!("{b}/api/v1/session")).json_ok().await;
    assert_eq!(me["username"], common::ADMIN, "{me}");

    let (app_id, old_key, _) = common::create_integration(&admin, &a, "Nodes").await;
    assert_eq!(public_status(&b, &app_id, &old_key).await, StatusCode::OK);
    // B now has the key in its cache; A regenerates it.
    let fresh: Value = admin
        .post(format!("{a}/api/v1/integrations/{app_id}/app-key"))
        .json_ok()
        .await;
    let new_key = fresh["appKey"].as_str().expect("a new key").to_string();
    assert_eq!(
        public_status(&b, &app_id, &old_key).await,
        StatusCode::UNAUTHORIZED,
        "B still took the old key"
    );
    assert_eq!(public_status(&b, &app_id, &new_key).await, StatusCode::OK);

    admin
        .patch(format!("{a}/api/v1/integrations/{app_id}"))
        .json(&json!({"status": "DISABLED"}))
        .json_ok()
        .await;
    assert_ne!(
        public_status(&b, &app_id, &new_key).await,
        StatusCode::OK,
        "B still served a disabled integration"
    );
}

/// A template visible to every integration, published as 1.0; its id.
async fn published_template(admin: &reqwest::Client, base: &str) -> String {
    let template: Value = admin
        .post(format!("{base}/api/v1/templates"))
        .json(&json!({"name": "Terms", "defaultLanguage": "en",
                      "languages": {"en": {"title": "Terms", "content": "<p>Terms</p>"}}}))
        .json_with(StatusCode::CREATED)
        .await;
    let id = template["id"].as_str().unwrap().to_string();
    admin
        .post(format!("{base}/api/v1/templates/{id}/versions"))
        .json(&json!({"type": "MAJOR"}))
        .json_with(StatusCode::CREATED)
        .await;
    id
}

/// The receiver's requests by `clickwrapEventId`, each id's arrival times in order.
fn arrivals(receiver: &Receiver) -> BTreeMap<String, Vec<f64>> {
    let mut by_id: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for r in receiver.requests() {
        assert!(
            r.signature_valid,
            "a webhook not signed with the secret: {r:?}"
        );
        let id = r.json()["data"]["clickwrapEventId"]
            .as_str()
            .expect("clickwrapEventId")
            .to_string();
        by_id.entry(id).or_default().push(r.at);
    }
    for times in by_id.values_mut() {
        times.sort_by(f64::total_cmp);
    }
    by_id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_deliver_every_webhook_within_the_cluster_wide_limit_and_one_killed_mid_burst_loses_none()
 {
    const BURST: usize = 200;
    const SLOW_MS: u64 = 300;
    const PER_INTEGRATION: usize = 6;
    let cluster = postgres::cluster();
    let database = cluster.create_database().await;
    let dir = tempfile::tempdir().unwrap();
    let dns = DnsServer::start().await;
    dns.set("nodes.receiver.test", &["127.0.0.1".parse().unwrap()]);

    // The receiver checks signatures with the integration's secret, so it starts once that is known;
    // its CA is made first so the nodes can trust it from their start.
    let ca = common::receiver::ReceiverCa::generate();
    let extra = [
        (
            "CLICKTERMD_WEBHOOKS__ALLOW_PRIVATE_CIDRS",
            "[\"127.0.0.1/32\"]".to_string(),
        ),
        (
            "CLICKTERMD_WEBHOOKS__EXTRA_CA_FILE",
            ca.ca_file.to_str().unwrap().to_string(),
        ),
        (
            "CLICKTERMD_WEBHOOKS__DNS_SERVERS",
            format!("[\"{}\"]", dns.server_string()),
        ),
        ("CLICKTERMD_WEBHOOKS__TIMEOUT_SECS", "2".to_string()),
        (
            "CLICKTERMD_WEBHOOKS__MAX_IN_FLIGHT_PER_INTEGRATION",
            PER_INTEGRATION.to_string(),
        ),
    ];
    let env = node_env(&cluster.url(&database), &extra);
    let (node_a, a) = node(dir.path(), "a", &env).await;
    let (node_b, b) = node(dir.path(), "b", &env).await;
    let password = admin_password(&[&dir.path().join("a"), &dir.path().join("b")]);
    let admin = login(&a, &password).await;
    let (app_id, app_key, secret) = common::create_integration(&admin, &a, "Cluster").await;
    let receiver = Receiver::start_prepared(ca, "127.0.0.1".parse().unwrap(), &secret).await;

    // One verify on A, delivered signed (to the real TLS receiver) by whichever node claims it.
    admin
        .patch(format!("{a}/api/v1/integrations/{app_id}"))
        .json(&json!({"callbackUrl": receiver.url("nodes.receiver.test", "/ok")}))
        .json_ok()
        .await;
    let template = published_template(&admin, &a).await;
    let acted: Value = common::client()
        .post(format!("{a}/public-client/v1/clickwrap"))
        .json(
            &json!({"appId": app_id, "clickwrapTemplateId": template, "endUserId": "ann",
                      "action": "ACCEPTED"}),
        )
        .json_with(StatusCode::CREATED)
        .await;
    let verified: Value = common::client()
        .post(format!("{a}/public-client/v1/clickwrap/verify"))
        .header("X-APP-ID", &app_id)
        .header("X-APP-KEY", &app_key)
        .json(&json!({"clicktermSignature": acted["clicktermSignature"]}))
        .json_ok()
        .await;
    let got = receiver.wait_for(1, DEADLINE).await;
    assert_eq!(
        got[0].json()["data"]["clickwrapEventId"],
        verified["clickwrapEventId"],
        "the verified event's webhook"
    );
    assert_eq!(got[0].json()["eventType"], "CLICKWRAP_EVENT_VERIFIED");

    // A burst of test webhooks, half asked of each node, to a receiver that answers slowly.
    admin
        .patch(format!("{a}/api/v1/integrations/{app_id}"))
        .json(&json!({"callbackUrl": receiver.url("nodes.receiver.test", &format!("/slow/{SLOW_MS}"))}))
        .json_ok()
        .await;
    for i in 0..BURST {
        let base = if i % 2 == 0 { &a } else { &b };
        let res = admin
            .post(format!("{base}/api/v1/integrations/{app_id}/test-webhook"))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::ACCEPTED, "{:?}", res.text().await);
    }
    // Once attempts are under way on both nodes, A dies.
    receiver.wait_for(1 + 3 * PER_INTEGRATION, DEADLINE).await;
    node_a.kill9();

    let deadline = Instant::now() + Duration::from_secs(120);
    let by_id = loop {
        let by_id = arrivals(&receiver);
        if by_id.len() == BURST + 1 {
            break by_id;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {} webhooks arrived; B's log:\n{}",
            by_id.len(),
            BURST + 1,
            node_b.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // At least once, and never twice while the first attempt could still be running.
    let slow = SLOW_MS as f64 / 1000.0;
    for (id, times) in &by_id {
        for pair in times.windows(2) {
            assert!(
                pair[1] - pair[0] >= slow,
                "{id} arrived again {:.3} s after its first attempt began",
                pair[1] - pair[0]
            );
        }
    }
    // The per-integration limit held across both nodes: never more attempts at the receiver at
    // once than it allows (each is there for SLOW_MS from its arrival).
    let mut edges: Vec<(f64, i32)> = receiver
        .requests_to(&format!("/slow/{SLOW_MS}"))
        .iter()
        .flat_map(|r| [(r.at, 1), (r.at + slow - 0.02, -1)])
        .collect();
    edges.sort_by(|x, y| x.0.total_cmp(&y.0).then(x.1.cmp(&y.1)));
    let (mut now, mut most) = (0, 0);
    for (_, step) in edges {
        now += step;
        most = most.max(now);
    }
    assert!(
        most as usize <= PER_INTEGRATION,
        "{most} attempts of one integration at once across the cluster (limit {PER_INTEGRATION})"
    );

    // The counts add up what both nodes changed, A's last transactions included: every delivery
    // succeeded, none is left pending or in flight.
    let settled = |c: &Value| {
        c["succeeded"] == json!(BURST + 1) && c["pending"] == json!(0) && c["in_flight"] == json!(0)
    };
    counts_until(&admin, &b, &app_id, settled).await;
    assert!(node_b.terminate().success());
}

/// An end user's acceptance on `base` verified with the App Key; the event id.
async fn verified(
    base: &str,
    app: (&str, &str),
    template: &str,
    user: &str,
    action: &str,
) -> String {
    let acted: Value = common::client()
        .post(format!("{base}/public-client/v1/clickwrap"))
        .json(
            &json!({"appId": app.0, "clickwrapTemplateId": template, "endUserId": user,
                      "action": action}),
        )
        .json_with(StatusCode::CREATED)
        .await;
    let res: Value = common::client()
        .post(format!("{base}/public-client/v1/clickwrap/verify"))
        .header("X-APP-ID", app.0)
        .header("X-APP-KEY", app.1)
        .json(&json!({"clicktermSignature": acted["clicktermSignature"]}))
        .json_ok()
        .await;
    res["clickwrapEventId"].as_str().unwrap().to_string()
}

async fn counts(admin: &reqwest::Client, base: &str, app_id: &str) -> Value {
    admin
        .get(format!(
            "{base}/api/v1/integrations/{app_id}/delivery-counts"
        ))
        .json_ok()
        .await
}

/// Polls until `app_id`'s delivery counts on `base` satisfy `done`.
async fn counts_until(
    admin: &reqwest::Client,
    base: &str,
    app_id: &str,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let c = counts(admin, base, app_id).await;
        if done(&c) {
            return c;
        }
        assert!(Instant::now() < deadline, "{app_id}: {c}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_store_moves_a_sqlite_deployment_whose_keys_events_and_deliveries_carry_on() {
    let cluster = postgres::cluster();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("sqlite");
    let dns = DnsServer::start().await;
    dns.set("move.receiver.test", &["127.0.0.1".parse().unwrap()]);
    // One receiver per integration (each checks its own signing secret), all CAs trusted.
    let cas: Vec<_> = (0..4)
        .map(|_| common::receiver::ReceiverCa::generate())
        .collect();
    let trusted = dir.path().join("cas.pem");
    let pems: Vec<String> = cas
        .iter()
        .map(|c| std::fs::read_to_string(&c.ca_file).unwrap())
        .collect();
    std::fs::write(&trusted, pems.concat()).unwrap();
    let webhooks = [
        (
            "CLICKTERMD_WEBHOOKS__ALLOW_PRIVATE_CIDRS",
            "[\"127.0.0.1/32\"]".to_string(),
        ),
        (
            "CLICKTERMD_WEBHOOKS__EXTRA_CA_FILE",
            trusted.to_str().unwrap().to_string(),
        ),
        (
            "CLICKTERMD_WEBHOOKS__DNS_SERVERS",
            format!("[\"{}\"]", dns.server_string()),
        ),
        ("CLICKTERMD_WEBHOOKS__MAX_RETRIES", "1".to_string()),
        ("CLICKTERMD_WEBHOOKS__RETRY_BASE_SECS", "8".to_string()),
        ("CLICKTERMD_WEBHOOKS__RETRY_CAP_SECS", "8".to_string()),
    ];
    let sqlite_env: Vec<(&str, &str)> = webhooks.iter().map(|(k, v)| (*k, v.as_str())).collect();

    // A SQLite server with one integration per fate of a delivery.
    let (old, base) = serve(&data, &dir.path().join("sqlite.log"), &sqlite_env).await;
    let password = read_admin_password(&data);
    let admin = login(&base, &password).await;
    let template = published_template(&admin, &base).await;
    let mut apps = Vec::new();
    for name in ["Succeeds", "Fails", "Pending", "Held"] {
        apps.push(common::create_integration(&admin, &base, name).await);
    }
    let mut receivers = Vec::new();
    for (ca, (_, _, secret)) in cas.into_iter().zip(&apps) {
        receivers.push(Receiver::start_prepared(ca, "127.0.0.1".parse().unwrap(), secret).await);
    }
    let route = |i: usize, r: &str| receivers[i].url("move.receiver.test", r);
    for ((app_id, _, _), callback, enabled) in [
        (&apps[0], route(0, "/ok"), true),
        (&apps[1], route(1, "/status/500"), true),
        (&apps[2], route(2, "/status/503"), true),
        (&apps[3], route(3, "/ok"), false),
    ] {
        admin
            .patch(format!("{base}/api/v1/integrations/{app_id}"))
            .json(&json!({"callbackUrl": callback, "webhookDeliveryEnabled": enabled}))
            .json_ok()
            .await;
    }
    // Two events per integration. The pending ones last: their retry is 8 s away, longer than the
    // move takes, so the cluster makes it; the failing ones' retry has come and gone by then.
    let mut events = vec![String::new(); 8];
    for i in [0, 1, 3, 2] {
        let (app_id, app_key, _) = &apps[i];
        if i == 2 {
            counts_until(&admin, &base, &apps[0].0, |c| c["succeeded"] == 2).await;
            counts_until(&admin, &base, &apps[1].0, |c| c["failed"] == 2).await;
        }
        for (j, (user, action)) in [("ann", "ACCEPTED"), ("bob", "DECLINED")]
            .into_iter()
            .enumerate()
        {
            let user = format!("{user}{i}");
            events[2 * i + j] = verified(&base, (app_id, app_key), &template, &user, action).await;
        }
    }
    receivers[2].wait_for(2, DEADLINE).await;
    let pending = counts_until(&admin, &base, &apps[2].0, |c| {
        c["pending"] == 2 && c["in_flight"] == 0
    })
    .await;
    assert_eq!(pending["succeeded"], 0);
    counts_until(&admin, &base, &apps[3].0, |c| c["held"] == 2).await;
    let mut before = Vec::new();
    for (app_id, _, _) in &apps {
        before.push(counts(&admin, &base, app_id).await);
    }
    let events_before: Value = admin
        .get(format!("{base}/api/v1/events?limit=100"))
        .json_ok()
        .await;
    assert!(old.terminate().success());

    // Refused while the target is not empty; then copied into an empty one.
    let database = cluster.create_database().await;
    let url = cluster.url(&database);
    let db = cluster.connect(&database).await;
    db.batch_execute("CREATE TABLE stranger (x int)")
        .await
        .unwrap();
    let data_arg = data.to_str().unwrap();
    let out = common::clicktermd_async(
        &["--data-dir", data_arg, "migrate-store", "--to", &url],
        &[],
    )
    .await;
    assert!(!out.status.success());
    let err = common::stderr(&out);
    assert!(err.contains("is not empty"), "{err}");
    assert!(!err.contains(PASSWORD), "{err}");
    db.batch_execute("DROP TABLE stranger").await.unwrap();
    let out = common::clicktermd_async(
        &["--data-dir", data_arg, "migrate-store", "--to", &url],
        &[],
    )
    .await;
    common::assert_success(&out, "migrate-store");
    let said = common::stdout(&out);
    assert!(!said.contains(PASSWORD), "{said}");
    for table in [
        "events",
        "deliveries",
        "attempts",
        "ledger",
        "integrations",
        "audit_log",
    ] {
        assert!(
            said.lines()
                .any(|l| l.starts_with(table) && l.contains("sha256")),
            "{table} not reported:\n{said}"
        );
    }
    let sessions: i64 = db
        .query_one("SELECT count(*) FROM admin_sessions", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(sessions, 0, "sessions are not carried over");

    // A node on PostgreSQL: the same keys, events and deliveries; the pending ones delivered, the
    // held ones on resume. The admin logs in again with the same password.
    let mut env = node_env(&url, &[]);
    env.extend(webhooks.iter().map(|(k, v)| (k.to_string(), v.clone())));
    let (_node, pg) = node(dir.path(), "pg", &env).await;
    let admin = login(&pg, &password).await;
    for (app_id, app_key, _) in &apps[..3] {
        assert_eq!(public_status(&pg, app_id, app_key).await, StatusCode::OK);
    }
    let events_after: Value = admin
        .get(format!("{pg}/api/v1/events?limit=100"))
        .json_ok()
        .await;
    assert_eq!(events_after, events_before, "the events, as they were");
    for ((app_id, _, _), was) in apps.iter().zip(&before).take(2) {
        assert_eq!(&counts(&admin, &pg, app_id).await, was, "{app_id}");
    }
    admin
        .patch(format!("{pg}/api/v1/integrations/{}", apps[2].0))
        .json(&json!({"callbackUrl": route(2, "/ok")}))
        .json_ok()
        .await;
    counts_until(&admin, &pg, &apps[2].0, |c| c["succeeded"] == 2).await;
    admin
        .patch(format!("{pg}/api/v1/integrations/{}", apps[3].0))
        .json(&json!({"webhookDeliveryEnabled": true}))
        .json_ok()
        .await;
    counts_until(&admin, &pg, &apps[3].0, |c| c["succeeded"] == 2).await;
    let delivered: Vec<String> = receivers
        .iter()
        .flat_map(|r| r.requests_to("/ok"))
        .map(|r| {
            r.json()["data"]["clickwrapEventId"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    for event in [
        &events[0], &events[1], &events[4], &events[5], &events[6], &events[7],
    ] {
        assert!(delivered.contains(event), "{event} was not delivered");
    }
    // The chain came along intact.
    let out = common::clicktermd_async(
        &[
            "--data-dir",
            dir.path().join("pg").to_str().unwrap(),
            "verify-ledger",
        ],
        &env.iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect::<Vec<_>>(),
    )
    .await;
    common::assert_success(&out, "verify-ledger on PostgreSQL");
    assert!(
        common::stdout(&out).contains("ledger intact: 8 links"),
        "{}",
        common::stdout(&out)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_that_goes_away_gives_503s_and_the_node_recovers_by_itself_when_it_is_back() {
    let cluster = postgres::cluster();
    let database = cluster.create_database().await;
    let dir = tempfile::tempdir().unwrap();
    let env = node_env(&cluster.url(&database), &[]);
    let (serving, base) = node(dir.path(), "a", &env).await;
    let password = admin_password(&[&dir.path().join("a")]);
    let admin = login(&base, &password).await;
    let (app_id, app_key, _) = common::create_integration(&admin, &base, "Away").await;
    assert_eq!(
        public_status(&base, &app_id, &app_key).await,
        StatusCode::OK
    );

    // The database goes away for this node: its connections are cut and new ones refused.
    let db = cluster.connect("postgres").await;
    db.batch_execute(&format!(
        "ALTER DATABASE {database} ALLOW_CONNECTIONS false; \
         SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{database}'"
    ))
    .await
    .unwrap();
    let health = common::client()
        .get(format!("{base}/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), StatusCode::SERVICE_UNAVAILABLE);
    let res = admin
        .get(format!("{base}/api/v1/integrations"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(res.headers().contains_key("retry-after"));
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["code"], "database_unavailable", "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("database is unavailable"),
        "{body}"
    );
    // A public request that the credentials cache could answer still needs the database for its
    // work, and says so the same way.
    let res = common::client()
        .get(format!("{base}/public-client/v1/clickwrap-templates"))
        .header("X-APP-ID", &app_id)
        .header("X-APP-KEY", &app_key)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);

    // Back: the node serves again by itself, no restart.
    db.batch_execute(&format!("ALTER DATABASE {database} ALLOW_CONNECTIONS true"))
        .await
        .unwrap();
    let deadline = Instant::now() + DEADLINE;
    loop {
        let ok = common::client()
            .get(format!("{base}/healthz"))
            .send()
            .await
            .is_ok_and(|r| r.status() == StatusCode::OK);
        if ok && public_status(&base, &app_id, &app_key).await == StatusCode::OK {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the node did not recover:\n{}",
            serving.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let listed: Value = admin
        .get(format!("{base}/api/v1/integrations"))
        .json_ok()
        .await;
    assert!(listed.to_string().contains(&app_id), "{listed}");
    assert!(
        serving.log().contains("the database is unavailable"),
        "the outage is logged"
    );
}

/// Whether every connection of clicktermd to `database` is encrypted (and there is at least one).
async fn all_encrypted(database: &str) -> bool {
    let db = postgres::cluster().connect("postgres").await;
    let rows = db
        .query(
            "SELECT s.ssl FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) \
             WHERE a.datname = $1 AND a.application_name = 'clicktermd'",
            &[&database],
        )
        .await
        .unwrap();
    !rows.is_empty() && rows.iter().all(|r| r.get::<_, bool>(0))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_to_the_database_follows_sslmode_through_rustls() {
    let cluster = postgres::cluster();
    let dir = tempfile::tempdir().unwrap();
    let port = cluster.port;
    let url = |host: &str, database: &str, mode: &str| {
        format!("postgres://clicktermd:{PASSWORD}@{host}:{port}/{database}?sslmode={mode}")
    };
    let ca = cluster.ca.to_str().unwrap().to_string();
    let with_ca = [("CLICKTERMD_STORAGE__POSTGRES_CA_FILE", ca.clone())];

    // verify-full against the cluster's CA: served, over TLS.
    let database = cluster.create_database().await;
    let env = node_env(&url("127.0.0.1", &database, "verify-full"), &with_ca);
    let (serving, base) = node(dir.path(), "full", &env).await;
    assert!(
        all_encrypted(&database).await,
        "verify-full connected without TLS"
    );
    let password = admin_password(&[&dir.path().join("full")]);
    login(&base, &password).await;
    assert!(serving.terminate().success());

    // The CA can also come in the URL, as libpq's sslrootcert.
    let database = cluster.create_database().await;
    let in_url = format!(
        "{}&sslrootcert={ca}",
        url("localhost", &database, "verify-full")
    );
    let (serving, _) = node(dir.path(), "rootcert", &node_env(&in_url, &[])).await;
    assert!(all_encrypted(&database).await);
    assert!(serving.terminate().success());

    // verify-full trusting only the Mozilla roots: refused, saying why.
    let database = cluster.create_database().await;
    let err = failed_start(
        dir.path(),
        &node_env(&url("127.0.0.1", &database, "verify-full"), &[]),
    )
    .await;
    assert!(err.contains("cannot connect to PostgreSQL"), "{err}");
    assert!(err.contains("certificate"), "{err}");
    assert!(!err.contains(PASSWORD), "{err}");

    // A name the certificate does not hold: verify-full refuses, verify-ca (the chain only) takes it.
    let err = failed_start(
        dir.path(),
        &node_env(&url("127.0.0.3", &database, "verify-full"), &with_ca),
    )
    .await;
    assert!(err.contains("certificate"), "{err}");
    let (serving, _) = node(
        dir.path(),
        "ca",
        &node_env(&url("127.0.0.3", &database, "verify-ca"), &with_ca),
    )
    .await;
    assert!(all_encrypted(&database).await);
    assert!(serving.terminate().success());

    // require: encrypted, the certificate not checked (libpq's meaning).
    let database = cluster.create_database().await;
    let (serving, _) = node(
        dir.path(),
        "require",
        &node_env(&url("127.0.0.3", &database, "require"), &[]),
    )
    .await;
    assert!(all_encrypted(&database).await);
    assert!(serving.terminate().success());
}
