//! A crash in the middle of a burst of deliveries loses none: the real binary is killed with SIGKILL
//! while attempts are in flight, started again on the same data directory, and every delivery reaches
//! the (loopback, TLS) receiver at least once. Also: one serving process per data directory, and a clean
//! stop leaves the database file complete on its own.

use crate::common;
use crate::common::Call;

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::common::dns::DnsServer;
use crate::common::receiver::Receiver;
use crate::common::serving::serve;
use crate::common::{DEADLINE, assert_success, clicktermd, read_admin_password, stderr};
use reqwest::StatusCode;
use serde_json::{Value, json};

const SECRET: &str = "whsec_crash_test_secret";
const BURST: usize = 40;

fn db(data: &Path) -> rusqlite::Connection {
    let c = rusqlite::Connection::open(data.join("clicktermd.db")).expect("open the database");
    c.busy_timeout(Duration::from_secs(5)).unwrap();
    c
}

fn count(data: &Path, state: &str) -> i64 {
    db(data)
        .query_row(
            "SELECT count(*) FROM deliveries WHERE state = ?1",
            [state],
            |r| r.get(0),
        )
        .unwrap()
}

async fn login(base: &str, data: &Path) -> reqwest::Client {
    let admin = common::cookie_client();
    admin
        .post(format!("{base}/api/v1/login"))
        .json(&json!({"username": common::ADMIN, "password": read_admin_password(data)}))
        .json_ok()
        .await;
    admin
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_a_burst_loses_no_delivery() {
    let receiver = Receiver::start(SECRET).await;
    let dns = DnsServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let ca = receiver.ca_file.to_str().unwrap().to_string();
    let dns_servers = format!("[\"{}\"]", dns.server_string());
    let env = [
        (
            "CLICKTERMD_WEBHOOKS__ALLOW_PRIVATE_CIDRS",
            "[\"127.0.0.1/32\"]",
        ),
        ("CLICKTERMD_WEBHOOKS__EXTRA_CA_FILE", ca.as_str()),
        ("CLICKTERMD_WEBHOOKS__DNS_SERVERS", dns_servers.as_str()),
        ("CLICKTERMD_WEBHOOKS__TIMEOUT_SECS", "5"),
        ("CLICKTERMD_WEBHOOKS__MAX_IN_FLIGHT_PER_INTEGRATION", "8"),
    ];
    let (first, base) = serve(&data, &dir.path().join("first.log"), &env).await;
    let admin = login(&base, &data).await;
    let (app_id, _, _) = common::create_integration(&admin, &base, "Crash").await;
    // Each answer takes 400 ms, so a burst of 40 with 8 in flight takes about two seconds.
    admin
        .patch(format!("{base}/api/v1/integrations/{app_id}"))
        .json(&json!({"callbackUrl": receiver.url("127.0.0.1", "/slow/400")}))
        .json_ok()
        .await;
    db(&data)
        .execute(
            "UPDATE integrations SET signing_secret = ?1 WHERE app_id = ?2",
            [SECRET, app_id.as_str()],
        )
        .unwrap();

    for _ in 0..BURST {
        let res = admin
            .post(format!("{base}/api/v1/integrations/{app_id}/test-webhook"))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::ACCEPTED, "{:?}", res.text().await);
    }
    let expected: BTreeSet<String> = {
        let c = db(&data);
        let mut stmt = c.prepare("SELECT payload FROM deliveries").unwrap();
        stmt.query_map([], |r| r.get::<_, Vec<u8>>(0))
            .unwrap()
            .map(|p| {
                let v: Value = serde_json::from_slice(&p.unwrap()).unwrap();
                v["data"]["clickwrapEventId"].as_str().unwrap().to_string()
            })
            .collect()
    };
    assert_eq!(expected.len(), BURST);

    // Kill as soon as the first attempts are at the receiver: others are in flight or still queued.
    receiver.wait_for(1, DEADLINE).await;
    first.kill9();
    let in_flight = count(&data, "in_flight");
    let unfinished = BURST as i64 - count(&data, "succeeded");
    assert!(
        in_flight > 0 && unfinished > in_flight,
        "the kill must interrupt attempts and leave a queue: {in_flight} in flight, {unfinished} unfinished"
    );

    let (second, base) = serve(&data, &dir.path().join("second.log"), &env).await;
    let start = Instant::now();
    let arrived = loop {
        let arrived: BTreeSet<String> = receiver
            .requests()
            .iter()
            .filter(|r| r.signature_valid)
            .map(|r| {
                r.json()["data"]["clickwrapEventId"]
                    .as_str()
                    .unwrap()
                    .to_string()
            })
            .collect();
        if arrived.is_superset(&expected) || start.elapsed() > DEADLINE {
            break arrived;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let missing: Vec<_> = expected.difference(&arrived).collect();
    assert!(
        missing.is_empty(),
        "{} deliveries never arrived after the restart: {missing:?}\nlog:\n{}",
        missing.len(),
        second.log()
    );
    assert!(
        second.log().contains("attempting them again"),
        "the restart says what it recovered:\n{}",
        second.log()
    );
    // Every delivery ends succeeded, through the admin API of the new process.
    let admin = login(&base, &data).await;
    let start = Instant::now();
    loop {
        let list: Value = admin
            .get(format!(
                "{base}/api/v1/integrations/{app_id}/deliveries?limit=100"
            ))
            .json_ok()
            .await;
        let items = list["items"].as_array().expect("items");
        let done = items.iter().filter(|d| d["state"] == "succeeded").count();
        if done == BURST {
            break;
        }
        assert!(start.elapsed() < DEADLINE, "not all succeeded: {list}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // One serving process per data directory: a second one is refused and changes nothing.
    let data_arg = data.to_str().unwrap();
    let out = clicktermd(
        &["--data-dir", data_arg, "serve"],
        &[("CLICKTERMD_SERVER__LISTEN", "127.0.0.1:0")],
    );
    assert!(!out.status.success(), "a second server started");
    assert!(stderr(&out).contains("already serving"), "{}", stderr(&out));
    let status = second.terminate();
    assert!(status.success(), "{status}");
    // A clean stop leaves no log beside the database: the database file alone holds everything, so
    // copying just that file is a complete copy.
    for side in ["clicktermd.db-wal", "clicktermd.db-shm"] {
        assert!(
            !data.join(side).exists(),
            "{side} is left after a clean stop"
        );
    }
    let copy = dir.path().join("copy");
    std::fs::create_dir(&copy).unwrap();
    std::fs::copy(data.join("clicktermd.db"), copy.join("clicktermd.db")).unwrap();
    assert_eq!(count(&copy, "succeeded"), BURST as i64);
    // Read-only commands still work beside a server; after it stopped, so does everything else.
    let out = clicktermd(&["--data-dir", data_arg, "integration", "list"], &[]);
    assert_success(&out, "integration list");
}
