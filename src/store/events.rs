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

/// The latest presentation of any version of `major` to this end user.
pub fn latest_presentation(
    conn: &Connection,
    template_row: i64,
    end_user_id: &str,
    major: i64,
) -> Result<Option<Timestamp>> {
    Ok(conn
        .prepare_cached(
            "SELECT max(presented_at) FROM presentations WHERE template_id = ?1 AND end_user_id = ?2 AND major = ?3",
        )?
        .query_row(params![template_row, end_user_id, major], |r| r.get::<_, Option<i64>>(0))?
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

/// Marks `integration_id`'s event `event_id` verified if it is not yet, in one statement; its row, or
/// `None` when there is nothing to mark (no such event, another integration's, or already verified —
/// [`verify_facts`] tells which).
pub fn mark_verified(
    conn: &Connection,
    event_id: &str,
    integration_id: i64,
    at: Timestamp,
) -> Result<Option<i64>> {
    Ok(conn
        .prepare_cached(
            "UPDATE events SET verified_at = ?3 \
             WHERE event_id = ?1 AND integration_id = ?2 AND verified_at IS NULL RETURNING id",
        )?
        .query_row(params![event_id, integration_id, at.millis()], |r| r.get(0))
        .optional()?)
}

const EVENT_COLUMNS: &str = "e.event_id, t.template_id, e.major, e.minor, e.effective_at, e.end_user_id, e.action, \
     e.template_placeholders, e.technical_metadata, e.presented_at, e.action_at, e.verified_at, \
     (SELECT app_id FROM integrations WHERE id = e.integration_id)";

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
            "SELECT {EVENT_COLUMNS} FROM events e JOIN templates t ON t.id = e.template_id WHERE e.id = ?1"
        ))?
        .query_row([row], event_from_row)
        .optional()?)
}

/// A verified event of one integration by its public id.
pub fn get_verified(
    conn: &Connection,
    integration_id: Option<i64>,
    event_id: &str,
) -> Result<Option<ClickwrapEvent>> {
    Ok(conn
        .prepare_cached(&format!(
            "SELECT {EVENT_COLUMNS} FROM events e JOIN templates t ON t.id = e.template_id \
             WHERE e.event_id = ?1 AND e.verified_at IS NOT NULL AND (?2 IS NULL OR e.integration_id = ?2)"
        ))?
        .query_row(params![event_id, integration_id], event_from_row)
        .optional()?)
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

/// Verified events newest first by `(action_at, event_id)`, strictly after `cursor` in that order.
pub fn list_verified(
    conn: &Connection,
    f: &Filter,
    cursor: Option<(Timestamp, &str)>,
    limit: u32,
) -> Result<Vec<ClickwrapEvent>> {
    let (c_at, c_id) = match cursor {
        Some((at, id)) => (Some(at.millis()), Some(id)),
        None => (None, None),
    };
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {EVENT_COLUMNS} FROM events e JOIN templates t ON t.id = e.template_id \
         WHERE e.verified_at IS NOT NULL \
           AND (?1 IS NULL OR e.integration_id = ?1) \
           AND (?2 IS NULL OR t.template_id = ?2) \
           AND (?3 IS NULL OR e.end_user_id = ?3) \
           AND (?4 IS NULL OR e.action = ?4) \
           AND (?5 IS NULL OR e.action_at >= ?5) \
           AND (?6 IS NULL OR e.action_at <= ?6) \
           AND (?7 IS NULL OR e.action_at < ?7 OR (e.action_at = ?7 AND e.event_id < ?8)) \
         ORDER BY e.action_at DESC, e.event_id DESC LIMIT ?9"
    ))?;
    let rows = stmt.query_map(
        params![
            f.integration_id,
            f.template_id,
            f.end_user_id,
            f.action.map(Action::as_str),
            f.from.map(Timestamp::millis),
            f.to.map(Timestamp::millis),
            c_at,
            c_id,
            limit
        ],
        event_from_row,
    )?;
    Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
}

/// An end user's latest verified and unverified events on one major version of a template.
pub struct UserEvents {
    pub latest_verified: Option<ClickwrapEvent>,
    pub latest_unverified: Option<ClickwrapEvent>,
}

pub fn user_events(
    conn: &Connection,
    template_row: i64,
    end_user_id: &str,
    major: i64,
) -> Result<UserEvents> {
    let latest = |verified: bool| -> Result<Option<ClickwrapEvent>> {
        Ok(conn
            .prepare_cached(&format!(
                "SELECT {EVENT_COLUMNS} FROM events e JOIN templates t ON t.id = e.template_id \
                 WHERE e.template_id = ?1 AND e.end_user_id = ?2 AND e.major = ?3 AND (e.verified_at IS NOT NULL) = ?4 \
                 ORDER BY e.action_at DESC, e.id DESC LIMIT 1"
            ))?
            .query_row(params![template_row, end_user_id, major, verified], event_from_row)
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
