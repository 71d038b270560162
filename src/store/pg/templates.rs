//! PostgreSQL: the operations of `store::templates` (settings, tags, linked integrations, drafts,
//! published versions). The rules are the SQLite family's (`Template`, `PublishedVersion::effective`,
//! the caller's `check` and `decide`); a change locks its template's row first (`FOR UPDATE`), so two
//! nodes publishing at once number their versions one after the other instead of colliding.

use std::collections::BTreeMap;
use std::sync::LazyLock;

use deadpool_postgres::{GenericClient, Transaction};

use super::{Postgres, audit};
use crate::model::{Language, PublishedVersion, Tag, Template, TemplateText, Timestamp};
use crate::store::audit::Audit;
use crate::store::templates::{
    Changes, Flags, TemplateView, UnknownIntegration, stored_language, stored_name,
};
use crate::store::{Result, StoreError};

async fn view<C: GenericClient>(c: &C, id: i64, now: Timestamp) -> Result<Option<TemplateView>> {
    let Some(template) = get_by_row(c, id).await? else {
        return Ok(None);
    };
    let versions = versions(c, id).await?;
    let effective = PublishedVersion::effective(&versions, now).cloned();
    Ok(Some(TemplateView {
        template,
        versions,
        effective,
    }))
}

/// Resolves App IDs of live integrations to row ids.
async fn integration_rows<C: GenericClient>(
    c: &C,
    app_ids: &[String],
) -> Result<std::result::Result<Vec<i64>, UnknownIntegration>> {
    let stmt = c
        .prepare_cached("SELECT id FROM integrations WHERE app_id = $1 AND deleted_at IS NULL")
        .await?;
    let mut rows = Vec::with_capacity(app_ids.len());
    for a in app_ids {
        match c.query_opt(&stmt, &[a]).await? {
            Some(row) => rows.push(row.get(0)),
            None => return Ok(Err(UnknownIntegration(a.clone()))),
        }
    }
    Ok(Ok(rows))
}

/// The row id of a template by its public id.
pub(crate) async fn row_id<C: GenericClient>(c: &C, template_id: &str) -> Result<Option<i64>> {
    let stmt = c
        .prepare_cached("SELECT id FROM templates WHERE template_id = $1")
        .await?;
    Ok(c.query_opt(&stmt, &[&template_id]).await?.map(|r| r.get(0)))
}

/// [`row_id`], locking the row until the transaction ends: the changes of one template are ordered.
async fn row_id_locked(tx: &Transaction<'_>, template_id: &str) -> Result<Option<i64>> {
    let stmt = tx
        .prepare_cached("SELECT id FROM templates WHERE template_id = $1 FOR UPDATE")
        .await?;
    Ok(tx
        .query_opt(&stmt, &[&template_id])
        .await?
        .map(|r| r.get(0)))
}

async fn insert(tx: &Transaction<'_>, t: &Template, integration_ids: &[i64]) -> Result<i64> {
    let row = tx
        .query_one(
            "INSERT INTO templates (template_id, name, enabled, always_reaccept, default_language, \
             created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $6) RETURNING id",
            &[
                &t.template_id,
                &t.name.as_str(),
                &t.enabled,
                &t.always_reaccept,
                &t.default_language.as_str(),
                &t.created_at.millis(),
            ],
        )
        .await?;
    let id: i64 = row.get(0);
    replace_tags(tx, id, &t.tags).await?;
    replace_texts(tx, id, &t.texts).await?;
    replace_integrations(tx, id, integration_ids).await?;
    Ok(id)
}

async fn update(
    tx: &Transaction<'_>,
    id: i64,
    changes: &Changes,
    integration_ids: Option<&[i64]>,
    now: Timestamp,
) -> Result<()> {
    // One statement for the settings: each column keeps its value where the change leaves it.
    tx.execute(
        "UPDATE templates SET name = coalesce($2, name), enabled = coalesce($3, enabled), \
         always_reaccept = coalesce($4, always_reaccept), \
         default_language = coalesce($5, default_language), updated_at = $6 WHERE id = $1",
        &[
            &id,
            &changes.name.as_ref().map(|n| n.as_str()),
            &changes.enabled,
            &changes.always_reaccept,
            &changes.default_language.as_ref().map(|l| l.as_str()),
            &now.millis(),
        ],
    )
    .await?;
    if let Some(tags) = &changes.tags {
        replace_tags(tx, id, tags).await?;
    }
    if let Some(texts) = &changes.texts {
        replace_texts(tx, id, texts).await?;
    }
    if let Some(ids) = integration_ids {
        replace_integrations(tx, id, ids).await?;
    }
    Ok(())
}

async fn replace_tags(tx: &Transaction<'_>, id: i64, tags: &[Tag]) -> Result<()> {
    tx.execute("DELETE FROM template_tags WHERE template_id = $1", &[&id])
        .await?;
    let tags: Vec<&str> = tags.iter().map(Tag::as_str).collect();
    tx.execute(
        "INSERT INTO template_tags (template_id, tag) SELECT $1, unnest($2::text[]) \
         ON CONFLICT DO NOTHING",
        &[&id, &tags],
    )
    .await?;
    Ok(())
}

async fn replace_texts(
    tx: &Transaction<'_>,
    id: i64,
    texts: &BTreeMap<Language, TemplateText>,
) -> Result<()> {
    tx.execute("DELETE FROM template_texts WHERE template_id = $1", &[&id])
        .await?;
    let stmt = tx
        .prepare_cached(
            "INSERT INTO template_texts (template_id, language, title, content, inline_content) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .await?;
    for (lang, t) in texts {
        tx.execute(
            &stmt,
            &[&id, &lang.as_str(), &t.title, &t.content, &t.inline_content],
        )
        .await?;
    }
    Ok(())
}

async fn replace_integrations(
    tx: &Transaction<'_>,
    id: i64,
    integration_ids: &[i64],
) -> Result<()> {
    tx.execute(
        "DELETE FROM template_integrations WHERE template_id = $1",
        &[&id],
    )
    .await?;
    tx.execute(
        "INSERT INTO template_integrations (template_id, integration_id) \
         SELECT $1, unnest($2::bigint[]) ON CONFLICT DO NOTHING",
        &[&id, &integration_ids],
    )
    .await?;
    Ok(())
}

async fn texts<C: GenericClient>(
    c: &C,
    sql: &str,
    id: i64,
) -> Result<BTreeMap<Language, TemplateText>> {
    let stmt = c.prepare_cached(sql).await?;
    Ok(text_rows(&c.query(&stmt, &[&id]).await?))
}

/// Rows of (language, title, content, inline_content) by language; a language that no longer parses
/// is left out, as on SQLite.
fn text_rows(rows: &[tokio_postgres::Row]) -> BTreeMap<Language, TemplateText> {
    rows.iter()
        .filter_map(|r| {
            Some((
                Language::parse(r.get(0)).ok()?,
                TemplateText {
                    title: r.get(1),
                    content: r.get(2),
                    inline_content: r.get(3),
                },
            ))
        })
        .collect()
}

/// The template with this row id, with its draft texts, tags and live linked integrations.
pub(crate) async fn get_by_row<C: GenericClient>(c: &C, id: i64) -> Result<Option<Template>> {
    let stmt = c
        .prepare_cached(
            "SELECT template_id, name, enabled, always_reaccept, default_language, created_at, \
             updated_at FROM templates WHERE id = $1",
        )
        .await?;
    let Some(row) = c.query_opt(&stmt, &[&id]).await? else {
        return Ok(None);
    };
    let tags_stmt = c
        .prepare_cached("SELECT tag FROM template_tags WHERE template_id = $1 ORDER BY tag")
        .await?;
    let integrations_stmt = c
        .prepare_cached(
            "SELECT i.app_id FROM template_integrations ti JOIN integrations i \
             ON i.id = ti.integration_id WHERE ti.template_id = $1 AND i.deleted_at IS NULL \
             ORDER BY i.app_id",
        )
        .await?;
    // The three reads go out together on the one connection (tokio-postgres pipelines them).
    let (tags, integrations, texts) = tokio::try_join!(
        async { Ok::<_, StoreError>(c.query(&tags_stmt, &[&id]).await?) },
        async { Ok::<_, StoreError>(c.query(&integrations_stmt, &[&id]).await?) },
        texts(
            c,
            "SELECT language, title, content, inline_content FROM template_texts \
             WHERE template_id = $1",
            id,
        ),
    )?;
    Ok(Some(Template {
        template_id: row.get(0),
        name: stored_name(row.get(1)),
        tags: tags
            .iter()
            .filter_map(|t| Tag::parse(t.get(0)).ok())
            .collect(),
        enabled: row.get(2),
        always_reaccept: row.get(3),
        default_language: stored_language(row.get(4)),
        texts,
        integrations: integrations.iter().map(|r| r.get(0)).collect(),
        created_at: Timestamp(row.get(5)),
        updated_at: Timestamp(row.get(6)),
    }))
}

async fn list_rows<C: GenericClient>(c: &C) -> Result<Vec<i64>> {
    let stmt = c
        .prepare_cached("SELECT id FROM templates ORDER BY created_at, id")
        .await?;
    Ok(c.query(&stmt, &[])
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect())
}

/// Published versions of a template, oldest publication first.
pub(crate) async fn versions<C: GenericClient>(c: &C, id: i64) -> Result<Vec<PublishedVersion>> {
    let stmt = c
        .prepare_cached(
            "SELECT major, minor, default_language, effective_at, must_accept_by, published_at \
             FROM template_versions WHERE template_id = $1 ORDER BY published_at, id",
        )
        .await?;
    Ok(c.query(&stmt, &[&id])
        .await?
        .iter()
        .map(|r| PublishedVersion {
            major: r.get(0),
            minor: r.get(1),
            default_language: stored_language(r.get(2)),
            effective_at: Timestamp(r.get(3)),
            must_accept_by: r.get::<_, Option<i64>>(4).map(Timestamp),
            published_at: Timestamp(r.get(5)),
        })
        .collect())
}

/// Freezes the template's current draft as version `major.minor`.
async fn publish(tx: &Transaction<'_>, id: i64, v: &PublishedVersion) -> Result<()> {
    let row = tx
        .query_one(
            "INSERT INTO template_versions (template_id, major, minor, default_language, \
             effective_at, must_accept_by, published_at) VALUES ($1, $2, $3, $4, $5, $6, $7) \
             RETURNING id",
            &[
                &id,
                &v.major,
                &v.minor,
                &v.default_language.as_str(),
                &v.effective_at.millis(),
                &v.must_accept_by.map(Timestamp::millis),
                &v.published_at.millis(),
            ],
        )
        .await?;
    let version_id: i64 = row.get(0);
    tx.execute(
        "INSERT INTO template_version_texts (version_id, language, title, content, inline_content) \
         SELECT $2, language, title, content, inline_content FROM template_texts \
         WHERE template_id = $1",
        &[&id, &version_id],
    )
    .await?;
    Ok(())
}

/// The frozen texts of a published version (none when there is no such version).
pub(crate) async fn version_texts<C: GenericClient>(
    c: &C,
    id: i64,
    major: i64,
    minor: i64,
) -> Result<BTreeMap<Language, TemplateText>> {
    let stmt = c
        .prepare_cached(
            "SELECT vt.language, vt.title, vt.content, vt.inline_content \
             FROM template_versions v JOIN template_version_texts vt ON vt.version_id = v.id \
             WHERE v.template_id = $1 AND v.major = $2 AND v.minor = $3",
        )
        .await?;
    Ok(text_rows(&c.query(&stmt, &[&id, &major, &minor]).await?))
}

/// The rule of `store::templates::visible_rows` as a condition on the template row `template` and the
/// integration row `integration` (SQL expressions): the templates linked to the integration; if none
/// is linked to it, those linked to no integration.
fn visible(template: &str, integration: &str) -> String {
    format!(
        "CASE WHEN EXISTS (SELECT 1 FROM template_integrations WHERE integration_id = {integration}) \
           THEN EXISTS (SELECT 1 FROM template_integrations ti \
             WHERE ti.template_id = {template} AND ti.integration_id = {integration}) \
           ELSE NOT EXISTS (SELECT 1 FROM template_integrations ti WHERE ti.template_id = {template}) END"
    )
}

static VISIBLE_ROWS: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT t.id FROM templates t WHERE t.enabled AND {} \
         AND (cardinality($2::text[]) = 0 OR EXISTS (SELECT 1 FROM template_tags tt \
             WHERE tt.template_id = t.id AND tt.tag = ANY($2::text[]))) \
         ORDER BY t.created_at, t.id",
        visible("t.id", "$1")
    )
});

/// Enabled templates an integration may see, by [`visible`]. With `tags`, only templates carrying
/// at least one of them.
pub(crate) async fn visible_rows<C: GenericClient>(
    c: &C,
    integration_id: i64,
    tags: &[String],
) -> Result<Vec<i64>> {
    let stmt = c.prepare_cached(&VISIBLE_ROWS).await?;
    Ok(c.query(&stmt, &[&integration_id, &tags])
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect())
}

/// What decides whether an integration may use a template now (`store::consent::usable`), read in
/// one statement: the template's row and flags, whether the integration may see it ([`visible`]),
/// and its published versions in the order of [`versions`].
pub(crate) struct UsableFacts {
    pub row: i64,
    pub flags: Flags,
    pub visible: bool,
    pub versions: Vec<PublishedVersion>,
}

static USABLE_FACTS: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT t.id, t.enabled, t.always_reaccept, t.name, {}, \
                v.major, v.minor, v.default_language, v.effective_at, v.must_accept_by, v.published_at \
         FROM templates t LEFT JOIN template_versions v ON v.template_id = t.id \
         WHERE t.template_id = $1 ORDER BY v.published_at, v.id",
        visible("t.id", "$2")
    )
});

/// [`UsableFacts`] of the template `template_id` for the integration's row; none when there is no
/// such template.
pub(crate) async fn usable_facts<C: GenericClient>(
    c: &C,
    template_id: &str,
    integration_id: i64,
) -> Result<Option<UsableFacts>> {
    let stmt = c.prepare_cached(&USABLE_FACTS).await?;
    let rows = c.query(&stmt, &[&template_id, &integration_id]).await?;
    let Some(first) = rows.first() else {
        return Ok(None);
    };
    Ok(Some(UsableFacts {
        row: first.get(0),
        flags: Flags {
            enabled: first.get(1),
            always_reaccept: first.get(2),
            name: first.get(3),
        },
        visible: first.get(4),
        versions: rows
            .iter()
            .filter_map(|r| {
                Some(PublishedVersion {
                    major: r.get::<_, Option<i64>>(5)?,
                    minor: r.get(6),
                    default_language: stored_language(r.get(7)),
                    effective_at: Timestamp(r.get(8)),
                    must_accept_by: r.get::<_, Option<i64>>(9).map(Timestamp),
                    published_at: Timestamp(r.get(10)),
                })
            })
            .collect(),
    }))
}

impl Postgres {
    /// See `Store::create_template`.
    pub(crate) async fn create_template<E>(
        &self,
        template: Template,
        entry: Audit,
    ) -> std::result::Result<Option<TemplateView>, E>
    where
        E: From<StoreError> + From<UnknownIntegration>,
    {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(StoreError::from)?;
        let ids = integration_rows(&tx, &template.integrations).await??;
        let id = insert(&tx, &template, &ids).await?;
        audit::write(&tx, &entry, template.created_at).await?;
        let view = view(&tx, id, template.created_at).await?;
        tx.commit().await.map_err(StoreError::from)?;
        Ok(view)
    }

    pub(crate) async fn template(&self, template_id: &str) -> Result<Option<TemplateView>> {
        let client = self.client().await?;
        match row_id(&client, template_id).await? {
            Some(row) => view(&client, row, Timestamp::now()).await,
            None => Ok(None),
        }
    }

    pub(crate) async fn templates(&self) -> Result<Vec<TemplateView>> {
        let client = self.client().await?;
        let now = Timestamp::now();
        let mut out = Vec::new();
        for id in list_rows(&client).await? {
            out.extend(view(&client, id, now).await?);
        }
        Ok(out)
    }

    /// See `Store::update_template`.
    pub(crate) async fn update_template<E>(
        &self,
        template_id: &str,
        changes: Changes,
        check: impl FnOnce(&Language, &BTreeMap<Language, TemplateText>) -> std::result::Result<(), E>,
        entry: Audit,
    ) -> std::result::Result<Option<TemplateView>, E>
    where
        E: From<StoreError> + From<UnknownIntegration>,
    {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(StoreError::from)?;
        let now = Timestamp::now();
        let Some(id) = row_id_locked(&tx, template_id).await? else {
            return Ok(None);
        };
        let current = get_by_row(&tx, id).await?.expect("row exists");
        check(
            changes
                .default_language
                .as_ref()
                .unwrap_or(&current.default_language),
            changes.texts.as_ref().unwrap_or(&current.texts),
        )?;
        let ids = match &changes.integrations {
            Some(app_ids) => Some(integration_rows(&tx, app_ids).await??),
            None => None,
        };
        update(&tx, id, &changes, ids.as_deref(), now).await?;
        audit::write(&tx, &entry, now).await?;
        let view = view(&tx, id, now).await?;
        tx.commit().await.map_err(StoreError::from)?;
        Ok(view)
    }

    /// See `Store::publish_template`.
    pub(crate) async fn publish_template<E>(
        &self,
        template_id: &str,
        decide: impl FnOnce(
            &Template,
            &[PublishedVersion],
            Timestamp,
        ) -> std::result::Result<(PublishedVersion, Audit), E>,
    ) -> std::result::Result<Option<PublishedVersion>, E>
    where
        E: From<StoreError>,
    {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(StoreError::from)?;
        let now = Timestamp::now();
        let Some(id) = row_id_locked(&tx, template_id).await? else {
            return Ok(None);
        };
        let template = get_by_row(&tx, id).await?.expect("row exists");
        let (version, entry) = decide(&template, &versions(&tx, id).await?, now)?;
        publish(&tx, id, &version).await?;
        audit::write(&tx, &entry, now).await?;
        tx.commit().await.map_err(StoreError::from)?;
        Ok(Some(version))
    }

    /// See `Store::templates_visible_to`.
    pub(crate) async fn templates_visible_to(
        &self,
        integration_id: i64,
        tags: Vec<String>,
    ) -> Result<Vec<TemplateView>> {
        let client = self.client().await?;
        let now = Timestamp::now();
        let mut out = Vec::new();
        for id in visible_rows(&client, integration_id, &tags).await? {
            if let Some(v) = view(&client, id, now)
                .await?
                .filter(|v| v.effective.is_some())
            {
                out.push(v);
            }
        }
        Ok(out)
    }
}
