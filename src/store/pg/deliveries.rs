//! PostgreSQL: the operations of `store::deliveries` — the dispatcher's queue and the delivery
//! history, on a database several nodes share.
//!
//! - **Claims** take the claim lock of each integration with work (a transaction-scoped advisory
//!   lock, [`CLAIM_LOCKS`], in integration order, so two nodes' claims never wait on each other in a
//!   cycle): every node's claim for an integration waits for the one before it and sees what it
//!   took, so `max_in_flight_per_integration` holds across the cluster. What counts against it is
//!   every delivery in flight with a live lease ([`OTHERS_IN_FLIGHT`], from `delivery_totals`),
//!   except this node's own claims whose attempts are not recorded yet, for which its running
//!   attempts (`busy`) stand: a slot is free once its HTTP exchange is over, as on SQLite, not once
//!   the attempt's batch has committed. The deliveries are then taken `FOR UPDATE SKIP LOCKED` (a
//!   row being recorded or settled is left to the next tick) and leased until `lease_until`; an
//!   in-flight delivery whose lease ran out is claimable again by any node, which is the recovery of
//!   a node that died mid-attempt (there is no start-time recovery).
//!   A claim commits without waiting for its WAL flush (`synchronous_commit = off` for that
//!   transaction alone), as SQLite's claims are answered before their batch is durable
//!   (`write_uncommitted`): a lease is soft state, not a record, and a delivery a claim can see is
//!   already durable (a synchronous commit is visible only once flushed). Waiting for the flush put
//!   one fsync between every claim and its attempts. What the claim risks: only if PostgreSQL itself
//!   crashes within the WAL writer's delay of the claim (a node's crash loses nothing; the commit is
//!   in PostgreSQL's memory) do its deliveries come back as they were before it and are attempted
//!   again — possibly while the first attempt still runs, the one way a delivery arrives twice
//!   within its lease (at least once still holds; the receiver dedupes by `clickwrapEventId`). The
//!   record of any later attempt is a synchronous commit, whose flush makes the claim durable too.
//! - **Recording** an attempt moves its delivery only while the claim it was made under still holds
//!   (the same `lease_until`): a node whose lease ran out and whose delivery was claimed again
//!   elsewhere stores its attempt in the history but cannot overwrite the newer attempt's state.
//! - **Pruning** runs on one node at a time (`pg_try_advisory_xact_lock`); the others find it taken
//!   and stop.
//! - **Bulk updates** re-check the state they change in the outer `WHERE`, so a row whose state
//!   changed while the statement waited for its lock (PostgreSQL re-evaluates only the outer
//!   conditions on the new row version) is left alone. Each names its batch as `id =
//!   ANY(ARRAY(SELECT … LIMIT n))`, a subquery PostgreSQL runs once before the update, and writes
//!   that re-check as `CASE state WHEN 'held' THEN true ELSE false END`, which no partial index's
//!   condition matches, so the only way to the batch's rows is the primary key. Planned from
//!   statistics taken before the backlog built up (few rows held), `id IN (SELECT … LIMIT n) AND
//!   state = 'held'` was a semi-join running the subquery again for every held row (releasing
//!   45 000 held deliveries took 14 s per batch of 500), and `state = 'held'` alone walked the
//!   whole `deliveries_held` index for each batch: either way a release grew with the square of its
//!   size. `tests/e2e_postgres/plans.rs` keeps each batch a batch.

use std::collections::HashMap;
use std::sync::Arc;

use deadpool_postgres::{GenericClient, Transaction};
use tokio_postgres::Row;
use tokio_postgres::types::ToSql;

use super::Postgres;
use crate::model::{AttemptOutcome, DeliveryState, EventType, Timestamp, Trigger};
use crate::store::audit::Audit;
use crate::store::client_certs::StoredClientCert;
use crate::store::deliveries::{
    Attempt, BATCH, BulkBatch, BulkCursor, Busy, ClaimLimits, Claimed, DELIVERY_COLUMNS_OF,
    DELIVERY_JOINS, DeliveryRow, DeliveryView, Gate, NewDelivery, Next, QueueStats, Redelivered,
    TestQueued, new_delivery_id, state_walk,
};
use crate::store::{Result, StoreError};

/// The advisory lock key of attempt pruning ("prune" in ASCII): one node at a time.
const PRUNE_LOCK: i64 = 0x0070_7275_6e65;

/// A vocabulary word read back from the database.
pub(crate) fn word<T>(text: &str, parse: fn(&str) -> Option<T>) -> Result<T> {
    parse(text)
        .ok_or_else(|| StoreError::Io(format!("the database holds an unknown value {text:?}")))
}

/// An HTTP status kept as BIGINT.
fn status(v: Option<i64>) -> Option<u16> {
    v.and_then(|s| u16::try_from(s).ok())
}

/// Inserts a delivery with its frozen payload in `tx` (see `store::deliveries::insert`); returns its
/// row id. The schema's trigger counts it and announces it to the dispatchers.
pub(crate) async fn insert(tx: &Transaction<'_>, d: &NewDelivery<'_>) -> Result<i64> {
    let stmt = tx
        .prepare_cached(
            "INSERT INTO deliveries (delivery_id, integration_id, event_id, is_test, event_type, \
             payload, state, next_attempt_at, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8, $8) RETURNING id",
        )
        .await?;
    let state = d.state();
    let row = tx
        .query_one(
            &stmt,
            &[
                &d.delivery_id,
                &d.integration_id,
                &d.event_row,
                &d.is_test,
                &d.event_type.as_str(),
                &d.payload,
                &state.as_str(),
                &d.at.millis(),
            ],
        )
        .await?;
    Ok(row.get(0))
}

/// [`insert`] of many deliveries in one statement, in the order given (so the rows each locks come
/// in that order); their row ids are not returned.
pub(crate) async fn insert_many(tx: &Transaction<'_>, ds: &[NewDelivery<'_>]) -> Result<()> {
    if ds.is_empty() {
        return Ok(());
    }
    let stmt = tx
        .prepare_cached(
            "INSERT INTO deliveries (delivery_id, integration_id, event_id, is_test, event_type, \
             payload, state, next_attempt_at, created_at, updated_at) \
             SELECT id, integration, event, test, kind, payload, state, at, at, at \
             FROM unnest($1::text[], $2::bigint[], $3::bigint[], $4::boolean[], $5::text[], \
                         $6::bytea[], $7::text[], $8::bigint[]) \
             AS d(id, integration, event, test, kind, payload, state, at)",
        )
        .await?;
    let ids: Vec<&str> = ds.iter().map(|d| d.delivery_id).collect();
    let integrations: Vec<i64> = ds.iter().map(|d| d.integration_id).collect();
    let events: Vec<Option<i64>> = ds.iter().map(|d| d.event_row).collect();
    let tests: Vec<bool> = ds.iter().map(|d| d.is_test).collect();
    let kinds: Vec<&str> = ds.iter().map(|d| d.event_type.as_str()).collect();
    let payloads: Vec<&[u8]> = ds.iter().map(|d| d.payload).collect();
    let states: Vec<&str> = ds.iter().map(|d| d.state().as_str()).collect();
    let at: Vec<i64> = ds.iter().map(|d| d.at.millis()).collect();
    tx.execute(
        &stmt,
        &[
            &ids,
            &integrations,
            &events,
            &tests,
            &kinds,
            &payloads,
            &states,
            &at,
        ],
    )
    .await?;
    Ok(())
}

/// What the integration's settings say about sending its deliveries now (see
/// `store::deliveries::gate`).
pub(crate) async fn gate(c: &impl GenericClient, integration_id: i64) -> Result<Gate> {
    Ok(
        match super::integrations::webhook_target(c, integration_id).await? {
            None => Gate::Cancel,
            Some(t) if t.deleted => Gate::Cancel,
            Some(crate::store::integrations::WebhookTarget {
                sending: true,
                callback_url: Some(url),
                signing_secret,
                ..
            }) => Gate::Send {
                url,
                secret: signing_secret,
                client_cert: super::client_certs::for_integration(c, integration_id).await?,
            },
            Some(_) => Gate::Hold,
        },
    )
}

/// The state a delivery made due now takes under its integration's settings.
async fn gated_state(c: &impl GenericClient, integration_id: i64) -> Result<DeliveryState> {
    Ok(match gate(c, integration_id).await? {
        Gate::Send { .. } => DeliveryState::Pending,
        Gate::Hold => DeliveryState::Held,
        Gate::Cancel => DeliveryState::Cancelled,
    })
}

/// The statements of [`settle_batch`]: `$1` the integration, `$2` now, `$3` the most rows.
pub const RELEASE_HELD: &str = "UPDATE deliveries SET state = 'pending', next_attempt_at = $2, updated_at = $2 \
     WHERE id = ANY(ARRAY(SELECT id FROM deliveries WHERE integration_id = $1 AND state = 'held' \
                  ORDER BY id LIMIT $3)) AND CASE state WHEN 'held' THEN true ELSE false END";
pub const HOLD_PENDING: &str = "UPDATE deliveries SET state = 'held', updated_at = $2 \
     WHERE id = ANY(ARRAY(SELECT id FROM deliveries WHERE integration_id = $1 AND state = 'pending' \
                  ORDER BY id LIMIT $3)) AND CASE state WHEN 'pending' THEN true ELSE false END";
pub const CANCEL_PENDING: &str = "UPDATE deliveries SET state = 'cancelled', updated_at = $2 \
     WHERE id = ANY(ARRAY(SELECT id FROM deliveries WHERE integration_id = $1 AND state = 'pending' \
                  ORDER BY id LIMIT $3)) AND CASE state WHEN 'pending' THEN true ELSE false END";
pub const CANCEL_HELD: &str = "UPDATE deliveries SET state = 'cancelled', updated_at = $2 \
     WHERE id = ANY(ARRAY(SELECT id FROM deliveries WHERE integration_id = $1 AND state = 'held' \
                  ORDER BY id LIMIT $3)) AND CASE state WHEN 'held' THEN true ELSE false END";

/// Brings up to `limit` of an integration's deliveries in line with its settings, oldest first, in
/// `c` (see `store::deliveries::settle_batch`); returns how many changed.
pub(crate) async fn settle_batch(
    c: &impl GenericClient,
    integration_id: i64,
    now: Timestamp,
    limit: u32,
) -> Result<usize> {
    let run = |sql: &'static str, limit: u32| async move {
        let stmt = c.prepare_cached(sql).await?;
        let n = c
            .execute(&stmt, &[&integration_id, &now.millis(), &i64::from(limit)])
            .await?;
        Ok::<usize, StoreError>(n as usize)
    };
    match gate(c, integration_id).await? {
        Gate::Send { .. } => run(RELEASE_HELD, limit).await,
        Gate::Hold => run(HOLD_PENDING, limit).await,
        Gate::Cancel => {
            let n = run(CANCEL_PENDING, limit).await?;
            if n < limit as usize {
                Ok(n + run(CANCEL_HELD, limit - n as u32).await?)
            } else {
                Ok(n)
            }
        }
    }
}

fn delivery_from_row(r: &Row) -> Result<DeliveryRow> {
    let state = word(r.get::<_, &str>(6), DeliveryState::parse)?;
    Ok(DeliveryRow {
        row: r.get(0),
        delivery_id: r.get(1),
        app_id: r.get(2),
        event_id: r.get(3),
        is_test: r.get(4),
        payload: r.get(5),
        // Only pending deliveries have a next attempt worth showing.
        next_attempt_at: if state == DeliveryState::Pending {
            r.get::<_, Option<i64>>(8).map(Timestamp)
        } else {
            None
        },
        state,
        attempts: r.get(7),
        last_outcome: r
            .get::<_, Option<&str>>(9)
            .map(|o| word(o, AttemptOutcome::parse))
            .transpose()?,
        trigger: word(r.get::<_, &str>(10), Trigger::parse)?,
        created_at: Timestamp(r.get(11)),
        updated_at: Timestamp(r.get(12)),
        event_type: word(r.get::<_, &str>(13), EventType::parse)?,
        last_status: status(r.get(14)),
    })
}

async fn get(c: &impl GenericClient, delivery_id: &str) -> Result<Option<DeliveryRow>> {
    let stmt = c
        .prepare_cached(&format!(
            "SELECT {DELIVERY_COLUMNS_OF}deliveries d {DELIVERY_JOINS} WHERE d.delivery_id = $1"
        ))
        .await?;
    c.query_opt(&stmt, &[&delivery_id])
        .await?
        .map(|r| delivery_from_row(&r))
        .transpose()
}

async fn attempts(c: &impl GenericClient, row: i64) -> Result<Vec<Attempt>> {
    let stmt = c
        .prepare_cached(
            "SELECT number, trigger, started_at, duration_ms, url, remote_addr, request_headers, \
             response_status, response_body, outcome, detail FROM attempts \
             WHERE delivery_id = $1 ORDER BY id",
        )
        .await?;
    c.query(&stmt, &[&row])
        .await?
        .iter()
        .map(|r| {
            Ok(Attempt {
                number: r.get(0),
                trigger: word(r.get::<_, &str>(1), Trigger::parse)?,
                started_at: Timestamp(r.get(2)),
                duration_ms: r.get(3),
                url: r.get(4),
                remote_addr: r.get(5),
                request_headers: r.get(6),
                response_status: status(r.get(7)),
                response_body: r.get::<_, Option<Vec<u8>>>(8).unwrap_or_default(),
                outcome: word(r.get::<_, &str>(9), AttemptOutcome::parse)?,
                detail: r.get(10),
            })
        })
        .collect()
}

async fn view(c: &impl GenericClient, delivery_id: &str) -> Result<Option<DeliveryView>> {
    let Some(delivery) = get(c, delivery_id).await? else {
        return Ok(None);
    };
    let attempts = attempts(c, delivery.row).await?;
    Ok(Some(DeliveryView { delivery, attempts }))
}

/// The integrations with due work at `now`, the ones with expired leases first, then each queue
/// by its earliest due time.
const EXPIRED_INTEGRATIONS: &str = "SELECT integration_id, min(lease_until) AS first FROM deliveries \
     WHERE state = 'in_flight' AND lease_until <= $1 GROUP BY integration_id ORDER BY first, integration_id";
/// `(integration_id, first)`: each integration with pending deliveries and its earliest
/// `next_attempt_at`, by a loose index scan, as on SQLite: one probe of a pending index per
/// integration with pending work for the next integration id (`walk`), and one of
/// `deliveries_pending` for its earliest time, `ORDER BY next_attempt_at LIMIT 1`, which only that
/// index answers without a sort. The cost grows with the integrations that have work, not with all
/// integrations nor with the length of their queues. Reading the integrations from
/// `delivery_totals` instead (every integration that ever had a delivery, each with its counts'
/// pending changes added up) cost ≈ 1.2 ms a claim with a hundred idle integrations beside the busy
/// one, a tenth of PostgreSQL's time while deliveries drained. Written as `min(next_attempt_at)`,
/// the time's probe was planned from statistics taken while nothing was pending (a backlog held,
/// about to be released) as an aggregate over `deliveries_pending_by_id`, reading every pending
/// delivery at each claim (5 800 blocks with 36 000 pending, against 13). `tests/e2e_postgres/plans.rs`
/// keeps both probes probes.
pub const PENDING_QUEUES: &str = "WITH RECURSIVE walk(integration_id) AS ( \
         SELECT (SELECT integration_id FROM deliveries WHERE state = 'pending' \
                 ORDER BY integration_id LIMIT 1) \
         UNION ALL \
         SELECT (SELECT d.integration_id FROM deliveries d \
                 WHERE d.state = 'pending' AND d.integration_id > w.integration_id \
                 ORDER BY d.integration_id LIMIT 1) \
         FROM walk w WHERE w.integration_id IS NOT NULL) \
     SELECT integration_id, first FROM (SELECT w.integration_id, f.first FROM walk w \
         CROSS JOIN LATERAL (SELECT d.next_attempt_at AS first FROM deliveries d \
             WHERE d.state = 'pending' AND d.integration_id = w.integration_id \
             ORDER BY d.next_attempt_at LIMIT 1) f) q";

/// The claim's statements (see `claim_due_deliveries`). [`CLAIM`] leases, in one statement, rows
/// `$4` (expired leases this transaction has locked) and up to `$5` of integration `$1`'s pending
/// deliveries due at `$2`, locked oldest first and skipping those another transaction holds, until
/// `$3`. Each row is re-checked with a `CASE`, which no partial index's condition matches (as the
/// bulk updates' re-check, this module's comment), so the rows are leased by primary key whatever
/// the statistics say, and the subquery runs once before the update. Locking the rows in one
/// statement and leasing them in another cost a round trip and a second pass over the same rows.
/// [`TAKE_DUE`] locks the due rows alone (`$3` of them), for an integration whose deliveries are
/// set aside rather than sent.
pub const CLAIM: &str = "UPDATE deliveries SET state = 'in_flight', lease_until = $3, updated_at = $2 \
     WHERE id = ANY($4::bigint[] || ARRAY(SELECT id FROM deliveries WHERE state = 'pending' \
                    AND integration_id = $1 AND next_attempt_at <= $2 \
                    ORDER BY next_attempt_at, id LIMIT $5 FOR UPDATE SKIP LOCKED)) \
     AND CASE state WHEN 'pending' THEN next_attempt_at <= $2 \
                    WHEN 'in_flight' THEN lease_until <= $2 ELSE false END \
     RETURNING id, delivery_id, integration_id, payload, attempts, chain_trigger, is_test, \
               next_attempt_at";
pub const TAKE_DUE: &str = "SELECT id FROM deliveries WHERE state = 'pending' AND integration_id = $1 \
     AND next_attempt_at <= $2 ORDER BY next_attempt_at, id LIMIT $3 FOR UPDATE SKIP LOCKED";
/// The claim locks, transaction-scoped advisory locks of two keys (a space of their own, apart from
/// the one-key locks of migration, pruning and the ledger): [`CLAIM_LOCK_CLASS`] and one key per
/// integration ([`claim_key`]), taken in ascending order. An integration's claims wait for each
/// other and for nothing else: not for its counts, which every writer of its deliveries changes.
const CLAIM_LOCKS: &str = "SELECT pg_advisory_xact_lock($1, k) FROM unnest($2::int4[]) AS k";
/// "clai" in ASCII.
const CLAIM_LOCK_CLASS: i32 = 0x636c_6169;

/// An integration's claim lock key: its id, within the 31 bits the key holds (two integrations
/// sharing a key, beyond two thousand million of them, only wait for each other).
fn claim_key(integration_id: i64) -> i32 {
    (integration_id & 0x7fff_ffff) as i32
}

/// The in-flight deliveries of integration `$1` at `$2` that count against its limit on this node:
/// all those in flight with a live lease but the node's own unrecorded claims (rows `$3` with
/// leases `$4`), which its running attempts stand for. No row when the integration has no counts.
const OTHERS_IN_FLIGHT: &str = "SELECT t.in_flight \
     - (SELECT count(*) FROM deliveries WHERE state = 'in_flight' AND integration_id = $1 \
        AND lease_until <= $2) \
     - (SELECT count(*) FROM deliveries d JOIN unnest($3::bigint[], $4::bigint[]) AS m(id, lease) \
        ON d.id = m.id AND d.lease_until = m.lease WHERE d.state = 'in_flight' AND d.lease_until > $2) \
     FROM delivery_totals t WHERE t.integration_id = $1";

/// This node's claims whose attempts are not recorded yet, by integration: row and lease.
#[derive(Default)]
pub(crate) struct Unrecorded(std::sync::Mutex<HashMap<i64, HashMap<i64, i64>>>);

impl Unrecorded {
    /// The rows and leases of `integration`'s unrecorded claims.
    fn of(&self, integration: i64) -> (Vec<i64>, Vec<i64>) {
        let all = self.0.lock().expect("unrecorded lock");
        all.get(&integration)
            .map(|m| m.iter().map(|(&row, &lease)| (row, lease)).unzip())
            .unwrap_or_default()
    }

    fn add(&self, claims: &[Claimed]) {
        let mut all = self.0.lock().expect("unrecorded lock");
        for c in claims {
            all.entry(c.integration_id)
                .or_default()
                .insert(c.row, c.lease_until.millis());
        }
    }

    fn remove_all(&self, claims: &[Claimed]) {
        let mut all = self.0.lock().expect("unrecorded lock");
        for c in claims {
            if let Some(m) = all.get_mut(&c.integration_id) {
                if m.get(&c.row) == Some(&c.lease_until.millis()) {
                    m.remove(&c.row);
                }
                if m.is_empty() {
                    all.remove(&c.integration_id);
                }
            }
        }
    }
}

/// Said in the claim's transaction before its commit (this module's comment, **Claims**).
const CLAIM_COMMITS_ASYNC: &str = "SET LOCAL synchronous_commit = off";

impl Postgres {
    /// See `Store::claim_due_deliveries` and this module's comment.
    pub(crate) async fn claim_due_deliveries(
        &self,
        limits: ClaimLimits,
        busy: Busy,
    ) -> Result<Vec<Claimed>> {
        let now = Timestamp::now();
        let lease_until = Timestamp(now.millis() + limits.lease.as_millis() as i64);
        let per_limit = limits.per_integration as i64;
        let mut client = self.client().await?;
        let tx = client.transaction().await?;

        let mut order: Vec<i64> = Vec::new();
        let expired = tx.prepare_cached(EXPIRED_INTEGRATIONS).await?;
        for r in tx.query(&expired, &[&now.millis()]).await? {
            order.push(r.get(0));
        }
        let queues = tx
            .prepare_cached(&format!(
                "{PENDING_QUEUES} WHERE first <= $1 ORDER BY first, integration_id"
            ))
            .await?;
        for r in tx.query(&queues, &[&now.millis()]).await? {
            let id: i64 = r.get(0);
            if !order.contains(&id) {
                order.push(id);
            }
        }
        if order.is_empty() {
            return Ok(Vec::new());
        }
        // The claim lock of every integration with work, taken in integration order: the claims
        // of all nodes for one integration run one after the other, each seeing what the last took.
        let mut keys: Vec<i32> = order.iter().map(|&id| claim_key(id)).collect();
        keys.sort_unstable();
        keys.dedup();
        let lock = tx.prepare_cached(CLAIM_LOCKS).await?;
        tx.execute(&lock, &[&CLAIM_LOCK_CLASS, &keys]).await?;
        // In flight in the cluster but for this node's own claims (its running attempts, `busy`,
        // stand for those), and not counting the expired leases (their node is gone; taking one
        // over takes its slot).
        let others = tx.prepare_cached(OTHERS_IN_FLIGHT).await?;
        let take_expired = tx
            .prepare_cached(
                "SELECT id FROM deliveries WHERE state = 'in_flight' AND integration_id = $1 \
                 AND lease_until <= $2 ORDER BY lease_until, id LIMIT $3 FOR UPDATE SKIP LOCKED",
            )
            .await?;
        let take_due = tx.prepare_cached(TAKE_DUE).await?;
        let claim = tx.prepare_cached(CLAIM).await?;
        let set_aside = tx
            .prepare_cached(
                "UPDATE deliveries SET state = $2, lease_until = NULL, updated_at = $3 \
                 WHERE id = ANY($1) AND state IN ('pending', 'in_flight')",
            )
            .await?;

        let mut out: Vec<Claimed> = Vec::new();
        for integration in order {
            let left = limits.budget.saturating_sub(out.len()) as i64;
            if left == 0 {
                break;
            }
            let here = busy
                .lock()
                .expect("counts lock")
                .get(&integration)
                .copied()
                .unwrap_or(0) as i64;
            let (rows, leases) = self.unrecorded.of(integration);
            let others: i64 = tx
                .query_opt(&others, &[&integration, &now.millis(), &rows, &leases])
                .await?
                .map_or(0, |r| r.get(0));
            let room = (per_limit - others.max(0) - here).min(left);
            if room <= 0 {
                continue;
            }
            let expired: Vec<i64> = tx
                .query(&take_expired, &[&integration, &now.millis(), &room])
                .await?
                .iter()
                .map(|r| r.get(0))
                .collect();
            let more = room - expired.len() as i64;
            let (url, secret, client_cert) = match gate(&tx, integration).await? {
                Gate::Send {
                    url,
                    secret,
                    client_cert,
                } => (url, secret, client_cert),
                gate => {
                    let mut rows = expired;
                    if more > 0 {
                        rows.extend(
                            tx.query(&take_due, &[&integration, &now.millis(), &more])
                                .await?
                                .iter()
                                .map(|r| r.get::<_, i64>(0)),
                        );
                    }
                    if !rows.is_empty() {
                        let state = if matches!(gate, Gate::Hold) {
                            DeliveryState::Held
                        } else {
                            DeliveryState::Cancelled
                        };
                        tx.execute(&set_aside, &[&rows, &state.as_str(), &now.millis()])
                            .await?;
                    }
                    continue;
                }
            };
            let mut claimed = tx
                .query(
                    &claim,
                    &[
                        &integration,
                        &now.millis(),
                        &lease_until.millis(),
                        &expired,
                        &more.max(0),
                    ],
                )
                .await?;
            // Expired leases first, in the order they ran out, then the due ones oldest first.
            claimed.sort_by_cached_key(|r| {
                let row: i64 = r.get(0);
                let due: Option<i64> = r.get(7);
                (
                    expired.iter().position(|&e| e == row).unwrap_or(usize::MAX),
                    due,
                    row,
                )
            });
            let before = out.len();
            for r in &claimed {
                out.push(claimed_from(r, lease_until, &url, &secret, &client_cert)?);
            }
            self.unrecorded.add(&out[before..]);
            let taken = out.len() - before;
            if taken > 0 {
                *busy
                    .lock()
                    .expect("counts lock")
                    .entry(integration)
                    .or_insert(0) += taken;
            }
        }
        // A lease is not a record: the claim's commit does not wait for its WAL flush (see this
        // module's comment).
        let committed = match tx.batch_execute(CLAIM_COMMITS_ASYNC).await {
            Ok(()) => tx.commit().await,
            Err(e) => Err(e),
        };
        if let Err(e) = committed {
            // Nothing was claimed after all: give the slots back.
            self.unrecorded.remove_all(&out);
            let mut counts = busy.lock().expect("counts lock");
            for c in &out {
                if let Some(n) = counts.get_mut(&c.integration_id) {
                    *n -= 1;
                    if *n == 0 {
                        counts.remove(&c.integration_id);
                    }
                }
            }
            return Err(e.into());
        }
        Ok(out)
    }

    /// See `Store::record_attempt` and this module's comment: through the node's batch
    /// (`pg::records`), with the attempts that end meanwhile.
    pub(crate) async fn record_attempt(
        &self,
        claim: &Claimed,
        attempt: Attempt,
        next: Next,
    ) -> Result<()> {
        let recorded =
            super::batch::submit(&self.records, "attempt", |reply| super::records::Job {
                row: claim.row,
                integration_id: claim.integration_id,
                lease_until: claim.lease_until,
                attempt,
                next,
                reply,
            })
            .await;
        // Recorded or not, the claim is no longer this node's to count: from here the database's
        // figure stands for it (while it is still in flight there, it counts as another's).
        self.unrecorded.remove_all(std::slice::from_ref(claim));
        recorded
    }

    /// See `Store::next_delivery_wake`: the earliest pending time or running lease, the cluster's.
    pub(crate) async fn next_delivery_wake(&self) -> Result<Option<Timestamp>> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(&format!(
                "SELECT least((SELECT min(first) FROM ({PENDING_QUEUES}) w), \
                 (SELECT lease_until FROM deliveries WHERE state = 'in_flight' \
                  ORDER BY lease_until LIMIT 1))"
            ))
            .await?;
        Ok(client
            .query_one(&stmt, &[])
            .await?
            .get::<_, Option<i64>>(0)
            .map(Timestamp))
    }

    /// See `Store::queue_stats`: the database's figures, so the cluster's.
    pub(crate) async fn queue_stats(&self, now: Timestamp) -> Result<QueueStats> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(&format!(
                "SELECT coalesce(sum(pending), 0)::BIGINT, coalesce(sum(in_flight), 0)::BIGINT, \
                 coalesce(sum(held), 0)::BIGINT, \
                 (SELECT min(first) FROM ({PENDING_QUEUES}) w WHERE first <= $1) FROM delivery_totals"
            ))
            .await?;
        let r = client.query_one(&stmt, &[&now.millis()]).await?;
        Ok(QueueStats {
            pending: r.get(0),
            in_flight: r.get(1),
            held: r.get(2),
            oldest_due_at: r.get::<_, Option<i64>>(3).map(Timestamp),
        })
    }

    /// See `Store::prune_attempts`: one batch, on one node at a time (0 when another node prunes).
    pub(crate) async fn prune_attempts(&self, before: Timestamp, batch: u32) -> Result<usize> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let locked: bool = tx
            .query_one("SELECT pg_try_advisory_xact_lock($1)", &[&PRUNE_LOCK])
            .await?
            .get(0);
        if !locked {
            return Ok(0);
        }
        let stmt = tx
            .prepare_cached(
                "DELETE FROM attempts WHERE id = ANY(ARRAY(SELECT a.id FROM attempts a \
                 JOIN deliveries d ON d.id = a.delivery_id \
                 WHERE a.started_at < $1 AND d.state IN ('succeeded', 'failed', 'cancelled') \
                 ORDER BY a.started_at LIMIT $2))",
            )
            .await?;
        let n = tx
            .execute(&stmt, &[&before.millis(), &i64::from(batch)])
            .await?;
        tx.commit().await?;
        Ok(n as usize)
    }

    /// See `Store::unsettled_integrations`.
    pub(crate) async fn unsettled_integrations(&self) -> Result<Vec<i64>> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(
                "SELECT integration_id FROM delivery_totals WHERE held > 0 OR pending > 0 \
                 ORDER BY integration_id",
            )
            .await?;
        Ok(client
            .query(&stmt, &[])
            .await?
            .iter()
            .map(|r| r.get(0))
            .collect())
    }

    /// See `Store::settle_deliveries`: one batch in its own transaction.
    pub(crate) async fn settle_deliveries(&self, integration_id: i64) -> Result<usize> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let n = settle_batch(&tx, integration_id, Timestamp::now(), BATCH).await?;
        tx.commit().await?;
        Ok(n)
    }

    /// See `Store::deliveries`: one walk of the index the filters select, stopped at `limit`.
    pub(crate) async fn deliveries(
        &self,
        app_id: &str,
        state: Option<DeliveryState>,
        outcome: Option<AttemptOutcome>,
        before: Option<i64>,
        limit: u32,
    ) -> Result<Option<Vec<DeliveryRow>>> {
        let client = self.client().await?;
        let Some(id) = super::integrations::any_id(&client, app_id).await? else {
            return Ok(None);
        };
        let limit = i64::from(limit);
        let (state_text, outcome_text) = (
            state.map(DeliveryState::as_str),
            outcome.map(AttemptOutcome::as_str),
        );
        let mut params: Vec<&(dyn ToSql + Sync)> = vec![&id, &limit];
        let mut terms: Vec<String> = vec!["d.integration_id = $1".into()];
        // A state's own condition is a literal (`state_walk`), so the planner can use the state's
        // partial index with every plan, generic ones included.
        match (state, outcome) {
            (None, None) => {}
            (Some(state), None) => terms.push(state_walk(state).1.into()),
            (None, Some(AttemptOutcome::Ok)) => terms.push("d.last_outcome = 'ok'".into()),
            (None, Some(_)) => {
                params.push(&outcome_text);
                terms.push(format!(
                    "d.last_outcome = ${} AND d.last_outcome <> 'ok'",
                    params.len()
                ));
            }
            (Some(state), Some(AttemptOutcome::Ok)) => {
                terms.push(state_walk(state).1.into());
                terms.push("d.last_outcome = 'ok'".into());
            }
            (Some(_), Some(_)) => {
                params.push(&state_text);
                params.push(&outcome_text);
                terms.push(format!(
                    "d.state = ${} AND d.last_outcome = ${} AND d.last_outcome <> 'ok'",
                    params.len() - 1,
                    params.len()
                ));
            }
        }
        if let Some(before) = &before {
            params.push(before);
            terms.push(format!("d.id < ${}", params.len()));
        }
        let stmt = client
            .prepare_cached(&format!(
                "SELECT {DELIVERY_COLUMNS_OF}deliveries d {DELIVERY_JOINS} WHERE {} \
                 ORDER BY d.id DESC LIMIT $2",
                terms.join(" AND ")
            ))
            .await?;
        let rows = client.query(&stmt, &params).await?;
        Ok(Some(
            rows.iter()
                .map(delivery_from_row)
                .collect::<Result<Vec<_>>>()?,
        ))
    }

    /// See `Store::delivery`.
    pub(crate) async fn delivery(&self, delivery_id: &str) -> Result<Option<DeliveryView>> {
        let client = self.client().await?;
        view(&client, delivery_id).await
    }

    /// See `Store::event_deliveries`: by `deliveries_by_event`, oldest first.
    pub(crate) async fn event_deliveries(&self, event_id: &str) -> Result<Vec<DeliveryRow>> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(&format!(
                "SELECT {DELIVERY_COLUMNS_OF}deliveries d {DELIVERY_JOINS} \
                 WHERE e.event_id = $1 ORDER BY d.id"
            ))
            .await?;
        client
            .query(&stmt, &[&event_id])
            .await?
            .iter()
            .map(delivery_from_row)
            .collect()
    }

    /// See `Store::delivery_counts`: one row of `delivery_counts`.
    pub(crate) async fn delivery_counts(
        &self,
        app_id: &str,
    ) -> Result<Option<Vec<(DeliveryState, i64)>>> {
        let client = self.client().await?;
        let Some(id) = super::integrations::any_id(&client, app_id).await? else {
            return Ok(None);
        };
        let stmt = client
            .prepare_cached(
                "SELECT pending, in_flight, succeeded, failed, held, cancelled \
                 FROM delivery_totals WHERE integration_id = $1",
            )
            .await?;
        let counts: [i64; 6] = match client.query_opt(&stmt, &[&id]).await? {
            Some(r) => [r.get(0), r.get(1), r.get(2), r.get(3), r.get(4), r.get(5)],
            None => [0; 6],
        };
        // The statement names the columns in the order of `DeliveryState::ALL`.
        Ok(Some(
            DeliveryState::ALL.iter().copied().zip(counts).collect(),
        ))
    }

    /// See `Store::redeliver`.
    pub(crate) async fn redeliver(&self, delivery_id: &str, audit: Audit) -> Result<Redelivered> {
        let now = Timestamp::now();
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let Some(d) = get(&tx, delivery_id).await? else {
            return Ok(Redelivered::NoSuchDelivery);
        };
        let Some(integration) = super::integrations::any_id(&tx, &d.app_id).await? else {
            return Ok(Redelivered::NoSuchIntegration);
        };
        let state = gated_state(&tx, integration).await?;
        let stmt = tx
            .prepare_cached(
                "UPDATE deliveries SET state = $3, attempts = 0, chain_trigger = 'manual', \
                 next_attempt_at = $2, lease_until = NULL, updated_at = $2 \
                 WHERE id = $1 AND state <> 'in_flight'",
            )
            .await?;
        let n = tx
            .execute(&stmt, &[&d.row, &now.millis(), &state.as_str()])
            .await?;
        if n != 1 {
            return Ok(Redelivered::InFlight);
        }
        super::audit::write(&tx, &audit.target(delivery_id), now).await?;
        let found = view(&tx, delivery_id).await?;
        tx.commit().await?;
        Ok(found.map_or(Redelivered::NoSuchDelivery, Redelivered::Done))
    }

    /// See `Store::queue_test_webhook`.
    pub(crate) async fn queue_test_webhook(
        &self,
        app_id: &str,
        payload: impl FnOnce(Timestamp) -> Vec<u8>,
        audit: Audit,
    ) -> Result<TestQueued> {
        let now = Timestamp::now();
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let Some(id) = super::integrations::any_id(&tx, app_id).await? else {
            return Ok(TestQueued::NoSuchIntegration);
        };
        let Some(target) = super::integrations::webhook_target(&tx, id)
            .await?
            .filter(|t| !t.deleted)
        else {
            return Ok(TestQueued::NoSuchIntegration);
        };
        if target.callback_url.is_none() {
            return Ok(TestQueued::NoCallbackUrl);
        }
        let delivery_id = new_delivery_id();
        insert(
            &tx,
            &NewDelivery {
                delivery_id: &delivery_id,
                integration_id: id,
                event_row: None,
                is_test: true,
                event_type: EventType::ClickwrapEventVerified,
                payload: &payload(now),
                held: !target.sending,
                at: now,
            },
        )
        .await?;
        super::audit::write(&tx, &audit.detail(&delivery_id), now).await?;
        let found = view(&tx, &delivery_id).await?;
        tx.commit().await?;
        Ok(found.map_or(TestQueued::NoSuchIntegration, TestQueued::Queued))
    }

    /// See `Store::redeliver_failed_batch`: one batch walking `deliveries_failed_by_time` from the
    /// cursor, in its own transaction.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn redeliver_failed_batch(
        &self,
        app_id: &str,
        (from, to): (Timestamp, Timestamp),
        after: Option<BulkCursor>,
        entry: Option<i64>,
        audit: Audit,
        done: impl FnOnce(usize) -> String,
        total_before: usize,
    ) -> Result<Option<BulkBatch>> {
        let now = Timestamp::now();
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let Some(id) = super::integrations::live_id(&tx, app_id).await? else {
            return Ok(None);
        };
        let state = gated_state(&tx, id).await?;
        let limit = i64::from(BATCH);
        let rows = match after {
            None => {
                let stmt = tx.prepare_cached(REDELIVER_FAILED_FIRST).await?;
                tx.query(
                    &stmt,
                    &[
                        &state.as_str(),
                        &now.millis(),
                        &id,
                        &from.millis(),
                        &to.millis(),
                        &limit,
                    ],
                )
                .await?
            }
            Some((after_at, after_id)) => {
                let stmt = tx.prepare_cached(REDELIVER_FAILED_NEXT).await?;
                tx.query(
                    &stmt,
                    &[
                        &state.as_str(),
                        &now.millis(),
                        &id,
                        &after_at.millis(),
                        &after_id,
                        &to.millis(),
                        &limit,
                    ],
                )
                .await?
            }
        };
        let taken = rows.len();
        let last = rows
            .iter()
            .map(|r| (r.get::<_, i64>(0), r.get::<_, i64>(1)))
            .max()
            .map(|(at, id)| (Timestamp(at), id));
        let entry = match entry {
            Some(entry) => entry,
            None => super::audit::write(&tx, &audit, now).await?,
        };
        if taken < BATCH as usize {
            super::audit::set_detail(&tx, entry, &done(total_before + taken)).await?;
        }
        tx.commit().await?;
        Ok(Some(BulkBatch {
            taken,
            after: last.or(after),
            entry,
        }))
    }
}

/// The statements of `redeliver_failed_batch`: `$1` the state, `$2` now, `$3` the integration, then
/// the start (`$4` from) or the cursor (`$4`, `$5`), the end and the most rows.
pub const REDELIVER_FAILED_FIRST: &str = "UPDATE deliveries SET state = $1, attempts = 0, \
     chain_trigger = 'manual', next_attempt_at = $2, lease_until = NULL, updated_at = $2 \
     WHERE id = ANY(ARRAY(SELECT id FROM deliveries WHERE integration_id = $3 AND state = 'failed' \
                  AND created_at >= $4 AND created_at <= $5 ORDER BY created_at, id LIMIT $6)) \
     AND CASE state WHEN 'failed' THEN true ELSE false END RETURNING created_at, id";
pub const REDELIVER_FAILED_NEXT: &str = "UPDATE deliveries SET state = $1, attempts = 0, \
     chain_trigger = 'manual', next_attempt_at = $2, lease_until = NULL, updated_at = $2 \
     WHERE id = ANY(ARRAY(SELECT id FROM deliveries WHERE integration_id = $3 AND state = 'failed' \
                  AND (created_at, id) > ($4, $5) AND created_at <= $6 \
                  ORDER BY created_at, id LIMIT $7)) \
     AND CASE state WHEN 'failed' THEN true ELSE false END RETURNING created_at, id";

/// A claimed row (`RETURNING id, delivery_id, integration_id, payload, attempts, chain_trigger,
/// is_test, …`) with what its attempt needs.
fn claimed_from(
    r: &Row,
    lease_until: Timestamp,
    url: &str,
    secret: &str,
    client_cert: &Option<Arc<StoredClientCert>>,
) -> Result<Claimed> {
    Ok(Claimed {
        row: r.get(0),
        delivery_id: r.get(1),
        integration_id: r.get(2),
        payload: r.get(3),
        attempts: r.get(4),
        trigger: word(r.get::<_, &str>(5), Trigger::parse)?,
        is_test: r.get(6),
        lease_until,
        url: url.to_string(),
        secret: secret.to_string(),
        client_cert: client_cert.clone(),
    })
}
