//! A test's own look into a server's database, on either backend: what a test sets up or checks
//! behind the API's back (an aged history, a changed secret) goes through here, so the same test
//! runs on SQLite (the data directory's file) and on PostgreSQL (the server's database in the
//! harness's cluster). The SQL is the test's, written in what both dialects share, values inline.

use std::time::Duration;

use clicktermd::config::{Backend, Config};

/// The name of the PostgreSQL database `config` points at.
fn database_name(config: &Config) -> String {
    let url = config
        .storage
        .postgres_url
        .as_ref()
        .expect("a PostgreSQL server has a URL");
    let path = url.expose().rsplit('/').next().expect("a database in the URL");
    path.split('?').next().expect("a database name").to_string()
}

fn sqlite(config: &Config) -> rusqlite::Connection {
    let db = rusqlite::Connection::open(config.storage.data_dir.join("clicktermd.db"))
        .expect("open the SQLite database");
    db.busy_timeout(Duration::from_secs(5)).unwrap();
    db
}

/// Runs `sql` (one statement) on the database of the server configured by `config`; returns the
/// rows it changed.
pub async fn execute(config: &Config, sql: &str) -> u64 {
    if config.storage.backend == Backend::Postgres {
        let client = super::postgres::cluster()
            .connect(&database_name(config))
            .await;
        client
            .execute(sql, &[])
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
    } else {
        sqlite(config)
            .execute(sql, [])
            .unwrap_or_else(|e| panic!("{sql}: {e}")) as u64
    }
}

/// The one integer `sql` answers (a count, an id) on the database of the server configured by
/// `config`.
pub async fn integer(config: &Config, sql: &str) -> i64 {
    if config.storage.backend == Backend::Postgres {
        let client = super::postgres::cluster()
            .connect(&database_name(config))
            .await;
        let row = client
            .query_one(sql, &[])
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
        // count(*) is BIGINT; a column of an INTEGER expression is INT4.
        row.try_get::<_, i64>(0)
            .or_else(|_| row.try_get::<_, i32>(0).map(i64::from))
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
    } else {
        sqlite(config)
            .query_row(sql, [], |r| r.get(0))
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
    }
}
