//! PostgreSQL: the proof-of-consent ledger (see `store::ledger`; the evidence, its digest and the
//! link hash are `crate::ledger`'s, shared by both backends).
//!
//! Several nodes verify at once, and each link is hashed over the one before it, so taking the head
//! must be one decision at a time: a verify takes the transaction-scoped advisory lock [`LOCK`]
//! before it gives its event the next position, and holds it until it commits. In READ COMMITTED
//! each statement sees what committed before it began, so the head read after the lock is the last
//! committed link, and positions never fork (the key on `position` would refuse a fork anyway). A
//! verify rolled back leaves no trace; the next one takes the same position.

use deadpool_postgres::{GenericClient, Transaction};
use std::sync::LazyLock;

use super::Postgres;
use super::events::numbered;
use crate::ledger::{Evidence, Link, Source, StoredLink, VersionText};
use crate::model::{Action, ChainHash, ChainHead, Timestamp};
use crate::store::events::{Filter, ListQuery};
use crate::store::ledger::{ExportPage, HEAD_SQL, LINKS_SQL, SOURCE_SQL};
use crate::store::{Result, StoreError};

/// The advisory lock verifies take to append to the chain ("cklledgr").
const LOCK: i64 = 0x636b_6c6c_6564_6772;

static SOURCE: LazyLock<String> = LazyLock::new(|| numbered(SOURCE_SQL));
static LINKS: LazyLock<String> = LazyLock::new(|| numbered(LINKS_SQL));

/// Takes the ledger's lock until `tx` ends (see the module's comment).
pub(crate) async fn lock(tx: &Transaction<'_>) -> Result<()> {
    let stmt = tx
        .prepare_cached("SELECT pg_advisory_xact_lock($1)")
        .await?;
    tx.execute(&stmt, &[&LOCK]).await?;
    Ok(())
}

fn hash(bytes: Option<Vec<u8>>) -> ChainHash {
    bytes
        .and_then(|b| ChainHash::from_slice(&b))
        .unwrap_or(ChainHash::GENESIS)
}

/// [`SOURCE`] for many events: their row id last, `$1` the rows.
static SOURCES: LazyLock<String> = LazyLock::new(|| {
    let many = SOURCE
        .replacen("e.ledger_position ", "e.ledger_position, e.id ", 1)
        .replacen("WHERE e.id = $1 ", "WHERE e.id = ANY($1) ", 1);
    assert_eq!(
        many.matches("ANY($1)").count(),
        1,
        "SOURCE_SQL's shape changed"
    );
    many
});

fn source_from_row(r: &tokio_postgres::Row) -> (Source, Option<i64>) {
    let title: Option<String> = r.get(9);
    let content: Option<String> = r.get(10);
    let source = Source {
        event_id: r.get(0),
        app_id: r.get(1),
        end_user_id: r.get(2),
        template_id: r.get(3),
        template_name: r.get(4),
        major: r.get(5),
        minor: r.get(6),
        language: r.get(7),
        effective_at: Timestamp(r.get(8)),
        text: match (title, content) {
            (Some(title), Some(content)) => Some(VersionText {
                title,
                content,
                inline_content: r.get(11),
            }),
            _ => None,
        },
        template_placeholders: r.get(12),
        technical_metadata: r.get(13),
        presented_at: r.get::<_, Option<i64>>(14).map(Timestamp),
        action_at: Timestamp(r.get(15)),
        verified_at: Timestamp(r.get(16)),
        action: Action::parse(r.get(17)).unwrap_or(Action::Declined),
    };
    (source, r.get(18))
}

/// A verified event's evidence facts and the ledger position its verify gave it.
pub(crate) async fn source<C: GenericClient>(
    c: &C,
    event_row: i64,
) -> Result<Option<(Source, Option<i64>)>> {
    let stmt = c.prepare_cached(&SOURCE).await?;
    Ok(c.query_opt(&stmt, &[&event_row])
        .await?
        .map(|r| source_from_row(&r)))
}

/// [`source`] of many verified events in one statement, by event row.
pub(crate) async fn sources<C: GenericClient>(
    c: &C,
    event_rows: &[i64],
) -> Result<std::collections::HashMap<i64, (Source, Option<i64>)>> {
    let stmt = c.prepare_cached(&SOURCES).await?;
    Ok(c.query(&stmt, &[&event_rows])
        .await?
        .iter()
        .map(|r| (r.get::<_, i64>(19), source_from_row(r)))
        .collect())
}

/// The last link, or the empty ledger's head.
pub(crate) async fn head<C: GenericClient>(c: &C) -> Result<ChainHead> {
    let stmt = c.prepare_cached(HEAD_SQL).await?;
    Ok(c.query_opt(&stmt, &[])
        .await?
        .map(|r| ChainHead {
            position: r.get(0),
            hash: hash(r.get(1)),
        })
        .unwrap_or(ChainHead::EMPTY))
}

/// Chains the just-verified event `event_row` onto the ledger, in the verify's transaction, which
/// holds [`lock`] (see `store::ledger::append`).
pub(crate) async fn append(tx: &Transaction<'_>, event_row: i64) -> Result<Link> {
    let head = head(tx).await?;
    let (source, position) = source(tx, event_row)
        .await?
        .ok_or_else(|| StoreError::Io(format!("event row {event_row} is not verified")))?;
    if position != Some(head.position + 1) {
        return Err(StoreError::Io(format!(
            "event row {event_row} was given ledger position {position:?}, but the head is at {}",
            head.position
        )));
    }
    let template_name = source.template_name.clone();
    let evidence = Evidence::from_source(source);
    let link = crate::ledger::next_link(head, evidence.digest());
    let stmt = tx
        .prepare_cached(
            "INSERT INTO ledger (position, event_id, template_name, digest, hash) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .await?;
    tx.execute(
        &stmt,
        &[
            &link.position,
            &event_row,
            &template_name,
            &&link.digest.0[..],
            &&link.hash.0[..],
        ],
    )
    .await?;
    Ok(link)
}

/// An event's evidence with the template's name its link keeps.
async fn evidence_as_linked<C: GenericClient>(
    c: &C,
    event_row: i64,
    template_name: String,
) -> Result<Option<Evidence>> {
    Ok(source(c, event_row).await?.map(|(mut s, _)| {
        s.template_name = template_name;
        Evidence::from_source(s)
    }))
}

/// One event's evidence and link, by its row id (see `store::ledger::chained`).
async fn chained<C: GenericClient>(c: &C, event_row: i64) -> Result<Option<(Evidence, Link)>> {
    let stmt = c
        .prepare_cached(
            "SELECT link.position, link.template_name, link.digest, link.hash, \
             (SELECT prior.hash FROM ledger prior WHERE prior.position = link.position - 1) \
             FROM ledger link WHERE link.position = (SELECT ledger_position FROM events WHERE id = $1) \
             AND link.event_id = $1",
        )
        .await?;
    let Some(r) = c.query_opt(&stmt, &[&event_row]).await? else {
        return Ok(None);
    };
    let link = Link {
        position: r.get(0),
        digest: hash(r.get(2)),
        hash: hash(r.get(3)),
        previous: hash(r.get(4)),
    };
    Ok(evidence_as_linked(c, event_row, r.get(1))
        .await?
        .map(|e| (e, link)))
}

impl Postgres {
    /// See `Store::ledger_head`.
    pub(crate) async fn ledger_head(&self) -> Result<ChainHead> {
        head(&self.client().await?).await
    }

    /// See `Store::evidence`.
    pub(crate) async fn evidence(
        &self,
        integration_id: Option<i64>,
        event_id: &str,
    ) -> Result<Option<(Evidence, Link)>> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(&numbered(crate::store::ledger::EVENT_ROW_SQL))
            .await?;
        match client.query_opt(&stmt, &[&event_id]).await? {
            Some(r) if integration_id.is_none_or(|i| i == r.get::<_, i64>(1)) => {
                chained(&client, r.get(0)).await
            }
            _ => Ok(None),
        }
    }

    /// See `Store::ledger_links`.
    pub(crate) async fn ledger_links(&self, after: i64, limit: u32) -> Result<Vec<StoredLink>> {
        let client = self.client().await?;
        let stmt = client.prepare_cached(&LINKS).await?;
        let rows = client.query(&stmt, &[&after, &i64::from(limit)]).await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            let evidence = evidence_as_linked(&client, r.get(1), r.get(2)).await?;
            out.push(StoredLink {
                position: r.get(0),
                event_id: evidence.as_ref().map(|e| e.event_id.clone()),
                digest: hash(r.get(3)),
                hash: hash(r.get(4)),
                evidence,
            });
        }
        Ok(out)
    }

    /// See `Store::ledger_hash_at`.
    pub(crate) async fn ledger_hash_at(&self, position: i64) -> Result<Option<ChainHash>> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached("SELECT hash FROM ledger WHERE position = $1")
            .await?;
        Ok(client
            .query_opt(&stmt, &[&position])
            .await?
            .map(|r| hash(r.get(0))))
    }

    /// See `Store::ledger_unchained`.
    pub(crate) async fn ledger_unchained(&self) -> Result<Option<String>> {
        let client = self.client().await?;
        Ok(client
            .query_opt(
                "SELECT e.event_id FROM events e WHERE e.verified_at IS NOT NULL \
                 AND NOT EXISTS (SELECT 1 FROM ledger l \
                 WHERE l.position = e.ledger_position AND l.event_id = e.id) LIMIT 1",
                &[],
            )
            .await?
            .map(|r| r.get(0)))
    }

    /// See `Store::export_page`.
    pub(crate) async fn export_page(
        &self,
        filter: Filter,
        cursor: Option<(Timestamp, String)>,
        limit: u32,
        upto: i64,
    ) -> Result<ExportPage> {
        let client = self.client().await?;
        let template_row = match &filter.template_id {
            None => None,
            Some(public) => match super::templates::row_id(&client, public).await? {
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
        let keys = super::events::list_keys(&client, &query, limit).await?;
        let next = (keys.len() == limit as usize)
            .then(|| keys.last().map(|(at, id, _)| (*at, id.clone())))
            .flatten();
        let mut items = Vec::with_capacity(keys.len());
        for (_, _, row) in keys {
            if let Some((evidence, link)) = chained(&client, row).await?
                && link.position <= upto
            {
                items.push((evidence, link));
            }
        }
        Ok(ExportPage { items, next })
    }
}
