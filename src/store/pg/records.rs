//! PostgreSQL: attempts recorded in batches. One transaction per attempt made every attempt pay a
//! commit and a pooled connection, and made every attempt of an integration wait in turn for the
//! rows all of them change — the integration's `delivery_counts` row (the schema's trigger), its
//! hour of `attempt_hours` and its `webhook_health` — each held to its transaction's commit. So the
//! deliveries of one integration were recorded one commit at a time. Each node now gathers the
//! attempts that end while its previous batch commits and records them together, in one
//! transaction of a few set-based statements (arrays bound once, `unnest`ed by the server): the
//! deliveries moved per integration, the attempts inserted, the hours and the latest success and
//! failure added up per integration before they are written, one commit.
//!
//! What a batch writes is what [`record_alone`] writes for each of its attempts. Rows are locked in
//! one order (integrations ascending, then their hours), the order claims lock `delivery_counts`
//! in, so a batch and a claim never wait on each other in a cycle. If anything in a batch fails, it
//! is rolled back and each attempt is recorded alone, so one bad attempt never fails another.

use std::collections::BTreeMap;

use deadpool_postgres::{Pool, Transaction};
use futures_util::future::try_join_all;
use tokio::sync::{mpsc, oneshot};

use crate::model::Timestamp;
use crate::store::Result;
use crate::store::deliveries::{Attempt, Next};
use crate::store::stats::HOUR_MS;

/// The most attempts recorded together.
const MAX_BATCH: usize = 256;

/// One attempt waiting for its batch.
pub(crate) struct Job {
    /// The delivery's row id and integration.
    pub row: i64,
    pub integration_id: i64,
    /// The lease it was claimed with: the delivery is moved only while it still holds.
    pub lease_until: Timestamp,
    pub attempt: Attempt,
    pub next: Next,
    pub reply: oneshot::Sender<Result<()>>,
}

pub(crate) type Queue = mpsc::Sender<Job>;

/// Starts the node's recording task (see `batch::spawn`).
pub(crate) fn start(pool: Pool) -> (Queue, tokio::task::JoinHandle<()>) {
    super::batch::spawn(pool, MAX_BATCH, |pool, jobs| async move {
        record_batch(&pool, jobs).await
    })
}

async fn record_batch(pool: &Pool, jobs: Vec<Job>) {
    let result = if jobs.len() == 1 {
        Err(None)
    } else {
        try_batch(pool, &jobs).await.map_err(Some)
    };
    match result {
        Ok(()) => {
            for job in jobs {
                let _ = job.reply.send(Ok(()));
            }
        }
        Err(failed) => {
            if let Some(e) = failed {
                tracing::debug!(error = %e, attempts = jobs.len(), "an attempt batch failed; recording each alone");
            }
            for job in jobs {
                let done = record_alone(pool, &job).await;
                let _ = job.reply.send(done);
            }
        }
    }
}

/// Moves the delivery (under its claim's lease; one set aside while its attempt ran — held,
/// cancelled, with no lease — keeps that state, as on SQLite). `$1` now, then per attempt: row,
/// attempts made, outcome, response status, next due time, next state, the claim's lease.
const MOVE: &str = "UPDATE deliveries d SET attempts = u.attempts, last_outcome = u.outcome, \
     updated_at = $1, lease_until = NULL, last_status = u.status, \
     next_attempt_at = CASE WHEN d.state = 'in_flight' THEN u.next_at ELSE d.next_attempt_at END, \
     state = CASE WHEN d.state = 'in_flight' THEN u.state ELSE d.state END \
     FROM unnest($2::bigint[], $3::bigint[], $4::text[], $5::bigint[], $6::bigint[], $7::text[], \
                 $8::bigint[]) AS u(id, attempts, outcome, status, next_at, state, lease) \
     WHERE d.id = u.id AND ((d.state = 'in_flight' AND d.lease_until = u.lease) \
     OR (d.state IN ('held', 'cancelled') AND d.lease_until IS NULL)) \
     RETURNING d.id";

const INSERT_ATTEMPTS: &str = "INSERT INTO attempts (delivery_id, number, trigger, started_at, \
     duration_ms, url, remote_addr, request_headers, response_status, response_body, outcome, detail) \
     SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::text[], $4::bigint[], $5::bigint[], \
                          $6::text[], $7::text[], $8::text[], $9::bigint[], $10::bytea[], $11::text[], \
                          $12::text[])";

/// `stats::count_attempt`'s hour, for many attempts already added up per integration, hour and
/// outcome (so no two rows of the statement meet one row of the table).
const ADD_HOURS: &str = "INSERT INTO attempt_hours AS h (integration_id, hour, outcome, attempts, \
     gave_up, duration_ms, max_duration_ms) \
     SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::text[], $4::bigint[], $5::bigint[], \
                          $6::bigint[], $7::bigint[]) \
     ON CONFLICT (integration_id, hour, outcome) DO UPDATE SET attempts = h.attempts + excluded.attempts, \
     gave_up = h.gave_up + excluded.gave_up, duration_ms = h.duration_ms + excluded.duration_ms, \
     max_duration_ms = greatest(h.max_duration_ms, excluded.max_duration_ms)";

/// `stats::count_attempt`'s latest success, one per integration.
const LATEST_SUCCESS: &str = "INSERT INTO webhook_health AS h (integration_id, last_success_at) \
     SELECT * FROM unnest($1::bigint[], $2::bigint[]) \
     ON CONFLICT (integration_id) DO UPDATE SET \
     last_success_at = greatest(coalesce(h.last_success_at, 0), excluded.last_success_at)";

/// `stats::count_attempt`'s latest failure, one per integration.
const LATEST_FAILURE: &str = "INSERT INTO webhook_health AS h (integration_id, last_failure_at, \
     failure_delivery, failure_outcome, failure_status, failure_detail) \
     SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::bigint[], $4::text[], $5::bigint[], $6::text[]) \
     ON CONFLICT (integration_id) DO UPDATE SET last_failure_at = excluded.last_failure_at, \
     failure_delivery = excluded.failure_delivery, failure_outcome = excluded.failure_outcome, \
     failure_status = excluded.failure_status, failure_detail = excluded.failure_detail \
     WHERE excluded.last_failure_at >= coalesce(h.last_failure_at, 0)";

/// The batch in one transaction.
async fn try_batch(pool: &Pool, jobs: &[Job]) -> Result<()> {
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    let now = Timestamp::now();

    // The deliveries, one statement per integration in ascending order: the schema's trigger locks
    // each integration's counts row as its deliveries move, in the order claims lock them.
    let mut by_integration: BTreeMap<i64, Vec<&Job>> = BTreeMap::new();
    for job in jobs {
        by_integration
            .entry(job.integration_id)
            .or_default()
            .push(job);
    }
    let moving = tx.prepare_cached(MOVE).await?;
    let moved: Vec<i64> = try_join_all(by_integration.values().map(|jobs| {
        let (tx, moving) = (&tx, &moving);
        async move {
            let column = |f: fn(&Job) -> Option<i64>| jobs.iter().map(|j| f(j)).collect::<Vec<_>>();
            let rows = column(|j| Some(j.row));
            let attempts = column(|j| Some(j.attempt.number));
            let status = column(|j| j.attempt.response_status.map(i64::from));
            let next_at = column(|j| j.next.state_and_due().1);
            let lease = column(|j| Some(j.lease_until.millis()));
            let outcome: Vec<&str> = jobs.iter().map(|j| j.attempt.outcome.as_str()).collect();
            let state: Vec<&str> = jobs
                .iter()
                .map(|j| j.next.state_and_due().0.as_str())
                .collect();
            let moved = tx
                .query(
                    moving,
                    &[
                        &now.millis(),
                        &rows,
                        &attempts,
                        &outcome,
                        &status,
                        &next_at,
                        &state,
                        &lease,
                    ],
                )
                .await?;
            Ok::<_, crate::store::StoreError>(
                moved.iter().map(|r| r.get::<_, i64>(0)).collect::<Vec<_>>(),
            )
        }
    }))
    .await?
    .into_iter()
    .flatten()
    .collect();
    let moved: std::collections::HashSet<i64> = moved.into_iter().collect();
    for job in jobs.iter().filter(|j| !moved.contains(&j.row)) {
        tracing::info!(
            delivery = job.row,
            "an attempt ended after its claim was taken over; it is kept in the history only"
        );
    }

    let insert = tx.prepare_cached(INSERT_ATTEMPTS).await?;
    let inserted = async {
        let column = |f: fn(&Job) -> Option<i64>| jobs.iter().map(f).collect::<Vec<_>>();
        let text =
            |f: for<'j> fn(&'j Job) -> Option<&'j str>| jobs.iter().map(f).collect::<Vec<_>>();
        let rows = column(|j| Some(j.row));
        let numbers = column(|j| Some(j.attempt.number));
        let started = column(|j| Some(j.attempt.started_at.millis()));
        let durations = column(|j| Some(j.attempt.duration_ms));
        let statuses = column(|j| j.attempt.response_status.map(i64::from));
        let triggers = text(|j| Some(j.attempt.trigger.as_str()));
        let urls = text(|j| Some(j.attempt.url.as_str()));
        let remotes = text(|j| j.attempt.remote_addr.as_deref());
        let headers = text(|j| Some(j.attempt.request_headers.as_str()));
        let outcomes = text(|j| Some(j.attempt.outcome.as_str()));
        let details = text(|j| j.attempt.detail.as_deref());
        let bodies: Vec<&[u8]> = jobs
            .iter()
            .map(|j| j.attempt.response_body.as_slice())
            .collect();
        tx.execute(
            &insert,
            &[
                &rows, &numbers, &triggers, &started, &durations, &urls, &remotes, &headers,
                &statuses, &bodies, &outcomes, &details,
            ],
        )
        .await
    };

    let (hours, successes, failures) = add_up(jobs, &moved);
    let add_hours = tx.prepare_cached(ADD_HOURS).await?;
    let hours_added = async {
        if hours.is_empty() {
            return Ok(0);
        }
        let keys = hours.keys();
        let values = hours.values();
        tx.execute(
            &add_hours,
            &[
                &keys.clone().map(|k| k.0).collect::<Vec<_>>(),
                &keys.clone().map(|k| k.1).collect::<Vec<_>>(),
                &keys.map(|k| k.2).collect::<Vec<_>>(),
                &values.clone().map(|v| v.attempts).collect::<Vec<_>>(),
                &values.clone().map(|v| v.gave_up).collect::<Vec<_>>(),
                &values.clone().map(|v| v.duration_ms).collect::<Vec<_>>(),
                &values.map(|v| v.max_duration_ms).collect::<Vec<_>>(),
            ],
        )
        .await
    };
    let success = tx.prepare_cached(LATEST_SUCCESS).await?;
    let successes_kept = async {
        if successes.is_empty() {
            return Ok(0);
        }
        tx.execute(
            &success,
            &[
                &successes.keys().copied().collect::<Vec<_>>(),
                &successes.values().copied().collect::<Vec<_>>(),
            ],
        )
        .await
    };
    let failure = tx.prepare_cached(LATEST_FAILURE).await?;
    let failures_kept = async {
        if failures.is_empty() {
            return Ok(0);
        }
        let f = failures.values();
        tx.execute(
            &failure,
            &[
                &failures.keys().copied().collect::<Vec<_>>(),
                &f.clone()
                    .map(|j| j.attempt.started_at.millis())
                    .collect::<Vec<_>>(),
                &f.clone().map(|j| j.row).collect::<Vec<_>>(),
                &f.clone()
                    .map(|j| j.attempt.outcome.as_str())
                    .collect::<Vec<_>>(),
                &f.clone()
                    .map(|j| j.attempt.response_status.map(i64::from))
                    .collect::<Vec<_>>(),
                &f.map(|j| j.attempt.detail.as_deref()).collect::<Vec<_>>(),
            ],
        )
        .await
    };
    tokio::try_join!(inserted, hours_added, successes_kept, failures_kept)?;
    tx.commit().await?;
    Ok(())
}

/// One hour of one integration and outcome, added up over a batch.
#[derive(Default)]
struct Hour {
    attempts: i64,
    gave_up: i64,
    duration_ms: i64,
    max_duration_ms: i64,
}

/// The batch's attempts added up: per (integration, hour, outcome) its hour; per integration the
/// latest success's start and the latest failure (the last of the batch when two started alike, as
/// one at a time would leave it). Keys ascend, so the rows are locked in one order.
#[allow(clippy::type_complexity)]
fn add_up<'a>(
    jobs: &'a [Job],
    moved: &std::collections::HashSet<i64>,
) -> (
    BTreeMap<(i64, i64, &'static str), Hour>,
    BTreeMap<i64, i64>,
    BTreeMap<i64, &'a Job>,
) {
    let mut hours: BTreeMap<(i64, i64, &'static str), Hour> = BTreeMap::new();
    let mut successes: BTreeMap<i64, i64> = BTreeMap::new();
    let mut failures: BTreeMap<i64, &Job> = BTreeMap::new();
    for job in jobs {
        let a = &job.attempt;
        let at = a.started_at.millis();
        let hour = at - at.rem_euclid(HOUR_MS);
        let h = hours
            .entry((job.integration_id, hour, a.outcome.as_str()))
            .or_default();
        h.attempts += 1;
        h.gave_up += i64::from(moved.contains(&job.row) && matches!(job.next, Next::Failed));
        h.duration_ms += a.duration_ms;
        h.max_duration_ms = h.max_duration_ms.max(a.duration_ms);
        if a.outcome.is_success() {
            let latest = successes.entry(job.integration_id).or_insert(at);
            *latest = (*latest).max(at);
        } else {
            let latest = failures.entry(job.integration_id).or_insert(job);
            if at >= latest.attempt.started_at.millis() {
                *latest = job;
            }
        }
    }
    (hours, successes, failures)
}

/// One attempt in a transaction of its own: what a batch writes for it.
pub(crate) async fn record_alone(pool: &Pool, job: &Job) -> Result<()> {
    let now = Timestamp::now();
    let (state, next_at) = job.next.state_and_due();
    let a = &job.attempt;
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    let update = tx
        .prepare_cached(
            "UPDATE deliveries SET attempts = $2, last_outcome = $3, updated_at = $4, \
             lease_until = NULL, last_status = $7, \
             next_attempt_at = CASE WHEN state = 'in_flight' THEN $6 ELSE next_attempt_at END, \
             state = CASE WHEN state = 'in_flight' THEN $5 ELSE state END \
             WHERE id = $1 AND ((state = 'in_flight' AND lease_until = $8) \
             OR (state IN ('held', 'cancelled') AND lease_until IS NULL))",
        )
        .await?;
    let moved = tx
        .execute(
            &update,
            &[
                &job.row,
                &a.number,
                &a.outcome.as_str(),
                &now.millis(),
                &state.as_str(),
                &next_at,
                &a.response_status.map(i64::from),
                &job.lease_until.millis(),
            ],
        )
        .await?
        == 1;
    if !moved {
        tracing::info!(
            delivery = job.row,
            "an attempt ended after its claim was taken over; it is kept in the history only"
        );
    }
    insert_attempt(&tx, job.row, a).await?;
    super::stats::count_attempt(&tx, job.row, a, moved && matches!(job.next, Next::Failed)).await?;
    tx.commit().await?;
    Ok(())
}

/// One attempt into the history.
async fn insert_attempt(tx: &Transaction<'_>, row: i64, a: &Attempt) -> Result<()> {
    let insert = tx
        .prepare_cached(
            "INSERT INTO attempts (delivery_id, number, trigger, started_at, duration_ms, url, \
             remote_addr, request_headers, response_status, response_body, outcome, detail) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
        )
        .await?;
    tx.execute(
        &insert,
        &[
            &row,
            &a.number,
            &a.trigger.as_str(),
            &a.started_at.millis(),
            &a.duration_ms,
            &a.url,
            &a.remote_addr,
            &a.request_headers,
            &a.response_status.map(i64::from),
            &a.response_body,
            &a.outcome.as_str(),
            &a.detail,
        ],
    )
    .await?;
    Ok(())
}
