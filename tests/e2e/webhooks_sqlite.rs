//! The webhook tests that are SQLite's own: a data directory of the first release (a SQLite file of
//! schema version 1) upgraded in place with its queue. The PostgreSQL binary does not include this
//! module (its schema has no history of SQLite versions; `migrate-store` is its way in).

use std::time::{Duration, Instant};

use crate::common::dns::DnsServer;
use crate::common::receiver::Receiver;
use crate::common::{Call, DEADLINE, TestServer};
use crate::webhooks::RECEIVER_SECRET;
use serde_json::Value;

/// A data directory left by the first release (schema version 1, `tests/fixtures/schema-v1.sql`) is
/// upgraded in place when the server starts: its integration is still there, and the deliveries it had
/// queued — one pending, one left in flight by a crash, one held — are sent, signed with the
/// integration's secret. (The held one is held although its integration delivers, as a process stopped
/// in the middle of releasing a hold leaves it: settling at start releases it.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_first_release_database_is_upgraded_and_its_queue_still_delivers() {
    let receiver = Receiver::start(RECEIVER_SECRET).await;
    let dns = DnsServer::start().await;
    dns.set("receiver.test", &["127.0.0.1".parse().unwrap()]);
    let (ca, dns_server) = (receiver.ca_file.clone(), dns.server_string());
    let callback = receiver.url("receiver.test", "/ok");
    let server = TestServer::start_with(|c| {
        c.webhooks.dns_servers = vec![dns_server.parse().unwrap()];
        c.webhooks.extra_ca_file = Some(ca);
        c.webhooks.allow_private_cidrs = vec!["127.0.0.1/32".parse().unwrap()];
        std::fs::create_dir_all(&c.storage.data_dir).unwrap();
        let db = rusqlite::Connection::open(c.storage.data_dir.join("clicktermd.db")).unwrap();
        db.execute_batch(include_str!("fixtures/schema-v1.sql"))
            .unwrap();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64;
        db.execute(
            "INSERT INTO integrations (id, app_id, name, app_key_digest, signing_secret, status, callback_url, \
             webhook_delivery_enabled, created_at) VALUES (1, 'legacy-app', 'Legacy', x'00', ?1, 'ENABLED', ?2, 1, ?3)",
            rusqlite::params![RECEIVER_SECRET, callback, now - 60_000],
        )
        .unwrap();
        for (id, state, lease) in [
            ("legacy-pending", "pending", None),
            ("legacy-in-flight", "in_flight", Some(now - 1_000)),
            ("legacy-held", "held", None),
        ] {
            db.execute(
                "INSERT INTO deliveries (delivery_id, integration_id, is_test, payload, state, next_attempt_at, \
                 lease_until, created_at, updated_at) VALUES (?1, 1, 1, ?2, ?3, ?4, ?5, ?4, ?4)",
                rusqlite::params![
                    id,
                    format!("{{\"type\":\"TEST\",\"id\":\"{id}\"}}").into_bytes(),
                    state,
                    now - 10_000,
                    lease
                ],
            )
            .unwrap();
        }
    })
    .await;
    let db = rusqlite::Connection::open(server.data_dir.join("clicktermd.db")).unwrap();
    let version: i64 = db
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .unwrap();
    assert_eq!(version, clicktermd::store::SCHEMA_VERSION);
    assert!(version > 1);

    let arrived = receiver.wait_for(3, DEADLINE).await;
    let mut ids: Vec<String> = arrived
        .iter()
        .map(|r| {
            assert!(r.contract_errors.is_empty(), "{r:?}");
            r.json()["id"].as_str().unwrap().to_string()
        })
        .collect();
    ids.sort();
    assert_eq!(ids, ["legacy-held", "legacy-in-flight", "legacy-pending"]);

    let admin = server.admin_client().await;
    let res = admin
        .get(server.url("/api/v1/integrations/legacy-app"))
        .json_ok()
        .await;
    assert_eq!(res["name"], "Legacy");
    // The counts kept since the upgrade (filled from the old rows) follow them to the end.
    let start = Instant::now();
    loop {
        let counts: Value = admin
            .get(server.url("/api/v1/integrations/legacy-app/delivery-counts"))
            .json_ok()
            .await;
        if counts["succeeded"] == 3 {
            assert_eq!(counts["held"], 0, "{counts}");
            break;
        }
        assert!(start.elapsed() < DEADLINE, "{counts}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Each old delivery was given its event type by the migration, and the history shows it.
    let history: Value = admin
        .get(server.url("/api/v1/integrations/legacy-app/deliveries"))
        .json_ok()
        .await;
    let items = history["items"].as_array().unwrap();
    assert_eq!(items.len(), 3, "{history}");
    for item in items {
        assert_eq!(item["eventType"], "CLICKWRAP_EVENT_VERIFIED", "{item}");
        assert_eq!(item["state"], "succeeded", "{item}");
    }
    server.stop().await;
}
