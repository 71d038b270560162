//! PostgreSQL: verifies in batches. Every verify appends to the one ledger chain, so verifies take
//! the chain's lock in turn and hold it until their commit; one at a time, the cluster verified as
//! many events a second as PostgreSQL commits transactions one after another (one WAL flush each,
//! about 700 a second on this kind of disk). So each node gathers the verifies that arrive while
//! its previous batch commits, and while it waits for the lock (`start`), and runs them together
//! in one transaction: the lock taken once, the chain's head read once, the statements of all of
//! them pipelined on one connection (a handful of round trips per batch, not per verify), one
//! commit. What each verify decides and writes is what
//! `consent::verify_alone` decides and writes; if anything in a batch fails, the batch is rolled
//! back and each of its verifies runs alone, so one bad request never fails another.

use std::collections::{BTreeMap, HashMap, HashSet};

use futures_util::future::try_join_all;
use tokio::sync::{mpsc, oneshot};

use deadpool_postgres::{Pool, Transaction};

use super::consent::verify_alone;
use super::{deliveries, ledger};
use crate::model::ChainHead;
use crate::model::{ClickwrapEvent, EventType, Timestamp};
use crate::store::consent::Verification;
use crate::store::deliveries::{NewDelivery, new_delivery_id};
use crate::store::{Result, StoreError};

/// The most verifies committed together.
const MAX_BATCH: usize = 256;

/// One verify waiting for its batch.
pub(crate) struct Job {
    pub event_id: String,
    pub integration_id: i64,
    pub expired: bool,
    pub payload: fn(&ClickwrapEvent) -> Vec<u8>,
    pub reply: oneshot::Sender<Result<Verification>>,
}

pub(crate) type Queue = mpsc::Sender<Job>;

/// Starts the node's verify task; it ends when the last sender (the store) goes. Unlike
/// [`spawn`]'s batches, a verify batch is made up *after* its transaction holds the chain's lock:
/// while another node's batch holds it, the verifies arriving here wait in the channel and join the
/// batch that is waiting. Made up before the wait, a batch took only what had arrived while this
/// node's previous batch committed, and two nodes' batches, taking the lock in turn, each half the
/// size, verified half as many events a second between them as one node alone.
pub(crate) fn start(pool: Pool) -> (Queue, tokio::task::JoinHandle<()>) {
    let (send, mut receive) = mpsc::channel::<Job>(4 * MAX_BATCH);
    let task = tokio::spawn(async move {
        while let Some(first) = receive.recv().await {
            verify_batch(&pool, first, &mut receive).await;
        }
    });
    (send, task)
}

/// A node's batching task (attempts, `pg::records`; verifies have their own, `start`): it waits
/// for a job, takes the ones already waiting behind it, up to `max` in all, and hands them to `run`
/// before it looks again — so what arrives while a batch commits forms the next one. It ends when
/// the last sender goes.
pub(crate) fn spawn<J, F, Fut>(
    pool: Pool,
    max: usize,
    run: F,
) -> (mpsc::Sender<J>, tokio::task::JoinHandle<()>)
where
    J: Send + 'static,
    F: Fn(Pool, Vec<J>) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let (send, mut receive) = mpsc::channel::<J>(4 * max);
    let task = tokio::spawn(async move {
        while let Some(jobs) = next_batch(&mut receive, max).await {
            run(pool.clone(), jobs).await;
        }
    });
    (send, task)
}

/// Hands the job `make` builds around its reply to a node's batch task (`queue`) and waits for the
/// answer; `what` names the batches (`"verify"`, …) in the error when the task has gone.
pub(crate) async fn submit<J, T>(
    queue: &mpsc::Sender<J>,
    what: &str,
    make: impl FnOnce(oneshot::Sender<Result<T>>) -> J,
) -> Result<T> {
    let (reply, answer) = oneshot::channel();
    queue
        .send(make(reply))
        .await
        .map_err(|_| StoreError::Task(format!("the {what} batches have stopped")))?;
    answer
        .await
        .map_err(|_| StoreError::Task(format!("a {what} batch was dropped")))?
}

/// Waits for a job, then takes the ones already waiting behind it, up to `max` in all; none when
/// every sender is gone.
async fn next_batch<J>(receive: &mut mpsc::Receiver<J>, max: usize) -> Option<Vec<J>> {
    let first = receive.recv().await?;
    let mut jobs = vec![first];
    top_up(receive, &mut jobs, max);
    Some(jobs)
}

/// Adds the jobs already waiting to `jobs`, up to `max` in all.
fn top_up<J>(receive: &mut mpsc::Receiver<J>, jobs: &mut Vec<J>, max: usize) {
    while jobs.len() < max {
        match receive.try_recv() {
            Ok(job) => jobs.push(job),
            Err(_) => break,
        }
    }
}

/// What became of one job of a batch before anything is written.
enum Decided {
    Answered(Verification),
    /// To be verified: its event's row, and its ledger position.
    Verify {
        row: i64,
        position: i64,
    },
}

async fn verify_batch(pool: &Pool, first: Job, receive: &mut mpsc::Receiver<Job>) {
    let mut jobs = vec![first];
    let batched = async {
        let mut client = pool.get().await?;
        let tx = client.transaction().await?;
        // The lock first, then the batch (see `start`); the head and the events are read under
        // it (each statement of a READ COMMITTED transaction sees what was committed before it).
        ledger::lock(&tx).await?;
        top_up(receive, &mut jobs, MAX_BATCH);
        try_batch(tx, &jobs).await
    }
    .await;
    match batched {
        Ok(answers) => {
            for (job, answer) in jobs.into_iter().zip(answers) {
                let _ = job.reply.send(Ok(answer));
            }
        }
        Err(e) => {
            tracing::debug!(error = %e, verifies = jobs.len(), "a verify batch failed; verifying each alone");
            for job in jobs {
                let done = verify_alone(
                    pool,
                    &job.event_id,
                    job.integration_id,
                    job.expired,
                    job.payload,
                )
                .await;
                let _ = job.reply.send(done);
            }
        }
    }
}

/// The batch in one transaction; each job's answer, in order.
/// `tx` holds the chain's lock.
async fn try_batch(tx: Transaction<'_>, jobs: &[Job]) -> Result<Vec<Verification>> {
    let now = Timestamp::now();
    let ids: Vec<&str> = jobs.iter().map(|j| j.event_id.as_str()).collect();
    let integrations: Vec<i64> = {
        let set: HashSet<i64> = jobs.iter().map(|j| j.integration_id).collect();
        set.into_iter().collect()
    };
    let probe = tx
        .prepare_cached(
            "SELECT event_id, id, integration_id, verified_at IS NOT NULL FROM events \
                 WHERE event_id = ANY($1) FOR UPDATE",
        )
        .await?;
    let (head, facts, targets) = tokio::try_join!(
        ledger::head(&tx),
        async { tx.query(&probe, &[&ids]).await.map_err(StoreError::from) },
        try_join_all(
            integrations
                .iter()
                .map(|&id| super::integrations::webhook_target(&tx, id))
        ),
    )?;
    let facts: BTreeMap<String, (i64, i64, bool)> = facts
        .iter()
        .map(|r| (r.get(0), (r.get(1), r.get(2), r.get(3))))
        .collect();
    let targets: BTreeMap<i64, _> = integrations
        .iter()
        .copied()
        .zip(targets)
        .filter_map(|(id, t)| Some((id, t?)).filter(|(_, t)| !t.deleted))
        .collect();

    // Each job decided as `verify_event_alone` decides it, in the order they came.
    let mut taken = HashSet::new();
    let mut next = head.position;
    let decided: Vec<Decided> = jobs
        .iter()
        .map(|job| {
            let answer = |v| Decided::Answered(v);
            if !targets.contains_key(&job.integration_id) {
                return answer(Verification::NotOurs);
            }
            match facts.get(&job.event_id) {
                None => answer(Verification::NotOurs),
                Some(&(_, owner, _)) if owner != job.integration_id => {
                    answer(Verification::NotOurs)
                }
                Some(&(row, _, verified)) => {
                    let verified = verified || taken.contains(&row);
                    if verified || !job.expired {
                        if verified {
                            return answer(Verification::AlreadyVerified);
                        }
                        taken.insert(row);
                        next += 1;
                        Decided::Verify {
                            row,
                            position: next,
                        }
                    } else {
                        answer(Verification::Expired)
                    }
                }
            }
        })
        .collect();

    let to_verify: Vec<(usize, i64, i64)> = decided
        .iter()
        .enumerate()
        .filter_map(|(i, d)| match d {
            Decided::Verify { row, position } => Some((i, *row, *position)),
            Decided::Answered(_) => None,
        })
        .collect();
    // The events marked, their sources read, their links and deliveries inserted: one statement
    // each for the whole batch (arrays bound once, `unnest`ed by the server).
    let mark = tx
        .prepare_cached(&format!(
            "UPDATE events e SET verified_at = $1, ledger_position = u.position \
             FROM unnest($2::bigint[], $3::bigint[]) AS u(id, position) \
             WHERE e.id = u.id AND e.verified_at IS NULL \
             RETURNING {}, e.id",
            crate::store::events::EVENT_COLUMNS
        ))
        .await?;
    let rows: Vec<i64> = to_verify.iter().map(|&(_, row, _)| row).collect();
    let positions: Vec<i64> = to_verify.iter().map(|&(_, _, p)| p).collect();
    let mut marked: HashMap<i64, ClickwrapEvent> = tx
        .query(&mark, &[&now.millis(), &rows, &positions])
        .await?
        .iter()
        .map(|r| (r.get(r.len() - 1), super::events::event_from_row(r)))
        .collect();
    let marked: Vec<ClickwrapEvent> = rows
        .iter()
        .map(|row| {
            marked
                .remove(row)
                .ok_or_else(|| StoreError::Io(format!("event row {row} was verified meanwhile")))
        })
        .collect::<Result<_>>()?;
    let mut sources = ledger::sources(&tx, &rows).await?;

    let mut head = head;
    let mut links = Vec::with_capacity(to_verify.len());
    for &(_, row, position) in &to_verify {
        let (source, at) = sources.remove(&row).ok_or_else(|| {
            StoreError::Io(format!("event row {row} vanished while it was verified"))
        })?;
        if at != Some(position) {
            return Err(StoreError::Io(format!(
                "event row {row} has ledger position {at:?}, expected {position}"
            )));
        }
        let name = source.template_name.clone();
        let digest = crate::ledger::Evidence::from_source(source).digest();
        let link = crate::ledger::next_link(head, digest);
        head = ChainHead {
            position: link.position,
            hash: link.hash,
        };
        links.push((row, name, link));
    }
    let insert_links = tx
        .prepare_cached(
            "INSERT INTO ledger (position, event_id, template_name, digest, hash) \
             SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::text[], $4::bytea[], $5::bytea[])",
        )
        .await?;
    let link_positions: Vec<i64> = links.iter().map(|(_, _, l)| l.position).collect();
    let link_rows: Vec<i64> = links.iter().map(|(row, _, _)| *row).collect();
    let link_names: Vec<&str> = links.iter().map(|(_, name, _)| name.as_str()).collect();
    let digests: Vec<&[u8]> = links.iter().map(|(_, _, l)| &l.digest.0[..]).collect();
    let hashes: Vec<&[u8]> = links.iter().map(|(_, _, l)| &l.hash.0[..]).collect();
    let inserted_links = async {
        tx.execute(
            &insert_links,
            &[&link_positions, &link_rows, &link_names, &digests, &hashes],
        )
        .await
        .map_err(StoreError::from)
    };
    // Integrations ascending: the schema's trigger takes their counts rows in the order claims do.
    let mut payloads: Vec<(i64, i64, Vec<u8>, bool)> = to_verify
        .iter()
        .zip(&marked)
        .filter_map(|(&(i, row, _), event)| {
            let job = &jobs[i];
            let target = &targets[&job.integration_id];
            target.callback_url.as_ref().map(|_| {
                (
                    job.integration_id,
                    row,
                    (job.payload)(event),
                    !target.sending,
                )
            })
        })
        .collect();
    payloads.sort_by_key(|p| p.0);
    let delivery_ids: Vec<String> = payloads.iter().map(|_| new_delivery_id()).collect();
    let new: Vec<NewDelivery> = payloads
        .iter()
        .zip(&delivery_ids)
        .map(|((integration_id, row, payload, held), id)| NewDelivery {
            delivery_id: id,
            integration_id: *integration_id,
            event_row: Some(*row),
            is_test: false,
            event_type: EventType::ClickwrapEventVerified,
            payload,
            held: *held,
            at: now,
        })
        .collect();
    tokio::try_join!(inserted_links, deliveries::insert_many(&tx, &new))?;
    tx.commit().await?;

    let mut marked = marked.into_iter();
    Ok(decided
        .into_iter()
        .map(|d| match d {
            Decided::Answered(v) => v,
            Decided::Verify { .. } => {
                Verification::Verified(marked.next().expect("one marked event per verify"))
            }
        })
        .collect())
}
