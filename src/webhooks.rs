//! What an admin can do with webhook deliveries: read the history, redeliver one, and send a test
//! webhook. Sending itself is the dispatcher's; these only write rows it picks up.

use crate::error::{Error, Result};
use crate::model::{Actor, AttemptOutcome, DeliveryState, EventType, Timestamp};
use crate::store::deliveries::{self, Attempt, DeliveryRow, NewDelivery};
use crate::store::{Store, audit, integrations};

/// A delivery with its attempts, oldest first.
pub struct DeliveryView {
    pub delivery: DeliveryRow,
    pub attempts: Vec<Attempt>,
}

pub async fn list(
    store: &Store,
    app_id: &str,
    state: Option<DeliveryState>,
    outcome: Option<AttemptOutcome>,
    before: Option<i64>,
    limit: u32,
) -> Result<Vec<DeliveryRow>> {
    let app = app_id.to_string();
    store
        .read(move |c| -> Result<_> {
            let id = integrations::any_id(c, &app)?.ok_or(Error::NotFound("integration"))?;
            Ok(deliveries::list(c, id, state, outcome, before, limit)?)
        })
        .await
}

pub async fn get(store: &Store, delivery_id: &str) -> Result<DeliveryView> {
    let id = delivery_id.to_string();
    store
        .read(move |c| -> Result<_> {
            let delivery = deliveries::get(c, &id)?.ok_or(Error::NotFound("delivery"))?;
            let attempts = deliveries::attempts(c, delivery.row)?;
            Ok(DeliveryView { delivery, attempts })
        })
        .await
}

/// The deliveries of one verified event, oldest first (none when it had no callback URL).
pub async fn for_event(store: &Store, event_id: &str) -> Result<Vec<DeliveryRow>> {
    let id = event_id.to_string();
    store
        .read(move |c| -> Result<_> { Ok(deliveries::for_event(c, &id)?) })
        .await
}

/// How many of an integration's deliveries are in each state (deleted integrations included, so their
/// history still adds up).
pub async fn counts(store: &Store, app_id: &str) -> Result<Vec<(DeliveryState, i64)>> {
    let app = app_id.to_string();
    store
        .read(move |c| -> Result<_> {
            let id = integrations::any_id(c, &app)?.ok_or(Error::NotFound("integration"))?;
            Ok(deliveries::count_by_state(c, id)?)
        })
        .await
}

/// Starts a new, manual attempt chain (held instead, if the integration cannot be delivered to now).
pub async fn redeliver(store: &Store, actor: &Actor, delivery_id: &str) -> Result<DeliveryView> {
    let (actor, id) = (actor.clone(), delivery_id.to_string());
    store
        .write(move |c| -> Result<_> {
            let now = Timestamp::now();
            let d = deliveries::get(c, &id)?.ok_or(Error::NotFound("delivery"))?;
            let integration =
                integrations::any_id(c, &d.app_id)?.ok_or(Error::NotFound("integration"))?;
            if !deliveries::redeliver(c, d.row, integration, now)? {
                return Err(Error::Conflict(
                    "the delivery is being attempted right now".into(),
                ));
            }
            audit::record(c, now, &actor, "delivery.redeliver", Some(&id), None)?;
            let delivery = deliveries::get(c, &id)?.ok_or(Error::NotFound("delivery"))?;
            let attempts = deliveries::attempts(c, delivery.row)?;
            Ok(DeliveryView { delivery, attempts })
        })
        .await
}

/// Queues a sample `CLICKWRAP_EVENT_VERIFIED` to the integration's callback URL, marked as a test.
pub async fn send_test(store: &Store, actor: &Actor, app_id: &str) -> Result<DeliveryView> {
    let (actor, app) = (actor.clone(), app_id.to_string());
    store
        .write(move |c| -> Result<_> {
            let now = Timestamp::now();
            let id = integrations::any_id(c, &app)?.ok_or(Error::NotFound("integration"))?;
            let target = integrations::webhook_target(c, id)?
                .filter(|t| !t.deleted)
                .ok_or(Error::NotFound("integration"))?;
            if target.callback_url.is_none() {
                return Err(Error::Conflict(
                    "set a callback URL before sending a test webhook".into(),
                ));
            }
            // The same shape and field order as a real event's payload, with a test user and template.
            let sample = crate::model::ClickwrapEvent {
                event_id: uuid::Uuid::new_v4().to_string(),
                app_id: app.clone(),
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
            };
            let payload = crate::clickwrap::webhook_payload(&sample);
            let delivery_id = deliveries::new_delivery_id();
            deliveries::insert(
                c,
                &NewDelivery {
                    delivery_id: &delivery_id,
                    integration_id: id,
                    event_row: None,
                    is_test: true,
                    event_type: EventType::ClickwrapEventVerified,
                    payload: &payload,
                    held: !target.sending,
                    at: now,
                },
            )?;
            audit::record(
                c,
                now,
                &actor,
                "integration.test_webhook",
                Some(&app),
                Some(&delivery_id),
            )?;
            let delivery = deliveries::get(c, &delivery_id)?.ok_or(Error::NotFound("delivery"))?;
            Ok(DeliveryView {
                delivery,
                attempts: Vec::new(),
            })
        })
        .await
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
        loop {
            let (actor, app, range) = (actor.clone(), app.clone(), range.clone());
            let (n, next, audited) = store
                .write_batch(move |c| -> Result<_> {
                    let now = Timestamp::now();
                    let Some(id) = integrations::live_id(c, &app)? else {
                        // Deleted meanwhile: its deliveries are being cancelled; stop here.
                        return match entry {
                            None => Err(Error::NotFound("integration")),
                            Some(entry) => Ok((0, after, entry)),
                        };
                    };
                    let (n, next) = deliveries::redeliver_failed_batch(
                        c,
                        id,
                        (from, to),
                        after,
                        now,
                        deliveries::BATCH,
                    )?;
                    let entry = match entry {
                        Some(entry) => entry,
                        None => audit::record(
                            c,
                            now,
                            &actor,
                            "delivery.redeliver_failed",
                            Some(&app),
                            Some(&format!("{range} (in progress)")),
                        )?,
                    };
                    if n < deliveries::BATCH as usize {
                        let detail = format!("{} {range}", total + n);
                        audit::set_detail(c, entry, &detail)?;
                    }
                    Ok((n, next, entry))
                })
                .await?;
            total += n;
            after = next;
            entry = Some(audited);
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
