//! PostgreSQL: presentations, clickwrap events and re-acceptance requests (see `store::events`).
//!
//! The event list runs the SQLite family's own statements (`events::list_statement`, built from its
//! fixed fragments for the filters present), taken into PostgreSQL's dialect by [`dialect`]: `$n`
//! parameters, no `INDEXED BY` (the same partial indexes exist in `schema-postgres.sql`, and the
//! planner picks them), and a `LIMIT` so that the planner walks an index in the order asked and
//! stops when the page is full (the server would otherwise produce every row, where SQLite's caller
//! just stops stepping). One source for the list's shapes, two dialects.

use deadpool_postgres::{GenericClient, Transaction};
use tokio_postgres::types::ToSql;

use crate::model::{Action, ClickwrapEvent, Timestamp};
use crate::store::events::{
    self as sqlite, EVENT_COLUMNS, LastPresentation, ListQuery, Statement, UserEvents, VerifyFacts,
};
use crate::store::{Result, StoreError};

/// A statement's parameter, owned.
pub(crate) type Param = Box<dyn ToSql + Sync + Send>;

/// `?n` → `$n`: a SQLite statement with numbered parameters, as PostgreSQL numbers them.
pub(crate) fn numbered(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len());
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '?' && chars.peek().is_some_and(char::is_ascii_digit) {
            out.push('$');
        } else {
            out.push(c);
        }
    }
    out
}

/// An event-list statement of the SQLite family in PostgreSQL's dialect, with its `:name` parameters
/// numbered in order of first use, and at most `limit` rows.
pub(crate) fn dialect(statement: &Statement, limit: u32) -> Result<(String, Vec<Param>)> {
    let sql = statement
        .sql
        .replace(&format!(" INDEXED BY {}", statement.index), "")
        // A UNION's order is by its output columns' names (PostgreSQL refuses `e.` there); they are
        // the same columns.
        .replace(
            "ORDER BY e.action_at DESC, e.event_id DESC",
            "ORDER BY action_at DESC, event_id DESC",
        );
    let mut out = String::with_capacity(sql.len() + 16);
    let mut used: Vec<&str> = Vec::new();
    let mut values: Vec<Param> = Vec::new();
    let mut rest = sql.as_str();
    while let Some(at) = rest.find(':') {
        out.push_str(&rest[..at]);
        let tail = &rest[at + 1..];
        let len = tail
            .find(|c: char| !(c.is_ascii_lowercase() || c == '_'))
            .unwrap_or(tail.len());
        let name = &rest[at..at + 1 + len];
        let n = match used.iter().position(|u| *u == name) {
            Some(i) => i + 1,
            None => {
                let (_, value) = statement
                    .params
                    .iter()
                    .find(|(p, _)| *p == name)
                    .ok_or_else(|| StoreError::Task(format!("no value for {name}")))?;
                values.push(match value {
                    rusqlite::types::Value::Integer(i) => Box::new(*i),
                    rusqlite::types::Value::Text(t) => Box::new(t.clone()),
                    other => {
                        return Err(StoreError::Task(format!(
                            "{name}: a list parameter is an integer or a text, not {other:?}"
                        )));
                    }
                });
                used.push(name);
                used.len()
            }
        };
        out.push_str(&format!("${n}"));
        rest = &tail[len..];
    }
    out.push_str(rest);
    values.push(Box::new(i64::from(limit)));
    out.push_str(&format!(" LIMIT ${}", values.len()));
    Ok((out, values))
}

fn refs(values: &[Param]) -> Vec<&(dyn ToSql + Sync)> {
    values
        .iter()
        .map(|v| v.as_ref() as &(dyn ToSql + Sync))
        .collect()
}

pub(crate) async fn insert_presentation(
    tx: &Transaction<'_>,
    integration_id: i64,
    template_row: i64,
    (major, minor): (i64, i64),
    end_user_id: &str,
    at: Timestamp,
) -> Result<()> {
    let stmt = tx
        .prepare_cached(
            "INSERT INTO presentations (integration_id, template_id, major, minor, end_user_id, \
             presented_at) VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .await?;
    tx.execute(
        &stmt,
        &[
            &integration_id,
            &template_row,
            &major,
            &minor,
            &end_user_id,
            &at.millis(),
        ],
    )
    .await?;
    Ok(())
}

/// See `events::latest_presentation`.
pub(crate) async fn latest_presentation<C: GenericClient>(
    c: &C,
    template_row: i64,
    end_user_id: &str,
    major: i64,
) -> Result<Option<Timestamp>> {
    let stmt = c
        .prepare_cached(&numbered(sqlite::LATEST_PRESENTATION))
        .await?;
    Ok(c.query_opt(&stmt, &[&template_row, &end_user_id, &major])
        .await?
        .map(|r| Timestamp(r.get(0))))
}

pub(crate) async fn last_presentation<C: GenericClient>(
    c: &C,
    template_row: i64,
    end_user_id: &str,
) -> Result<Option<LastPresentation>> {
    let stmt = c
        .prepare_cached(
            "SELECT presented_at, major, minor FROM presentations \
             WHERE template_id = $1 AND end_user_id = $2 ORDER BY presented_at DESC LIMIT 1",
        )
        .await?;
    Ok(c.query_opt(&stmt, &[&template_row, &end_user_id])
        .await?
        .map(|r| LastPresentation {
            at: Timestamp(r.get(0)),
            version: (r.get(1), r.get(2)),
        }))
}

pub(crate) async fn verify_facts<C: GenericClient>(
    c: &C,
    event_id: &str,
) -> Result<Option<VerifyFacts>> {
    let stmt = c
        .prepare_cached(
            "SELECT id, integration_id, verified_at IS NOT NULL FROM events WHERE event_id = $1",
        )
        .await?;
    Ok(c.query_opt(&stmt, &[&event_id])
        .await?
        .map(|r| VerifyFacts {
            row: r.get(0),
            integration_id: r.get(1),
            verified: r.get(2),
        }))
}

/// Marks the event verified and gives it the next position of the ledger, as
/// `events::mark_verified` does, and returns it as it now is with its row id; the caller holds the ledger's lock (`pg::ledger::lock`), so the
/// position read here is the head's and stays it until the transaction ends.
pub(crate) async fn mark_verified(
    tx: &Transaction<'_>,
    event_id: &str,
    integration_id: i64,
    at: Timestamp,
) -> Result<Option<(ClickwrapEvent, i64)>> {
    let stmt = tx
        .prepare_cached(&format!(
            "UPDATE events e SET verified_at = $3, \
             ledger_position = (SELECT coalesce(max(position), 0) + 1 FROM ledger) \
             WHERE e.event_id = $1 AND e.integration_id = $2 AND e.verified_at IS NULL \
             RETURNING {EVENT_COLUMNS}, e.id"
        ))
        .await?;
    tx.query_opt(&stmt, &[&event_id, &integration_id, &at.millis()])
        .await?
        .map(|r| Ok((event_from_row(&r), r.get(13))))
        .transpose()
}

/// A [`ClickwrapEvent`] from the columns of `EVENT_COLUMNS`.
pub(crate) fn event_from_row(r: &tokio_postgres::Row) -> ClickwrapEvent {
    ClickwrapEvent {
        event_id: r.get(0),
        template_id: r.get(1),
        major: r.get(2),
        minor: r.get(3),
        effective_at: Timestamp(r.get(4)),
        end_user_id: r.get(5),
        action: Action::parse(r.get(6)).unwrap_or(Action::Declined),
        template_placeholders: r.get(7),
        technical_metadata: r.get(8),
        presented_at: r.get::<_, Option<i64>>(9).map(Timestamp),
        action_at: Timestamp(r.get(10)),
        verified_at: r.get::<_, Option<i64>>(11).map(Timestamp),
        app_id: r.get(12),
    }
}

pub(crate) async fn get<C: GenericClient>(c: &C, row: i64) -> Result<Option<ClickwrapEvent>> {
    let stmt = c
        .prepare_cached(&format!(
            "SELECT {EVENT_COLUMNS} FROM events e WHERE e.id = $1"
        ))
        .await?;
    Ok(c.query_opt(&stmt, &[&row])
        .await?
        .map(|r| event_from_row(&r)))
}

/// A verified event by its public id: of one integration, or (admin) of any.
pub(crate) async fn get_verified<C: GenericClient>(
    c: &C,
    integration_id: Option<i64>,
    event_id: &str,
) -> Result<Option<ClickwrapEvent>> {
    let found = match integration_id {
        Some(integration) => {
            let stmt = c
                .prepare_cached(&numbered(&sqlite::get_verified_sql(true)))
                .await?;
            c.query_opt(&stmt, &[&event_id, &integration]).await?
        }
        None => {
            let stmt = c
                .prepare_cached(&numbered(&sqlite::get_verified_sql(false)))
                .await?;
            c.query_opt(&stmt, &[&event_id]).await?
        }
    };
    Ok(found.map(|r| event_from_row(&r)))
}

/// See `events::list_verified`.
pub(crate) async fn list_verified<C: GenericClient>(
    c: &C,
    f: &sqlite::Filter,
    cursor: Option<(Timestamp, String)>,
    limit: u32,
) -> Result<Vec<ClickwrapEvent>> {
    let template_row = match &f.template_id {
        None => None,
        Some(public) => match super::templates::row_id(c, public).await? {
            Some(row) => Some(row),
            // No such template: no event can match.
            None => return Ok(Vec::new()),
        },
    };
    let query = ListQuery {
        integration: f.integration_id,
        template_row,
        end_user: f.end_user_id.clone(),
        action: f.action,
        from: f.from,
        to: f.to,
        cursor,
        ..ListQuery::default()
    };
    if query.integration.is_none() && query.end_user.is_none() {
        let mut rows = Vec::with_capacity(limit as usize);
        for (_, _, row) in keys_across(c, &query, limit).await? {
            rows.extend(get(c, row).await?);
        }
        return Ok(rows);
    }
    let (sql, values) = dialect(&sqlite::list_statement(&query), limit)?;
    let stmt = c.prepare_cached(&sql).await?;
    Ok(c.query(&stmt, &refs(&values))
        .await?
        .iter()
        .map(event_from_row)
        .collect())
}

/// See `events::list_keys`: the keys (`action_at`, `event_id`, row id) of a page, newest first.
pub(crate) async fn list_keys<C: GenericClient>(
    c: &C,
    q: &ListQuery,
    limit: u32,
) -> Result<Vec<(Timestamp, String, i64)>> {
    if q.integration.is_none() && q.end_user.is_none() {
        return keys_across(c, q, limit).await;
    }
    let one = ListQuery {
        keys_only: true,
        ..q.clone()
    };
    keys(c, &one, limit).await
}

async fn keys<C: GenericClient>(
    c: &C,
    q: &ListQuery,
    limit: u32,
) -> Result<Vec<(Timestamp, String, i64)>> {
    let (sql, values) = dialect(&sqlite::list_statement(q), limit)?;
    let stmt = c.prepare_cached(&sql).await?;
    Ok(c.query(&stmt, &refs(&values))
        .await?
        .iter()
        .map(|r| (Timestamp(r.get(0)), r.get(1), r.get(2)))
        .collect())
}

/// See `events::keys_across`: each integration's page of keys, merged newest first, each further
/// walk starting above the oldest key in hand once a page's worth is there.
async fn keys_across<C: GenericClient>(
    c: &C,
    q: &ListQuery,
    limit: u32,
) -> Result<Vec<(Timestamp, String, i64)>> {
    let stmt = c
        .prepare_cached("SELECT id FROM integrations ORDER BY id")
        .await?;
    let integrations: Vec<i64> = c
        .query(&stmt, &[])
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let mut best: Vec<(Timestamp, String, i64)> = Vec::new();
    for integration in integrations {
        let floor = (best.len() >= limit as usize)
            .then(|| best.last().map(|(at, id, _)| (*at, id.clone())))
            .flatten();
        let one = ListQuery {
            integration: Some(integration),
            keys_only: true,
            floor,
            ..q.clone()
        };
        let found = keys(c, &one, limit).await?;
        if found.is_empty() {
            continue;
        }
        best.extend(found);
        best.sort_by(|a, b| b.cmp(a));
        best.truncate(limit as usize);
    }
    Ok(best)
}

/// See `events::user_events`: the latest verified and unverified events, asked together.
pub(crate) async fn user_events<C: GenericClient>(
    c: &C,
    template_row: i64,
    end_user_id: &str,
    major: i64,
) -> Result<UserEvents> {
    let sql = numbered(&sqlite::user_events_sql()).replace(" INDEXED BY events_by_user", "");
    let stmt = c.prepare_cached(&sql).await?;
    let latest = |verified: bool| {
        let stmt = &stmt;
        async move {
            Ok::<_, StoreError>(
                c.query_opt(stmt, &[&template_row, &end_user_id, &major, &verified])
                    .await?
                    .map(|r| event_from_row(&r)),
            )
        }
    };
    let (latest_verified, latest_unverified) = tokio::try_join!(latest(true), latest(false))?;
    Ok(UserEvents {
        latest_verified,
        latest_unverified,
    })
}

pub(crate) async fn reaccept_requested_at<C: GenericClient>(
    c: &C,
    template_row: i64,
    end_user_id: &str,
) -> Result<Option<Timestamp>> {
    let stmt = c
        .prepare_cached(
            "SELECT requested_at FROM reaccept_requests WHERE template_id = $1 AND end_user_id = $2",
        )
        .await?;
    Ok(c.query_opt(&stmt, &[&template_row, &end_user_id])
        .await?
        .map(|r| Timestamp(r.get(0))))
}

pub(crate) async fn request_reaccept(
    tx: &Transaction<'_>,
    template_row: i64,
    end_user_id: &str,
    at: Timestamp,
    reason: Option<&str>,
) -> Result<()> {
    let stmt = tx
        .prepare_cached(
            "INSERT INTO reaccept_requests (template_id, end_user_id, requested_at, reason) \
             VALUES ($1, $2, $3, $4) ON CONFLICT (template_id, end_user_id) \
             DO UPDATE SET requested_at = excluded.requested_at, reason = excluded.reason",
        )
        .await?;
    tx.execute(&stmt, &[&template_row, &end_user_id, &at.millis(), &reason])
        .await?;
    Ok(())
}
