//! What can be done to an integration: create it, change it, rotate its credentials, delete it, and
//! authenticate a caller as it. Shared by the admin API and the command line; every change is written
//! to the audit log in the same transaction.

use crate::credentials::{self, APP_KEY_PREFIX, SIGNING_SECRET_PREFIX, SecretDigest};
use crate::error::{Error, Result};
use crate::model::{Actor, CallbackUrl, Domain, Integration, IntegrationStatus, Name, Timestamp};
use crate::store::integrations::{self as rows, Changes, NewIntegration};
use crate::store::{Store, audit, deliveries};

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
    let actor = actor.clone();
    let (id, secret) = (app_id.clone(), signing_secret.clone());
    let integration = store
        .write(move |c| -> Result<_> {
            let now = Timestamp::now();
            rows::insert(
                c,
                &NewIntegration {
                    app_id: &id,
                    name: &name,
                    app_key_digest: digest,
                    signing_secret: &secret,
                    domains: &domains,
                    callback_url: callback_url.as_ref(),
                    created_at: now,
                },
            )?;
            audit::record(
                c,
                now,
                &actor,
                "integration.create",
                Some(&id),
                Some(name.as_str()),
            )?;
            Ok(rows::get(c, &id)?)
        })
        .await?
        .ok_or(Error::NotFound("integration"))?;
    Ok(Created {
        integration,
        app_key,
        signing_secret,
    })
}

pub async fn list(store: &Store) -> Result<Vec<Integration>> {
    Ok(store.read(rows::list).await?)
}

pub async fn get(store: &Store, app_id: &str) -> Result<Integration> {
    let id = app_id.to_string();
    store
        .read(move |c| rows::get(c, &id))
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
    let (actor, id) = (actor.clone(), app_id.to_string());
    store
        .write(move |c| -> Result<_> {
            let updated = rows::update(c, &id, &changes)?;
            // Pausing holds its deliveries, resuming (or enabling, or setting a callback URL)
            // releases them: the first batch in the same transaction as the change itself, the rest
            // (if any) by the settling task, one batch per write (`dispatch::settle`).
            if let Some(row) = rows::live_id(c, &id)? {
                deliveries::settle_batch(c, row, Timestamp::now(), deliveries::BATCH)?;
            }
            if updated.is_some() && !what.is_empty() {
                audit::record(
                    c,
                    Timestamp::now(),
                    &actor,
                    "integration.update",
                    Some(&id),
                    Some(&what.join(", ")),
                )?;
            }
            Ok(updated)
        })
        .await?
        .ok_or(Error::NotFound("integration"))
}

/// Replaces the App Key; the old one stops working with this commit. Returns the new key, once.
pub async fn regenerate_app_key(store: &Store, actor: &Actor, app_id: &str) -> Result<String> {
    let key = credentials::random_token(APP_KEY_PREFIX);
    let digest = SecretDigest::of(&key);
    let (actor, id) = (actor.clone(), app_id.to_string());
    let done = store
        .write(move |c| -> Result<_> {
            let done = rows::set_app_key_digest(c, &id, digest)?;
            if done {
                audit::record(
                    c,
                    Timestamp::now(),
                    &actor,
                    "integration.app_key.regenerate",
                    Some(&id),
                    None,
                )?;
            }
            Ok(done)
        })
        .await?;
    if done {
        Ok(key)
    } else {
        Err(Error::NotFound("integration"))
    }
}

/// The signing secret, on purpose: revealing it is audited.
pub async fn reveal_signing_secret(store: &Store, actor: &Actor, app_id: &str) -> Result<String> {
    let (actor, id) = (actor.clone(), app_id.to_string());
    store
        .write(move |c| -> Result<_> {
            let secret = rows::signing_secret(c, &id)?;
            if secret.is_some() {
                audit::record(
                    c,
                    Timestamp::now(),
                    &actor,
                    "integration.signing_secret.reveal",
                    Some(&id),
                    None,
                )?;
            }
            Ok(secret)
        })
        .await?
        .ok_or(Error::NotFound("integration"))
}

/// Replaces the signing secret; deliveries attempted after this commit are signed with the new one.
pub async fn rotate_signing_secret(store: &Store, actor: &Actor, app_id: &str) -> Result<String> {
    let secret = credentials::random_token(SIGNING_SECRET_PREFIX);
    let (actor, id, s) = (actor.clone(), app_id.to_string(), secret.clone());
    let done = store
        .write(move |c| -> Result<_> {
            let done = rows::set_signing_secret(c, &id, &s)?;
            if done {
                audit::record(
                    c,
                    Timestamp::now(),
                    &actor,
                    "integration.signing_secret.rotate",
                    Some(&id),
                    None,
                )?;
            }
            Ok(done)
        })
        .await?;
    if done {
        Ok(secret)
    } else {
        Err(Error::NotFound("integration"))
    }
}

/// Deletes the integration: its credentials stop working at once; its events and history are kept.
pub async fn delete(store: &Store, actor: &Actor, app_id: &str) -> Result<()> {
    let (actor, id) = (actor.clone(), app_id.to_string());
    let done = store
        .write(move |c| -> Result<_> {
            let now = Timestamp::now();
            let done = rows::delete(c, &id, now)?;
            if done {
                // Unfinished deliveries are cancelled (the first batch here, the rest by the
                // settling task); history and events stay.
                if let Some(row) = rows::any_id(c, &id)? {
                    deliveries::settle_batch(c, row, now, deliveries::BATCH)?;
                }
                audit::record(c, now, &actor, "integration.delete", Some(&id), None)?;
            }
            Ok(done)
        })
        .await?;
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
