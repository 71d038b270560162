//! Operational endpoints: health and metrics. Neither needs a login: they say nothing about any
//! integration, event or secret.

use axum::Json;
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::model::Timestamp;

use super::AppState;

/// The health answer: `ok`, or what is wrong.
#[derive(serde::Serialize)]
pub struct HealthJson {
    status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    message: Option<String>,
}

/// 200 when the process is up, the database answers a query and can be written; 503 otherwise, with
/// what is wrong.
pub async fn healthz(State(state): State<AppState>) -> (StatusCode, Json<HealthJson>) {
    let unavailable = |status, message| {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(HealthJson { status, message }),
        )
    };
    if state.store.disk_full() {
        let message = crate::store::StoreError::DiskFull.to_string();
        return unavailable("disk full", Some(message));
    }
    match state.store.ping().await {
        Ok(()) => (
            StatusCode::OK,
            Json(HealthJson {
                status: "ok",
                message: None,
            }),
        ),
        Err(e) => {
            tracing::error!(error = %e, "health check: database unreachable");
            unavailable("database unreachable", None)
        }
    }
}

/// `GET /metrics`: Prometheus (OpenMetrics) text; the queue figures are read from the database now.
pub async fn metrics(State(state): State<AppState>) -> Response {
    let now = Timestamp::now();
    let queue = state.store.queue_stats(now).await;
    let read = match queue {
        Ok(queue) => state.store.ledger_head().await.map(|head| (queue, head)),
        Err(e) => Err(e),
    };
    match read {
        Ok((queue, head)) => (
            [(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)],
            state.metrics.render(&queue, head, now),
        )
            .into_response(),
        Err(e) => {
            tracing::error!(error = %e, "metrics: database unreachable");
            (StatusCode::SERVICE_UNAVAILABLE, "database unreachable\n").into_response()
        }
    }
}

/// Counts every verify request by the status it was answered with, including those refused before
/// the handler ran (authentication, body).
pub async fn count_verify(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    state.metrics.verify_request(response.status().as_u16());
    response
}
