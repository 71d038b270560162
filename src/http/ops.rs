//! Operational endpoints: health (and, with the dispatcher, metrics).

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;

use super::AppState;

/// 200 when the process is up and the database answers a query; 503 otherwise.
pub async fn healthz(State(state): State<AppState>) -> (StatusCode, Json<serde_json::Value>) {
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
