//! What can be done with clickwrap templates: create and edit the draft, publish it as a major or
//! minor version effective at a given time, and find what an integration may show. Every change is
//! audited in its own transaction.

use std::collections::BTreeMap;

use crate::error::{Error, Result};
use crate::model::{
    Actor, Language, Name, PublishedVersion, Tag, Template, TemplateText, Timestamp, VersionKind,
};
use crate::store::Store;
use crate::store::audit::Audit;
pub use crate::store::templates::{Changes, TemplateView};

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
    let now = Timestamp::now();
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
    let audit = Audit::new(actor, "template.create")
        .target(&template.template_id)
        .detail(template.name.as_str());
    store
        .create_template::<Error>(template, audit)
        .await?
        .ok_or(Error::NotFound("template"))
}

pub async fn get(store: &Store, template_id: &str) -> Result<TemplateView> {
    store
        .template(template_id)
        .await?
        .ok_or(Error::NotFound("template"))
}

pub async fn list(store: &Store) -> Result<Vec<TemplateView>> {
    Ok(store.templates().await?)
}

pub async fn update(
    store: &Store,
    actor: &Actor,
    template_id: &str,
    changes: Changes,
) -> Result<TemplateView> {
    let audit = Audit::new(actor, "template.update").target(template_id);
    store
        .update_template(template_id, changes, check_default_text, audit)
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
    let audit = Audit::new(actor, "template.publish").target(template_id);
    store
        .publish_template(template_id, move |template, versions, now| {
            check_default_text(&template.default_language, &template.texts)?;
            let effective_at = effective_at.unwrap_or(now);
            if must_accept_by.is_some_and(|m| m <= effective_at) {
                return Err(Error::invalid("mustAcceptBy", "must be after effectiveAt"));
            }
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
            Ok((version, audit.detail(format!("{major}.{minor}"))))
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
    Ok(store.templates_visible_to(integration_id, tags).await?)
}
