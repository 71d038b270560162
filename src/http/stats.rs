//! Admin routes for the dashboard's overview and charts (issue #14): webhook health per integration,
//! attempts per hour, verified events per day. Windows are bounded (`health::MAX_HOURS`,
//! `health::MAX_DAYS`) and every series has one bucket per hour or day, zeros included.

use axum::Json;
use axum::extract::State;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::AppState;
use super::error::ApiError;
use super::extract::ApiQuery;
use crate::health::{self, MAX_DAYS, MAX_HOURS, Tally};
use crate::model::Timestamp;

/// A whole number in `1..=max` from a query parameter, or the JSON 400 that names it.
fn bounded(field: &str, raw: Option<&str>, default: u32, max: u32) -> Result<u32, ApiError> {
    let Some(raw) = raw else {
        return Ok(default);
    };
    match raw.parse::<u32>() {
        Ok(n) if (1..=max).contains(&n) => Ok(n),
        _ => Err(ApiError::invalid(
            field,
            format!("must be a whole number from 1 to {max}, not {raw:?}"),
        )),
    }
}

fn by_outcome(t: &Tally) -> Value {
    Value::Object(
        t.outcomes()
            .map(|(o, n)| (o.as_str().to_string(), n.into()))
            .collect::<Map<_, _>>(),
    )
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NoQuery {}

/// `GET /api/v1/stats/overview`: every live integration with its last 24 hours, its latest failure
/// and its queue.
pub async fn overview(
    State(state): State<AppState>,
    ApiQuery(_): ApiQuery<NoQuery>,
) -> Result<Json<Value>, ApiError> {
    let now = Timestamp::now();
    let o = health::overview(&state.store, now).await?;
    let integrations: Vec<Value> = o
        .integrations
        .iter()
        .map(|i| {
            let t = &i.last_24h;
            json!({
                "appId": i.app_id,
                "name": i.name,
                "health": i.health.as_str(),
                "last24h": {
                    "attempts": t.attempts(),
                    "delivered": t.delivered(),
                    "failed": t.failed(),
                    "gaveUp": t.gave_up,
                    "successRate": t.success_rate(),
                    "byOutcome": by_outcome(t),
                },
                "lastSuccessAt": i.last_success_at.map(Timestamp::to_rfc3339),
                "lastFailure": i.last_failure.as_ref().map(|f| json!({
                    "at": f.at.to_rfc3339(),
                    "deliveryId": f.delivery_id,
                    "outcome": f.outcome.as_str(),
                    "responseStatus": f.response_status,
                    "detail": f.detail,
                })),
                "queue": {
                    "pending": i.pending,
                    "inFlight": i.in_flight,
                    "held": i.held,
                    "oldestDueAt": i.oldest_due_at.map(Timestamp::to_rfc3339),
                    "lagSeconds": i.lag_ms / 1000,
                },
            })
        })
        .collect();
    let failing = o
        .integrations
        .iter()
        .filter(|i| i.health == health::HealthWord::Failing)
        .count();
    let mut total = Tally::default();
    for i in &o.integrations {
        for (k, n) in i.last_24h.by_outcome.iter().enumerate() {
            total.by_outcome[k] += n;
        }
        total.gave_up += i.last_24h.gave_up;
    }
    Ok(Json(json!({
        "generatedAt": now.to_rfc3339(),
        "from": o.window.0.to_rfc3339(),
        "to": o.window.1.to_rfc3339(),
        "integrations": integrations,
        "totals": {
            "integrations": o.integrations.len(),
            "failing": failing,
            "attempts": total.attempts(),
            "delivered": total.delivered(),
            "failed": total.failed(),
            "gaveUp": total.gave_up,
            "successRate": total.success_rate(),
        },
    })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct AttemptsQuery {
    hours: Option<String>,
    app_id: Option<String>,
}

/// `GET /api/v1/stats/attempts?hours=1..168&appId`: attempts per hour by outcome, with their
/// latency (mean and slowest), oldest hour first, the current hour last.
pub async fn attempts(
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<AttemptsQuery>,
) -> Result<Json<Value>, ApiError> {
    let hours = bounded("hours", q.hours.as_deref(), 24, MAX_HOURS)?;
    let ((from, to), buckets) =
        health::attempts_by_hour(&state.store, q.app_id.clone(), hours, Timestamp::now()).await?;
    let buckets: Vec<Value> = buckets
        .iter()
        .map(|b| {
            json!({
                "start": b.start.to_rfc3339(),
                "attempts": b.tally.attempts(),
                "delivered": b.tally.delivered(),
                "failed": b.tally.failed(),
                "gaveUp": b.tally.gave_up,
                "byOutcome": by_outcome(&b.tally),
                "avgDurationMs": b.tally.avg_duration_ms(),
                "maxDurationMs": (b.tally.attempts() > 0).then_some(b.tally.max_duration_ms),
            })
        })
        .collect();
    Ok(Json(json!({
        "appId": q.app_id,
        "bucket": "hour",
        "from": from.to_rfc3339(),
        "to": to.to_rfc3339(),
        "buckets": buckets,
    })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct EventsQuery {
    days: Option<String>,
    app_id: Option<String>,
}

/// `GET /api/v1/stats/events?days=1..90&appId`: verified events per UTC day of their action,
/// accepted and declined, oldest day first, today last.
pub async fn events(
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<EventsQuery>,
) -> Result<Json<Value>, ApiError> {
    let days = bounded("days", q.days.as_deref(), 14, MAX_DAYS)?;
    let ((from, to), buckets) =
        health::events_by_day(&state.store, q.app_id.clone(), days, Timestamp::now()).await?;
    let buckets: Vec<Value> = buckets
        .iter()
        .map(|b| {
            json!({
                "start": b.start.to_rfc3339(),
                "accepted": b.accepted,
                "declined": b.declined,
            })
        })
        .collect();
    Ok(Json(json!({
        "appId": q.app_id,
        "bucket": "day",
        "from": from.to_rfc3339(),
        "to": to.to_rfc3339(),
        "buckets": buckets,
    })))
}
