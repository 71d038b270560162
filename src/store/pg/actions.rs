//! PostgreSQL: end users' actions inserted in batches. An action is a row of `events` (unverified),
//! and one transaction per action made every SDK act pay a `BEGIN`, its insert and a commit — one WAL
//! flush — on a pooled connection it held through all its reads and that flush. So an act now reads
//! what it decides from (the template it may use, its effective version's texts, the end user's
//! latest presentation) on a pooled connection it gives back at once, and hands the event row it
//! decided to the node's batch: the actions that arrive while the previous batch commits are
//! inserted together by one statement (arrays bound once, `unnest`ed by the server), which commits
//! on its own — one round trip and one flush for the batch. A statement is atomic: the batch's rows
//! are all inserted or none. If it fails, each of its actions is inserted alone, so one bad row never
//! fails another.

use deadpool_postgres::{GenericClient, Pool};
use tokio::sync::oneshot;

use crate::model::{Language, Timestamp};
use crate::store::consent::{NewAction, Usable};
use crate::store::events::NewEvent;
use crate::store::{Result, StoreError};

/// The most actions inserted together.
const MAX_BATCH: usize = 256;

/// One action waiting for its batch: the event row `action.event` makes of it.
pub(crate) struct Job {
    pub integration_id: i64,
    pub action: NewAction,
    pub usable: Usable,
    pub language: Language,
    pub presented_at: Option<Timestamp>,
    pub now: Timestamp,
    pub reply: oneshot::Sender<Result<()>>,
}

impl Job {
    fn event(&self) -> NewEvent<'_> {
        self.action.event(
            self.integration_id,
            &self.usable,
            &self.language,
            self.presented_at,
            self.now,
        )
    }
}

pub(crate) type Queue = tokio::sync::mpsc::Sender<Job>;

/// Starts the node's action task (see `batch::spawn`).
pub(crate) fn start(pool: Pool) -> (Queue, tokio::task::JoinHandle<()>) {
    super::batch::spawn(pool, MAX_BATCH, |pool, jobs| async move {
        insert_batch(&pool, jobs).await
    })
}

async fn insert_batch(pool: &Pool, jobs: Vec<Job>) {
    let client = match pool.get().await {
        Ok(client) => client,
        Err(e) => {
            // No connection for the batch: none for any of its actions (503, as for one alone).
            let why = match StoreError::from(e) {
                StoreError::Unavailable(why) => why,
                other => other.to_string(),
            };
            for job in jobs {
                let _ = job.reply.send(Err(StoreError::Unavailable(why.clone())));
            }
            return;
        }
    };
    match insert(&client, &jobs).await {
        Ok(()) => {
            for job in jobs {
                let _ = job.reply.send(Ok(()));
            }
        }
        Err(e) if jobs.len() > 1 => {
            tracing::debug!(error = %e, actions = jobs.len(), "an action batch failed; inserting each alone");
            for job in jobs {
                let done = insert(&client, std::slice::from_ref(&job)).await;
                let _ = job.reply.send(done);
            }
        }
        Err(e) => {
            if let Some(job) = jobs.into_iter().next() {
                let _ = job.reply.send(Err(e));
            }
        }
    }
}

/// The events of `jobs`, inserted in their order by one statement (committed by it).
const INSERT: &str = "INSERT INTO events (event_id, integration_id, template_id, major, minor, \
     effective_at, end_user_id, action, template_placeholders, technical_metadata, language, \
     presented_at, action_at) \
     SELECT * FROM unnest($1::text[], $2::bigint[], $3::bigint[], $4::bigint[], $5::bigint[], \
                          $6::bigint[], $7::text[], $8::text[], $9::text[], $10::text[], $11::text[], \
                          $12::bigint[], $13::bigint[])";

async fn insert<C: GenericClient>(client: &C, jobs: &[Job]) -> Result<()> {
    let events: Vec<NewEvent<'_>> = jobs.iter().map(Job::event).collect();
    let column = |f: fn(&NewEvent<'_>) -> i64| events.iter().map(f).collect::<Vec<i64>>();
    let text = |f: for<'e> fn(&'e NewEvent<'e>) -> &'e str| {
        events.iter().map(|e| f(e)).collect::<Vec<&str>>()
    };
    let event_ids = text(|e| e.event_id);
    let integrations = column(|e| e.integration_id);
    let templates = column(|e| e.template_row);
    let majors = column(|e| e.major);
    let minors = column(|e| e.minor);
    let effective = column(|e| e.effective_at.millis());
    let users = text(|e| e.end_user_id);
    let actions = text(|e| e.action.as_str());
    let placeholders: Vec<Option<&str>> = events.iter().map(|e| e.template_placeholders).collect();
    let metadata = text(|e| e.technical_metadata);
    let languages = text(|e| e.language);
    let presented: Vec<Option<i64>> = events
        .iter()
        .map(|e| e.presented_at.map(Timestamp::millis))
        .collect();
    let acted = column(|e| e.action_at.millis());
    let stmt = client.prepare_cached(INSERT).await?;
    client
        .execute(
            &stmt,
            &[
                &event_ids,
                &integrations,
                &templates,
                &majors,
                &minors,
                &effective,
                &users,
                &actions,
                &placeholders,
                &metadata,
                &languages,
                &presented,
                &acted,
            ],
        )
        .await?;
    Ok(())
}
