//! Webhook deliveries: created with their payload bytes frozen (in the verify transaction, or by
//! "send test webhook"), then moved through their states by the dispatcher.

use rusqlite::{Connection, OptionalExtension, params};

use super::Result;
use crate::model::Timestamp;

/// A new delivery id: a UUID, version 7 (time-ordered, 74 random bits), so the unique index on
/// `delivery_id` grows at its end instead of taking a write on a random page of it per delivery.
/// (Clickwrap event ids stay version 4, as SPEC §3 asks of the public API.)
pub fn new_delivery_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

pub struct NewDelivery<'a> {
    pub delivery_id: &'a str,
    pub integration_id: i64,
    pub event_row: Option<i64>,
    pub is_test: bool,
    pub payload: &'a [u8],
    /// `pending` when it may be sent now, `held` while delivery is paused or the integration disabled.
    pub held: bool,
    pub at: Timestamp,
}

pub fn insert(conn: &Connection, d: &NewDelivery<'_>) -> Result<i64> {
    conn.prepare_cached(
        "INSERT INTO deliveries (delivery_id, integration_id, event_id, is_test, payload, state, next_attempt_at, \
         created_at, updated_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7, ?7)",
    )?
    .execute(params![
        d.delivery_id,
        d.integration_id,
        d.event_row,
        d.is_test,
        d.payload,
        if d.held { "held" } else { "pending" },
        d.at.millis()
    ])?;
    Ok(conn.last_insert_rowid())
}

/// A delivery claimed for an attempt, with what the attempt needs.
pub struct Claimed {
    pub row: i64,
    pub delivery_id: String,
    pub integration_id: i64,
    pub payload: Vec<u8>,
    /// Attempts already made in this chain; this one is `attempts + 1`.
    pub attempts: i64,
    pub manual: bool,
    pub url: String,
    pub secret: String,
}

/// In-flight deliveries whose lease ran out at `now` (their attempt outlived any timeout: the process
/// that claimed them is gone), oldest lease first, with their integration.
pub fn expired_leases(conn: &Connection, now: Timestamp, limit: usize) -> Result<Vec<(i64, i64)>> {
    // No `LIMIT ?`: SQLite plans with a bound LIMIT's value, so binding one re-prepares the statement
    // on every call. The rows stream in index order; taking `limit` of them stops the walk there.
    let rows = conn
        .prepare_cached(
            "SELECT id, integration_id FROM deliveries INDEXED BY deliveries_leases \
             WHERE state = 'in_flight' AND lease_until <= ?1 ORDER BY lease_until",
        )?
        .query_map(params![now.millis()], |r| Ok((r.get(0)?, r.get(1)?)))?
        .take(limit)
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(rows)
}

/// Every integration with pending deliveries, with the earliest `next_attempt_at` among them.
///
/// A loose index scan of `deliveries_pending`: one probe per integration for the next integration id
/// and one for its earliest time, so the cost grows with the number of integrations that have work,
/// not with the length of their queues. (Walking all due deliveries in time order instead cost
/// O(backlog) per claim while one integration's queue was long and its slots full.)
pub fn pending_integrations(conn: &Connection) -> Result<Vec<(i64, Timestamp)>> {
    let rows = conn
        .prepare_cached(&format!(
            "{PENDING_QUEUES} SELECT integration_id, first FROM queues"
        ))?
        .query_map([], |r| Ok((r.get(0)?, Timestamp(r.get(1)?))))?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(rows)
}

/// `queues(integration_id, first)`: each integration with pending deliveries and its earliest
/// `next_attempt_at`, by the loose scan of `deliveries_pending` that [`pending_integrations`] describes.
const PENDING_QUEUES: &str = "WITH RECURSIVE walk(integration_id) AS ( \
         SELECT (SELECT integration_id FROM deliveries INDEXED BY deliveries_pending \
                 WHERE state = 'pending' \
                 ORDER BY integration_id LIMIT 1) \
         UNION ALL \
         SELECT (SELECT d.integration_id FROM deliveries d INDEXED BY deliveries_pending \
                 WHERE d.state = 'pending' AND d.integration_id > walk.integration_id \
                 ORDER BY d.integration_id LIMIT 1) \
         FROM walk WHERE walk.integration_id IS NOT NULL), \
     queues(integration_id, first) AS ( \
         SELECT integration_id, (SELECT min(next_attempt_at) \
                                 FROM deliveries INDEXED BY deliveries_pending \
                                 WHERE state = 'pending' AND integration_id = walk.integration_id) \
         FROM walk WHERE integration_id IS NOT NULL)";

/// Up to `limit` of one integration's pending deliveries that are due at `now`, oldest first.
pub fn due_of(
    conn: &Connection,
    integration_id: i64,
    now: Timestamp,
    limit: usize,
) -> Result<Vec<i64>> {
    // No `LIMIT ?`, as in `expired_leases`.
    let rows = conn
        .prepare_cached(
            "SELECT id FROM deliveries INDEXED BY deliveries_pending \
             WHERE state = 'pending' AND integration_id = ?1 AND next_attempt_at <= ?2 \
             ORDER BY next_attempt_at, id",
        )?
        .query_map(params![integration_id, now.millis()], |r| r.get(0))?
        .take(limit)
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(rows)
}

/// What the integration's settings say about sending its deliveries now.
pub enum Gate {
    Send {
        url: String,
        secret: String,
    },
    /// Delivery switched off, integration disabled, or no callback URL: keep, do not send.
    Hold,
    /// The integration was deleted.
    Cancel,
}

pub fn gate(conn: &Connection, integration_id: i64) -> Result<Gate> {
    let row = conn
        .prepare_cached(
            "SELECT deleted_at IS NOT NULL, status = 'ENABLED' AND webhook_delivery_enabled = 1, callback_url, \
             signing_secret FROM integrations WHERE id = ?1",
        )?
        .query_row([integration_id], |r| {
            Ok((r.get::<_, bool>(0)?, r.get::<_, bool>(1)?, r.get::<_, Option<String>>(2)?, r.get::<_, String>(3)?))
        })
        .optional()?;
    Ok(match row {
        None | Some((true, ..)) => Gate::Cancel,
        Some((false, true, Some(url), secret)) => Gate::Send { url, secret },
        Some(_) => Gate::Hold,
    })
}

/// Claims one due delivery for an attempt until `lease_until`; `None` if someone else took it meanwhile.
pub fn claim(
    conn: &Connection,
    row: i64,
    now: Timestamp,
    lease_until: Timestamp,
    url: String,
    secret: String,
) -> Result<Option<Claimed>> {
    let claimed = conn
        .prepare_cached(
            "UPDATE deliveries SET state = 'in_flight', lease_until = ?3, updated_at = ?2 \
             WHERE id = ?1 AND ((state = 'pending' AND next_attempt_at <= ?2) OR (state = 'in_flight' AND lease_until <= ?2)) \
             RETURNING delivery_id, integration_id, payload, attempts, chain_trigger = 'manual'",
        )?
        .query_row(params![row, now.millis(), lease_until.millis()], |r| {
            Ok(Claimed {
                row,
                delivery_id: r.get(0)?,
                integration_id: r.get(1)?,
                payload: r.get(2)?,
                attempts: r.get(3)?,
                manual: r.get(4)?,
                url: url.clone(),
                secret: secret.clone(),
            })
        })
        .optional()?;
    Ok(claimed)
}

/// At start, under the serve lock: deliveries left `in_flight` by a process that died mid-attempt are
/// due again now. Their interrupted attempt left no record; the receiver may have seen it (at least once).
pub fn recover_interrupted(conn: &Connection, now: Timestamp) -> Result<usize> {
    Ok(conn
        .prepare_cached(
            "UPDATE deliveries SET state = 'pending', next_attempt_at = ?1, lease_until = NULL, updated_at = ?1 \
             WHERE state = 'in_flight'",
        )?
        .execute([now.millis()])?)
}

/// Sets a delivery that cannot be sent now aside: `held` or `cancelled`.
pub fn set_aside(conn: &Connection, row: i64, state: &str, now: Timestamp) -> Result<()> {
    conn.prepare_cached(
        "UPDATE deliveries SET state = ?2, lease_until = NULL, updated_at = ?3 \
         WHERE id = ?1 AND state IN ('pending', 'in_flight')",
    )?
    .execute(params![row, state, now.millis()])?;
    Ok(())
}

/// Brings an integration's deliveries in line with its settings: held ones are released (due now) when
/// it can be delivered to, pending ones are held when it cannot, and everything unfinished is
/// cancelled when it was deleted. Returns how many were released. Each statement walks the partial
/// index of the state it changes, never the integration's history.
pub fn sync_with_integration(
    conn: &Connection,
    integration_id: i64,
    now: Timestamp,
) -> Result<usize> {
    match gate(conn, integration_id)? {
        Gate::Send { .. } => Ok(conn
            .prepare_cached(
                "UPDATE deliveries INDEXED BY deliveries_held \
                 SET state = 'pending', next_attempt_at = ?2, updated_at = ?2 \
                 WHERE integration_id = ?1 AND state = 'held'",
            )?
            .execute(params![integration_id, now.millis()])?),
        Gate::Hold => {
            conn.prepare_cached(
                "UPDATE deliveries INDEXED BY deliveries_pending SET state = 'held', updated_at = ?2 \
                 WHERE integration_id = ?1 AND state = 'pending'",
            )?
            .execute(params![integration_id, now.millis()])?;
            Ok(0)
        }
        Gate::Cancel => {
            for sql in [
                "UPDATE deliveries INDEXED BY deliveries_pending SET state = 'cancelled', updated_at = ?2 \
                 WHERE integration_id = ?1 AND state = 'pending'",
                "UPDATE deliveries INDEXED BY deliveries_held SET state = 'cancelled', updated_at = ?2 \
                 WHERE integration_id = ?1 AND state = 'held'",
            ] {
                conn.prepare_cached(sql)?
                    .execute(params![integration_id, now.millis()])?;
            }
            Ok(0)
        }
    }
}

/// One attempt as observed, as it is stored and read back.
pub struct Attempt {
    pub number: i64,
    pub manual: bool,
    pub started_at: Timestamp,
    pub duration_ms: i64,
    pub url: String,
    pub remote_addr: Option<String>,
    pub request_headers: String,
    pub response_status: Option<u16>,
    /// The first 4 KiB of the response body.
    pub response_body: Vec<u8>,
    pub outcome: String,
    pub detail: Option<String>,
}

/// Where the delivery goes after an attempt.
pub enum Next {
    Succeeded,
    Retry(Timestamp),
    Failed,
}

/// Stores the attempt and moves the delivery on, in one transaction.
pub fn record_attempt(
    conn: &Connection,
    row: i64,
    a: &Attempt,
    next: &Next,
    now: Timestamp,
) -> Result<()> {
    conn.prepare_cached(
        "INSERT INTO attempts (delivery_id, number, trigger, started_at, duration_ms, url, remote_addr, \
         request_headers, response_status, response_body, outcome, detail) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
    )?
    .execute(params![
        row,
        a.number,
        if a.manual { "manual" } else { "automatic" },
        a.started_at.millis(),
        a.duration_ms,
        a.url,
        a.remote_addr,
        a.request_headers,
        a.response_status,
        a.response_body,
        a.outcome,
        a.detail
    ])?;
    let (state, next_at) = match next {
        Next::Succeeded => ("succeeded", None),
        Next::Retry(at) => ("pending", Some(at.millis())),
        Next::Failed => ("failed", None),
    };
    // A delivery set aside while its attempt ran (held, cancelled) keeps that state.
    conn.prepare_cached(
        "UPDATE deliveries SET attempts = ?2, last_outcome = ?3, updated_at = ?4, lease_until = NULL, \
         next_attempt_at = CASE WHEN state = 'in_flight' THEN ?6 ELSE next_attempt_at END, \
         state = CASE WHEN state = 'in_flight' THEN ?5 ELSE state END WHERE id = ?1",
    )?
    .execute(params![row, a.number, a.outcome, now.millis(), state, next_at])?;
    Ok(())
}

/// Deletes up to `batch` attempts started before `before` whose delivery is finished (succeeded,
/// failed, cancelled), oldest first; returns how many. Deliveries themselves and their counters stay,
/// and so do the attempts of deliveries still pending, in flight or held.
pub fn prune_attempts(conn: &Connection, before: Timestamp, batch: u32) -> Result<usize> {
    Ok(conn
        .prepare_cached(
            "DELETE FROM attempts WHERE id IN (SELECT a.id FROM attempts a JOIN deliveries d ON d.id = a.delivery_id \
             WHERE a.started_at < ?1 AND d.state IN ('succeeded', 'failed', 'cancelled') \
             ORDER BY a.started_at LIMIT ?2)",
        )?
        .execute(params![before.millis(), batch])?)
}

/// The unfinished part of the queue, for `/metrics`.
#[derive(Debug, Default, Clone, Copy)]
pub struct QueueStats {
    pub pending: i64,
    pub in_flight: i64,
    pub held: i64,
    /// The earliest `next_attempt_at` of a pending delivery that is due now.
    pub oldest_due_at: Option<Timestamp>,
}

/// Each count walks only the partial index of its state (the rows waiting in it), never the history.
pub fn queue_stats(conn: &Connection, now: Timestamp) -> Result<QueueStats> {
    Ok(conn
        .prepare_cached(&format!(
            "{PENDING_QUEUES} SELECT \
             (SELECT count(*) FROM deliveries INDEXED BY deliveries_pending WHERE state = 'pending'), \
             (SELECT count(*) FROM deliveries INDEXED BY deliveries_leases WHERE state = 'in_flight'), \
             (SELECT count(*) FROM deliveries INDEXED BY deliveries_held WHERE state = 'held'), \
             (SELECT min(first) FROM queues WHERE first <= ?1)"
        ))?
        .query_row([now.millis()], |r| {
            Ok(QueueStats {
                pending: r.get(0)?,
                in_flight: r.get(1)?,
                held: r.get(2)?,
                oldest_due_at: r.get::<_, Option<i64>>(3)?.map(Timestamp),
            })
        })?)
}

/// When the dispatcher must look again: the earliest pending time or running lease. Two probes per
/// integration with pending work and one for the leases, not a scan of the backlog.
pub fn next_wake(conn: &Connection) -> Result<Option<Timestamp>> {
    Ok(conn
        .prepare_cached(&format!(
            "{PENDING_QUEUES} SELECT min(v) FROM (SELECT min(first) AS v FROM queues \
             UNION ALL SELECT min(lease_until) FROM deliveries INDEXED BY deliveries_leases \
             WHERE state = 'in_flight')"
        ))?
        .query_row([], |r| r.get::<_, Option<i64>>(0))?
        .map(Timestamp))
}

/// A delivery as the history shows it.
pub struct DeliveryRow {
    pub row: i64,
    pub delivery_id: String,
    pub app_id: String,
    pub event_id: Option<String>,
    pub is_test: bool,
    pub payload: Vec<u8>,
    pub state: String,
    pub attempts: i64,
    pub next_attempt_at: Option<Timestamp>,
    pub last_outcome: Option<String>,
    pub manual: bool,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

const DELIVERY_COLUMNS: &str = "d.id, d.delivery_id, i.app_id, e.event_id, d.is_test, d.payload, d.state, d.attempts, \
     d.next_attempt_at, d.last_outcome, d.chain_trigger = 'manual', d.created_at, d.updated_at \
     FROM deliveries d JOIN integrations i ON i.id = d.integration_id LEFT JOIN events e ON e.id = d.event_id";

fn delivery_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<DeliveryRow> {
    let state: String = r.get(6)?;
    Ok(DeliveryRow {
        row: r.get(0)?,
        delivery_id: r.get(1)?,
        app_id: r.get(2)?,
        event_id: r.get(3)?,
        is_test: r.get(4)?,
        payload: r.get(5)?,
        // Only pending deliveries have a next attempt worth showing.
        next_attempt_at: if state == "pending" {
            r.get::<_, Option<i64>>(8)?.map(Timestamp)
        } else {
            None
        },
        state,
        attempts: r.get(7)?,
        last_outcome: r.get(9)?,
        manual: r.get(10)?,
        created_at: Timestamp(r.get(11)?),
        updated_at: Timestamp(r.get(12)?),
    })
}

/// One integration's deliveries, newest first, before the row id `before`.
pub fn list(
    conn: &Connection,
    integration_id: i64,
    state: Option<&str>,
    outcome: Option<&str>,
    before: Option<i64>,
    limit: u32,
) -> Result<Vec<DeliveryRow>> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {DELIVERY_COLUMNS} WHERE d.integration_id = ?1 AND (?2 IS NULL OR d.state = ?2) \
         AND (?3 IS NULL OR d.last_outcome = ?3) AND d.id < ?4 ORDER BY d.id DESC LIMIT ?5"
    ))?;
    let rows = stmt.query_map(
        params![
            integration_id,
            state,
            outcome,
            before.unwrap_or(i64::MAX),
            limit
        ],
        delivery_from_row,
    )?;
    Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
}

pub fn get(conn: &Connection, delivery_id: &str) -> Result<Option<DeliveryRow>> {
    Ok(conn
        .prepare_cached(&format!(
            "SELECT {DELIVERY_COLUMNS} WHERE d.delivery_id = ?1"
        ))?
        .query_row([delivery_id], delivery_from_row)
        .optional()?)
}

/// The deliveries of one clickwrap event (by its public id), oldest first.
pub fn for_event(conn: &Connection, event_id: &str) -> Result<Vec<DeliveryRow>> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {DELIVERY_COLUMNS} WHERE e.event_id = ?1 ORDER BY d.id"
    ))?;
    let rows = stmt.query_map([event_id], delivery_from_row)?;
    Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
}

/// How many of an integration's deliveries are in each state (states with none are absent).
pub fn count_by_state(conn: &Connection, integration_id: i64) -> Result<Vec<(String, i64)>> {
    let mut stmt = conn.prepare_cached(
        "SELECT state, count(*) FROM deliveries WHERE integration_id = ?1 GROUP BY state",
    )?;
    let rows = stmt.query_map([integration_id], |r| Ok((r.get(0)?, r.get(1)?)))?;
    Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
}

pub fn attempts(conn: &Connection, row: i64) -> Result<Vec<Attempt>> {
    let mut stmt = conn.prepare_cached(
        "SELECT number, trigger = 'manual', started_at, duration_ms, url, remote_addr, request_headers, \
         response_status, response_body, outcome, detail FROM attempts WHERE delivery_id = ?1 ORDER BY id",
    )?;
    let rows = stmt.query_map([row], |r| {
        Ok(Attempt {
            number: r.get(0)?,
            manual: r.get(1)?,
            started_at: Timestamp(r.get(2)?),
            duration_ms: r.get(3)?,
            url: r.get(4)?,
            remote_addr: r.get(5)?,
            request_headers: r.get(6)?,
            response_status: r.get(7)?,
            response_body: r.get::<_, Option<Vec<u8>>>(8)?.unwrap_or_default(),
            outcome: r.get(9)?,
            detail: r.get(10)?,
        })
    })?;
    Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
}

/// Starts a new, manual attempt chain for a delivery that is not in flight; `false` if it is.
pub fn redeliver(conn: &Connection, row: i64, now: Timestamp) -> Result<bool> {
    let n = conn
        .prepare_cached(
            "UPDATE deliveries SET state = 'pending', attempts = 0, chain_trigger = 'manual', next_attempt_at = ?2, \
             lease_until = NULL, updated_at = ?2 WHERE id = ?1 AND state <> 'in_flight'",
        )?
        .execute(params![row, now.millis()])?;
    Ok(n == 1)
}

/// Starts a manual chain for every failed delivery of an integration created in `[from, to]`.
pub fn redeliver_failed(
    conn: &Connection,
    integration_id: i64,
    from: Timestamp,
    to: Timestamp,
    now: Timestamp,
) -> Result<usize> {
    Ok(conn
        .prepare_cached(
            "UPDATE deliveries SET state = 'pending', attempts = 0, chain_trigger = 'manual', next_attempt_at = ?4, \
             lease_until = NULL, updated_at = ?4 \
             WHERE integration_id = ?1 AND state = 'failed' AND created_at BETWEEN ?2 AND ?3",
        )?
        .execute(params![integration_id, from.millis(), to.millis(), now.millis()])?)
}
