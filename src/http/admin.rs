//! The admin API under `/api/v1`: login and logout, integrations (their client certificates too),
//! the audit log. Handlers parse the wire type into domain types, call the service, and map the
//! result back.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Deserializer, Serialize};

use super::AppState;
use super::client::Client;
use super::error::ApiError;
use super::extract::{
    Actor, ApiJson, ApiPath, ApiQuery, Caller, SESSION_COOKIE, same_origin, session_cookie,
};
use super::ratelimit::Locked;
use crate::dispatch::guard::UrlRefused;
use crate::model::{CallbackUrl, Domain, Integration, IntegrationStatus, Name, Role};
use crate::store::admin::SessionStart;
use crate::store::integrations::Changes;
use crate::{admins, integrations};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoginBody {
    username: String,
    password: String,
}

pub async fn login(
    State(state): State<AppState>,
    client: Client,
    headers: HeaderMap,
    ApiJson(body): ApiJson<LoginBody>,
) -> Result<Response, ApiError> {
    // A browser says where a login comes from; another origin may not log the browser in (into an
    // account of its choosing). A script without a browser's headers logs in as before.
    if headers.contains_key("sec-fetch-site") || headers.contains_key(header::ORIGIN) {
        same_origin(&headers)?;
    }
    let ip = client.ip;
    // Reserved before the password is hashed: see `ratelimit`.
    let attempt = match state.login_limiter.begin(ip, &body.username) {
        Ok(attempt) => attempt,
        Err(Locked { retry_after }) => {
            tracing::info!(client = %ip, "admin login refused: too many failures");
            return Err(ApiError::too_many(retry_after));
        }
    };
    let Some(slot) = state.password_checker.try_slot() else {
        attempt.not_checked();
        return Err(ApiError::busy(
            "every password check is in use; try again in a second",
        ));
    };
    let ttl = state.config.auth.session_ttl_secs;
    let start = SessionStart {
        from: Some(ip.to_string()),
        user_agent: user_agent(&headers),
    };
    let login = admins::login(
        &state.store,
        (&body.username, &body.password),
        ttl,
        slot,
        start,
    );
    let Some(session) = login.await? else {
        attempt.failed();
        tracing::info!(client = %ip, "failed admin login");
        return Err(ApiError::unauthorized("wrong user name or password"));
    };
    attempt.succeeded();
    // Over HTTPS, ours or a trusted proxy's, the cookie is only ever sent back over HTTPS.
    let secure = if client.https { "; Secure" } else { "" };
    let cookie = format!(
        "{SESSION_COOKIE}={session}; Path=/; HttpOnly; SameSite=Strict; Max-Age={ttl}{secure}"
    );
    let caller = admins::session_caller(&state.store, &session)
        .await?
        .ok_or_else(|| ApiError::unauthorized("the session ended at once"))?;
    let mut res = Json(SessionJson {
        username: caller.name,
        role: caller.role.as_str(),
        must_change_password: caller.must_change_password,
    })
    .into_response();
    res.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_str(&cookie).expect("cookie is ASCII"),
    );
    Ok(res)
}

pub async fn logout(
    State(state): State<AppState>,
    client: Client,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    if let Some(session) = session_cookie(&headers) {
        admins::logout(&state.store, session).await?;
    }
    let secure = if client.https { "; Secure" } else { "" };
    let cookie = format!("{SESSION_COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0{secure}");
    let mut res = StatusCode::NO_CONTENT.into_response();
    res.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_str(&cookie).expect("cookie is ASCII"),
    );
    Ok(res)
}

/// The browser a session was started from, as it says (cut to 200 characters), to tell sessions
/// apart in the list.
fn user_agent(headers: &HeaderMap) -> Option<String> {
    let ua = headers.get(header::USER_AGENT)?.to_str().ok()?;
    Some(ua.chars().take(200).collect())
}

/// Who is logged in, and what they may do.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SessionJson {
    username: String,
    role: &'static str,
    must_change_password: bool,
}

/// Who am I: lets the dashboard find out whether its session is still alive, and what to offer.
pub async fn session(Actor(actor): Actor, caller: Caller) -> Result<Json<SessionJson>, ApiError> {
    Ok(Json(SessionJson {
        username: actor.name,
        role: caller.role.as_str(),
        must_change_password: caller.must_change_password,
    }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct OwnPasswordBody {
    current_password: String,
    new_password: String,
}

/// `POST /api/v1/session/password` `{"currentPassword", "newPassword"}`: a user changes their own
/// password (the way out of a one-time one). Every session of theirs ends, this one included: log in
/// again. Limited like a login, since it checks a password.
pub async fn change_own_password(
    State(state): State<AppState>,
    Actor(actor): Actor,
    caller: Caller,
    client: Client,
    ApiJson(body): ApiJson<OwnPasswordBody>,
) -> Result<StatusCode, ApiError> {
    if !caller.by_session {
        return Err(ApiError::invalid(
            "session",
            "a bearer token has no password; log in as the user to change theirs",
        ));
    }
    let attempt = match state.login_limiter.begin(client.ip, &actor.name) {
        Ok(attempt) => attempt,
        Err(Locked { retry_after }) => return Err(ApiError::too_many(retry_after)),
    };
    let Some(slot) = state.password_checker.try_slot() else {
        attempt.not_checked();
        return Err(ApiError::busy(
            "every password check is in use; try again in a second",
        ));
    };
    let changed = admins::change_own_password(
        &state.store,
        &state.config.storage.data_dir,
        &actor,
        (body.current_password, body.new_password),
        slot,
    )
    .await?;
    if !changed {
        attempt.failed();
        return Err(ApiError::invalid(
            "currentPassword",
            "is not this user's password",
        ));
    }
    attempt.succeeded();
    Ok(StatusCode::NO_CONTENT)
}

/// A new App Key, shown this once.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AppKeyJson {
    app_key: String,
}

/// An integration's signing secret.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SigningSecretJson {
    signing_secret: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct IntegrationJson {
    app_id: String,
    name: String,
    status: &'static str,
    domains: Vec<String>,
    created_at: String,
    callback_url: Option<String>,
    webhook_delivery_enabled: bool,
}

impl From<Integration> for IntegrationJson {
    fn from(i: Integration) -> Self {
        IntegrationJson {
            app_id: i.app_id,
            name: i.name.as_str().to_string(),
            status: i.status.as_str(),
            domains: i.domains.iter().map(|d| d.as_str().to_string()).collect(),
            created_at: i.created_at.to_rfc3339(),
            callback_url: i.callback_url.map(|u| u.as_str().to_string()),
            webhook_delivery_enabled: i.webhook_delivery_enabled,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CreateBody {
    name: String,
    #[serde(default)]
    domains: Vec<String>,
    #[serde(default)]
    callback_url: Option<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CreatedJson {
    #[serde(flatten)]
    integration: IntegrationJson,
    app_key: String,
    signing_secret: String,
}

pub async fn list_integrations(
    State(state): State<AppState>,
) -> Result<Json<Vec<IntegrationJson>>, ApiError> {
    let list = integrations::list(&state.store).await?;
    Ok(Json(list.into_iter().map(IntegrationJson::from).collect()))
}

pub async fn create_integration(
    State(state): State<AppState>,
    Actor(actor): Actor,
    ApiJson(body): ApiJson<CreateBody>,
) -> Result<(StatusCode, Json<CreatedJson>), ApiError> {
    let name = Name::parse(&body.name).map_err(|e| ApiError::invalid("name", e))?;
    let domains = parse_domains(&body.domains)?;
    let callback = match body.callback_url.as_deref() {
        Some(u) => Some(parse_callback(&state, u).await?),
        None => None,
    };
    let created = integrations::create(&state.store, &actor, name, domains, callback).await?;
    Ok((
        StatusCode::CREATED,
        Json(CreatedJson {
            integration: created.integration.into(),
            app_key: created.app_key,
            signing_secret: created.signing_secret,
        }),
    ))
}

pub async fn get_integration(
    State(state): State<AppState>,
    ApiPath(app_id): ApiPath<String>,
) -> Result<Json<IntegrationJson>, ApiError> {
    Ok(Json(integrations::get(&state.store, &app_id).await?.into()))
}

/// Tells "absent" (leave as is) from `null` (clear) for optional fields of a PATCH.
fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Option<Option<T>>, D::Error> {
    Ok(Some(Option::deserialize(d)?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PatchBody {
    name: Option<String>,
    status: Option<String>,
    domains: Option<Vec<String>>,
    #[serde(default, deserialize_with = "present")]
    callback_url: Option<Option<String>>,
    webhook_delivery_enabled: Option<bool>,
}

pub async fn patch_integration(
    State(state): State<AppState>,
    Actor(actor): Actor,
    ApiPath(app_id): ApiPath<String>,
    ApiJson(body): ApiJson<PatchBody>,
) -> Result<Json<IntegrationJson>, ApiError> {
    // Everything is parsed before anything is written: a bad field changes nothing.
    let changes = Changes {
        name: body
            .name
            .as_deref()
            .map(Name::parse)
            .transpose()
            .map_err(|e| ApiError::invalid("name", e))?,
        status: body
            .status
            .as_deref()
            .map(|s| {
                IntegrationStatus::parse(s)
                    .ok_or_else(|| ApiError::invalid("status", "must be ENABLED or DISABLED"))
            })
            .transpose()?,
        domains: body.domains.as_deref().map(parse_domains).transpose()?,
        callback_url: match body.callback_url {
            None => None,
            Some(u) => match u.filter(|u| !u.trim().is_empty()) {
                Some(u) => Some(Some(parse_callback(&state, &u).await?)),
                None => Some(None),
            },
        },
        webhook_delivery_enabled: body.webhook_delivery_enabled,
    };
    let updated = integrations::update(&state.store, &actor, &app_id, changes).await?;
    state.wake.notify_one();
    state.settle.notify_one();
    Ok(Json(updated.into()))
}

pub async fn delete_integration(
    State(state): State<AppState>,
    Actor(actor): Actor,
    ApiPath(app_id): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    integrations::delete(&state.store, &actor, &app_id).await?;
    state.settle.notify_one();
    Ok(StatusCode::NO_CONTENT)
}

pub async fn regenerate_app_key(
    State(state): State<AppState>,
    Actor(actor): Actor,
    ApiPath(app_id): ApiPath<String>,
) -> Result<Json<AppKeyJson>, ApiError> {
    let app_key = integrations::regenerate_app_key(&state.store, &actor, &app_id).await?;
    Ok(Json(AppKeyJson { app_key }))
}

pub async fn reveal_signing_secret(
    State(state): State<AppState>,
    Actor(actor): Actor,
    ApiPath(app_id): ApiPath<String>,
) -> Result<Json<SigningSecretJson>, ApiError> {
    let signing_secret = integrations::reveal_signing_secret(&state.store, &actor, &app_id).await?;
    Ok(Json(SigningSecretJson { signing_secret }))
}

pub async fn rotate_signing_secret(
    State(state): State<AppState>,
    Actor(actor): Actor,
    ApiPath(app_id): ApiPath<String>,
) -> Result<Json<SigningSecretJson>, ApiError> {
    let signing_secret = integrations::rotate_signing_secret(&state.store, &actor, &app_id).await?;
    Ok(Json(SigningSecretJson { signing_secret }))
}

/// `PUT …/client-certificate`: the PEM texts (the dashboard reads them from two files).
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ClientCertificateBody {
    /// The client certificate, then any intermediates.
    certificate: String,
    /// Its private key, unencrypted.
    private_key: String,
}

/// What is shown of an integration's client certificate: never its key.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ClientCertificateJson {
    subject: String,
    issuer: String,
    not_before: String,
    not_after: String,
    /// SHA-256 of the certificate, as `openssl x509 -noout -fingerprint -sha256` prints it.
    fingerprint_sha256: String,
    /// Certificates sent: the client's and its intermediates.
    chain_length: usize,
    /// `upload` (admin API or dashboard) or `config` (`webhooks.client_certificates`).
    source: &'static str,
    /// When it was uploaded.
    set_at: Option<String>,
    /// The file it was read from at start.
    cert_file: Option<String>,
}

impl From<integrations::CertificateView> for ClientCertificateJson {
    fn from(v: integrations::CertificateView) -> Self {
        let s = v.summary;
        let (source, set_at, cert_file) = match v.source {
            integrations::CertificateSource::Upload { set_at } => {
                ("upload", Some(set_at.to_rfc3339()), None)
            }
            integrations::CertificateSource::Config { cert_file } => {
                ("config", None, Some(cert_file.display().to_string()))
            }
        };
        ClientCertificateJson {
            subject: s.subject,
            issuer: s.issuer,
            not_before: s.not_before.to_rfc3339(),
            not_after: s.not_after.to_rfc3339(),
            fingerprint_sha256: s.fingerprint.to_string(),
            chain_length: s.chain,
            source,
            set_at,
            cert_file,
        }
    }
}

pub async fn get_client_certificate(
    State(state): State<AppState>,
    ApiPath(app_id): ApiPath<String>,
) -> Result<Json<ClientCertificateJson>, ApiError> {
    let view =
        integrations::client_certificate(&state.store, &state.client_certificates, &app_id).await?;
    Ok(Json(view.into()))
}

/// Sets or replaces the certificate, checked first: the PEM parses, the key is the certificate's,
/// it is meant for TLS clients and valid now; a refusal names the field and the problem.
pub async fn put_client_certificate(
    State(state): State<AppState>,
    Actor(actor): Actor,
    ApiPath(app_id): ApiPath<String>,
    ApiJson(body): ApiJson<ClientCertificateBody>,
) -> Result<Json<ClientCertificateJson>, ApiError> {
    use crate::client_cert::{ClientCertificate, Part};
    // Parsing a key is a few milliseconds of CPU (RSA's checks): off the async workers.
    let checked = tokio::task::spawn_blocking(move || {
        let c = ClientCertificate::load(&body.certificate, &body.private_key)?;
        c.check_valid_at(crate::model::Timestamp::now())?;
        Ok(c)
    })
    .await
    .map_err(|e| crate::store::StoreError::Task(e.to_string()))?;
    let certificate = checked.map_err(|e: crate::client_cert::Refused| {
        let field = match e.part {
            Part::Certificate => "certificate",
            Part::Key => "privateKey",
        };
        ApiError::invalid(field, e.reason)
    })?;
    let view = integrations::set_client_certificate(
        &state.store,
        &state.client_certificates,
        &actor,
        &app_id,
        certificate,
    )
    .await?;
    Ok(Json(view.into()))
}

pub async fn delete_client_certificate(
    State(state): State<AppState>,
    Actor(actor): Actor,
    ApiPath(app_id): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    integrations::remove_client_certificate(
        &state.store,
        &state.client_certificates,
        &actor,
        &app_id,
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

fn parse_domains(raw: &[String]) -> Result<Vec<Domain>, ApiError> {
    if raw.len() > 100 {
        return Err(ApiError::invalid("domains", "at most 100 entries"));
    }
    raw.iter()
        .map(|d| Domain::parse(d).map_err(|e| ApiError::invalid("domains", e)))
        .collect()
}

/// A callback URL must pass the whole policy of §6 before it is saved: the static checks (scheme,
/// user-info, `localhost`, IP literals in any spelling, our own address), then resolution and every
/// address. The reason is returned when it does not; the dispatcher decides again at every attempt.
async fn parse_callback(state: &AppState, raw: &str) -> Result<CallbackUrl, ApiError> {
    state
        .guard
        .admit(raw)
        .await
        .map_err(|refusal| match refusal {
            UrlRefused::TooLong => ApiError::invalid("callbackUrl", refusal.to_string()),
            _ => ApiError::new(
                StatusCode::BAD_REQUEST,
                "callback_url_refused",
                format!("callbackUrl: {refusal}"),
            ),
        })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    limit: Option<u32>,
    before: Option<i64>,
}

pub async fn audit_log(
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<AuditQuery>,
) -> Result<Json<AuditPage>, ApiError> {
    let limit = q.limit.unwrap_or(50);
    if !(1..=500).contains(&limit) {
        return Err(ApiError::invalid("limit", "must be between 1 and 500"));
    }
    let entries = state.store.audit_log(limit, q.before).await?;
    let next_before = (entries.len() == limit as usize)
        .then(|| entries.last().map(|e| e.id))
        .flatten();
    let items = entries
        .into_iter()
        .map(|e| AuditJson {
            id: e.id,
            at: e.at.to_rfc3339(),
            actor: e.actor,
            from: e.from,
            action: e.action,
            target: e.target,
            detail: e.detail,
        })
        .collect();
    Ok(Json(AuditPage { items, next_before }))
}

/// One audit log entry.
#[derive(Serialize)]
pub struct AuditJson {
    id: i64,
    at: String,
    actor: String,
    /// The client address the change came from; null for the command line.
    from: Option<String>,
    action: String,
    target: Option<String>,
    detail: Option<String>,
}

/// A page of the audit log, newest first.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AuditPage {
    items: Vec<AuditJson>,
    next_before: Option<i64>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TokenJson {
    id: i64,
    name: String,
    role: &'static str,
    created_at: String,
}

#[derive(Serialize)]
pub struct TokensJson {
    items: Vec<TokenJson>,
}

/// `GET /api/v1/tokens`: the admin bearer tokens (names and dates; the tokens themselves are not kept).
pub async fn list_tokens(State(state): State<AppState>) -> Result<Json<TokensJson>, ApiError> {
    let tokens = admins::list_tokens(&state.store).await?;
    Ok(Json(TokensJson {
        items: tokens
            .into_iter()
            .map(|t| TokenJson {
                id: t.id,
                name: t.name,
                role: t.role.as_str(),
                created_at: t.created_at.to_rfc3339(),
            })
            .collect(),
    }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenBody {
    name: String,
    /// `admin` when not given; at most the creator's own.
    role: Option<String>,
}

#[derive(Serialize)]
pub struct CreatedTokenJson {
    token: String,
}

/// `POST /api/v1/tokens` `{"name", "role"?}` → `{"token"}`, shown once.
pub async fn create_token(
    State(state): State<AppState>,
    Actor(actor): Actor,
    caller: Caller,
    ApiJson(body): ApiJson<TokenBody>,
) -> Result<(StatusCode, Json<CreatedTokenJson>), ApiError> {
    let role = match body.role.as_deref() {
        None => Role::Admin,
        Some(text) => parse_role(text)?,
    };
    let token = admins::create_token(&state.store, &actor, caller.role, &body.name, role).await?;
    Ok((StatusCode::CREATED, Json(CreatedTokenJson { token })))
}

/// `DELETE /api/v1/tokens/{id}`: revoked at once.
pub async fn revoke_token(
    State(state): State<AppState>,
    Actor(actor): Actor,
    ApiPath(id): ApiPath<i64>,
) -> Result<StatusCode, ApiError> {
    admins::revoke_token(&state.store, &actor, id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A role as the API spells it; anything else is 400 naming the field.
pub fn parse_role(text: &str) -> Result<Role, ApiError> {
    Role::parse(text)
        .ok_or_else(|| ApiError::invalid("role", format!("must be one of {}", Role::spellings())))
}
