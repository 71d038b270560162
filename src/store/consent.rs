//! The clickwrap flow's reads and writes as operations: what an end user faces on a template, their
//! action recorded, its verification with its delivery, their consent status, re-acceptance requests.
//! The rules that decide on these facts (which text, whether to ask again, what the status is, which
//! refusal a caller hears) are `clickwrap`'s; the operations gather the facts in one read or change
//! them in one transaction.

use std::collections::BTreeMap;

use rusqlite::Connection;

use super::deliveries::{self, NewDelivery};
use super::events::{self, Filter, LastPresentation, NewEvent, UserEvents};
use super::{Backend, Result, Store, integrations, settings, templates};
use crate::model::{
    Action, ClickwrapEvent, EndUserId, EventType, Language, PublishedVersion, Tag, TemplateText,
    Timestamp,
};

/// A template an integration may use now, with its effective version.
pub struct Usable {
    /// The template's row (what presentations, events and requests point at).
    pub row: i64,
    pub name: String,
    pub always_reaccept: bool,
    pub version: PublishedVersion,
}

/// Why an integration may not use a template now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unusable {
    /// Unknown, disabled, or with no effective version.
    Unavailable,
    /// Not linked to this integration.
    NotLinked,
}

/// What an end user has done with a template's effective major.
pub struct UserFacts {
    pub events: UserEvents,
    pub reaccept_requested_at: Option<Timestamp>,
    /// The latest presentation of any version of the template.
    pub last_presentation: Option<LastPresentation>,
    /// The latest presentation of a version of the effective major.
    pub presented_at: Option<Timestamp>,
}

/// What the SDK GET decides on: the template, the effective version's texts and the end user's facts.
pub struct Facing {
    pub template: Usable,
    pub texts: BTreeMap<Language, TemplateText>,
    pub user: UserFacts,
}

/// One template's facts for the consent status.
pub struct StatusFacts {
    pub template_id: String,
    pub tags: Vec<Tag>,
    pub template: Usable,
    pub user: UserFacts,
}

/// An end user's action to record, unverified.
pub struct NewAction {
    pub event_id: String,
    pub end_user: EndUserId,
    pub action: Action,
    pub template_placeholders: Option<String>,
    pub technical_metadata: String,
}

impl NewAction {
    /// The event row this action on `u` becomes, in `language`, `presented_at` its latest
    /// presentation, at `now`: one construction for both stores.
    pub(crate) fn event<'a>(
        &'a self,
        integration_id: i64,
        u: &Usable,
        language: &'a Language,
        presented_at: Option<Timestamp>,
        now: Timestamp,
    ) -> NewEvent<'a> {
        NewEvent {
            event_id: &self.event_id,
            integration_id,
            template_row: u.row,
            major: u.version.major,
            minor: u.version.minor,
            effective_at: u.version.effective_at,
            end_user_id: self.end_user.as_str(),
            action: self.action,
            template_placeholders: self.template_placeholders.as_deref(),
            technical_metadata: &self.technical_metadata,
            language: language.as_str(),
            presented_at,
            action_at: now,
        }
    }
}

/// What a verification found. (Returned once per verify, never stored: the size of its largest
/// variant costs nothing, a box would cost an allocation.)
#[allow(clippy::large_enum_variant)]
pub enum Verification {
    /// Verified now; its delivery, if the integration has a callback URL, is queued with it.
    Verified(ClickwrapEvent),
    /// No such event, another integration's, or an integration deleted meanwhile.
    NotOurs,
    AlreadyVerified,
    Expired,
}

fn usable(
    c: &Connection,
    integration_id: i64,
    template_id: &str,
    now: Timestamp,
) -> Result<std::result::Result<Usable, Unusable>> {
    let Some(row) = templates::row_id(c, template_id)? else {
        return Ok(Err(Unusable::Unavailable));
    };
    let Some(flags) = templates::flags(c, row)?.filter(|f| f.enabled) else {
        return Ok(Err(Unusable::Unavailable));
    };
    if !templates::is_visible(c, row, integration_id)? {
        return Ok(Err(Unusable::NotLinked));
    }
    let versions = templates::versions(c, row)?;
    let Some(version) = PublishedVersion::effective(&versions, now).cloned() else {
        return Ok(Err(Unusable::Unavailable));
    };
    Ok(Ok(Usable {
        row,
        name: flags.name,
        always_reaccept: flags.always_reaccept,
        version,
    }))
}

fn user_facts(c: &Connection, u: &Usable, end_user: &str) -> Result<UserFacts> {
    Ok(UserFacts {
        events: events::user_events(c, u.row, end_user, u.version.major)?,
        reaccept_requested_at: events::reaccept_requested_at(c, u.row, end_user)?,
        last_presentation: events::last_presentation(c, u.row, end_user)?,
        presented_at: events::latest_presentation(c, u.row, end_user, u.version.major)?,
    })
}

impl Store {
    /// The value under `key` in the server's settings, made by `make` and stored if there is none
    /// yet (in a write, so two processes starting at once agree on one value).
    pub async fn setting_or_create(
        &self,
        key: &'static str,
        make: impl FnOnce() -> Vec<u8> + Send + 'static,
    ) -> Result<Vec<u8>> {
        match self.backend() {
            Backend::Sqlite(s) => {
                s.write(move |c| settings::get_or_create(c, key, make))
                    .await
            }
            Backend::Postgres(p) => p.setting_or_create(key, make).await,
        }
    }

    /// What an end user faces on a template, for an integration, at `now`.
    pub async fn facing(
        &self,
        integration_id: i64,
        template_id: &str,
        end_user: &EndUserId,
        now: Timestamp,
    ) -> Result<std::result::Result<Facing, Unusable>> {
        let (template_id, user) = (template_id.to_string(), end_user.clone());
        match self.backend() {
            Backend::Sqlite(s) => {
                s.read(move |c| {
                    let template = match usable(c, integration_id, &template_id, now)? {
                        Ok(u) => u,
                        Err(why) => return Ok(Err(why)),
                    };
                    let v = &template.version;
                    let texts = templates::version_texts(c, template.row, v.major, v.minor)?;
                    let user = user_facts(c, &template, user.as_str())?;
                    Ok(Ok(Facing {
                        template,
                        texts,
                        user,
                    }))
                })
                .await
            }
            Backend::Postgres(p) => p.facing(integration_id, &template_id, end_user, now).await,
        }
    }

    /// Records that `version` of the template was shown to the end user.
    pub async fn record_presentation(
        &self,
        integration_id: i64,
        template_row: i64,
        version: (i64, i64),
        end_user: &EndUserId,
    ) -> Result<()> {
        let user = end_user.clone();
        match self.backend() {
            Backend::Sqlite(s) => {
                s.write(move |c| {
                    events::insert_presentation(
                        c,
                        integration_id,
                        template_row,
                        version,
                        user.as_str(),
                        Timestamp::now(),
                    )
                })
                .await
            }
            Backend::Postgres(p) => {
                p.record_presentation(integration_id, template_row, version, end_user)
                    .await
            }
        }
    }

    /// Records an end user's action on the template's version effective at `now` (acted at `now`),
    /// in the language `language` picks from that version's texts.
    pub async fn record_action(
        &self,
        integration_id: i64,
        template_id: &str,
        action: NewAction,
        now: Timestamp,
        language: impl FnOnce(&BTreeMap<Language, TemplateText>, &Language) -> Language + Send + 'static,
    ) -> Result<std::result::Result<(), Unusable>> {
        let template_id = template_id.to_string();
        match self.backend() {
            Backend::Sqlite(s) => {
                s.write(move |c| {
                    let u = match usable(c, integration_id, &template_id, now)? {
                        Ok(u) => u,
                        Err(why) => return Ok(Err(why)),
                    };
                    let user = action.end_user.as_str();
                    let presented_at =
                        events::latest_presentation(c, u.row, user, u.version.major)?;
                    let texts =
                        templates::version_texts(c, u.row, u.version.major, u.version.minor)?;
                    let language = language(&texts, &u.version.default_language);
                    events::insert_event(
                        c,
                        &action.event(integration_id, &u, &language, presented_at, now),
                    )?;
                    Ok(Ok(()))
                })
                .await
            }
            Backend::Postgres(p) => {
                p.record_action(integration_id, &template_id, action, now, language)
                    .await
            }
        }
    }

    /// Verifies the integration's event `event_id` — unless its signature `expired` — and, when the
    /// integration has a callback URL, queues the delivery of `payload(event)` in the same
    /// transaction (held if it may not be sent now): both or neither.
    pub async fn verify_event(
        &self,
        event_id: &str,
        integration_id: i64,
        expired: bool,
        payload: fn(&ClickwrapEvent) -> Vec<u8>,
    ) -> Result<Verification> {
        let event_id = event_id.to_string();
        match self.backend() {
            Backend::Sqlite(s) => {
                s.write(move |c| {
                    let now = Timestamp::now();
                    let Some(target) =
                        integrations::webhook_target(c, integration_id)?.filter(|t| !t.deleted)
                    else {
                        return Ok(Verification::NotOurs);
                    };
                    // The usual case in one statement; anything else is told apart below.
                    let marked = match expired {
                        false => events::mark_verified(c, &event_id, integration_id, now)?,
                        true => None,
                    };
                    let Some(marked) = marked else {
                        return Ok(match events::verify_facts(c, &event_id)? {
                            None => Verification::NotOurs,
                            Some(f) if f.integration_id != integration_id => Verification::NotOurs,
                            Some(f) if f.verified || !expired => Verification::AlreadyVerified,
                            Some(_) => Verification::Expired,
                        });
                    };
                    // Proof of consent (issue #17): the event's link, in this same transaction.
                    super::ledger::append(c, &marked)?;
                    if target.callback_url.is_some() {
                        deliveries::insert(
                            c,
                            &NewDelivery {
                                delivery_id: &deliveries::new_delivery_id(),
                                integration_id,
                                event_row: Some(marked.row),
                                is_test: false,
                                event_type: EventType::ClickwrapEventVerified,
                                payload: &payload(&marked.event),
                                held: !target.sending,
                                at: now,
                            },
                        )?;
                    }
                    Ok(Verification::Verified(marked.event))
                })
                .await
            }
            Backend::Postgres(p) => {
                p.verify_event(&event_id, integration_id, expired, payload)
                    .await
            }
        }
    }

    /// The facts of every template visible to the integration that has an effective version at `now`,
    /// for the end user's consent status.
    pub async fn status_facts(
        &self,
        integration_id: i64,
        end_user: &EndUserId,
        now: Timestamp,
    ) -> Result<Vec<StatusFacts>> {
        let user = end_user.clone();
        match self.backend() {
            Backend::Sqlite(s) => {
                s.read(move |c| {
                    let mut out = Vec::new();
                    for row in templates::visible_rows(c, integration_id, &[])? {
                        let Some(t) = templates::get_by_row(c, row)? else {
                            continue;
                        };
                        let versions = templates::versions(c, row)?;
                        let Some(version) = PublishedVersion::effective(&versions, now).cloned()
                        else {
                            continue;
                        };
                        let template = Usable {
                            row,
                            name: t.name.as_str().to_string(),
                            always_reaccept: t.always_reaccept,
                            version,
                        };
                        let user = user_facts(c, &template, user.as_str())?;
                        out.push(StatusFacts {
                            template_id: t.template_id,
                            tags: t.tags,
                            template,
                            user,
                        });
                    }
                    Ok(out)
                })
                .await
            }
            Backend::Postgres(p) => p.status_facts(integration_id, end_user, now).await,
        }
    }

    /// Verified events newest first (ties by id), strictly after `cursor`; at most `limit`.
    pub async fn verified_events(
        &self,
        filter: Filter,
        cursor: Option<(Timestamp, String)>,
        limit: u32,
    ) -> Result<Vec<ClickwrapEvent>> {
        match self.backend() {
            Backend::Sqlite(s) => {
                s.read(move |c| {
                    events::list_verified(
                        c,
                        &filter,
                        cursor.as_ref().map(|(t, id)| (*t, id.as_str())),
                        limit,
                    )
                })
                .await
            }
            Backend::Postgres(p) => p.verified_events(filter, cursor, limit).await,
        }
    }

    /// A verified event by its public id: of one integration, or (admin) of any.
    pub async fn verified_event(
        &self,
        integration_id: Option<i64>,
        event_id: &str,
    ) -> Result<Option<ClickwrapEvent>> {
        let id = event_id.to_string();
        match self.backend() {
            Backend::Sqlite(s) => {
                s.read(move |c| events::get_verified(c, integration_id, &id))
                    .await
            }
            Backend::Postgres(p) => p.verified_event(integration_id, event_id).await,
        }
    }

    /// For each template id (in order): whether the integration may use it at `now`, and for each end
    /// user (in order) whether their latest verified action on its effective major is an acceptance.
    pub async fn acceptances(
        &self,
        integration_id: i64,
        template_ids: Vec<String>,
        end_users: Vec<EndUserId>,
        now: Timestamp,
    ) -> Result<Vec<std::result::Result<(Usable, Vec<bool>), Unusable>>> {
        match self.backend() {
            Backend::Sqlite(s) => {
                s.read(move |c| {
                    let mut out = Vec::with_capacity(template_ids.len());
                    for tid in &template_ids {
                        let u = match usable(c, integration_id, tid, now)? {
                            Ok(u) => u,
                            Err(why) => {
                                out.push(Err(why));
                                continue;
                            }
                        };
                        let mut accepted = Vec::with_capacity(end_users.len());
                        for user in &end_users {
                            let latest =
                                events::user_events(c, u.row, user.as_str(), u.version.major)?;
                            accepted.push(
                                latest
                                    .latest_verified
                                    .is_some_and(|e| e.action == Action::Accepted),
                            );
                        }
                        out.push(Ok((u, accepted)));
                    }
                    Ok(out)
                })
                .await
            }
            Backend::Postgres(p) => {
                p.acceptances(integration_id, template_ids, end_users, now)
                    .await
            }
        }
    }

    /// Records re-acceptance requests for (template row, end user) pairs, in one transaction.
    pub async fn request_reaccept(
        &self,
        pairs: Vec<(i64, EndUserId)>,
        reason: Option<String>,
    ) -> Result<()> {
        match self.backend() {
            Backend::Sqlite(s) => {
                s.write(move |c| {
                    let now = Timestamp::now();
                    for (row, user) in &pairs {
                        events::request_reaccept(c, *row, user.as_str(), now, reason.as_deref())?;
                    }
                    Ok(())
                })
                .await
            }
            Backend::Postgres(p) => p.request_reaccept(pairs, reason).await,
        }
    }
}
