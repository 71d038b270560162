//! Integrations' client certificates for callback TLS (`integration_client_certs`, schema 5): the
//! PEM chain and key as uploaded, kept like the signing secret (they must be presented), and the
//! changes to them, each audited in its own transaction. The key is read only by the dispatcher's
//! claim; nothing here returns it to the admin API.

use std::sync::Arc;

use rusqlite::{Connection, OptionalExtension, params};

use super::audit::Audit;
use super::{Backend, Result, Store};
use crate::model::Timestamp;

/// A stored certificate as the dispatcher needs it. Shared by every delivery of one claim.
#[derive(Clone, PartialEq, Eq)]
pub struct StoredClientCert {
    pub cert_pem: String,
    pub key_pem: String,
}

impl std::fmt::Debug for StoredClientCert {
    /// Never the key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StoredClientCert { .. }")
    }
}

/// What the admin API may know of an integration's stored certificate.
pub enum Lookup {
    /// No live integration has this App ID.
    NoIntegration,
    NoCertificate,
    Found {
        cert_pem: String,
        set_at: Timestamp,
    },
}

/// What a removal found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Removed {
    NoIntegration,
    NoCertificate,
    Removed,
}

/// The certificate a new connection of `integration` presents; read with every claim, so a change
/// applies from the next attempt on.
pub(super) fn for_integration(
    conn: &Connection,
    integration: i64,
) -> Result<Option<Arc<StoredClientCert>>> {
    Ok(conn
        .prepare_cached(
            "SELECT cert_pem, key_pem FROM integration_client_certs WHERE integration_id = ?1",
        )?
        .query_row([integration], |r| {
            Ok(Arc::new(StoredClientCert {
                cert_pem: r.get(0)?,
                key_pem: r.get(1)?,
            }))
        })
        .optional()?)
}

/// Deletes an integration's certificate with the integration: nothing presents it any more.
pub(super) fn delete_for(conn: &Connection, app_id: &str) -> Result<()> {
    conn.prepare_cached(
        "DELETE FROM integration_client_certs WHERE integration_id = \
         (SELECT id FROM integrations WHERE app_id = ?1)",
    )?
    .execute([app_id])?;
    Ok(())
}

fn set(
    conn: &Connection,
    app_id: &str,
    cert: &StoredClientCert,
    fingerprint: &str,
    audit: &Audit,
) -> Result<bool> {
    let Some(id) = super::integrations::live_id(conn, app_id)? else {
        return Ok(false);
    };
    let now = Timestamp::now();
    conn.prepare_cached(
        "INSERT INTO integration_client_certs (integration_id, cert_pem, key_pem, fingerprint, set_at) \
         VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (integration_id) DO UPDATE SET \
         cert_pem = excluded.cert_pem, key_pem = excluded.key_pem, \
         fingerprint = excluded.fingerprint, set_at = excluded.set_at",
    )?
    .execute(params![
        id,
        cert.cert_pem,
        cert.key_pem,
        fingerprint,
        now.millis()
    ])?;
    audit.write(conn, now)?;
    Ok(true)
}

/// Removes the certificate; the audit entry is given the removed one's fingerprint.
fn remove(conn: &Connection, app_id: &str, audit: Audit) -> Result<Removed> {
    let Some(id) = super::integrations::live_id(conn, app_id)? else {
        return Ok(Removed::NoIntegration);
    };
    let fingerprint: Option<String> = conn
        .prepare_cached(
            "DELETE FROM integration_client_certs WHERE integration_id = ?1 RETURNING fingerprint",
        )?
        .query_row([id], |r| r.get(0))
        .optional()?;
    let Some(fingerprint) = fingerprint else {
        return Ok(Removed::NoCertificate);
    };
    audit
        .detail(format!("sha256={fingerprint}"))
        .write(conn, Timestamp::now())?;
    Ok(Removed::Removed)
}

fn lookup(conn: &Connection, app_id: &str) -> Result<Lookup> {
    let Some(id) = super::integrations::live_id(conn, app_id)? else {
        return Ok(Lookup::NoIntegration);
    };
    let found = conn
        .prepare_cached(
            "SELECT cert_pem, set_at FROM integration_client_certs WHERE integration_id = ?1",
        )?
        .query_row([id], |r| Ok((r.get(0)?, Timestamp(r.get(1)?))))
        .optional()?;
    Ok(match found {
        None => Lookup::NoCertificate,
        Some((cert_pem, set_at)) => Lookup::Found { cert_pem, set_at },
    })
}

impl Store {
    /// Sets (or replaces) the client certificate of a live integration, with its audit entry, in one
    /// transaction; false when there is no such integration.
    pub async fn set_client_certificate(
        &self,
        app_id: &str,
        cert: StoredClientCert,
        fingerprint: String,
        audit: Audit,
    ) -> Result<bool> {
        match self.backend() {
            Backend::Sqlite(s) => {
                let app_id = app_id.to_string();
                s.write(move |c| set(c, &app_id, &cert, &fingerprint, &audit))
                    .await
            }
            Backend::Postgres(p) => {
                p.set_client_certificate(app_id, cert, fingerprint, audit)
                    .await
            }
        }
    }

    /// Removes a live integration's client certificate, with its audit entry (which this names by
    /// fingerprint), in one transaction.
    pub async fn remove_client_certificate(&self, app_id: &str, audit: Audit) -> Result<Removed> {
        match self.backend() {
            Backend::Sqlite(s) => {
                let app_id = app_id.to_string();
                s.write(move |c| remove(c, &app_id, audit)).await
            }
            Backend::Postgres(p) => p.remove_client_certificate(app_id, audit).await,
        }
    }

    /// The stored certificate of a live integration (never its key).
    pub async fn client_certificate(&self, app_id: &str) -> Result<Lookup> {
        match self.backend() {
            Backend::Sqlite(s) => {
                let app_id = app_id.to_string();
                s.read(move |c| lookup(c, &app_id)).await
            }
            Backend::Postgres(p) => p.client_certificate(app_id).await,
        }
    }

    /// The row of the live integration `app_id`, for naming its certificate in the config file.
    pub async fn live_integration(&self, app_id: &str) -> Result<Option<i64>> {
        match self.backend() {
            Backend::Sqlite(s) => {
                let app_id = app_id.to_string();
                s.read(move |c| super::integrations::live_id(c, &app_id))
                    .await
            }
            Backend::Postgres(p) => p.live_integration(app_id).await,
        }
    }
}
