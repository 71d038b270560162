//! What can be done with clickwrap templates: create and edit the draft, publish it as a major or
//! minor version effective at a given time, and find what an integration may show. Every change is
//! audited in its own transaction.

use std::collections::BTreeMap;

use crate::error::{Error, Result};
use crate::model::{
    Actor, Language, Name, PublishedVersion, Tag, Template, TemplateText, Timestamp, VersionKind,
};
use crate::store::templates::{self as rows, Changes as RowChanges};
use crate::store::{Store, audit, integrations};

/// A template with its published versions and the one effective now.
pub struct TemplateView {
    pub template: Template,
    pub versions: Vec<PublishedVersion>,
    pub effective: Option<PublishedVersion>,
}

/// The settings and draft of a new template.
pub struct NewTemplate {
    pub name: Name,
    pub tags: Vec<Tag>,
    pub enabled: bool,
    pub always_reaccept: bool,
    pub default_language: Language,
    pub texts: BTreeMap<Language, TemplateText>,
    /// App IDs.
    pub integrations: Vec<String>,
}

/// Changes to a template; `None` leaves a field as it is. `integrations` are App IDs.
#[derive(Default)]
pub struct Changes {
    pub name: Option<Name>,
    pub tags: Option<Vec<Tag>>,
    pub enabled: Option<bool>,
    pub always_reaccept: Option<bool>,
    pub default_language: Option<Language>,
    pub texts: Option<BTreeMap<Language, TemplateText>>,
    pub integrations: Option<Vec<String>>,
}

fn view(
    conn: &rusqlite::Connection,
    id: i64,
    now: Timestamp,
) -> crate::store::Result<Option<TemplateView>> {
    let Some(template) = rows::get_by_row(conn, id)? else {
        return Ok(None);
    };
    let versions = rows::versions(conn, id)?;
    let effective = PublishedVersion::effective(&versions, now).cloned();
    Ok(Some(TemplateView {
        template,
        versions,
        effective,
    }))
}

/// Resolves App IDs of live integrations to row ids; an unknown one is a 400 naming it.
fn integration_rows(conn: &rusqlite::Connection, app_ids: &[String]) -> Result<Vec<i64>> {
    app_ids
        .iter()
        .map(|a| {
            integrations::live_id(conn, a)?.ok_or_else(|| {
                Error::invalid("integrations", format!("no integration with App ID {a:?}"))
            })
        })
        .collect()
}

fn check_default_text(default: &Language, texts: &BTreeMap<Language, TemplateText>) -> Result<()> {
    if !texts.contains_key(default) {
        return Err(Error::invalid(
            "languages",
            format!(
                "the default language {:?} needs a title and content",
                default.as_str()
            ),
        ));
    }
    Ok(())
}

pub async fn create(store: &Store, actor: &Actor, new: NewTemplate) -> Result<TemplateView> {
    check_default_text(&new.default_language, &new.texts)?;
    let actor = actor.clone();
    store
        .write(move |c| -> Result<_> {
            let now = Timestamp::now();
            let ids = integration_rows(c, &new.integrations)?;
            let template = Template {
                template_id: uuid::Uuid::new_v4().to_string(),
                name: new.name,
                tags: new.tags,
                enabled: new.enabled,
                always_reaccept: new.always_reaccept,
                default_language: new.default_language,
                texts: new.texts,
                integrations: new.integrations,
                created_at: now,
                updated_at: now,
            };
            let id = rows::insert(c, &template, &ids)?;
            audit::record(
                c,
                now,
                &actor,
                "template.create",
                Some(&template.template_id),
                Some(template.name.as_str()),
            )?;
            Ok(view(c, id, now)?)
        })
        .await?
        .ok_or(Error::NotFound("template"))
}

pub async fn get(store: &Store, template_id: &str) -> Result<TemplateView> {
    let id = template_id.to_string();
    store
        .read(move |c| match rows::row_id(c, &id)? {
            Some(row) => view(c, row, Timestamp::now()),
            None => Ok(None),
        })
        .await?
        .ok_or(Error::NotFound("template"))
}

pub async fn list(store: &Store) -> Result<Vec<TemplateView>> {
    store
        .read(|c| -> Result<_> {
            let now = Timestamp::now();
            let mut out = Vec::new();
            for id in rows::list_rows(c)? {
                out.extend(view(c, id, now)?);
            }
            Ok(out)
        })
        .await
}

pub async fn update(
    store: &Store,
    actor: &Actor,
    template_id: &str,
    changes: Changes,
) -> Result<TemplateView> {
    let (actor, tid) = (actor.clone(), template_id.to_string());
    store
        .write(move |c| -> Result<_> {
            let now = Timestamp::now();
            let Some(id) = rows::row_id(c, &tid)? else {
                return Ok(None);
            };
            let current = rows::get_by_row(c, id)?.expect("row exists");
            let default = changes
                .default_language
                .as_ref()
                .unwrap_or(&current.default_language);
            let texts = changes.texts.as_ref().unwrap_or(&current.texts);
            check_default_text(default, texts)?;
            let integrations = match &changes.integrations {
                Some(app_ids) => Some(integration_rows(c, app_ids)?),
                None => None,
            };
            let row_changes = RowChanges {
                name: changes.name,
                tags: changes.tags,
                enabled: changes.enabled,
                always_reaccept: changes.always_reaccept,
                default_language: changes.default_language,
                texts: changes.texts,
                integrations,
            };
            rows::update(c, id, &row_changes, now)?;
            audit::record(c, now, &actor, "template.update", Some(&tid), None)?;
            Ok(view(c, id, now)?)
        })
        .await?
        .ok_or(Error::NotFound("template"))
}

/// Publishes the current draft. Majors count up from 1.0; a minor adds to the highest major. The
/// effective time defaults to now and may be in the future; `must_accept_by` must come after it.
pub async fn publish(
    store: &Store,
    actor: &Actor,
    template_id: &str,
    kind: VersionKind,
    effective_at: Option<Timestamp>,
    must_accept_by: Option<Timestamp>,
) -> Result<PublishedVersion> {
    let (actor, tid) = (actor.clone(), template_id.to_string());
    store
        .write(move |c| -> Result<_> {
            let now = Timestamp::now();
            let Some(id) = rows::row_id(c, &tid)? else {
                return Ok(None);
            };
            let template = rows::get_by_row(c, id)?.expect("row exists");
            check_default_text(&template.default_language, &template.texts)?;
            let effective_at = effective_at.unwrap_or(now);
            if must_accept_by.is_some_and(|m| m <= effective_at) {
                return Err(Error::invalid("mustAcceptBy", "must be after effectiveAt"));
            }
            let versions = rows::versions(c, id)?;
            let top_major = versions.iter().map(|v| v.major).max();
            let (major, minor) = match (kind, top_major) {
                (VersionKind::Major, top) => (top.unwrap_or(0) + 1, 0),
                (VersionKind::Minor, Some(m)) => (
                    m,
                    versions
                        .iter()
                        .filter(|v| v.major == m)
                        .map(|v| v.minor)
                        .max()
                        .unwrap_or(0)
                        + 1,
                ),
                (VersionKind::Minor, None) => {
                    return Err(Error::invalid(
                        "type",
                        "the first published version must be MAJOR",
                    ));
                }
            };
            let version = PublishedVersion {
                major,
                minor,
                default_language: template.default_language.clone(),
                effective_at,
                must_accept_by,
                published_at: now,
            };
            rows::publish(c, id, &version)?;
            audit::record(
                c,
                now,
                &actor,
                "template.publish",
                Some(&tid),
                Some(&format!("{major}.{minor}")),
            )?;
            Ok(Some(version))
        })
        .await?
        .ok_or(Error::NotFound("template"))
}

/// Enabled templates visible to an integration that have an effective version now, with it.
pub async fn visible_to(
    store: &Store,
    integration_id: i64,
    tags: Vec<String>,
) -> Result<Vec<TemplateView>> {
    store
        .read(move |c| -> Result<_> {
            let now = Timestamp::now();
            let mut out = Vec::new();
            for id in rows::visible_rows(c, integration_id, &tags)? {
                if let Some(v) = view(c, id, now)?.filter(|v| v.effective.is_some()) {
                    out.push(v);
                }
            }
            Ok(out)
        })
        .await
}
