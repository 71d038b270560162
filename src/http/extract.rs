//! Request extractors: JSON bodies, path parameters and queries whose failures speak our error format,
//! and the two kinds of caller — an integration on the public API (`X-APP-ID` + `X-APP-KEY`) and an
//! admin (session cookie or bearer token) on `/api/v1`.

use std::time::Duration;

use axum::extract::{FromRequest, FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::AppState;
use super::error::ApiError;
use crate::admins;
use crate::integrations::{self, Denied};

/// A JSON body; a wrong content type is 415, a body over the limit 413, malformed JSON 400 naming the
/// problem (line, column, field), a body that has not arrived in full within
/// `server.body_read_timeout_secs` of starting to read it 408. The deadline covers the whole body, not
/// each piece of it, so a client trickling bytes cannot hold the request open.
pub struct ApiJson<T>(pub T);

impl<T: serde::de::DeserializeOwned> FromRequest<AppState> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, ApiError> {
        let limit = Duration::from_secs(state.config.server.body_read_timeout_secs);
        match tokio::time::timeout(limit, axum::Json::<T>::from_request(req, state)).await {
            Ok(Ok(axum::Json(value))) => Ok(ApiJson(value)),
            Ok(Err(rejection)) => Err(rejection.into()),
            Err(_) => Err(ApiError::new(
                axum::http::StatusCode::REQUEST_TIMEOUT,
                "request_timeout",
                format!(
                    "the request body did not arrive within {}s",
                    limit.as_secs()
                ),
            )),
        }
    }
}

/// Path parameters; one that cannot be decoded (not UTF-8, say) is 400 naming the problem.
#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(ApiError))]
pub struct ApiPath<T>(pub T);

/// A query string; a bad parameter is 400 naming it.
#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(ApiError))]
pub struct ApiQuery<T>(pub T);

/// The integration calling the public client API, authenticated by its App ID and App Key.
pub struct AppCaller {
    /// The integration's row id.
    pub integration_id: i64,
}

impl FromRequestParts<AppState> for AppCaller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let (Some(app_id), Some(app_key)) = (
            header_str(&parts.headers, "x-app-id"),
            header_str(&parts.headers, "x-app-key"),
        ) else {
            return Err(ApiError::unauthorized(
                "the X-APP-ID and X-APP-KEY headers are required",
            ));
        };
        match integrations::authenticate(&state.store, app_id, app_key).await? {
            Ok(integration_id) => Ok(AppCaller { integration_id }),
            Err(Denied::BadCredentials) => Err(ApiError::unauthorized("invalid App ID or App Key")),
            Err(Denied::Disabled) => Err(ApiError::new(
                axum::http::StatusCode::FORBIDDEN,
                "integration_disabled",
                "this integration is disabled",
            )),
        }
    }
}

/// The admin behind a request, as named in the audit log (`admin`, `token:deploy`, …). Put in the request
/// by [`require_admin`].
#[derive(Clone)]
pub struct Actor(pub String);

impl<S: Send + Sync> FromRequestParts<S> for Actor {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        parts
            .extensions
            .get::<Actor>()
            .cloned()
            .ok_or_else(|| ApiError::unauthorized("login required"))
    }
}

pub const SESSION_COOKIE: &str = "clicktermd_session";

/// Middleware for every admin route but login: a bearer token or a live session cookie, or 401.
pub async fn require_admin(
    State(state): State<AppState>,
    mut req: Request,
    next: Next,
) -> Response {
    let actor = match admin_actor(&state, req.headers()).await {
        Ok(Some(actor)) => actor,
        Ok(None) => return ApiError::unauthorized("login required").into_response(),
        Err(e) => return e.into_response(),
    };
    req.extensions_mut().insert(Actor(actor));
    next.run(req).await
}

async fn admin_actor(state: &AppState, headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    if let Some(auth) = header_str(headers, header::AUTHORIZATION.as_str()) {
        let Some(token) = auth.strip_prefix("Bearer ") else {
            return Ok(None);
        };
        return Ok(admins::token_actor(&state.store, token.trim()).await?);
    }
    match session_cookie(headers) {
        Some(session) => Ok(admins::session_actor(&state.store, session).await?),
        None => Ok(None),
    }
}

/// The value of our session cookie in the `Cookie` headers, if any.
pub fn session_cookie(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == SESSION_COOKIE)
        .map(|(_, value)| value)
        .filter(|v| !v.is_empty())
}

fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
}
