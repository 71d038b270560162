//! Proof of consent over HTTP (issue #17): an event's evidence (admin API and, for the integration's
//! own backend, the public client API), its certificate of acceptance as a PDF, the ledger's head, and
//! the streamed export of a range of evidence as NDJSON or CSV.

use std::pin::Pin;
use std::task::{Context, Poll};

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderName, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::AppState;
use super::error::ApiError;
use super::extract::{ApiPath, ApiQuery, AppCaller};
use super::public::{filter_of, integration_filter};
use crate::ledger::{self, Evidence, ExportFormat, HeadWire, Link};
use crate::model::{ChainHead, Timestamp};

/// The header an export names the chain head it ends at in (`POSITION:HASH`).
pub const CHAIN_HEAD_HEADER: HeaderName = HeaderName::from_static("clickterm-chain-head");

fn document(evidence: &Evidence, link: &Link) -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        evidence.document(link),
    )
        .into_response()
}

async fn found(
    state: &AppState,
    integration_id: Option<i64>,
    id: &str,
) -> Result<(Evidence, Link), ApiError> {
    state
        .store
        .evidence(integration_id, id)
        .await?
        .ok_or_else(|| ApiError::not_found("verified clickwrap event"))
}

/// `GET /api/v1/events/{id}/evidence`: any integration's verified event.
pub async fn admin_evidence(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<Response, ApiError> {
    let (evidence, link) = found(&state, None, &id).await?;
    Ok(document(&evidence, &link))
}

/// `GET /public-client/v1/clickwrap-events/{id}/evidence`: the calling integration's own event.
pub async fn public_evidence(
    State(state): State<AppState>,
    caller: AppCaller,
    ApiPath(id): ApiPath<String>,
) -> Result<Response, ApiError> {
    let (evidence, link) = found(&state, Some(caller.integration_id), &id).await?;
    Ok(document(&evidence, &link))
}

/// `GET /api/v1/events/{id}/certificate.pdf`: the certificate of acceptance, made now.
pub async fn certificate(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<Response, ApiError> {
    let (evidence, link) = found(&state, None, &id).await?;
    let event_id = evidence.event_id.clone();
    // Laying out a long text is CPU work: off the async workers.
    let pdf = tokio::task::spawn_blocking(move || {
        crate::certificate::render(&evidence, &link, Timestamp::now())
    })
    .await
    .map_err(|e| crate::store::StoreError::Task(e.to_string()))?;
    let disposition = format!("inline; filename=\"certificate-{event_id}.pdf\"");
    Ok((
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/pdf"),
            ),
            (
                header::CONTENT_DISPOSITION,
                HeaderValue::from_str(&disposition).expect("a UUID is a header value"),
            ),
        ],
        pdf,
    )
        .into_response())
}

/// `GET /api/v1/ledger/head`: `{"position", "hash"}` of the last link.
pub async fn head(State(state): State<AppState>) -> Result<Json<HeadWire>, ApiError> {
    Ok(Json(HeadWire::of(state.store.ledger_head().await?)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ExportQuery {
    from: Option<String>,
    to: Option<String>,
    format: Option<String>,
    app_id: Option<String>,
    clickwrap_template_id: Option<String>,
    end_user_id: Option<String>,
    clickwrap_event_status: Option<String>,
}

/// `GET /api/v1/events/export?from&to&format=ndjson|csv&appId&clickwrapTemplateId&endUserId&clickwrapEventStatus`:
/// the evidence of every verified event matching, streamed (constant memory whatever the size),
/// newest first; the chain head it ends at in the `Clickterm-Chain-Head` header, the file name and,
/// for NDJSON, the last line.
pub async fn export(
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<ExportQuery>,
) -> Result<Response, ApiError> {
    let format = match q.format.as_deref() {
        None => ExportFormat::Ndjson,
        Some(f) => ExportFormat::parse(f)
            .ok_or_else(|| ApiError::invalid("format", "must be ndjson or csv"))?,
    };
    let mut filter = filter_of(
        &q.clickwrap_template_id,
        &q.end_user_id,
        &q.clickwrap_event_status,
        &q.from,
        &q.to,
    )?;
    if let Some(app_id) = &q.app_id {
        filter.integration_id = Some(integration_filter(&state, app_id).await?);
    }
    let export = ledger::export(&state.store, filter, format).await?;
    Ok(streamed(export))
}

/// The response of an export: its head in a header and the file name, its pages as they come.
fn streamed(export: ledger::Export) -> Response {
    let head: ChainHead = export.head;
    let name = format!(
        "attachment; filename=\"clicktermd-evidence-to-{}.{}\"",
        head.position,
        export.format.extension()
    );
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static(export.format.content_type()),
            ),
            (
                header::CONTENT_DISPOSITION,
                HeaderValue::from_str(&name).expect("ASCII"),
            ),
            (
                CHAIN_HEAD_HEADER,
                HeaderValue::from_str(&ledger::head_text(head)).expect("ASCII"),
            ),
        ],
        Body::new(Pages(export.chunks)),
    )
        .into_response()
}

/// A body made of the pages an export task sends; it ends when the task does, and fails (the
/// connection is cut, so a client sees a truncated export, not a complete-looking one) when a page
/// could not be read.
struct Pages(tokio::sync::mpsc::Receiver<crate::error::Result<bytes::Bytes>>);

impl http_body::Body for Pages {
    type Data = bytes::Bytes;
    type Error = crate::error::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<bytes::Bytes>, Self::Error>>> {
        self.0
            .poll_recv(cx)
            .map(|chunk| chunk.map(|c| c.map(http_body::Frame::data)))
    }
}
