//! PostgreSQL: the operations of `store::client_certs`.

use std::sync::Arc;

use deadpool_postgres::GenericClient;

#[allow(unused_imports)]
use super::Postgres;
use crate::store::Result;
use crate::store::client_certs::StoredClientCert;

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
