//! Webhook deliveries: created with their payload bytes frozen (in the verify transaction, or by
//! "send test webhook"), then moved through their states by the dispatcher.

use rusqlite::{Connection, OptionalExtension, params};

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::audit::{self, Audit};
use super::client_certs::StoredClientCert;
use super::{Backend, Result, Store, integrations};
use crate::model::{AttemptOutcome, DeliveryState, EventType, Timestamp, Trigger};

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
    pub event_type: EventType,
    pub payload: &'a [u8],
    /// `pending` when it may be sent now, `held` while delivery is paused or the integration disabled.
    pub held: bool,
    pub at: Timestamp,
}

impl NewDelivery<'_> {
    /// The state it is inserted in.
    pub fn state(&self) -> DeliveryState {
        if self.held {
            DeliveryState::Held
        } else {
            DeliveryState::Pending
        }
    }
}

pub(super) fn insert(conn: &Connection, d: &NewDelivery<'_>) -> Result<i64> {
    conn.prepare_cached(
        "INSERT INTO deliveries (delivery_id, integration_id, event_id, is_test, event_type, payload, state, \
         next_attempt_at, created_at, updated_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?8, ?8)",
    )?
    .execute(params![
        d.delivery_id,
        d.integration_id,
        d.event_row,
        d.is_test,
        d.event_type,
        d.payload,
        d.state(),
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
    pub trigger: Trigger,
    /// A test webhook (`POST …/test-webhook`), sent with `X-Clickterm-Test: true`.
    pub is_test: bool,
    /// The lease it was claimed with: recording its attempt moves the delivery only while this is
    /// still its lease (on PostgreSQL, where another node may have claimed it again meanwhile).
    pub lease_until: Timestamp,
    pub url: String,
    pub secret: String,
    /// The client certificate its connection presents (mutual TLS), if the integration has one.
    pub client_cert: Option<Arc<StoredClientCert>>,
}

/// In-flight deliveries whose lease ran out at `now` (their attempt outlived any timeout: the process
/// that claimed them is gone), oldest lease first, with their integration.
pub(super) fn expired_leases(
    conn: &Connection,
    now: Timestamp,
    limit: usize,
) -> Result<Vec<(i64, i64)>> {
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
pub(super) fn pending_integrations(conn: &Connection) -> Result<Vec<(i64, Timestamp)>> {
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
pub(super) fn due_of(
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
        client_cert: Option<Arc<StoredClientCert>>,
    },
    /// Delivery switched off, integration disabled, or no callback URL: keep, do not send.
    Hold,
    /// The integration was deleted.
    Cancel,
}

pub(crate) fn gate(conn: &Connection, integration_id: i64) -> Result<Gate> {
    Ok(
        match super::integrations::webhook_target(conn, integration_id)? {
            None => Gate::Cancel,
            Some(t) if t.deleted => Gate::Cancel,
            Some(super::integrations::WebhookTarget {
                sending: true,
                callback_url: Some(url),
                signing_secret,
                ..
            }) => Gate::Send {
                url,
                secret: signing_secret,
                client_cert: super::client_certs::for_integration(conn, integration_id)?,
            },
            Some(_) => Gate::Hold,
        },
    )
}

/// Claims one due delivery for an attempt until `lease_until`; `None` if someone else took it meanwhile.
pub(super) fn claim(
    conn: &Connection,
    row: i64,
    now: Timestamp,
    lease_until: Timestamp,
    url: String,
    secret: String,
    client_cert: Option<Arc<StoredClientCert>>,
) -> Result<Option<Claimed>> {
    let claimed = conn
        .prepare_cached(
            "UPDATE deliveries SET state = 'in_flight', lease_until = ?3, updated_at = ?2 \
             WHERE id = ?1 AND ((state = 'pending' AND next_attempt_at <= ?2) OR (state = 'in_flight' AND lease_until <= ?2)) \
             RETURNING delivery_id, integration_id, payload, attempts, chain_trigger, is_test",
        )?
        .query_row(params![row, now.millis(), lease_until.millis()], |r| {
            Ok(Claimed {
                row,
                delivery_id: r.get(0)?,
                integration_id: r.get(1)?,
                payload: r.get(2)?,
                attempts: r.get(3)?,
                trigger: r.get(4)?,
                is_test: r.get(5)?,
                lease_until,
                url: url.clone(),
                secret: secret.clone(),
                client_cert: client_cert.clone(),
            })
        })
        .optional()?;
    Ok(claimed)
}

pub(super) const RECOVER_INTERRUPTED: &str = "UPDATE deliveries INDEXED BY deliveries_leases \
     SET state = 'pending', next_attempt_at = ?1, lease_until = NULL, updated_at = ?1 \
     WHERE state = 'in_flight'";

/// At start, under the serve lock: deliveries left `in_flight` by a process that died mid-attempt are
/// due again now. Their interrupted attempt left no record; the receiver may have seen it (at least once).
pub(super) fn recover_interrupted(conn: &Connection, now: Timestamp) -> Result<usize> {
    Ok(conn
        .prepare_cached(RECOVER_INTERRUPTED)?
        .execute([now.millis()])?)
}

/// Sets a delivery that cannot be sent now aside: `held` or `cancelled`.
pub(super) fn set_aside(
    conn: &Connection,
    row: i64,
    state: DeliveryState,
    now: Timestamp,
) -> Result<()> {
    conn.prepare_cached(
        "UPDATE deliveries SET state = ?2, lease_until = NULL, updated_at = ?3 \
         WHERE id = ?1 AND state IN ('pending', 'in_flight')",
    )?
    .execute(params![row, state, now.millis()])?;
    Ok(())
}

/// Rows changed by one write job of the bulk changes below (settling, bulk redelivery). A job of 500
/// takes a few milliseconds, so no bulk change holds the single writer — and every write queued
/// behind it — for long; attempt pruning works the same way.
pub const BATCH: u32 = 500;

/// The statements of [`settle_batch`]: `?1` the integration, `?2` now, `?3` the most rows.
pub(super) const RELEASE_HELD: &str = "UPDATE deliveries SET state = 'pending', next_attempt_at = ?2, updated_at = ?2 \
     WHERE id IN (SELECT id FROM deliveries INDEXED BY deliveries_held \
                  WHERE integration_id = ?1 AND state = 'held' ORDER BY id LIMIT ?3)";
pub(super) const HOLD_PENDING: &str = "UPDATE deliveries SET state = 'held', updated_at = ?2 \
     WHERE id IN (SELECT id FROM deliveries INDEXED BY deliveries_pending_by_id \
                  WHERE integration_id = ?1 AND state = 'pending' ORDER BY id LIMIT ?3)";
pub(super) const CANCEL_PENDING: &str = "UPDATE deliveries SET state = 'cancelled', updated_at = ?2 \
     WHERE id IN (SELECT id FROM deliveries INDEXED BY deliveries_pending_by_id \
                  WHERE integration_id = ?1 AND state = 'pending' ORDER BY id LIMIT ?3)";
pub(super) const CANCEL_HELD: &str = "UPDATE deliveries SET state = 'cancelled', updated_at = ?2 \
     WHERE id IN (SELECT id FROM deliveries INDEXED BY deliveries_held \
                  WHERE integration_id = ?1 AND state = 'held' ORDER BY id LIMIT ?3)";

/// Brings up to `limit` of an integration's deliveries in line with its settings, oldest first: held
/// ones are released (due now) when it can be delivered to, pending ones are held when it cannot, and
/// pending and held ones are cancelled when it was deleted. Returns how many changed; fewer than
/// `limit` means it is in line. Each statement walks the partial index of the state it changes, never
/// the integration's history, and takes the rows in that state now, so a delivery is released once
/// per hold however many of these run, and a batch after a change of mind follows the new settings.
pub fn settle_batch(
    conn: &Connection,
    integration_id: i64,
    now: Timestamp,
    limit: u32,
) -> Result<usize> {
    let run = |sql: &str, limit: u32| -> Result<usize> {
        Ok(conn
            .prepare_cached(sql)?
            .execute(params![integration_id, now.millis(), limit])?)
    };
    match gate(conn, integration_id)? {
        Gate::Send { .. } => run(RELEASE_HELD, limit),
        Gate::Hold => run(HOLD_PENDING, limit),
        Gate::Cancel => {
            let n = run(CANCEL_PENDING, limit)?;
            if n < limit as usize {
                Ok(n + run(CANCEL_HELD, limit - n as u32)?)
            } else {
                Ok(n)
            }
        }
    }
}

pub(super) const UNSETTLED_CANDIDATES: &str = "SELECT integration_id FROM delivery_counts WHERE held > 0 OR pending > 0 ORDER BY integration_id";

/// Integrations that may have deliveries out of line with their settings: every one with held or
/// pending deliveries, from their counts (one row per integration, not their deliveries).
/// [`settle_batch`] tells which really are.
pub(super) fn unsettled_candidates(conn: &Connection) -> Result<Vec<i64>> {
    Ok(conn
        .prepare_cached(UNSETTLED_CANDIDATES)?
        .query_map([], |r| r.get(0))?
        .collect::<rusqlite::Result<Vec<_>>>()?)
}

/// One attempt as observed, as it is stored and read back.
pub struct Attempt {
    pub number: i64,
    pub trigger: Trigger,
    pub started_at: Timestamp,
    pub duration_ms: i64,
    pub url: String,
    pub remote_addr: Option<String>,
    pub request_headers: String,
    pub response_status: Option<u16>,
    /// The first 4 KiB of the response body.
    pub response_body: Vec<u8>,
    pub outcome: AttemptOutcome,
    pub detail: Option<String>,
}

/// Where the delivery goes after an attempt.
pub enum Next {
    Succeeded,
    Retry(Timestamp),
    Failed,
}

impl Next {
    /// The state the delivery moves to, and when it is due again (a retry's time).
    pub fn state_and_due(&self) -> (DeliveryState, Option<i64>) {
        match self {
            Next::Succeeded => (DeliveryState::Succeeded, None),
            Next::Retry(at) => (DeliveryState::Pending, Some(at.millis())),
            Next::Failed => (DeliveryState::Failed, None),
        }
    }
}

/// Stores the attempt, counts it in the dashboard's aggregates (`stats`) and moves the delivery on,
/// in one transaction.
pub(super) fn record_attempt(
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
        a.trigger,
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
    super::stats::count_attempt(conn, row, a, matches!(next, Next::Failed))?;
    let (state, next_at) = next.state_and_due();
    // A delivery set aside while its attempt ran (held, cancelled) keeps that state.
    conn.prepare_cached(
        "UPDATE deliveries SET attempts = ?2, last_outcome = ?3, updated_at = ?4, lease_until = NULL, last_status = ?7, \
         next_attempt_at = CASE WHEN state = 'in_flight' THEN ?6 ELSE next_attempt_at END, \
         state = CASE WHEN state = 'in_flight' THEN ?5 ELSE state END WHERE id = ?1",
    )?
    .execute(params![
        row,
        a.number,
        a.outcome,
        now.millis(),
        state,
        next_at,
        a.response_status
    ])?;
    Ok(())
}

/// Deletes up to `batch` attempts started before `before` whose delivery is finished (succeeded,
/// failed, cancelled), oldest first; returns how many. Deliveries themselves and their counters stay,
/// and so do the attempts of deliveries still pending, in flight or held.
pub(super) fn prune_attempts(conn: &Connection, before: Timestamp, batch: u32) -> Result<usize> {
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

/// The counts come from `delivery_counts` (one row per integration with deliveries), so a scrape costs
/// the same with a million deliveries queued as with none; the oldest due time is one probe per
/// integration with pending work.
pub(super) fn queue_stats_sql() -> String {
    format!(
        "{PENDING_QUEUES} SELECT coalesce(sum(pending), 0), coalesce(sum(in_flight), 0), \
         coalesce(sum(held), 0), (SELECT min(first) FROM queues WHERE first <= ?1) FROM delivery_counts"
    )
}

pub(super) fn queue_stats(conn: &Connection, now: Timestamp) -> Result<QueueStats> {
    Ok(conn
        .prepare_cached(&queue_stats_sql())?
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
pub(super) fn next_wake(conn: &Connection) -> Result<Option<Timestamp>> {
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
    pub event_type: EventType,
    pub payload: Vec<u8>,
    pub state: DeliveryState,
    pub attempts: i64,
    pub next_attempt_at: Option<Timestamp>,
    pub last_outcome: Option<AttemptOutcome>,
    /// The HTTP status of the latest attempt, if it got a response.
    pub last_status: Option<u16>,
    pub trigger: Trigger,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

/// The columns of [`DeliveryRow`] up to `FROM`; the history names the index after the table.
pub(crate) const DELIVERY_COLUMNS_OF: &str = "d.id, d.delivery_id, i.app_id, e.event_id, d.is_test, d.payload, d.state, \
     d.attempts, d.next_attempt_at, d.last_outcome, d.chain_trigger, d.created_at, d.updated_at, d.event_type, d.last_status FROM ";
pub(crate) const DELIVERY_JOINS: &str =
    "JOIN integrations i ON i.id = d.integration_id LEFT JOIN events e ON e.id = d.event_id";

fn delivery_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<DeliveryRow> {
    let state: DeliveryState = r.get(6)?;
    Ok(DeliveryRow {
        row: r.get(0)?,
        delivery_id: r.get(1)?,
        app_id: r.get(2)?,
        event_id: r.get(3)?,
        is_test: r.get(4)?,
        payload: r.get(5)?,
        // Only pending deliveries have a next attempt worth showing.
        next_attempt_at: if state == DeliveryState::Pending {
            r.get::<_, Option<i64>>(8)?.map(Timestamp)
        } else {
            None
        },
        state,
        attempts: r.get(7)?,
        last_outcome: r.get(9)?,
        trigger: r.get(10)?,
        created_at: Timestamp(r.get(11)?),
        updated_at: Timestamp(r.get(12)?),
        event_type: r.get(13)?,
        last_status: r.get(14)?,
    })
}

/// One integration's deliveries, newest first, before the row id `before`, optionally only those in
/// `state` and with the last outcome `outcome`. At most `limit`; each page is one walk of the index for the filters given, stopped
/// once the page is full (see [`list_statement`]).
pub(super) fn list(
    conn: &Connection,
    integration_id: i64,
    state: Option<DeliveryState>,
    outcome: Option<AttemptOutcome>,
    before: Option<i64>,
    limit: u32,
) -> Result<Vec<DeliveryRow>> {
    let statement = list_statement(integration_id, state, outcome, before);
    let mut stmt = conn.prepare_cached(&statement.sql)?;
    let params: Vec<(&str, &dyn rusqlite::ToSql)> = statement
        .params
        .iter()
        .map(|(name, value)| (*name, value as &dyn rusqlite::ToSql))
        .collect();
    // No `LIMIT ?`, as in `expired_leases`.
    let rows = stmt
        .query_map(params.as_slice(), delivery_from_row)?
        .take(limit as usize)
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(rows)
}

/// The index a history filtered by a delivery state walks, with the fixed terms that select it.
/// Every state but `succeeded` is rare among an integration's deliveries and has a partial index of
/// its own; succeeded ones are most of the history, so their filter walks all of it newest first and
/// skips the few others (a page costs more than another only when an integration's deliveries mostly
/// fail, in proportion). In flight are at most `max_in_flight` deliveries in all, found through the
/// leases; sorting those few is the one sort of the history.
pub(crate) fn state_walk(state: DeliveryState) -> (&'static str, &'static str) {
    match state {
        DeliveryState::Pending => ("deliveries_pending_by_id", "d.state = 'pending'"),
        DeliveryState::InFlight => ("deliveries_leases", "d.state = 'in_flight'"),
        DeliveryState::Succeeded => ("deliveries_by_integration", "d.state = 'succeeded'"),
        DeliveryState::Failed => ("deliveries_failed", "d.state = 'failed'"),
        DeliveryState::Held => ("deliveries_held", "d.state = 'held'"),
        DeliveryState::Cancelled => ("deliveries_cancelled", "d.state = 'cancelled'"),
    }
}

/// The statement a page of the delivery history runs, built like the event list's
/// ([`super::events::list_statement`]): only the filters present, as fixed fragments with named
/// parameters, and the index named. A state walks its own index ([`STATE_WALKS`]); a failure outcome
/// `deliveries_by_outcome`, or with a state `deliveries_by_state_outcome` (both hold only deliveries
/// whose last attempt failed); `ok`, alone or with a state, walks what that state (or none) walks and
/// checks the outcome.
pub(crate) fn list_statement(
    integration_id: i64,
    state: Option<DeliveryState>,
    outcome: Option<AttemptOutcome>,
    before: Option<i64>,
) -> super::events::Statement {
    use rusqlite::types::Value;
    let mut params: Vec<(&'static str, Value)> =
        vec![(":integration", Value::Integer(integration_id))];
    let mut terms: Vec<&'static str> = vec!["d.integration_id = :integration"];
    let index = match (state, outcome) {
        (None, None) => "deliveries_by_integration",
        (Some(state), None) => {
            let (index, state_terms) = state_walk(state);
            terms.push(state_terms);
            index
        }
        // Like `succeeded`: most deliveries end with `ok`.
        (None, Some(AttemptOutcome::Ok)) => {
            terms.push("d.last_outcome = 'ok'");
            "deliveries_by_integration"
        }
        (None, Some(outcome)) => {
            terms.push("d.last_outcome = :outcome AND d.last_outcome <> 'ok'");
            params.push((":outcome", Value::Text(outcome.to_string())));
            "deliveries_by_outcome"
        }
        (Some(state), Some(AttemptOutcome::Ok)) => {
            let (index, state_terms) = state_walk(state);
            terms.push(state_terms);
            terms.push("d.last_outcome = 'ok'");
            index
        }
        (Some(state), Some(outcome)) => {
            terms.push("d.state = :state AND d.last_outcome = :outcome AND d.last_outcome <> 'ok'");
            params.push((":state", Value::Text(state.to_string())));
            params.push((":outcome", Value::Text(outcome.to_string())));
            "deliveries_by_state_outcome"
        }
    };
    if let Some(before) = before {
        terms.push("d.id < :before");
        params.push((":before", Value::Integer(before)));
    }
    let sql = format!(
        "SELECT {DELIVERY_COLUMNS_OF}deliveries d INDEXED BY {index} {DELIVERY_JOINS} \
         WHERE {} ORDER BY d.id DESC",
        terms.join(" AND ")
    );
    super::events::Statement { sql, params, index }
}

pub(super) fn get(conn: &Connection, delivery_id: &str) -> Result<Option<DeliveryRow>> {
    Ok(conn
        .prepare_cached(&format!(
            "SELECT {DELIVERY_COLUMNS_OF}deliveries d {DELIVERY_JOINS} WHERE d.delivery_id = ?1"
        ))?
        .query_row([delivery_id], delivery_from_row)
        .optional()?)
}

/// The deliveries of one clickwrap event (by its public id), oldest first.
pub(super) fn for_event(conn: &Connection, event_id: &str) -> Result<Vec<DeliveryRow>> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {DELIVERY_COLUMNS_OF}deliveries d {DELIVERY_JOINS} WHERE e.event_id = ?1 ORDER BY d.id"
    ))?;
    let rows = stmt.query_map([event_id], delivery_from_row)?;
    Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
}

pub(super) const COUNTS: &str = "SELECT pending, in_flight, succeeded, failed, held, cancelled \
     FROM delivery_counts WHERE integration_id = ?1";

/// How many of an integration's deliveries are in each state (every state, zeros included), from
/// `delivery_counts`: one row, however many deliveries it has.
pub(super) fn count_by_state(
    conn: &Connection,
    integration_id: i64,
) -> Result<Vec<(DeliveryState, i64)>> {
    let counts: Option<[i64; 6]> = conn
        .prepare_cached(COUNTS)?
        .query_row([integration_id], |r| {
            Ok([
                r.get(0)?,
                r.get(1)?,
                r.get(2)?,
                r.get(3)?,
                r.get(4)?,
                r.get(5)?,
            ])
        })
        .optional()?;
    let counts = counts.unwrap_or_default();
    // `COUNTS` names the columns in the order of `DeliveryState::ALL`.
    Ok(DeliveryState::ALL.iter().copied().zip(counts).collect())
}

pub(super) fn attempts(conn: &Connection, row: i64) -> Result<Vec<Attempt>> {
    let mut stmt = conn.prepare_cached(
        "SELECT number, trigger, started_at, duration_ms, url, remote_addr, request_headers, \
         response_status, response_body, outcome, detail FROM attempts WHERE delivery_id = ?1 ORDER BY id",
    )?;
    let rows = stmt.query_map([row], |r| {
        Ok(Attempt {
            number: r.get(0)?,
            trigger: r.get(1)?,
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

/// Starts a new, manual attempt chain for a delivery that is not in flight: due now, or held or
/// cancelled at once if its integration's settings say so ([`gate`]). `false` if it is in flight.
pub(super) fn redeliver(
    conn: &Connection,
    row: i64,
    integration_id: i64,
    now: Timestamp,
) -> Result<bool> {
    let n = conn
        .prepare_cached(
            "UPDATE deliveries SET state = ?3, attempts = 0, chain_trigger = 'manual', next_attempt_at = ?2, \
             lease_until = NULL, updated_at = ?2 WHERE id = ?1 AND state <> 'in_flight'",
        )?
        .execute(params![row, now.millis(), gated_state(conn, integration_id)?])?;
    Ok(n == 1)
}

/// The state a delivery made due now takes under its integration's settings.
fn gated_state(conn: &Connection, integration_id: i64) -> Result<DeliveryState> {
    Ok(match gate(conn, integration_id)? {
        Gate::Send { .. } => DeliveryState::Pending,
        Gate::Hold => DeliveryState::Held,
        Gate::Cancel => DeliveryState::Cancelled,
    })
}

/// Where a bulk redelivery has got to: the `(created_at, id)` of the last delivery it took.
pub type BulkCursor = (Timestamp, i64);

/// The statements of [`redeliver_failed_batch`]: the first batch starts at `from`, the next ones after
/// the cursor.
pub(super) const REDELIVER_FAILED_FIRST: &str = "UPDATE deliveries SET state = :state, attempts = 0, \
     chain_trigger = 'manual', next_attempt_at = :now, lease_until = NULL, updated_at = :now \
     WHERE id IN (SELECT id FROM deliveries INDEXED BY deliveries_failed_by_time \
                  WHERE integration_id = :integration AND state = 'failed' \
                  AND created_at >= :from AND created_at <= :to ORDER BY created_at, id LIMIT :limit) \
     RETURNING created_at, id";
pub(super) const REDELIVER_FAILED_NEXT: &str = "UPDATE deliveries SET state = :state, attempts = 0, \
     chain_trigger = 'manual', next_attempt_at = :now, lease_until = NULL, updated_at = :now \
     WHERE id IN (SELECT id FROM deliveries INDEXED BY deliveries_failed_by_time \
                  WHERE integration_id = :integration AND state = 'failed' \
                  AND (created_at, id) > (:after_at, :after_id) AND created_at <= :to \
                  ORDER BY created_at, id LIMIT :limit) \
     RETURNING created_at, id";

/// One batch of a bulk redelivery: starts a manual chain for up to `limit` failed deliveries of the
/// integration created in `[from, to]` and after `after` (the previous batch's cursor), oldest first,
/// walking `deliveries_failed_by_time`. They become due now, or held if the integration cannot be
/// delivered to. Returns how many and the cursor of the last one. The cursor only moves forward, so
/// a redelivered delivery that fails again before the walk ends is not taken a second time.
pub(super) fn redeliver_failed_batch(
    conn: &Connection,
    integration_id: i64,
    (from, to): (Timestamp, Timestamp),
    after: Option<BulkCursor>,
    now: Timestamp,
    limit: u32,
) -> Result<(usize, Option<BulkCursor>)> {
    let state = gated_state(conn, integration_id)?;
    let sql = if after.is_none() {
        REDELIVER_FAILED_FIRST
    } else {
        REDELIVER_FAILED_NEXT
    };
    let mut stmt = conn.prepare_cached(sql)?;
    let (after_at, after_id) = after.map_or((0, 0), |(at, id)| (at.millis(), id));
    let (now, from, to) = (now.millis(), from.millis(), to.millis());
    let mut bound: Vec<(&str, &dyn rusqlite::ToSql)> = vec![
        (":state", &state),
        (":now", &now),
        (":integration", &integration_id),
        (":to", &to),
        (":limit", &limit),
    ];
    match after {
        None => bound.push((":from", &from)),
        Some(_) => {
            bound.push((":after_at", &after_at));
            bound.push((":after_id", &after_id));
        }
    }
    let taken = stmt
        .query_map(bound.as_slice(), |r| {
            Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?))
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    let last = taken.iter().max().map(|&(at, id)| (Timestamp(at), id));
    Ok((taken.len(), last.or(after)))
}

/// A delivery with its attempts, oldest first.
pub struct DeliveryView {
    pub delivery: DeliveryRow,
    pub attempts: Vec<Attempt>,
}

fn view(conn: &Connection, delivery_id: &str) -> Result<Option<DeliveryView>> {
    let Some(delivery) = get(conn, delivery_id)? else {
        return Ok(None);
    };
    let attempts = attempts(conn, delivery.row)?;
    Ok(Some(DeliveryView { delivery, attempts }))
}

/// The dispatcher's bounds on one claim: how many may start in all (`budget`) and per integration,
/// and how long a claim's lease runs.
#[derive(Debug, Clone, Copy)]
pub struct ClaimLimits {
    pub budget: usize,
    pub per_integration: usize,
    pub lease: Duration,
}

/// The attempts running in this process per integration: the claim counts what it starts in, the
/// dispatcher counts down as each HTTP exchange ends.
pub type Busy = Arc<Mutex<HashMap<i64, usize>>>;

/// What a redelivery found.
pub enum Redelivered {
    NoSuchDelivery,
    /// Its integration's row is gone (it cannot be, while the delivery is there; kept for honesty).
    NoSuchIntegration,
    /// It is being attempted right now.
    InFlight,
    Done(DeliveryView),
}

/// What a request for a test webhook found.
pub enum TestQueued {
    NoSuchIntegration,
    NoCallbackUrl,
    Queued(DeliveryView),
}

/// Where one batch of a bulk redelivery left it.
pub struct BulkBatch {
    pub taken: usize,
    pub after: Option<BulkCursor>,
    /// The audit entry written with the first batch and completed with the last.
    pub entry: i64,
}

/// One tick's claims, within the global budget and each integration's free slots.
struct Claims {
    out: Vec<Claimed>,
    budget: usize,
    per_limit: usize,
    now: Timestamp,
    lease_until: Timestamp,
}

impl Claims {
    /// How many more of `integration`'s deliveries may start now.
    fn room(&self, counts: &HashMap<i64, usize>, integration: i64) -> usize {
        let busy = counts.get(&integration).copied().unwrap_or(0);
        self.per_limit
            .saturating_sub(busy)
            .min(self.budget.saturating_sub(self.out.len()))
    }

    /// Claims `rows` of `integration` as far as there is room, after asking its settings: deliveries of
    /// an integration that may not be sent to now are set aside instead (`held`, or `cancelled` when
    /// it was deleted).
    fn take(
        &mut self,
        c: &Connection,
        counts: &mut HashMap<i64, usize>,
        integration: i64,
        rows: &[i64],
    ) -> Result<()> {
        if rows.is_empty() || self.room(counts, integration) == 0 {
            return Ok(());
        }
        match gate(c, integration)? {
            Gate::Cancel => rows
                .iter()
                .try_for_each(|&row| set_aside(c, row, DeliveryState::Cancelled, self.now)),
            Gate::Hold => rows
                .iter()
                .try_for_each(|&row| set_aside(c, row, DeliveryState::Held, self.now)),
            Gate::Send {
                url,
                secret,
                client_cert,
            } => {
                for &row in rows {
                    if self.room(counts, integration) == 0 {
                        break;
                    }
                    let claim = claim(
                        c,
                        row,
                        self.now,
                        self.lease_until,
                        url.clone(),
                        secret.clone(),
                        client_cert.clone(),
                    )?;
                    if let Some(claim) = claim {
                        *counts.entry(integration).or_insert(0) += 1;
                        self.out.push(claim);
                    }
                }
                Ok(())
            }
        }
    }
}

/// The delivery queue and its history as the dispatcher and the services use them; each operation
/// is one transaction.
impl Store {
    /// At start, under the serve lock: deliveries left `in_flight` by a process that died mid-attempt
    /// are due again now (see [`recover_interrupted`]). On PostgreSQL none: other nodes may be
    /// attempting the deliveries in flight, and those of a node that died are taken again when their
    /// lease runs out (`claim_due_deliveries`), whichever node claims them.
    pub async fn recover_interrupted_deliveries(&self) -> Result<usize> {
        match self.backend() {
            Backend::Sqlite(s) => s.write(|c| recover_interrupted(c, Timestamp::now())).await,
            Backend::Postgres(_) => Ok(0),
        }
    }

    /// Claims due deliveries — in flight with an expired lease first, then each integration's queue,
    /// the one waiting longest first — as far as `limits` and each integration's free slots allow,
    /// setting aside those of integrations that may not be sent to now.
    ///
    /// The claim does not wait for its own batch's sync, only for the batches before it (so it never
    /// sees a delivery that is not yet on disk): a claim lost to a crash leaves the delivery due, so
    /// it is sent again (at least once), and waiting for its own sync doubled the time each slot
    /// spends per delivery (claim commit + attempt commit).
    pub async fn claim_due_deliveries(
        &self,
        limits: ClaimLimits,
        busy: Busy,
    ) -> Result<Vec<Claimed>> {
        let s = match self.backend() {
            Backend::Sqlite(s) => s,
            Backend::Postgres(p) => return p.claim_due_deliveries(limits, busy).await,
        };
        s.write_uncommitted(move |c| {
            let now = Timestamp::now();
            let lease_until = Timestamp(now.millis() + limits.lease.as_millis() as i64);
            let mut counts = busy.lock().expect("counts lock");
            let mut claims = Claims {
                out: Vec::new(),
                budget: limits.budget,
                per_limit: limits.per_integration,
                now,
                lease_until,
            };
            for (row, integration) in expired_leases(c, now, limits.budget)? {
                claims.take(c, &mut counts, integration, &[row])?;
            }
            let mut queues = pending_integrations(c)?;
            queues.retain(|&(_, first)| first <= now);
            queues.sort_by_key(|&(integration, first)| (first, integration));
            for (integration, _) in queues {
                let room = claims.room(&counts, integration);
                if room == 0 {
                    continue;
                }
                let rows = due_of(c, integration, now, room)?;
                claims.take(c, &mut counts, integration, &rows)?;
            }
            Ok(claims.out)
        })
        .await
    }

    /// Stores an attempt and moves its delivery on, in one transaction (see [`record_attempt`]).
    /// On PostgreSQL the delivery is moved only while the claim's lease
    /// ([`Claimed::lease_until`]) still holds.
    pub async fn record_attempt(
        &self,
        claim: &Claimed,
        attempt: Attempt,
        next: Next,
    ) -> Result<()> {
        match self.backend() {
            Backend::Sqlite(s) => {
                let row = claim.row;
                s.write(move |c| record_attempt(c, row, &attempt, &next, Timestamp::now()))
                    .await
            }
            Backend::Postgres(p) => p.record_attempt(claim, attempt, next).await,
        }
    }

    /// When the dispatcher must look again (see [`next_wake`]).
    pub async fn next_delivery_wake(&self) -> Result<Option<Timestamp>> {
        match self.backend() {
            Backend::Sqlite(s) => s.read(next_wake).await,
            Backend::Postgres(p) => p.next_delivery_wake().await,
        }
    }

    /// The unfinished part of the queue, for `/metrics`.
    pub async fn queue_stats(&self, now: Timestamp) -> Result<QueueStats> {
        match self.backend() {
            Backend::Sqlite(s) => s.read(move |c| queue_stats(c, now)).await,
            Backend::Postgres(p) => p.queue_stats(now).await,
        }
    }

    /// One batch of pruning (see [`prune_attempts`]).
    /// On PostgreSQL, one node at a time: a node that finds another pruning gets 0.
    pub async fn prune_attempts(&self, before: Timestamp, batch: u32) -> Result<usize> {
        match self.backend() {
            Backend::Sqlite(s) => s.write(move |c| prune_attempts(c, before, batch)).await,
            Backend::Postgres(p) => p.prune_attempts(before, batch).await,
        }
    }

    /// Integrations whose deliveries may be out of line with their settings.
    pub async fn unsettled_integrations(&self) -> Result<Vec<i64>> {
        match self.backend() {
            Backend::Sqlite(s) => s.read(unsettled_candidates).await,
            Backend::Postgres(p) => p.unsettled_integrations().await,
        }
    }

    /// One paced batch of settling an integration's deliveries (see [`settle_batch`],
    /// [`Store::write_batch`]); returns how many changed state.
    pub async fn settle_deliveries(&self, integration_id: i64) -> Result<usize> {
        match self.backend() {
            Backend::Sqlite(s) => {
                s.write_batch(move |c| settle_batch(c, integration_id, Timestamp::now(), BATCH))
                    .await
            }
            Backend::Postgres(p) => p.settle_deliveries(integration_id).await,
        }
    }

    /// A page of an integration's history (deleted integrations included); `None` when there is no
    /// such integration.
    pub async fn deliveries(
        &self,
        app_id: &str,
        state: Option<DeliveryState>,
        outcome: Option<AttemptOutcome>,
        before: Option<i64>,
        limit: u32,
    ) -> Result<Option<Vec<DeliveryRow>>> {
        let s = match self.backend() {
            Backend::Sqlite(s) => s,
            Backend::Postgres(p) => {
                return p.deliveries(app_id, state, outcome, before, limit).await;
            }
        };
        let app = app_id.to_string();
        s.read(move |c| {
            let Some(id) = integrations::any_id(c, &app)? else {
                return Ok(None);
            };
            Ok(Some(list(c, id, state, outcome, before, limit)?))
        })
        .await
    }

    pub async fn delivery(&self, delivery_id: &str) -> Result<Option<DeliveryView>> {
        let s = match self.backend() {
            Backend::Sqlite(s) => s,
            Backend::Postgres(p) => return p.delivery(delivery_id).await,
        };
        let id = delivery_id.to_string();
        s.read(move |c| view(c, &id)).await
    }

    /// The deliveries of one clickwrap event, oldest first.
    pub async fn event_deliveries(&self, event_id: &str) -> Result<Vec<DeliveryRow>> {
        let s = match self.backend() {
            Backend::Sqlite(s) => s,
            Backend::Postgres(p) => return p.event_deliveries(event_id).await,
        };
        let id = event_id.to_string();
        s.read(move |c| for_event(c, &id)).await
    }

    /// How many of an integration's deliveries are in each state; `None` when there is no such
    /// integration.
    pub async fn delivery_counts(&self, app_id: &str) -> Result<Option<Vec<(DeliveryState, i64)>>> {
        let s = match self.backend() {
            Backend::Sqlite(s) => s,
            Backend::Postgres(p) => return p.delivery_counts(app_id).await,
        };
        let app = app_id.to_string();
        s.read(move |c| {
            let Some(id) = integrations::any_id(c, &app)? else {
                return Ok(None);
            };
            Ok(Some(count_by_state(c, id)?))
        })
        .await
    }

    /// Starts a new, manual attempt chain for a delivery that is not in flight (see [`redeliver`]).
    pub async fn redeliver(&self, delivery_id: &str, audit: Audit) -> Result<Redelivered> {
        let s = match self.backend() {
            Backend::Sqlite(s) => s,
            Backend::Postgres(p) => return p.redeliver(delivery_id, audit).await,
        };
        let id = delivery_id.to_string();
        s.write(move |c| {
            let now = Timestamp::now();
            let Some(d) = get(c, &id)? else {
                return Ok(Redelivered::NoSuchDelivery);
            };
            let Some(integration) = integrations::any_id(c, &d.app_id)? else {
                return Ok(Redelivered::NoSuchIntegration);
            };
            if !redeliver(c, d.row, integration, now)? {
                return Ok(Redelivered::InFlight);
            }
            audit.target(&id).write(c, now)?;
            Ok(view(c, &id)?.map_or(Redelivered::NoSuchDelivery, Redelivered::Done))
        })
        .await
    }

    /// Queues a test delivery of `payload` (made from the time it is queued) to the live
    /// integration's callback URL, held if it may not be sent now; the audit entry's detail is the new
    /// delivery's id.
    pub async fn queue_test_webhook(
        &self,
        app_id: &str,
        payload: impl FnOnce(Timestamp) -> Vec<u8> + Send + 'static,
        audit: Audit,
    ) -> Result<TestQueued> {
        let s = match self.backend() {
            Backend::Sqlite(s) => s,
            Backend::Postgres(p) => return p.queue_test_webhook(app_id, payload, audit).await,
        };
        let app = app_id.to_string();
        s.write(move |c| {
            let now = Timestamp::now();
            let Some(id) = integrations::any_id(c, &app)? else {
                return Ok(TestQueued::NoSuchIntegration);
            };
            let Some(target) = integrations::webhook_target(c, id)?.filter(|t| !t.deleted) else {
                return Ok(TestQueued::NoSuchIntegration);
            };
            if target.callback_url.is_none() {
                return Ok(TestQueued::NoCallbackUrl);
            }
            let delivery_id = new_delivery_id();
            insert(
                c,
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
            )?;
            audit.detail(&delivery_id).write(c, now)?;
            Ok(view(c, &delivery_id)?.map_or(TestQueued::NoSuchIntegration, TestQueued::Queued))
        })
        .await
    }

    /// One paced batch of a bulk redelivery of the live integration's failed deliveries created in
    /// `range`, after `after` (see [`redeliver_failed_batch`]). The first batch (`entry` none) writes
    /// `audit` with `in_progress` as its detail; the last one (fewer than [`BATCH`]) replaces it with
    /// `done(total)`. `None` when the integration is gone (deleted meanwhile).
    #[allow(clippy::too_many_arguments)]
    pub async fn redeliver_failed_batch(
        &self,
        app_id: &str,
        range: (Timestamp, Timestamp),
        after: Option<BulkCursor>,
        entry: Option<i64>,
        audit: Audit,
        done: impl FnOnce(usize) -> String + Send + 'static,
        total_before: usize,
    ) -> Result<Option<BulkBatch>> {
        let s = match self.backend() {
            Backend::Sqlite(s) => s,
            Backend::Postgres(p) => {
                return p
                    .redeliver_failed_batch(app_id, range, after, entry, audit, done, total_before)
                    .await;
            }
        };
        let app = app_id.to_string();
        s.write_batch(move |c| {
            let now = Timestamp::now();
            let Some(id) = integrations::live_id(c, &app)? else {
                return Ok(None);
            };
            let (taken, after) = redeliver_failed_batch(c, id, range, after, now, BATCH)?;
            let entry = match entry {
                Some(entry) => entry,
                None => audit.write(c, now)?,
            };
            if taken < BATCH as usize {
                audit::set_detail(c, entry, &done(total_before + taken))?;
            }
            Ok(Some(BulkBatch {
                taken,
                after,
                entry,
            }))
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn database() -> (tempfile::TempDir, Connection) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("deliveries.db");
        let mut conn = Connection::open(&path).unwrap();
        super::super::migrate::migrate(&mut conn, &path).unwrap();
        conn.execute_batch(
            "INSERT INTO integrations (id, app_id, name, app_key_digest, signing_secret, status, callback_url,
                 webhook_delivery_enabled, created_at)
             VALUES (1, 'a1', 'A', x'00', 's', 'ENABLED', 'https://a.test/', 1, 0),
                    (2, 'a2', 'B', x'00', 's', 'ENABLED', 'https://b.test/', 1, 0);",
        )
        .unwrap();
        (dir, conn)
    }

    fn add(conn: &Connection, integration: i64, held: bool, at: i64) -> i64 {
        insert(
            conn,
            &NewDelivery {
                delivery_id: &new_delivery_id(),
                integration_id: integration,
                event_row: None,
                is_test: true,
                event_type: EventType::ClickwrapEventVerified,
                payload: b"{}",
                held,
                at: Timestamp(at),
            },
        )
        .unwrap()
    }

    fn set_delivery(conn: &Connection, integration: i64, on: bool) {
        conn.execute(
            "UPDATE integrations SET webhook_delivery_enabled = ?2 WHERE id = ?1",
            params![integration, on],
        )
        .unwrap();
    }

    fn states(conn: &Connection, ids: &[i64]) -> Vec<String> {
        ids.iter()
            .map(|id| {
                conn.query_row("SELECT state FROM deliveries WHERE id = ?1", [id], |r| {
                    r.get(0)
                })
                .unwrap()
            })
            .collect()
    }

    /// The counts the triggers keep, against counting the rows.
    fn assert_counts_true(conn: &Connection, after: &str) {
        for integration in [1, 2] {
            let kept = count_by_state(conn, integration).unwrap();
            let counted: Vec<(DeliveryState, i64)> = DeliveryState::ALL
                .iter()
                .map(|&s| {
                    let n = conn
                        .query_row(
                            "SELECT count(*) FROM deliveries WHERE integration_id = ?1 AND state = ?2",
                            params![integration, s],
                            |r| r.get(0),
                        )
                        .unwrap();
                    (s, n)
                })
                .collect();
            assert_eq!(kept, counted, "integration {integration} after {after}");
        }
    }

    fn attempt(outcome: AttemptOutcome) -> Attempt {
        Attempt {
            number: 1,
            trigger: Trigger::Automatic,
            started_at: Timestamp(0),
            duration_ms: 1,
            url: "https://a.test/".into(),
            remote_addr: None,
            request_headers: "{}".into(),
            response_status: None,
            response_body: Vec::new(),
            outcome,
            detail: None,
        }
    }

    /// Every way a delivery's state changes, in a long pseudo-random sequence: after each step the
    /// counts the triggers keep equal the rows counted.
    #[test]
    fn the_counts_follow_every_insert_and_state_change() {
        let (_dir, conn) = database();
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = move |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        let mut rows: Vec<i64> = Vec::new();
        let mut seen = std::collections::BTreeSet::new();
        for step in 0..3_000 {
            let now = Timestamp(step);
            let integration = 1 + next(2) as i64;
            let pick = |rows: &[i64], k: u64| rows.get(k as usize % rows.len().max(1)).copied();
            let row = pick(&rows, next(1 << 20));
            let what = match next(12) {
                0 | 1 => {
                    rows.push(add(&conn, integration, next(3) == 0, step));
                    "insert"
                }
                2 => {
                    if let Some(row) = row {
                        claim(
                            &conn,
                            row,
                            now,
                            Timestamp(step + 5),
                            String::new(),
                            String::new(),
                            None,
                        )
                        .unwrap();
                    }
                    "claim"
                }
                3 => {
                    if let Some(row) = row {
                        let next_state = match next(3) {
                            0 => Next::Succeeded,
                            1 => Next::Retry(Timestamp(step + 1)),
                            _ => Next::Failed,
                        };
                        let outcome = if matches!(next_state, Next::Succeeded) {
                            AttemptOutcome::Ok
                        } else {
                            AttemptOutcome::Timeout
                        };
                        claim(
                            &conn,
                            row,
                            now,
                            Timestamp(step + 5),
                            String::new(),
                            String::new(),
                            None,
                        )
                        .unwrap();
                        record_attempt(&conn, row, &attempt(outcome), &next_state, now).unwrap();
                    }
                    "attempt"
                }
                4 => {
                    if let Some(row) = row {
                        set_aside(
                            &conn,
                            row,
                            if next(2) == 0 {
                                DeliveryState::Held
                            } else {
                                DeliveryState::Cancelled
                            },
                            now,
                        )
                        .unwrap();
                    }
                    "set aside"
                }
                5 => {
                    set_delivery(&conn, integration, next(2) == 0);
                    settle_batch(&conn, integration, now, 1 + next(40) as u32).unwrap();
                    "settle"
                }
                6 => {
                    if let Some(row) = row {
                        let owner = conn
                            .query_row(
                                "SELECT integration_id FROM deliveries WHERE id = ?1",
                                [row],
                                |r| r.get(0),
                            )
                            .unwrap();
                        redeliver(&conn, row, owner, now).unwrap();
                    }
                    "redeliver"
                }
                7 => {
                    let from = Timestamp(next(3_000) as i64);
                    redeliver_failed_batch(
                        &conn,
                        integration,
                        (from, Timestamp(3_000)),
                        None,
                        now,
                        7,
                    )
                    .unwrap();
                    "bulk redeliver"
                }
                8 => {
                    recover_interrupted(&conn, now).unwrap();
                    "recover"
                }
                9 => {
                    if let Some(row) = row
                        && next(10) == 0
                    {
                        conn.execute("DELETE FROM attempts WHERE delivery_id = ?1", [row])
                            .unwrap();
                        conn.execute("DELETE FROM deliveries WHERE id = ?1", [row])
                            .unwrap();
                        rows.retain(|&r| r != row);
                    }
                    "delete"
                }
                10 => {
                    conn.execute(
                        "UPDATE integrations SET deleted_at = ?2 WHERE id = ?1 AND ?2 % 7 = 0",
                        params![integration, step],
                    )
                    .unwrap();
                    settle_batch(&conn, integration, now, 50).unwrap();
                    conn.execute("UPDATE integrations SET deleted_at = NULL", [])
                        .unwrap();
                    "delete integration"
                }
                _ => {
                    if let Some(row) = row {
                        // A state "change" to the same state, and a change of another column.
                        conn.execute(
                            "UPDATE deliveries SET state = state, updated_at = ?2 WHERE id = ?1",
                            params![row, step],
                        )
                        .unwrap();
                    }
                    "no change"
                }
            };
            assert_counts_true(&conn, &format!("step {step} ({what})"));
            let mut stmt = conn
                .prepare_cached("SELECT DISTINCT state FROM deliveries")
                .unwrap();
            for state in stmt.query_map([], |r| r.get::<_, String>(0)).unwrap() {
                seen.insert(state.unwrap());
            }
        }
        assert_eq!(
            seen.len(),
            DeliveryState::ALL.len(),
            "the sequence reached every state: {seen:?}"
        );
        // And the counts refuse to be fooled by moving a delivery to another integration.
        assert!(
            conn.execute(
                "UPDATE deliveries SET integration_id = 3 - integration_id",
                []
            )
            .is_err()
        );
    }

    /// Releasing a large hold goes in batches, oldest first, each delivery once; a batch after the
    /// integration was paused again holds instead; deleting it cancels both queues.
    #[test]
    fn settling_goes_in_batches_oldest_first_and_follows_a_change_of_mind() {
        let (_dir, conn) = database();
        set_delivery(&conn, 1, false);
        let held: Vec<i64> = (0..1_200).map(|i| add(&conn, 1, true, i)).collect();
        let other = add(&conn, 2, true, 0);
        // Paused: nothing to release, and nothing pending to hold.
        assert_eq!(settle_batch(&conn, 1, Timestamp(10), 500).unwrap(), 0);

        set_delivery(&conn, 1, true);
        assert_eq!(settle_batch(&conn, 1, Timestamp(20), 500).unwrap(), 500);
        let first = states(&conn, &held);
        assert!(
            first[..500].iter().all(|s| s == "pending"),
            "the oldest first"
        );
        assert!(first[500..].iter().all(|s| s == "held"));
        // The next batch takes the next 500, not the ones already released.
        assert_eq!(settle_batch(&conn, 1, Timestamp(30), 500).unwrap(), 500);
        assert!(states(&conn, &held)[..1_000].iter().all(|s| s == "pending"));
        let due: Vec<i64> = conn
            .prepare("SELECT next_attempt_at FROM deliveries WHERE integration_id = 1 AND state = 'pending' ORDER BY id")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        assert!(
            due.windows(2).all(|w| w[0] <= w[1]),
            "due in the order they were held"
        );

        // Paused again before the last batch: the next batch holds, beginning with the oldest.
        set_delivery(&conn, 1, false);
        assert_eq!(settle_batch(&conn, 1, Timestamp(40), 500).unwrap(), 500);
        let now = states(&conn, &held);
        assert!(now[..500].iter().all(|s| s == "held"));
        assert!(now[500..1_000].iter().all(|s| s == "pending"));
        assert_eq!(settle_batch(&conn, 1, Timestamp(50), 500).unwrap(), 500);
        assert_eq!(settle_batch(&conn, 1, Timestamp(60), 500).unwrap(), 0);
        assert!(states(&conn, &held).iter().all(|s| s == "held"));

        // Deleted: pending and held are cancelled, 500 per batch; the other integration is untouched.
        set_delivery(&conn, 1, true);
        assert_eq!(settle_batch(&conn, 1, Timestamp(70), 300).unwrap(), 300);
        conn.execute("UPDATE integrations SET deleted_at = 1 WHERE id = 1", [])
            .unwrap();
        let mut cancelled = 0;
        loop {
            let n = settle_batch(&conn, 1, Timestamp(80), 500).unwrap();
            cancelled += n;
            if n < 500 {
                break;
            }
        }
        assert_eq!(cancelled, 1_200);
        assert!(states(&conn, &held).iter().all(|s| s == "cancelled"));
        assert_eq!(states(&conn, &[other]), ["held"]);
        assert_counts_true(&conn, "settling");
        assert_eq!(unsettled_candidates(&conn).unwrap(), [2]);
    }

    /// A bulk redelivery takes every failed delivery of the range once, in batches, even those that
    /// fail again while it runs; nothing outside the range or of another integration.
    #[test]
    fn bulk_redelivery_takes_each_failed_delivery_of_the_range_once() {
        let (_dir, conn) = database();
        let fail = |integration, at| {
            let row = add(&conn, integration, false, at);
            claim(
                &conn,
                row,
                Timestamp(at),
                Timestamp(at + 5),
                String::new(),
                String::new(),
                None,
            )
            .unwrap();
            record_attempt(
                &conn,
                row,
                &attempt(AttemptOutcome::HttpStatus),
                &Next::Failed,
                Timestamp(at),
            )
            .unwrap();
            row
        };
        let before = fail(1, 999);
        // Created at the same millisecond, several to a millisecond: the cursor is (created_at, id).
        let in_range: Vec<i64> = (0..1_200).map(|i| fail(1, 1_000 + i / 3)).collect();
        let after = fail(1, 2_000);
        let other = fail(2, 1_500);
        let range = (Timestamp(1_000), Timestamp(1_999));

        let (n, cursor) =
            redeliver_failed_batch(&conn, 1, range, None, Timestamp(5_000), 500).unwrap();
        assert_eq!(n, 500);
        // Some of the first batch fail again at once (a receiver that still refuses them).
        for &row in &in_range[..10] {
            claim(
                &conn,
                row,
                Timestamp(5_001),
                Timestamp(5_010),
                String::new(),
                String::new(),
                None,
            )
            .unwrap();
            record_attempt(
                &conn,
                row,
                &attempt(AttemptOutcome::HttpStatus),
                &Next::Failed,
                Timestamp(5_001),
            )
            .unwrap();
        }
        let mut total = n;
        let mut cursor = cursor;
        // Paused before the rest: they are redelivered into the hold.
        set_delivery(&conn, 1, false);
        loop {
            let (n, next) =
                redeliver_failed_batch(&conn, 1, range, cursor, Timestamp(6_000), 500).unwrap();
            total += n;
            cursor = next;
            if n < 500 {
                break;
            }
        }
        assert_eq!(total, 1_200, "each delivery of the range once");
        let now = states(&conn, &in_range);
        assert!(now[..10].iter().all(|s| s == "failed"), "not taken again");
        assert!(now[10..500].iter().all(|s| s == "pending"));
        assert!(now[500..].iter().all(|s| s == "held"));
        assert_eq!(
            states(&conn, &[before, after, other]),
            ["failed", "failed", "failed"]
        );
        let manual: i64 = conn
            .query_row(
                "SELECT count(*) FROM deliveries WHERE chain_trigger = 'manual' AND attempts = 0",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(manual, 1_190);
        assert_counts_true(&conn, "bulk redelivery");
    }
}
