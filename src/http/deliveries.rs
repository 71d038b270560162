//! Admin routes for webhook deliveries: history per integration, one delivery with its attempts,
//! redelivery, and the test webhook.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};

use super::AppState;
use super::error::ApiError;
use super::extract::{Actor, ApiPath, ApiQuery};
use crate::model::Timestamp;
use crate::store::deliveries::{Attempt, DeliveryRow, OUTCOMES, STATES};
use crate::webhooks::{self, DeliveryView};

pub(super) fn delivery_json(d: &DeliveryRow) -> Value {
    json!({
        "id": d.delivery_id,
        "appId": d.app_id,
        "clickwrapEventId": d.event_id,
        "isTest": d.is_test,
        "state": d.state,
        "attempts": d.attempts,
        "lastOutcome": d.last_outcome,
        "nextAttemptAt": d.next_attempt_at.map(Timestamp::to_rfc3339),
        "trigger": if d.manual { "manual" } else { "automatic" },
        "createdAt": d.created_at.to_rfc3339(),
        "updatedAt": d.updated_at.to_rfc3339(),
    })
}

fn attempt_json(a: &Attempt) -> Value {
    json!({
        "number": a.number,
        "trigger": if a.manual { "manual" } else { "automatic" },
        "startedAt": a.started_at.to_rfc3339(),
        "durationMs": a.duration_ms,
        "url": a.url,
        "remoteAddr": a.remote_addr,
        "requestHeaders": serde_json::from_str::<Value>(&a.request_headers).unwrap_or(Value::Null),
        "responseStatus": a.response_status,
        "responseBody": String::from_utf8_lossy(&a.response_body),
        "outcome": a.outcome,
        "detail": a.detail,
    })
}

fn view_json(v: &DeliveryView) -> Value {
    let mut out = delivery_json(&v.delivery);
    out["payload"] = String::from_utf8_lossy(&v.delivery.payload).into();
    out["attemptList"] = v.attempts.iter().map(attempt_json).collect();
    out
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    state: Option<String>,
    outcome: Option<String>,
    limit: Option<u32>,
    before: Option<String>,
}

/// `GET /api/v1/integrations/{appId}/deliveries?state&outcome&limit&before`, newest first.
pub async fn list(
    State(state): State<AppState>,
    ApiPath(app_id): ApiPath<String>,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<Json<Value>, ApiError> {
    if let Some(s) = q.state.as_deref().filter(|s| !STATES.contains(s)) {
        return Err(ApiError::invalid(
            "state",
            format!("{s:?} is not one of {}", STATES.join(", ")),
        ));
    }
    if let Some(o) = q.outcome.as_deref().filter(|o| !OUTCOMES.contains(o)) {
        return Err(ApiError::invalid(
            "outcome",
            format!("{o:?} is not one of {}", OUTCOMES.join(", ")),
        ));
    }
    let limit = q.limit.unwrap_or(50);
    if !(1..=200).contains(&limit) {
        return Err(ApiError::invalid("limit", "must be between 1 and 200"));
    }
    let before = match q.before.as_deref() {
        None => None,
        Some(b) => Some(
            b.parse::<i64>()
                .map_err(|_| ApiError::invalid("before", "is not a cursor from this list"))?,
        ),
    };
    let rows = webhooks::list(&state.store, &app_id, q.state, q.outcome, before, limit).await?;
    let next = (rows.len() == limit as usize)
        .then(|| rows.last().map(|d| d.row.to_string()))
        .flatten();
    Ok(Json(
        json!({"items": rows.iter().map(delivery_json).collect::<Vec<_>>(), "nextBefore": next}),
    ))
}

/// `GET /api/v1/integrations/{appId}/delivery-counts`: how many deliveries are in each state, every
/// state present (so the dashboard can show "3 held" next to the delivery toggle).
pub async fn counts(
    State(state): State<AppState>,
    ApiPath(app_id): ApiPath<String>,
) -> Result<Json<Value>, ApiError> {
    let counted = webhooks::counts(&state.store, &app_id).await?;
    let out: serde_json::Map<String, Value> =
        counted.into_iter().map(|(s, n)| (s, n.into())).collect();
    Ok(Json(Value::Object(out)))
}

/// `GET /api/v1/deliveries/{id}`: with its attempts.
pub async fn get(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(view_json(&webhooks::get(&state.store, &id).await?)))
}

/// `POST /api/v1/deliveries/{id}/redeliver`
pub async fn redeliver(
    State(state): State<AppState>,
    Actor(actor): Actor,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<Value>, ApiError> {
    let view = webhooks::redeliver(&state.store, &actor, &id).await?;
    state.wake.notify_one();
    Ok(Json(view_json(&view)))
}

/// `POST /api/v1/integrations/{appId}/test-webhook`
pub async fn test_webhook(
    State(state): State<AppState>,
    Actor(actor): Actor,
    ApiPath(app_id): ApiPath<String>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let view = webhooks::send_test(&state.store, &actor, &app_id).await?;
    state.wake.notify_one();
    Ok((StatusCode::ACCEPTED, Json(view_json(&view))))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BulkBody {
    from: String,
    to: String,
}

/// `POST /api/v1/integrations/{appId}/redeliver` `{"from", "to"}`: failed deliveries created in the range.
pub async fn redeliver_failed(
    State(state): State<AppState>,
    Actor(actor): Actor,
    ApiPath(app_id): ApiPath<String>,
    super::extract::ApiJson(body): super::extract::ApiJson<BulkBody>,
) -> Result<Json<Value>, ApiError> {
    let time = |field: &str, raw: &str| {
        Timestamp::parse_rfc3339(raw)
            .ok_or_else(|| ApiError::invalid(field, "must be an RFC 3339 timestamp"))
    };
    let (from, to) = (time("from", &body.from)?, time("to", &body.to)?);
    if to < from {
        return Err(ApiError::invalid("to", "must not be before from"));
    }
    let n = webhooks::redeliver_failed(
        &state.store,
        &actor,
        &app_id,
        (from, to),
        state.wake.clone(),
    )
    .await?;
    state.wake.notify_one();
    Ok(Json(json!({"redelivered": n})))
}
