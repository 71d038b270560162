//! PostgreSQL: the operations of `store::integrations`. Every commit that changes `integrations`
//! tells this node's credentials cache at once (`Postgres::integrations_changed`); the schema's
//! trigger tells the other nodes.

use std::collections::HashMap;

use deadpool_postgres::{GenericClient, Transaction};
use tokio_postgres::Row;
use tokio_postgres::types::ToSql;

use super::Postgres;
use crate::credentials::SecretDigest;
use crate::model::{CallbackUrl, Domain, Integration, IntegrationStatus, Name, Timestamp};
use crate::store::audit::Audit;
use crate::store::deliveries::BATCH;
use crate::store::integrations::{Changes, Credentials, Facts, NewIntegration, WebhookTarget};
use crate::store::{Result, StoreError};

const COLUMNS: &str =
    "id, app_id, name, status, callback_url, webhook_delivery_enabled, created_at";

/// An integration row (of [`COLUMNS`]) with its domains.
fn from_row(r: &Row, domains: Vec<Domain>) -> Result<Integration> {
    let name: String = r.get(2);
    let status: &str = r.get(3);
    Ok(Integration {
        app_id: r.get(1),
        name: Name::parse(&name)
            .map_err(|e| StoreError::Io(format!("the stored integration name: {e}")))?,
        status: IntegrationStatus::parse(status).unwrap_or(IntegrationStatus::Disabled),
        domains,
        callback_url: r.get::<_, Option<String>>(4).map(CallbackUrl::from_stored),
        webhook_delivery_enabled: r.get(5),
        created_at: Timestamp(r.get(6)),
    })
}

/// Stored domains were parsed on the way in; a value that no longer parses is skipped, not fatal.
fn parsed(domain: &str) -> Option<Domain> {
    Domain::parse(domain).ok()
}

async fn domains(c: &impl GenericClient, id: i64) -> Result<Vec<Domain>> {
    let stmt = c
        .prepare_cached(
            "SELECT domain FROM integration_domains WHERE integration_id = $1 ORDER BY domain",
        )
        .await?;
    Ok(c.query(&stmt, &[&id])
        .await?
        .iter()
        .filter_map(|r| parsed(r.get(0)))
        .collect())
}

async fn replace_domains(tx: &Transaction<'_>, id: i64, domains: &[Domain]) -> Result<()> {
    tx.execute(
        "DELETE FROM integration_domains WHERE integration_id = $1",
        &[&id],
    )
    .await?;
    let stmt = tx
        .prepare_cached(
            "INSERT INTO integration_domains (integration_id, domain) VALUES ($1, $2) \
             ON CONFLICT DO NOTHING",
        )
        .await?;
    for d in domains {
        tx.execute(&stmt, &[&id, &d.as_str()]).await?;
    }
    Ok(())
}

/// The live integration `app_id`.
async fn get(c: &impl GenericClient, app_id: &str) -> Result<Option<Integration>> {
    let stmt = c
        .prepare_cached(&format!(
            "SELECT {COLUMNS} FROM integrations WHERE app_id = $1 AND deleted_at IS NULL"
        ))
        .await?;
    match c.query_opt(&stmt, &[&app_id]).await? {
        Some(r) => Ok(Some(from_row(&r, domains(c, r.get(0)).await?)?)),
        None => Ok(None),
    }
}

/// Applies `changes` to a live integration in `tx`; `None` when there is none with that App ID.
async fn update(
    tx: &Transaction<'_>,
    app_id: &str,
    changes: &Changes,
) -> Result<Option<Integration>> {
    let Some(id) = live_id(tx, app_id).await? else {
        return Ok(None);
    };
    if let Some(name) = &changes.name {
        tx.execute(
            "UPDATE integrations SET name = $2 WHERE id = $1",
            &[&id, &name.as_str()],
        )
        .await?;
    }
    if let Some(status) = changes.status {
        tx.execute(
            "UPDATE integrations SET status = $2 WHERE id = $1",
            &[&id, &status.as_str()],
        )
        .await?;
    }
    if let Some(url) = &changes.callback_url {
        tx.execute(
            "UPDATE integrations SET callback_url = $2 WHERE id = $1",
            &[&id, &url.as_ref().map(CallbackUrl::as_str)],
        )
        .await?;
    }
    if let Some(enabled) = changes.webhook_delivery_enabled {
        tx.execute(
            "UPDATE integrations SET webhook_delivery_enabled = $2 WHERE id = $1",
            &[&id, &enabled],
        )
        .await?;
    }
    if let Some(domains) = &changes.domains {
        replace_domains(tx, id, domains).await?;
    }
    get(tx, app_id).await
}

impl Postgres {
    /// See `Store::create_integration`.
    pub(crate) async fn create_integration(
        &self,
        new: NewIntegration,
        audit: Audit,
    ) -> Result<Option<Integration>> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let now = Timestamp::now();
        let id: i64 = tx
            .query_one(
                "INSERT INTO integrations (app_id, name, app_key_digest, signing_secret, status, \
                 callback_url, webhook_delivery_enabled, created_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, true, $7) RETURNING id",
                &[
                    &new.app_id,
                    &new.name.as_str(),
                    &&new.app_key_digest.0[..],
                    &new.signing_secret,
                    &IntegrationStatus::Enabled.as_str(),
                    &new.callback_url.as_ref().map(CallbackUrl::as_str),
                    &now.millis(),
                ],
            )
            .await?
            .get(0);
        replace_domains(&tx, id, &new.domains).await?;
        super::audit::write(&tx, &audit, now).await?;
        let created = get(&tx, &new.app_id).await?;
        tx.commit().await?;
        self.integrations_changed();
        Ok(created)
    }

    /// See `Store::integrations`: live integrations, oldest first, their domains read in one query.
    pub(crate) async fn integrations(&self) -> Result<Vec<Integration>> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let rows = tx
            .query(
                &format!(
                    "SELECT {COLUMNS} FROM integrations WHERE deleted_at IS NULL \
                     ORDER BY created_at, id"
                ),
                &[],
            )
            .await?;
        let mut by_integration: HashMap<i64, Vec<Domain>> = HashMap::new();
        for r in tx
            .query(
                "SELECT d.integration_id, d.domain FROM integration_domains d \
                 JOIN integrations i ON i.id = d.integration_id \
                 WHERE i.deleted_at IS NULL ORDER BY d.domain",
                &[],
            )
            .await?
        {
            if let Some(d) = parsed(r.get(1)) {
                by_integration.entry(r.get(0)).or_default().push(d);
            }
        }
        rows.iter()
            .map(|r| from_row(r, by_integration.remove(&r.get(0)).unwrap_or_default()))
            .collect()
    }

    /// See `Store::integration`.
    pub(crate) async fn integration(&self, app_id: &str) -> Result<Option<Integration>> {
        let client = self.client().await?;
        get(&client, app_id).await
    }

    /// See `Store::update_integration`: the change, the first batch of settling its deliveries and
    /// the audit entry in one transaction.
    pub(crate) async fn update_integration(
        &self,
        app_id: &str,
        changes: Changes,
        audit: Option<Audit>,
    ) -> Result<Option<Integration>> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let updated = update(&tx, app_id, &changes).await?;
        if let Some(row) = live_id(&tx, app_id).await? {
            super::deliveries::settle_batch(&tx, row, Timestamp::now(), BATCH).await?;
        }
        if let (Some(_), Some(audit)) = (&updated, audit) {
            super::audit::write(&tx, &audit, Timestamp::now()).await?;
        }
        tx.commit().await?;
        self.integrations_changed();
        Ok(updated)
    }

    /// See `Store::set_app_key`.
    pub(crate) async fn set_app_key(
        &self,
        app_id: &str,
        digest: SecretDigest,
        audit: Audit,
    ) -> Result<bool> {
        self.set_credential(
            "UPDATE integrations SET app_key_digest = $2 WHERE app_id = $1 AND deleted_at IS NULL",
            app_id,
            &&digest.0[..],
            audit,
        )
        .await
    }

    /// Replaces one credential of a live integration (`sql`: `$1` the App ID, `$2` the value),
    /// audited when it did; `false` when there is no such live integration.
    async fn set_credential(
        &self,
        sql: &str,
        app_id: &str,
        value: &(dyn ToSql + Sync),
        audit: Audit,
    ) -> Result<bool> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let n = tx.execute(sql, &[&app_id, value]).await?;
        let done = super::audit::write_if(&tx, &audit, n == 1, Timestamp::now()).await?;
        tx.commit().await?;
        self.integrations_changed();
        Ok(done)
    }

    /// See `Store::reveal_signing_secret`: read and audited in one transaction.
    pub(crate) async fn reveal_signing_secret(
        &self,
        app_id: &str,
        audit: Audit,
    ) -> Result<Option<String>> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let secret: Option<String> = tx
            .query_opt(
                "SELECT signing_secret FROM integrations WHERE app_id = $1 AND deleted_at IS NULL",
                &[&app_id],
            )
            .await?
            .map(|r| r.get(0));
        if secret.is_some() {
            super::audit::write(&tx, &audit, Timestamp::now()).await?;
        }
        tx.commit().await?;
        Ok(secret)
    }

    /// See `Store::set_signing_secret`.
    pub(crate) async fn set_signing_secret(
        &self,
        app_id: &str,
        secret: String,
        audit: Audit,
    ) -> Result<bool> {
        self.set_credential(
            "UPDATE integrations SET signing_secret = $2 WHERE app_id = $1 AND deleted_at IS NULL",
            app_id,
            &secret,
            audit,
        )
        .await
    }

    /// See `Store::delete_integration`: marked deleted (its client certificate goes), the first batch
    /// of its unfinished deliveries cancelled, audited, in one transaction.
    pub(crate) async fn delete_integration(&self, app_id: &str, audit: Audit) -> Result<bool> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let now = Timestamp::now();
        let n = tx
            .execute(
                "UPDATE integrations SET deleted_at = $2 WHERE app_id = $1 AND deleted_at IS NULL",
                &[&app_id, &now.millis()],
            )
            .await?;
        let done = n == 1;
        if done {
            // Its client certificate's key has nothing left to authenticate.
            super::client_certs::delete_for(&tx, app_id).await?;
            if let Some(row) = any_id(&tx, app_id).await? {
                super::deliveries::settle_batch(&tx, row, now, BATCH).await?;
            }
            super::audit::write(&tx, &audit, now).await?;
        }
        tx.commit().await?;
        self.integrations_changed();
        Ok(done)
    }

    /// See `Store::integration_facts`.
    pub(crate) async fn integration_facts(&self, app_id: &str) -> Result<Option<Facts>> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(
                "SELECT id, status, callback_url, webhook_delivery_enabled FROM integrations \
                 WHERE app_id = $1 AND deleted_at IS NULL",
            )
            .await?;
        let Some(r) = client.query_opt(&stmt, &[&app_id]).await? else {
            return Ok(None);
        };
        let id: i64 = r.get(0);
        let status: &str = r.get(1);
        Ok(Some(Facts {
            id,
            enabled: status == IntegrationStatus::Enabled.as_str(),
            domains: domains(&client, id).await?,
            callback_url: r.get(2),
            webhook_delivery_enabled: r.get(3),
        }))
    }

    /// See `Store::all_enabled_domains`.
    pub(crate) async fn all_enabled_domains(&self) -> Result<Vec<Domain>> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(
                "SELECT DISTINCT d.domain FROM integration_domains d \
                 JOIN integrations i ON i.id = d.integration_id \
                 WHERE i.deleted_at IS NULL AND i.status = $1",
            )
            .await?;
        Ok(client
            .query(&stmt, &[&IntegrationStatus::Enabled.as_str()])
            .await?
            .iter()
            .filter_map(|r| parsed(r.get(0)))
            .collect())
    }

    /// See `Store::integration_row`.
    pub(crate) async fn integration_row(&self, app_id: &str) -> Result<Option<i64>> {
        let client = self.client().await?;
        any_id(&client, app_id).await
    }
}

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
