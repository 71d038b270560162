//! The audit log: every admin change, written in the same transaction as the change itself.

use rusqlite::{Connection, params};

use super::{Backend, Result, Store};
use crate::model::{Actor, Timestamp};

/// An audit entry a store operation writes in the transaction of the change it describes, when the
/// change happened. The service says who and what; an operation that finds its target itself (a
/// token revoked by id is logged by name) fills it in.
#[derive(Debug, Clone)]
pub struct Audit {
    pub actor: Actor,
    pub action: &'static str,
    pub target: Option<String>,
    pub detail: Option<String>,
}

impl Audit {
    pub fn new(actor: &Actor, action: &'static str) -> Audit {
        Audit {
            actor: actor.clone(),
            action,
            target: None,
            detail: None,
        }
    }

    pub fn target(mut self, target: impl Into<String>) -> Audit {
        self.target = Some(target.into());
        self
    }

    pub fn detail(mut self, detail: impl Into<String>) -> Audit {
        self.detail = Some(detail.into());
        self
    }

    /// Writes the entry if the change it describes happened (`done`); returns `done`.
    pub(super) fn write_if(&self, conn: &Connection, done: bool, at: Timestamp) -> Result<bool> {
        if done {
            self.write(conn, at)?;
        }
        Ok(done)
    }

    /// Writes the entry; returns its id.
    pub(super) fn write(&self, conn: &Connection, at: Timestamp) -> Result<i64> {
        record(
            conn,
            at,
            &self.actor,
            self.action,
            self.target.as_deref(),
            self.detail.as_deref(),
        )
    }
}

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
pub(super) fn record(
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
pub(super) fn set_detail(conn: &Connection, id: i64, detail: &str) -> Result<()> {
    conn.prepare_cached("UPDATE audit_log SET detail = ?2 WHERE id = ?1")?
        .execute(params![id, detail])?;
    Ok(())
}

pub(super) const LIST: &str = "SELECT id, at, actor, action, target, detail, client FROM audit_log \
     WHERE id < ?1 ORDER BY id DESC LIMIT ?2";

/// Newest first; `before` is the id of the last entry of the previous page.
fn list(conn: &Connection, limit: u32, before: Option<i64>) -> Result<Vec<Entry>> {
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

impl Store {
    /// The audit log newest first; `before` is the id of the last entry of the previous page.
    pub async fn audit_log(&self, limit: u32, before: Option<i64>) -> Result<Vec<Entry>> {
        match self.backend() {
            Backend::Sqlite(s) => s.read(move |c| list(c, limit, before)).await,
            Backend::Postgres(p) => p.audit_log(limit, before).await,
        }
    }
}
