//! PostgreSQL's plans for the writes and reads of the delivery queue. Switching delivery on, off or
//! cancelling an integration's queue (`settle_batch`) and a bulk redelivery move their rows in
//! batches, and each batch must cost a batch, not the backlog; the dispatcher's claim must probe
//! each queue, not read it. The statements are the store's own, planned on a table whose
//! statistics were taken before the backlog built up or was released (autovacuum analyses when it
//! will: a queue held and then released is planned from figures that say nothing is pending), both
//! as PostgreSQL plans a statement for its parameters and as it plans a prepared statement once for
//! all (the store prepares them).

use serde_json::Value;
use tokio_postgres::SimpleQueryMessage;

use clicktermd::store::pg::SCHEMA_POSTGRES;
use clicktermd::store::pg::deliveries::{
    CANCEL_HELD, CANCEL_PENDING, CLAIM, HOLD_PENDING, PENDING_QUEUES, REDELIVER_FAILED_FIRST,
    REDELIVER_FAILED_NEXT, RELEASE_HELD, TAKE_DUE,
};

use crate::common::postgres;

/// Deliveries of the one integration, all in the state the statement moves from.
const BACKLOG: i64 = 20_000;
/// The store's batch (`store::deliveries::BATCH`).
const BATCH: i64 = 500;

/// A new database of the current schema with `integrations` integrations (ids 1, 2, …), where
/// autovacuum leaves `deliveries` alone: its statistics are the ones the test takes.
pub(crate) async fn database(integrations: i64) -> tokio_postgres::Client {
    let cluster = postgres::cluster();
    let db = cluster.connect(&cluster.create_database().await).await;
    db.batch_execute(SCHEMA_POSTGRES).await.unwrap();
    db.batch_execute(&format!(
        "ALTER TABLE deliveries SET (autovacuum_enabled = false);
         INSERT INTO integrations (app_id, name, app_key_digest, signing_secret, status,
                                   webhook_delivery_enabled, created_at)
             SELECT 'app' || g, 'app', '\\x00', 'secret', 'ENABLED', true, 0
             FROM generate_series(1, {integrations}) g;"
    ))
    .await
    .unwrap();
    db
}

/// `EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON)` of `sql`: the plan's top node.
async fn explain(db: &tokio_postgres::Client, sql: &str) -> Value {
    let explained = db
        .simple_query(&format!("EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) {sql}"))
        .await
        .unwrap();
    let text = explained
        .iter()
        .find_map(|m| match m {
            SimpleQueryMessage::Row(r) => r.get(0).map(str::to_string),
            _ => None,
        })
        .unwrap();
    let plan: Value = serde_json::from_str(&text).unwrap();
    plan[0]["Plan"].clone()
}

/// Every node of a plan, depth first.
fn nodes(plan: &Value) -> Vec<&Value> {
    let mut out = vec![plan];
    for child in plan["Plans"].as_array().into_iter().flatten() {
        out.extend(nodes(child));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_of_a_bulk_delivery_update_reads_its_rows_by_key_whatever_the_backlog() {
    let db = database(1).await;
    db.batch_execute(&format!(
        "INSERT INTO deliveries (delivery_id, integration_id, is_test, payload, state, created_at,
                                 updated_at)
             SELECT 'd' || g, 1, true, '\\x00', 'succeeded', g, g FROM generate_series(1, {BACKLOG}) g;
         ANALYZE deliveries;"
    ))
    .await
    .unwrap();

    let far = 1_000_000_000_000i64;
    let cases = [
        (
            "release_held",
            RELEASE_HELD,
            "held",
            format!("1, 5, {BATCH}"),
        ),
        (
            "hold_pending",
            HOLD_PENDING,
            "pending",
            format!("1, 5, {BATCH}"),
        ),
        (
            "cancel_pending",
            CANCEL_PENDING,
            "pending",
            format!("1, 5, {BATCH}"),
        ),
        ("cancel_held", CANCEL_HELD, "held", format!("1, 5, {BATCH}")),
        (
            "redeliver_first",
            REDELIVER_FAILED_FIRST,
            "failed",
            format!("'pending', 5, 1, 0, {far}, {BATCH}"),
        ),
        (
            "redeliver_next",
            REDELIVER_FAILED_NEXT,
            "failed",
            format!("'pending', 5, 1, 0, 0, {far}, {BATCH}"),
        ),
    ];
    for (name, statement, from, args) in cases {
        db.batch_execute(&format!(
            "PREPARE {name} AS {statement};
             BEGIN;
             UPDATE deliveries SET state = '{from}';"
        ))
        .await
        .unwrap();
        for mode in ["force_custom_plan", "force_generic_plan"] {
            db.batch_execute(&format!("SAVEPOINT s; SET LOCAL plan_cache_mode = {mode};"))
                .await
                .unwrap();
            let plan = &explain(&db, &format!("EXECUTE {name}({args})")).await;
            let seen = format!("{name}, {mode}: {plan:#}");
            assert_eq!(plan["Operation"], "Update", "{seen}");
            // The rows updated are found by their key: the batch's ids, one probe each.
            let scans: Vec<&Value> = plan["Plans"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|p| p["Parent Relationship"] != "InitPlan")
                .collect();
            assert_eq!(scans.len(), 1, "{seen}");
            assert_eq!(scans[0]["Node Type"], "Index Scan", "{seen}");
            assert_eq!(scans[0]["Index Name"], "deliveries_pkey", "{seen}");
            assert_eq!(scans[0]["Actual Rows"], BATCH, "{seen}");
            assert!(
                scans[0]["Rows Removed by Filter"].as_i64().unwrap_or(0) == 0,
                "{seen}"
            );
            // The batch is chosen once, not once per row of the backlog.
            for node in nodes(plan) {
                assert!(
                    node["Actual Loops"].as_i64().unwrap_or(1) <= 1,
                    "a node runs once: {seen}"
                );
            }
            let moved: i64 = db
                .query_one(
                    "SELECT count(*) FROM deliveries WHERE state <> $1",
                    &[&from],
                )
                .await
                .unwrap()
                .get(0);
            assert_eq!(moved, BATCH, "{seen}");
            db.batch_execute("ROLLBACK TO SAVEPOINT s;").await.unwrap();
        }
        db.batch_execute(&format!("ROLLBACK; DEALLOCATE {name};"))
            .await
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_claim_probes_each_queue_and_leases_by_key_when_the_statistics_say_nothing_is_pending()
{
    // Four integrations with a history and a held backlog, analysed so; then the backlog released.
    let db = database(4).await;
    db.batch_execute(&format!(
        "INSERT INTO deliveries (delivery_id, integration_id, is_test, payload, state, last_outcome,
                                 created_at, updated_at)
             SELECT 's' || g, 1 + g % 4, true, '\\x00', 'succeeded', 'ok', g, g
             FROM generate_series(1, 60000) g;
         INSERT INTO deliveries (delivery_id, integration_id, is_test, payload, state, created_at,
                                 updated_at)
             SELECT 'h' || g, 1 + g % 4, true, '\\x00', 'held', 100000 + g, 100000 + g
             FROM generate_series(1, {BACKLOG}) g;
         ANALYZE deliveries;
         UPDATE deliveries SET state = 'pending', next_attempt_at = 200000 + id WHERE state = 'held';
         PREPARE queues AS {PENDING_QUEUES} WHERE first <= $1 ORDER BY first, integration_id;
         PREPARE take_due AS {TAKE_DUE};
         PREPARE claim AS {CLAIM};"
    ))
    .await
    .unwrap();
    let now = 1_000_000_000i64;
    for mode in ["force_custom_plan", "force_generic_plan"] {
        db.batch_execute(&format!("BEGIN; SET LOCAL plan_cache_mode = {mode};"))
            .await
            .unwrap();
        let blocks = |plan: &Value| {
            plan["Shared Hit Blocks"].as_i64().unwrap()
                + plan["Shared Read Blocks"].as_i64().unwrap()
        };
        // Four queues of 5 000 pending deliveries: one probe each, a few blocks, not the queues.
        let queues = explain(&db, &format!("EXECUTE queues({now})")).await;
        assert_eq!(queues["Actual Rows"], 4, "{mode}: {queues:#}");
        assert!(blocks(&queues) < 100, "{mode}: {queues:#}");
        let due = explain(&db, &format!("EXECUTE take_due(2, {now}, 16)")).await;
        assert_eq!(due["Actual Rows"], 16, "{mode}: {due:#}");
        assert!(blocks(&due) < 100, "{mode}: {due:#}");
        // The lease: the 16 oldest due rows locked by the subquery, once, then leased by key.
        let claim = explain(
            &db,
            &format!("EXECUTE claim(2, {now}, {}, '{{}}', 16)", now + 60_000),
        )
        .await;
        let under = |relationship: &str| {
            claim["Plans"]
                .as_array()
                .unwrap()
                .iter()
                .find(|p| p["Parent Relationship"] == relationship)
                .unwrap_or_else(|| panic!("{mode}: no {relationship} under the update: {claim:#}"))
                .clone()
        };
        let locked = under("InitPlan");
        assert_eq!(locked["Actual Rows"], 16, "{mode}: {claim:#}");
        assert_eq!(locked["Actual Loops"], 1, "{mode}: {claim:#}");
        assert!(blocks(&locked) < 100, "{mode}: {claim:#}");
        let scan = under("Outer");
        assert_eq!(scan["Index Name"], "deliveries_pkey", "{mode}: {claim:#}");
        assert_eq!(scan["Actual Rows"], 16, "{mode}: {claim:#}");
        assert!(blocks(&scan) < 200, "{mode}: {claim:#}");
        db.batch_execute("ROLLBACK;").await.unwrap();
    }
}
