//! The HTTP server: routes, shared state, request logging, the checks on every request's head
//! (`head`) and serving connections (`serve`: plain or TLS via rustls, bounded, with graceful
//! shutdown). Only this module knows status codes, headers and JSON shapes.

mod admin;
mod assets;
mod client;
mod deliveries;
pub mod error;
pub mod extract;
mod head;
mod ledger;
mod limits;
mod ops;
mod public;
mod ratelimit;
mod sdk;
mod serve;
mod stats;
mod templates;
mod users;

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, patch, post};

use crate::config::Config;
use crate::dispatch::guard::UrlGuard;
use crate::signature::SignatureKey;
use crate::store::Store;
use error::ApiError;
pub use ratelimit::LoginLimiter;
pub use serve::{ConnectionBudget, Limits, raise_file_limit, serve};

/// What every handler can reach. One reference count to clone: axum clones the state for every
/// handler and middleware a request passes through.
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// The contents of [`AppState`].
pub struct Shared {
    pub store: Store,
    pub config: Arc<Config>,
    pub login_limiter: Arc<LoginLimiter>,
    /// Where login passwords are checked, a bounded number at once.
    pub password_checker: Arc<crate::credentials::PasswordChecker>,
    /// Whether we serve TLS ourselves (session cookies are then `Secure`).
    pub tls: bool,
    /// The callback-URL policy and resolver, applied whenever a callback URL is saved.
    pub guard: Arc<UrlGuard>,
    /// The key clicktermSignatures are issued and checked with.
    pub signature_key: SignatureKey,
    /// Wakes the dispatcher when a change may have made deliveries due (a signal, not a call: the
    /// deliveries themselves are already committed).
    pub wake: Arc<tokio::sync::Notify>,
    /// Asks the settling task to bring deliveries in line with changed integration settings, past
    /// the first batch the change did itself (`dispatch::settle`).
    pub settle: Arc<tokio::sync::Notify>,
    pub metrics: Arc<crate::metrics::Metrics>,
    /// Request rate limits per integration and per client address.
    pub limits: Arc<limits::RequestLimits>,
    /// The client certificates named in the config file (shown, not changed, by the admin API).
    pub client_certificates: Arc<crate::client_cert::ConfiguredCertificates>,
}

/// The signals handlers send to the background tasks after committing a change.
pub struct Signals {
    pub wake: Arc<tokio::sync::Notify>,
    pub settle: Arc<tokio::sync::Notify>,
}

impl AppState {
    pub fn new(
        config: Arc<Config>,
        store: Store,
        signature_key: SignatureKey,
        guard: Arc<UrlGuard>,
        signals: Signals,
        metrics: Arc<crate::metrics::Metrics>,
        client_certificates: Arc<crate::client_cert::ConfiguredCertificates>,
    ) -> AppState {
        let limiter = LoginLimiter::new(
            config.auth.login_max_failures,
            config.auth.login_max_failures_per_user,
            Duration::from_secs(config.auth.login_window_secs),
        );
        let password_checker =
            crate::credentials::PasswordChecker::new(config.auth.max_concurrent_logins);
        let tls = config.server.tls_cert.is_some();
        let limits = Arc::new(limits::RequestLimits::new(&config.limits, metrics.clone()));
        AppState(Arc::new(Shared {
            limits,
            store,
            config,
            login_limiter: Arc::new(limiter),
            password_checker: Arc::new(password_checker),
            tls,
            guard,
            signature_key,
            wake: signals.wake,
            settle: signals.settle,
            metrics,
            client_certificates,
        }))
    }
}

/// Every route of the server.
pub fn router(state: AppState) -> Router {
    let admin_routes = Router::new()
        .route("/api/v1/logout", post(admin::logout))
        .route("/api/v1/session", get(admin::session))
        .route("/api/v1/session/password", post(admin::change_own_password))
        .route("/api/v1/users", get(users::list).post(users::create))
        .route(
            "/api/v1/users/{username}",
            patch(users::patch).delete(users::delete),
        )
        .route(
            "/api/v1/users/{username}/password",
            post(users::reset_password),
        )
        .route(
            "/api/v1/users/{username}/sessions",
            get(users::sessions).delete(users::end_sessions),
        )
        .route(
            "/api/v1/users/{username}/sessions/{id}",
            delete(users::end_session),
        )
        .route(
            "/api/v1/integrations",
            get(admin::list_integrations).post(admin::create_integration),
        )
        .route(
            "/api/v1/integrations/{app_id}",
            get(admin::get_integration)
                .patch(admin::patch_integration)
                .delete(admin::delete_integration),
        )
        .route(
            "/api/v1/integrations/{app_id}/app-key",
            post(admin::regenerate_app_key),
        )
        .route(
            "/api/v1/integrations/{app_id}/signing-secret",
            get(admin::reveal_signing_secret).post(admin::rotate_signing_secret),
        )
        .route(
            "/api/v1/integrations/{app_id}/client-certificate",
            get(admin::get_client_certificate)
                .put(admin::put_client_certificate)
                .delete(admin::delete_client_certificate),
        )
        .route("/api/v1/audit", get(admin::audit_log))
        .route(
            "/api/v1/tokens",
            get(admin::list_tokens).post(admin::create_token),
        )
        .route("/api/v1/tokens/{id}", delete(admin::revoke_token))
        .route(
            "/api/v1/templates",
            get(templates::list).post(templates::create),
        )
        .route(
            "/api/v1/templates/{id}",
            get(templates::get).patch(templates::patch),
        )
        .route("/api/v1/templates/{id}/versions", post(templates::publish))
        .route("/api/v1/events", get(public::admin_events))
        .route("/api/v1/events/{id}", get(public::admin_event))
        .route("/api/v1/events/export", get(ledger::export))
        .route("/api/v1/events/{id}/evidence", get(ledger::admin_evidence))
        .route(
            "/api/v1/events/{id}/certificate.pdf",
            get(ledger::certificate),
        )
        .route("/api/v1/ledger/head", get(ledger::head))
        .route("/api/v1/templates/{id}/preview", post(templates::preview))
        .route(
            "/api/v1/integrations/{app_id}/delivery-counts",
            get(deliveries::counts),
        )
        .route(
            "/api/v1/integrations/{app_id}/deliveries",
            get(deliveries::list),
        )
        .route(
            "/api/v1/integrations/{app_id}/test-webhook",
            post(deliveries::test_webhook),
        )
        .route(
            "/api/v1/integrations/{app_id}/redeliver",
            post(deliveries::redeliver_failed),
        )
        .route("/api/v1/stats/overview", get(stats::overview))
        .route("/api/v1/stats/attempts", get(stats::attempts))
        .route("/api/v1/stats/events", get(stats::events))
        .route("/api/v1/deliveries/{id}", get(deliveries::get))
        .route(
            "/api/v1/deliveries/{id}/redeliver",
            post(deliveries::redeliver),
        )
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            extract::require_admin,
        ));

    let api = Router::new()
        .route("/api/v1/login", post(admin::login))
        .merge(admin_routes)
        .layer(middleware::from_fn(require_json_accept));

    let public = Router::new()
        .route(
            "/public-client/v1/clickwrap-templates",
            get(public::clickwrap_templates),
        )
        .route(
            "/public-client/v1/clickwrap/verify",
            post(public::verify).layer(axum::middleware::from_fn_with_state(
                state.clone(),
                ops::count_verify,
            )),
        )
        .route("/public-client/v1/clickwrap-events", get(public::events))
        .route(
            "/public-client/v1/clickwrap-events/{id}/details",
            get(public::event_details),
        )
        .route(
            "/public-client/v1/clickwrap-events/{id}/evidence",
            get(ledger::public_evidence),
        )
        .route(
            "/public-client/v1/clickwraps/{end_user_id}/status",
            get(public::status),
        )
        .route(
            "/public-client/v1/clickwraps/re-accept",
            post(public::reaccept),
        )
        .route(
            "/public-client/v1/clickwrap",
            get(sdk::present)
                .post(sdk::act)
                .options(sdk::preflight)
                .layer(middleware::from_fn_with_state(
                    state.clone(),
                    sdk::limit_address,
                )),
        )
        .layer(middleware::from_fn(require_json_accept));

    Router::new()
        .merge(api)
        .merge(public)
        .route("/healthz", get(ops::healthz))
        .route("/metrics", get(ops::metrics))
        .route("/sdk/clickterm-widget.js", get(assets::widget))
        .route("/demo", get(assets::demo))
        .route("/demo/", get(assets::demo))
        .route("/", get(assets::dashboard))
        .route("/dashboard/{*file}", get(assets::dashboard_file))
        .fallback(|| async { ApiError::not_found("route") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "method not allowed on this route",
            )
        })
        .layer(DefaultBodyLimit::max(state.config.server.max_body_bytes))
        .layer(middleware::from_fn_with_state(state.clone(), edge))
        .with_state(state)
}

/// 406 for a client that says it cannot read JSON.
async fn require_json_accept(req: Request, next: Next) -> Response {
    let accepts_json = req
        .headers()
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|m| {
            m.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        })
        .collect::<Vec<_>>();
    let ok = accepts_json.is_empty()
        || accepts_json
            .iter()
            .any(|m| m == "application/json" || m == "application/*" || m == "*/*" || m.is_empty());
    if !ok {
        return ApiError::new(
            StatusCode::NOT_ACCEPTABLE,
            "not_acceptable",
            "responses are application/json",
        )
        .into_response();
    }
    next.run(req).await
}

/// One line per request: method, path (never the query: it may carry identifiers), status, duration.
/// Every request's way in and out, in one middleware: the checks on its head ([`head::judge`]), then
/// the route; its log line and the headers every answer carries on the way out.
async fn edge(
    axum::extract::State(state): axum::extract::State<AppState>,
    mut req: Request,
    next: Next,
) -> Response {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let start = Instant::now();
    let peer = req
        .extensions()
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map_or(std::net::SocketAddr::from(([0, 0, 0, 0], 0)), |c| c.0);
    let client = client::client_of(
        peer,
        req.headers(),
        &state.config.server.trusted_proxies,
        state.config.server.proxy_header,
        state.tls,
    );
    req.extensions_mut().insert(client);
    let client = client.ip;
    let mut res = match head::judge(req.uri(), req.headers(), state.config.server.max_body_bytes) {
        Ok(()) => next.run(req).await,
        Err(e) => e.into_response(),
    };
    let status = res.status().as_u16();
    let ms = start.elapsed().as_secs_f64() * 1000.0;
    // Refusals that come in floods — rate limited, busy, disk full — are counted in /metrics and
    // their episodes logged once where they start; a line per request would let a flood fill the log.
    let shed = matches!(status, 429 | 503 | 507);
    if shed {
        tracing::debug!(%client, %method, %path, status, ms, "request");
    } else if status >= 500 {
        tracing::warn!(%client, %method, %path, status, ms, "request");
    } else if status >= 400 {
        tracing::info!(%client, %method, %path, status, ms, "request");
    } else {
        tracing::debug!(%client, %method, %path, status, ms, "request");
    }
    res.headers_mut().insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    res
}

/// Builds the rustls server configuration from PEM files.
pub fn tls_config(
    cert: &std::path::Path,
    key: &std::path::Path,
) -> anyhow::Result<Arc<rustls::ServerConfig>> {
    use anyhow::Context;
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let certs = CertificateDer::pem_file_iter(cert)
        .with_context(|| format!("server.tls_cert: cannot read {}", cert.display()))?
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| {
            format!(
                "server.tls_cert: {} is not a PEM certificate chain",
                cert.display()
            )
        })?;
    if certs.is_empty() {
        anyhow::bail!(
            "server.tls_cert: {} contains no certificate",
            cert.display()
        );
    }
    let key = PrivateKeyDer::from_pem_file(key).with_context(|| {
        format!(
            "server.tls_key: cannot read a PEM private key from {}",
            key.display()
        )
    })?;
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .context("server.tls_cert / server.tls_key do not form a usable certificate and key")?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}
