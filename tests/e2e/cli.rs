//! End-to-end tests of the command line, through the real binary.

use crate::common;
use crate::common::Call;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::common::{
    DEADLINE, TestServer, assert_success, bearer_client, clicktermd, clicktermd_async,
    clicktermd_command, clicktermd_with_stdin, cookie_client, expect_error, keys, stderr, stdout,
};
use reqwest::StatusCode;
use serde_json::{Value, json};

fn s(p: &Path) -> &str {
    p.to_str().expect("UTF-8 path")
}

/// Creates a database in `data` as an operator would before other commands: `clicktermd init`
/// (its configuration file goes to `dir`).
fn init_database(dir: &Path, data: &Path) {
    let config = dir.join("init.toml");
    let out = clicktermd(
        &["--config", s(&config), "--data-dir", s(data), "init"],
        &[],
    );
    assert_success(&out, "init");
}

fn user_version(db: &Path) -> i64 {
    rusqlite::Connection::open(db)
        .unwrap()
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .unwrap()
}

#[test]
fn unknown_config_key_in_a_file_is_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("clicktermd.toml");
    std::fs::write(&config, "[server]\nlsten = \"127.0.0.1:0\"\n").unwrap();
    let data = dir.path().join("data");
    let out = clicktermd(
        &[
            "--config",
            s(&config),
            "--data-dir",
            s(&data),
            "integration",
            "list",
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("lsten"), "{}", stderr(&out));
    assert!(
        !data.exists(),
        "nothing is created on a configuration error"
    );
}

#[test]
fn bad_environment_variables_are_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    init_database(dir.path(), &data);
    let cases = [
        (
            "CLICKTERMD_WEBHOOKS__TIMEOUT_SECZ",
            "1",
            "CLICKTERMD_WEBHOOKS__TIMEOUT_SECZ",
        ),
        (
            "CLICKTERMD_WEBHOOKS__TIMEOUT_SECS",
            "abc",
            "CLICKTERMD_WEBHOOKS__TIMEOUT_SECS",
        ),
    ];
    for (var, value, needle) in cases {
        let out = clicktermd(
            &["--data-dir", s(&data), "integration", "list"],
            &[(var, value)],
        );
        assert_eq!(
            out.status.code(),
            Some(2),
            "{var}={value}: {}",
            stderr(&out)
        );
        assert!(
            stderr(&out).contains(needle),
            "{var}={value}: {}",
            stderr(&out)
        );
    }
    // A valid override is accepted.
    let out = clicktermd(
        &["--data-dir", s(&data), "integration", "list"],
        &[("CLICKTERMD_WEBHOOKS__TIMEOUT_SECS", "2.5")],
    );
    assert_success(&out, "valid override");
}

#[test]
fn a_database_from_a_newer_version_is_refused_and_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    init_database(dir.path(), &data);
    let out = clicktermd(&["--data-dir", s(&data), "integration", "list"], &[]);
    assert_success(&out, "first run");
    let db = data.join("clicktermd.db");
    assert_eq!(user_version(&db), clicktermd::store::SCHEMA_VERSION);
    {
        let conn = rusqlite::Connection::open(&db).unwrap();
        conn.pragma_update(None, "user_version", 99).unwrap();
    }
    let before = std::fs::read(&db).unwrap();

    for args in [
        vec!["--data-dir", s(&data), "integration", "list"],
        vec!["--data-dir", s(&data), "admin", "token", "create"],
    ] {
        let out = clicktermd(&args, &[]);
        assert!(!out.status.success(), "{args:?} must fail");
        let err = stderr(&out);
        assert!(err.contains("99"), "{err}");
        assert!(err.contains("newer"), "{err}");
        assert!(stdout(&out).is_empty(), "{}", stdout(&out));
    }

    assert_eq!(user_version(&db), 99);
    let conn = rusqlite::Connection::open(&db).unwrap();
    let tables: i64 = conn
        .query_row(
            "SELECT count(*) FROM sqlite_schema WHERE type = 'table' AND name = 'integrations'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(tables, 1);
    let tokens: i64 = conn
        .query_row("SELECT count(*) FROM admin_tokens", [], |r| r.get(0))
        .unwrap();
    assert_eq!(tokens, 0, "nothing was written");
    drop(conn);
    assert!(std::fs::read(&db).unwrap() == before, "the file changed");
}

/// Runs the binary in `cwd`.
fn clicktermd_in(cwd: &Path, args: &[&str]) -> std::process::Output {
    clicktermd_command(args, &[])
        .current_dir(cwd)
        .stdin(Stdio::null())
        .output()
        .expect("run clicktermd")
}

/// What `init` must leave behind: a configuration file that loads as the defaults and mentions every
/// section, and a database at the current schema version.
fn assert_initialised(config: &Path, data: &Path) -> String {
    let text = std::fs::read_to_string(config)
        .unwrap_or_else(|e| panic!("{} not written: {e}", config.display()));
    assert!(text.contains("[webhooks]"), "{text}");
    let parsed = clicktermd::config::Config::load(Some(config), Vec::new())
        .expect("the written config loads");
    assert_eq!(parsed, clicktermd::config::Config::default());
    let db = data.join("clicktermd.db");
    assert!(db.is_file(), "no database at {}", db.display());
    assert_eq!(user_version(&db), clicktermd::store::SCHEMA_VERSION);
    text
}

#[test]
fn init_writes_the_config_file_named_by_config_and_the_database() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("clicktermd.toml");
    let data = dir.path().join("data");
    let args = ["--config", s(&config), "--data-dir", s(&data), "init"];
    let out = clicktermd(&args, &[]);
    assert_success(
        &out,
        "init with --config naming a file that does not exist yet",
    );
    let said = stdout(&out);
    assert!(
        said.contains(&format!(
            "clicktermd --config {} --data-dir {} serve",
            s(&config),
            s(&data)
        )),
        "init says how to start with this file: {said}"
    );
    let text = assert_initialised(&config, &data);

    // Again, without --force: refused, the (edited) file untouched.
    let edited = format!("{text}\n# edited by the operator\n");
    std::fs::write(&config, &edited).unwrap();
    let out = clicktermd(&args, &[]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("--force"), "{}", stderr(&out));
    assert_eq!(std::fs::read_to_string(&config).unwrap(), edited);
}

#[test]
fn init_without_config_writes_clicktermd_toml_once() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("clicktermd.toml");
    let data = dir.path().join("data");
    let out = clicktermd_in(dir.path(), &["--data-dir", s(&data), "init"]);
    assert_success(&out, "init");
    assert!(stdout(&out).contains("clicktermd.toml"), "{}", stdout(&out));
    let text = assert_initialised(&config, &data);

    // Again, without --force (with and without --config): refused, the (edited) file untouched.
    let edited = format!("{text}\n# edited by the operator\n");
    std::fs::write(&config, &edited).unwrap();
    for args in [
        vec!["--data-dir", s(&data), "init"],
        vec!["--config", s(&config), "--data-dir", s(&data), "init"],
    ] {
        let out = clicktermd_in(dir.path(), &args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).contains("--force"), "{}", stderr(&out));
        assert_eq!(std::fs::read_to_string(&config).unwrap(), edited);
    }

    // With --force it is rewritten.
    let out = clicktermd_in(dir.path(), &["--data-dir", s(&data), "init", "--force"]);
    assert_success(&out, "init --force");
    assert_eq!(std::fs::read_to_string(&config).unwrap(), text);
}

fn schema_of(conn: &rusqlite::Connection) -> (Vec<[Option<String>; 4]>, i64) {
    let mut stmt = conn
        .prepare("SELECT type, name, tbl_name, sql FROM sqlite_schema ORDER BY name")
        .unwrap();
    let rows = stmt
        .query_map([], |r| Ok([r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?]))
        .unwrap()
        .collect::<rusqlite::Result<Vec<_>>>()
        .unwrap();
    let version = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .unwrap();
    (rows, version)
}

#[test]
fn a_fresh_database_has_exactly_the_schema_of_schema_sql() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    // (Run in the temporary directory, where init writes clicktermd.toml: `--config` with a file that
    // does not exist yet is refused, see init_writes_the_config_file_named_by_config_and_the_database.)
    let out = clicktermd_in(dir.path(), &["--data-dir", s(&data), "init"]);
    assert_success(&out, "init");
    let created = rusqlite::Connection::open(data.join("clicktermd.db")).unwrap();
    let reference = rusqlite::Connection::open_in_memory().unwrap();
    reference
        .execute_batch(include_str!("../../schema.sql"))
        .unwrap();
    let (got, got_version) = schema_of(&created);
    let (want, want_version) = schema_of(&reference);
    assert!(!want.is_empty());
    assert_eq!(got, want);
    assert_eq!(got_version, want_version);
    assert_eq!(got_version, clicktermd::store::SCHEMA_VERSION);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_while_serving_is_consistent_and_complete() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (serving, base) = common::serving::serve(&data, &dir.path().join("serve.log"), &[]).await;

    let mut before: BTreeSet<String> = BTreeSet::new();
    for i in 0..3 {
        let name = format!("CLI {i}");
        let out = clicktermd_async(
            &[
                "--data-dir",
                s(&data),
                "integration",
                "create",
                "--name",
                &name,
                "--domain",
                "App.Example.com",
                "--json",
            ],
            &[],
        )
        .await;
        assert_success(&out, "integration create");
        let text = stdout(&out);
        assert_eq!(text.lines().count(), 1, "{text}");
        let created: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(keys(&created), ["appId", "appKey", "signingSecret"]);
        before.insert(created["appId"].as_str().unwrap().to_string());
    }

    // The server sees what the command line created.
    let out = clicktermd_async(&["--data-dir", s(&data), "admin", "token", "create"], &[]).await;
    assert_success(&out, "admin token create");
    let token = stdout(&out).trim_end().to_string();
    let api = bearer_client(&token);
    let list: Value = api
        .get(format!("{base}/api/v1/integrations"))
        .json_ok()
        .await;
    let listed: BTreeSet<String> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["appId"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(listed, before);
    assert!(
        list.as_array()
            .unwrap()
            .iter()
            .all(|i| i["domains"] == json!(["app.example.com"]))
    );

    // Keep writing through the API while the backup runs.
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let created = Arc::new(Mutex::new(Vec::<String>::new()));
    let writer = {
        let (done, created, api, base) = (done.clone(), created.clone(), api.clone(), base.clone());
        tokio::spawn(async move {
            let mut n = 0;
            while !done.load(std::sync::atomic::Ordering::SeqCst) {
                let (id, _, _) = common::create_integration(&api, &base, &format!("API {n}")).await;
                created.lock().unwrap().push(id);
                n += 1;
            }
        })
    };
    let start = Instant::now();
    while created.lock().unwrap().len() < 5 {
        assert!(start.elapsed() < DEADLINE, "the API writer is not writing");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    before.extend(created.lock().unwrap().iter().cloned());
    let backup = dir.path().join("backup.db");
    let out = clicktermd_async(&["--data-dir", s(&data), "backup", s(&backup)], &[]).await;
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    writer.await.expect("API writer");
    assert_success(&out, "backup");
    let all: BTreeSet<String> = created
        .lock()
        .unwrap()
        .iter()
        .cloned()
        .chain(before.iter().cloned())
        .collect();

    // The copy is sound, self-contained and has everything created before it started.
    assert!(!Path::new(&format!("{}-wal", backup.display())).exists());
    let in_backup: BTreeSet<String> = {
        let conn = rusqlite::Connection::open(&backup).unwrap();
        let check: String = conn
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .unwrap();
        assert_eq!(check, "ok");
        let mode: String = conn
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "delete");
        let mut stmt = conn
            .prepare("SELECT app_id FROM integrations WHERE deleted_at IS NULL")
            .unwrap();
        stmt.query_map([], |r| r.get(0))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap()
    };
    assert!(
        before.is_subset(&in_backup),
        "missing from the backup: {:?}",
        before.difference(&in_backup).collect::<Vec<_>>()
    );
    assert!(in_backup.is_subset(&all), "the backup has unknown rows");
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&backup).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "backup file mode");
    }

    // A second backup to the same path is refused rather than overwriting it.
    let out = clicktermd_async(&["--data-dir", s(&data), "backup", s(&backup)], &[]).await;
    assert!(!out.status.success());

    // clicktermd itself can read the backup.
    let restored = dir.path().join("restored");
    std::fs::create_dir(&restored).unwrap();
    std::fs::copy(&backup, restored.join("clicktermd.db")).unwrap();
    let out = clicktermd_async(
        &["--data-dir", s(&restored), "integration", "list", "--json"],
        &[],
    )
    .await;
    assert_success(&out, "integration list on the backup");
    let listed: Value = serde_json::from_str(&stdout(&out)).unwrap();
    let listed: BTreeSet<String> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["appId"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(listed, in_backup);

    let status = serving.terminate();
    assert!(status.success(), "graceful shutdown: {status}");
}

/// `clicktermd backup` finishes while the server takes a steady stream of writes, on a database large
/// enough (40 MB, 10 000 pages) that a backup copying in steps restarts at every commit between two
/// steps and never finishes (issue #13: an 11 GB copy was stuck at 84 MB after seven minutes at two
/// writes a second). The copy is sound and holds every event acknowledged before it began.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_finishes_under_a_steady_write_load() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    init_database(dir.path(), &data);
    let out = clicktermd_async(
        &[
            "--data-dir",
            s(&data),
            "integration",
            "create",
            "--name",
            "Load",
            "--json",
        ],
        &[],
    )
    .await;
    assert_success(&out, "integration create");
    let app: Value = serde_json::from_str(&stdout(&out)).unwrap();
    let app_id = app["appId"].as_str().unwrap().to_string();
    {
        let db = rusqlite::Connection::open(data.join("clicktermd.db")).unwrap();
        db.execute_batch(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 40000)
             INSERT INTO audit_log (at, actor, action, detail)
             SELECT i, 'filler', 'filler', hex(randomblob(500)) FROM n;",
        )
        .unwrap();
    }
    let (serving, base) = common::serving::serve(&data, &dir.path().join("serve.log"), &[]).await;
    let out = clicktermd_async(&["--data-dir", s(&data), "admin", "token", "create"], &[]).await;
    assert_success(&out, "admin token create");
    let api = bearer_client(stdout(&out).trim_end());
    let template: Value = api
        .post(format!("{base}/api/v1/templates"))
        .json(&json!({"name": "Terms", "defaultLanguage": "en",
                      "languages": {"en": {"title": "Terms", "content": "<p>Terms</p>"}}}))
        .json_with(StatusCode::CREATED)
        .await;
    let tid = template["id"].as_str().unwrap().to_string();
    api.post(format!("{base}/api/v1/templates/{tid}/versions"))
        .json(&json!({"type": "MAJOR"}))
        .json_with(StatusCode::CREATED)
        .await;

    // End users accept, one after another, for as long as the test runs.
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let acked = Arc::new(Mutex::new(Vec::<(Instant, String)>::new()));
    let writer = {
        let (done, acked, base) = (done.clone(), acked.clone(), base.clone());
        tokio::spawn(async move {
            let http = common::client();
            let mut n = 0;
            while !done.load(std::sync::atomic::Ordering::SeqCst) {
                let acted: Value = http
                    .post(format!("{base}/public-client/v1/clickwrap"))
                    .json(&json!({"appId": app_id, "clickwrapTemplateId": tid,
                                  "endUserId": format!("user-{n}"), "action": "ACCEPTED"}))
                    .json_with(StatusCode::CREATED)
                    .await;
                let id = acted["clickwrapEventId"].as_str().unwrap().to_string();
                acked.lock().unwrap().push((Instant::now(), id));
                n += 1;
            }
        })
    };
    let start = Instant::now();
    while acked.lock().unwrap().len() < 20 {
        assert!(start.elapsed() < DEADLINE, "the SDK writer is not writing");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let before: BTreeSet<String> = acked
        .lock()
        .unwrap()
        .iter()
        .map(|(_, id)| id.clone())
        .collect();
    let backup = dir.path().join("backup.db");
    let began = Instant::now();
    let out = tokio::time::timeout(
        DEADLINE,
        clicktermd_async(&["--data-dir", s(&data), "backup", s(&backup)], &[]),
    )
    .await
    .expect("the backup did not finish within the deadline while the server was writing");
    let ended = Instant::now();
    assert_success(&out, "backup");
    // It copied from one snapshot: SQLite never restarted it (it would say so).
    assert!(!stderr(&out).contains("restarted"), "{}", stderr(&out));
    // The load went on while the backup ran.
    let during = acked
        .lock()
        .unwrap()
        .iter()
        .filter(|(at, _)| *at > began && *at < ended)
        .count();
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    writer.await.expect("SDK writer");
    assert!(
        during >= 5,
        "only {during} writes were acknowledged during the {:?} backup",
        ended - began
    );

    let conn = rusqlite::Connection::open(&backup).unwrap();
    let check: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(check, "ok");
    let in_backup: BTreeSet<String> = conn
        .prepare("SELECT event_id FROM events")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<rusqlite::Result<_>>()
        .unwrap();
    assert!(
        before.is_subset(&in_backup),
        "missing from the backup: {:?}",
        before.difference(&in_backup).collect::<Vec<_>>()
    );
    let filler: i64 = conn
        .query_row(
            "SELECT count(*) FROM audit_log WHERE actor = 'filler'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(filler, 40_000);
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&backup).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "backup file mode");
    }
    assert!(!Path::new(&format!("{}.partial", backup.display())).exists());
    assert!(!Path::new(&format!("{}-wal", backup.display())).exists());
    let status = serving.terminate();
    assert!(status.success(), "graceful shutdown: {status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_token_create_prints_one_working_token() {
    let server = TestServer::start().await;
    let out = clicktermd_async(
        &[
            "--data-dir",
            s(&server.data_dir),
            "admin",
            "token",
            "create",
            "--name",
            "deploy",
        ],
        &[],
    )
    .await;
    assert_success(&out, "admin token create");
    let text = stdout(&out);
    assert_eq!(text.lines().count(), 1, "{text:?}");
    assert!(text.ends_with('\n'));
    let token = text.trim_end_matches('\n');
    assert!(token.starts_with("ctadm_"), "{token}");
    assert!(!token.contains(char::is_whitespace), "{token:?}");

    let api = bearer_client(token);
    let res = api.get(server.url("/api/v1/integrations")).json_ok().await;
    assert_eq!(res, json!([]));

    // Actions with it are audited under the token's name.
    let (app_id, _, _) = server.create_integration(&api, "By token").await;
    let audit: Value = api.get(server.url("/api/v1/audit")).json_ok().await;
    let entry = audit["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["action"] == "integration.create")
        .expect("audited");
    assert_eq!(entry["target"], app_id.as_str());
    assert_eq!(entry["actor"], "token:deploy");

    // A different token is not accepted.
    let res = bearer_client(&format!("{token}x"))
        .get(server.url("/api/v1/integrations"))
        .send()
        .await
        .unwrap();
    expect_error(res, StatusCode::UNAUTHORIZED).await;
    server.stop().await;
}

#[test]
fn version_prints_the_version() {
    let out = clicktermd(&["version"], &[]);
    assert_success(&out, "version");
    let text = stdout(&out);
    assert!(
        text.starts_with(&format!("clicktermd {} ", env!("CARGO_PKG_VERSION"))),
        "{text}"
    );
    let out = clicktermd(&["--version"], &[]);
    assert_success(&out, "--version");
    assert!(
        stdout(&out).contains(env!("CARGO_PKG_VERSION")),
        "{}",
        stdout(&out)
    );
}

async fn login(server: &TestServer, password: &str) -> (StatusCode, reqwest::Client) {
    let http = cookie_client();
    let res = http
        .post(server.url("/api/v1/login"))
        .json(&json!({"username": "admin", "password": password}))
        .send()
        .await
        .unwrap();
    (res.status(), http)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_password_replaces_the_initial_password() {
    let server = TestServer::start().await;
    let old = server.admin_password();
    let (status, old_session) = login(&server, &old).await;
    assert_eq!(status, StatusCode::OK);
    let data = server.data_dir.clone();

    // Too short: refused, naming the password, and nothing changes.
    let out = tokio::task::spawn_blocking({
        let data = data.clone();
        move || {
            clicktermd_with_stdin(
                &[
                    "--data-dir",
                    s(&data),
                    "admin",
                    "set-password",
                    "--username",
                    "admin",
                    "--password-stdin",
                ],
                &[],
                "short\n",
            )
        }
    })
    .await
    .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("password"), "{}", stderr(&out));
    assert!(data.join("initial-admin-password").exists());
    assert_eq!(login(&server, &old).await.0, StatusCode::OK);

    let new = "correct horse battery staple";
    let out = tokio::task::spawn_blocking({
        let data = data.clone();
        move || {
            clicktermd_with_stdin(
                &[
                    "--data-dir",
                    s(&data),
                    "admin",
                    "set-password",
                    "--username",
                    "admin",
                    "--password-stdin",
                ],
                &[],
                &format!("{new}\n"),
            )
        }
    })
    .await
    .unwrap();
    assert_success(&out, "set-password");
    assert!(
        stdout(&out).is_empty(),
        "nothing printed with --password-stdin"
    );

    let (status, fresh) = login(&server, new).await;
    assert_eq!(status, StatusCode::OK);
    fresh.get(server.url("/api/v1/session")).json_ok().await;
    assert_eq!(login(&server, &old).await.0, StatusCode::UNAUTHORIZED);
    assert!(!data.join("initial-admin-password").exists());
    // Sessions from before the change are over.
    let res = old_session
        .get(server.url("/api/v1/session"))
        .send()
        .await
        .unwrap();
    expect_error(res, StatusCode::UNAUTHORIZED).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn integration_create_judges_the_callback_url_with_dns_first() {
    let dns = common::dns::DnsServer::start().await;
    dns.set("ok.test", &["127.0.0.1".parse().unwrap()]);
    dns.set("inside.test", &["127.0.0.2".parse().unwrap()]);
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    init_database(dir.path(), &data);
    let servers = format!("[\"{}\"]", dns.server_string());
    let env = [
        ("CLICKTERMD_WEBHOOKS__DNS_SERVERS", servers.as_str()),
        (
            "CLICKTERMD_WEBHOOKS__ALLOW_PRIVATE_CIDRS",
            "[\"127.0.0.1/32\"]",
        ),
    ];
    let create = |url: String| {
        let data = s(&data).to_string();
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        async move {
            let env: Vec<(&str, &str)> =
                env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            let args = [
                "--data-dir",
                &data,
                "integration",
                "create",
                "--name",
                "Hooks",
                "--callback-url",
                &url,
                "--json",
            ];
            clicktermd_async(&args, &env).await
        }
    };
    // The last one would be allowed but for its length: the admission is the admin API's, limit and
    // all, with the API's sentence.
    let too_long = format!("https://ok.test/{}", "a".repeat(2048));
    for (url, reason) in [
        ("https://inside.test/hook".to_string(), "127.0.0.2"),
        ("https://nowhere.test/hook".to_string(), "dns_error"),
        (
            "https://[::ffff:127.0.0.2]/hook".to_string(),
            "blocked_address",
        ),
        ("http://ok.test/hook".to_string(), "https"),
        (too_long, "(too_long): must be at most 2048 characters"),
    ] {
        let out = create(url.clone()).await;
        assert_eq!(
            out.status.code(),
            Some(2),
            "{url}: {}",
            common::stderr(&out)
        );
        let err = common::stderr(&out);
        assert!(
            err.contains("--callback-url refused") && err.contains(reason),
            "{url}: {err}"
        );
    }
    let out = clicktermd_async(
        &["--data-dir", s(&data), "integration", "list", "--json"],
        &[],
    )
    .await;
    assert_success(&out, "integration list");
    assert_eq!(
        common::stdout(&out).trim(),
        "[]",
        "a refused create wrote nothing"
    );

    let out = create("https://ok.test/hook".to_string()).await;
    assert_success(&out, "integration create --callback-url");
    let out = clicktermd_async(
        &["--data-dir", s(&data), "integration", "list", "--json"],
        &[],
    )
    .await;
    let list: Value = serde_json::from_str(&common::stdout(&out)).unwrap();
    assert_eq!(list[0]["callbackUrl"], "https://ok.test/hook", "{list}");
}

// Issue #14, point 4: configuration where people look for it.

/// `admin token create` in the wrong directory used to make a new database and print a token the
/// server rejects. Every command but `serve` and `init` now refuses, naming where it looked.
#[test]
fn commands_other_than_serve_and_init_never_create_a_database() {
    let dir = tempfile::tempdir().unwrap();
    let here = std::fs::canonicalize(dir.path()).unwrap();
    let elsewhere = here.join("elsewhere");
    let commands: [&[&str]; 6] = [
        &["admin", "token", "create"],
        &["admin", "token", "list"],
        &["admin", "create", "--username", "ops"],
        &["integration", "list"],
        &["integration", "create", "--name", "Shop"],
        &["backup", "copy.db"],
    ];
    for args in commands {
        let out = clicktermd_in(&here, args);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(stdout(&out).is_empty(), "{args:?}: {}", stdout(&out));
        let default = here.join("clicktermd-data");
        for needle in [
            default.to_str().unwrap(),
            "default data directory",
            "--data-dir",
            "--config",
            "no configuration file",
        ] {
            assert!(err.contains(needle), "{args:?}: {needle:?} in {err}");
        }
        assert!(!default.exists(), "{args:?} created {}", default.display());

        let mut with_dir = vec!["--data-dir", s(&elsewhere)];
        with_dir.extend_from_slice(args);
        let out = clicktermd_in(&here, &with_dir);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{with_dir:?}: {err}");
        assert!(
            err.contains(s(&elsewhere)) && err.contains("given with --data-dir"),
            "{err}"
        );
        assert!(!elsewhere.exists());
    }
}

/// `serve` finds `./clicktermd.toml` by itself and says so; the other commands read the same file,
/// so a token minted in that directory is one the server accepts; `init` says how the file is found.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_reads_clicktermd_toml_in_the_current_directory_and_says_which_file() {
    let dir = tempfile::tempdir().unwrap();
    let here = dir.path();
    let out = clicktermd_in(here, &["init"]);
    assert_success(&out, "init");
    let said = stdout(&out);
    assert!(
        said.contains("serve` started in this directory reads clicktermd.toml by itself"),
        "{said}"
    );
    // A data directory of the file's own, so that it is the file (not the default) that counts.
    let config = here.join("clicktermd.toml");
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        text.replace(
            "data_dir = \"./clicktermd-data\"",
            "data_dir = \"./from-file\"",
        ),
    )
    .unwrap();

    let log = here.join("serve.log");
    let (serving, base) = common::serving::serve_in(here, &[], &log).await;
    let text = serving.log();
    assert!(
        text.contains(
            "configuration: the configuration file clicktermd.toml (found in the current directory)"
        ),
        "{text}"
    );
    assert!(here.join("from-file/clicktermd.db").is_file(), "{text}");
    let out = clicktermd_in(here, &["admin", "token", "create"]);
    assert_success(
        &out,
        "admin token create next to the server's clicktermd.toml",
    );
    let token = stdout(&out).trim().to_string();
    let res = bearer_client(&token)
        .get(format!("{base}/api/v1/integrations"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK, "the server accepts the token");
    drop(serving);

    // Elsewhere, no file: said too.
    let empty = tempfile::tempdir().unwrap();
    let log = empty.path().join("serve.log");
    let (serving, _) = common::serving::serve_in(empty.path(), &[], &log).await;
    assert!(
        serving
            .log()
            .contains("configuration: no configuration file"),
        "{}",
        serving.log()
    );
}

/// The first-start banner tells how to reach this server's data from the command line: with the
/// `--config` and `--data-dir` the server was started with.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_start_banner_repeats_config_and_data_dir() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("my config.toml");
    std::fs::write(&config, "[log]\nlevel = \"info\"\n").unwrap();
    let data = dir.path().join("data");
    let log = dir.path().join("serve.log");
    let args = ["--config", s(&config), "--data-dir", s(&data)];
    let (serving, _) = common::serving::serve_in(dir.path(), &args, &log).await;
    let text = serving.log();
    let expected = format!(
        "Change it with: clicktermd --config '{}' --data-dir {} admin set-password --username admin",
        s(&config),
        s(&data)
    );
    assert!(text.contains(&expected), "{expected:?} in {text}");
}

/// Mistakes people make get the fix in their own words, not serde's.
#[test]
fn configuration_mistakes_are_answered_with_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    /// Arguments, environment, what the message must say.
    type Case<'a> = (&'a [&'a str], &'a [(&'a str, &'a str)], &'a [&'a str]);
    let cases: [Case; 4] = [
        (
            &["serve", "--listen", "localhost:8080"],
            &[],
            &["127.0.0.1:8080"],
        ),
        (
            &["check-url", "https://example.com/"],
            &[("CLICKTERMD_WEBHOOKS__TIMEOUT_SECS", "ten")],
            &["a number of seconds"],
        ),
        (
            &["check-url", "https://example.com/"],
            &[(
                "CLICKTERMD_WEBHOOKS__ALLOW_PRIVATE_CIDRS",
                "[\"127.0.0.1\"]",
            )],
            &["\"127.0.0.1/32\""],
        ),
        (
            &["check-url", "https://example.com/"],
            &[("CLICKTERMD_SERVER__LISTEN", "localhost:8080")],
            &["127.0.0.1:8080"],
        ),
    ];
    for (args, env, needles) in cases {
        let out = clicktermd_command(args, env)
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{args:?} {env:?}: {err}");
        for needle in needles {
            assert!(
                err.contains(needle),
                "{args:?} {env:?}: {needle:?} in {err}"
            );
        }
        assert!(!err.contains("expected f64"), "{err}");
    }
}

/// A name that does not exist reads as a sentence, not as hickory's `Debug` form of the query.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_url_explains_a_dns_failure_in_words() {
    let dns = common::dns::DnsServer::start().await;
    let servers = format!("[\"{}\"]", dns.server_string());
    let out = clicktermd_async(
        &["check-url", "https://nowhere.test/hook"],
        &[("CLICKTERMD_WEBHOOKS__DNS_SERVERS", servers.as_str())],
    )
    .await;
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let said = stdout(&out);
    assert!(said.contains("nowhere.test"), "{said}");
    assert!(
        said.contains("does not exist") || said.contains("has no address"),
        "{said}"
    );
    for debug in ["Query {", "Name(", "query_type", "NoRecords"] {
        assert!(!said.contains(debug), "{debug:?} in {said}");
    }
}

/// Every option and argument of every command has a line of help.
#[test]
fn every_option_has_a_help_line() {
    fn walk(path: &mut Vec<String>, undocumented: &mut Vec<String>) {
        let mut args = path.clone();
        args.push("--help".into());
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = clicktermd(&args, &[]);
        assert_success(&out, &format!("{args:?}"));
        let text = stdout(&out);
        let mut section = "";
        let mut children = Vec::new();
        for line in text.lines() {
            if line.ends_with(':') && !line.starts_with(' ') {
                section = line;
                continue;
            }
            let entry = line.trim_start();
            let indent = line.len() - entry.len();
            if entry.is_empty() || indent > 6 {
                continue;
            }
            match section {
                "Commands:" => {
                    let name = entry.split_whitespace().next().unwrap();
                    if name != "help" {
                        children.push(name.to_string());
                    }
                }
                "Options:" | "Arguments:" => {
                    let (spec, help) = entry.split_once("  ").unwrap_or((entry, ""));
                    if help.trim().is_empty() {
                        undocumented.push(format!("{} {spec}", path.join(" ")));
                    }
                }
                _ => {}
            }
        }
        for child in children {
            path.push(child);
            walk(path, undocumented);
            path.pop();
        }
    }
    let mut undocumented = Vec::new();
    walk(&mut Vec::new(), &mut undocumented);
    assert!(undocumented.is_empty(), "without help: {undocumented:#?}");
}
