//! The two SDK endpoints the browser widget calls with only the public App ID —
//! `GET /public-client/v1/clickwrap` (render and record a presentation) and `POST /public-client/v1/clickwrap`
//! (record an action, get its signature) — and their CORS answers.
//!
//! The request's `Origin` is checked against the integration's allowed domains before anything is
//! recorded: a refused origin gets 403 and no `Access-Control-Allow-Origin`, and the database is not
//! touched. A request without `Origin` (a server, curl) is not a browser and CORS does not apply to it.
//! The appliance's own origin is always allowed, so its demo page works without configuration.

use axum::Json;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use super::AppState;
use super::client::Client;
use super::error::ApiError;
use super::extract::{ApiJson, origin_is_host};
use crate::clickwrap::{self, Placeholders};
use crate::model::{Action, Domain, EndUserId, Language, Timestamp};

/// An allowed browser origin, echoed in `Access-Control-Allow-Origin`.
struct AllowedOrigin(Option<HeaderValue>);

impl AllowedOrigin {
    fn apply(self, mut res: Response) -> Response {
        if let Some(origin) = self.0 {
            let h = res.headers_mut();
            h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
            h.insert(header::VARY, HeaderValue::from_static("Origin"));
        }
        res
    }
}

/// Judges the `Origin` header against `domains` (and our own origin).
fn check_origin(headers: &HeaderMap, domains: &[Domain]) -> Result<AllowedOrigin, ApiError> {
    let Some(raw) = headers.get(header::ORIGIN) else {
        return Ok(AllowedOrigin(None));
    };
    let refuse = |why: String| ApiError::new(StatusCode::FORBIDDEN, "origin_not_allowed", why);
    let text = raw
        .to_str()
        .map_err(|_| refuse("the Origin header is not readable".into()))?;
    let url = url::Url::parse(text)
        .map_err(|_| refuse(format!("origin {text:?} is not an allowed domain")))?;
    let Some(host) = url.host_str() else {
        return Err(refuse(format!("origin {text:?} is not an allowed domain")));
    };
    let port = url.port_or_known_default();
    if origin_is_host(&url, headers) || domains.iter().any(|d| d.covers(host, port)) {
        Ok(AllowedOrigin(Some(raw.clone())))
    } else {
        Err(refuse(format!(
            "origin {text} is not an allowed domain of this integration"
        )))
    }
}

/// The error response, carrying CORS headers when the origin was allowed (so the page can read it).
fn fail(origin: Option<AllowedOrigin>, e: impl Into<ApiError>) -> Response {
    let res = e.into().into_response();
    match origin {
        Some(o) => o.apply(res),
        None => res,
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct PresentedJson {
    clickwrap_template_id: String,
    clickwrap_template_name: String,
    clickwrap_template_version: i64,
    clickwrap_template_version_minor: i64,
    effective_at: String,
    must_accept_by: Option<String>,
    language: String,
    title: String,
    content: String,
    inline_content: Option<String>,
    is_already_accepted: bool,
    re_acceptance_required: bool,
}

/// `GET /clickwrap?appId&clickwrapTemplateId&endUserId&language&templatePlaceholders` (other parameters
/// are placeholders too: `&fullName=Ann`).
pub async fn present(
    State(state): State<AppState>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    let (mut app_id, mut template_id, mut end_user, mut language) = (None, None, None, None);
    let mut placeholders = Placeholders::default();
    for (k, v) in url::form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        let v = v.into_owned();
        let r = match k.as_ref() {
            "appId" => {
                app_id = Some(v);
                Ok(())
            }
            "clickwrapTemplateId" => {
                template_id = Some(v);
                Ok(())
            }
            "endUserId" => {
                end_user = Some(v);
                Ok(())
            }
            "language" => {
                language = Some(v);
                Ok(())
            }
            "templatePlaceholders" => Placeholders::from_json(&serde_json::Value::String(v))
                .and_then(|p| placeholders.merge(p)),
            name => placeholders.insert(name, v),
        };
        if let Err(e) = r {
            return fail(None, ApiError::invalid("templatePlaceholders", e));
        }
    }
    let Some(app_id) = app_id else {
        return fail(None, ApiError::invalid("appId", "is required"));
    };
    let app = match clickwrap::sdk_app(&state.store, &app_id).await {
        Ok(app) => app,
        Err(e) => return fail(None, e),
    };
    let origin = match check_origin(&headers, &app.domains) {
        Ok(o) => o,
        Err(e) => return fail(None, e),
    };
    let parsed = (|| {
        let template_id =
            template_id.ok_or_else(|| ApiError::invalid("clickwrapTemplateId", "is required"))?;
        let end_user = EndUserId::parse(end_user.as_deref().unwrap_or(""))
            .map_err(|e| ApiError::invalid("endUserId", e))?;
        let language = language
            .filter(|l| !l.is_empty())
            .map(|l| Language::parse(&l).map_err(|e| ApiError::invalid("language", e)))
            .transpose()?;
        Ok::<_, ApiError>((template_id, end_user, language))
    })();
    let (template_id, end_user, language) = match parsed {
        Ok(p) => p,
        Err(e) => return fail(Some(origin), e),
    };
    match clickwrap::present(
        &state.store,
        &app,
        &template_id,
        end_user,
        language,
        placeholders,
    )
    .await
    {
        Ok(p) => origin.apply(
            Json(PresentedJson {
                clickwrap_template_id: p.template_id,
                clickwrap_template_name: p.template_name,
                clickwrap_template_version: p.version.major,
                clickwrap_template_version_minor: p.version.minor,
                effective_at: p.version.effective_at.to_rfc3339(),
                must_accept_by: p.version.must_accept_by.map(Timestamp::to_rfc3339),
                language: p.language.as_str().to_string(),
                title: p.title,
                content: p.content,
                inline_content: p.inline_content,
                is_already_accepted: p.is_already_accepted,
                re_acceptance_required: p.reaccept_required,
            })
            .into_response(),
        ),
        Err(e) => fail(Some(origin), e),
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ActBody {
    app_id: String,
    clickwrap_template_id: String,
    end_user_id: String,
    action: String,
    #[serde(default)]
    template_placeholders: serde_json::Value,
    #[serde(default)]
    language: Option<String>,
}

/// `POST /clickwrap`: records the end user's action, unverified, and returns its signature.
pub async fn act(
    State(state): State<AppState>,
    client: Client,
    headers: HeaderMap,
    ApiJson(body): ApiJson<ActBody>,
) -> Response {
    let app = match clickwrap::sdk_app(&state.store, &body.app_id).await {
        Ok(app) => app,
        Err(e) => return fail(None, e),
    };
    let origin = match check_origin(&headers, &app.domains) {
        Ok(o) => o,
        Err(e) => return fail(None, e),
    };
    let parsed = (|| {
        let end_user =
            EndUserId::parse(&body.end_user_id).map_err(|e| ApiError::invalid("endUserId", e))?;
        let action = Action::parse(&body.action)
            .ok_or_else(|| ApiError::invalid("action", "must be ACCEPTED or DECLINED"))?;
        let placeholders = Placeholders::from_json(&body.template_placeholders)
            .map_err(|e| ApiError::invalid("templatePlaceholders", e))?;
        let language = body
            .language
            .as_deref()
            .filter(|l| !l.is_empty())
            .map(|l| Language::parse(l).map_err(|e| ApiError::invalid("language", e)))
            .transpose()?;
        Ok::<_, ApiError>((end_user, action, placeholders, language))
    })();
    let (end_user, action, placeholders, language) = match parsed {
        Ok(p) => p,
        Err(e) => return fail(Some(origin), e),
    };
    let user_agent = headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let user_agent: String = user_agent.chars().take(512).collect();
    let metadata = serde_json::to_string(&TechnicalMetadata {
        user_agent: &user_agent,
        ip: client.ip.to_string(),
    })
    .expect("serialisable");
    let acted = clickwrap::act(
        &state.store,
        &state.signature_key,
        &app,
        &body.clickwrap_template_id,
        end_user,
        action,
        placeholders,
        language,
        metadata,
    )
    .await;
    match acted {
        Ok(a) => origin.apply(
            (
                StatusCode::CREATED,
                Json(ActedJson {
                    clickterm_signature: a.signature,
                    clickwrap_event_id: a.event_id,
                }),
            )
                .into_response(),
        ),
        Err(e) => fail(Some(origin), e),
    }
}

/// CORS preflight for the SDK endpoints. With `appId` in the query it is judged against that
/// integration's domains; otherwise against every enabled integration's (the actual request is judged
/// again, against its own integration, before anything is recorded).
pub async fn preflight(
    State(state): State<AppState>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    let app_id = url::form_urlencoded::parse(query.unwrap_or_default().as_bytes())
        .find(|(k, _)| k == "appId")
        .map(|(_, v)| v.into_owned());
    let domains = match app_id {
        Some(id) => match clickwrap::sdk_app(&state.store, &id).await {
            Ok(app) => app.domains,
            Err(e) => return fail(None, e),
        },
        None => match state.store.all_enabled_domains().await {
            Ok(d) => d,
            Err(e) => return fail(None, e),
        },
    };
    match check_origin(&headers, &domains) {
        Ok(origin) => {
            let mut res = StatusCode::NO_CONTENT.into_response();
            let h = res.headers_mut();
            h.insert(
                header::ACCESS_CONTROL_ALLOW_METHODS,
                HeaderValue::from_static("GET, POST"),
            );
            h.insert(
                header::ACCESS_CONTROL_ALLOW_HEADERS,
                HeaderValue::from_static("content-type"),
            );
            h.insert(
                header::ACCESS_CONTROL_MAX_AGE,
                HeaderValue::from_static("600"),
            );
            origin.apply(res)
        }
        Err(e) => fail(None, e),
    }
}

/// Middleware for the SDK route: the client address's rate limit, before anything is parsed or read.
pub async fn limit_address(
    State(state): State<AppState>,
    client: Client,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    match state.limits.address(client.ip) {
        Ok(()) => next.run(request).await,
        Err(e) => e.into_response(),
    }
}

/// What the SDK records about the end user's client with each action (the event's
/// `technicalMetadata`).
#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct TechnicalMetadata<'a> {
    user_agent: &'a str,
    ip: String,
}

/// The answer to an end user's action: the signature their backend verifies.
#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct ActedJson {
    clickterm_signature: String,
    clickwrap_event_id: String,
}
