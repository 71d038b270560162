//! Admin users, their sessions and admin bearer tokens. Session ids and tokens are stored only as
//! digests, so a copy of the database does not let anyone in.

use rusqlite::{Connection, OptionalExtension, params};

use super::Result;
use crate::credentials::SecretDigest;
use crate::model::{Timestamp, Username};

pub fn user_count(conn: &Connection) -> Result<i64> {
    Ok(conn.query_row("SELECT count(*) FROM admin_users", [], |r| r.get(0))?)
}

/// Creates a user; `false` when the name is taken.
pub fn create_user(
    conn: &Connection,
    username: &Username,
    password_hash: &str,
    now: Timestamp,
) -> Result<bool> {
    let n = conn.execute(
        "INSERT INTO admin_users (username, password_hash, created_at, password_changed_at) \
         VALUES (?1, ?2, ?3, ?3) ON CONFLICT (username) DO NOTHING",
        params![username.as_str(), password_hash, now.millis()],
    )?;
    Ok(n == 1)
}

/// Replaces a user's password and ends all their sessions; `false` when there is no such user.
pub fn set_password(
    conn: &Connection,
    username: &Username,
    password_hash: &str,
    now: Timestamp,
) -> Result<bool> {
    let Some(id) = conn
        .query_row(
            "SELECT id FROM admin_users WHERE username = ?1",
            [username.as_str()],
            |r| r.get::<_, i64>(0),
        )
        .optional()?
    else {
        return Ok(false);
    };
    conn.execute(
        "UPDATE admin_users SET password_hash = ?2, password_changed_at = ?3 WHERE id = ?1",
        params![id, password_hash, now.millis()],
    )?;
    conn.execute("DELETE FROM admin_sessions WHERE user_id = ?1", [id])?;
    Ok(true)
}

/// The user's id and password hash.
pub fn find_user(conn: &Connection, username: &str) -> Result<Option<(i64, String)>> {
    Ok(conn
        .query_row(
            "SELECT id, password_hash FROM admin_users WHERE username = ?1",
            [username],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?)
}

pub fn create_session(
    conn: &Connection,
    digest: SecretDigest,
    user_id: i64,
    now: Timestamp,
    expires: Timestamp,
) -> Result<()> {
    // Expired sessions are swept whenever a new one starts, which bounds the table without a timer.
    conn.execute(
        "DELETE FROM admin_sessions WHERE expires_at <= ?1",
        [now.millis()],
    )?;
    conn.execute(
        "INSERT INTO admin_sessions (token_digest, user_id, created_at, expires_at) VALUES (?1, ?2, ?3, ?4)",
        params![&digest.0[..], user_id, now.millis(), expires.millis()],
    )?;
    Ok(())
}

/// The user name behind a live session.
pub fn session_user(
    conn: &Connection,
    digest: SecretDigest,
    now: Timestamp,
) -> Result<Option<String>> {
    let mut stmt = conn.prepare_cached(
        "SELECT u.username FROM admin_sessions s JOIN admin_users u ON u.id = s.user_id \
         WHERE s.token_digest = ?1 AND s.expires_at > ?2",
    )?;
    Ok(stmt
        .query_row(params![&digest.0[..], now.millis()], |r| r.get(0))
        .optional()?)
}

pub fn delete_session(conn: &Connection, digest: SecretDigest) -> Result<()> {
    conn.execute(
        "DELETE FROM admin_sessions WHERE token_digest = ?1",
        [&digest.0[..]],
    )?;
    Ok(())
}

pub fn create_token(
    conn: &Connection,
    digest: SecretDigest,
    name: &str,
    now: Timestamp,
) -> Result<()> {
    conn.execute(
        "INSERT INTO admin_tokens (token_digest, name, created_at) VALUES (?1, ?2, ?3)",
        params![&digest.0[..], name, now.millis()],
    )?;
    Ok(())
}

/// An admin bearer token as listed: never the token itself (only its digest is kept).
pub struct TokenInfo {
    pub id: i64,
    pub name: String,
    pub created_at: Timestamp,
}

/// Every admin token, oldest first; at most `limit`.
pub fn list_tokens(conn: &Connection, limit: u32) -> Result<Vec<TokenInfo>> {
    let mut stmt =
        conn.prepare_cached("SELECT id, name, created_at FROM admin_tokens ORDER BY id LIMIT ?1")?;
    let rows = stmt.query_map([limit], |r| {
        Ok(TokenInfo {
            id: r.get(0)?,
            name: r.get(1)?,
            created_at: Timestamp(r.get(2)?),
        })
    })?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// Deletes the token `id`; its name, or `None` when there was none.
pub fn delete_token(conn: &Connection, id: i64) -> Result<Option<String>> {
    Ok(conn
        .prepare_cached("DELETE FROM admin_tokens WHERE id = ?1 RETURNING name")?
        .query_row([id], |r| r.get(0))
        .optional()?)
}

/// The name of the admin token with this digest.
pub fn token_name(conn: &Connection, digest: SecretDigest) -> Result<Option<String>> {
    let mut stmt = conn.prepare_cached("SELECT name FROM admin_tokens WHERE token_digest = ?1")?;
    Ok(stmt.query_row([&digest.0[..]], |r| r.get(0)).optional()?)
}
