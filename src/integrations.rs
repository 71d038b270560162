//! What can be done to an integration: create it, change it, rotate its credentials, delete it, and
//! authenticate a caller as it. Shared by the admin API and the command line; every change is written
//! to the audit log in the same transaction.

use crate::credentials::{self, APP_KEY_PREFIX, SIGNING_SECRET_PREFIX, SecretDigest};
use crate::error::{Error, Result};
use crate::model::{Actor, CallbackUrl, Domain, Integration, IntegrationStatus, Name};
use crate::store::Store;
use crate::store::audit::Audit;
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
