//! PostgreSQL: the operations of `store::admin` (admin users, sessions, tokens).

use super::{Postgres, audit};
use crate::model::Timestamp;
use crate::store::Result;
use crate::store::admin::NewAdmin;
use crate::store::audit::Audit;

/// The advisory lock that makes "create the first admin while there is none" one decision across
/// nodes starting at once ("clickadm").
const FIRST_ADMIN_LOCK: i64 = 0x636c_6963_6b61_646d;

impl Postgres {
    pub(crate) async fn admin_count(&self) -> Result<i64> {
        let client = self.client().await?;
        Ok(client
            .query_one("SELECT count(*) FROM admin_users", &[])
            .await?
            .get(0))
    }

    pub(crate) async fn create_first_admin(&self, new: NewAdmin, entry: Audit) -> Result<bool> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&FIRST_ADMIN_LOCK])
            .await?;
        let count: i64 = tx
            .query_one("SELECT count(*) FROM admin_users", &[])
            .await?
            .get(0);
        if count > 0 {
            return Ok(false);
        }
        let now = Timestamp::now();
        let created = create_user(&tx, &new, now).await?;
        audit::write_if(&tx, &entry, created, now).await?;
        tx.commit().await?;
        Ok(created)
    }
}

/// Creates a user; `false` when the name is taken.
pub(crate) async fn create_user(
    tx: &deadpool_postgres::Transaction<'_>,
    new: &NewAdmin,
    now: Timestamp,
) -> Result<bool> {
    let n = tx
        .execute(
            "INSERT INTO admin_users (username, password_hash, created_at, password_changed_at, \
             role, must_change_password) VALUES ($1, $2, $3, $3, $4, $5) \
             ON CONFLICT (username) DO NOTHING",
            &[
                &new.username.as_str(),
                &new.password_hash,
                &now.millis(),
                &new.role.as_str(),
                &new.must_change_password,
            ],
        )
        .await?;
    Ok(n == 1)
}
