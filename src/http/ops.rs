//! Operational endpoints: health and metrics. Neither needs a login: they say nothing about any
//! integration, event or secret.

use axum::Json;
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::model::Timestamp;

use super::AppState;

/// 200 when the process is up, the database answers a query and can be written; 503 otherwise, with
/// what is wrong.
pub async fn healthz(State(state): State<AppState>) -> (StatusCode, Json<serde_json::Value>) {
    if state.store.disk_full() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(serde_json::json!({
                "status": "disk full",
                "message": crate::store::StoreError::DiskFull.to_string(),
            })),
        );
    }
    let probe = state
        .store
        .read(|c| {
            c.query_row("SELECT 1", [], |r| r.get::<_, i64>(0))
                .map_err(crate::store::StoreError::from)
        })
        .await;
    match probe {
        Ok(_) => (StatusCode::OK, Json(serde_json::json!({"status": "ok"}))),
        Err(e) => {
            tracing::error!(error = %e, "health check: database unreachable");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(serde_json::json!({"status": "database unreachable"})),
            )
        }
    }
}

/// `GET /metrics`: Prometheus (OpenMetrics) text; the queue figures are read from the database now.
pub async fn metrics(State(state): State<AppState>) -> Response {
    let now = Timestamp::now();
    let queue = state
        .store
        .read(move |c| crate::store::deliveries::queue_stats(c, now))
        .await;
    match queue {
        Ok(queue) => (
            [(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)],
            state.metrics.render(&queue, now),
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
