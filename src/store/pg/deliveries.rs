//! PostgreSQL: the operations of `store::deliveries` — the dispatcher's queue and the delivery
//! history, on a database several nodes share.
//!
//! - **Claims** lock the `delivery_counts` rows of the integrations with work (`FOR UPDATE`, in
//!   integration order, so two nodes' claims never wait on each other in a cycle) and read their
//!   `in_flight` there: `max_in_flight_per_integration` holds across the cluster, since every node's
//!   claim for an integration waits for the one before it and sees what it took. The deliveries are
//!   then taken `FOR UPDATE SKIP LOCKED` (a row being recorded or settled is left to the next tick)
//!   and leased until `lease_until`; an in-flight delivery whose lease ran out is claimable again by
//!   any node, which is the recovery of a node that died mid-attempt (there is no start-time recovery).
//! - **Recording** an attempt moves its delivery only while the claim it was made under still holds
//!   (the same `lease_until`): a node whose lease ran out and whose delivery was claimed again
//!   elsewhere stores its attempt in the history but cannot overwrite the newer attempt's state.
//! - **Pruning** runs on one node at a time (`pg_try_advisory_xact_lock`); the others find it taken
//!   and stop.
//! - **Bulk updates** re-check the state they change in the outer `WHERE`, so a row whose state
//!   changed while the statement waited for its lock (PostgreSQL re-evaluates only the outer
//!   conditions on the new row version) is left alone.

use deadpool_postgres::{GenericClient, Transaction};

#[allow(unused_imports)]
use super::Postgres;
use crate::model::{DeliveryState, Timestamp};
use crate::store::deliveries::{Gate, NewDelivery};
use crate::store::{Result, StoreError};

/// A vocabulary word read back from the database.
pub(crate) fn word<T>(text: &str, parse: fn(&str) -> Option<T>) -> Result<T> {
    parse(text)
        .ok_or_else(|| StoreError::Io(format!("the database holds an unknown value {text:?}")))
}

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

/// What the integration's settings say about sending its deliveries now (see
/// `store::deliveries::gate`).
pub(crate) async fn gate(c: &impl GenericClient, integration_id: i64) -> Result<Gate> {
    Ok(
        match super::integrations::webhook_target(c, integration_id).await? {
            None => Gate::Cancel,
            Some(t) if t.deleted => Gate::Cancel,
            Some(crate::store::integrations::WebhookTarget {
                sending: true,
                callback_url: Some(url),
                signing_secret,
                ..
            }) => Gate::Send {
                url,
                secret: signing_secret,
                client_cert: super::client_certs::for_integration(c, integration_id).await?,
            },
            Some(_) => Gate::Hold,
        },
    )
}

/// The statements of [`settle_batch`]: `$1` the integration, `$2` now, `$3` the most rows.
const RELEASE_HELD: &str = "UPDATE deliveries SET state = 'pending', next_attempt_at = $2, updated_at = $2 \
     WHERE id IN (SELECT id FROM deliveries WHERE integration_id = $1 AND state = 'held' \
                  ORDER BY id LIMIT $3) AND state = 'held'";
const HOLD_PENDING: &str = "UPDATE deliveries SET state = 'held', updated_at = $2 \
     WHERE id IN (SELECT id FROM deliveries WHERE integration_id = $1 AND state = 'pending' \
                  ORDER BY id LIMIT $3) AND state = 'pending'";
const CANCEL_PENDING: &str = "UPDATE deliveries SET state = 'cancelled', updated_at = $2 \
     WHERE id IN (SELECT id FROM deliveries WHERE integration_id = $1 AND state = 'pending' \
                  ORDER BY id LIMIT $3) AND state = 'pending'";
const CANCEL_HELD: &str = "UPDATE deliveries SET state = 'cancelled', updated_at = $2 \
     WHERE id IN (SELECT id FROM deliveries WHERE integration_id = $1 AND state = 'held' \
                  ORDER BY id LIMIT $3) AND state = 'held'";

/// Brings up to `limit` of an integration's deliveries in line with its settings, oldest first, in
/// `c` (see `store::deliveries::settle_batch`); returns how many changed.
pub(crate) async fn settle_batch(
    c: &impl GenericClient,
    integration_id: i64,
    now: Timestamp,
    limit: u32,
) -> Result<usize> {
    let run = |sql: &'static str, limit: u32| async move {
        let stmt = c.prepare_cached(sql).await?;
        let n = c
            .execute(&stmt, &[&integration_id, &now.millis(), &i64::from(limit)])
            .await?;
        Ok::<usize, StoreError>(n as usize)
    };
    match gate(c, integration_id).await? {
        Gate::Send { .. } => run(RELEASE_HELD, limit).await,
        Gate::Hold => run(HOLD_PENDING, limit).await,
        Gate::Cancel => {
            let n = run(CANCEL_PENDING, limit).await?;
            if n < limit as usize {
                Ok(n + run(CANCEL_HELD, limit - n as u32).await?)
            } else {
                Ok(n)
            }
        }
    }
}
