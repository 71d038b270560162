//! The ClickTerm-compatible public client API under `/public-client/v1` (server-side endpoints,
//! authenticated by App ID and App Key). Field names and shapes follow ClickTerm exactly.

use axum::Json;
use axum::extract::{RawQuery, State};
use serde::{Deserialize, Serialize};

use super::AppState;
use super::error::ApiError;
use super::extract::{ApiJson, ApiPath, ApiQuery, AppCaller};
use crate::clickwrap;
use crate::model::{Action, ClickwrapEvent, EndUserId, Timestamp};
use crate::store::events::Filter;
use crate::templates;

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TemplateItem {
    clickwrap_template_id: String,
    clickwrap_template_name: String,
    clickwrap_template_version: i64,
    clickwrap_template_version_minor: i64,
    tags: Vec<String>,
    effective_at: String,
    must_accept_by: Option<String>,
}

/// Tags one template query may name.
const MAX_TAGS: usize = 50;

/// `GET /clickwrap-templates?tags=a&tags=b`: enabled templates visible to the caller with their
/// effective version; with tags, those carrying at least one of them.
pub async fn clickwrap_templates(
    State(state): State<AppState>,
    caller: AppCaller,
    RawQuery(query): RawQuery,
) -> Result<Json<Vec<TemplateItem>>, ApiError> {
    let mut tags = Vec::new();
    for (key, value) in url::form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        match key.as_ref() {
            "tags" | "tags[]" => tags.extend(
                value
                    .split(',')
                    .map(str::trim)
                    .filter(|t| !t.is_empty())
                    .map(String::from),
            ),
            other => {
                return Err(ApiError::invalid(
                    other,
                    "unknown query parameter (expected tags)",
                ));
            }
        }
        if tags.len() > MAX_TAGS {
            return Err(ApiError::invalid(
                "tags",
                format!("at most {MAX_TAGS} tags in one request"),
            ));
        }
    }
    let views = templates::visible_to(&state.store, caller.integration_id, tags).await?;
    Ok(Json(
        views
            .into_iter()
            .filter_map(|v| {
                let e = v.effective?;
                Some(TemplateItem {
                    clickwrap_template_id: v.template.template_id,
                    clickwrap_template_name: v.template.name.as_str().to_string(),
                    clickwrap_template_version: e.major,
                    clickwrap_template_version_minor: e.minor,
                    tags: v
                        .template
                        .tags
                        .iter()
                        .map(|t| t.as_str().to_string())
                        .collect(),
                    effective_at: e.effective_at.to_rfc3339(),
                    must_accept_by: e.must_accept_by.map(Timestamp::to_rfc3339),
                })
            })
            .collect(),
    ))
}

/// The fields of a clickwrap event as ClickTerm returns them from verify (SPEC §3).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EventJson {
    clickwrap_event_status: &'static str,
    clickwrap_event_id: String,
    clickwrap_template_id: String,
    clickwrap_template_version: i64,
    clickwrap_template_version_minor: i64,
    end_user_id: String,
    template_placeholders: Option<String>,
    technical_metadata: String,
    action_at: String,
    effective_at: String,
}

impl From<&ClickwrapEvent> for EventJson {
    fn from(e: &ClickwrapEvent) -> Self {
        EventJson {
            clickwrap_event_status: e.action.as_str(),
            clickwrap_event_id: e.event_id.clone(),
            clickwrap_template_id: e.template_id.clone(),
            clickwrap_template_version: e.major,
            clickwrap_template_version_minor: e.minor,
            end_user_id: e.end_user_id.clone(),
            template_placeholders: e.template_placeholders.clone(),
            technical_metadata: e.technical_metadata.clone(),
            action_at: e.action_at.to_rfc3339(),
            effective_at: e.effective_at.to_rfc3339(),
        }
    }
}

/// A list item: the verify fields plus `presentedAt`.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EventItemJson {
    #[serde(flatten)]
    event: EventJson,
    presented_at: Option<String>,
}

impl From<&ClickwrapEvent> for EventItemJson {
    fn from(e: &ClickwrapEvent) -> Self {
        EventItemJson {
            event: e.into(),
            presented_at: e.presented_at.map(Timestamp::to_rfc3339),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct VerifyBody {
    clickterm_signature: String,
}

/// `POST /clickwrap/verify`.
pub async fn verify(
    State(state): State<AppState>,
    caller: AppCaller,
    ApiJson(body): ApiJson<VerifyBody>,
) -> Result<Json<EventJson>, ApiError> {
    let ttl = state.config.clickwrap.signature_ttl_secs;
    let event = clickwrap::verify(
        &state.store,
        &state.signature_key,
        caller.integration_id,
        &body.clickterm_signature,
        ttl,
    )
    .await?;
    state.wake.notify_one();
    Ok(Json((&event).into()))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct EventsQuery {
    clickwrap_template_id: Option<String>,
    end_user_id: Option<String>,
    clickwrap_event_status: Option<String>,
    from: Option<String>,
    to: Option<String>,
    limit: Option<u32>,
    cursor: Option<String>,
    /// Admin list only: one integration's events.
    app_id: Option<String>,
}

/// Where a page starts: after this `(actionAt, eventId)`.
type Cursor = Option<(Timestamp, String)>;

/// Parses the shared filters of the public and admin event lists: the filter, the cursor and the limit.
pub fn event_filter(q: &EventsQuery) -> Result<(Filter, Cursor, u32), ApiError> {
    let filter = filter_of(
        &q.clickwrap_template_id,
        &q.end_user_id,
        &q.clickwrap_event_status,
        &q.from,
        &q.to,
    )?;
    let limit = q.limit.unwrap_or(20);
    if !(1..=100).contains(&limit) {
        return Err(ApiError::invalid("limit", "must be between 1 and 100"));
    }
    let cursor = q
        .cursor
        .as_deref()
        .map(|c| {
            clickwrap::decode_cursor(c)
                .ok_or_else(|| ApiError::invalid("cursor", "is not a cursor from this list"))
        })
        .transpose()?;
    Ok((filter, cursor, limit))
}

/// The event list's filters (also the export's): template, end user, status and the inclusive
/// range of action times.
pub fn filter_of(
    template_id: &Option<String>,
    end_user_id: &Option<String>,
    status: &Option<String>,
    from: &Option<String>,
    to: &Option<String>,
) -> Result<Filter, ApiError> {
    let time = |field: &str, raw: &Option<String>| {
        raw.as_deref()
            .map(|s| {
                Timestamp::parse_rfc3339(s)
                    .ok_or_else(|| ApiError::invalid(field, "must be an RFC 3339 timestamp"))
            })
            .transpose()
    };
    let from = time("from", from)?;
    let to = time("to", to)?;
    if let (Some(f), Some(t)) = (from, to)
        && t < f
    {
        return Err(ApiError::invalid("to", "must not be before from"));
    }
    let action = status
        .as_deref()
        .map(|s| {
            Action::parse(s).ok_or_else(|| {
                ApiError::invalid("clickwrapEventStatus", "must be ACCEPTED or DECLINED")
            })
        })
        .transpose()?;
    Ok(Filter {
        integration_id: None,
        template_id: template_id.clone(),
        end_user_id: end_user_id.clone(),
        action,
        from,
        to,
    })
}

/// The row of the integration an admin filter names by App ID (deleted ones included), or 400.
pub async fn integration_filter(state: &AppState, app_id: &str) -> Result<i64, ApiError> {
    let row = state.store.integration_row(app_id).await?;
    row.ok_or_else(|| ApiError::invalid("appId", "no such integration"))
}

/// `GET /clickwrap-events`: the caller's verified events, newest first.
pub async fn events(
    State(state): State<AppState>,
    caller: AppCaller,
    ApiQuery(q): ApiQuery<EventsQuery>,
) -> Result<Json<EventPage<EventItemJson>>, ApiError> {
    if q.app_id.is_some() {
        return Err(ApiError::invalid("appId", "unknown query parameter"));
    }
    let (mut filter, cursor, limit) = event_filter(&q)?;
    filter.integration_id = Some(caller.integration_id);
    let page = clickwrap::list_events(&state.store, filter, cursor, limit).await?;
    Ok(Json(EventPage {
        items: page.items.iter().map(EventItemJson::from).collect(),
        next_page_cursor: page.next,
    }))
}

/// A page of the event list, with the cursor of the next one.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EventPage<T> {
    items: Vec<T>,
    next_page_cursor: Option<String>,
}

/// An event in the admin list: the public item and its integration.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AdminEventItem<'a> {
    #[serde(flatten)]
    event: EventItemJson,
    app_id: &'a str,
}

/// `GET /clickwrap-events/{id}/details`.
pub async fn event_details(
    State(state): State<AppState>,
    caller: AppCaller,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<EventItemJson>, ApiError> {
    let event = clickwrap::event_details(&state.store, Some(caller.integration_id), &id).await?;
    Ok(Json((&event).into()))
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct StatusJson {
    clickwrap_template_id: String,
    clickwrap_template_name: String,
    clickwrap_event_id: Option<String>,
    clickwrap_template_version: i64,
    clickwrap_template_version_minor: i64,
    status: &'static str,
    last_status_update: Option<String>,
    tags: Vec<String>,
    effective_at: String,
    must_accept_by: Option<String>,
    re_acceptance_required: bool,
}

/// `GET /clickwraps/{endUserId}/status`.
pub async fn status(
    State(state): State<AppState>,
    caller: AppCaller,
    ApiPath(end_user): ApiPath<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let end_user = EndUserId::parse(&end_user).map_err(|e| ApiError::invalid("endUserId", e))?;
    let entries = clickwrap::status(&state.store, caller.integration_id, end_user).await?;
    let out: Vec<StatusJson> = entries
        .into_iter()
        .map(|s| StatusJson {
            clickwrap_template_id: s.template_id,
            clickwrap_template_name: s.template_name,
            clickwrap_event_id: s.event_id,
            clickwrap_template_version: s.version.major,
            clickwrap_template_version_minor: s.version.minor,
            status: s.status,
            last_status_update: s.last_update.map(Timestamp::to_rfc3339),
            tags: s.tags,
            effective_at: s.version.effective_at.to_rfc3339(),
            must_accept_by: s.version.must_accept_by.map(Timestamp::to_rfc3339),
            re_acceptance_required: s.reaccept_required,
        })
        .collect();
    Ok(Json(serde_json::to_value(out).expect("serialisable")))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ReacceptBody {
    end_user_ids: Vec<String>,
    clickwrap_template_ids: Vec<String>,
    #[serde(default)]
    reason: Option<String>,
}

/// `POST /clickwraps/re-accept`.
pub async fn reaccept(
    State(state): State<AppState>,
    caller: AppCaller,
    ApiJson(body): ApiJson<ReacceptBody>,
) -> Result<Json<serde_json::Value>, ApiError> {
    if body.end_user_ids.is_empty() || body.end_user_ids.len() > 1000 {
        return Err(ApiError::invalid(
            "endUserIds",
            "must name 1 to 1000 end users",
        ));
    }
    if body.clickwrap_template_ids.is_empty() || body.clickwrap_template_ids.len() > 100 {
        return Err(ApiError::invalid(
            "clickwrapTemplateIds",
            "must name 1 to 100 templates",
        ));
    }
    let pairs = body.end_user_ids.len() * body.clickwrap_template_ids.len();
    if pairs > clickwrap::MAX_REACCEPT_PAIRS {
        return Err(ApiError::invalid(
            "endUserIds",
            format!(
                "{} end users × {} templates is {pairs} pairs; one request may ask for at most {}",
                body.end_user_ids.len(),
                body.clickwrap_template_ids.len(),
                clickwrap::MAX_REACCEPT_PAIRS
            ),
        ));
    }
    if body
        .reason
        .as_ref()
        .is_some_and(|r| r.chars().count() > 500)
    {
        return Err(ApiError::invalid(
            "reason",
            "must be at most 500 characters",
        ));
    }
    let users = body
        .end_user_ids
        .iter()
        .map(|u| EndUserId::parse(u).map_err(|e| ApiError::invalid("endUserIds", e)))
        .collect::<Result<Vec<_>, _>>()?;
    state.limits.reaccept(caller.integration_id, pairs as u32)?;
    let results = clickwrap::reaccept(
        &state.store,
        caller.integration_id,
        users,
        body.clickwrap_template_ids,
        body.reason,
    )
    .await?;
    let requested = results.iter().filter(|r| r.requested).count();
    let items = results
        .iter()
        .map(|r| ReacceptItem {
            end_user_id: &r.end_user_id,
            clickwrap_template_id: &r.template_id,
            status: if r.requested {
                "re_accept_requested"
            } else {
                "skipped"
            },
            reason: r.reason,
        })
        .collect();
    let out = ReacceptJson {
        results: items,
        summary: ReacceptSummary {
            total: results.len(),
            re_accept_requested: requested,
            skipped: results.len() - requested,
        },
    };
    Ok(Json(serde_json::to_value(out).expect("serialisable")))
}

/// The answer to a re-accept request: one result per pair asked for, and their counts.
#[derive(Serialize)]
pub struct ReacceptJson<'a> {
    results: Vec<ReacceptItem<'a>>,
    summary: ReacceptSummary,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ReacceptItem<'a> {
    end_user_id: &'a str,
    clickwrap_template_id: &'a str,
    status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'static str>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ReacceptSummary {
    total: usize,
    re_accept_requested: usize,
    skipped: usize,
}

/// `GET /api/v1/events`: verified events across integrations (or one, with `appId`), for the dashboard.
pub async fn admin_events(
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<EventsQuery>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let (mut filter, cursor, limit) = event_filter(&q)?;
    if let Some(app_id) = &q.app_id {
        filter.integration_id = Some(integration_filter(&state, app_id).await?);
    }
    let page = clickwrap::list_events(&state.store, filter, cursor, limit).await?;
    let items = page
        .items
        .iter()
        .map(|e| AdminEventItem {
            event: EventItemJson::from(e),
            app_id: &e.app_id,
        })
        .collect();
    Ok(Json(
        serde_json::to_value(EventPage {
            items,
            next_page_cursor: page.next,
        })
        .expect("a page serialises"),
    ))
}

/// `GET /api/v1/events/{id}`: one verified event of any integration, with `appId` and its webhook
/// deliveries (the same summaries as the delivery history), for the dashboard's event detail.
pub async fn admin_event(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let event = clickwrap::event_details(&state.store, None, &id).await?;
    let deliveries = crate::webhooks::for_event(&state.store, &id).await?;
    let mut v = serde_json::to_value(EventItemJson::from(&event)).expect("serialisable");
    v["appId"] = event.app_id.clone().into();
    v["deliveries"] = serde_json::to_value(
        deliveries
            .iter()
            .map(|d| super::deliveries::DeliveryJson::of(d, &state.config))
            .collect::<Vec<_>>(),
    )
    .expect("serialisable");
    Ok(Json(v))
}
