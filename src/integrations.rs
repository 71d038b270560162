//! What can be done to an integration: create it, change it, rotate its credentials, give it a
//! client certificate for its receiver (or take it away), delete it, and authenticate a caller as
//! it. Shared by the admin API and the command line; every change is written to the audit log in the
//! same transaction.

use crate::client_cert::{ClientCertificate, Configured, ConfiguredCertificates, Summary};
use crate::config::ClientCertificateFiles;
use crate::credentials::{self, APP_KEY_PREFIX, SIGNING_SECRET_PREFIX, SecretDigest};
use crate::error::{Error, Result};
use crate::model::{Actor, CallbackUrl, Domain, Integration, IntegrationStatus, Name, Timestamp};
use crate::store::Store;
use crate::store::audit::Audit;
use crate::store::client_certs::{Lookup, Removed, StoredClientCert};
use crate::store::integrations::{Changes, NewIntegration};

/// A new integration with the credentials that are shown exactly once.
pub struct Created {
    pub integration: Integration,
    pub app_key: String,
    pub signing_secret: String,
}

pub async fn create(
    store: &Store,
    actor: &Actor,
    name: Name,
    domains: Vec<Domain>,
    callback_url: Option<CallbackUrl>,
) -> Result<Created> {
    let app_id = uuid::Uuid::new_v4().to_string();
    let app_key = credentials::random_token(APP_KEY_PREFIX);
    let signing_secret = credentials::random_token(SIGNING_SECRET_PREFIX);
    let digest = SecretDigest::of(&app_key);
    let audit = Audit::new(actor, "integration.create")
        .target(&app_id)
        .detail(name.as_str());
    let new = NewIntegration {
        app_id,
        name,
        app_key_digest: digest,
        signing_secret: signing_secret.clone(),
        domains,
        callback_url,
    };
    let integration = store
        .create_integration(new, audit)
        .await?
        .ok_or(Error::NotFound("integration"))?;
    Ok(Created {
        integration,
        app_key,
        signing_secret,
    })
}

pub async fn list(store: &Store) -> Result<Vec<Integration>> {
    Ok(store.integrations().await?)
}

pub async fn get(store: &Store, app_id: &str) -> Result<Integration> {
    store
        .integration(app_id)
        .await?
        .ok_or(Error::NotFound("integration"))
}

pub async fn update(
    store: &Store,
    actor: &Actor,
    app_id: &str,
    changes: Changes,
) -> Result<Integration> {
    let mut what = Vec::new();
    if changes.name.is_some() {
        what.push("name".to_string());
    }
    if let Some(status) = changes.status {
        what.push(format!("status={}", status.as_str()));
    }
    if changes.domains.is_some() {
        what.push("domains".to_string());
    }
    if let Some(url) = &changes.callback_url {
        what.push(format!(
            "callbackUrl={}",
            url.as_ref().map_or("null", CallbackUrl::as_str)
        ));
    }
    if let Some(on) = changes.webhook_delivery_enabled {
        what.push(format!("webhookDeliveryEnabled={on}"));
    }
    let audit = (!what.is_empty()).then(|| {
        Audit::new(actor, "integration.update")
            .target(app_id)
            .detail(what.join(", "))
    });
    store
        .update_integration(app_id, changes, audit)
        .await?
        .ok_or(Error::NotFound("integration"))
}

/// Replaces the App Key; the old one stops working with this commit. Returns the new key, once.
pub async fn regenerate_app_key(store: &Store, actor: &Actor, app_id: &str) -> Result<String> {
    let key = credentials::random_token(APP_KEY_PREFIX);
    let digest = SecretDigest::of(&key);
    let audit = Audit::new(actor, "integration.app_key.regenerate").target(app_id);
    let done = store.set_app_key(app_id, digest, audit).await?;
    if done {
        Ok(key)
    } else {
        Err(Error::NotFound("integration"))
    }
}

/// The signing secret, on purpose: revealing it is audited.
pub async fn reveal_signing_secret(store: &Store, actor: &Actor, app_id: &str) -> Result<String> {
    let audit = Audit::new(actor, "integration.signing_secret.reveal").target(app_id);
    store
        .reveal_signing_secret(app_id, audit)
        .await?
        .ok_or(Error::NotFound("integration"))
}

/// Replaces the signing secret; deliveries attempted after this commit are signed with the new one.
pub async fn rotate_signing_secret(store: &Store, actor: &Actor, app_id: &str) -> Result<String> {
    let secret = credentials::random_token(SIGNING_SECRET_PREFIX);
    let audit = Audit::new(actor, "integration.signing_secret.rotate").target(app_id);
    let done = store
        .set_signing_secret(app_id, secret.clone(), audit)
        .await?;
    if done {
        Ok(secret)
    } else {
        Err(Error::NotFound("integration"))
    }
}

/// Deletes the integration: its credentials stop working at once; its events and history are kept.
pub async fn delete(store: &Store, actor: &Actor, app_id: &str) -> Result<()> {
    let audit = Audit::new(actor, "integration.delete").target(app_id);
    let done = store.delete_integration(app_id, audit).await?;
    if done {
        Ok(())
    } else {
        Err(Error::NotFound("integration"))
    }
}

/// Why a public API caller was turned away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denied {
    /// Unknown App ID, wrong or superseded App Key, or a deleted integration.
    BadCredentials,
    Disabled,
}

/// Authenticates `X-APP-ID` / `X-APP-KEY`. Returns the integration's row id.
pub async fn authenticate(
    store: &Store,
    app_id: &str,
    app_key: &str,
) -> Result<std::result::Result<i64, Denied>> {
    let presented = SecretDigest::of(app_key);
    let creds = store.credentials(app_id).await?;
    Ok(match creds {
        None => Err(Denied::BadCredentials),
        Some(c) if c.deleted => Err(Denied::BadCredentials),
        Some(c) if !c.app_key_digest.is_some_and(|d| d.matches(&presented)) => {
            Err(Denied::BadCredentials)
        }
        Some(c) if c.status == IntegrationStatus::Disabled => Err(Denied::Disabled),
        Some(c) => Ok(c.id),
    })
}

/// Where an integration's client certificate comes from.
pub enum CertificateSource {
    /// Uploaded through the admin API, at this time.
    Upload { set_at: Timestamp },
    /// Named in `webhooks.client_certificates`; read from this file at start.
    Config { cert_file: std::path::PathBuf },
}

/// What may be shown of an integration's client certificate.
pub struct CertificateView {
    pub summary: Summary,
    pub source: CertificateSource,
}

/// The error for a change the config file owns.
fn configured_here(configured: &ConfiguredCertificates, app_id: &str) -> Result<()> {
    match configured.get(app_id) {
        Some(c) => Err(Error::Conflict(format!(
            "this integration's client certificate is named in the config file \
             (webhooks.client_certificates, {}): change it there and restart",
            c.cert_file.display()
        ))),
        None => Ok(()),
    }
}

/// Sets (or replaces) an integration's client certificate, checked before (`ClientCertificate::load`
/// and `check_valid_at`): the next attempt presents it, on a new connection. Audited with the
/// certificate's subject, issuer, expiry and fingerprint; never the key.
pub async fn set_client_certificate(
    store: &Store,
    configured: &ConfiguredCertificates,
    actor: &Actor,
    app_id: &str,
    certificate: ClientCertificate,
) -> Result<CertificateView> {
    configured_here(configured, app_id)?;
    let s = &certificate.summary;
    let audit = Audit::new(actor, "integration.client_certificate.set")
        .target(app_id)
        .detail(format!(
            "subject={}, issuer={}, notAfter={}, sha256={}",
            s.subject,
            s.issuer,
            s.not_after.to_rfc3339(),
            s.fingerprint
        ));
    let stored = StoredClientCert {
        cert_pem: certificate.cert_pem.clone(),
        key_pem: certificate.key_pem.clone(),
    };
    let set = store
        .set_client_certificate(app_id, stored, s.fingerprint.to_string(), audit)
        .await?;
    if !set {
        return Err(Error::NotFound("integration"));
    }
    Ok(CertificateView {
        summary: certificate.summary,
        source: CertificateSource::Upload {
            set_at: Timestamp::now(),
        },
    })
}

/// Removes an integration's uploaded client certificate: the next attempt presents none.
pub async fn remove_client_certificate(
    store: &Store,
    configured: &ConfiguredCertificates,
    actor: &Actor,
    app_id: &str,
) -> Result<()> {
    configured_here(configured, app_id)?;
    let audit = Audit::new(actor, "integration.client_certificate.remove").target(app_id);
    match store.remove_client_certificate(app_id, audit).await? {
        Removed::Removed => Ok(()),
        Removed::NoIntegration => Err(Error::NotFound("integration")),
        Removed::NoCertificate => Err(Error::NotFound("client certificate")),
    }
}

/// The integration's client certificate, from the config file or uploaded.
pub async fn client_certificate(
    store: &Store,
    configured: &ConfiguredCertificates,
    app_id: &str,
) -> Result<CertificateView> {
    let lookup = store.client_certificate(app_id).await?;
    if let Lookup::NoIntegration = lookup {
        return Err(Error::NotFound("integration"));
    }
    if let Some(c) = configured.get(app_id) {
        return Ok(CertificateView {
            summary: c.certificate.summary.clone(),
            source: CertificateSource::Config {
                cert_file: c.cert_file.clone(),
            },
        });
    }
    match lookup {
        Lookup::Found { cert_pem, set_at } => Ok(CertificateView {
            // Checked when it was stored, so it reads; should it not, it is reported, not hidden.
            summary: Summary::of_pem(&cert_pem)
                .map_err(|e| Error::Conflict(format!("the stored client certificate: {e}")))?,
            source: CertificateSource::Upload { set_at },
        }),
        _ => Err(Error::NotFound("client certificate")),
    }
}

/// Reads the certificates of `webhooks.client_certificates` at start. Every failure names the
/// setting and the file or App ID: an unreadable or invalid file, a key that is not the
/// certificate's, an expired certificate, an App ID no live integration has.
pub async fn load_configured_certificates(
    store: &Store,
    entries: &[ClientCertificateFiles],
) -> std::result::Result<ConfiguredCertificates, String> {
    let mut out = ConfiguredCertificates::default();
    for (i, entry) in entries.iter().enumerate() {
        let key = format!("webhooks.client_certificates[{i}]");
        let certificate = crate::client_cert::read_files(
            &key,
            &entry.cert_file,
            &entry.key_file,
            Timestamp::now(),
        )?;
        let integration = store
            .live_integration(&entry.app_id)
            .await
            .map_err(|e| format!("{key}.app_id: {e}"))?
            .ok_or_else(|| {
                format!(
                    "{key}.app_id: no integration has the App ID {:?} (it was deleted, or this is \
                     another server's): remove the entry or correct it",
                    entry.app_id
                )
            })?;
        tracing::info!(
            app_id = %entry.app_id,
            certificate = %certificate.summary.describe(),
            file = %entry.cert_file.display(),
            "client certificate for callbacks read"
        );
        out.0.insert(
            entry.app_id.clone(),
            Configured {
                integration,
                certificate: std::sync::Arc::new(certificate),
                cert_file: entry.cert_file.clone(),
            },
        );
    }
    Ok(out)
}
