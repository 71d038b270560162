//! PostgreSQL: the operations of `store::admin` (admin users, sessions, tokens). Sessions and tokens
//! are rows, so a login on one node is valid on every node.
//!
//! The changes that must leave an enabled owner (`change_admin`, `delete_admin`) and the creation of
//! the first admin take `admin_users` in SHARE ROW EXCLUSIVE mode first: it conflicts with itself and
//! with every write to the table, not with reads nor with the foreign-key checks of new sessions, so
//! two nodes cannot each see "another owner remains" and both demote one, nor both create a first
//! admin. (SQLite's single writer orders them by itself.)

use deadpool_postgres::Transaction;

use super::Postgres;
use super::deliveries::word;
use crate::credentials::SecretDigest;
use crate::model::{Role, Timestamp};
use crate::store::Result;
use crate::store::admin::{
    AdminUser, NewAdmin, SessionInfo, SessionStart, SessionUser, TokenCaller, TokenInfo,
    UserChange, UserChanges, is_enabled_owner,
};
use crate::store::audit::Audit;

/// The lock of the module's paragraph.
const LOCK_USERS: &str = "LOCK TABLE admin_users IN SHARE ROW EXCLUSIVE MODE";

/// The id an owner sees for a session (see [`SessionInfo`]): the first 8 bytes of the digest in hex.
const SESSION_ID: &str = "encode(substring(s.token_digest FROM 1 FOR 8), 'hex')";

/// Creates a user in `tx`; `false` when the name is taken.
pub(crate) async fn create_user(
    tx: &Transaction<'_>,
    new: &NewAdmin,
    now: Timestamp,
) -> Result<bool> {
    let stmt = tx
        .prepare_cached(
            "INSERT INTO admin_users (username, password_hash, created_at, password_changed_at, role, \
             must_change_password) VALUES ($1, $2, $3, $3, $4, $5) ON CONFLICT (username) DO NOTHING",
        )
        .await?;
    let n = tx
        .execute(
            &stmt,
            &[
                &new.username.as_str(),
                &new.password_hash,
                &now.millis(),
                &new.role.as_str(),
                &new.must_change_password,
            ],
        )
        .await?;
    Ok(n == 1)
}

async fn user_count(tx: &Transaction<'_>) -> Result<i64> {
    Ok(tx
        .query_one("SELECT count(*) FROM admin_users", &[])
        .await?
        .get(0))
}

async fn user_id(tx: &Transaction<'_>, username: &str) -> Result<Option<i64>> {
    let stmt = tx
        .prepare_cached("SELECT id FROM admin_users WHERE username = $1")
        .await?;
    Ok(tx.query_opt(&stmt, &[&username]).await?.map(|r| r.get(0)))
}

/// The role and disabled flag of a user.
async fn standing(tx: &Transaction<'_>, username: &str) -> Result<Option<(Role, bool)>> {
    match tx
        .query_opt(
            "SELECT role, disabled_at IS NOT NULL FROM admin_users WHERE username = $1",
            &[&username],
        )
        .await?
    {
        Some(r) => Ok(Some((word(r.get::<_, &str>(0), Role::parse)?, r.get(1)))),
        None => Ok(None),
    }
}

/// Enabled owners other than `username`.
async fn other_owners(tx: &Transaction<'_>, username: &str) -> Result<i64> {
    Ok(tx
        .query_one(
            "SELECT count(*) FROM admin_users WHERE role = $1 AND disabled_at IS NULL \
             AND username <> $2",
            &[&Role::Owner.as_str(), &username],
        )
        .await?
        .get(0))
}

impl Postgres {
    /// See `Store::admin_count`.
    pub(crate) async fn admin_count(&self) -> Result<i64> {
        let client = self.client().await?;
        Ok(client
            .query_one("SELECT count(*) FROM admin_users", &[])
            .await?
            .get(0))
    }

    /// See `Store::create_first_admin`.
    pub(crate) async fn create_first_admin(&self, new: NewAdmin, audit: Audit) -> Result<bool> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        tx.batch_execute(LOCK_USERS).await?;
        let now = Timestamp::now();
        if user_count(&tx).await? > 0 {
            return Ok(false);
        }
        let created = create_user(&tx, &new, now).await?;
        super::audit::write_if(&tx, &audit, created, now).await?;
        tx.commit().await?;
        Ok(created)
    }

    /// See `Store::create_admin`.
    pub(crate) async fn create_admin(&self, new: NewAdmin, audit: Audit) -> Result<bool> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let now = Timestamp::now();
        let created = create_user(&tx, &new, now).await?;
        super::audit::write_if(&tx, &audit, created, now).await?;
        tx.commit().await?;
        Ok(created)
    }

    /// See `Store::admin_users`.
    pub(crate) async fn admin_users(&self) -> Result<Vec<AdminUser>> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT username, role, disabled_at, must_change_password, created_at, \
                 password_changed_at, \
                 (SELECT count(*) FROM admin_sessions s WHERE s.user_id = u.id AND s.expires_at > $1) \
                 FROM admin_users u ORDER BY username",
                &[&Timestamp::now().millis()],
            )
            .await?;
        rows.iter()
            .map(|r| {
                Ok(AdminUser {
                    username: r.get(0),
                    role: word(r.get::<_, &str>(1), Role::parse)?,
                    disabled_at: r.get::<_, Option<i64>>(2).map(Timestamp),
                    must_change_password: r.get(3),
                    created_at: Timestamp(r.get(4)),
                    password_changed_at: Timestamp(r.get(5)),
                    sessions: r.get(6),
                })
            })
            .collect()
    }

    /// See `Store::set_admin_password`.
    pub(crate) async fn set_admin_password(
        &self,
        username: &str,
        password_hash: String,
        must_change: bool,
        audit: Audit,
    ) -> Result<bool> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let now = Timestamp::now();
        let Some(id) = user_id(&tx, username).await? else {
            return Ok(false);
        };
        tx.execute(
            "UPDATE admin_users SET password_hash = $2, password_changed_at = $3, \
             must_change_password = $4 WHERE id = $1",
            &[&id, &password_hash, &now.millis(), &must_change],
        )
        .await?;
        tx.execute("DELETE FROM admin_sessions WHERE user_id = $1", &[&id])
            .await?;
        super::audit::write(&tx, &audit, now).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// See `Store::change_admin`.
    pub(crate) async fn change_admin(
        &self,
        username: &str,
        changes: UserChanges,
        audit: Audit,
    ) -> Result<UserChange> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        tx.batch_execute(LOCK_USERS).await?;
        let now = Timestamp::now();
        let Some((role, disabled)) = standing(&tx, username).await? else {
            return Ok(UserChange::NoSuchUser);
        };
        let role = changes.role.unwrap_or(role);
        let disabled = changes.disabled.unwrap_or(disabled);
        if !is_enabled_owner(role, disabled) && other_owners(&tx, username).await? == 0 {
            return Ok(UserChange::LastOwner);
        }
        tx.execute(
            "UPDATE admin_users SET role = $2, \
             disabled_at = CASE WHEN $3 THEN coalesce(disabled_at, $4) ELSE NULL END \
             WHERE username = $1",
            &[&username, &role.as_str(), &disabled, &now.millis()],
        )
        .await?;
        if disabled {
            tx.execute(
                "DELETE FROM admin_sessions \
                 WHERE user_id = (SELECT id FROM admin_users WHERE username = $1)",
                &[&username],
            )
            .await?;
        }
        super::audit::write(&tx, &audit, now).await?;
        tx.commit().await?;
        Ok(UserChange::Done)
    }

    /// See `Store::delete_admin`.
    pub(crate) async fn delete_admin(&self, username: &str, audit: Audit) -> Result<UserChange> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        tx.batch_execute(LOCK_USERS).await?;
        if standing(&tx, username).await?.is_none() {
            return Ok(UserChange::NoSuchUser);
        }
        if other_owners(&tx, username).await? == 0 {
            return Ok(UserChange::LastOwner);
        }
        // Its sessions go with it (ON DELETE CASCADE).
        tx.execute("DELETE FROM admin_users WHERE username = $1", &[&username])
            .await?;
        super::audit::write(&tx, &audit, Timestamp::now()).await?;
        tx.commit().await?;
        Ok(UserChange::Done)
    }

    /// See `Store::admin_login_facts`.
    pub(crate) async fn admin_login_facts(&self, username: &str) -> Result<Option<(i64, String)>> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(
                "SELECT id, password_hash FROM admin_users \
                 WHERE username = $1 AND disabled_at IS NULL",
            )
            .await?;
        Ok(client
            .query_opt(&stmt, &[&username])
            .await?
            .map(|r| (r.get(0), r.get(1))))
    }

    /// See `Store::start_session`.
    pub(crate) async fn start_session(
        &self,
        digest: SecretDigest,
        user_id: i64,
        ttl_secs: u64,
        start: SessionStart,
    ) -> Result<()> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let now = Timestamp::now();
        let expires = now.plus_secs(ttl_secs);
        // Expired sessions are swept whenever a new one starts, which bounds the table without a timer.
        let sweep = tx
            .prepare_cached("DELETE FROM admin_sessions WHERE expires_at <= $1")
            .await?;
        tx.execute(&sweep, &[&now.millis()]).await?;
        let insert = tx
            .prepare_cached(
                "INSERT INTO admin_sessions (token_digest, user_id, created_at, expires_at, client, \
                 user_agent) VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .await?;
        tx.execute(
            &insert,
            &[
                &&digest.0[..],
                &user_id,
                &now.millis(),
                &expires.millis(),
                &start.from,
                &start.user_agent,
            ],
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// See `Store::end_session`.
    pub(crate) async fn end_session(&self, digest: SecretDigest) -> Result<()> {
        let client = self.client().await?;
        client
            .execute(
                "DELETE FROM admin_sessions WHERE token_digest = $1",
                &[&&digest.0[..]],
            )
            .await?;
        Ok(())
    }

    /// See `Store::session_user`.
    pub(crate) async fn session_user(&self, digest: SecretDigest) -> Result<Option<SessionUser>> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(
                "SELECT u.username, u.role, u.must_change_password FROM admin_sessions s \
                 JOIN admin_users u ON u.id = s.user_id \
                 WHERE s.token_digest = $1 AND s.expires_at > $2 AND u.disabled_at IS NULL",
            )
            .await?;
        match client
            .query_opt(&stmt, &[&&digest.0[..], &Timestamp::now().millis()])
            .await?
        {
            Some(r) => Ok(Some(SessionUser {
                username: r.get(0),
                role: word(r.get::<_, &str>(1), Role::parse)?,
                must_change_password: r.get(2),
            })),
            None => Ok(None),
        }
    }

    /// See `Store::admin_sessions`.
    pub(crate) async fn admin_sessions(&self, username: &str) -> Result<Option<Vec<SessionInfo>>> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let Some(user) = user_id(&tx, username).await? else {
            return Ok(None);
        };
        let rows = tx
            .query(
                &format!(
                    "SELECT {SESSION_ID}, s.created_at, s.expires_at, s.client, s.user_agent \
                     FROM admin_sessions s WHERE s.user_id = $1 AND s.expires_at > $2 \
                     ORDER BY s.created_at"
                ),
                &[&user, &Timestamp::now().millis()],
            )
            .await?;
        Ok(Some(
            rows.iter()
                .map(|r| SessionInfo {
                    id: r.get(0),
                    created_at: Timestamp(r.get(1)),
                    expires_at: Timestamp(r.get(2)),
                    from: r.get(3),
                    user_agent: r.get(4),
                })
                .collect(),
        ))
    }

    /// See `Store::end_admin_sessions`.
    pub(crate) async fn end_admin_sessions(
        &self,
        username: &str,
        id: Option<String>,
        audit: Audit,
    ) -> Result<Option<usize>> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let Some(user) = user_id(&tx, username).await? else {
            return Ok(None);
        };
        let ended = match id {
            Some(id) => {
                tx.execute(
                    &format!(
                        "DELETE FROM admin_sessions AS s WHERE s.user_id = $1 AND {SESSION_ID} = $2"
                    ),
                    &[&user, &id],
                )
                .await?
            }
            None => {
                tx.execute("DELETE FROM admin_sessions WHERE user_id = $1", &[&user])
                    .await?
            }
        };
        super::audit::write_if(&tx, &audit, ended > 0, Timestamp::now()).await?;
        tx.commit().await?;
        Ok(Some(ended as usize))
    }

    /// See `Store::create_admin_token`.
    pub(crate) async fn create_admin_token(
        &self,
        digest: SecretDigest,
        name: String,
        role: Role,
        audit: Audit,
    ) -> Result<()> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let now = Timestamp::now();
        tx.execute(
            "INSERT INTO admin_tokens (token_digest, name, created_at, role) VALUES ($1, $2, $3, $4)",
            &[&&digest.0[..], &name, &now.millis(), &role.as_str()],
        )
        .await?;
        super::audit::write(&tx, &audit, now).await?;
        tx.commit().await?;
        Ok(())
    }

    /// See `Store::admin_tokens`.
    pub(crate) async fn admin_tokens(&self, limit: u32) -> Result<Vec<TokenInfo>> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT id, name, role, created_at FROM admin_tokens ORDER BY id LIMIT $1",
                &[&i64::from(limit)],
            )
            .await?;
        rows.iter()
            .map(|r| {
                Ok(TokenInfo {
                    id: r.get(0),
                    name: r.get(1),
                    role: word(r.get::<_, &str>(2), Role::parse)?,
                    created_at: Timestamp(r.get(3)),
                })
            })
            .collect()
    }

    /// See `Store::revoke_admin_token`.
    pub(crate) async fn revoke_admin_token(&self, id: i64, audit: Audit) -> Result<bool> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let Some(row) = tx
            .query_opt(
                "DELETE FROM admin_tokens WHERE id = $1 RETURNING name",
                &[&id],
            )
            .await?
        else {
            return Ok(false);
        };
        let name: String = row.get(0);
        super::audit::write(&tx, &audit.target(name), Timestamp::now()).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// See `Store::admin_token`.
    pub(crate) async fn admin_token(&self, digest: SecretDigest) -> Result<Option<TokenCaller>> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached("SELECT name, role FROM admin_tokens WHERE token_digest = $1")
            .await?;
        match client.query_opt(&stmt, &[&&digest.0[..]]).await? {
            Some(r) => Ok(Some(TokenCaller {
                name: r.get(0),
                role: word(r.get::<_, &str>(1), Role::parse)?,
            })),
            None => Ok(None),
        }
    }
}
