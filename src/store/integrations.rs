//! Integrations and their allowed domains. A deleted integration keeps its row (events and delivery
//! history point at it) with `deleted_at` set; every lookup here treats it as gone.

use rusqlite::{Connection, OptionalExtension, params};

use super::audit::Audit;
use super::{Backend, Result, Store, deliveries};
use crate::credentials::SecretDigest;
use crate::model::{CallbackUrl, Domain, Integration, IntegrationStatus, Name, Timestamp};

/// What a new integration is made of; the credentials are minted by the caller.
pub struct NewIntegration {
    pub app_id: String,
    pub name: Name,
    pub app_key_digest: SecretDigest,
    pub signing_secret: String,
    pub domains: Vec<Domain>,
    pub callback_url: Option<CallbackUrl>,
}

/// A partial update; `None` leaves a field as it is.
#[derive(Default)]
pub struct Changes {
    pub name: Option<Name>,
    pub status: Option<IntegrationStatus>,
    pub domains: Option<Vec<Domain>>,
    pub callback_url: Option<Option<CallbackUrl>>,
    pub webhook_delivery_enabled: Option<bool>,
}

/// What the public API needs to authenticate a caller.
#[derive(Clone)]
pub struct Credentials {
    pub id: i64,
    pub app_key_digest: Option<SecretDigest>,
    pub status: IntegrationStatus,
    pub deleted: bool,
}

fn insert(conn: &Connection, new: &NewIntegration, created_at: Timestamp) -> Result<i64> {
    conn.execute(
        "INSERT INTO integrations (app_id, name, app_key_digest, signing_secret, status, callback_url, \
         webhook_delivery_enabled, created_at) VALUES (?1, ?2, ?3, ?4, 'ENABLED', ?5, 1, ?6)",
        params![
            new.app_id,
            new.name.as_str(),
            &new.app_key_digest.0[..],
            new.signing_secret,
            new.callback_url.as_ref().map(CallbackUrl::as_str),
            created_at.millis()
        ],
    )?;
    let id = conn.last_insert_rowid();
    replace_domains(conn, id, &new.domains)?;
    Ok(id)
}

const COLUMNS: &str =
    "id, app_id, name, status, callback_url, webhook_delivery_enabled, created_at";

fn from_row(conn: &Connection, row: &rusqlite::Row<'_>) -> rusqlite::Result<Integration> {
    let id: i64 = row.get(0)?;
    let status: String = row.get(3)?;
    Ok(Integration {
        app_id: row.get(1)?,
        name: Name::parse(&row.get::<_, String>(2)?)
            .map_err(|e| rusqlite::Error::InvalidColumnName(format!("name: {e}")))?,
        status: IntegrationStatus::parse(&status).unwrap_or(IntegrationStatus::Disabled),
        domains: domains(conn, id)?,
        callback_url: row
            .get::<_, Option<String>>(4)?
            .map(CallbackUrl::from_stored),
        webhook_delivery_enabled: row.get(5)?,
        created_at: Timestamp(row.get(6)?),
    })
}

fn domains(conn: &Connection, id: i64) -> rusqlite::Result<Vec<Domain>> {
    let mut stmt = conn.prepare_cached(
        "SELECT domain FROM integration_domains WHERE integration_id = ?1 ORDER BY domain",
    )?;
    let rows = stmt.query_map([id], |r| r.get::<_, String>(0))?;
    // Stored values were parsed on the way in; a value that no longer parses is skipped, not fatal.
    Ok(rows
        .filter_map(|r| r.ok())
        .filter_map(|d| Domain::parse(&d).ok())
        .collect())
}

fn replace_domains(conn: &Connection, id: i64, domains: &[Domain]) -> Result<()> {
    conn.execute(
        "DELETE FROM integration_domains WHERE integration_id = ?1",
        [id],
    )?;
    let mut stmt = conn.prepare_cached(
        "INSERT OR IGNORE INTO integration_domains (integration_id, domain) VALUES (?1, ?2)",
    )?;
    for d in domains {
        stmt.execute(params![id, d.as_str()])?;
    }
    Ok(())
}

/// Live integrations, oldest first.
fn list(conn: &Connection) -> Result<Vec<Integration>> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM integrations WHERE deleted_at IS NULL ORDER BY created_at, id"
    ))?;
    let rows = stmt.query_map([], |r| from_row(conn, r))?;
    Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
}

fn get(conn: &Connection, app_id: &str) -> Result<Option<Integration>> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM integrations WHERE app_id = ?1 AND deleted_at IS NULL"
    ))?;
    Ok(stmt.query_row([app_id], |r| from_row(conn, r)).optional()?)
}

/// The authentication facts for `app_id`, including for a deleted integration (so the caller can tell
/// "deleted" from "never existed" in its logs; both answer 401).
pub(super) fn credentials(conn: &Connection, app_id: &str) -> Result<Option<Credentials>> {
    let mut stmt = conn.prepare_cached(
        "SELECT id, app_key_digest, status, deleted_at IS NOT NULL FROM integrations WHERE app_id = ?1",
    )?;
    Ok(stmt
        .query_row([app_id], |r| {
            let digest: Vec<u8> = r.get(1)?;
            let status: String = r.get(2)?;
            Ok(Credentials {
                id: r.get(0)?,
                app_key_digest: SecretDigest::from_slice(&digest),
                status: IntegrationStatus::parse(&status).unwrap_or(IntegrationStatus::Disabled),
                deleted: r.get(3)?,
            })
        })
        .optional()?)
}

/// Applies `changes` to a live integration; `None` when there is none with that App ID.
fn update(conn: &Connection, app_id: &str, changes: &Changes) -> Result<Option<Integration>> {
    let Some(id) = live_id(conn, app_id)? else {
        return Ok(None);
    };
    if let Some(name) = &changes.name {
        conn.execute(
            "UPDATE integrations SET name = ?2 WHERE id = ?1",
            params![id, name.as_str()],
        )?;
    }
    if let Some(status) = changes.status {
        conn.execute(
            "UPDATE integrations SET status = ?2 WHERE id = ?1",
            params![id, status.as_str()],
        )?;
    }
    if let Some(url) = &changes.callback_url {
        conn.execute(
            "UPDATE integrations SET callback_url = ?2 WHERE id = ?1",
            params![id, url.as_ref().map(CallbackUrl::as_str)],
        )?;
    }
    if let Some(enabled) = changes.webhook_delivery_enabled {
        conn.execute(
            "UPDATE integrations SET webhook_delivery_enabled = ?2 WHERE id = ?1",
            params![id, enabled],
        )?;
    }
    if let Some(domains) = &changes.domains {
        replace_domains(conn, id, domains)?;
    }
    get(conn, app_id)
}

fn set_app_key_digest(conn: &Connection, app_id: &str, digest: SecretDigest) -> Result<bool> {
    let n = conn.execute(
        "UPDATE integrations SET app_key_digest = ?2 WHERE app_id = ?1 AND deleted_at IS NULL",
        params![app_id, &digest.0[..]],
    )?;
    Ok(n == 1)
}

fn signing_secret(conn: &Connection, app_id: &str) -> Result<Option<String>> {
    Ok(conn
        .query_row(
            "SELECT signing_secret FROM integrations WHERE app_id = ?1 AND deleted_at IS NULL",
            [app_id],
            |r| r.get(0),
        )
        .optional()?)
}

fn set_signing_secret(conn: &Connection, app_id: &str, secret: &str) -> Result<bool> {
    let n = conn.execute(
        "UPDATE integrations SET signing_secret = ?2 WHERE app_id = ?1 AND deleted_at IS NULL",
        params![app_id, secret],
    )?;
    Ok(n == 1)
}

/// Marks the integration deleted. Its credentials stop working at once (its client certificate is
/// deleted); its row, events and history stay.
fn delete(conn: &Connection, app_id: &str, at: Timestamp) -> Result<bool> {
    let n = conn.execute(
        "UPDATE integrations SET deleted_at = ?2 WHERE app_id = ?1 AND deleted_at IS NULL",
        params![app_id, at.millis()],
    )?;
    if n == 1 {
        // Its client certificate's key has nothing left to authenticate.
        super::client_certs::delete_for(conn, app_id)?;
    }
    Ok(n == 1)
}

pub(super) fn live_id(conn: &Connection, app_id: &str) -> Result<Option<i64>> {
    Ok(conn
        .query_row(
            "SELECT id FROM integrations WHERE app_id = ?1 AND deleted_at IS NULL",
            [app_id],
            |r| r.get(0),
        )
        .optional()?)
}

/// What the SDK endpoints and verify need about a live integration: its row, whether enabled, its allowed
/// domains, its callback URL and delivery toggle.
pub struct Facts {
    pub id: i64,
    pub enabled: bool,
    pub domains: Vec<Domain>,
    pub callback_url: Option<String>,
    pub webhook_delivery_enabled: bool,
}

fn facts(conn: &Connection, app_id: &str) -> Result<Option<Facts>> {
    let row = conn
        .prepare_cached(
            "SELECT id, status, callback_url, webhook_delivery_enabled FROM integrations \
             WHERE app_id = ?1 AND deleted_at IS NULL",
        )?
        .query_row([app_id], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, Option<String>>(2)?,
                r.get::<_, bool>(3)?,
            ))
        })
        .optional()?;
    let Some((id, status, callback_url, webhook_delivery_enabled)) = row else {
        return Ok(None);
    };
    Ok(Some(Facts {
        id,
        enabled: status == "ENABLED",
        domains: domains(conn, id)?,
        callback_url,
        webhook_delivery_enabled,
    }))
}

/// Where an integration's webhooks go now: whether it was deleted, its callback URL and signing
/// secret, and whether its deliveries may be sent now ([`IntegrationStatus::sends_webhooks`]) or must
/// be held. `None` if there is no such integration.
pub struct WebhookTarget {
    pub deleted: bool,
    pub callback_url: Option<String>,
    pub signing_secret: String,
    pub sending: bool,
}

pub(super) fn webhook_target(conn: &Connection, id: i64) -> Result<Option<WebhookTarget>> {
    Ok(conn
        .prepare_cached(
            "SELECT deleted_at IS NOT NULL, callback_url, signing_secret, status, webhook_delivery_enabled \
             FROM integrations WHERE id = ?1",
        )?
        .query_row([id], |r| {
            let status: IntegrationStatus = r.get(3)?;
            Ok(WebhookTarget {
                deleted: r.get(0)?,
                callback_url: r.get(1)?,
                signing_secret: r.get(2)?,
                sending: status.sends_webhooks(r.get(4)?),
            })
        })
        .optional()?)
}

/// The allowed domains of every live, enabled integration (answers CORS preflights that do not name
/// their integration).
fn all_enabled_domains(conn: &Connection) -> Result<Vec<Domain>> {
    let mut stmt = conn.prepare_cached(
        "SELECT DISTINCT d.domain FROM integration_domains d JOIN integrations i ON i.id = d.integration_id \
         WHERE i.deleted_at IS NULL AND i.status = 'ENABLED'",
    )?;
    let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
    Ok(rows
        .filter_map(|r| r.ok())
        .filter_map(|d| Domain::parse(&d).ok())
        .collect())
}

/// The row id of an integration, deleted or not (its events outlive it).
pub(super) fn any_id(conn: &Connection, app_id: &str) -> Result<Option<i64>> {
    Ok(conn
        .query_row(
            "SELECT id FROM integrations WHERE app_id = ?1",
            [app_id],
            |r| r.get(0),
        )
        .optional()?)
}

/// Integrations as the services use them; each operation is one transaction, and a change's audit
/// entry is written in it when the change happened.
impl Store {
    pub async fn create_integration(
        &self,
        new: NewIntegration,
        audit: Audit,
    ) -> Result<Option<Integration>> {
        match self.backend() {
            Backend::Sqlite(s) => {
                s.write(move |c| {
                    let now = Timestamp::now();
                    insert(c, &new, now)?;
                    audit.write(c, now)?;
                    get(c, &new.app_id)
                })
                .await
            }
            Backend::Postgres(p) => p.create_integration(new, audit).await,
        }
    }

    pub async fn integrations(&self) -> Result<Vec<Integration>> {
        match self.backend() {
            Backend::Sqlite(s) => s.read(list).await,
            Backend::Postgres(p) => p.integrations().await,
        }
    }

    pub async fn integration(&self, app_id: &str) -> Result<Option<Integration>> {
        match self.backend() {
            Backend::Sqlite(s) => {
                let id = app_id.to_string();
                s.read(move |c| get(c, &id)).await
            }
            Backend::Postgres(p) => p.integration(app_id).await,
        }
    }

    /// Applies `changes` (audited when `audit` is given and the integration exists) and brings its
    /// deliveries in line: pausing holds them, resuming (or enabling, or setting a callback URL)
    /// releases them — the first batch in this transaction, the rest by the settling task
    /// (`dispatch::settle`), one batch per write.
    pub async fn update_integration(
        &self,
        app_id: &str,
        changes: Changes,
        audit: Option<Audit>,
    ) -> Result<Option<Integration>> {
        match self.backend() {
            Backend::Sqlite(s) => {
                let id = app_id.to_string();
                s.write(move |c| {
                    let updated = update(c, &id, &changes)?;
                    if let Some(row) = live_id(c, &id)? {
                        deliveries::settle_batch(c, row, Timestamp::now(), deliveries::BATCH)?;
                    }
                    if let (Some(_), Some(audit)) = (&updated, audit) {
                        audit.write(c, Timestamp::now())?;
                    }
                    Ok(updated)
                })
                .await
            }
            Backend::Postgres(p) => p.update_integration(app_id, changes, audit).await,
        }
    }

    /// Replaces the App Key's digest; `false` when there is no such live integration.
    pub async fn set_app_key(
        &self,
        app_id: &str,
        digest: SecretDigest,
        audit: Audit,
    ) -> Result<bool> {
        match self.backend() {
            Backend::Sqlite(s) => {
                let id = app_id.to_string();
                s.write(move |c| {
                    let done = set_app_key_digest(c, &id, digest)?;
                    audit.write_if(c, done, Timestamp::now())
                })
                .await
            }
            Backend::Postgres(p) => p.set_app_key(app_id, digest, audit).await,
        }
    }

    /// The signing secret, read and audited in one transaction.
    pub async fn reveal_signing_secret(
        &self,
        app_id: &str,
        audit: Audit,
    ) -> Result<Option<String>> {
        match self.backend() {
            Backend::Sqlite(s) => {
                let id = app_id.to_string();
                s.write(move |c| {
                    let secret = signing_secret(c, &id)?;
                    if secret.is_some() {
                        audit.write(c, Timestamp::now())?;
                    }
                    Ok(secret)
                })
                .await
            }
            Backend::Postgres(p) => p.reveal_signing_secret(app_id, audit).await,
        }
    }

    pub async fn set_signing_secret(
        &self,
        app_id: &str,
        secret: String,
        audit: Audit,
    ) -> Result<bool> {
        match self.backend() {
            Backend::Sqlite(s) => {
                let id = app_id.to_string();
                s.write(move |c| {
                    let done = set_signing_secret(c, &id, &secret)?;
                    audit.write_if(c, done, Timestamp::now())
                })
                .await
            }
            Backend::Postgres(p) => p.set_signing_secret(app_id, secret, audit).await,
        }
    }

    /// Marks the integration deleted and cancels its unfinished deliveries (the first batch here, the
    /// rest by the settling task); its events and history stay. `false` when there was none.
    pub async fn delete_integration(&self, app_id: &str, audit: Audit) -> Result<bool> {
        match self.backend() {
            Backend::Sqlite(s) => {
                let id = app_id.to_string();
                s.write(move |c| {
                    let now = Timestamp::now();
                    let done = delete(c, &id, now)?;
                    if done {
                        if let Some(row) = any_id(c, &id)? {
                            deliveries::settle_batch(c, row, now, deliveries::BATCH)?;
                        }
                        audit.write(c, now)?;
                    }
                    Ok(done)
                })
                .await
            }
            Backend::Postgres(p) => p.delete_integration(app_id, audit).await,
        }
    }

    /// What the SDK endpoints need about a live integration.
    pub async fn integration_facts(&self, app_id: &str) -> Result<Option<Facts>> {
        match self.backend() {
            Backend::Sqlite(s) => {
                let id = app_id.to_string();
                s.read(move |c| facts(c, &id)).await
            }
            Backend::Postgres(p) => p.integration_facts(app_id).await,
        }
    }

    /// The allowed domains of every live, enabled integration.
    pub async fn all_enabled_domains(&self) -> Result<Vec<Domain>> {
        match self.backend() {
            Backend::Sqlite(s) => s.read(all_enabled_domains).await,
            Backend::Postgres(p) => p.all_enabled_domains().await,
        }
    }

    /// The row id of an integration, deleted or not (its events outlive it).
    pub async fn integration_row(&self, app_id: &str) -> Result<Option<i64>> {
        match self.backend() {
            Backend::Sqlite(s) => {
                let id = app_id.to_string();
                s.read(move |c| any_id(c, &id)).await
            }
            Backend::Postgres(p) => p.integration_row(app_id).await,
        }
    }
}
