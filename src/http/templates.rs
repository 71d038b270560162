//! Admin routes for templates and their versions: `GET|POST /api/v1/templates`,
//! `GET|PATCH /api/v1/templates/{id}`, `POST /api/v1/templates/{id}/versions`.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};

use super::AppState;
use super::error::ApiError;
use super::extract::{Actor, ApiJson, ApiPath};
use crate::clickwrap::{self, Placeholders};
use crate::model::{Language, Name, PublishedVersion, Tag, TemplateText, Timestamp, VersionKind};
use crate::templates::{self, Changes, NewTemplate, TemplateView};

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TextBody {
    title: String,
    content: String,
    #[serde(default)]
    inline_content: Option<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct TextJson {
    title: String,
    content: String,
    inline_content: Option<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct VersionJson {
    version: i64,
    version_minor: i64,
    default_language: String,
    effective_at: String,
    must_accept_by: Option<String>,
    published_at: String,
}

impl From<&PublishedVersion> for VersionJson {
    fn from(v: &PublishedVersion) -> Self {
        VersionJson {
            version: v.major,
            version_minor: v.minor,
            default_language: v.default_language.as_str().to_string(),
            effective_at: v.effective_at.to_rfc3339(),
            must_accept_by: v.must_accept_by.map(Timestamp::to_rfc3339),
            published_at: v.published_at.to_rfc3339(),
        }
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TemplateJson {
    id: String,
    name: String,
    tags: Vec<String>,
    enabled: bool,
    always_require_reacceptance: bool,
    default_language: String,
    languages: BTreeMap<String, TextJson>,
    integrations: Vec<String>,
    created_at: String,
    updated_at: String,
    effective_version: Option<VersionJson>,
    versions: Vec<VersionJson>,
}

impl From<TemplateView> for TemplateJson {
    fn from(v: TemplateView) -> Self {
        let t = v.template;
        TemplateJson {
            id: t.template_id,
            name: t.name.as_str().to_string(),
            tags: t.tags.iter().map(|t| t.as_str().to_string()).collect(),
            enabled: t.enabled,
            always_require_reacceptance: t.always_reaccept,
            default_language: t.default_language.as_str().to_string(),
            languages: t
                .texts
                .into_iter()
                .map(|(l, x)| {
                    (
                        l.as_str().to_string(),
                        TextJson {
                            title: x.title,
                            content: x.content,
                            inline_content: x.inline_content,
                        },
                    )
                })
                .collect(),
            integrations: t.integrations,
            created_at: t.created_at.to_rfc3339(),
            updated_at: t.updated_at.to_rfc3339(),
            effective_version: v.effective.as_ref().map(VersionJson::from),
            versions: v.versions.iter().map(VersionJson::from).collect(),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CreateBody {
    name: String,
    #[serde(default)]
    tags: Vec<String>,
    #[serde(default = "yes")]
    enabled: bool,
    #[serde(default)]
    always_require_reacceptance: bool,
    default_language: String,
    languages: BTreeMap<String, TextBody>,
    #[serde(default)]
    integrations: Vec<String>,
}

fn yes() -> bool {
    true
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PatchBody {
    name: Option<String>,
    tags: Option<Vec<String>>,
    enabled: Option<bool>,
    always_require_reacceptance: Option<bool>,
    default_language: Option<String>,
    languages: Option<BTreeMap<String, TextBody>>,
    integrations: Option<Vec<String>>,
}

fn parse_tags(raw: &[String]) -> Result<Vec<Tag>, ApiError> {
    if raw.len() > 50 {
        return Err(ApiError::invalid("tags", "at most 50 tags"));
    }
    raw.iter()
        .map(|t| Tag::parse(t).map_err(|e| ApiError::invalid("tags", e)))
        .collect()
}

fn parse_language(raw: &str, field: &str) -> Result<Language, ApiError> {
    Language::parse(raw).map_err(|e| ApiError::invalid(field, e))
}

/// Integrations a template may be linked to in one request.
const MAX_LINKED: usize = 1000;
/// Languages one template may hold.
const MAX_LANGUAGES: usize = 100;

fn parse_linked(raw: Vec<String>) -> Result<Vec<String>, ApiError> {
    if raw.len() > MAX_LINKED {
        return Err(ApiError::invalid(
            "integrations",
            format!("at most {MAX_LINKED} App IDs ({} given)", raw.len()),
        ));
    }
    Ok(raw)
}

fn parse_texts(
    raw: BTreeMap<String, TextBody>,
) -> Result<BTreeMap<Language, TemplateText>, ApiError> {
    if raw.is_empty() {
        return Err(ApiError::invalid(
            "languages",
            "at least one language is required",
        ));
    }
    if raw.len() > MAX_LANGUAGES {
        return Err(ApiError::invalid(
            "languages",
            format!("at most {MAX_LANGUAGES} languages ({} given)", raw.len()),
        ));
    }
    // Language tags are compared case-insensitively (`en` is `EN`): two spellings of one tag would
    // silently keep one text and drop the other, so they are refused instead.
    let mut texts = BTreeMap::new();
    let mut spelled: BTreeMap<Language, String> = BTreeMap::new();
    for (lang, t) in raw {
        let language = parse_language(&lang, "languages")?;
        if let Some(first) = spelled.get(&language) {
            return Err(ApiError::invalid(
                "languages",
                format!(
                    "{first:?} and {lang:?} are the same language (tags are not case-sensitive); give its text once"
                ),
            ));
        }
        let text = TemplateText::new(&t.title, &t.content, t.inline_content.as_deref())
            .map_err(|e| ApiError::invalid("languages", format!("{lang}: {e}")))?;
        spelled.insert(language.clone(), lang);
        texts.insert(language, text);
    }
    Ok(texts)
}

fn parse_name(raw: &str) -> Result<Name, ApiError> {
    Name::parse(raw).map_err(|e| ApiError::invalid("name", e))
}

pub async fn list(State(state): State<AppState>) -> Result<Json<Vec<TemplateJson>>, ApiError> {
    Ok(Json(
        templates::list(&state.store)
            .await?
            .into_iter()
            .map(TemplateJson::from)
            .collect(),
    ))
}

pub async fn create(
    State(state): State<AppState>,
    Actor(actor): Actor,
    ApiJson(body): ApiJson<CreateBody>,
) -> Result<(StatusCode, Json<TemplateJson>), ApiError> {
    let new = NewTemplate {
        name: parse_name(&body.name)?,
        tags: parse_tags(&body.tags)?,
        enabled: body.enabled,
        always_reaccept: body.always_require_reacceptance,
        default_language: parse_language(&body.default_language, "defaultLanguage")?,
        texts: parse_texts(body.languages)?,
        integrations: parse_linked(body.integrations)?,
    };
    let view = templates::create(&state.store, &actor, new).await?;
    Ok((StatusCode::CREATED, Json(view.into())))
}

pub async fn get(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<TemplateJson>, ApiError> {
    Ok(Json(templates::get(&state.store, &id).await?.into()))
}

pub async fn patch(
    State(state): State<AppState>,
    Actor(actor): Actor,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<PatchBody>,
) -> Result<Json<TemplateJson>, ApiError> {
    let changes = Changes {
        name: body.name.as_deref().map(parse_name).transpose()?,
        tags: body.tags.as_deref().map(parse_tags).transpose()?,
        enabled: body.enabled,
        always_reaccept: body.always_require_reacceptance,
        default_language: body
            .default_language
            .as_deref()
            .map(|l| parse_language(l, "defaultLanguage"))
            .transpose()?,
        texts: body.languages.map(parse_texts).transpose()?,
        integrations: body.integrations.map(parse_linked).transpose()?,
    };
    Ok(Json(
        templates::update(&state.store, &actor, &id, changes)
            .await?
            .into(),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PublishBody {
    #[serde(rename = "type")]
    kind: String,
    effective_at: Option<String>,
    must_accept_by: Option<String>,
}

pub async fn publish(
    State(state): State<AppState>,
    Actor(actor): Actor,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<PublishBody>,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    let kind = match body.kind.as_str() {
        "MAJOR" => VersionKind::Major,
        "MINOR" => VersionKind::Minor,
        _ => return Err(ApiError::invalid("type", "must be MAJOR or MINOR")),
    };
    let time = |field: &str, raw: Option<&str>| {
        raw.map(|s| {
            Timestamp::parse_rfc3339(s)
                .ok_or_else(|| ApiError::invalid(field, "must be an RFC 3339 timestamp"))
        })
        .transpose()
    };
    let effective_at = time("effectiveAt", body.effective_at.as_deref())?;
    let must_accept_by = time("mustAcceptBy", body.must_accept_by.as_deref())?;
    let v = templates::publish(
        &state.store,
        &actor,
        &id,
        kind,
        effective_at,
        must_accept_by,
    )
    .await?;
    Ok((
        StatusCode::CREATED,
        Json(serde_json::to_value(VersionJson::from(&v)).expect("serialisable")),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PreviewBody {
    language: Option<String>,
    /// An object of placeholder values, or ClickTerm's JSON-encoded string of one, or null.
    #[serde(default)]
    template_placeholders: serde_json::Value,
}

/// `POST /api/v1/templates/{id}/preview` `{"language"?, "templatePlaceholders"?}`: the draft rendered as
/// the widget would show it (placeholders HTML-escaped, missing ones as a dash); records nothing.
pub async fn preview(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<PreviewBody>,
) -> Result<Json<PreviewJson>, ApiError> {
    let language = body
        .language
        .as_deref()
        .filter(|l| !l.trim().is_empty())
        .map(|l| parse_language(l, "language"))
        .transpose()?;
    let placeholders = Placeholders::from_json(&body.template_placeholders)
        .map_err(|e| ApiError::invalid("templatePlaceholders", e))?;
    let t = templates::get(&state.store, &id).await?.template;
    let r = clickwrap::preview(
        &t.texts,
        language.as_ref(),
        &t.default_language,
        &placeholders,
    )
    .ok_or_else(|| ApiError::not_found("template text"))?;
    Ok(Json(PreviewJson {
        language: r.language.as_str().to_string(),
        title: r.title,
        content: r.content,
        inline_content: r.inline_content,
    }))
}

/// A template text rendered with the placeholders given, as an end user would see it.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PreviewJson {
    language: String,
    title: String,
    content: String,
    inline_content: Option<String>,
}
