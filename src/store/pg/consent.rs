//! PostgreSQL: the clickwrap flow's operations (see `store::consent`): what an end user faces, their
//! action, the verify with its ledger link and delivery in one transaction, status facts,
//! acceptances, re-acceptance. The rules are `clickwrap`'s and the SQLite family's shared types.

use std::collections::BTreeMap;

use deadpool_postgres::GenericClient;

use super::{Postgres, deliveries, events, ledger, templates};
use crate::model::{
    Action, ClickwrapEvent, EndUserId, EventType, Language, PublishedVersion, TemplateText,
    Timestamp,
};
use crate::store::consent::{
    Facing, NewAction, StatusFacts, Unusable, Usable, UserFacts, Verification,
};
use crate::store::deliveries::{NewDelivery, new_delivery_id};
use crate::store::events::Filter;
use crate::store::{Result, StoreError};

/// See `store::consent::usable`: its facts read by one statement.
async fn usable<C: GenericClient>(
    c: &C,
    integration_id: i64,
    template_id: &str,
    now: Timestamp,
) -> Result<std::result::Result<Usable, Unusable>> {
    let Some(facts) = templates::usable_facts(c, template_id, integration_id).await? else {
        return Ok(Err(Unusable::Unavailable));
    };
    if !facts.flags.enabled {
        return Ok(Err(Unusable::Unavailable));
    }
    if !facts.visible {
        return Ok(Err(Unusable::NotLinked));
    }
    let Some(version) = PublishedVersion::effective(&facts.versions, now).cloned() else {
        return Ok(Err(Unusable::Unavailable));
    };
    Ok(Ok(Usable {
        row: facts.row,
        name: facts.flags.name,
        always_reaccept: facts.flags.always_reaccept,
        version,
    }))
}

/// See `store::consent::user_facts`: its four reads sent together.
async fn user_facts<C: GenericClient>(c: &C, u: &Usable, end_user: &str) -> Result<UserFacts> {
    let (events, reaccept_requested_at, last_presentation, presented_at) = tokio::try_join!(
        events::user_events(c, u.row, end_user, u.version.major),
        events::reaccept_requested_at(c, u.row, end_user),
        events::last_presentation(c, u.row, end_user),
        events::latest_presentation(c, u.row, end_user, u.version.major),
    )?;
    Ok(UserFacts {
        events,
        reaccept_requested_at,
        last_presentation,
        presented_at,
    })
}

impl Postgres {
    /// See `Store::facing`.
    pub(crate) async fn facing(
        &self,
        integration_id: i64,
        template_id: &str,
        end_user: &EndUserId,
        now: Timestamp,
    ) -> Result<std::result::Result<Facing, Unusable>> {
        let client = self.client().await?;
        let template = match usable(&client, integration_id, template_id, now).await? {
            Ok(u) => u,
            Err(why) => return Ok(Err(why)),
        };
        let v = &template.version;
        let (texts, user) = tokio::try_join!(
            templates::version_texts(&client, template.row, v.major, v.minor),
            user_facts(&client, &template, end_user.as_str()),
        )?;
        Ok(Ok(Facing {
            template,
            texts,
            user,
        }))
    }

    /// See `Store::record_presentation`.
    pub(crate) async fn record_presentation(
        &self,
        integration_id: i64,
        template_row: i64,
        version: (i64, i64),
        end_user: &EndUserId,
    ) -> Result<()> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        events::insert_presentation(
            &tx,
            integration_id,
            template_row,
            version,
            end_user.as_str(),
            Timestamp::now(),
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// See `Store::record_action`: decided from reads on a pooled connection given back at once,
    /// inserted by the node's batch (`pg::actions`) with the others that arrive meanwhile.
    pub(crate) async fn record_action(
        &self,
        integration_id: i64,
        template_id: &str,
        action: NewAction,
        now: Timestamp,
        language: impl FnOnce(&BTreeMap<Language, TemplateText>, &Language) -> Language,
    ) -> Result<std::result::Result<(), Unusable>> {
        let (usable, presented_at, language) = {
            let client = self.client().await?;
            let u = match usable(&client, integration_id, template_id, now).await? {
                Ok(u) => u,
                Err(why) => return Ok(Err(why)),
            };
            let user = action.end_user.as_str();
            let (presented_at, texts) = tokio::try_join!(
                events::latest_presentation(&client, u.row, user, u.version.major),
                templates::version_texts(&client, u.row, u.version.major, u.version.minor),
            )?;
            let language = language(&texts, &u.version.default_language);
            (u, presented_at, language)
        };
        super::batch::submit(&self.actions, "action", |reply| super::actions::Job {
            integration_id,
            action,
            usable,
            language,
            presented_at,
            now,
            reply,
        })
        .await?;
        Ok(Ok(()))
    }

    /// See `Store::verify_event`: the event marked verified with the next ledger position (under the
    /// ledger's lock, see `pg::ledger`), its link, and its delivery, committed together.
    pub(crate) async fn verify_event(
        &self,
        event_id: &str,
        integration_id: i64,
        expired: bool,
        payload: fn(&ClickwrapEvent) -> Vec<u8>,
    ) -> Result<Verification> {
        // Through the node's batch (`pg::batch`): with the others that arrive meanwhile.
        super::batch::submit(&self.verifies, "verify", |reply| super::batch::Job {
            event_id: event_id.to_string(),
            integration_id,
            expired,
            payload,
            reply,
        })
        .await
    }
}

/// One verify in its own transaction: marks the event, appends its link (under the ledger's lock,
/// held to the commit) and queues its delivery. `pg::batch` runs batches of these as one, and falls
/// back to this for each of a batch that failed.
pub(crate) async fn verify_alone(
    pool: &deadpool_postgres::Pool,
    event_id: &str,
    integration_id: i64,
    expired: bool,
    payload: fn(&ClickwrapEvent) -> Vec<u8>,
) -> Result<Verification> {
    {
        let mut client = pool.get().await?;
        let tx = client.transaction().await?;
        let now = Timestamp::now();
        let Some(target) = super::integrations::webhook_target(&tx, integration_id)
            .await?
            .filter(|t| !t.deleted)
        else {
            return Ok(Verification::NotOurs);
        };
        // The usual case in one statement; anything else is told apart below.
        let marked = match expired {
            false => {
                ledger::lock(&tx).await?;
                events::mark_verified(&tx, event_id, integration_id, now).await?
            }
            true => None,
        };
        let Some((verified, row)) = marked else {
            return Ok(match events::verify_facts(&tx, event_id).await? {
                None => Verification::NotOurs,
                Some(f) if f.integration_id != integration_id => Verification::NotOurs,
                Some(f) if f.verified || !expired => Verification::AlreadyVerified,
                Some(_) => Verification::Expired,
            });
        };
        // Proof of consent (issue #17): the event's link, in this same transaction.
        ledger::append(&tx, row).await?;
        if target.callback_url.is_some() {
            deliveries::insert(
                &tx,
                &NewDelivery {
                    delivery_id: &new_delivery_id(),
                    integration_id,
                    event_row: Some(row),
                    is_test: false,
                    event_type: EventType::ClickwrapEventVerified,
                    payload: &payload(&verified),
                    held: !target.sending,
                    at: now,
                },
            )
            .await?;
        }
        tx.commit().await?;
        Ok(Verification::Verified(verified))
    }
}

impl Postgres {
    /// See `Store::status_facts`.
    pub(crate) async fn status_facts(
        &self,
        integration_id: i64,
        end_user: &EndUserId,
        now: Timestamp,
    ) -> Result<Vec<StatusFacts>> {
        let client = self.client().await?;
        let mut out = Vec::new();
        for row in templates::visible_rows(&client, integration_id, &[]).await? {
            let (t, versions) = tokio::try_join!(
                templates::get_by_row(&client, row),
                templates::versions(&client, row),
            )?;
            let Some(t) = t else {
                continue;
            };
            let Some(version) = PublishedVersion::effective(&versions, now).cloned() else {
                continue;
            };
            let template = Usable {
                row,
                name: t.name.as_str().to_string(),
                always_reaccept: t.always_reaccept,
                version,
            };
            let user = user_facts(&client, &template, end_user.as_str()).await?;
            out.push(StatusFacts {
                template_id: t.template_id,
                tags: t.tags,
                template,
                user,
            });
        }
        Ok(out)
    }

    /// See `Store::verified_events`.
    pub(crate) async fn verified_events(
        &self,
        filter: Filter,
        cursor: Option<(Timestamp, String)>,
        limit: u32,
    ) -> Result<Vec<ClickwrapEvent>> {
        let client = self.client().await?;
        events::list_verified(&client, &filter, cursor, limit).await
    }

    /// See `Store::verified_event`.
    pub(crate) async fn verified_event(
        &self,
        integration_id: Option<i64>,
        event_id: &str,
    ) -> Result<Option<ClickwrapEvent>> {
        let client = self.client().await?;
        events::get_verified(&client, integration_id, event_id).await
    }

    /// See `Store::acceptances`.
    pub(crate) async fn acceptances(
        &self,
        integration_id: i64,
        template_ids: Vec<String>,
        end_users: Vec<EndUserId>,
        now: Timestamp,
    ) -> Result<Vec<std::result::Result<(Usable, Vec<bool>), Unusable>>> {
        let client = self.client().await?;
        let mut out = Vec::with_capacity(template_ids.len());
        for tid in &template_ids {
            let u = match usable(&client, integration_id, tid, now).await? {
                Ok(u) => u,
                Err(why) => {
                    out.push(Err(why));
                    continue;
                }
            };
            let mut accepted = Vec::with_capacity(end_users.len());
            for user in &end_users {
                let latest =
                    events::user_events(&client, u.row, user.as_str(), u.version.major).await?;
                accepted.push(
                    latest
                        .latest_verified
                        .is_some_and(|e| e.action == Action::Accepted),
                );
            }
            out.push(Ok((u, accepted)));
        }
        Ok(out)
    }

    /// See `Store::request_reaccept`.
    pub(crate) async fn request_reaccept(
        &self,
        pairs: Vec<(i64, EndUserId)>,
        reason: Option<String>,
    ) -> Result<()> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let now = Timestamp::now();
        for (row, user) in &pairs {
            events::request_reaccept(&tx, *row, user.as_str(), now, reason.as_deref()).await?;
        }
        tx.commit().await.map_err(StoreError::from)?;
        Ok(())
    }
}
