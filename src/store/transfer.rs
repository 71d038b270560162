//! `clicktermd migrate-store`: copies a SQLite database, every table and row, into an empty PostgreSQL
//! database (issue #12, point 5), and proves the copy: per table, the count of rows and a SHA-256 over
//! every row in primary-key order, computed on the SQLite rows as they are read and again on the
//! PostgreSQL rows once written, must agree before anything is committed. All of it is one PostgreSQL
//! transaction (schema, rows, check), so a failed or refused copy leaves the target as empty as it was.
//!
//! Every table is copied but `admin_sessions` (a session is a login on the old server: people log in
//! again) and `delivery_counts` is copied as it is, with the trigger that keeps it off while the
//! deliveries go in (it would count them a second time). A table this code does not know stops the
//! copy before anything is written, so a table added later can never be left behind silently.

use std::path::Path;

use bytes::BytesMut;
use sha2::{Digest, Sha256};
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::{IsNull, ToSql, Type, to_sql_checked};

use super::{Result, StoreError, pg};
use crate::config::PostgresUrl;

/// The tables copied, parents before children (the foreign keys are checked row by row).
const TABLES: &[&str] = &[
    "settings",
    "admin_users",
    "admin_tokens",
    "integrations",
    "integration_domains",
    "integration_client_certs",
    "audit_log",
    "templates",
    "template_tags",
    "template_integrations",
    "template_texts",
    "template_versions",
    "template_version_texts",
    "presentations",
    "events",
    "reaccept_requests",
    "deliveries",
    "delivery_counts",
    "attempts",
    "attempt_hours",
    "webhook_health",
    "event_days",
    "ledger",
];

/// Tables of the SQLite database deliberately not copied.
const NOT_COPIED: &[&str] = &["admin_sessions"];

/// Rows sent from the SQLite reader to the PostgreSQL writer at a time.
const CHUNK: usize = 1000;

/// What was copied: per table, its rows and the digest both sides agree on.
pub struct Copied {
    pub tables: Vec<(String, u64, String)>,
}

/// One value, as both databases hold it (SQLite's 0/1 flags become PostgreSQL's booleans).
#[derive(Debug, Clone)]
enum Cell {
    Null,
    Int(i64),
    Bool(bool),
    Text(String),
    Bytes(Vec<u8>),
}

impl Cell {
    /// The canonical encoding the digests are taken over: a tag, then the value (integers and
    /// booleans as the same 8 big-endian bytes, texts and bytes with their length), so two equal rows
    /// hash alike whichever database they were read from.
    fn hash_into(&self, h: &mut Sha256) {
        match self {
            Cell::Null => h.update([0]),
            Cell::Int(i) => {
                h.update([1]);
                h.update(i.to_be_bytes());
            }
            Cell::Bool(b) => {
                h.update([1]);
                h.update(i64::from(*b).to_be_bytes());
            }
            Cell::Text(t) => {
                h.update([2]);
                h.update((t.len() as u64).to_be_bytes());
                h.update(t.as_bytes());
            }
            Cell::Bytes(b) => {
                h.update([3]);
                h.update((b.len() as u64).to_be_bytes());
                h.update(b);
            }
        }
    }
}

impl ToSql for Cell {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut BytesMut,
    ) -> std::result::Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        match self {
            Cell::Null => Ok(IsNull::Yes),
            Cell::Int(i) => i.to_sql(ty, out),
            Cell::Bool(b) => b.to_sql(ty, out),
            Cell::Text(t) => t.to_sql(ty, out),
            Cell::Bytes(b) => b.to_sql(ty, out),
        }
    }

    fn accepts(ty: &Type) -> bool {
        matches!(*ty, Type::INT8 | Type::BOOL | Type::TEXT | Type::BYTEA)
    }

    to_sql_checked!();
}

/// A column of the target table and its type.
struct Column {
    name: String,
    ty: Type,
}

/// Copies the SQLite database at `source` (at the current schema version, not being served) into the
/// empty PostgreSQL database `target`. Refuses a target that holds any table.
pub async fn copy(source: &Path, target: &PostgresUrl, ca_file: Option<&Path>) -> Result<Copied> {
    let shown = target.redacted();
    let parsed = pg::parse_url(target).map_err(|e| StoreError::Io(format!("--to: {e}")))?;
    let ca = ca_file.map(Path::to_path_buf).or(parsed.root_cert.clone());
    let tls = pg::tls_connector(parsed.tls, ca.as_deref()).map_err(StoreError::Io)?;
    let (mut client, connection) = parsed
        .config
        .connect(tls)
        .await
        .map_err(|e| StoreError::Io(format!("cannot connect to PostgreSQL at {shown}: {e}")))?;
    let driver = tokio::spawn(async move {
        let _ = connection.await;
    });

    let sqlite =
        rusqlite::Connection::open_with_flags(source, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    let present: Vec<String> = sqlite
        .prepare("SELECT name FROM sqlite_schema WHERE type = 'table' ORDER BY name")?
        .query_map([], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    if let Some(unknown) = present
        .iter()
        .find(|t| !TABLES.contains(&t.as_str()) && !NOT_COPIED.contains(&t.as_str()))
    {
        return Err(StoreError::Io(format!(
            "the SQLite database has a table {unknown} that migrate-store does not know; nothing was copied"
        )));
    }
    drop(sqlite);

    let tx = client.transaction().await?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&pg::MIGRATION_LOCK])
        .await?;
    let tables = pg::schema_tables(&tx).await?;
    if tables > 0 {
        return Err(StoreError::Io(format!(
            "the PostgreSQL database {shown} is not empty ({tables} tables): migrate-store copies \
             into an empty database only (createdb a new one); nothing was copied"
        )));
    }
    tx.batch_execute(pg::SCHEMA_POSTGRES).await?;
    tx.batch_execute("ALTER TABLE deliveries DISABLE TRIGGER deliveries_counted")
        .await?;

    let mut copied = Copied { tables: Vec::new() };
    for table in TABLES {
        let (columns, key) = describe(&tx, table).await?;
        let (rows, source_digest) = copy_table(&tx, source, table, &columns, &key).await?;
        let (back, target_digest) = digest_target(&tx, table, &columns, &key).await?;
        if back != rows || target_digest != source_digest {
            return Err(StoreError::Io(format!(
                "the copy of {table} does not match: {rows} rows read, {back} found; nothing was kept"
            )));
        }
        copied
            .tables
            .push((table.to_string(), rows, hex::encode(source_digest)));
    }
    tx.batch_execute("ALTER TABLE deliveries ENABLE TRIGGER deliveries_counted")
        .await?;
    // Identity columns go on after the highest id copied.
    for row in tx
        .query(
            "SELECT table_name, column_name FROM information_schema.columns \
             WHERE table_schema = current_schema() AND is_identity = 'YES'",
            &[],
        )
        .await?
    {
        let (table, column): (String, String) = (row.get(0), row.get(1));
        tx.execute(
            &format!(
                "SELECT setval(pg_get_serial_sequence('{table}', '{column}'), \
                 coalesce((SELECT max({column}) FROM {table}), 0) + 1, false)"
            ),
            &[],
        )
        .await?;
    }
    tx.commit().await?;
    drop(client);
    let _ = driver.await;
    Ok(copied)
}

/// The target table's columns in order and its primary key's columns.
async fn describe(
    tx: &tokio_postgres::Transaction<'_>,
    table: &str,
) -> Result<(Vec<Column>, Vec<String>)> {
    let columns = tx
        .query(
            "SELECT a.attname, a.atttypid FROM pg_attribute a \
             WHERE a.attrelid = $1::text::regclass AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum",
            &[&table],
        )
        .await?
        .iter()
        .map(|r| {
            let oid: u32 = r.get(1);
            Column {
                name: r.get(0),
                ty: Type::from_oid(oid).unwrap_or(Type::TEXT),
            }
        })
        .collect();
    let key = tx
        .query(
            "SELECT a.attname FROM pg_index i \
             JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey) \
             WHERE i.indrelid = $1::text::regclass AND i.indisprimary \
             ORDER BY array_position(i.indkey, a.attnum)",
            &[&table],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    Ok((columns, key))
}

/// `ORDER BY` the key, texts compared byte by byte (SQLite's BINARY, PostgreSQL's "C").
fn order_by(columns: &[Column], key: &[String], postgres: bool) -> String {
    key.iter()
        .map(|k| {
            let text = columns.iter().any(|c| &c.name == k && c.ty == Type::TEXT);
            if postgres && text {
                format!("{k} COLLATE \"C\"")
            } else {
                k.clone()
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Streams `table`'s SQLite rows (read on a blocking thread, in key order) into PostgreSQL with a
/// binary `COPY`; returns how many and their digest.
async fn copy_table(
    tx: &tokio_postgres::Transaction<'_>,
    source: &Path,
    table: &str,
    columns: &[Column],
    key: &[String],
) -> Result<(u64, [u8; 32])> {
    let names: Vec<&str> = columns.iter().map(|c| c.name.as_str()).collect();
    let select = format!(
        "SELECT {} FROM {table} ORDER BY {}",
        names.join(", "),
        order_by(columns, key, false)
    );
    let kinds: Vec<Type> = columns.iter().map(|c| c.ty.clone()).collect();
    let (send, mut receive) = tokio::sync::mpsc::channel::<Result<Vec<Vec<Cell>>>>(4);
    let path = source.to_path_buf();
    let reader_kinds = kinds.clone();
    let reader = tokio::task::spawn_blocking(move || -> [u8; 32] {
        let mut digest = Sha256::new();
        let mut read = || -> Result<()> {
            let conn = rusqlite::Connection::open_with_flags(
                &path,
                rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
            )?;
            let mut stmt = conn.prepare(&select)?;
            let mut rows = stmt.query([])?;
            let mut chunk = Vec::with_capacity(CHUNK);
            while let Some(row) = rows.next()? {
                let mut cells = Vec::with_capacity(reader_kinds.len());
                for (i, ty) in reader_kinds.iter().enumerate() {
                    let cell = sqlite_cell(row.get_ref(i)?, ty);
                    cell.hash_into(&mut digest);
                    cells.push(cell);
                }
                chunk.push(cells);
                if chunk.len() == CHUNK
                    && send
                        .blocking_send(Ok(std::mem::replace(&mut chunk, Vec::with_capacity(CHUNK))))
                        .is_err()
                {
                    return Ok(());
                }
            }
            if !chunk.is_empty() {
                let _ = send.blocking_send(Ok(chunk));
            }
            Ok(())
        };
        if let Err(e) = read() {
            let _ = send.blocking_send(Err(e));
        }
        digest.finalize().into()
    });

    let sink = tx
        .copy_in(&format!(
            "COPY {table} ({}) FROM STDIN BINARY",
            names.join(", ")
        ))
        .await?;
    let writer = BinaryCopyInWriter::new(sink, &kinds);
    let mut writer = std::pin::pin!(writer);
    let mut rows = 0u64;
    while let Some(chunk) = receive.recv().await {
        for cells in chunk? {
            let values: Vec<&(dyn ToSql + Sync)> =
                cells.iter().map(|c| c as &(dyn ToSql + Sync)).collect();
            writer.as_mut().write(&values).await?;
            rows += 1;
        }
    }
    writer.as_mut().finish().await?;
    let digest = reader.await.map_err(|e| StoreError::Task(e.to_string()))?;
    Ok((rows, digest))
}

/// A SQLite value as the target column's type wants it.
fn sqlite_cell(value: rusqlite::types::ValueRef<'_>, ty: &Type) -> Cell {
    use rusqlite::types::ValueRef;
    match value {
        ValueRef::Null => Cell::Null,
        ValueRef::Integer(i) if *ty == Type::BOOL => Cell::Bool(i != 0),
        ValueRef::Integer(i) => Cell::Int(i),
        ValueRef::Real(f) => Cell::Text(f.to_string()),
        ValueRef::Text(t) if *ty == Type::BYTEA => Cell::Bytes(t.to_vec()),
        ValueRef::Text(t) => Cell::Text(String::from_utf8_lossy(t).into_owned()),
        ValueRef::Blob(b) if *ty == Type::TEXT => {
            Cell::Text(String::from_utf8_lossy(b).into_owned())
        }
        ValueRef::Blob(b) => Cell::Bytes(b.to_vec()),
    }
}

/// The rows of `table` as PostgreSQL now holds them, in key order: how many, and their digest.
async fn digest_target(
    tx: &tokio_postgres::Transaction<'_>,
    table: &str,
    columns: &[Column],
    key: &[String],
) -> Result<(u64, [u8; 32])> {
    use futures_util::TryStreamExt;
    let names: Vec<&str> = columns.iter().map(|c| c.name.as_str()).collect();
    let select = format!(
        "SELECT {} FROM {table} ORDER BY {}",
        names.join(", "),
        order_by(columns, key, true)
    );
    let stream = tx.query_raw(&select, std::iter::empty::<i64>()).await?;
    let mut stream = std::pin::pin!(stream);
    let mut digest = Sha256::new();
    let mut rows = 0u64;
    while let Some(row) = stream.try_next().await? {
        for (i, c) in columns.iter().enumerate() {
            let cell = match c.ty {
                Type::INT8 => row.get::<_, Option<i64>>(i).map_or(Cell::Null, Cell::Int),
                Type::BOOL => row.get::<_, Option<bool>>(i).map_or(Cell::Null, Cell::Bool),
                Type::BYTEA => row
                    .get::<_, Option<Vec<u8>>>(i)
                    .map_or(Cell::Null, Cell::Bytes),
                _ => row
                    .get::<_, Option<String>>(i)
                    .map_or(Cell::Null, Cell::Text),
            };
            cell.hash_into(&mut digest);
        }
        rows += 1;
    }
    Ok((rows, digest.finalize().into()))
}
