//! PostgreSQL's delivery counts (`delivery_counts`, read through `delivery_totals`): the writers of
//! one integration's deliveries — a batch of verifies, a claim, a batch of recorded attempts, on any
//! node — change its counts without waiting for each other's commits, and the counts stay exact.
//! Each statement's change is added to the integration's row by a writer that finds the row free,
//! or left beside it (`delivery_count_changes`) by one that finds it taken. Before, every writer
//! updated the row and held it to its commit: the next one waited a WAL flush for it.

use std::time::Duration;

use tokio_postgres::Client;

use crate::plans::database;

/// The deliveries of integration 1 by state, counted from the rows, and as `delivery_totals` has
/// them (pending, in flight, succeeded, failed, held, cancelled).
async fn both(db: &Client) -> (Vec<i64>, Vec<i64>) {
    let row = db
        .query_one(
            "SELECT count(*) FILTER (WHERE state = 'pending'), \
                    count(*) FILTER (WHERE state = 'in_flight'), \
                    count(*) FILTER (WHERE state = 'succeeded'), \
                    count(*) FILTER (WHERE state = 'failed'), \
                    count(*) FILTER (WHERE state = 'held'), \
                    count(*) FILTER (WHERE state = 'cancelled') \
             FROM deliveries WHERE integration_id = 1",
            &[],
        )
        .await
        .unwrap();
    let counted = (0..6).map(|i| row.get::<_, i64>(i)).collect();
    let row = db
        .query_one(
            "SELECT pending, in_flight, succeeded, failed, held, cancelled \
             FROM delivery_totals WHERE integration_id = 1",
            &[],
        )
        .await
        .unwrap();
    let totals = (0..6).map(|i| row.get::<_, i64>(i)).collect();
    (counted, totals)
}

async fn changes(db: &Client) -> i64 {
    db.query_one("SELECT count(*) FROM delivery_count_changes", &[])
        .await
        .unwrap()
        .get(0)
}

/// Inserts `n` deliveries of integration 1 in `state`, named `prefix1`, `prefix2`, ….
fn insert(prefix: &str, n: i64, state: &str) -> String {
    format!(
        "INSERT INTO deliveries (delivery_id, integration_id, is_test, payload, state, created_at,
                                 updated_at)
             SELECT '{prefix}' || g, 1, true, '\\x00', '{state}', g, g FROM generate_series(1, {n}) g"
    )
}

/// `sql` on `db`, which must not wait for another transaction: a writer that waited for the one
/// holding the integration's counts would run into the timeout.
async fn at_once(db: &Client, sql: &str) {
    tokio::time::timeout(Duration::from_secs(5), db.batch_execute(sql))
        .await
        .unwrap_or_else(|_| panic!("waited for another transaction: {sql}"))
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writers_of_one_integrations_deliveries_do_not_wait_for_each_other_and_the_counts_stay_exact()
 {
    let reader = database(1).await;
    let cluster = crate::common::postgres::cluster();
    let name: String = reader
        .query_one("SELECT current_database()", &[])
        .await
        .unwrap()
        .get(0);
    let a = cluster.connect(&name).await;
    let b = cluster.connect(&name).await;
    let c = cluster.connect(&name).await;

    // The integration's row, as its first delivery leaves it (that first insert is the one
    // writer the others wait for: an uncommitted row is nobody's to add to).
    at_once(
        &a,
        &format!("{}; DELETE FROM deliveries;", insert("z", 1, "held")),
    )
    .await;
    assert_eq!(changes(&reader).await, 0);

    // A verify batch's transaction, still open: it has the integration's row.
    at_once(&a, &format!("BEGIN; {};", insert("a", 30, "pending"))).await;
    // A claim and a record on other connections go ahead and commit meanwhile; their changes are
    // visible at once, A's not yet.
    at_once(&b, &format!("{};", insert("b", 10, "pending"))).await;
    at_once(
        &c,
        "BEGIN; UPDATE deliveries SET state = 'in_flight', lease_until = 1 \
         WHERE delivery_id IN ('b1', 'b2', 'b3');",
    )
    .await;
    at_once(
        &b,
        "UPDATE deliveries SET state = 'held' WHERE delivery_id IN ('b4', 'b5');",
    )
    .await;
    at_once(&c, "COMMIT;").await;
    at_once(
        &b,
        "UPDATE deliveries SET state = 'succeeded', lease_until = NULL \
         WHERE delivery_id IN ('b1', 'b2'); DELETE FROM deliveries WHERE delivery_id = 'b10';",
    )
    .await;
    let (counted, totals) = both(&reader).await;
    assert_eq!(totals, counted, "while A is open");
    assert_eq!(counted, vec![4, 1, 2, 0, 2, 0]);
    assert!(
        changes(&reader).await > 0,
        "the others left their changes beside the row"
    );

    // A commits; a later writer that finds the row free adds every change to it.
    at_once(&a, "COMMIT;").await;
    let (counted, totals) = both(&reader).await;
    assert_eq!(totals, counted, "after A's commit");
    at_once(
        &b,
        "UPDATE deliveries SET state = 'cancelled' WHERE delivery_id = 'a1';",
    )
    .await;
    let (counted, totals) = both(&reader).await;
    assert_eq!(totals, counted);
    assert_eq!(counted, vec![33, 1, 2, 0, 2, 1]);
    assert_eq!(
        changes(&reader).await,
        0,
        "added up by the writer that found the row free"
    );

    // Many writers at once, each in its own short transactions: exact at the end.
    let name = std::sync::Arc::new(name);
    let mut writers = Vec::new();
    for w in 0..4 {
        let db = cluster.connect(&name).await;
        writers.push(tokio::spawn(async move {
            for round in 0..25 {
                let prefix = format!("w{w}r{round}-");
                db.batch_execute(&format!(
                    "BEGIN; {}; UPDATE deliveries SET state = 'in_flight' \
                     WHERE delivery_id = '{prefix}1'; UPDATE deliveries SET state = 'failed' \
                     WHERE delivery_id = '{prefix}2'; COMMIT;",
                    insert(&prefix, 3, "pending")
                ))
                .await
                .unwrap();
            }
        }));
    }
    for w in writers {
        w.await.unwrap();
    }
    let (counted, totals) = both(&reader).await;
    assert_eq!(
        totals, counted,
        "after 100 transactions of 4 writers at once"
    );
    assert_eq!(counted, vec![133, 101, 2, 100, 2, 1]);
}
