//! PostgreSQL: the operations of `store::integrations`.

use super::Postgres;
use crate::credentials::SecretDigest;
use crate::model::IntegrationStatus;
use crate::store::Result;
use crate::store::integrations::Credentials;

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
