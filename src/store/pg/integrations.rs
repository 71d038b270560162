//! PostgreSQL: the operations of `store::integrations`.

use deadpool_postgres::GenericClient;

use super::Postgres;
use crate::credentials::SecretDigest;
use crate::model::IntegrationStatus;
use crate::store::Result;
use crate::store::integrations::{Credentials, WebhookTarget};

impl Postgres {
    /// See `store::integrations::credentials`.
    pub(crate) async fn credentials(&self, app_id: &str) -> Result<Option<Credentials>> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(
                "SELECT id, app_key_digest, status, deleted_at IS NOT NULL \
                 FROM integrations WHERE app_id = $1",
            )
            .await?;
        Ok(client.query_opt(&stmt, &[&app_id]).await?.map(|r| {
            let digest: Vec<u8> = r.get(1);
            let status: &str = r.get(2);
            Credentials {
                id: r.get(0),
                app_key_digest: SecretDigest::from_slice(&digest),
                status: IntegrationStatus::parse(status).unwrap_or(IntegrationStatus::Disabled),
                deleted: r.get(3),
            }
        }))
    }
}

/// The id of the integration with `app_id`, deleted ones included (see `store::integrations::any_id`).
pub(crate) async fn any_id(c: &impl GenericClient, app_id: &str) -> Result<Option<i64>> {
    let stmt = c
        .prepare_cached("SELECT id FROM integrations WHERE app_id = $1")
        .await?;
    Ok(c.query_opt(&stmt, &[&app_id]).await?.map(|r| r.get(0)))
}

/// The id of the live integration with `app_id` (see `store::integrations::live_id`).
pub(crate) async fn live_id(c: &impl GenericClient, app_id: &str) -> Result<Option<i64>> {
    let stmt = c
        .prepare_cached("SELECT id FROM integrations WHERE app_id = $1 AND deleted_at IS NULL")
        .await?;
    Ok(c.query_opt(&stmt, &[&app_id]).await?.map(|r| r.get(0)))
}

/// Where and whether an integration's webhooks go (see `store::integrations::webhook_target`).
pub(crate) async fn webhook_target(
    c: &impl GenericClient,
    id: i64,
) -> Result<Option<WebhookTarget>> {
    let stmt = c
        .prepare_cached(
            "SELECT deleted_at IS NOT NULL, callback_url, signing_secret, status, \
             webhook_delivery_enabled FROM integrations WHERE id = $1",
        )
        .await?;
    Ok(c.query_opt(&stmt, &[&id]).await?.map(|r| {
        let status: &str = r.get(3);
        let status = IntegrationStatus::parse(status).unwrap_or(IntegrationStatus::Disabled);
        WebhookTarget {
            deleted: r.get(0),
            callback_url: r.get(1),
            signing_secret: r.get(2),
            sending: status.sends_webhooks(r.get(4)),
        }
    }))
}
