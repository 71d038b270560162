//! Admin routes for webhook deliveries: history per integration, one delivery with its attempts,
//! redelivery, and the test webhook.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::AppState;
use super::error::ApiError;
use super::extract::{Actor, ApiPath, ApiQuery};
use crate::model::{AttemptOutcome, DeliveryState, Timestamp};
use crate::store::deliveries::{Attempt, DeliveryRow};
use crate::webhooks::{self, DeliveryView};

/// A delivery as the history lists it.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct DeliveryJson<'a> {
    id: &'a str,
    app_id: &'a str,
    clickwrap_event_id: Option<&'a str>,
    is_test: bool,
    event_type: &'static str,
    state: &'static str,
    attempts: i64,
    /// How many attempts an automatic chain makes at most (the first and `webhooks.max_retries`).
    max_attempts: u32,
    last_outcome: Option<&'static str>,
    last_response_status: Option<u16>,
    next_attempt_at: Option<String>,
    trigger: &'static str,
    created_at: String,
    updated_at: String,
}

impl<'a> DeliveryJson<'a> {
    pub(super) fn of(d: &'a DeliveryRow, config: &crate::config::Config) -> DeliveryJson<'a> {
        DeliveryJson {
            id: &d.delivery_id,
            app_id: &d.app_id,
            clickwrap_event_id: d.event_id.as_deref(),
            is_test: d.is_test,
            event_type: d.event_type.as_str(),
            state: d.state.as_str(),
            attempts: d.attempts,
            max_attempts: config.webhooks.max_retries + 1,
            last_outcome: d.last_outcome.map(AttemptOutcome::as_str),
            last_response_status: d.last_status,
            next_attempt_at: d.next_attempt_at.map(Timestamp::to_rfc3339),
            trigger: d.trigger.as_str(),
            created_at: d.created_at.to_rfc3339(),
            updated_at: d.updated_at.to_rfc3339(),
        }
    }
}

/// One attempt in a delivery's detail: what was sent (the request headers exactly as recorded) and
/// what came back.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct AttemptJson<'a> {
    number: i64,
    trigger: &'static str,
    started_at: String,
    duration_ms: i64,
    url: &'a str,
    remote_addr: Option<&'a str>,
    request_headers: Value,
    response_status: Option<u16>,
    response_body: std::borrow::Cow<'a, str>,
    outcome: &'static str,
    detail: Option<&'a str>,
}

impl<'a> AttemptJson<'a> {
    fn of(a: &'a Attempt) -> AttemptJson<'a> {
        AttemptJson {
            number: a.number,
            trigger: a.trigger.as_str(),
            started_at: a.started_at.to_rfc3339(),
            duration_ms: a.duration_ms,
            url: &a.url,
            remote_addr: a.remote_addr.as_deref(),
            request_headers: serde_json::from_str(&a.request_headers).unwrap_or(Value::Null),
            response_status: a.response_status,
            response_body: String::from_utf8_lossy(&a.response_body),
            outcome: a.outcome.as_str(),
            detail: a.detail.as_deref(),
        }
    }
}

/// A delivery with its payload and attempts.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct DeliveryDetail<'a> {
    #[serde(flatten)]
    delivery: DeliveryJson<'a>,
    payload: std::borrow::Cow<'a, str>,
    attempt_list: Vec<AttemptJson<'a>>,
}

fn detail(v: &DeliveryView, config: &crate::config::Config) -> Json<Value> {
    let out = DeliveryDetail {
        delivery: DeliveryJson::of(&v.delivery, config),
        payload: String::from_utf8_lossy(&v.delivery.payload),
        attempt_list: v.attempts.iter().map(AttemptJson::of).collect(),
    };
    Json(serde_json::to_value(out).expect("a delivery serialises"))
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct DeliveryPage<'a> {
    items: Vec<DeliveryJson<'a>>,
    next_before: Option<String>,
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
    let wanted_state = match q.state.as_deref() {
        None => None,
        Some(s) => Some(DeliveryState::parse(s).ok_or_else(|| {
            ApiError::invalid(
                "state",
                format!("{s:?} is not one of {}", DeliveryState::spellings()),
            )
        })?),
    };
    let outcome = match q.outcome.as_deref() {
        None => None,
        Some(o) => Some(AttemptOutcome::parse(o).ok_or_else(|| {
            ApiError::invalid(
                "outcome",
                format!("{o:?} is not one of {}", AttemptOutcome::spellings()),
            )
        })?),
    };
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
    let rows = webhooks::list(&state.store, &app_id, wanted_state, outcome, before, limit).await?;
    let next_before = (rows.len() == limit as usize)
        .then(|| rows.last().map(|d| d.row.to_string()))
        .flatten();
    let page = DeliveryPage {
        items: rows
            .iter()
            .map(|d| DeliveryJson::of(d, &state.config))
            .collect(),
        next_before,
    };
    Ok(Json(serde_json::to_value(page).expect("a page serialises")))
}

/// `GET /api/v1/integrations/{appId}/delivery-counts`: how many deliveries are in each state, every
/// state present (so the dashboard can show "3 held" next to the delivery toggle).
pub async fn counts(
    State(state): State<AppState>,
    ApiPath(app_id): ApiPath<String>,
) -> Result<Json<Value>, ApiError> {
    let counted = webhooks::counts(&state.store, &app_id).await?;
    let out: serde_json::Map<String, Value> = counted
        .into_iter()
        .map(|(s, n)| (s.as_str().to_string(), n.into()))
        .collect();
    Ok(Json(Value::Object(out)))
}

/// `GET /api/v1/deliveries/{id}`: with its attempts.
pub async fn get(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<Value>, ApiError> {
    Ok(detail(
        &webhooks::get(&state.store, &id).await?,
        &state.config,
    ))
}

/// `POST /api/v1/deliveries/{id}/redeliver`
pub async fn redeliver(
    State(state): State<AppState>,
    Actor(actor): Actor,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<Value>, ApiError> {
    let view = webhooks::redeliver(&state.store, &actor, &id).await?;
    state.wake.notify_one();
    Ok(detail(&view, &state.config))
}

/// `POST /api/v1/integrations/{appId}/test-webhook`
pub async fn test_webhook(
    State(state): State<AppState>,
    Actor(actor): Actor,
    ApiPath(app_id): ApiPath<String>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let view = webhooks::send_test(&state.store, &actor, &app_id).await?;
    state.wake.notify_one();
    Ok((StatusCode::ACCEPTED, detail(&view, &state.config)))
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
) -> Result<Json<Redelivered>, ApiError> {
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
    Ok(Json(Redelivered { redelivered: n }))
}

/// How many failed deliveries a bulk redelivery took.
#[derive(Serialize)]
pub struct Redelivered {
    redelivered: usize,
}
