//! Admin users, their sessions and admin bearer tokens. Session ids and tokens are stored only as
//! digests, so a copy of the database does not let anyone in.

use rusqlite::{Connection, OptionalExtension, params};

use super::audit::Audit;
use super::{Result, Store};
use crate::credentials::SecretDigest;
use crate::model::{Timestamp, Username};

fn user_count(conn: &Connection) -> Result<i64> {
    Ok(conn.query_row("SELECT count(*) FROM admin_users", [], |r| r.get(0))?)
}

/// Creates a user; `false` when the name is taken.
fn create_user(
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
fn set_password(
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
fn find_user(conn: &Connection, username: &str) -> Result<Option<(i64, String)>> {
    Ok(conn
        .query_row(
            "SELECT id, password_hash FROM admin_users WHERE username = ?1",
            [username],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?)
}

fn create_session(
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
fn session_user(conn: &Connection, digest: SecretDigest, now: Timestamp) -> Result<Option<String>> {
    let mut stmt = conn.prepare_cached(
        "SELECT u.username FROM admin_sessions s JOIN admin_users u ON u.id = s.user_id \
         WHERE s.token_digest = ?1 AND s.expires_at > ?2",
    )?;
    Ok(stmt
        .query_row(params![&digest.0[..], now.millis()], |r| r.get(0))
        .optional()?)
}

fn delete_session(conn: &Connection, digest: SecretDigest) -> Result<()> {
    conn.execute(
        "DELETE FROM admin_sessions WHERE token_digest = ?1",
        [&digest.0[..]],
    )?;
    Ok(())
}

fn create_token(conn: &Connection, digest: SecretDigest, name: &str, now: Timestamp) -> Result<()> {
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
fn list_tokens(conn: &Connection, limit: u32) -> Result<Vec<TokenInfo>> {
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
fn delete_token(conn: &Connection, id: i64) -> Result<Option<String>> {
    Ok(conn
        .prepare_cached("DELETE FROM admin_tokens WHERE id = ?1 RETURNING name")?
        .query_row([id], |r| r.get(0))
        .optional()?)
}

/// The name of the admin token with this digest.
fn token_name(conn: &Connection, digest: SecretDigest) -> Result<Option<String>> {
    let mut stmt = conn.prepare_cached("SELECT name FROM admin_tokens WHERE token_digest = ?1")?;
    Ok(stmt.query_row([&digest.0[..]], |r| r.get(0)).optional()?)
}

/// The admin users, sessions and tokens as the services use them; each operation is one transaction,
/// and a change's audit entry is written in it when the change happened.
impl Store {
    pub async fn admin_count(&self) -> Result<i64> {
        self.read(user_count).await
    }

    /// Creates the first admin user, only while there is none (another process may have created one
    /// meanwhile); `false` when there already was one.
    pub async fn create_first_admin(
        &self,
        username: Username,
        password_hash: String,
        audit: Audit,
    ) -> Result<bool> {
        self.write(move |c| {
            let now = Timestamp::now();
            if user_count(c)? > 0 {
                return Ok(false);
            }
            let created = create_user(c, &username, &password_hash, now)?;
            audit.write(c, now)?;
            Ok(created)
        })
        .await
    }

    /// Creates an admin user; `false` when the name is taken.
    pub async fn create_admin(
        &self,
        username: Username,
        password_hash: String,
        audit: Audit,
    ) -> Result<bool> {
        self.write(move |c| {
            let now = Timestamp::now();
            let created = create_user(c, &username, &password_hash, now)?;
            audit.write_if(c, created, now)
        })
        .await
    }

    /// Replaces a user's password and ends their sessions; `false` when there is no such user.
    pub async fn set_admin_password(
        &self,
        username: Username,
        password_hash: String,
        audit: Audit,
    ) -> Result<bool> {
        self.write(move |c| {
            let now = Timestamp::now();
            let done = set_password(c, &username, &password_hash, now)?;
            audit.write_if(c, done, now)
        })
        .await
    }

    /// The user's id and password hash.
    pub async fn admin_login_facts(&self, username: &str) -> Result<Option<(i64, String)>> {
        let name = username.to_string();
        self.read(move |c| find_user(c, &name)).await
    }

    pub async fn start_session(
        &self,
        digest: SecretDigest,
        user_id: i64,
        ttl_secs: u64,
    ) -> Result<()> {
        self.write(move |c| {
            let now = Timestamp::now();
            create_session(c, digest, user_id, now, now.plus_secs(ttl_secs))
        })
        .await
    }

    pub async fn end_session(&self, digest: SecretDigest) -> Result<()> {
        self.write(move |c| delete_session(c, digest)).await
    }

    /// The user name behind a live session.
    pub async fn session_user(&self, digest: SecretDigest) -> Result<Option<String>> {
        self.read(move |c| session_user(c, digest, Timestamp::now()))
            .await
    }

    pub async fn create_admin_token(
        &self,
        digest: SecretDigest,
        name: String,
        audit: Audit,
    ) -> Result<()> {
        self.write(move |c| {
            let now = Timestamp::now();
            create_token(c, digest, &name, now)?;
            audit.write(c, now)?;
            Ok(())
        })
        .await
    }

    /// Every admin token, oldest first; at most `limit`.
    pub async fn admin_tokens(&self, limit: u32) -> Result<Vec<TokenInfo>> {
        self.read(move |c| list_tokens(c, limit)).await
    }

    /// Revokes the token `id`, audited under its name; `false` when there was none.
    pub async fn revoke_admin_token(&self, id: i64, audit: Audit) -> Result<bool> {
        self.write(move |c| {
            let Some(name) = delete_token(c, id)? else {
                return Ok(false);
            };
            audit.target(name).write(c, Timestamp::now())?;
            Ok(true)
        })
        .await
    }

    /// The name of the admin token with this digest.
    pub async fn admin_token_name(&self, digest: SecretDigest) -> Result<Option<String>> {
        self.read(move |c| token_name(c, digest)).await
    }
}
