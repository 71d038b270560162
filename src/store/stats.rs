//! The dashboard's health figures and charts (issue #14): the kept aggregates of `schema.sql`
//! (`attempt_hours`, `webhook_health`, `event_days`) and their reads. The aggregates are written in
//! the transaction that records each attempt ([`count_attempt`], called by
//! `deliveries::record_attempt`) and, for events, by the schema's trigger at verify; the reads walk
//! a window of them by primary key or by their time index, in order, and leave the sums to the caller,
//! so no read groups or sorts and none touches `attempts`, `deliveries` or `events`.

use rusqlite::{Connection, params};

use super::deliveries::Attempt;
use super::{Backend, Result, Store};
use crate::model::{Action, AttemptOutcome, Timestamp};

pub const HOUR_MS: i64 = 3_600_000;
pub const DAY_MS: i64 = 86_400_000;

/// Adds one recorded attempt of delivery `row` to its integration's hour and, success or failure, to
/// its latest-of. `gave_up`: the delivery failed for good with it. Two upserts of small rows that the
/// same hour's attempts share (a page or two per write batch).
pub(super) fn count_attempt(conn: &Connection, row: i64, a: &Attempt, gave_up: bool) -> Result<()> {
    let hour = a.started_at.millis() - a.started_at.millis().rem_euclid(HOUR_MS);
    conn.prepare_cached(
        "INSERT INTO attempt_hours (integration_id, hour, outcome, attempts, gave_up, duration_ms, max_duration_ms) \
         SELECT integration_id, ?2, ?3, 1, ?4, ?5, ?5 FROM deliveries WHERE id = ?1 \
         ON CONFLICT (integration_id, hour, outcome) DO UPDATE SET attempts = attempts + 1, \
         gave_up = gave_up + excluded.gave_up, duration_ms = duration_ms + excluded.duration_ms, \
         max_duration_ms = max(max_duration_ms, excluded.max_duration_ms)",
    )?
    .execute(params![row, hour, a.outcome, gave_up, a.duration_ms])?;
    if a.outcome.is_success() {
        conn.prepare_cached(
            "INSERT INTO webhook_health (integration_id, last_success_at) \
             SELECT integration_id, ?2 FROM deliveries WHERE id = ?1 \
             ON CONFLICT (integration_id) DO UPDATE SET \
             last_success_at = max(coalesce(last_success_at, 0), excluded.last_success_at)",
        )?
        .execute(params![row, a.started_at.millis()])?;
    } else {
        conn.prepare_cached(
            "INSERT INTO webhook_health (integration_id, last_failure_at, failure_delivery, failure_outcome, \
             failure_status, failure_detail) \
             SELECT integration_id, ?2, ?1, ?3, ?4, ?5 FROM deliveries WHERE id = ?1 \
             ON CONFLICT (integration_id) DO UPDATE SET last_failure_at = excluded.last_failure_at, \
             failure_delivery = excluded.failure_delivery, failure_outcome = excluded.failure_outcome, \
             failure_status = excluded.failure_status, failure_detail = excluded.failure_detail \
             WHERE excluded.last_failure_at >= coalesce(last_failure_at, 0)",
        )?
        .execute(params![
            row,
            a.started_at.millis(),
            a.outcome,
            a.response_status,
            a.detail
        ])?;
    }
    Ok(())
}

/// One integration's attempts of one outcome in one hour.
#[derive(Debug, Clone, PartialEq)]
pub struct HourRow {
    pub integration_id: i64,
    pub hour: Timestamp,
    pub outcome: AttemptOutcome,
    pub attempts: i64,
    pub gave_up: i64,
    pub duration_ms: i64,
    pub max_duration_ms: i64,
}

const HOUR_COLUMNS: &str =
    "integration_id, hour, outcome, attempts, gave_up, duration_ms, max_duration_ms";

/// Every integration's hours in `[?1, ?2)`, by hour: a range of `attempt_hours_by_hour`.
pub(super) fn hours_all_sql() -> String {
    format!(
        "SELECT {HOUR_COLUMNS} FROM attempt_hours INDEXED BY attempt_hours_by_hour \
         WHERE hour >= ?1 AND hour < ?2 ORDER BY hour"
    )
}

/// One integration's (`?3`) hours in `[?1, ?2)`, by hour: a range of the primary key.
pub(super) fn hours_of_sql() -> String {
    format!(
        "SELECT {HOUR_COLUMNS} FROM attempt_hours \
         WHERE integration_id = ?3 AND hour >= ?1 AND hour < ?2 ORDER BY hour"
    )
}

/// The hours in `window` (start inclusive, end exclusive), of one integration or all, in hour order.
pub(super) fn hours(
    conn: &Connection,
    window: (Timestamp, Timestamp),
    integration_id: Option<i64>,
) -> Result<Vec<HourRow>> {
    let read = |r: &rusqlite::Row<'_>| {
        Ok(HourRow {
            integration_id: r.get(0)?,
            hour: Timestamp(r.get(1)?),
            outcome: r.get(2)?,
            attempts: r.get(3)?,
            gave_up: r.get(4)?,
            duration_ms: r.get(5)?,
            max_duration_ms: r.get(6)?,
        })
    };
    let (from, to) = (window.0.millis(), window.1.millis());
    let rows = match integration_id {
        None => conn
            .prepare_cached(&hours_all_sql())?
            .query_map(params![from, to], read)?
            .collect::<rusqlite::Result<Vec<_>>>()?,
        Some(id) => conn
            .prepare_cached(&hours_of_sql())?
            .query_map(params![from, to, id], read)?
            .collect::<rusqlite::Result<Vec<_>>>()?,
    };
    Ok(rows)
}

/// One integration's verified events of one action on one day.
#[derive(Debug, Clone, PartialEq)]
pub struct DayRow {
    pub integration_id: i64,
    pub day: Timestamp,
    pub action: Action,
    pub events: i64,
}

pub(super) const DAYS_ALL: &str = "SELECT integration_id, day, action, events \
     FROM event_days INDEXED BY event_days_by_day WHERE day >= ?1 AND day < ?2 ORDER BY day";
pub(super) const DAYS_OF: &str = "SELECT integration_id, day, action, events \
     FROM event_days WHERE integration_id = ?3 AND day >= ?1 AND day < ?2 ORDER BY day";

/// The days in `window`, of one integration or all, in day order.
pub(super) fn days(
    conn: &Connection,
    window: (Timestamp, Timestamp),
    integration_id: Option<i64>,
) -> Result<Vec<DayRow>> {
    let read = |r: &rusqlite::Row<'_>| {
        Ok(DayRow {
            integration_id: r.get(0)?,
            day: Timestamp(r.get(1)?),
            action: r.get(2)?,
            events: r.get(3)?,
        })
    };
    let (from, to) = (window.0.millis(), window.1.millis());
    let rows = match integration_id {
        None => conn
            .prepare_cached(DAYS_ALL)?
            .query_map(params![from, to], read)?
            .collect::<rusqlite::Result<Vec<_>>>()?,
        Some(id) => conn
            .prepare_cached(DAYS_OF)?
            .query_map(params![from, to, id], read)?
            .collect::<rusqlite::Result<Vec<_>>>()?,
    };
    Ok(rows)
}

/// An integration's latest failed attempt: when, how, and of which delivery (its public id).
#[derive(Debug, Clone, PartialEq)]
pub struct Failure {
    pub at: Timestamp,
    pub delivery_id: Option<String>,
    pub outcome: AttemptOutcome,
    pub response_status: Option<u16>,
    pub detail: Option<String>,
}

/// What the overview knows of one live integration: its names, its latest success and failure, and
/// its queue (counts kept in `delivery_counts`, the oldest due time from `deliveries_pending`).
#[derive(Debug, Clone)]
pub struct Health {
    pub integration_id: i64,
    pub app_id: String,
    pub name: String,
    pub last_success_at: Option<Timestamp>,
    pub last_failure: Option<Failure>,
    pub pending: i64,
    pub in_flight: i64,
    pub held: i64,
    pub oldest_due_at: Option<Timestamp>,
}

/// One row per live integration (few, unlike what they deliver); each of its lookups is by primary
/// key or the first entry of its `deliveries_pending` part.
pub(super) const HEALTH: &str = "SELECT i.id, i.app_id, i.name, h.last_success_at, h.last_failure_at, \
     (SELECT delivery_id FROM deliveries WHERE id = h.failure_delivery), h.failure_outcome, h.failure_status, \
     h.failure_detail, coalesce(c.pending, 0), coalesce(c.in_flight, 0), coalesce(c.held, 0), \
     (SELECT min(next_attempt_at) FROM deliveries INDEXED BY deliveries_pending \
      WHERE state = 'pending' AND integration_id = i.id) \
     FROM integrations i LEFT JOIN webhook_health h ON h.integration_id = i.id \
     LEFT JOIN delivery_counts c ON c.integration_id = i.id \
     WHERE i.deleted_at IS NULL ORDER BY i.id";

pub(super) fn health(conn: &Connection) -> Result<Vec<Health>> {
    let mut stmt = conn.prepare_cached(HEALTH)?;
    let rows = stmt.query_map([], |r| {
        let failure_at: Option<i64> = r.get(4)?;
        let outcome: Option<AttemptOutcome> = r.get(6)?;
        Ok(Health {
            integration_id: r.get(0)?,
            app_id: r.get(1)?,
            name: r.get(2)?,
            last_success_at: r.get::<_, Option<i64>>(3)?.map(Timestamp),
            last_failure: match (failure_at, outcome) {
                (Some(at), Some(outcome)) => Some(Failure {
                    at: Timestamp(at),
                    delivery_id: r.get(5)?,
                    outcome,
                    response_status: r.get(7)?,
                    detail: r.get(8)?,
                }),
                _ => None,
            },
            pending: r.get(9)?,
            in_flight: r.get(10)?,
            held: r.get(11)?,
            oldest_due_at: r.get::<_, Option<i64>>(12)?.map(Timestamp),
        })
    })?;
    Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
}

/// An integration filter by App ID, deleted ones included (their history stays): `Err(())` when
/// no integration has it.
fn integration_of(
    c: &Connection,
    app_id: Option<&str>,
) -> Result<std::result::Result<Option<i64>, ()>> {
    Ok(match app_id {
        None => Ok(None),
        Some(app) => super::integrations::any_id(c, app)?.map(Some).ok_or(()),
    })
}

/// The dashboard's aggregates as `health.rs` sums them.
impl Store {
    /// The attempt hours of `range` of every integration, and each live integration's health row.
    pub async fn health_facts(
        &self,
        range: (Timestamp, Timestamp),
    ) -> Result<(Vec<HourRow>, Vec<Health>)> {
        match self.backend() {
            Backend::Sqlite(s) => {
                s.read(move |c| Ok((hours(c, range, None)?, health(c)?)))
                    .await
            }
            Backend::Postgres(p) => p.health_facts(range).await,
        }
    }

    /// The attempt hours of `range`, of one integration or all; `None` when `app_id` names none.
    pub async fn attempt_hours(
        &self,
        range: (Timestamp, Timestamp),
        app_id: Option<String>,
    ) -> Result<Option<Vec<HourRow>>> {
        match self.backend() {
            Backend::Sqlite(s) => {
                s.read(move |c| match integration_of(c, app_id.as_deref())? {
                    Ok(id) => Ok(Some(hours(c, range, id)?)),
                    Err(()) => Ok(None),
                })
                .await
            }
            Backend::Postgres(p) => p.attempt_hours(range, app_id.as_deref()).await,
        }
    }

    /// The verified-event days of `range`, of one integration or all; `None` when `app_id` names none.
    pub async fn event_days(
        &self,
        range: (Timestamp, Timestamp),
        app_id: Option<String>,
    ) -> Result<Option<Vec<DayRow>>> {
        match self.backend() {
            Backend::Sqlite(s) => {
                s.read(move |c| match integration_of(c, app_id.as_deref())? {
                    Ok(id) => Ok(Some(days(c, range, id)?)),
                    Err(()) => Ok(None),
                })
                .await
            }
            Backend::Postgres(p) => p.event_days(range, app_id.as_deref()).await,
        }
    }
}
