//! Server-wide values generated at first start and kept in the database (the signature key).

use rusqlite::{Connection, OptionalExtension, params};

use super::Result;

/// The value under `key`, created by `make` and stored if there is none yet. Run it in a write job so
/// two processes starting at once agree on one value.
pub fn get_or_create(
    conn: &Connection,
    key: &str,
    make: impl FnOnce() -> Vec<u8>,
) -> Result<Vec<u8>> {
    if let Some(v) = conn
        .query_row("SELECT value FROM settings WHERE key = ?1", [key], |r| {
            r.get::<_, Vec<u8>>(0)
        })
        .optional()?
    {
        return Ok(v);
    }
    let value = make();
    conn.execute(
        "INSERT INTO settings (key, value) VALUES (?1, ?2)",
        params![key, value],
    )?;
    Ok(value)
}
