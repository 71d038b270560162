//! PostgreSQL: the operations of `store::deliveries`.

use deadpool_postgres::Transaction;

#[allow(unused_imports)]
use super::Postgres;
use crate::model::DeliveryState;
use crate::store::Result;
use crate::store::deliveries::NewDelivery;

/// Inserts a delivery with its frozen payload in `tx` (see `store::deliveries::insert`); returns its
/// row id. The schema's trigger counts it and announces it to the dispatchers.
pub(crate) async fn insert(tx: &Transaction<'_>, d: &NewDelivery<'_>) -> Result<i64> {
    let stmt = tx
        .prepare_cached(
            "INSERT INTO deliveries (delivery_id, integration_id, event_id, is_test, event_type, \
             payload, state, next_attempt_at, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8, $8) RETURNING id",
        )
        .await?;
    let state = if d.held {
        DeliveryState::Held
    } else {
        DeliveryState::Pending
    };
    let row = tx
        .query_one(
            &stmt,
            &[
                &d.delivery_id,
                &d.integration_id,
                &d.event_row,
                &d.is_test,
                &d.event_type.as_str(),
                &d.payload,
                &state.as_str(),
                &d.at.millis(),
            ],
        )
        .await?;
    Ok(row.get(0))
}
