//! PostgreSQL: the audit log (see `store::audit`), written in the transaction of the change.

use deadpool_postgres::Transaction;

use super::Postgres;
use crate::model::Timestamp;
use crate::store::Result;
use crate::store::audit::{Audit, Entry};

/// Writes `entry` in `tx`; returns its id.
pub(crate) async fn write(tx: &Transaction<'_>, entry: &Audit, at: Timestamp) -> Result<i64> {
    let stmt = tx
        .prepare_cached(
            "INSERT INTO audit_log (at, actor, action, target, detail, client) \
             VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
        )
        .await?;
    let client = entry.actor.from.map(|ip| ip.to_string());
    let row = tx
        .query_one(
            &stmt,
            &[
                &at.millis(),
                &entry.actor.name,
                &entry.action,
                &entry.target,
                &entry.detail,
                &client,
            ],
        )
        .await?;
    Ok(row.get(0))
}

/// Writes `entry` if the change it describes happened (`done`); returns `done`.
pub(crate) async fn write_if(
    tx: &Transaction<'_>,
    entry: &Audit,
    done: bool,
    at: Timestamp,
) -> Result<bool> {
    if done {
        write(tx, entry, at).await?;
    }
    Ok(done)
}

/// Completes the detail of an entry written when a change done in batches began.
pub(crate) async fn set_detail(tx: &Transaction<'_>, id: i64, detail: &str) -> Result<()> {
    tx.execute(
        "UPDATE audit_log SET detail = $2 WHERE id = $1",
        &[&id, &detail],
    )
    .await?;
    Ok(())
}

impl Postgres {
    /// See `Store::audit_log`.
    pub(crate) async fn audit_log(&self, limit: u32, before: Option<i64>) -> Result<Vec<Entry>> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(
                "SELECT id, at, actor, action, target, detail, client FROM audit_log \
                 WHERE id < $1 ORDER BY id DESC LIMIT $2",
            )
            .await?;
        let rows = client
            .query(&stmt, &[&before.unwrap_or(i64::MAX), &i64::from(limit)])
            .await?;
        Ok(rows
            .iter()
            .map(|r| Entry {
                id: r.get(0),
                at: Timestamp(r.get(1)),
                actor: r.get(2),
                action: r.get(3),
                target: r.get(4),
                detail: r.get(5),
                from: r.get(6),
            })
            .collect())
    }
}
