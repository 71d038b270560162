//! PostgreSQL: the operations of `store::client_certs`.

use std::sync::Arc;

use deadpool_postgres::{GenericClient, Transaction};

#[allow(unused_imports)]
use super::Postgres;
use crate::model::Timestamp;
use crate::store::Result;
use crate::store::audit::Audit;
use crate::store::client_certs::{Lookup, Removed, StoredClientCert};

/// The certificate a new connection of `integration` presents (see
/// `store::client_certs::for_integration`); read with every claim.
pub(crate) async fn for_integration(
    c: &impl GenericClient,
    integration: i64,
) -> Result<Option<Arc<StoredClientCert>>> {
    let stmt = c
        .prepare_cached(
            "SELECT cert_pem, key_pem FROM integration_client_certs WHERE integration_id = $1",
        )
        .await?;
    Ok(c.query_opt(&stmt, &[&integration]).await?.map(|r| {
        Arc::new(StoredClientCert {
            cert_pem: r.get(0),
            key_pem: r.get(1),
        })
    }))
}

/// Deletes an integration's certificate with the integration, in `tx`: nothing presents it any more.
pub(crate) async fn delete_for(tx: &Transaction<'_>, app_id: &str) -> Result<()> {
    tx.execute(
        "DELETE FROM integration_client_certs WHERE integration_id = \
         (SELECT id FROM integrations WHERE app_id = $1)",
        &[&app_id],
    )
    .await?;
    Ok(())
}

impl Postgres {
    /// See `Store::set_client_certificate`.
    pub(crate) async fn set_client_certificate(
        &self,
        app_id: &str,
        cert: StoredClientCert,
        fingerprint: String,
        audit: Audit,
    ) -> Result<bool> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let Some(id) = super::integrations::live_id(&tx, app_id).await? else {
            return Ok(false);
        };
        let now = Timestamp::now();
        tx.execute(
            "INSERT INTO integration_client_certs (integration_id, cert_pem, key_pem, fingerprint, \
             set_at) VALUES ($1, $2, $3, $4, $5) ON CONFLICT (integration_id) DO UPDATE SET \
             cert_pem = excluded.cert_pem, key_pem = excluded.key_pem, \
             fingerprint = excluded.fingerprint, set_at = excluded.set_at",
            &[
                &id,
                &cert.cert_pem,
                &cert.key_pem,
                &fingerprint,
                &now.millis(),
            ],
        )
        .await?;
        super::audit::write(&tx, &audit, now).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// See `Store::remove_client_certificate`: the audit entry names the removed one's fingerprint.
    pub(crate) async fn remove_client_certificate(
        &self,
        app_id: &str,
        audit: Audit,
    ) -> Result<Removed> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let Some(id) = super::integrations::live_id(&tx, app_id).await? else {
            return Ok(Removed::NoIntegration);
        };
        let Some(row) = tx
            .query_opt(
                "DELETE FROM integration_client_certs WHERE integration_id = $1 \
                 RETURNING fingerprint",
                &[&id],
            )
            .await?
        else {
            return Ok(Removed::NoCertificate);
        };
        let fingerprint: String = row.get(0);
        let audit = audit.detail(format!("sha256={fingerprint}"));
        super::audit::write(&tx, &audit, Timestamp::now()).await?;
        tx.commit().await?;
        Ok(Removed::Removed)
    }

    /// See `Store::client_certificate` (never the key).
    pub(crate) async fn client_certificate(&self, app_id: &str) -> Result<Lookup> {
        let client = self.client().await?;
        let Some(id) = super::integrations::live_id(&client, app_id).await? else {
            return Ok(Lookup::NoIntegration);
        };
        let stmt = client
            .prepare_cached(
                "SELECT cert_pem, set_at FROM integration_client_certs WHERE integration_id = $1",
            )
            .await?;
        Ok(match client.query_opt(&stmt, &[&id]).await? {
            None => Lookup::NoCertificate,
            Some(r) => Lookup::Found {
                cert_pem: r.get(0),
                set_at: Timestamp(r.get(1)),
            },
        })
    }

    /// See `Store::live_integration`.
    pub(crate) async fn live_integration(&self, app_id: &str) -> Result<Option<i64>> {
        let client = self.client().await?;
        super::integrations::live_id(&client, app_id).await
    }
}
