//! Templates: settings, tags, linked integrations and draft texts; published versions with their
//! frozen texts. Published rows are never updated (the schema's triggers refuse it).

use std::collections::BTreeMap;

use rusqlite::{Connection, OptionalExtension, params};

use super::audit::Audit;
use super::{Backend, Result, Store, StoreError, integrations};
use crate::model::{Language, Name, PublishedVersion, Tag, Template, TemplateText, Timestamp};

/// A partial update of a template's settings and draft; `None` leaves a field as it is.
#[derive(Default)]
pub struct Changes {
    pub name: Option<Name>,
    pub tags: Option<Vec<Tag>>,
    pub enabled: Option<bool>,
    pub always_reaccept: Option<bool>,
    pub default_language: Option<Language>,
    pub texts: Option<BTreeMap<Language, TemplateText>>,
    /// App IDs of live integrations.
    pub integrations: Option<Vec<String>>,
}

/// A template with its published versions and the one effective at the time it was read.
pub struct TemplateView {
    pub template: Template,
    pub versions: Vec<PublishedVersion>,
    pub effective: Option<PublishedVersion>,
}

/// A template may be linked only to live integrations: this App ID is none.
#[derive(Debug)]
pub struct UnknownIntegration(pub String);

fn view(conn: &Connection, id: i64, now: Timestamp) -> Result<Option<TemplateView>> {
    let Some(template) = get_by_row(conn, id)? else {
        return Ok(None);
    };
    let versions = versions(conn, id)?;
    let effective = PublishedVersion::effective(&versions, now).cloned();
    Ok(Some(TemplateView {
        template,
        versions,
        effective,
    }))
}

/// Resolves App IDs of live integrations to row ids.
fn integration_rows(
    conn: &Connection,
    app_ids: &[String],
) -> Result<std::result::Result<Vec<i64>, UnknownIntegration>> {
    let mut rows = Vec::with_capacity(app_ids.len());
    for a in app_ids {
        match integrations::live_id(conn, a)? {
            Some(row) => rows.push(row),
            None => return Ok(Err(UnknownIntegration(a.clone()))),
        }
    }
    Ok(Ok(rows))
}

/// The row id of a template by its public id.
pub(super) fn row_id(conn: &Connection, template_id: &str) -> Result<Option<i64>> {
    Ok(conn
        .prepare_cached("SELECT id FROM templates WHERE template_id = ?1")?
        .query_row([template_id], |r| r.get(0))
        .optional()?)
}

fn insert(conn: &Connection, t: &Template, integration_ids: &[i64]) -> Result<i64> {
    conn.execute(
        "INSERT INTO templates (template_id, name, enabled, always_reaccept, default_language, created_at, updated_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6)",
        params![
            t.template_id,
            t.name.as_str(),
            t.enabled,
            t.always_reaccept,
            t.default_language.as_str(),
            t.created_at.millis()
        ],
    )?;
    let id = conn.last_insert_rowid();
    replace_tags(conn, id, &t.tags)?;
    replace_texts(conn, id, &t.texts)?;
    replace_integrations(conn, id, integration_ids)?;
    Ok(id)
}

fn update(
    conn: &Connection,
    id: i64,
    changes: &Changes,
    integration_ids: Option<&[i64]>,
    now: Timestamp,
) -> Result<()> {
    if let Some(name) = &changes.name {
        conn.execute(
            "UPDATE templates SET name = ?2 WHERE id = ?1",
            params![id, name.as_str()],
        )?;
    }
    if let Some(enabled) = changes.enabled {
        conn.execute(
            "UPDATE templates SET enabled = ?2 WHERE id = ?1",
            params![id, enabled],
        )?;
    }
    if let Some(always) = changes.always_reaccept {
        conn.execute(
            "UPDATE templates SET always_reaccept = ?2 WHERE id = ?1",
            params![id, always],
        )?;
    }
    if let Some(lang) = &changes.default_language {
        conn.execute(
            "UPDATE templates SET default_language = ?2 WHERE id = ?1",
            params![id, lang.as_str()],
        )?;
    }
    if let Some(tags) = &changes.tags {
        replace_tags(conn, id, tags)?;
    }
    if let Some(texts) = &changes.texts {
        replace_texts(conn, id, texts)?;
    }
    if let Some(ids) = integration_ids {
        replace_integrations(conn, id, ids)?;
    }
    conn.execute(
        "UPDATE templates SET updated_at = ?2 WHERE id = ?1",
        params![id, now.millis()],
    )?;
    Ok(())
}

fn replace_tags(conn: &Connection, id: i64, tags: &[Tag]) -> Result<()> {
    conn.execute("DELETE FROM template_tags WHERE template_id = ?1", [id])?;
    let mut stmt = conn
        .prepare_cached("INSERT OR IGNORE INTO template_tags (template_id, tag) VALUES (?1, ?2)")?;
    for t in tags {
        stmt.execute(params![id, t.as_str()])?;
    }
    Ok(())
}

fn replace_texts(
    conn: &Connection,
    id: i64,
    texts: &BTreeMap<Language, TemplateText>,
) -> Result<()> {
    conn.execute("DELETE FROM template_texts WHERE template_id = ?1", [id])?;
    let mut stmt = conn.prepare_cached(
        "INSERT INTO template_texts (template_id, language, title, content, inline_content) VALUES (?1, ?2, ?3, ?4, ?5)",
    )?;
    for (lang, t) in texts {
        stmt.execute(params![
            id,
            lang.as_str(),
            t.title,
            t.content,
            t.inline_content
        ])?;
    }
    Ok(())
}

fn replace_integrations(conn: &Connection, id: i64, integration_ids: &[i64]) -> Result<()> {
    conn.execute(
        "DELETE FROM template_integrations WHERE template_id = ?1",
        [id],
    )?;
    let mut stmt = conn.prepare_cached(
        "INSERT OR IGNORE INTO template_integrations (template_id, integration_id) VALUES (?1, ?2)",
    )?;
    for i in integration_ids {
        stmt.execute(params![id, i])?;
    }
    Ok(())
}

fn texts(conn: &Connection, sql: &str, id: i64) -> Result<BTreeMap<Language, TemplateText>> {
    let mut stmt = conn.prepare_cached(sql)?;
    let rows = stmt.query_map([id], |r| {
        Ok((
            r.get::<_, String>(0)?,
            TemplateText {
                title: r.get(1)?,
                content: r.get(2)?,
                inline_content: r.get(3)?,
            },
        ))
    })?;
    let mut out = BTreeMap::new();
    for row in rows {
        let (lang, text) = row?;
        if let Ok(lang) = Language::parse(&lang) {
            out.insert(lang, text);
        }
    }
    Ok(out)
}

/// A stored name read back: the database holds only names that parsed (a row changed behind the
/// server's back reads as "(unnamed)"). Shared by both backends.
pub(crate) fn stored_name(name: &str) -> Name {
    Name::parse(name).unwrap_or_else(|_| Name::parse("(unnamed)").expect("valid"))
}

/// A stored language read back, `en` when it no longer parses. Shared by both backends.
pub(crate) fn stored_language(lang: &str) -> Language {
    Language::parse(lang).unwrap_or_else(|_| Language::parse("en").expect("valid"))
}

/// The template with this row id, with its draft texts, tags and live linked integrations.
pub(super) fn get_by_row(conn: &Connection, id: i64) -> Result<Option<Template>> {
    let row = conn
        .prepare_cached(
            "SELECT template_id, name, enabled, always_reaccept, default_language, created_at, updated_at \
             FROM templates WHERE id = ?1",
        )?
        .query_row([id], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, bool>(2)?,
                r.get::<_, bool>(3)?,
                r.get::<_, String>(4)?,
                r.get::<_, i64>(5)?,
                r.get::<_, i64>(6)?,
            ))
        })
        .optional()?;
    let Some((template_id, name, enabled, always_reaccept, lang, created, updated)) = row else {
        return Ok(None);
    };
    let tags = conn
        .prepare_cached("SELECT tag FROM template_tags WHERE template_id = ?1 ORDER BY tag")?
        .query_map([id], |r| r.get::<_, String>(0))?
        .filter_map(|t| t.ok().and_then(|t| Tag::parse(&t).ok()))
        .collect();
    let integrations = conn
        .prepare_cached(
            "SELECT i.app_id FROM template_integrations ti JOIN integrations i ON i.id = ti.integration_id \
             WHERE ti.template_id = ?1 AND i.deleted_at IS NULL ORDER BY i.app_id",
        )?
        .query_map([id], |r| r.get::<_, String>(0))?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(Some(Template {
        template_id,
        name: stored_name(&name),
        tags,
        enabled,
        always_reaccept,
        default_language: stored_language(&lang),
        texts: texts(
            conn,
            "SELECT language, title, content, inline_content FROM template_texts WHERE template_id = ?1",
            id,
        )?,
        integrations,
        created_at: Timestamp(created),
        updated_at: Timestamp(updated),
    }))
}

pub(super) fn list_rows(conn: &Connection) -> Result<Vec<i64>> {
    Ok(conn
        .prepare_cached("SELECT id FROM templates ORDER BY created_at, id")?
        .query_map([], |r| r.get(0))?
        .collect::<rusqlite::Result<Vec<_>>>()?)
}

/// Published versions of a template, oldest publication first.
pub(super) fn versions(conn: &Connection, id: i64) -> Result<Vec<PublishedVersion>> {
    let mut stmt = conn.prepare_cached(
        "SELECT major, minor, default_language, effective_at, must_accept_by, published_at \
         FROM template_versions WHERE template_id = ?1 ORDER BY published_at, id",
    )?;
    let rows = stmt.query_map([id], |r| {
        Ok(PublishedVersion {
            major: r.get(0)?,
            minor: r.get(1)?,
            default_language: stored_language(&r.get::<_, String>(2)?),
            effective_at: Timestamp(r.get(3)?),
            must_accept_by: r.get::<_, Option<i64>>(4)?.map(Timestamp),
            published_at: Timestamp(r.get(5)?),
        })
    })?;
    Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
}

/// Freezes the template's current draft as version `major.minor`.
pub(super) fn publish(conn: &Connection, id: i64, v: &PublishedVersion) -> Result<()> {
    conn.execute(
        "INSERT INTO template_versions (template_id, major, minor, default_language, effective_at, must_accept_by, published_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        params![
            id,
            v.major,
            v.minor,
            v.default_language.as_str(),
            v.effective_at.millis(),
            v.must_accept_by.map(Timestamp::millis),
            v.published_at.millis()
        ],
    )?;
    let version_id = conn.last_insert_rowid();
    conn.execute(
        "INSERT INTO template_version_texts (version_id, language, title, content, inline_content) \
         SELECT ?2, language, title, content, inline_content FROM template_texts WHERE template_id = ?1",
        params![id, version_id],
    )?;
    Ok(())
}

/// The frozen texts of a published version.
pub(super) fn version_texts(
    conn: &Connection,
    id: i64,
    major: i64,
    minor: i64,
) -> Result<BTreeMap<Language, TemplateText>> {
    let version_id: Option<i64> = conn
        .prepare_cached(
            "SELECT id FROM template_versions WHERE template_id = ?1 AND major = ?2 AND minor = ?3",
        )?
        .query_row(params![id, major, minor], |r| r.get(0))
        .optional()?;
    match version_id {
        Some(v) => texts(
            conn,
            "SELECT language, title, content, inline_content FROM template_version_texts WHERE version_id = ?1",
            v,
        ),
        None => Ok(BTreeMap::new()),
    }
}

/// Enabled templates an integration may see: those linked to it; if none is linked to it, those linked
/// to no integration. With `tags`, only templates carrying at least one of them.
pub(super) fn visible_rows(
    conn: &Connection,
    integration_id: i64,
    tags: &[String],
) -> Result<Vec<i64>> {
    let linked: i64 = conn
        .prepare_cached("SELECT count(*) FROM template_integrations WHERE integration_id = ?1")?
        .query_row([integration_id], |r| r.get(0))?;
    let sql = if linked > 0 {
        "SELECT t.id FROM templates t JOIN template_integrations ti ON ti.template_id = t.id \
         WHERE t.enabled = 1 AND ti.integration_id = ?1 ORDER BY t.created_at, t.id"
    } else {
        "SELECT t.id FROM templates t WHERE t.enabled = 1 AND ?1 = ?1 \
         AND NOT EXISTS (SELECT 1 FROM template_integrations ti WHERE ti.template_id = t.id) ORDER BY t.created_at, t.id"
    };
    let ids = conn
        .prepare_cached(sql)?
        .query_map([integration_id], |r| r.get::<_, i64>(0))?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    if tags.is_empty() {
        return Ok(ids);
    }
    let mut has_tag =
        conn.prepare_cached("SELECT 1 FROM template_tags WHERE template_id = ?1 AND tag = ?2")?;
    let mut out = Vec::new();
    for id in ids {
        let mut any = false;
        for tag in tags {
            if has_tag.exists(params![id, tag])? {
                any = true;
                break;
            }
        }
        if any {
            out.push(id);
        }
    }
    Ok(out)
}

/// Whether an integration may see a template, by the rule of [`visible_rows`].
pub(super) fn is_visible(
    conn: &Connection,
    template_row: i64,
    integration_id: i64,
) -> Result<bool> {
    let linked_to_app: i64 = conn
        .prepare_cached("SELECT count(*) FROM template_integrations WHERE integration_id = ?1")?
        .query_row([integration_id], |r| r.get(0))?;
    let sql = if linked_to_app > 0 {
        "SELECT EXISTS (SELECT 1 FROM template_integrations WHERE template_id = ?1 AND integration_id = ?2)"
    } else {
        "SELECT NOT EXISTS (SELECT 1 FROM template_integrations WHERE template_id = ?1) AND ?2 = ?2"
    };
    Ok(conn
        .prepare_cached(sql)?
        .query_row(params![template_row, integration_id], |r| r.get(0))?)
}

/// What the clickwrap flow needs of a template's settings, without its texts: whether it is enabled,
/// whether every presentation asks again, and its name.
pub struct Flags {
    pub enabled: bool,
    pub always_reaccept: bool,
    pub name: String,
}

pub(super) fn flags(conn: &Connection, template_row: i64) -> Result<Option<Flags>> {
    Ok(conn
        .prepare_cached("SELECT enabled, always_reaccept, name FROM templates WHERE id = ?1")?
        .query_row([template_row], |r| {
            Ok(Flags {
                enabled: r.get(0)?,
                always_reaccept: r.get(1)?,
                name: r.get(2)?,
            })
        })
        .optional()?)
}

/// Templates as the services use them; each change is one transaction with its audit entry. A
/// change that depends on what is stored (the draft's default text, the next version number) is
/// decided by the caller's `decide`, inside the transaction, on what it reads there.
impl Store {
    /// Creates `template`, linked to the live integrations its `integrations` name.
    pub async fn create_template<E>(
        &self,
        template: Template,
        audit: Audit,
    ) -> std::result::Result<Option<TemplateView>, E>
    where
        E: From<StoreError> + From<UnknownIntegration> + Send + 'static,
    {
        match self.backend() {
            Backend::Sqlite(s) => {
                s.write(move |c| {
                    let ids = integration_rows(c, &template.integrations)??;
                    let id = insert(c, &template, &ids)?;
                    audit.write(c, template.created_at)?;
                    Ok(view(c, id, template.created_at)?)
                })
                .await
            }
            Backend::Postgres(p) => p.create_template(template, audit).await,
        }
    }

    pub async fn template(&self, template_id: &str) -> Result<Option<TemplateView>> {
        let id = template_id.to_string();
        match self.backend() {
            Backend::Sqlite(s) => {
                s.read(move |c| match row_id(c, &id)? {
                    Some(row) => view(c, row, Timestamp::now()),
                    None => Ok(None),
                })
                .await
            }
            Backend::Postgres(p) => p.template(template_id).await,
        }
    }

    pub async fn templates(&self) -> Result<Vec<TemplateView>> {
        match self.backend() {
            Backend::Sqlite(s) => {
                s.read(|c| {
                    let now = Timestamp::now();
                    let mut out = Vec::new();
                    for id in list_rows(c)? {
                        out.extend(view(c, id, now)?);
                    }
                    Ok(out)
                })
                .await
            }
            Backend::Postgres(p) => p.templates().await,
        }
    }

    /// Applies `changes` once `check` accepts the template they would make (the current one with the
    /// changes' default language and texts); `None` when there is no such template.
    pub async fn update_template<E>(
        &self,
        template_id: &str,
        changes: Changes,
        check: impl FnOnce(&Language, &BTreeMap<Language, TemplateText>) -> std::result::Result<(), E>
        + Send
        + 'static,
        audit: Audit,
    ) -> std::result::Result<Option<TemplateView>, E>
    where
        E: From<StoreError> + From<UnknownIntegration> + Send + 'static,
    {
        let tid = template_id.to_string();
        match self.backend() {
            Backend::Sqlite(s) => {
                s.write(move |c| {
                    let now = Timestamp::now();
                    let Some(id) = row_id(c, &tid)? else {
                        return Ok(None);
                    };
                    let current = get_by_row(c, id)?.expect("row exists");
                    check(
                        changes
                            .default_language
                            .as_ref()
                            .unwrap_or(&current.default_language),
                        changes.texts.as_ref().unwrap_or(&current.texts),
                    )?;
                    let ids = match &changes.integrations {
                        Some(app_ids) => Some(integration_rows(c, app_ids)??),
                        None => None,
                    };
                    update(c, id, &changes, ids.as_deref(), now)?;
                    audit.write(c, now)?;
                    Ok(view(c, id, now)?)
                })
                .await
            }
            Backend::Postgres(p) => p.update_template(template_id, changes, check, audit).await,
        }
    }

    /// Publishes the draft as the version `decide` makes of it (from the template and its versions
    /// so far, at the time given), with the audit entry it returns; `None` when there is no such
    /// template.
    pub async fn publish_template<E>(
        &self,
        template_id: &str,
        decide: impl FnOnce(
            &Template,
            &[PublishedVersion],
            Timestamp,
        ) -> std::result::Result<(PublishedVersion, Audit), E>
        + Send
        + 'static,
    ) -> std::result::Result<Option<PublishedVersion>, E>
    where
        E: From<StoreError> + Send + 'static,
    {
        let tid = template_id.to_string();
        match self.backend() {
            Backend::Sqlite(s) => {
                s.write(move |c| {
                    let now = Timestamp::now();
                    let Some(id) = row_id(c, &tid)? else {
                        return Ok(None);
                    };
                    let template = get_by_row(c, id)?.expect("row exists");
                    let (version, audit) = decide(&template, &versions(c, id)?, now)?;
                    publish(c, id, &version)?;
                    audit.write(c, now)?;
                    Ok(Some(version))
                })
                .await
            }
            Backend::Postgres(p) => p.publish_template(template_id, decide).await,
        }
    }

    /// Enabled templates visible to an integration (with one of `tags`, if any) that have an
    /// effective version now.
    pub async fn templates_visible_to(
        &self,
        integration_id: i64,
        tags: Vec<String>,
    ) -> Result<Vec<TemplateView>> {
        match self.backend() {
            Backend::Sqlite(s) => {
                s.read(move |c| {
                    let now = Timestamp::now();
                    let mut out = Vec::new();
                    for id in visible_rows(c, integration_id, &tags)? {
                        if let Some(v) = view(c, id, now)?.filter(|v| v.effective.is_some()) {
                            out.push(v);
                        }
                    }
                    Ok(out)
                })
                .await
            }
            Backend::Postgres(p) => p.templates_visible_to(integration_id, tags).await,
        }
    }
}
