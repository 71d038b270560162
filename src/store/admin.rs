//! Admin users with their roles, their sessions and admin bearer tokens. Session ids and tokens are
//! stored only as digests, so a copy of the database does not let anyone in.

use rusqlite::{Connection, OptionalExtension, params};

use super::audit::Audit;
use super::{Backend, Result, Store};
use crate::credentials::SecretDigest;
use crate::model::{Role, Timestamp, Username};

/// An admin user as listed: never the password hash.
pub struct AdminUser {
    pub username: String,
    pub role: Role,
    pub disabled_at: Option<Timestamp>,
    pub must_change_password: bool,
    pub created_at: Timestamp,
    pub password_changed_at: Timestamp,
    /// Live sessions.
    pub sessions: i64,
}

/// A new admin user; `must_change_password` when the password is a one-time one.
pub struct NewAdmin {
    pub username: Username,
    pub password_hash: String,
    pub role: Role,
    pub must_change_password: bool,
}

/// The person behind a live session.
pub struct SessionUser {
    pub username: String,
    pub role: Role,
    pub must_change_password: bool,
}

/// A live session as an owner sees it. `id` is the first 8 bytes of the cookie's digest in hex: it
/// tells sessions apart and cannot be used to log in (the digest itself cannot either).
pub struct SessionInfo {
    pub id: String,
    pub created_at: Timestamp,
    pub expires_at: Timestamp,
    pub from: Option<String>,
    pub user_agent: Option<String>,
}

/// Who a bearer token is.
pub struct TokenCaller {
    pub name: String,
    pub role: Role,
}

/// An admin bearer token as listed: never the token itself (only its digest is kept).
pub struct TokenInfo {
    pub id: i64,
    pub name: String,
    pub role: Role,
    pub created_at: Timestamp,
}

/// What a change to a user found.
pub enum UserChange {
    NoSuchUser,
    /// It would leave no enabled owner.
    LastOwner,
    Done,
}

/// A role and disabled flag to set; `None` leaves it.
#[derive(Default, Clone, Copy)]
pub struct UserChanges {
    pub role: Option<Role>,
    pub disabled: Option<bool>,
}

/// Whether a user with this role and disabled flag counts as an enabled owner: a change may not leave
/// none (the last-owner rule, the same on both stores).
pub(crate) fn is_enabled_owner(role: Role, disabled: bool) -> bool {
    role == Role::Owner && !disabled
}

fn user_count(conn: &Connection) -> Result<i64> {
    Ok(conn.query_row("SELECT count(*) FROM admin_users", [], |r| r.get(0))?)
}

/// Creates a user; `false` when the name is taken.
fn create_user(conn: &Connection, new: &NewAdmin, now: Timestamp) -> Result<bool> {
    let n = conn.execute(
        "INSERT INTO admin_users (username, password_hash, created_at, password_changed_at, role, \
         must_change_password) VALUES (?1, ?2, ?3, ?3, ?4, ?5) ON CONFLICT (username) DO NOTHING",
        params![
            new.username.as_str(),
            new.password_hash,
            now.millis(),
            new.role,
            new.must_change_password
        ],
    )?;
    Ok(n == 1)
}

fn user_id(conn: &Connection, username: &str) -> Result<Option<i64>> {
    Ok(conn
        .query_row(
            "SELECT id FROM admin_users WHERE username = ?1",
            [username],
            |r| r.get::<_, i64>(0),
        )
        .optional()?)
}

/// Replaces a user's password and ends all their sessions; `false` when there is no such user.
fn set_password(
    conn: &Connection,
    username: &str,
    password_hash: &str,
    must_change: bool,
    now: Timestamp,
) -> Result<bool> {
    let Some(id) = user_id(conn, username)? else {
        return Ok(false);
    };
    conn.execute(
        "UPDATE admin_users SET password_hash = ?2, password_changed_at = ?3, \
         must_change_password = ?4 WHERE id = ?1",
        params![id, password_hash, now.millis(), must_change],
    )?;
    conn.execute("DELETE FROM admin_sessions WHERE user_id = ?1", [id])?;
    Ok(true)
}

/// Enabled owners other than `username`.
fn other_owners(conn: &Connection, username: &str) -> Result<i64> {
    Ok(conn.query_row(
        "SELECT count(*) FROM admin_users WHERE role = 'owner' AND disabled_at IS NULL AND username <> ?1",
        [username],
        |r| r.get(0),
    )?)
}

/// The role and disabled flag of a user.
fn standing(conn: &Connection, username: &str) -> Result<Option<(Role, bool)>> {
    Ok(conn
        .query_row(
            "SELECT role, disabled_at IS NOT NULL FROM admin_users WHERE username = ?1",
            [username],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?)
}

fn change_user(
    conn: &Connection,
    username: &str,
    changes: UserChanges,
    now: Timestamp,
) -> Result<UserChange> {
    let Some((role, disabled)) = standing(conn, username)? else {
        return Ok(UserChange::NoSuchUser);
    };
    let role = changes.role.unwrap_or(role);
    let disabled = changes.disabled.unwrap_or(disabled);
    let owner_after = is_enabled_owner(role, disabled);
    if !owner_after && other_owners(conn, username)? == 0 {
        return Ok(UserChange::LastOwner);
    }
    conn.execute(
        "UPDATE admin_users SET role = ?2, \
         disabled_at = CASE WHEN ?3 THEN coalesce(disabled_at, ?4) ELSE NULL END WHERE username = ?1",
        params![username, role, disabled, now.millis()],
    )?;
    if disabled {
        conn.execute(
            "DELETE FROM admin_sessions WHERE user_id = (SELECT id FROM admin_users WHERE username = ?1)",
            [username],
        )?;
    }
    Ok(UserChange::Done)
}

fn delete_user(conn: &Connection, username: &str) -> Result<UserChange> {
    if standing(conn, username)?.is_none() {
        return Ok(UserChange::NoSuchUser);
    }
    if other_owners(conn, username)? == 0 {
        return Ok(UserChange::LastOwner);
    }
    // Its sessions go with it (ON DELETE CASCADE).
    conn.execute("DELETE FROM admin_users WHERE username = ?1", [username])?;
    Ok(UserChange::Done)
}

fn list_users(conn: &Connection, now: Timestamp) -> Result<Vec<AdminUser>> {
    let mut stmt = conn.prepare_cached(
        "SELECT username, role, disabled_at, must_change_password, created_at, password_changed_at, \
         (SELECT count(*) FROM admin_sessions s WHERE s.user_id = u.id AND s.expires_at > ?1) \
         FROM admin_users u ORDER BY username",
    )?;
    let rows = stmt.query_map([now.millis()], |r| {
        Ok(AdminUser {
            username: r.get(0)?,
            role: r.get(1)?,
            disabled_at: r.get::<_, Option<i64>>(2)?.map(Timestamp),
            must_change_password: r.get(3)?,
            created_at: Timestamp(r.get(4)?),
            password_changed_at: Timestamp(r.get(5)?),
            sessions: r.get(6)?,
        })
    })?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// The user's id and password hash, if the user exists and is not disabled.
fn find_user(conn: &Connection, username: &str) -> Result<Option<(i64, String)>> {
    Ok(conn
        .query_row(
            "SELECT id, password_hash FROM admin_users WHERE username = ?1 AND disabled_at IS NULL",
            [username],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?)
}

/// Where a session starts from.
pub struct SessionStart {
    pub from: Option<String>,
    pub user_agent: Option<String>,
}

fn create_session(
    conn: &Connection,
    digest: SecretDigest,
    user_id: i64,
    (now, expires): (Timestamp, Timestamp),
    start: &SessionStart,
) -> Result<()> {
    // Expired sessions are swept whenever a new one starts, which bounds the table without a timer.
    conn.execute(
        "DELETE FROM admin_sessions WHERE expires_at <= ?1",
        [now.millis()],
    )?;
    conn.execute(
        "INSERT INTO admin_sessions (token_digest, user_id, created_at, expires_at, client, user_agent) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![
            &digest.0[..],
            user_id,
            now.millis(),
            expires.millis(),
            start.from,
            start.user_agent
        ],
    )?;
    Ok(())
}

/// The user behind a live session of an enabled user.
fn session_user(
    conn: &Connection,
    digest: SecretDigest,
    now: Timestamp,
) -> Result<Option<SessionUser>> {
    let mut stmt = conn.prepare_cached(
        "SELECT u.username, u.role, u.must_change_password FROM admin_sessions s \
         JOIN admin_users u ON u.id = s.user_id \
         WHERE s.token_digest = ?1 AND s.expires_at > ?2 AND u.disabled_at IS NULL",
    )?;
    Ok(stmt
        .query_row(params![&digest.0[..], now.millis()], |r| {
            Ok(SessionUser {
                username: r.get(0)?,
                role: r.get(1)?,
                must_change_password: r.get(2)?,
            })
        })
        .optional()?)
}

fn delete_session(conn: &Connection, digest: SecretDigest) -> Result<()> {
    conn.execute(
        "DELETE FROM admin_sessions WHERE token_digest = ?1",
        [&digest.0[..]],
    )?;
    Ok(())
}

/// The id an owner sees for a session (see [`SessionInfo`]).
const SESSION_ID: &str = "lower(hex(substr(s.token_digest, 1, 8)))";

fn list_sessions(conn: &Connection, user: i64, now: Timestamp) -> Result<Vec<SessionInfo>> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {SESSION_ID}, s.created_at, s.expires_at, s.client, s.user_agent FROM admin_sessions s \
         WHERE s.user_id = ?1 AND s.expires_at > ?2 ORDER BY s.created_at"
    ))?;
    let rows = stmt.query_map(params![user, now.millis()], |r| {
        Ok(SessionInfo {
            id: r.get(0)?,
            created_at: Timestamp(r.get(1)?),
            expires_at: Timestamp(r.get(2)?),
            from: r.get(3)?,
            user_agent: r.get(4)?,
        })
    })?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// Ends the user's session `id`, or all of them; how many ended.
fn end_sessions(conn: &Connection, user: i64, id: Option<&str>) -> Result<usize> {
    Ok(match id {
        Some(id) => conn.execute(
            &format!("DELETE FROM admin_sessions AS s WHERE s.user_id = ?1 AND {SESSION_ID} = ?2"),
            params![user, id],
        )?,
        None => conn.execute("DELETE FROM admin_sessions WHERE user_id = ?1", [user])?,
    })
}

fn create_token(
    conn: &Connection,
    digest: SecretDigest,
    name: &str,
    role: Role,
    now: Timestamp,
) -> Result<()> {
    conn.execute(
        "INSERT INTO admin_tokens (token_digest, name, created_at, role) VALUES (?1, ?2, ?3, ?4)",
        params![&digest.0[..], name, now.millis(), role],
    )?;
    Ok(())
}

/// Every admin token, oldest first; at most `limit`.
fn list_tokens(conn: &Connection, limit: u32) -> Result<Vec<TokenInfo>> {
    let mut stmt = conn.prepare_cached(
        "SELECT id, name, role, created_at FROM admin_tokens ORDER BY id LIMIT ?1",
    )?;
    let rows = stmt.query_map([limit], |r| {
        Ok(TokenInfo {
            id: r.get(0)?,
            name: r.get(1)?,
            role: r.get(2)?,
            created_at: Timestamp(r.get(3)?),
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

/// The name and role of the admin token with this digest.
fn token_caller(conn: &Connection, digest: SecretDigest) -> Result<Option<TokenCaller>> {
    let mut stmt =
        conn.prepare_cached("SELECT name, role FROM admin_tokens WHERE token_digest = ?1")?;
    Ok(stmt
        .query_row([&digest.0[..]], |r| {
            Ok(TokenCaller {
                name: r.get(0)?,
                role: r.get(1)?,
            })
        })
        .optional()?)
}

/// The admin users, sessions and tokens as the services use them; each operation is one
/// transaction, and a change's audit entry is written in it when the change happened.
impl Store {
    pub async fn admin_count(&self) -> Result<i64> {
        match self.backend() {
            Backend::Sqlite(s) => s.read(user_count).await,
            Backend::Postgres(p) => p.admin_count().await,
        }
    }

    /// Creates the first admin user, only while there is none (another process may have created one
    /// meanwhile); `false` when there already was one.
    pub async fn create_first_admin(&self, new: NewAdmin, audit: Audit) -> Result<bool> {
        match self.backend() {
            Backend::Sqlite(s) => {
                s.write(move |c| {
                    let now = Timestamp::now();
                    if user_count(c)? > 0 {
                        return Ok(false);
                    }
                    let created = create_user(c, &new, now)?;
                    audit.write_if(c, created, now)
                })
                .await
            }
            Backend::Postgres(p) => p.create_first_admin(new, audit).await,
        }
    }

    /// Creates an admin user; `false` when the name is taken.
    pub async fn create_admin(&self, new: NewAdmin, audit: Audit) -> Result<bool> {
        match self.backend() {
            Backend::Sqlite(s) => {
                s.write(move |c| {
                    let now = Timestamp::now();
                    let created = create_user(c, &new, now)?;
                    audit.write_if(c, created, now)
                })
                .await
            }
            Backend::Postgres(p) => p.create_admin(new, audit).await,
        }
    }

    /// Every admin user, by name.
    pub async fn admin_users(&self) -> Result<Vec<AdminUser>> {
        match self.backend() {
            Backend::Sqlite(s) => s.read(|c| list_users(c, Timestamp::now())).await,
            Backend::Postgres(p) => p.admin_users().await,
        }
    }

    /// Replaces a user's password (a one-time one when `must_change`) and ends their sessions; `false`
    /// when there is no such user.
    pub async fn set_admin_password(
        &self,
        username: &str,
        password_hash: String,
        must_change: bool,
        audit: Audit,
    ) -> Result<bool> {
        match self.backend() {
            Backend::Sqlite(s) => {
                let name = username.to_string();
                s.write(move |c| {
                    let now = Timestamp::now();
                    let done = set_password(c, &name, &password_hash, must_change, now)?;
                    audit.write_if(c, done, now)
                })
                .await
            }
            Backend::Postgres(p) => {
                p.set_admin_password(username, password_hash, must_change, audit)
                    .await
            }
        }
    }

    /// Changes a user's role or disables or enables them (a disabled user's sessions end), refusing
    /// what would leave no enabled owner.
    pub async fn change_admin(
        &self,
        username: &str,
        changes: UserChanges,
        audit: Audit,
    ) -> Result<UserChange> {
        match self.backend() {
            Backend::Sqlite(s) => {
                let name = username.to_string();
                s.write(move |c| {
                    let now = Timestamp::now();
                    let change = change_user(c, &name, changes, now)?;
                    if matches!(change, UserChange::Done) {
                        audit.write(c, now)?;
                    }
                    Ok(change)
                })
                .await
            }
            Backend::Postgres(p) => p.change_admin(username, changes, audit).await,
        }
    }

    /// Removes a user and their sessions, refusing to remove the last enabled owner.
    pub async fn delete_admin(&self, username: &str, audit: Audit) -> Result<UserChange> {
        match self.backend() {
            Backend::Sqlite(s) => {
                let name = username.to_string();
                s.write(move |c| {
                    let change = delete_user(c, &name)?;
                    if matches!(change, UserChange::Done) {
                        audit.write(c, Timestamp::now())?;
                    }
                    Ok(change)
                })
                .await
            }
            Backend::Postgres(p) => p.delete_admin(username, audit).await,
        }
    }

    /// The user's id and password hash, if the user exists and is not disabled.
    pub async fn admin_login_facts(&self, username: &str) -> Result<Option<(i64, String)>> {
        match self.backend() {
            Backend::Sqlite(s) => {
                let name = username.to_string();
                s.read(move |c| find_user(c, &name)).await
            }
            Backend::Postgres(p) => p.admin_login_facts(username).await,
        }
    }

    pub async fn start_session(
        &self,
        digest: SecretDigest,
        user_id: i64,
        ttl_secs: u64,
        start: SessionStart,
    ) -> Result<()> {
        match self.backend() {
            Backend::Sqlite(s) => {
                s.write(move |c| {
                    let now = Timestamp::now();
                    create_session(c, digest, user_id, (now, now.plus_secs(ttl_secs)), &start)
                })
                .await
            }
            Backend::Postgres(p) => p.start_session(digest, user_id, ttl_secs, start).await,
        }
    }

    pub async fn end_session(&self, digest: SecretDigest) -> Result<()> {
        match self.backend() {
            Backend::Sqlite(s) => s.write(move |c| delete_session(c, digest)).await,
            Backend::Postgres(p) => p.end_session(digest).await,
        }
    }

    /// The enabled user behind a live session.
    pub async fn session_user(&self, digest: SecretDigest) -> Result<Option<SessionUser>> {
        match self.backend() {
            Backend::Sqlite(s) => {
                s.read(move |c| session_user(c, digest, Timestamp::now()))
                    .await
            }
            Backend::Postgres(p) => p.session_user(digest).await,
        }
    }

    /// A user's live sessions, oldest first; `None` when there is no such user.
    pub async fn admin_sessions(&self, username: &str) -> Result<Option<Vec<SessionInfo>>> {
        match self.backend() {
            Backend::Sqlite(s) => {
                let name = username.to_string();
                s.read(move |c| match user_id(c, &name)? {
                    Some(id) => Ok(Some(list_sessions(c, id, Timestamp::now())?)),
                    None => Ok(None),
                })
                .await
            }
            Backend::Postgres(p) => p.admin_sessions(username).await,
        }
    }

    /// Ends a user's session `id` (see [`SessionInfo`]), or all of them; how many ended, `None` when
    /// there is no such user. Audited when any ended.
    pub async fn end_admin_sessions(
        &self,
        username: &str,
        id: Option<String>,
        audit: Audit,
    ) -> Result<Option<usize>> {
        match self.backend() {
            Backend::Sqlite(s) => {
                let name = username.to_string();
                s.write(move |c| {
                    let Some(user) = user_id(c, &name)? else {
                        return Ok(None);
                    };
                    let ended = end_sessions(c, user, id.as_deref())?;
                    audit.write_if(c, ended > 0, Timestamp::now())?;
                    Ok(Some(ended))
                })
                .await
            }
            Backend::Postgres(p) => p.end_admin_sessions(username, id, audit).await,
        }
    }

    pub async fn create_admin_token(
        &self,
        digest: SecretDigest,
        name: String,
        role: Role,
        audit: Audit,
    ) -> Result<()> {
        match self.backend() {
            Backend::Sqlite(s) => {
                s.write(move |c| {
                    let now = Timestamp::now();
                    create_token(c, digest, &name, role, now)?;
                    audit.write(c, now)?;
                    Ok(())
                })
                .await
            }
            Backend::Postgres(p) => p.create_admin_token(digest, name, role, audit).await,
        }
    }

    /// Every admin token, oldest first; at most `limit`.
    pub async fn admin_tokens(&self, limit: u32) -> Result<Vec<TokenInfo>> {
        match self.backend() {
            Backend::Sqlite(s) => s.read(move |c| list_tokens(c, limit)).await,
            Backend::Postgres(p) => p.admin_tokens(limit).await,
        }
    }

    /// Revokes the token `id`, audited under its name; `false` when there was none.
    pub async fn revoke_admin_token(&self, id: i64, audit: Audit) -> Result<bool> {
        match self.backend() {
            Backend::Sqlite(s) => {
                s.write(move |c| {
                    let Some(name) = delete_token(c, id)? else {
                        return Ok(false);
                    };
                    audit.target(name).write(c, Timestamp::now())?;
                    Ok(true)
                })
                .await
            }
            Backend::Postgres(p) => p.revoke_admin_token(id, audit).await,
        }
    }

    /// The name and role of the admin token with this digest.
    pub async fn admin_token(&self, digest: SecretDigest) -> Result<Option<TokenCaller>> {
        match self.backend() {
            Backend::Sqlite(s) => s.read(move |c| token_caller(c, digest)).await,
            Backend::Postgres(p) => p.admin_token(digest).await,
        }
    }
}
