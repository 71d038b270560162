//! PostgreSQL: the operations of `store::stats` — the kept aggregates, written in the attempt's own
//! transaction ([`count_attempt`]) and read by window in order.

use deadpool_postgres::{GenericClient, Transaction};
use tokio_postgres::Row;

use super::Postgres;
use super::deliveries::word;
use crate::model::{Action, AttemptOutcome, Timestamp};
use crate::store::Result;
use crate::store::deliveries::Attempt;
use crate::store::stats::{DayRow, Failure, HOUR_MS, Health, HourRow};

/// Adds one recorded attempt of delivery `row` to its integration's hour and latest-of, in `tx`
/// (see `store::stats::count_attempt`).
pub(crate) async fn count_attempt(
    tx: &Transaction<'_>,
    row: i64,
    a: &Attempt,
    gave_up: bool,
) -> Result<()> {
    let hour = a.started_at.millis() - a.started_at.millis().rem_euclid(HOUR_MS);
    let stmt = tx
        .prepare_cached(
            "INSERT INTO attempt_hours AS h (integration_id, hour, outcome, attempts, gave_up, \
             duration_ms, max_duration_ms) \
             SELECT integration_id, $2, $3, 1, $4, $5, $5 FROM deliveries WHERE id = $1 \
             ON CONFLICT (integration_id, hour, outcome) DO UPDATE SET attempts = h.attempts + 1, \
             gave_up = h.gave_up + excluded.gave_up, duration_ms = h.duration_ms + excluded.duration_ms, \
             max_duration_ms = greatest(h.max_duration_ms, excluded.max_duration_ms)",
        )
        .await?;
    tx.execute(
        &stmt,
        &[
            &row,
            &hour,
            &a.outcome.as_str(),
            &i64::from(gave_up),
            &a.duration_ms,
        ],
    )
    .await?;
    if a.outcome.is_success() {
        let stmt = tx
            .prepare_cached(
                "INSERT INTO webhook_health AS h (integration_id, last_success_at) \
                 SELECT integration_id, $2 FROM deliveries WHERE id = $1 \
                 ON CONFLICT (integration_id) DO UPDATE SET \
                 last_success_at = greatest(coalesce(h.last_success_at, 0), excluded.last_success_at)",
            )
            .await?;
        tx.execute(&stmt, &[&row, &a.started_at.millis()]).await?;
    } else {
        let stmt = tx
            .prepare_cached(
                "INSERT INTO webhook_health AS h (integration_id, last_failure_at, failure_delivery, \
                 failure_outcome, failure_status, failure_detail) \
                 SELECT integration_id, $2, $1, $3, $4, $5 FROM deliveries WHERE id = $1 \
                 ON CONFLICT (integration_id) DO UPDATE SET last_failure_at = excluded.last_failure_at, \
                 failure_delivery = excluded.failure_delivery, failure_outcome = excluded.failure_outcome, \
                 failure_status = excluded.failure_status, failure_detail = excluded.failure_detail \
                 WHERE excluded.last_failure_at >= coalesce(h.last_failure_at, 0)",
            )
            .await?;
        tx.execute(
            &stmt,
            &[
                &row,
                &a.started_at.millis(),
                &a.outcome.as_str(),
                &a.response_status.map(i64::from),
                &a.detail,
            ],
        )
        .await?;
    }
    Ok(())
}

fn hour_from_row(r: &Row) -> Result<HourRow> {
    Ok(HourRow {
        integration_id: r.get(0),
        hour: Timestamp(r.get(1)),
        outcome: word(r.get::<_, &str>(2), AttemptOutcome::parse)?,
        attempts: r.get(3),
        gave_up: r.get(4),
        duration_ms: r.get(5),
        max_duration_ms: r.get(6),
    })
}

/// The hours in `window` (start inclusive, end exclusive), of one integration (by primary key) or
/// all (by `attempt_hours_by_hour`), in hour order.
async fn hours(
    c: &impl GenericClient,
    (from, to): (Timestamp, Timestamp),
    integration_id: Option<i64>,
) -> Result<Vec<HourRow>> {
    const COLUMNS: &str = "SELECT integration_id, hour, outcome, attempts, gave_up, duration_ms, max_duration_ms \
         FROM attempt_hours WHERE hour >= $1 AND hour < $2";
    let rows = match integration_id {
        None => {
            let stmt = c
                .prepare_cached(&format!("{COLUMNS} ORDER BY hour"))
                .await?;
            c.query(&stmt, &[&from.millis(), &to.millis()]).await?
        }
        Some(id) => {
            let stmt = c
                .prepare_cached(&format!("{COLUMNS} AND integration_id = $3 ORDER BY hour"))
                .await?;
            c.query(&stmt, &[&from.millis(), &to.millis(), &id]).await?
        }
    };
    rows.iter().map(hour_from_row).collect()
}

/// The verified-event days in `window`, of one integration or all, in day order.
async fn days(
    c: &impl GenericClient,
    (from, to): (Timestamp, Timestamp),
    integration_id: Option<i64>,
) -> Result<Vec<DayRow>> {
    let rows = match integration_id {
        None => {
            let stmt = c
                .prepare_cached(
                    "SELECT integration_id, day, action, events FROM event_days \
                     WHERE day >= $1 AND day < $2 ORDER BY day",
                )
                .await?;
            c.query(&stmt, &[&from.millis(), &to.millis()]).await?
        }
        Some(id) => {
            let stmt = c
                .prepare_cached(
                    "SELECT integration_id, day, action, events FROM event_days \
                     WHERE integration_id = $3 AND day >= $1 AND day < $2 ORDER BY day",
                )
                .await?;
            c.query(&stmt, &[&from.millis(), &to.millis(), &id]).await?
        }
    };
    rows.iter()
        .map(|r| {
            Ok(DayRow {
                integration_id: r.get(0),
                day: Timestamp(r.get(1)),
                action: word(r.get::<_, &str>(2), Action::parse)?,
                events: r.get(3),
            })
        })
        .collect()
}

/// One row per live integration (see `store::stats::HEALTH`).
async fn health(c: &impl GenericClient) -> Result<Vec<Health>> {
    let stmt = c
        .prepare_cached(
            "SELECT i.id, i.app_id, i.name, h.last_success_at, h.last_failure_at, \
             (SELECT delivery_id FROM deliveries WHERE id = h.failure_delivery), h.failure_outcome, \
             h.failure_status, h.failure_detail, coalesce(c.pending, 0), coalesce(c.in_flight, 0), \
             coalesce(c.held, 0), \
             (SELECT next_attempt_at FROM deliveries \
              WHERE state = 'pending' AND integration_id = i.id ORDER BY next_attempt_at LIMIT 1) \
             FROM integrations i LEFT JOIN webhook_health h ON h.integration_id = i.id \
             LEFT JOIN delivery_totals c ON c.integration_id = i.id \
             WHERE i.deleted_at IS NULL ORDER BY i.id",
        )
        .await?;
    c.query(&stmt, &[])
        .await?
        .iter()
        .map(|r| {
            let failure_at: Option<i64> = r.get(4);
            let outcome = r
                .get::<_, Option<&str>>(6)
                .map(|o| word(o, AttemptOutcome::parse))
                .transpose()?;
            Ok(Health {
                integration_id: r.get(0),
                app_id: r.get(1),
                name: r.get(2),
                last_success_at: r.get::<_, Option<i64>>(3).map(Timestamp),
                last_failure: match (failure_at, outcome) {
                    (Some(at), Some(outcome)) => Some(Failure {
                        at: Timestamp(at),
                        delivery_id: r.get(5),
                        outcome,
                        response_status: r
                            .get::<_, Option<i64>>(7)
                            .and_then(|s| u16::try_from(s).ok()),
                        detail: r.get(8),
                    }),
                    _ => None,
                },
                pending: r.get(9),
                in_flight: r.get(10),
                held: r.get(11),
                oldest_due_at: r.get::<_, Option<i64>>(12).map(Timestamp),
            })
        })
        .collect()
}

/// An integration filter by App ID, deleted ones included: `Err(())` when no integration has it.
async fn integration_of(
    c: &impl GenericClient,
    app_id: Option<&str>,
) -> Result<std::result::Result<Option<i64>, ()>> {
    Ok(match app_id {
        None => Ok(None),
        Some(app) => super::integrations::any_id(c, app)
            .await?
            .map(Some)
            .ok_or(()),
    })
}

impl Postgres {
    /// See `Store::health_facts`: one snapshot (a repeatable-read transaction) for both reads.
    pub(crate) async fn health_facts(
        &self,
        range: (Timestamp, Timestamp),
    ) -> Result<(Vec<HourRow>, Vec<Health>)> {
        let mut client = self.client().await?;
        let tx = client
            .build_transaction()
            .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .await?;
        let facts = (hours(&tx, range, None).await?, health(&tx).await?);
        tx.commit().await?;
        Ok(facts)
    }

    /// See `Store::attempt_hours`.
    pub(crate) async fn attempt_hours(
        &self,
        range: (Timestamp, Timestamp),
        app_id: Option<&str>,
    ) -> Result<Option<Vec<HourRow>>> {
        let client = self.client().await?;
        match integration_of(&client, app_id).await? {
            Ok(id) => Ok(Some(hours(&client, range, id).await?)),
            Err(()) => Ok(None),
        }
    }

    /// See `Store::event_days`.
    pub(crate) async fn event_days(
        &self,
        range: (Timestamp, Timestamp),
        app_id: Option<&str>,
    ) -> Result<Option<Vec<DayRow>>> {
        let client = self.client().await?;
        match integration_of(&client, app_id).await? {
            Ok(id) => Ok(Some(days(&client, range, id).await?)),
            Err(()) => Ok(None),
        }
    }
}
