//! Proof of consent on the SQLite file itself (issue #17), apart from `ledger.rs` because the
//! PostgreSQL suite cannot run them: `verify-ledger` names the link a change made to the file behind
//! the server's back broke (an end user changed, an event deleted, two links swapped, the file cut
//! short), the chain of 10 000 verifies survives a restart and a `kill -9` of the real binary on its
//! data directory, and an export of 100 000 events streams in flat server memory. The same
//! `verify-ledger` and export on PostgreSQL are `ledger.rs`'s.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::common::serving::{Serving, serve, serve_within};
use crate::common::{
    self, Call, DEADLINE, assert_success, clicktermd, read_admin_password, stderr, stdout,
};
use sha2::{Digest, Sha256};

use crate::ledger::{Setup, ZEROS, accept, link_of, setup};

/// The SDK limits off for the tests that verify thousands of events from one address.
const UNLIMITED: [(&str, &str); 2] = [
    (
        "CLICKTERMD_LIMITS__SDK_REQUESTS_PER_SEC_PER_ADDRESS",
        "1000000",
    ),
    ("CLICKTERMD_LIMITS__SDK_BURST_PER_ADDRESS", "1000000"),
];

/// [`rehash`] of an exported line, read straight into members sorted by name (the document's values
/// are all scalars, so that is its canonical order) without the copy.
fn rehash_line(line: &[u8]) -> (i64, String, String) {
    let mut members: BTreeMap<String, Value> = serde_json::from_slice(line).unwrap();
    let ledger = members.remove("ledger").expect("a ledger member");
    assert!(members.values().all(|v| !v.is_object() && !v.is_array()));
    let canonical = serde_json::to_vec(&members).unwrap();
    link_of(&Sha256::digest(canonical).into(), &ledger, &members)
}

/// The real binary serving `data`, with an admin cookie client.
async fn serving(data: &Path, log: &Path) -> (Serving, String, reqwest::Client) {
    let (child, base) = serve(data, log, &UNLIMITED).await;
    let admin = common::cookie_client();
    admin
        .post(format!("{base}/api/v1/login"))
        .json(&json!({"username": common::ADMIN, "password": read_admin_password(data)}))
        .json_ok()
        .await;
    (child, base, admin)
}

/// `clicktermd verify-ledger` on a data directory: (exit code, standard output).
fn verify_ledger(data: &Path, extra: &[&str]) -> (i32, String) {
    let mut args = vec!["--data-dir", data.to_str().unwrap(), "verify-ledger"];
    args.extend_from_slice(extra);
    let out = clicktermd(&args, &[]);
    (
        out.status.code().unwrap_or(-1),
        format!("{}{}", stdout(&out), stderr(&out)),
    )
}

fn db(data: &Path) -> rusqlite::Connection {
    let c = rusqlite::Connection::open(data.join("clicktermd.db")).unwrap();
    c.busy_timeout(Duration::from_secs(5)).unwrap();
    c
}

/// The event chained at `position`.
fn event_at(data: &Path, position: i64) -> String {
    db(data)
        .query_row(
            "SELECT e.event_id FROM ledger l JOIN events e ON e.id = l.event_id WHERE l.position = ?1",
            [position],
            |r| r.get(0),
        )
        .unwrap()
}

/// Runs `sql` with the named triggers out of the way, as someone editing the file would.
fn tamper(data: &Path, triggers: &[&str], sql: &str) {
    let c = db(data);
    // As a hand at the file would: without the foreign keys this build of SQLite enforces by default.
    c.execute_batch("PRAGMA foreign_keys = OFF").unwrap();
    let mut saved = Vec::new();
    for t in triggers {
        let create: String = c
            .query_row("SELECT sql FROM sqlite_schema WHERE name = ?1", [t], |r| {
                r.get(0)
            })
            .unwrap();
        c.execute_batch(&format!("DROP TRIGGER {t}")).unwrap();
        saved.push(create);
    }
    c.execute_batch(sql).unwrap();
    for create in saved {
        c.execute_batch(&create).unwrap();
    }
}

fn copy_of(data: &Path, to: &Path) -> std::path::PathBuf {
    std::fs::create_dir_all(to).unwrap();
    std::fs::copy(data.join("clicktermd.db"), to.join("clicktermd.db")).unwrap();
    to.to_path_buf()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_ledger_names_the_link_each_tampering_broke() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (child, base, admin) = serving(&data, &dir.path().join("serve.log")).await;
    let s = setup(&base, &admin, "Shop", "<p>Terms, {{fullName}}</p>").await;
    let http = common::client();
    for i in 0..12 {
        accept(
            &http,
            &base,
            &s,
            &format!("user-{i}"),
            "ACCEPTED",
            Some(r#"{"fullName":"U"}"#),
        )
        .await
        .unwrap();
    }
    let (code, out) = verify_ledger(&data, &[]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("ledger intact: 12 links"), "{out}");
    let head: Value = admin
        .get(format!("{base}/api/v1/ledger/head"))
        .json_ok()
        .await;
    let anchor = format!("12:{}", head["hash"].as_str().unwrap());

    // One event's end user changed in the live database, behind the running server's back.
    let fourth = event_at(&data, 4);
    tamper(
        &data,
        &["events_final_once_verified"],
        &format!("UPDATE events SET end_user_id = 'mallory' WHERE event_id = '{fourth}'"),
    );
    let (code, out) = verify_ledger(&data, &[]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(&format!(
            "ledger broken: link 4: the evidence of event {fourth} no longer matches"
        )),
        "{out}"
    );
    tamper(
        &data,
        &["events_final_once_verified"],
        &format!("UPDATE events SET end_user_id = 'user-3' WHERE event_id = '{fourth}'"),
    );
    let (code, out) = verify_ledger(&data, &["--anchor", &anchor]);
    assert_eq!(code, 0, "put back, the chain is whole again: {out}");
    assert!(child.terminate().success());

    // One event deleted: its link points at nothing. Deleted with its link: the chain has a gap.
    let deleted = copy_of(&data, &dir.path().join("deleted"));
    let seventh = event_at(&deleted, 7);
    tamper(
        &deleted,
        &["events_never_deleted"],
        &format!("DELETE FROM events WHERE event_id = '{seventh}'"),
    );
    let (code, out) = verify_ledger(&deleted, &[]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("ledger broken: link 7: its clickwrap event is no longer in the database"),
        "{out}"
    );
    tamper(
        &deleted,
        &["ledger_links_never_deleted"],
        "DELETE FROM ledger WHERE position = 7",
    );
    let (code, out) = verify_ledger(&deleted, &[]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("ledger broken: link 7 is missing"), "{out}");

    // Two links swapped (each keeping its own hash): the first of them no longer follows.
    let swapped = copy_of(&data, &dir.path().join("swapped"));
    tamper(
        &swapped,
        &["ledger_links_immutable"],
        "UPDATE ledger SET position = -9 WHERE position = 9;
         UPDATE ledger SET position = 9 WHERE position = 10;
         UPDATE ledger SET position = 10 WHERE position = -9;",
    );
    let (code, out) = verify_ledger(&swapped, &[]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("ledger broken: link 9: its hash does not follow from link 8"),
        "{out}"
    );

    // The last link cut off: only the anchor noted earlier can tell.
    let cut = copy_of(&data, &dir.path().join("cut"));
    tamper(
        &cut,
        &["ledger_links_never_deleted"],
        "DELETE FROM ledger WHERE position = 12",
    );
    let (code, out) = verify_ledger(&cut, &["--anchor", &anchor]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("link 12 is missing"), "{out}");
    // (Without the anchor its event is still found unchained.)
    let (code, out) = verify_ledger(&cut, &[]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("is verified but no link covers it"), "{out}");
    let (code, out) = verify_ledger(&cut, &["--anchor", "12:zz"]);
    assert_eq!(code, 2, "{out}");
}

/// Verifies `n` new events with `concurrency` clients at once; returns the ids acknowledged.
async fn verify_many(
    base: &str,
    s: &Arc<Setup>,
    prefix: &str,
    n: usize,
    concurrency: usize,
) -> Vec<String> {
    let next = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (base, s, next, prefix) = (
            base.to_string(),
            s.clone(),
            next.clone(),
            prefix.to_string(),
        );
        tasks.push(tokio::spawn(async move {
            let http = common::client();
            let mut done = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed) as usize;
                if i >= n {
                    return done;
                }
                let user = format!("{prefix}-{i}");
                match accept(&http, &base, &s, &user, "ACCEPTED", None).await {
                    Ok(id) => done.push(id),
                    Err(e) => panic!("{user}: {e}"),
                }
            }
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    all
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_verifies_stay_chained_across_a_restart_and_a_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (child, base, admin) = serving(&data, &dir.path().join("1.log")).await;
    let s = Arc::new(setup(&base, &admin, "Load", "<p>Terms</p>").await);
    let started = Instant::now();
    let mut acknowledged = verify_many(&base, &s, "a", 5_000, 32).await;
    println!("5000 verifies in {:?}", started.elapsed());
    assert!(child.terminate().success());

    let (child, base, _) = serving(&data, &dir.path().join("2.log")).await;
    acknowledged.extend(verify_many(&base, &s, "b", 4_000, 32).await);

    // The last ones with the process killed in the middle of them: what was acknowledged is chained,
    // whatever was in flight is either wholly there (event and link) or not at all.
    let killed = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for t in 0..32 {
        let (base, s, killed, acked) = (base.clone(), s.clone(), killed.clone(), acked.clone());
        tasks.push(tokio::spawn(async move {
            let http = common::client();
            for i in 0.. {
                if killed.load(Ordering::Relaxed) {
                    return;
                }
                match accept(&http, &base, &s, &format!("c-{t}-{i}"), "ACCEPTED", None).await {
                    Ok(id) => acked.lock().unwrap().push(id),
                    Err(_) => return,
                }
            }
        }));
    }
    let start = Instant::now();
    while acked.lock().unwrap().len() < 1_500 {
        assert!(
            start.elapsed() < DEADLINE * 4,
            "the last verifies do not go through"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    child.kill9();
    killed.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.unwrap();
    }
    acknowledged.extend(acked.lock().unwrap().drain(..));
    assert!(acknowledged.len() >= 10_000, "{}", acknowledged.len());

    let (child, base, admin) = serving(&data, &dir.path().join("3.log")).await;
    let (code, out) = verify_ledger(&data, &[]);
    assert_eq!(code, 0, "{out}");
    let c = db(&data);
    let verified: i64 = c
        .query_row(
            "SELECT count(*) FROM events WHERE verified_at IS NOT NULL",
            [],
            |r| r.get(0),
        )
        .unwrap();
    let links: i64 = c
        .query_row("SELECT count(*) FROM ledger", [], |r| r.get(0))
        .unwrap();
    assert_eq!(links, verified);
    assert!(
        out.contains(&format!("ledger intact: {links} links")),
        "{out}"
    );
    let mut missing = 0;
    for id in &acknowledged {
        let chained: i64 = c
            .query_row(
                "SELECT count(*) FROM ledger l JOIN events e ON e.id = l.event_id WHERE e.event_id = ?1",
                [id],
                |r| r.get(0),
            )
            .unwrap();
        missing += usize::from(chained != 1);
    }
    assert_eq!(missing, 0, "acknowledged verifies without their link");
    // The chain goes on from where it was after the crash.
    accept(&common::client(), &base, &s, "after", "ACCEPTED", None)
        .await
        .unwrap();
    let head: Value = admin
        .get(format!("{base}/api/v1/ledger/head"))
        .json_ok()
        .await;
    assert_eq!(head["position"], links + 1);
    assert!(child.terminate().success());
    let (code, out) = verify_ledger(&data, &[]);
    assert_eq!(code, 0, "{out}");
    println!("{out} ({} acknowledged verifies)", acknowledged.len());
}

/// The resident set of process `pid`, from `/proc/PID/status`, in bytes.
fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .expect("VmRSS");
    let kb: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kb * 1024
}

/// Streams an export and re-hashes every line as it comes; meanwhile samples the server's RSS.
/// Returns (lines by position, trailer, peak RSS, bytes).
async fn stream_export(
    admin: &reqwest::Client,
    url: &str,
    pid: u32,
) -> (BTreeMap<i64, (String, String)>, Value, u64, u64) {
    let peak = Arc::new(AtomicU64::new(rss(pid)));
    let sampling = Arc::new(AtomicBool::new(true));
    let sampler = {
        let (peak, sampling) = (peak.clone(), sampling.clone());
        tokio::spawn(async move {
            while sampling.load(Ordering::Relaxed) {
                peak.fetch_max(rss(pid), Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
    };
    let mut res = admin
        .get(url)
        .timeout(Duration::from_secs(300))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let header_head = res.headers()["clickterm-chain-head"]
        .to_str()
        .unwrap()
        .to_string();
    let mut links = BTreeMap::new();
    let mut pending = Vec::new();
    let mut trailer = Value::Null;
    let mut bytes = 0u64;
    while let Some(chunk) = res.chunk().await.unwrap() {
        bytes += chunk.len() as u64;
        pending.extend_from_slice(&chunk);
        while let Some(nl) = pending.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = pending.drain(..=nl).collect();
            let line = &line[..line.len() - 1];
            if line.starts_with(b"{\"chainHead\"") {
                trailer = serde_json::from_slice(line).unwrap();
                continue;
            }
            let (position, previous, hash) = rehash_line(line);
            assert!(
                links.insert(position, (previous, hash)).is_none(),
                "link {position} twice"
            );
        }
    }
    sampling.store(false, Ordering::Relaxed);
    sampler.await.unwrap();
    assert!(pending.is_empty());
    assert_eq!(
        format!(
            "{}:{}",
            trailer["chainHead"]["position"],
            trailer["chainHead"]["hash"].as_str().unwrap()
        ),
        header_head
    );
    (links, trailer, peak.load(Ordering::Relaxed), bytes)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_export_of_100000_events_streams_in_flat_memory_and_rehashes_to_its_head() {
    const EVENTS: i64 = 100_000;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (child, base, admin) = serving(&data, &dir.path().join("1.log")).await;
    // A text of about half a KiB, so that the export (over 100 MB) is far larger than the bound below.
    let content = format!(
        "<p>Dear {{{{fullName}}}},</p>{}",
        "<p>The terms of the service. </p>".repeat(16)
    );
    let s = setup(&base, &admin, "Big", &content).await;
    let model = accept(
        &common::client(),
        &base,
        &s,
        "model",
        "ACCEPTED",
        Some(r#"{"fullName":"M"}"#),
    )
    .await
    .unwrap();
    assert!(child.terminate().success());

    // 100 000 more verified events, generated straight into the file from the one above; then the
    // database is made one of the schema before the ledger (the ledger and the events' column for it
    // dropped), so that the start chains them all as the migration chains an existing database's
    // events.
    let started = Instant::now();
    let c = db(&data);
    c.execute_batch(&format!(
        "BEGIN;
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {EVENTS})
         INSERT INTO events (event_id, integration_id, template_id, major, minor, effective_at, end_user_id,
             action, template_placeholders, technical_metadata, language, presented_at, action_at, verified_at)
         SELECT printf('%08x-0000-4000-8000-%012x', i, i), e.integration_id, e.template_id, e.major, e.minor,
             e.effective_at, 'user-' || i, CASE WHEN i % 8 = 0 THEN 'DECLINED' ELSE 'ACCEPTED' END,
             printf('{{\"fullName\":\"User %d\"}}', i), e.technical_metadata, e.language, NULL,
             e.action_at - 86400000 + i, e.verified_at - 86400000 + i
         FROM n, events e WHERE e.event_id = '{model}';
         DROP TABLE ledger;
         ALTER TABLE events DROP COLUMN ledger_position;
         PRAGMA user_version = {before};
         COMMIT;",
        before = clicktermd::store::LEDGER_VERSION - 1
    ))
    .unwrap();
    drop(c);
    println!("generated {EVENTS} events in {:?}", started.elapsed());
    let started = Instant::now();
    let (child, base) =
        serve_within(DEADLINE * 4, &data, &dir.path().join("2.log"), &UNLIMITED).await;
    println!(
        "started, chaining {} events, in {:?}",
        EVENTS + 1,
        started.elapsed()
    );
    assert!(
        child
            .log()
            .contains("chained the events verified before the ledger"),
        "{}",
        child.log()
    );
    let token = {
        let out = clicktermd(
            &[
                "--data-dir",
                data.to_str().unwrap(),
                "admin",
                "token",
                "create",
            ],
            &[],
        );
        assert_success(&out, "token");
        stdout(&out).trim().to_string()
    };
    let admin = common::bearer_client(&token);
    let pid = child.child.id();

    // Warm up: a small export, so every pooled connection has its caches before the baseline.
    let warm = format!("{base}/api/v1/events/export?to={}", "2000-01-01T00:00:00Z");
    stream_export(&admin, &warm, pid).await;
    let (_, _, _, _) = stream_export(
        &admin,
        &format!("{base}/api/v1/events/export?endUserId=user-5"),
        pid,
    )
    .await;
    let baseline = rss(pid);
    let started = Instant::now();
    let (links, trailer, peak, bytes) =
        stream_export(&admin, &format!("{base}/api/v1/events/export"), pid).await;
    let took = started.elapsed();
    println!(
        "exported {} events, {:.1} MB in {took:?}; server RSS {:.1} MB before, peak {:.1} MB",
        links.len(),
        bytes as f64 / 1e6,
        baseline as f64 / 1e6,
        peak as f64 / 1e6
    );
    assert_eq!(links.len() as i64, EVENTS + 1);
    assert_eq!(trailer["events"], EVENTS + 1);
    // The lines chain from the first link to the head the export reports.
    let mut previous = ZEROS.to_string();
    for (i, (position, (prev, hash))) in links.iter().enumerate() {
        assert_eq!(*position, i as i64 + 1);
        assert_eq!(prev, &previous, "link {position}");
        previous = hash.clone();
    }
    assert_eq!(trailer["chainHead"]["position"], EVENTS + 1);
    assert_eq!(trailer["chainHead"]["hash"], previous.as_str());
    // Flat memory: the server grew by far less than a tenth of what it sent.
    let growth = peak.saturating_sub(baseline);
    assert!(bytes > 100_000_000, "the export is large: {bytes} bytes");
    assert!(
        growth < 24 * 1024 * 1024,
        "the server's RSS grew by {:.1} MB during a {:.1} MB export",
        growth as f64 / 1e6,
        bytes as f64 / 1e6
    );
    assert!(child.terminate().success());
}
