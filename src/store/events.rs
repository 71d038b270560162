//! Presentations, clickwrap events and re-acceptance requests. Events are inserted unverified, verified
//! once, and then never change (the schema's triggers refuse updates and deletes).

use rusqlite::{Connection, OptionalExtension, params};

use super::Result;
use crate::model::{Action, ClickwrapEvent, Timestamp};

pub struct NewEvent<'a> {
    pub event_id: &'a str,
    pub integration_id: i64,
    pub template_row: i64,
    pub major: i64,
    pub minor: i64,
    pub effective_at: Timestamp,
    pub end_user_id: &'a str,
    pub action: Action,
    pub template_placeholders: Option<&'a str>,
    pub technical_metadata: &'a str,
    pub language: &'a str,
    pub presented_at: Option<Timestamp>,
    pub action_at: Timestamp,
}

pub fn insert_presentation(
    conn: &Connection,
    integration_id: i64,
    template_row: i64,
    (major, minor): (i64, i64),
    end_user_id: &str,
    at: Timestamp,
) -> Result<()> {
    conn.prepare_cached(
        "INSERT INTO presentations (integration_id, template_id, major, minor, end_user_id, presented_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?
    .execute(params![integration_id, template_row, major, minor, end_user_id, at.millis()])?;
    Ok(())
}

pub(crate) const LATEST_PRESENTATION: &str = "SELECT presented_at FROM presentations \
     WHERE template_id = ?1 AND end_user_id = ?2 AND major = ?3 ORDER BY presented_at DESC LIMIT 1";

/// The latest presentation of any version of `major` to this end user: the user's presentations of the
/// template newest first, stopped at the first of `major` (usually the first one: the effective major
/// is the latest), instead of all of them for a `max`.
pub fn latest_presentation(
    conn: &Connection,
    template_row: i64,
    end_user_id: &str,
    major: i64,
) -> Result<Option<Timestamp>> {
    Ok(conn
        .prepare_cached(LATEST_PRESENTATION)?
        .query_row(params![template_row, end_user_id, major], |r| {
            r.get::<_, i64>(0)
        })
        .optional()?
        .map(Timestamp))
}

/// The latest presentation of any version of a template to an end user.
pub struct LastPresentation {
    pub at: Timestamp,
    pub version: (i64, i64),
}

pub fn last_presentation(
    conn: &Connection,
    template_row: i64,
    end_user_id: &str,
) -> Result<Option<LastPresentation>> {
    Ok(conn
        .prepare_cached(
            "SELECT presented_at, major, minor FROM presentations \
             WHERE template_id = ?1 AND end_user_id = ?2 ORDER BY presented_at DESC LIMIT 1",
        )?
        .query_row(params![template_row, end_user_id], |r| {
            Ok(LastPresentation {
                at: Timestamp(r.get(0)?),
                version: (r.get(1)?, r.get(2)?),
            })
        })
        .optional()?)
}

pub fn insert_event(conn: &Connection, e: &NewEvent<'_>) -> Result<i64> {
    conn.prepare_cached(
        "INSERT INTO events (event_id, integration_id, template_id, major, minor, effective_at, end_user_id, action, \
         template_placeholders, technical_metadata, language, presented_at, action_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
    )?
    .execute(params![
        e.event_id,
        e.integration_id,
        e.template_row,
        e.major,
        e.minor,
        e.effective_at.millis(),
        e.end_user_id,
        e.action.as_str(),
        e.template_placeholders,
        e.technical_metadata,
        e.language,
        e.presented_at.map(Timestamp::millis),
        e.action_at.millis()
    ])?;
    Ok(conn.last_insert_rowid())
}

/// What verify needs to decide: the event's row, owner and whether it was verified.
pub struct VerifyFacts {
    pub row: i64,
    pub integration_id: i64,
    pub verified: bool,
}

pub fn verify_facts(conn: &Connection, event_id: &str) -> Result<Option<VerifyFacts>> {
    Ok(conn
        .prepare_cached(
            "SELECT id, integration_id, verified_at IS NOT NULL FROM events WHERE event_id = ?1",
        )?
        .query_row([event_id], |r| {
            Ok(VerifyFacts {
                row: r.get(0)?,
                integration_id: r.get(1)?,
                verified: r.get(2)?,
            })
        })
        .optional()?)
}

/// A just-verified event as the update that verified it returned it: the event (for the webhook's
/// payload) and the facts of its evidence that the event API does not show (for its ledger link).
pub struct Marked {
    pub row: i64,
    pub event: ClickwrapEvent,
    pub template_row: i64,
    pub language: String,
    /// The ledger position the update gave it.
    pub ledger_position: i64,
    /// The template's name now, at verification.
    pub template_name: String,
}

/// The columns of [`ClickwrapEvent`] (as [`event_from_row`] reads them), of the events table named
/// `$t` in the statement. The template's and the integration's public ids come from correlated lookups
/// by primary key rather than joins, so the planner never considers starting from `templates` and
/// sorting what it finds: `events` is always the table walked.
macro_rules! event_columns {
    ($t:literal) => {
        concat!(
            $t,
            ".event_id, (SELECT template_id FROM templates WHERE id = ",
            $t,
            ".template_id), ",
            $t,
            ".major, ",
            $t,
            ".minor, ",
            $t,
            ".effective_at, ",
            $t,
            ".end_user_id, ",
            $t,
            ".action, ",
            $t,
            ".template_placeholders, ",
            $t,
            ".technical_metadata, ",
            $t,
            ".presented_at, ",
            $t,
            ".action_at, ",
            $t,
            ".verified_at, ",
            "(SELECT app_id FROM integrations WHERE id = ",
            $t,
            ".integration_id)"
        )
    };
}

/// The columns of [`ClickwrapEvent`], read from `events e`.
pub(crate) const EVENT_COLUMNS: &str = event_columns!("e");

/// Verifies one unverified event of one integration and gives it the ledger's next position,
/// returning what the verify's webhook and link are made of (`RETURNING` names the table itself:
/// SQLite allows no alias there).
pub(crate) const MARK_VERIFIED_SQL: &str = concat!(
    "UPDATE events SET verified_at = ?3, \
     ledger_position = (SELECT coalesce(max(position), 0) + 1 FROM ledger) \
     WHERE event_id = ?1 AND integration_id = ?2 AND verified_at IS NULL RETURNING ",
    event_columns!("events"),
    ", events.id, events.template_id, events.language, events.ledger_position, \
     (SELECT name FROM templates WHERE id = events.template_id)"
);

/// Marks `integration_id`'s event `event_id` verified if it is not yet, in one statement, and returns
/// it; `None` when there is nothing to mark (no such event, another integration's, or already verified
/// — [`verify_facts`] tells which). The same statement gives it the next position of the ledger, whose
/// link `ledger::append` then writes in the same transaction.
pub fn mark_verified(
    conn: &Connection,
    event_id: &str,
    integration_id: i64,
    at: Timestamp,
) -> Result<Option<Marked>> {
    Ok(conn
        .prepare_cached(MARK_VERIFIED_SQL)?
        .query_row(params![event_id, integration_id, at.millis()], |r| {
            Ok(Marked {
                event: event_from_row(r)?,
                row: r.get(13)?,
                template_row: r.get(14)?,
                language: r.get(15)?,
                ledger_position: r.get(16)?,
                template_name: r.get(17)?,
            })
        })
        .optional()?)
}

fn event_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<ClickwrapEvent> {
    Ok(ClickwrapEvent {
        event_id: r.get(0)?,
        template_id: r.get(1)?,
        major: r.get(2)?,
        minor: r.get(3)?,
        effective_at: Timestamp(r.get(4)?),
        end_user_id: r.get(5)?,
        action: Action::parse(&r.get::<_, String>(6)?).unwrap_or(Action::Declined),
        template_placeholders: r.get(7)?,
        technical_metadata: r.get(8)?,
        presented_at: r.get::<_, Option<i64>>(9)?.map(Timestamp),
        action_at: Timestamp(r.get(10)?),
        verified_at: r.get::<_, Option<i64>>(11)?.map(Timestamp),
        app_id: r.get(12)?,
    })
}

pub fn get(conn: &Connection, row: i64) -> Result<Option<ClickwrapEvent>> {
    Ok(conn
        .prepare_cached(&format!(
            "SELECT {EVENT_COLUMNS} FROM events e WHERE e.id = ?1"
        ))?
        .query_row([row], event_from_row)
        .optional()?)
}

/// A verified event by its public id (`?1`), of the integration `?2` or, for the admin API, of any: two
/// statements, so that neither has an `?2 IS NULL OR` in it.
pub(crate) fn get_verified_sql(of_integration: bool) -> String {
    if of_integration {
        format!(
            "SELECT {EVENT_COLUMNS} FROM events e \
             WHERE e.event_id = ?1 AND e.verified_at IS NOT NULL AND e.integration_id = ?2"
        )
    } else {
        format!(
            "SELECT {EVENT_COLUMNS} FROM events e WHERE e.event_id = ?1 AND e.verified_at IS NOT NULL"
        )
    }
}

/// A verified event by its public id: of one integration, or (admin) of any.
pub fn get_verified(
    conn: &Connection,
    integration_id: Option<i64>,
    event_id: &str,
) -> Result<Option<ClickwrapEvent>> {
    let found = match integration_id {
        Some(integration) => conn
            .prepare_cached(&get_verified_sql(true))?
            .query_row(params![event_id, integration], event_from_row),
        None => conn
            .prepare_cached(&get_verified_sql(false))?
            .query_row(params![event_id], event_from_row),
    };
    Ok(found.optional()?)
}

/// Filters of the event list; every `None` is "any".
#[derive(Default, Clone)]
pub struct Filter {
    pub integration_id: Option<i64>,
    pub template_id: Option<String>,
    pub end_user_id: Option<String>,
    pub action: Option<Action>,
    pub from: Option<Timestamp>,
    pub to: Option<Timestamp>,
}

/// Verified events newest first by `(action_at, event_id)`, strictly after `cursor` in that order; at
/// most `limit`. Each page is one walk of the index that matches the filters given, stopped once the
/// page is full (see [`list_statement`]).
pub fn list_verified(
    conn: &Connection,
    f: &Filter,
    cursor: Option<(Timestamp, &str)>,
    limit: u32,
) -> Result<Vec<ClickwrapEvent>> {
    let template_row = match &f.template_id {
        None => None,
        Some(public) => match super::templates::row_id(conn, public)? {
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
        cursor: cursor.map(|(at, id)| (at, id.to_string())),
        ..ListQuery::default()
    };
    list_query(conn, &query, limit)
}

/// A page of the list `q` asks for: one index walk when an integration or an end user is given,
/// else the integrations' walks merged ([`list_across`]).
pub(crate) fn list_query(
    conn: &Connection,
    q: &ListQuery,
    limit: u32,
) -> Result<Vec<ClickwrapEvent>> {
    if q.integration.is_none() && q.end_user.is_none() {
        return list_across(conn, q, limit);
    }
    let statement = list_statement(q);
    let mut stmt = conn.prepare_cached(&statement.sql)?;
    // No `LIMIT ?` (see `deliveries::expired_leases`): the rows stream in the index's order, and taking
    // `limit` of them ends the walk there.
    let rows = stmt
        .query_map(statement.bound().as_slice(), event_from_row)?
        .take(limit as usize)
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(rows)
}

/// The admin list across integrations: each integration's page of keys (a walk of its own index),
/// merged newest first, then the page's rows (see [`keys_across`]).
fn list_across(conn: &Connection, q: &ListQuery, limit: u32) -> Result<Vec<ClickwrapEvent>> {
    let mut rows = Vec::with_capacity(limit as usize);
    for (_, _, row) in keys_across(conn, q, limit)? {
        rows.extend(get(conn, row)?);
    }
    Ok(rows)
}

/// The keys (`action_at`, `event_id`, row id) of a page of the list `q` asks for, newest first: the
/// same walks as [`list_query`] (the export reads its events page by page this way).
pub(crate) fn list_keys(
    conn: &Connection,
    q: &ListQuery,
    limit: u32,
) -> Result<Vec<(Timestamp, String, i64)>> {
    if q.integration.is_none() && q.end_user.is_none() {
        return keys_across(conn, q, limit);
    }
    let one = ListQuery {
        keys_only: true,
        ..q.clone()
    };
    let statement = list_statement(&one);
    let mut stmt = conn.prepare_cached(&statement.sql)?;
    let keys = stmt
        .query_map(statement.bound().as_slice(), |r| {
            Ok((Timestamp(r.get(0)?), r.get(1)?, r.get(2)?))
        })?
        .take(limit as usize)
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(keys)
}

/// Each integration's page of keys, merged newest first. Once a page's worth of keys is in hand,
/// each further walk starts above the oldest of them (`floor`) and mostly returns nothing, so a page
/// costs about one index probe per integration — never a walk over the events of all of them. (An
/// index over every integration's verified events would serve it too, at the price of an entry at
/// every verify.)
fn keys_across(
    conn: &Connection,
    q: &ListQuery,
    limit: u32,
) -> Result<Vec<(Timestamp, String, i64)>> {
    let limit = limit as usize;
    let integrations: Vec<i64> = conn
        .prepare_cached("SELECT id FROM integrations ORDER BY id")?
        .query_map([], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    // The best keys so far, newest first: (action_at, event_id, row).
    let mut best: Vec<(i64, String, i64)> = Vec::new();
    for integration in integrations {
        let floor = (best.len() >= limit)
            .then(|| best.last().map(|(at, id, _)| (Timestamp(*at), id.clone())))
            .flatten();
        let one = ListQuery {
            integration: Some(integration),
            keys_only: true,
            floor,
            ..q.clone()
        };
        let statement = list_statement(&one);
        let mut stmt = conn.prepare_cached(&statement.sql)?;
        let keys = stmt
            .query_map(statement.bound().as_slice(), |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })?
            .take(limit)
            .collect::<rusqlite::Result<Vec<_>>>()?;
        if keys.is_empty() {
            continue;
        }
        best.extend(keys);
        best.sort_by(|a, b| b.cmp(a));
        best.truncate(limit);
    }
    Ok(best
        .into_iter()
        .map(|(at, id, row)| (Timestamp(at), id, row))
        .collect())
}

/// The event list's filters as its statement needs them: the template by row id.
#[derive(Debug, Default, Clone)]
pub(crate) struct ListQuery {
    pub integration: Option<i64>,
    pub template_row: Option<i64>,
    pub end_user: Option<String>,
    pub action: Option<Action>,
    pub from: Option<Timestamp>,
    pub to: Option<Timestamp>,
    pub cursor: Option<(Timestamp, String)>,
    /// Only the keys (`action_at`, `event_id`, row id), for [`list_across`].
    pub keys_only: bool,
    /// Only events newer than this (for [`list_across`], once it holds a page).
    pub floor: Option<(Timestamp, String)>,
}

/// A statement built from fixed fragments, with the values it takes by name and the index it walks.
#[derive(Debug)]
pub(crate) struct Statement {
    pub sql: String,
    pub params: Vec<(&'static str, rusqlite::types::Value)>,
    /// Read by the query-plan tests, which check that this is the index the plan walks.
    #[cfg_attr(not(test), allow(dead_code))]
    pub index: &'static str,
}

impl Statement {
    /// The parameters as rusqlite binds them.
    pub fn bound(&self) -> Vec<(&str, &dyn rusqlite::ToSql)> {
        self.params
            .iter()
            .map(|(name, value)| (*name, value as &dyn rusqlite::ToSql))
            .collect()
    }
}

/// The one statement a page of the event list runs, for one integration or one end user (across
/// integrations, [`list_across`] merges the integrations' statements). It names only the filters
/// present (an `(?1 IS NULL OR col = ?1)` for an absent one keeps SQLite from using any index in
/// order, and every page then walked and sorted every verified event), each as a fixed fragment of
/// SQL with a named parameter; no value is ever written into the SQL. Every shape is a distinct
/// string, so the connection's statement cache keeps one prepared statement per shape.
///
/// The index is chosen by the filters present and named with `INDEXED BY`: the end user's when one is
/// given (the integration and the template, if also given, are checked on each of the end user's few
/// events: an end user is one person across the workspace, as for the consent status), else the
/// integration's with or without the template. Named, because with an end user and a template or an
/// integration several indexes fit and SQLite, without statistics, cannot know that an end user has
/// few events where a template or an integration may have millions; and so that a missing index
/// fails loudly instead of turning into a scan. The page's upper bound is the cursor as a row value
/// when it is within `to` (it then implies `to`), else `to`; the lower bound is `from` (and `floor`).
/// In an integration's index the action comes before the time: without an action filter its two
/// parts are walked side by side and merged (`UNION ALL … ORDER BY`, which SQLite runs as a merge of
/// two ordered walks, never a sort). The end user's index is in time order whatever the action.
pub(crate) fn list_statement(q: &ListQuery) -> Statement {
    use rusqlite::types::Value;
    let mut params: Vec<(&'static str, Value)> = Vec::new();
    let mut terms: Vec<&'static str> = vec!["e.verified_at IS NOT NULL"];
    let by_user = q.end_user.is_some();
    let index = match (q.integration, &q.end_user, q.template_row) {
        (_, Some(_), _) => "events_by_user",
        (Some(_), None, Some(_)) => "events_verified_by_integration_template",
        (Some(_), None, None) => "events_verified_by_integration",
        (None, None, _) => panic!("a list across integrations is merged by list_across"),
    };
    if let Some(integration) = q.integration {
        terms.push("e.integration_id = :integration");
        params.push((":integration", Value::Integer(integration)));
    }
    if let Some(user) = &q.end_user {
        terms.push("e.end_user_id = :end_user");
        params.push((":end_user", Value::Text(user.clone())));
    }
    if let Some(template) = q.template_row {
        terms.push("e.template_id = :template");
        params.push((":template", Value::Integer(template)));
    }
    if let Some(from) = q.from {
        terms.push("e.action_at >= :from");
        params.push((":from", Value::Integer(from.millis())));
    }
    if let Some((at, id)) = &q.floor {
        terms.push("(e.action_at, e.event_id) > (:floor_at, :floor_id)");
        params.push((":floor_at", Value::Integer(at.millis())));
        params.push((":floor_id", Value::Text(id.clone())));
    }
    let cursor = q
        .cursor
        .as_ref()
        .filter(|(at, _)| q.to.is_none_or(|to| *at <= to));
    if let Some((at, id)) = cursor {
        terms.push("(e.action_at, e.event_id) < (:cursor_at, :cursor_id)");
        params.push((":cursor_at", Value::Integer(at.millis())));
        params.push((":cursor_id", Value::Text(id.clone())));
    } else if let Some(to) = q.to {
        terms.push("e.action_at <= :to");
        params.push((":to", Value::Integer(to.millis())));
    }
    let columns = if q.keys_only {
        "e.action_at, e.event_id, e.id".to_string()
    } else {
        EVENT_COLUMNS.to_string()
    };
    let select = |action: Option<&'static str>| -> String {
        let action = action.map_or(String::new(), |a| format!(" AND e.action = {a}"));
        format!(
            "SELECT {columns} FROM events e INDEXED BY {index} WHERE {}{action}",
            terms.join(" AND ")
        )
    };
    let order = "ORDER BY e.action_at DESC, e.event_id DESC";
    let sql = match q.action {
        Some(action) => {
            params.push((":action", Value::Text(action.as_str().to_string())));
            format!("{} {order}", select(Some(":action")))
        }
        None if by_user => format!("{} {order}", select(None)),
        None => {
            params.push((":accepted", Value::Text(Action::Accepted.as_str().into())));
            params.push((":declined", Value::Text(Action::Declined.as_str().into())));
            format!(
                "{} UNION ALL {} {order}",
                select(Some(":accepted")),
                select(Some(":declined"))
            )
        }
    };
    Statement { sql, params, index }
}

/// An end user's latest verified and unverified events on one major version of a template.
pub struct UserEvents {
    pub latest_verified: Option<ClickwrapEvent>,
    pub latest_unverified: Option<ClickwrapEvent>,
}

/// The latest of one end user's events on one template's major, verified (`?4` true) or not: the
/// user's events newest first (`events_by_user`), stopped at the first that matches. (Two actions of
/// one user in one millisecond are told apart by their event id, not by which came first.)
pub(crate) fn user_events_sql() -> String {
    format!(
        "SELECT {EVENT_COLUMNS} FROM events e INDEXED BY events_by_user \
         WHERE e.end_user_id = ?2 AND e.template_id = ?1 AND e.major = ?3 AND (e.verified_at IS NOT NULL) = ?4 \
         ORDER BY e.action_at DESC, e.event_id DESC LIMIT 1"
    )
}

pub fn user_events(
    conn: &Connection,
    template_row: i64,
    end_user_id: &str,
    major: i64,
) -> Result<UserEvents> {
    let latest = |verified: bool| -> Result<Option<ClickwrapEvent>> {
        Ok(conn
            .prepare_cached(&user_events_sql())?
            .query_row(
                params![template_row, end_user_id, major, verified],
                event_from_row,
            )
            .optional()?)
    };
    Ok(UserEvents {
        latest_verified: latest(true)?,
        latest_unverified: latest(false)?,
    })
}

pub fn reaccept_requested_at(
    conn: &Connection,
    template_row: i64,
    end_user_id: &str,
) -> Result<Option<Timestamp>> {
    Ok(conn
        .prepare_cached("SELECT requested_at FROM reaccept_requests WHERE template_id = ?1 AND end_user_id = ?2")?
        .query_row(params![template_row, end_user_id], |r| r.get::<_, i64>(0))
        .optional()?
        .map(Timestamp))
}

pub fn request_reaccept(
    conn: &Connection,
    template_row: i64,
    end_user_id: &str,
    at: Timestamp,
    reason: Option<&str>,
) -> Result<()> {
    conn.prepare_cached(
        "INSERT INTO reaccept_requests (template_id, end_user_id, requested_at, reason) VALUES (?1, ?2, ?3, ?4) \
         ON CONFLICT (template_id, end_user_id) DO UPDATE SET requested_at = excluded.requested_at, reason = excluded.reason",
    )?
    .execute(params![template_row, end_user_id, at.millis(), reason])?;
    Ok(())
}
