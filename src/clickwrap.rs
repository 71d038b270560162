//! The clickwrap flow (SPEC §3, §4): what an end user is shown (SDK GET, recorded as a presentation),
//! what they did (SDK POST, an unverified event and its signature), its verification by the customer's
//! backend (the event becomes final and its webhook delivery is written in the same transaction), the
//! consent status derived from all of that, the event list, and re-acceptance requests.
//!
//! Consent is a fact about an end user and a template in this workspace, not about the integration that
//! recorded it: an end user who accepted in the web app is not asked again in the mobile app. Event
//! lists and details, in contrast, show only the calling integration's events (as ClickTerm's do).

use std::collections::BTreeMap;

use crate::error::{Error, Result};
use crate::model::{
    Action, ClickwrapEvent, EndUserId, EventType, Language, PublishedVersion, TemplateText,
    Timestamp,
};
use crate::signature::{Invalid, SignatureKey};
use crate::store::Store;
use crate::store::consent::{NewAction, Unusable, Usable, UserFacts, Verification};
use crate::store::events::Filter;

const KEY_SETTING: &str = "clickwrap_signature_key";

/// The server's signature key, generated and stored at first start.
pub async fn signature_key(store: &Store) -> Result<SignatureKey> {
    let bytes = store
        .setting_or_create(KEY_SETTING, || SignatureKey::generate().as_bytes().to_vec())
        .await?;
    SignatureKey::from_bytes(&bytes).ok_or_else(|| {
        Error::Conflict("the stored clickwrap signature key is damaged (not 32 bytes)".into())
    })
}

/// Placeholder values an end user's text is rendered with: at most 50, names of letters, digits and
/// `_` (starting with a letter, at most 64), values at most 1000 characters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Placeholders(BTreeMap<String, String>);

impl Placeholders {
    pub const MAX: usize = 50;
    pub const MAX_VALUE_CHARS: usize = 1000;

    /// From a JSON object, or a string holding one (ClickTerm's `templatePlaceholders` is a JSON-encoded
    /// string); `null` is none. Numbers and booleans are kept as their text.
    pub fn from_json(value: &serde_json::Value) -> std::result::Result<Placeholders, String> {
        let object = match value {
            serde_json::Value::Null => return Ok(Placeholders::default()),
            serde_json::Value::String(s) if s.trim().is_empty() => {
                return Ok(Placeholders::default());
            }
            serde_json::Value::String(s) => serde_json::from_str::<serde_json::Value>(s)
                .map_err(|e| format!("is not a JSON object: {e}"))?,
            other => other.clone(),
        };
        let serde_json::Value::Object(map) = object else {
            return Err("must be a JSON object".into());
        };
        let mut out = Placeholders::default();
        for (k, v) in map {
            let text = match v {
                serde_json::Value::Null => continue,
                serde_json::Value::String(s) => s,
                serde_json::Value::Number(n) => n.to_string(),
                serde_json::Value::Bool(b) => b.to_string(),
                _ => return Err(format!("{k:?} must be a string")),
            };
            out.insert(&k, text)?;
        }
        Ok(out)
    }

    pub fn insert(&mut self, name: &str, value: String) -> std::result::Result<(), String> {
        let valid_name = name.len() <= 64
            && name.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid_name {
            return Err(format!("{name:?} is not a placeholder name"));
        }
        if value.chars().count() > Self::MAX_VALUE_CHARS {
            return Err(format!(
                "{name:?} must be at most {} characters",
                Self::MAX_VALUE_CHARS
            ));
        }
        self.0.insert(name.to_string(), value);
        if self.0.len() > Self::MAX {
            return Err(format!("at most {} placeholders", Self::MAX));
        }
        Ok(())
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Adds every value of `other`, with the same limits.
    pub fn merge(&mut self, other: Placeholders) -> std::result::Result<(), String> {
        other
            .0
            .into_iter()
            .try_for_each(|(k, v)| self.insert(&k, v))
    }

    /// The JSON text stored with an event (`templatePlaceholders`), or none.
    pub fn to_json_text(&self) -> Option<String> {
        (!self.0.is_empty()).then(|| serde_json::to_string(&self.0).expect("strings serialise"))
    }

    /// Replaces each `{{name}}` in `text` by its HTML-escaped value, or by a dash when there is none.
    /// Text that is not a placeholder (`{{ 1 + 1 }}`, a lone `{{`) is left as written.
    pub fn render(&self, text: &str) -> String {
        let mut out = String::with_capacity(text.len());
        let mut rest = text;
        while let Some(start) = rest.find("{{") {
            out.push_str(&rest[..start]);
            let after = &rest[start + 2..];
            let Some(end) = after.find("}}") else {
                out.push_str(&rest[start..]);
                return out;
            };
            let name = after[..end].trim();
            if !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                match self.0.get(name) {
                    Some(v) => out.push_str(&escape_html(v)),
                    None => out.push('-'),
                }
            } else {
                out.push_str(&rest[start..start + 2 + end + 2]);
            }
            rest = &after[end + 2..];
        }
        out.push_str(rest);
        out
    }
}

fn escape_html(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A live, enabled integration as the SDK endpoints see it.
pub struct SdkApp {
    pub id: i64,
    pub domains: Vec<crate::model::Domain>,
}

/// The integration behind a public App ID: 401 when unknown or deleted, 403 when disabled.
pub async fn sdk_app(store: &Store, app_id: &str) -> Result<SdkApp> {
    let facts = store.integration_facts(app_id).await?;
    match facts {
        None => Err(Error::Unauthorized("unknown App ID".into())),
        Some(f) if !f.enabled => Err(Error::Forbidden {
            code: "integration_disabled",
            message: "this integration is disabled".into(),
        }),
        Some(f) => Ok(SdkApp {
            id: f.id,
            domains: f.domains,
        }),
    }
}

/// Why an integration may not use a template, as its caller hears it.
fn unusable(why: Unusable) -> Error {
    match why {
        Unusable::Unavailable => {
            Error::NotFound("template (unknown, disabled or not yet effective)")
        }
        Unusable::NotLinked => Error::Forbidden {
            code: "template_not_linked",
            message: "this template is not linked to this integration".into(),
        },
    }
}

/// Whether the end user must be asked (again) for the effective major version: no verified acceptance
/// of it, a re-acceptance requested since, or a template that always asks. Returns
/// `(already_accepted, reaccept_required)`.
fn acceptance(u: &Usable, user: &UserFacts) -> (bool, bool) {
    let accepted_at = user
        .events
        .latest_verified
        .as_ref()
        .filter(|e| e.action == Action::Accepted)
        .map(|e| e.action_at);
    let reaccept_required = u.always_reaccept
        || matches!((accepted_at, user.reaccept_requested_at), (Some(a), Some(r)) if r > a);
    let already_accepted = accepted_at.is_some() && !reaccept_required;
    (already_accepted, reaccept_required)
}

/// What the SDK shows an end user.
pub struct Presented {
    pub template_id: String,
    pub template_name: String,
    pub version: PublishedVersion,
    pub language: Language,
    pub title: String,
    pub content: String,
    pub inline_content: Option<String>,
    pub is_already_accepted: bool,
    pub reaccept_required: bool,
}

/// Renders the effective version for an end user in `language` (falling back to its primary language,
/// then the version's default) and records the presentation.
pub async fn present(
    store: &Store,
    app: &SdkApp,
    template_id: &str,
    end_user: EndUserId,
    language: Option<Language>,
    placeholders: Placeholders,
) -> Result<Presented> {
    let facing = store
        .facing(app.id, template_id, &end_user, Timestamp::now())
        .await?
        .map_err(unusable)?;
    let u = &facing.template;
    let text = preview(
        &facing.texts,
        language.as_ref(),
        &u.version.default_language,
        &placeholders,
    )
    .ok_or(Error::NotFound("template text"))?;
    let (is_already_accepted, reaccept_required) = acceptance(u, &facing.user);
    let version = (u.version.major, u.version.minor);
    // Everything was read on the pool; the writer is asked only when a presentation must be recorded.
    if needs_presentation(version, &facing.user) {
        store
            .record_presentation(app.id, u.row, version, &end_user)
            .await?;
    }
    Ok(Presented {
        template_id: template_id.to_string(),
        template_name: u.name.clone(),
        title: text.title,
        content: text.content,
        inline_content: text.inline_content,
        version: u.version.clone(),
        language: text.language,
        is_already_accepted,
        reaccept_required,
    })
}

/// Whether showing this version to the end user must be recorded: not when the latest presentation
/// to them is of this very version and came after their latest action on its major version. That one
/// already answers `PENDING` and its `presentedAt`, so an end user reloading the page — or a client
/// asking a thousand times — adds no row.
fn needs_presentation(version: (i64, i64), user: &UserFacts) -> bool {
    let Some(last) = &user.last_presentation else {
        return true;
    };
    let last_action = [&user.events.latest_verified, &user.events.latest_unverified]
        .into_iter()
        .flatten()
        .map(|e| e.action_at)
        .max();
    last.version != version || last_action.is_some_and(|acted| acted >= last.at)
}

/// A template text as an end user would see it.
pub struct Rendered {
    pub language: Language,
    pub title: String,
    pub content: String,
    pub inline_content: Option<String>,
}

/// Renders texts in `language` (falling back to its primary language, then `default`) with the
/// placeholders: what [`present`] shows an end user, and the dashboard's preview of a draft before
/// it is published (recording nothing).
pub fn preview(
    texts: &BTreeMap<Language, TemplateText>,
    language: Option<&Language>,
    default: &Language,
    placeholders: &Placeholders,
) -> Option<Rendered> {
    let (language, text) = pick_text(texts, language, default)?;
    Some(Rendered {
        language,
        title: placeholders.render(&text.title),
        content: placeholders.render(&text.content),
        inline_content: text
            .inline_content
            .as_deref()
            .map(|t| placeholders.render(t)),
    })
}

fn pick_text<'a>(
    texts: &'a BTreeMap<Language, TemplateText>,
    wanted: Option<&Language>,
    default: &Language,
) -> Option<(Language, &'a TemplateText)> {
    if let Some(w) = wanted {
        if let Some(t) = texts.get(w) {
            return Some((w.clone(), t));
        }
        if let Some((l, t)) = texts.iter().find(|(l, _)| l.as_str() == w.primary()) {
            return Some((l.clone(), t));
        }
    }
    texts
        .get(default)
        .map(|t| (default.clone(), t))
        .or_else(|| texts.iter().next().map(|(l, t)| (l.clone(), t)))
}

/// An end user's action, recorded unverified.
pub struct Acted {
    pub event_id: String,
    pub signature: String,
}

/// Records ACCEPTED or DECLINED on the effective version as an unverified event and issues its signature.
#[allow(clippy::too_many_arguments)]
pub async fn act(
    store: &Store,
    key: &SignatureKey,
    app: &SdkApp,
    template_id: &str,
    end_user: EndUserId,
    action: Action,
    placeholders: Placeholders,
    language: Option<Language>,
    technical_metadata: String,
) -> Result<Acted> {
    let now = Timestamp::now();
    let event = uuid::Uuid::new_v4();
    let new = NewAction {
        event_id: event.to_string(),
        end_user,
        action,
        template_placeholders: placeholders.to_json_text(),
        technical_metadata,
    };
    store
        .record_action(app.id, template_id, new, now, move |texts, default| {
            pick_text(texts, language.as_ref(), default)
                .map(|(l, _)| l)
                .unwrap_or_else(|| default.clone())
        })
        .await?
        .map_err(unusable)?;
    Ok(Acted {
        signature: key.issue(event, now),
        event_id: event.to_string(),
    })
}

/// The webhook body for a verified event (SPEC §5.2), byte for byte what every attempt sends.
pub fn webhook_payload(e: &ClickwrapEvent) -> Vec<u8> {
    // Field order as in the seed's example; serde_json keeps struct order.
    #[derive(serde::Serialize)]
    #[serde(rename_all = "camelCase")]
    struct Data<'a> {
        clickwrap_event_id: &'a str,
        clickwrap_template_id: &'a str,
        clickwrap_template_version: i64,
        clickwrap_template_version_minor: i64,
        end_user_id: &'a str,
        template_placeholders: Option<&'a str>,
        technical_metadata: &'a str,
        action_at: String,
        effective_at: String,
        clickwrap_event_status: &'static str,
    }
    #[derive(serde::Serialize)]
    #[serde(rename_all = "camelCase")]
    struct Body<'a> {
        event_type: &'static str,
        data: Data<'a>,
    }
    serde_json::to_vec(&Body {
        event_type: EventType::ClickwrapEventVerified.as_str(),
        data: Data {
            clickwrap_event_id: &e.event_id,
            clickwrap_template_id: &e.template_id,
            clickwrap_template_version: e.major,
            clickwrap_template_version_minor: e.minor,
            end_user_id: &e.end_user_id,
            template_placeholders: e.template_placeholders.as_deref(),
            technical_metadata: &e.technical_metadata,
            action_at: e.action_at.to_rfc3339(),
            effective_at: e.effective_at.to_rfc3339(),
            clickwrap_event_status: e.action.as_str(),
        },
    })
    .expect("the payload serialises")
}

/// Verifies a signature for the calling integration: genuine (400 otherwise), this integration's (400),
/// not yet used (409), unexpired (410). The event becomes final and, when the integration has a
/// callback URL, its delivery row is written in the same transaction: both or neither.
pub async fn verify(
    store: &Store,
    key: &SignatureKey,
    integration_id: i64,
    token: &str,
    ttl_secs: u64,
) -> Result<ClickwrapEvent> {
    // A forged signature and another integration's genuine one get the very same answer, so a caller
    // cannot learn which events exist elsewhere.
    let not_ours = || {
        Error::invalid(
            "clicktermSignature",
            "is not a genuine signature issued to this integration",
        )
    };
    let (event, issued) = key.open(token).map_err(|why| match why {
        Invalid::Malformed => Error::invalid("clicktermSignature", "is not a clicktermSignature"),
        Invalid::Forged => not_ours(),
    })?;
    let expired = issued.plus_secs(ttl_secs) < Timestamp::now();
    // Told apart in the order a caller should hear it: not ours, already verified, expired.
    match store
        .verify_event(&event.to_string(), integration_id, expired, webhook_payload)
        .await?
    {
        Verification::Verified(e) => Ok(e),
        Verification::NotOurs => Err(not_ours()),
        Verification::AlreadyVerified => Err(Error::Conflict(
            "this clicktermSignature was already verified".into(),
        )),
        Verification::Expired => Err(Error::Gone("this clicktermSignature has expired".into())),
    }
}

/// One template's consent status for an end user (SPEC §3).
pub struct StatusEntry {
    pub template_id: String,
    pub template_name: String,
    pub tags: Vec<String>,
    pub version: PublishedVersion,
    pub status: &'static str,
    pub event_id: Option<String>,
    pub last_update: Option<Timestamp>,
    pub reaccept_required: bool,
}

/// The end user's status on every template visible to the integration that has an effective version.
/// Only the effective major version counts: actions on older majors read as NO_DATA.
pub async fn status(
    store: &Store,
    integration_id: i64,
    end_user: EndUserId,
) -> Result<Vec<StatusEntry>> {
    let now = Timestamp::now();
    let facts = store.status_facts(integration_id, &end_user, now).await?;
    Ok(facts
        .into_iter()
        .map(|f| {
            let (u, user) = (&f.template, &f.user);
            let (_, reaccept_required) = acceptance(u, user);
            let overdue = u.version.must_accept_by.is_some_and(|m| m < now);
            let (status, event_id, last_update) = if let Some(e) = &user.events.latest_verified {
                (
                    e.action.as_str(),
                    Some(e.event_id.clone()),
                    Some(e.action_at),
                )
            } else if let Some(e) = &user.events.latest_unverified {
                ("UNVERIFIED", Some(e.event_id.clone()), Some(e.action_at))
            } else if overdue {
                ("OVERDUE", None, user.presented_at)
            } else if let Some(p) = user.presented_at {
                ("PENDING", None, Some(p))
            } else {
                ("NO_DATA", None, None)
            };
            StatusEntry {
                template_id: f.template_id,
                template_name: f.template.name,
                tags: f.tags.iter().map(|t| t.as_str().to_string()).collect(),
                version: f.template.version,
                status,
                event_id,
                last_update,
                reaccept_required,
            }
        })
        .collect())
}

/// A page of verified events and the cursor of the next page (none on the last).
pub struct Page {
    pub items: Vec<ClickwrapEvent>,
    pub next: Option<String>,
}

/// The opaque keyset cursor: base64url of `"<actionAt ms>:<eventId>"`.
pub fn encode_cursor(e: &ClickwrapEvent) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!(
        "{}:{}",
        e.action_at.millis(),
        e.event_id
    ))
}

pub fn decode_cursor(s: &str) -> Option<(Timestamp, String)> {
    use base64::Engine;
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(s)
        .ok()?;
    let text = String::from_utf8(raw).ok()?;
    let (at, id) = text.split_once(':')?;
    let id = uuid::Uuid::parse_str(id).ok()?;
    Some((Timestamp(at.parse().ok()?), id.to_string()))
}

/// Verified events newest first (ties by id), after `cursor`.
pub async fn list_events(
    store: &Store,
    filter: Filter,
    cursor: Option<(Timestamp, String)>,
    limit: u32,
) -> Result<Page> {
    let mut items = store.verified_events(filter, cursor, limit + 1).await?;
    let more = items.len() > limit as usize;
    items.truncate(limit as usize);
    let next = if more {
        items.last().map(encode_cursor)
    } else {
        None
    };
    Ok(Page { items, next })
}

pub async fn event_details(
    store: &Store,
    integration_id: Option<i64>,
    event_id: &str,
) -> Result<ClickwrapEvent> {
    store
        .verified_event(integration_id, event_id)
        .await?
        .ok_or(Error::NotFound("clickwrap event"))
}

/// The outcome of a re-acceptance request for one (end user, template) pair.
pub struct ReacceptResult {
    pub end_user_id: String,
    pub template_id: String,
    pub requested: bool,
    pub reason: Option<&'static str>,
}

/// Asks each end user to accept each template again, where they have accepted its effective major.
/// End user × template pairs one re-accept may ask for: each pair is read and maybe written in one
/// transaction, so this bounds how long one request holds the writer.
pub const MAX_REACCEPT_PAIRS: usize = 1000;

pub async fn reaccept(
    store: &Store,
    integration_id: i64,
    end_users: Vec<EndUserId>,
    template_ids: Vec<String>,
    reason: Option<String>,
) -> Result<Vec<ReacceptResult>> {
    // Who qualifies is decided on the read pool; the writer is given only the requests to record, so
    // a large re-accept asking mostly about users who never accepted costs the writer nothing.
    let found = store
        .acceptances(
            integration_id,
            template_ids.clone(),
            end_users.clone(),
            Timestamp::now(),
        )
        .await?;
    let mut out = Vec::new();
    let mut to_record = Vec::new();
    for (tid, found) in template_ids.iter().zip(found) {
        for (i, user) in end_users.iter().enumerate() {
            let (requested, why) = match &found {
                Err(_) => (false, Some("template_unavailable")),
                Ok((u, accepted)) if accepted[i] => {
                    to_record.push((u.row, user.clone()));
                    (true, None)
                }
                Ok(_) => (false, Some("no_prior_acceptance")),
            };
            out.push(ReacceptResult {
                end_user_id: user.as_str().to_string(),
                template_id: tid.clone(),
                requested,
                reason: why,
            });
        }
    }
    if !to_record.is_empty() {
        store.request_reaccept(to_record, reason).await?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_render_escaped_with_dashes_for_missing() {
        let p = Placeholders::from_json(&serde_json::json!(
            "{\"fullName\":\"<b>Ann</b> & co\",\"n\":3}"
        ))
        .unwrap();
        assert_eq!(
            p.render("Hi {{fullName}}, {{ company }}! {{n}} {{ 1 + 1 }} {{"),
            "Hi &lt;b&gt;Ann&lt;/b&gt; &amp; co, -! 3 {{ 1 + 1 }} {{"
        );
        assert_eq!(
            p.to_json_text().unwrap(),
            r#"{"fullName":"<b>Ann</b> & co","n":"3"}"#
        );
        assert!(
            Placeholders::from_json(&serde_json::Value::Null)
                .unwrap()
                .is_empty()
        );
        assert!(Placeholders::from_json(&serde_json::json!("[1]")).is_err());
        assert!(Placeholders::from_json(&serde_json::json!({"bad name": "x"})).is_err());
        assert!(Placeholders::from_json(&serde_json::json!({"x": "y".repeat(1001)})).is_err());
        assert!(Placeholders::from_json(&serde_json::json!({"x": {"nested": 1}})).is_err());
    }

    #[test]
    fn cursors_round_trip_and_refuse_garbage() {
        let e = ClickwrapEvent {
            event_id: uuid::Uuid::new_v4().to_string(),
            app_id: String::new(),
            template_id: String::new(),
            major: 1,
            minor: 0,
            effective_at: Timestamp(0),
            end_user_id: "u".into(),
            action: Action::Accepted,
            template_placeholders: None,
            technical_metadata: "{}".into(),
            presented_at: None,
            action_at: Timestamp(1234),
            verified_at: None,
        };
        assert_eq!(
            decode_cursor(&encode_cursor(&e)),
            Some((Timestamp(1234), e.event_id.clone()))
        );
        for bad in ["", "!!", "MTIzNA", "eDp5"] {
            assert_eq!(decode_cursor(bad), None, "{bad}");
        }
    }
}
