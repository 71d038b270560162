//! Settling: bringing an integration's deliveries in line with its settings after they change. When
//! delivery is switched back on (or the integration enabled again, or given a callback URL) its held
//! deliveries are released; when it is switched off, its pending ones are held; when it is deleted,
//! both are cancelled (SPEC §5.3).
//!
//! The change itself settles its first batch in its own transaction, so a small backlog follows at
//! once. A large one (a million held deliveries) would hold the single writer for seconds in one
//! statement, and every other write with it; so the rest is done here, [`deliveries::BATCH`] rows per
//! write job, each followed by a pause as long as it took ([`Store::write_batch`]), oldest first,
//! waking the dispatcher after each batch that released something. Each batch
//! reads the settings again, so a change of mind between two batches is followed from the next one,
//! and a delivery is released once per hold however many passes overlap (a batch takes only rows in
//! the state it changes). A pass runs at start — a process stopped in the middle of one leaves the
//! rest to the next — and whenever the admin API signals a change.

use std::sync::Arc;

use tokio::sync::{Notify, watch};

use crate::store::deliveries;
use crate::store::{Store, StoreError};

/// Settles every integration that needs it, one batch per write job, until each is in line or
/// `shutdown` turns true. Returns how many deliveries changed state.
async fn settle_pass(
    store: &Store,
    wake: &Notify,
    shutdown: &watch::Receiver<bool>,
) -> Result<usize, StoreError> {
    let mut total = 0;
    for integration in store.unsettled_integrations().await? {
        loop {
            if *shutdown.borrow() {
                return Ok(total);
            }
            let n = store.settle_deliveries(integration).await?;
            total += n;
            if n > 0 {
                wake.notify_one();
            }
            if n < deliveries::BATCH as usize {
                break;
            }
        }
    }
    Ok(total)
}

/// Runs a pass at start and after every `signal` until `shutdown`.
pub async fn run_settling(
    store: Store,
    signal: Arc<Notify>,
    wake: Arc<Notify>,
    mut shutdown: watch::Receiver<bool>,
) {
    while !*shutdown.borrow() {
        match settle_pass(&store, &wake, &shutdown).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(
                deliveries = n,
                "brought deliveries in line with their integrations' settings"
            ),
            Err(e) => tracing::error!(error = %e, "settling deliveries failed"),
        }
        tokio::select! {
            _ = signal.notified() => {}
            _ = shutdown.changed() => {}
        }
    }
}
