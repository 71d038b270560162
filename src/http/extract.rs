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
use crate::model::Role;

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
            Ok(integration_id) => {
                state.limits.integration(integration_id)?;
                Ok(AppCaller { integration_id })
            }
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
pub struct Actor(pub crate::model::Actor);

/// What the admin behind a request may do, and whether it is a user's session. Put in the request by
/// [`require_admin`].
#[derive(Clone, Copy)]
pub struct Caller {
    pub role: Role,
    pub by_session: bool,
    /// A session opened with a one-time password (see `admins::Caller`).
    pub must_change_password: bool,
}

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        parts
            .extensions
            .get::<Caller>()
            .copied()
            .ok_or_else(|| ApiError::unauthorized("login required"))
    }
}

/// The least role each admin route needs, by method and route: the one table the server decides by
/// (the dashboard only leaves out what a role would be refused). Reading needs `viewer`, except
/// reading a secret; every change needs `admin`, except what any user does to their own session;
/// managing users needs `owner`. A route missing here needs `owner`, and a test walks the whole table
/// through the server with every role.
#[rustfmt::skip]
pub const ROUTE_ROLES: &[(&str, &str, Role)] = &[
    ("GET", "/api/v1/session", Role::Viewer),
    ("POST", "/api/v1/logout", Role::Viewer),
    ("POST", "/api/v1/session/password", Role::Viewer),
    ("GET", "/api/v1/integrations", Role::Viewer),
    ("POST", "/api/v1/integrations", Role::Admin),
    ("GET", "/api/v1/integrations/{app_id}", Role::Viewer),
    ("PATCH", "/api/v1/integrations/{app_id}", Role::Admin),
    ("DELETE", "/api/v1/integrations/{app_id}", Role::Admin),
    ("POST", "/api/v1/integrations/{app_id}/app-key", Role::Admin),
    // Reading the signing secret is a secret leaving the server: an admin's, and audited.
    ("GET", "/api/v1/integrations/{app_id}/signing-secret", Role::Admin),
    ("POST", "/api/v1/integrations/{app_id}/signing-secret", Role::Admin),
    // The certificate's subject, issuer, expiry and fingerprint (never its key).
    ("GET", "/api/v1/integrations/{app_id}/client-certificate", Role::Viewer),
    ("PUT", "/api/v1/integrations/{app_id}/client-certificate", Role::Admin),
    ("DELETE", "/api/v1/integrations/{app_id}/client-certificate", Role::Admin),
    ("GET", "/api/v1/audit", Role::Viewer),
    ("GET", "/api/v1/tokens", Role::Admin),
    ("POST", "/api/v1/tokens", Role::Admin),
    ("DELETE", "/api/v1/tokens/{id}", Role::Admin),
    ("GET", "/api/v1/templates", Role::Viewer),
    ("POST", "/api/v1/templates", Role::Admin),
    ("GET", "/api/v1/templates/{id}", Role::Viewer),
    ("PATCH", "/api/v1/templates/{id}", Role::Admin),
    ("POST", "/api/v1/templates/{id}/versions", Role::Admin),
    // A preview renders a draft and records nothing.
    ("POST", "/api/v1/templates/{id}/preview", Role::Viewer),
    ("GET", "/api/v1/events", Role::Viewer),
    ("GET", "/api/v1/events/{id}", Role::Viewer),
    // The proof of consent: what the event's record holds (no secret), read and exported.
    ("GET", "/api/v1/events/export", Role::Viewer),
    ("GET", "/api/v1/events/{id}/evidence", Role::Viewer),
    ("GET", "/api/v1/events/{id}/certificate.pdf", Role::Viewer),
    ("GET", "/api/v1/ledger/head", Role::Viewer),
    ("GET", "/api/v1/integrations/{app_id}/delivery-counts", Role::Viewer),
    ("GET", "/api/v1/integrations/{app_id}/deliveries", Role::Viewer),
    ("POST", "/api/v1/integrations/{app_id}/test-webhook", Role::Admin),
    ("POST", "/api/v1/integrations/{app_id}/redeliver", Role::Admin),
    ("GET", "/api/v1/stats/overview", Role::Viewer),
    ("GET", "/api/v1/stats/attempts", Role::Viewer),
    ("GET", "/api/v1/stats/events", Role::Viewer),
    ("GET", "/api/v1/deliveries/{id}", Role::Viewer),
    ("POST", "/api/v1/deliveries/{id}/redeliver", Role::Admin),
    ("GET", "/api/v1/users", Role::Owner),
    ("POST", "/api/v1/users", Role::Owner),
    ("PATCH", "/api/v1/users/{username}", Role::Owner),
    ("DELETE", "/api/v1/users/{username}", Role::Owner),
    ("POST", "/api/v1/users/{username}/password", Role::Owner),
    ("GET", "/api/v1/users/{username}/sessions", Role::Owner),
    ("DELETE", "/api/v1/users/{username}/sessions", Role::Owner),
    ("DELETE", "/api/v1/users/{username}/sessions/{id}", Role::Owner),
];

/// The least role `method` on the route `path` (as routed, with its `{parameters}`) needs.
pub fn role_needed(method: &axum::http::Method, path: &str) -> Role {
    ROUTE_ROLES
        .iter()
        .find(|(m, p, _)| *m == method.as_str() && *p == path)
        .map_or(Role::Owner, |(_, _, role)| *role)
}

/// What a session opened with a one-time password may do until it is changed.
fn allowed_before_password_change(method: &axum::http::Method, path: &str) -> bool {
    matches!(
        (method.as_str(), path),
        ("GET", "/api/v1/session")
            | ("POST", "/api/v1/logout")
            | ("POST", "/api/v1/session/password")
    )
}

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

/// Middleware for every admin route but login: a bearer token or a live session cookie, or 401. A
/// change (any method but GET, HEAD, OPTIONS) made with the cookie must also come from our own pages
/// ([`same_origin`]): the browser attaches the cookie to requests from other origins of the same site
/// too, so the cookie alone proves nothing about who asked.
pub async fn require_admin(
    State(state): State<AppState>,
    mut req: Request,
    next: Next,
) -> Response {
    let caller = match admin_caller(&state, req.headers()).await {
        Ok(Some(found)) => found,
        Ok(None) => return ApiError::unauthorized("login required").into_response(),
        Err(e) => return e.into_response(),
    };
    if caller.by_session
        && !req.method().is_safe()
        && let Err(e) = same_origin(req.headers())
    {
        tracing::info!(method = %req.method(), path = %req.uri().path(), "refused a cross-origin admin change");
        return e.into_response();
    }
    let route = req
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_default();
    let needed = role_needed(req.method(), &route);
    if !caller.role.allows(needed) {
        tracing::info!(admin = %caller.name, role = %caller.role, method = %req.method(), %route, "refused: role");
        return ApiError::new(
            axum::http::StatusCode::FORBIDDEN,
            "role_forbidden",
            format!(
                "{} {route} needs the {needed} role; {} has the {} role",
                req.method(),
                caller.name,
                caller.role
            ),
        )
        .into_response();
    }
    if caller.must_change_password && !allowed_before_password_change(req.method(), &route) {
        return ApiError::new(
            axum::http::StatusCode::FORBIDDEN,
            "password_change_required",
            "this account has a one-time password: change it (POST /api/v1/session/password) first",
        )
        .into_response();
    }
    req.extensions_mut().insert(Caller {
        role: caller.role,
        by_session: caller.by_session,
        must_change_password: caller.must_change_password,
    });
    let actor = caller.name;
    let from = req
        .extensions()
        .get::<super::client::Client>()
        .map(|c| c.ip);
    req.extensions_mut()
        .insert(Actor(crate::model::Actor { name: actor, from }));
    next.run(req).await
}

/// The admin behind a bearer token or the session cookie.
async fn admin_caller(
    state: &AppState,
    headers: &HeaderMap,
) -> Result<Option<admins::Caller>, ApiError> {
    if let Some(auth) = header_str(headers, header::AUTHORIZATION.as_str()) {
        let Some(token) = auth.strip_prefix("Bearer ") else {
            return Ok(None);
        };
        return Ok(admins::token_caller(&state.store, token.trim()).await?);
    }
    match session_cookie(headers) {
        Some(session) => Ok(admins::session_caller(&state.store, session).await?),
        None => Ok(None),
    }
}

/// The header the dashboard sends on every request. A page on another origin cannot add it without a
/// CORS preflight, which the admin API never grants.
pub const DASHBOARD_HEADER: &str = "x-requested-with";

/// Whether a browser request comes from this server's own origin, by the first evidence present:
/// `Sec-Fetch-Site` (set by the browser, not by scripts), else `Origin` against `Host`, else the
/// dashboard's own header. With none of them (an old browser, a script with a cookie jar) it is refused:
/// scripts use a bearer token.
pub fn same_origin(headers: &HeaderMap) -> Result<(), ApiError> {
    let refuse = |from: String| {
        ApiError::new(
            axum::http::StatusCode::FORBIDDEN,
            "cross_origin",
            format!(
                "a change made with the session cookie must come from the dashboard's own origin; \
                 this one came from {from} (scripts authenticate with a bearer token instead)"
            ),
        )
    };
    if let Some(site) = headers.get("sec-fetch-site") {
        return match site.to_str() {
            Ok("same-origin") => Ok(()),
            Ok(other) => Err(refuse(format!("a {other} page (Sec-Fetch-Site)"))),
            Err(_) => Err(refuse("an unreadable Sec-Fetch-Site".into())),
        };
    }
    if let Some(origin) = headers.get(header::ORIGIN) {
        let text = origin.to_str().unwrap_or("an unreadable Origin");
        return match url::Url::parse(text) {
            Ok(url) if origin_is_host(&url, headers) => Ok(()),
            _ => Err(refuse(format!("origin {text}"))),
        };
    }
    if header_str(headers, DASHBOARD_HEADER).is_some() {
        return Ok(());
    }
    Err(refuse(format!(
        "a client that sent neither Origin, Sec-Fetch-Site nor {DASHBOARD_HEADER}"
    )))
}

/// Whether `origin` names the host and port this request was sent to (its `Host` header).
pub fn origin_is_host(origin: &url::Url, headers: &HeaderMap) -> bool {
    let Some(host) = origin.host_str() else {
        return false;
    };
    let authority = match origin.port() {
        Some(port) => format!("{host}:{port}"),
        None => host.to_string(),
    };
    headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .is_some_and(|h| h.eq_ignore_ascii_case(&authority))
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
