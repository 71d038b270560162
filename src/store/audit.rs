//! The audit log: every admin change, written in the same transaction as the change itself.

use rusqlite::{Connection, params};

use super::Result;
use crate::model::{Actor, Timestamp};

pub struct Entry {
    pub id: i64,
    pub at: Timestamp,
    pub actor: String,
    /// The client address the change came from; none for the command line.
    pub from: Option<String>,
    pub action: String,
    pub target: Option<String>,
    pub detail: Option<String>,
}

/// Writes an entry; returns its id.
pub fn record(
    conn: &Connection,
    at: Timestamp,
    actor: &Actor,
    action: &str,
    target: Option<&str>,
    detail: Option<&str>,
) -> Result<i64> {
    conn.prepare_cached(
        "INSERT INTO audit_log (at, actor, action, target, detail, client) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?
    .execute(params![
        at.millis(),
        actor.name,
        action,
        target,
        detail,
        actor.from.map(|ip| ip.to_string())
    ])?;
    Ok(conn.last_insert_rowid())
}

/// Completes the detail of an entry written when a change done in batches began (bulk redelivery),
/// in the transaction of its last batch.
pub fn set_detail(conn: &Connection, id: i64, detail: &str) -> Result<()> {
    conn.prepare_cached("UPDATE audit_log SET detail = ?2 WHERE id = ?1")?
        .execute(params![id, detail])?;
    Ok(())
}

pub(super) const LIST: &str = "SELECT id, at, actor, action, target, detail, client FROM audit_log \
     WHERE id < ?1 ORDER BY id DESC LIMIT ?2";

/// Newest first; `before` is the id of the last entry of the previous page.
pub fn list(conn: &Connection, limit: u32, before: Option<i64>) -> Result<Vec<Entry>> {
    let mut stmt = conn.prepare_cached(LIST)?;
    let rows = stmt.query_map(params![before.unwrap_or(i64::MAX), limit], |r| {
        Ok(Entry {
            id: r.get(0)?,
            at: Timestamp(r.get(1)?),
            actor: r.get(2)?,
            action: r.get(3)?,
            target: r.get(4)?,
            detail: r.get(5)?,
            from: r.get(6)?,
        })
    })?;
    Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
}
