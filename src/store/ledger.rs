//! The proof-of-consent ledger (schema 7, issue #17): one link per verified event, in verification
//! order, appended in the verify's own transaction. What a link covers and how it is hashed is
//! `crate::ledger`'s; this file reads the facts an evidence is rebuilt from and keeps the links.
//!
//! The chain head is the last link, read by the table's own key (`max(position)`, which SQLite answers
//! from the b-tree's last entry, then that row by key: never a scan) inside the writer's transaction,
//! so a verify whose savepoint is rolled back leaves no trace in the next one's link. `plans.rs`
//! asserts the plan of every statement here.

use rusqlite::{Connection, OptionalExtension, params};

use super::events::{self, Filter, ListQuery, Marked};
use super::{Backend, Result, Store};
use crate::ledger::{Evidence, Link, Source, StoredLink, VersionText};
use crate::model::{Action, ChainHash, ChainHead, Timestamp};

/// The facts of one event's evidence, by its row id. Every join is a left join, so a row that lost its
/// template, integration or version text behind the server's back still yields evidence — which then
/// no longer matches its digest — rather than vanishing from the check.
pub(crate) const SOURCE_SQL: &str = "SELECT e.event_id, coalesce(i.app_id, ''), e.end_user_id, coalesce(t.template_id, ''), \
     coalesce(t.name, ''), e.major, e.minor, e.language, e.effective_at, vt.title, vt.content, vt.inline_content, \
     e.template_placeholders, e.technical_metadata, e.presented_at, e.action_at, e.verified_at, e.action, \
     e.ledger_position \
     FROM events e \
     LEFT JOIN integrations i ON i.id = e.integration_id \
     LEFT JOIN templates t ON t.id = e.template_id \
     LEFT JOIN template_versions v ON v.template_id = e.template_id AND v.major = e.major AND v.minor = e.minor \
     LEFT JOIN template_version_texts vt ON vt.version_id = v.id AND vt.language = e.language \
     WHERE e.id = ?1 AND e.verified_at IS NOT NULL";

/// A verified event's evidence facts and the ledger position its verify gave it.
fn source(conn: &Connection, event_row: i64) -> Result<Option<(Source, Option<i64>)>> {
    Ok(conn
        .prepare_cached(SOURCE_SQL)?
        .query_row([event_row], |r| {
            let title: Option<String> = r.get(9)?;
            let content: Option<String> = r.get(10)?;
            let source = Source {
                event_id: r.get(0)?,
                app_id: r.get(1)?,
                end_user_id: r.get(2)?,
                template_id: r.get(3)?,
                template_name: r.get(4)?,
                major: r.get(5)?,
                minor: r.get(6)?,
                language: r.get(7)?,
                effective_at: Timestamp(r.get(8)?),
                text: match (title, content) {
                    (Some(title), Some(content)) => Some(VersionText {
                        title,
                        content,
                        inline_content: r.get(11)?,
                    }),
                    _ => None,
                },
                template_placeholders: r.get(12)?,
                technical_metadata: r.get(13)?,
                presented_at: r.get::<_, Option<i64>>(14)?.map(Timestamp),
                action_at: Timestamp(r.get(15)?),
                verified_at: Timestamp(r.get(16)?),
                action: Action::parse(&r.get::<_, String>(17)?).unwrap_or(Action::Declined),
            };
            Ok((source, r.get(18)?))
        })
        .optional()?)
}

fn hash_of(r: &rusqlite::Row<'_>, i: usize) -> rusqlite::Result<ChainHash> {
    let bytes: Vec<u8> = r.get(i)?;
    Ok(ChainHash::from_slice(&bytes).unwrap_or(ChainHash::GENESIS))
}

pub(crate) const HEAD_SQL: &str =
    "SELECT position, hash FROM ledger WHERE position = (SELECT max(position) FROM ledger)";

/// The last link, or the empty ledger's head.
pub fn head(conn: &Connection) -> Result<ChainHead> {
    Ok(conn
        .prepare_cached(HEAD_SQL)?
        .query_row([], |r| {
            Ok(ChainHead {
                position: r.get(0)?,
                hash: hash_of(r, 1)?,
            })
        })
        .optional()?
        .unwrap_or(ChainHead::EMPTY))
}

/// A published version's text in one language, by the template's row, the version and the language.
pub(crate) const TEXT_SQL: &str = "SELECT vt.title, vt.content, vt.inline_content \
     FROM template_versions v JOIN template_version_texts vt ON vt.version_id = v.id AND vt.language = ?4 \
     WHERE v.template_id = ?1 AND v.major = ?2 AND v.minor = ?3";

/// Chains the event the verify just marked onto the ledger: its evidence built from what the marking
/// update returned and its version's text, hashed, linked to the head. Runs inside the verify's
/// transaction (its savepoint), so the event and its link are committed together or not at all. The
/// evidence is the one [`SOURCE_SQL`] rebuilds from the stored rows (what `verify-ledger` checks).
pub fn append(conn: &Connection, marked: &Marked) -> Result<Link> {
    let e = &marked.event;
    let text = conn
        .prepare_cached(TEXT_SQL)?
        .query_row(
            params![marked.template_row, e.major, e.minor, marked.language],
            |r| {
                Ok(VersionText {
                    title: r.get(0)?,
                    content: r.get(1)?,
                    inline_content: r.get(2)?,
                })
            },
        )
        .optional()?;
    let verified_at = e.verified_at.ok_or_else(|| {
        super::StoreError::Io(format!("event row {} is not verified", marked.row))
    })?;
    let source = Source {
        event_id: e.event_id.clone(),
        app_id: e.app_id.clone(),
        end_user_id: e.end_user_id.clone(),
        template_id: e.template_id.clone(),
        template_name: marked.template_name.clone(),
        major: e.major,
        minor: e.minor,
        language: marked.language.clone(),
        effective_at: e.effective_at,
        text,
        template_placeholders: e.template_placeholders.clone(),
        technical_metadata: e.technical_metadata.clone(),
        presented_at: e.presented_at,
        action_at: e.action_at,
        verified_at,
        action: e.action,
    };
    chain(
        conn,
        head(conn)?,
        marked.row,
        Some(marked.ledger_position),
        source,
    )
}

/// [`append`] for a stored event, after a head the caller already knows (the migration, which chains
/// many in a row): its evidence rebuilt by [`SOURCE_SQL`].
fn append_after(conn: &Connection, head: ChainHead, event_row: i64) -> Result<Link> {
    let (source, position) = source(conn, event_row)?
        .ok_or_else(|| super::StoreError::Io(format!("event row {event_row} is not verified")))?;
    chain(conn, head, event_row, position, source)
}

/// Links the evidence of `source` (event row `event_row`, given ledger position `position`) after
/// `head` and writes the link.
fn chain(
    conn: &Connection,
    head: ChainHead,
    event_row: i64,
    position: Option<i64>,
    source: Source,
) -> Result<Link> {
    if position != Some(head.position + 1) {
        return Err(super::StoreError::Io(format!(
            "event row {event_row} was given ledger position {position:?}, but the head is at {}",
            head.position
        )));
    }
    let template_name = source.template_name.clone();
    let evidence = Evidence::from_source(source);
    let link = crate::ledger::next_link(head, evidence.digest());
    conn.prepare_cached(
        "INSERT INTO ledger (position, event_id, template_name, digest, hash) VALUES (?1, ?2, ?3, ?4, ?5)",
    )?
    .execute(params![
        link.position,
        event_row,
        template_name,
        link.digest.0,
        link.hash.0
    ])?;
    Ok(link)
}

/// Chains every verified event of a database made before the ledger (migration 6 → 7), in their
/// verification order (ties by row id), with their templates' names as they are now. One statement
/// walks the events while the links are written, so memory stays flat whatever the size.
pub(super) fn chain_existing(conn: &Connection) -> Result<i64> {
    let mut walk = conn
        .prepare("SELECT id FROM events WHERE verified_at IS NOT NULL ORDER BY verified_at, id")?;
    let mut rows = walk.query([])?;
    let mut at = head(conn)?;
    // Verified events are immutable; this is the one update that gives them their place, once.
    let trigger: String = conn.query_row(
        "SELECT sql FROM sqlite_schema WHERE type = 'trigger' AND name = 'events_final_once_verified'",
        [],
        |r| r.get(0),
    )?;
    conn.execute_batch("DROP TRIGGER events_final_once_verified")?;
    while let Some(r) = rows.next()? {
        let row: i64 = r.get(0)?;
        conn.prepare_cached("UPDATE events SET ledger_position = ?2 WHERE id = ?1")?
            .execute(params![row, at.position + 1])?;
        let link = append_after(conn, at, row)?;
        at = ChainHead {
            position: link.position,
            hash: link.hash,
        };
    }
    drop(rows);
    conn.execute_batch(&trigger)?;
    Ok(at.position)
}

/// A link read back with the evidence rebuilt now.
fn stored(
    conn: &Connection,
    position: i64,
    event_row: i64,
    template_name: String,
    digest: ChainHash,
    hash: ChainHash,
) -> Result<StoredLink> {
    let evidence = source(conn, event_row)?.map(|(mut s, _)| {
        s.template_name = template_name;
        Evidence::from_source(s)
    });
    Ok(StoredLink {
        position,
        event_id: evidence.as_ref().map(|e| e.event_id.clone()),
        digest,
        hash,
        evidence,
    })
}

pub(crate) const LINKS_SQL: &str = "SELECT position, event_id, template_name, digest, hash FROM ledger \
     WHERE position > ?1 ORDER BY position LIMIT ?2";

/// Up to `limit` links after `after`, in position order, each with its evidence rebuilt.
pub fn links(conn: &Connection, after: i64, limit: u32) -> Result<Vec<StoredLink>> {
    let raw = conn
        .prepare_cached(LINKS_SQL)?
        .query_map(params![after, limit], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, String>(2)?,
                hash_of(r, 3)?,
                hash_of(r, 4)?,
            ))
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    raw.into_iter()
        .map(|(p, e, n, d, h)| stored(conn, p, e, n, d, h))
        .collect()
}

/// The hash of the link at `position`, if there is one.
pub fn hash_at(conn: &Connection, position: i64) -> Result<Option<ChainHash>> {
    Ok(conn
        .prepare_cached("SELECT hash FROM ledger WHERE position = ?1")?
        .query_row([position], |r| hash_of(r, 0))
        .optional()?)
}

/// A verified event no link covers, if any: a scan of the events, for `verify-ledger` only.
pub fn unchained(conn: &Connection) -> Result<Option<String>> {
    Ok(conn
        .prepare(
            "SELECT e.event_id FROM events e WHERE e.verified_at IS NOT NULL \
             AND NOT EXISTS (SELECT 1 FROM ledger l \
             WHERE l.position = e.ledger_position AND l.event_id = e.id) LIMIT 1",
        )?
        .query_row([], |r| r.get(0))
        .optional()?)
}

/// An event's link: the row at the event's `ledger_position`, if that row is the event's.
pub(super) const LINK_OF_SQL: &str = "SELECT link.position, link.template_name, link.digest, link.hash, \
     coalesce((SELECT prior.hash FROM ledger prior WHERE prior.position = link.position - 1), zeroblob(32)) \
     FROM ledger link WHERE link.position = (SELECT ledger_position FROM events WHERE id = ?1) \
     AND link.event_id = ?1";

/// One event's evidence and link, by its row id.
fn chained(conn: &Connection, event_row: i64) -> Result<Option<(Evidence, Link)>> {
    let link = conn
        .prepare_cached(LINK_OF_SQL)?
        .query_row([event_row], |r| {
            Ok((
                Link {
                    position: r.get(0)?,
                    digest: hash_of(r, 2)?,
                    hash: hash_of(r, 3)?,
                    previous: hash_of(r, 4)?,
                },
                r.get::<_, String>(1)?,
            ))
        })
        .optional()?;
    let Some((link, template_name)) = link else {
        return Ok(None);
    };
    Ok(source(conn, event_row)?.map(|(mut s, _)| {
        s.template_name = template_name;
        (Evidence::from_source(s), link)
    }))
}

pub(crate) const EVENT_ROW_SQL: &str =
    "SELECT id, integration_id FROM events WHERE event_id = ?1 AND verified_at IS NOT NULL";

/// The evidence of a verified event by its public id, of one integration or (admin) of any.
pub fn evidence(
    conn: &Connection,
    integration_id: Option<i64>,
    event_id: &str,
) -> Result<Option<(Evidence, Link)>> {
    let row: Option<(i64, i64)> = conn
        .prepare_cached(EVENT_ROW_SQL)?
        .query_row([event_id], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    match row {
        Some((row, owner)) if integration_id.is_none_or(|i| i == owner) => chained(conn, row),
        _ => Ok(None),
    }
}

/// A page of an export: evidence with links, and where the next page starts (none after the last).
pub struct ExportPage {
    pub items: Vec<(Evidence, Link)>,
    pub next: Option<(Timestamp, String)>,
}

/// One page of the export walk: the event list's own index walk for `filter` (newest first, after
/// `cursor`), each event's evidence rebuilt; links past `upto` (verified after the export began) are
/// left out, so the export is exactly the chain up to the head it reports.
pub fn export_page(
    conn: &Connection,
    filter: &Filter,
    cursor: Option<(Timestamp, String)>,
    limit: u32,
    upto: i64,
) -> Result<ExportPage> {
    let template_row = match &filter.template_id {
        None => None,
        Some(public) => match super::templates::row_id(conn, public)? {
            Some(row) => Some(row),
            None => {
                return Ok(ExportPage {
                    items: Vec::new(),
                    next: None,
                });
            }
        },
    };
    let query = ListQuery {
        integration: filter.integration_id,
        template_row,
        end_user: filter.end_user_id.clone(),
        action: filter.action,
        from: filter.from,
        to: filter.to,
        cursor,
        ..ListQuery::default()
    };
    let keys = events::list_keys(conn, &query, limit)?;
    let next = (keys.len() == limit as usize)
        .then(|| keys.last().map(|(at, id, _)| (*at, id.clone())))
        .flatten();
    let mut items = Vec::with_capacity(keys.len());
    for (_, _, row) in keys {
        if let Some((evidence, link)) = chained(conn, row)?
            && link.position <= upto
        {
            items.push((evidence, link));
        }
    }
    Ok(ExportPage { items, next })
}

impl Store {
    /// The ledger's last link (see [`head`]).
    pub async fn ledger_head(&self) -> Result<ChainHead> {
        match self.backend() {
            Backend::Sqlite(s) => s.read(head).await,
            Backend::Postgres(p) => p.ledger_head().await,
        }
    }

    /// A verified event's evidence and link (see [`evidence`]).
    pub async fn evidence(
        &self,
        integration_id: Option<i64>,
        event_id: &str,
    ) -> Result<Option<(Evidence, Link)>> {
        let id = event_id.to_string();
        match self.backend() {
            Backend::Sqlite(s) => s.read(move |c| evidence(c, integration_id, &id)).await,
            Backend::Postgres(p) => p.evidence(integration_id, event_id).await,
        }
    }

    /// Links after `after`, with their evidence rebuilt (see [`links`]).
    pub async fn ledger_links(&self, after: i64, limit: u32) -> Result<Vec<StoredLink>> {
        match self.backend() {
            Backend::Sqlite(s) => s.read(move |c| links(c, after, limit)).await,
            Backend::Postgres(p) => p.ledger_links(after, limit).await,
        }
    }

    /// The hash of the link at `position` (see [`hash_at`]).
    pub async fn ledger_hash_at(&self, position: i64) -> Result<Option<ChainHash>> {
        match self.backend() {
            Backend::Sqlite(s) => s.read(move |c| hash_at(c, position)).await,
            Backend::Postgres(p) => p.ledger_hash_at(position).await,
        }
    }

    /// A verified event without a link (see [`unchained`]).
    pub async fn ledger_unchained(&self) -> Result<Option<String>> {
        match self.backend() {
            Backend::Sqlite(s) => s.read(unchained).await,
            Backend::Postgres(p) => p.ledger_unchained().await,
        }
    }

    /// A page of an export (see [`export_page`]).
    pub async fn export_page(
        &self,
        filter: Filter,
        cursor: Option<(Timestamp, String)>,
        limit: u32,
        upto: i64,
    ) -> Result<ExportPage> {
        match self.backend() {
            Backend::Sqlite(s) => {
                s.read(move |c| export_page(c, &filter, cursor, limit, upto))
                    .await
            }
            Backend::Postgres(p) => p.export_page(filter, cursor, limit, upto).await,
        }
    }
}
