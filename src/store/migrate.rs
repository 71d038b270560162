//! Schema versioning. `schema.sql` is the whole current schema and ends by setting `PRAGMA user_version`;
//! a new database gets it in one transaction. An older database is brought forward by the steps in
//! `MIGRATIONS`, each in its own transaction with the version bump, so a crash leaves either the old or
//! the new version, never half of one. A database from a newer clicktermd is refused, untouched.

use std::path::Path;

use rusqlite::Connection;

use super::{Result, StoreError};

/// The schema, embedded from the repository root.
pub const SCHEMA_SQL: &str = include_str!("../../schema.sql");

/// The version `schema.sql` sets. A test keeps the two in agreement.
pub const SCHEMA_VERSION: i64 = 1;

/// Forward migrations: `MIGRATIONS[i]` takes a database from version `i + 1` to `i + 2`. Once a version
/// has shipped its schema is history; changes to `schema.sql` after that come with a step here.
const MIGRATIONS: &[&str] = &[];

pub(super) fn migrate(conn: &mut Connection, path: &Path) -> Result<()> {
    let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    if version > SCHEMA_VERSION {
        return Err(StoreError::TooNew {
            path: path.to_path_buf(),
            found: version,
            supported: SCHEMA_VERSION,
        });
    }
    if version == 0 {
        let tables: i64 = conn.query_row(
            "SELECT count(*) FROM sqlite_schema WHERE type = 'table'",
            [],
            |r| r.get(0),
        )?;
        if tables > 0 {
            return Err(StoreError::Io(format!(
                "{} is not a clicktermd database (it has tables but no schema version)",
                path.display()
            )));
        }
        let tx = conn.transaction()?;
        tx.execute_batch(SCHEMA_SQL)?;
        tx.commit()?;
        tracing::info!(version = SCHEMA_VERSION, "created a new database");
        return Ok(());
    }
    for (from, step) in MIGRATIONS.iter().enumerate().skip((version - 1) as usize) {
        let to = from as i64 + 2;
        let tx = conn.transaction()?;
        tx.execute_batch(step)?;
        tx.pragma_update(None, "user_version", to)?;
        tx.commit()?;
        tracing::info!(from = from + 1, to, "migrated the database schema");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_sql_sets_the_version_the_code_expects() {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(SCHEMA_SQL).unwrap();
        let v: i64 = conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        assert_eq!(v, SCHEMA_VERSION);
        assert_eq!(
            MIGRATIONS.len() as i64,
            SCHEMA_VERSION - 1,
            "one migration step per version after 1"
        );
    }
}
