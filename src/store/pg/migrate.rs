//! The PostgreSQL schema's version. `schema-postgres.sql` is the whole current schema and ends by
//! recording its version in `schema_version`; an empty database gets it in one transaction, taken
//! under a transaction-scoped advisory lock, so that of ten nodes starting at once one applies it and
//! the others, waiting on the lock, find it applied. A database from a newer clicktermd is refused,
//! untouched, as a SQLite one is. The versions count with SQLite's (`schema.sql`'s `user_version`):
//! the PostgreSQL schema begins at 7, and a later change to one schema comes with a step for both.

use super::super::{Result, SCHEMA_VERSION, StoreError};

/// The schema, embedded from the repository root.
pub const SCHEMA_POSTGRES: &str = include_str!("../../../schema-postgres.sql");

/// The advisory lock key the migration holds: "clicktrm" in ASCII, a number nothing else uses.
pub(crate) const MIGRATION_LOCK: i64 = 0x636c_6963_6b74_726d;

/// Forward migrations: `migrations()[i]` takes a database from version `7 + i` to `8 + i`. A step
/// that brings a definition up to date takes it from `schema-postgres.sql` itself, so a migrated
/// database and a new one are defined by the same text (a test compares their catalogs).
fn migrations() -> Vec<String> {
    vec![
        // 7 → 8: the counts trigger adds up an update's new rows and takes away its old ones (it
        // joined the two transition tables, which PostgreSQL did row by row: n² for a batch of n),
        // and a row trigger keeps a delivery's integration fixed (that join checked it before).
        format!(
            "{};\n{};",
            definition("CREATE FUNCTION deliveries_count()", "END $$").replacen(
                "CREATE FUNCTION",
                "CREATE OR REPLACE FUNCTION",
                1
            ),
            definition(
                "CREATE TRIGGER deliveries_integration_fixed",
                "integration')"
            ),
        ),
        // 8 → 9: a writer that finds its integration's counts row taken leaves its change beside
        // it (`delivery_count_changes`) instead of waiting for it; readers read `delivery_totals`.
        format!(
            "{};\n{};\n{};\n{};\n{};",
            definition("CREATE TABLE delivery_count_changes", ");"),
            definition("CREATE INDEX delivery_count_changes_by_integration", ";"),
            definition("CREATE VIEW delivery_totals", "ON true"),
            definition("CREATE FUNCTION delivery_counts_add", "END $$"),
            definition("CREATE FUNCTION deliveries_count()", "END $$").replacen(
                "CREATE FUNCTION",
                "CREATE OR REPLACE FUNCTION",
                1
            ),
        ),
    ]
}

/// The statement of `schema-postgres.sql` that begins with `start`, up to the first `end` after it.
fn definition(start: &str, end: &str) -> String {
    let from = SCHEMA_POSTGRES
        .find(start)
        .unwrap_or_else(|| panic!("schema-postgres.sql defines {start}"));
    let to = SCHEMA_POSTGRES[from..]
        .find(end)
        .unwrap_or_else(|| panic!("{start} ends with {end}"));
    SCHEMA_POSTGRES[from..from + to + end.len()].to_string()
}

/// The PostgreSQL schema's first version; `schema-postgres.sql` records the current one, equal to
/// SQLite's (a test keeps them so).
const FIRST_VERSION: i64 = 7;

/// How many tables the connection's schema holds (an empty database: none).
pub(crate) async fn tables(tx: &tokio_postgres::Transaction<'_>) -> Result<i64> {
    Ok(tx
        .query_one(
            "SELECT count(*) FROM pg_catalog.pg_tables WHERE schemaname = current_schema()",
            &[],
        )
        .await?
        .get(0))
}

pub(super) async fn migrate(client: &mut deadpool_postgres::Object, shown: &str) -> Result<()> {
    let tx = client.transaction().await?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await?;
    let ours: bool = tx
        .query_one("SELECT to_regclass('schema_version') IS NOT NULL", &[])
        .await?
        .get(0);
    if !ours {
        let tables = tables(&tx).await?;
        if tables > 0 {
            return Err(StoreError::Io(format!(
                "the PostgreSQL database {shown} already holds {tables} tables and is not a \
                 clicktermd database; give clicktermd an empty database of its own"
            )));
        }
        tx.batch_execute(SCHEMA_POSTGRES).await?;
        tracing::info!(database = %shown, version = SCHEMA_VERSION, "created the clicktermd schema");
    } else {
        let found: i64 = tx
            .query_one("SELECT version FROM schema_version", &[])
            .await?
            .get(0);
        if found > SCHEMA_VERSION {
            return Err(StoreError::TooNewPostgres {
                url: shown.to_string(),
                found,
                supported: SCHEMA_VERSION,
            });
        }
        for (i, step) in migrations().iter().enumerate() {
            let to = FIRST_VERSION + i as i64 + 1;
            if found < to {
                tx.batch_execute(step).await?;
                tx.execute("UPDATE schema_version SET version = $1", &[&to])
                    .await?;
                tracing::info!(database = %shown, from = to - 1, to, "migrated the schema");
            }
        }
    }
    tx.commit().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_postgres_schema_records_the_version_the_code_expects() {
        let recorded = format!("INSERT INTO schema_version (version) VALUES ({SCHEMA_VERSION});");
        assert!(SCHEMA_POSTGRES.trim_end().ends_with(&recorded));
        assert_eq!(FIRST_VERSION + migrations().len() as i64, SCHEMA_VERSION);
    }
}
