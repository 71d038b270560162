//! The server's database opened beside it, whichever store it runs on: for tests that must show what
//! the API cannot (that nothing was written, a row's frozen bytes) or must break the database on
//! purpose (a failing trigger). Statements are written with `$1…` parameters, which both engines
//! read (SQLite numbers `$1`, `$2` in order of appearance), and in SQL both understand.

use std::path::Path;
use std::time::Duration;

use clicktermd::config::Config;

/// One cell read back: integers (and PostgreSQL's booleans, as 0/1), texts, bytes, or NULL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cell {
    Null,
    Int(i64),
    Text(String),
    Bytes(Vec<u8>),
}

impl Cell {
    pub fn int(&self) -> Option<i64> {
        match self {
            Cell::Int(i) => Some(*i),
            Cell::Null => None,
            other => panic!("not an integer: {other:?}"),
        }
    }

    pub fn text(&self) -> String {
        match self {
            Cell::Text(t) => t.clone(),
            other => panic!("not a text: {other:?}"),
        }
    }

    pub fn bytes(&self) -> Vec<u8> {
        match self {
            Cell::Bytes(b) => b.clone(),
            other => panic!("not bytes: {other:?}"),
        }
    }
}

/// A connection to a server's database.
pub enum Db {
    Sqlite(rusqlite::Connection),
    Postgres(tokio_postgres::Client),
}

impl Db {
    /// The database of the server with `config` and `data_dir` (its SQLite file, opened beside the
    /// running server in WAL mode; or its PostgreSQL database).
    pub async fn open(config: &Config, data_dir: &Path) -> Db {
        match &config.storage.postgres_url {
            Some(url) if config.storage.backend == clicktermd::config::Backend::Postgres => {
                let (client, connection) =
                    tokio_postgres::connect(url.expose(), tokio_postgres::NoTls)
                        .await
                        .expect("connect to the server's PostgreSQL database");
                tokio::spawn(async move {
                    let _ = connection.await;
                });
                Db::Postgres(client)
            }
            _ => {
                let db = rusqlite::Connection::open(data_dir.join("clicktermd.db")).unwrap();
                db.busy_timeout(Duration::from_secs(10)).unwrap();
                Db::Sqlite(db)
            }
        }
    }

    /// Runs `sql` (one or more statements, no parameters).
    pub async fn batch(&self, sql: &str) {
        if let Err(e) = self.try_batch(sql).await {
            panic!("{sql}: {e}");
        }
    }

    /// [`Db::batch`], answering the engine's refusal (with its message) instead of failing.
    pub async fn try_batch(&self, sql: &str) -> Result<(), String> {
        match self {
            Db::Sqlite(c) => c.execute_batch(sql).map_err(|e| e.to_string()),
            Db::Postgres(c) => c
                .batch_execute(sql)
                .await
                .map_err(|e| match e.as_db_error() {
                    Some(db) => db.message().to_string(),
                    None => e.to_string(),
                }),
        }
    }

    /// The rows `sql` answers for text parameters `params`.
    pub async fn rows(&self, sql: &str, params: &[&str]) -> Vec<Vec<Cell>> {
        match self {
            Db::Sqlite(c) => {
                let mut stmt = c.prepare(sql).unwrap();
                let n = stmt.column_count();
                let rows = stmt
                    .query_map(rusqlite::params_from_iter(params), |r| {
                        (0..n)
                            .map(|i| {
                                Ok(match r.get_ref(i)? {
                                    rusqlite::types::ValueRef::Null => Cell::Null,
                                    rusqlite::types::ValueRef::Integer(i) => Cell::Int(i),
                                    rusqlite::types::ValueRef::Text(t) => {
                                        Cell::Text(String::from_utf8_lossy(t).into_owned())
                                    }
                                    rusqlite::types::ValueRef::Blob(b) => Cell::Bytes(b.to_vec()),
                                    rusqlite::types::ValueRef::Real(f) => {
                                        panic!("a real ({f}) where the schema has none")
                                    }
                                })
                            })
                            .collect()
                    })
                    .unwrap();
                rows.collect::<rusqlite::Result<_>>().unwrap()
            }
            Db::Postgres(c) => {
                use tokio_postgres::types::{ToSql, Type};
                let params: Vec<&(dyn ToSql + Sync)> =
                    params.iter().map(|p| p as &(dyn ToSql + Sync)).collect();
                let rows = c.query(sql, &params).await.unwrap();
                rows.iter()
                    .map(|r| {
                        (0..r.len())
                            .map(|i| {
                                let t = r.columns()[i].type_().clone();
                                let cell = if t == Type::INT8 {
                                    r.get::<_, Option<i64>>(i).map(Cell::Int)
                                } else if t == Type::INT4 {
                                    r.get::<_, Option<i32>>(i).map(|v| Cell::Int(v.into()))
                                } else if t == Type::BOOL {
                                    r.get::<_, Option<bool>>(i).map(|v| Cell::Int(v.into()))
                                } else if t == Type::TEXT {
                                    r.get::<_, Option<String>>(i).map(Cell::Text)
                                } else if t == Type::BYTEA {
                                    r.get::<_, Option<Vec<u8>>>(i).map(Cell::Bytes)
                                } else {
                                    panic!("column {i} has type {t}, which peek does not read")
                                };
                                cell.unwrap_or(Cell::Null)
                            })
                            .collect()
                    })
                    .collect()
            }
        }
    }

    /// The one integer `sql` answers.
    pub async fn int(&self, sql: &str, params: &[&str]) -> Option<i64> {
        let rows = self.rows(sql, params).await;
        assert_eq!(rows.len(), 1, "{sql}: {rows:?}");
        rows[0][0].int()
    }
}
