//! PostgreSQL: server-wide values generated at first start (see `store::settings`).

use super::Postgres;
use crate::store::Result;

impl Postgres {
    /// The value under `key`, made by `make` and stored if there is none yet: nodes starting at once
    /// agree on one value (the insert that loses `ON CONFLICT` reads the winner's).
    pub(crate) async fn setting_or_create(
        &self,
        key: &'static str,
        make: impl FnOnce() -> Vec<u8> + Send + 'static,
    ) -> Result<Vec<u8>> {
        let client = self.client().await?;
        if let Some(row) = client
            .query_opt("SELECT value FROM settings WHERE key = $1", &[&key])
            .await?
        {
            return Ok(row.get(0));
        }
        let value = make();
        client
            .execute(
                "INSERT INTO settings (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING",
                &[&key, &value],
            )
            .await?;
        let row = client
            .query_one("SELECT value FROM settings WHERE key = $1", &[&key])
            .await?;
        Ok(row.get(0))
    }
}
