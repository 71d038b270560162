//! What an admin can do with webhook deliveries: read the history, redeliver one, and send a test
//! webhook. Sending itself is the dispatcher's; these only write rows it picks up.

use crate::error::{Error, Result};
use crate::model::{Actor, AttemptOutcome, DeliveryState, Timestamp};
use crate::store::Store;
use crate::store::audit::Audit;
use crate::store::deliveries::{self, DeliveryRow, Redelivered, TestQueued};

pub use crate::store::deliveries::DeliveryView;

pub async fn list(
    store: &Store,
    app_id: &str,
    state: Option<DeliveryState>,
    outcome: Option<AttemptOutcome>,
    before: Option<i64>,
    limit: u32,
) -> Result<Vec<DeliveryRow>> {
    store
        .deliveries(app_id, state, outcome, before, limit)
        .await?
        .ok_or(Error::NotFound("integration"))
}

pub async fn get(store: &Store, delivery_id: &str) -> Result<DeliveryView> {
    store
        .delivery(delivery_id)
        .await?
        .ok_or(Error::NotFound("delivery"))
}

/// The deliveries of one verified event, oldest first (none when it had no callback URL).
pub async fn for_event(store: &Store, event_id: &str) -> Result<Vec<DeliveryRow>> {
    Ok(store.event_deliveries(event_id).await?)
}

/// How many of an integration's deliveries are in each state (deleted integrations included, so their
/// history still adds up).
pub async fn counts(store: &Store, app_id: &str) -> Result<Vec<(DeliveryState, i64)>> {
    store
        .delivery_counts(app_id)
        .await?
        .ok_or(Error::NotFound("integration"))
}

/// Starts a new, manual attempt chain (held instead, if the integration cannot be delivered to now).
pub async fn redeliver(store: &Store, actor: &Actor, delivery_id: &str) -> Result<DeliveryView> {
    let audit = Audit::new(actor, "delivery.redeliver");
    match store.redeliver(delivery_id, audit).await? {
        Redelivered::NoSuchDelivery => Err(Error::NotFound("delivery")),
        Redelivered::NoSuchIntegration => Err(Error::NotFound("integration")),
        Redelivered::InFlight => Err(Error::Conflict(
            "the delivery is being attempted right now".into(),
        )),
        Redelivered::Done(view) => Ok(view),
    }
}

/// Queues a sample `CLICKWRAP_EVENT_VERIFIED` to the integration's callback URL, marked as a test.
pub async fn send_test(store: &Store, actor: &Actor, app_id: &str) -> Result<DeliveryView> {
    let app = app_id.to_string();
    // The same shape and field order as a real event's payload, with a test user and template.
    let payload = move |now: Timestamp| {
        crate::clickwrap::webhook_payload(&crate::model::ClickwrapEvent {
            event_id: uuid::Uuid::new_v4().to_string(),
            app_id: app,
            template_id: uuid::Uuid::nil().to_string(),
            major: 1,
            minor: 0,
            effective_at: now,
            end_user_id: "test-webhook".into(),
            action: crate::model::Action::Accepted,
            template_placeholders: None,
            technical_metadata: "{\"test\":true}".into(),
            presented_at: None,
            action_at: now,
            verified_at: Some(now),
        })
    };
    let audit = Audit::new(actor, "integration.test_webhook").target(app_id);
    match store.queue_test_webhook(app_id, payload, audit).await? {
        TestQueued::NoSuchIntegration => Err(Error::NotFound("integration")),
        TestQueued::NoCallbackUrl => Err(Error::Conflict(
            "set a callback URL before sending a test webhook".into(),
        )),
        TestQueued::Queued(view) => Ok(view),
    }
}

/// Redelivers every failed delivery of the integration created in `[from, to]`; returns how many.
///
/// The work is done in batches of [`deliveries::BATCH`], each its own write job followed by a pause
/// as long as it took ([`Store::write_batch`]), so a redelivery of a million deliveries never holds
/// the writer for more than one batch nor floods the log; `wake` is signalled after each,
/// so the dispatcher starts on the first while the rest are still being taken. The batches run in a
/// task of their own: a client that stops waiting does not leave the work half done. The audit entry
/// is written with the first batch (so it exists as soon as anything changed) and given the total
/// with the last.
pub async fn redeliver_failed(
    store: &Store,
    actor: &Actor,
    app_id: &str,
    (from, to): (Timestamp, Timestamp),
    wake: std::sync::Arc<tokio::sync::Notify>,
) -> Result<usize> {
    let (store, actor, app) = (store.clone(), actor.clone(), app_id.to_string());
    let work = tokio::spawn(async move {
        let range = format!("failed deliveries from {from} to {to}");
        let mut total = 0usize;
        let mut after = None;
        let mut entry: Option<i64> = None;
        let audit = Audit::new(&actor, "delivery.redeliver_failed")
            .target(&app)
            .detail(format!("{range} (in progress)"));
        loop {
            let range = range.clone();
            let done = move |n: usize| format!("{n} {range}");
            let batch = store
                .redeliver_failed_batch(&app, (from, to), after, entry, audit.clone(), done, total)
                .await?;
            // Deleted meanwhile: its deliveries are being cancelled; stop here.
            let Some(batch) = batch else {
                return match entry {
                    None => Err(Error::NotFound("integration")),
                    Some(_) => Ok(total),
                };
            };
            let n = batch.taken;
            total += n;
            after = batch.after;
            entry = Some(batch.entry);
            if n > 0 {
                wake.notify_one();
            }
            if n < deliveries::BATCH as usize {
                return Ok(total);
            }
        }
    });
    work.await
        .map_err(|e| Error::Store(crate::store::StoreError::Task(e.to_string())))?
}
