//! A full disk is a clear, recoverable condition: the real binary with its data directory on a small
//! tmpfs that the test mounts and fills. Writes are refused with 507 and a message that says so,
//! `/healthz` and `/metrics` tell, the log says it once, the server takes writes again by itself when
//! space returns, and no acknowledged record is lost; a server started on a full disk refuses to start
//! and says why.
//!
//! Mounting needs root (as the packaging test does); run as another user, the test fails saying so.

use crate::common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::common::Call;
use crate::common::serving::serve;
use crate::common::{DEADLINE, assert_success, clicktermd, clicktermd_command};
use reqwest::StatusCode;
use serde_json::{Value, json};

/// A tmpfs mounted for the test, unmounted when dropped.
struct Tmpfs {
    path: PathBuf,
    _dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Tmpfs {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mnt");
        std::fs::create_dir(&path).unwrap();
        let out = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(&path)
            .output()
            .expect("run mount");
        assert!(
            out.status.success(),
            "this test mounts a small tmpfs to fill it, which needs root: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Tmpfs { path, _dir: dir }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

/// Writes `path` in 64 KiB pieces until the file system refuses any more.
fn fill(path: &Path) {
    let mut f = std::fs::File::create(path).unwrap();
    let chunk = vec![0xa5u8; 64 * 1024];
    loop {
        if f.write_all(&chunk).is_err() {
            break;
        }
    }
    // The last, partial piece too: nothing is left.
    let mut small = vec![0u8; 512];
    while f.write_all(&small).is_ok() {}
    small.truncate(1);
    while f.write_all(&small).is_ok() {}
}

async fn act(base: &str, app_id: &str, tid: &str, user: &str) -> reqwest::Response {
    common::client()
        .post(format!("{base}/public-client/v1/clickwrap"))
        .json(&json!({"appId": app_id, "clickwrapTemplateId": tid, "endUserId": user, "action": "ACCEPTED"}))
        .send()
        .await
        .unwrap()
}

async fn metrics(base: &str) -> String {
    common::client()
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

async fn health(base: &str) -> (StatusCode, Value) {
    let res = common::client()
        .get(format!("{base}/healthz"))
        .send()
        .await
        .unwrap();
    (res.status(), res.json().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_refuses_writes_clearly_and_recovers_by_itself() {
    let fs = Tmpfs::mount("24m");
    let data = fs.path.join("data");
    let log_dir = tempfile::tempdir().unwrap();
    let (serving, base) = serve(&data, &log_dir.path().join("log"), &[]).await;
    let dir = data.to_str().unwrap();
    let out = clicktermd(&["--data-dir", dir, "admin", "token", "create"], &[]);
    assert_success(&out, "admin token create");
    let admin = common::bearer_client(String::from_utf8(out.stdout).unwrap().trim());
    let (app_id, _, _) = common::create_integration(&admin, &base, "Full").await;
    let template = admin
        .post(format!("{base}/api/v1/templates"))
        .json(&json!({"name": "Terms", "defaultLanguage": "en",
                      "languages": {"en": {"title": "Terms", "content": "<p>Terms</p>"}}}))
        .json_with(StatusCode::CREATED)
        .await;
    let tid = template["id"].as_str().unwrap().to_string();
    admin
        .post(format!("{base}/api/v1/templates/{tid}/versions"))
        .json(&json!({"type": "MAJOR"}))
        .json_with(StatusCode::CREATED)
        .await;

    // Every event acknowledged with 201, before, during and after the episode.
    let mut acknowledged = Vec::new();
    for i in 0..20 {
        let res = act(&base, &app_id, &tid, &format!("before-{i}")).await;
        assert_eq!(res.status(), StatusCode::CREATED);
        acknowledged.push(res.json::<Value>().await.unwrap()["clickwrapEventId"].clone());
    }

    let filler = fs.path.join("filler");
    fill(&filler);
    // The log may still have room in pages it already holds; writes go on until it has none.
    let mut refused = None;
    for i in 0..5000 {
        let res = act(&base, &app_id, &tid, &format!("filling-{i}")).await;
        match res.status() {
            StatusCode::CREATED => {
                acknowledged.push(res.json::<Value>().await.unwrap()["clickwrapEventId"].clone())
            }
            StatusCode::INSUFFICIENT_STORAGE => {
                refused = Some(common::expect_error(res, StatusCode::INSUFFICIENT_STORAGE).await);
                break;
            }
            other => panic!(
                "act {i} on a full disk answered {other}: {}",
                res.text().await.unwrap()
            ),
        }
    }
    let refused = refused.expect("writes were refused once the disk was full");
    assert_eq!(refused["code"], "disk_full", "{refused}");
    assert!(
        refused["message"]
            .as_str()
            .unwrap()
            .contains("disk holding the database is full"),
        "{refused}"
    );
    for i in 0..10 {
        let res = act(&base, &app_id, &tid, &format!("full-{i}")).await;
        common::expect_error(res, StatusCode::INSUFFICIENT_STORAGE).await;
    }
    let (status, body) = health(&base).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["status"], "disk full", "{body}");
    assert!(
        metrics(&base)
            .await
            .contains("clicktermd_storage_disk_full 1")
    );
    // Reads go on.
    admin
        .get(format!("{base}/api/v1/integrations"))
        .json_ok()
        .await;
    let said = serving
        .log()
        .matches("the disk holding the database is full")
        .count();
    assert_eq!(said, 1, "logged once for the episode:\n{}", serving.log());

    // Space comes back: the server notices by itself, without a write from anyone.
    std::fs::remove_file(&filler).unwrap();
    let start = Instant::now();
    while health(&base).await.0 != StatusCode::OK {
        assert!(
            start.elapsed() < DEADLINE,
            "the server did not notice the space came back"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        metrics(&base)
            .await
            .contains("clicktermd_storage_disk_full 0")
    );
    assert!(
        serving.log().contains("disk space is back"),
        "{}",
        serving.log()
    );
    for i in 0..20 {
        let res = act(&base, &app_id, &tid, &format!("after-{i}")).await;
        assert_eq!(res.status(), StatusCode::CREATED);
        acknowledged.push(res.json::<Value>().await.unwrap()["clickwrapEventId"].clone());
    }
    assert!(serving.terminate().success());

    // The database is whole and holds every acknowledged event.
    let db = rusqlite::Connection::open(data.join("clicktermd.db")).unwrap();
    let check: String = db
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(check, "ok");
    let mut stmt = db
        .prepare("SELECT count(*) FROM events WHERE event_id = ?1")
        .unwrap();
    for id in &acknowledged {
        let n: i64 = stmt
            .query_row([id.as_str().unwrap()], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 1, "acknowledged event {id} is in the database");
    }
    drop(stmt);
    drop(db);

    // Started on a full disk, it refuses to start and says why.
    fill(&filler);
    let out = clicktermd_command(
        &["--data-dir", dir, "serve"],
        &[("CLICKTERMD_SERVER__LISTEN", "127.0.0.1:0")],
    )
    .stdin(std::process::Stdio::null())
    .output()
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "started on a full disk:\n{stderr}");
    assert!(stderr.contains("is full"), "the reason is given:\n{stderr}");
    std::fs::remove_file(&filler).unwrap();
    let db = rusqlite::Connection::open(data.join("clicktermd.db")).unwrap();
    let check: String = db
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(check, "ok", "the refused start left the database whole");
}
