//! Domain types: what an integration, a timestamp or an allowed domain *is*, parsed once at the edge and
//! passed around as types afterwards. No IO, no serde, no SQL here; `http` maps wire shapes onto these and
//! `store` maps rows onto them.

use std::fmt;

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// A closed vocabulary: an enum each of whose values has one spelling, the same on the wire, in the
/// database and in the metrics. The spelling is written here and nowhere else; `parse` is its inverse
/// and `ALL` lists the values in order (for checks and for "one of …" messages).
macro_rules! vocabulary {
    ($(#[$meta:meta])* pub enum $name:ident { $($(#[$vmeta:meta])* $variant:ident = $wire:literal,)+ }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$vmeta])* $variant,)+
        }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            pub const fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $wire,)+
                }
            }

            pub fn parse(s: &str) -> Option<$name> {
                match s {
                    $($wire => Some($name::$variant),)+
                    _ => None,
                }
            }

            /// Every spelling, comma-separated, for a message that names the allowed values.
            pub fn spellings() -> String {
                Self::ALL.iter().map(|v| v.as_str()).collect::<Vec<_>>().join(", ")
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

/// An instant in UTC with millisecond precision, stored as Unix milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(pub i64);

impl Timestamp {
    pub fn now() -> Timestamp {
        let now = OffsetDateTime::now_utc();
        Timestamp((now.unix_timestamp_nanos() / 1_000_000) as i64)
    }

    pub fn millis(self) -> i64 {
        self.0
    }

    pub fn plus_secs(self, secs: u64) -> Timestamp {
        Timestamp(self.0.saturating_add((secs as i64).saturating_mul(1000)))
    }

    /// ISO-8601 in UTC with a `Z`, as ClickTerm writes it: seconds, and milliseconds only when non-zero.
    /// On every event, delivery and evidence: the digits are written straight into a string of the
    /// right size (years 0–9999; any other falls back to `format!`, which writes the sign and width).
    pub fn to_rfc3339(self) -> String {
        let t = OffsetDateTime::from_unix_timestamp(self.0.div_euclid(1000))
            .unwrap_or(OffsetDateTime::UNIX_EPOCH);
        let (y, mo, d) = t.to_calendar_date();
        let (h, mi, s) = t.to_hms();
        let (mo, ms) = (mo as u8, self.0.rem_euclid(1000));
        if !(0..=9999).contains(&y) {
            return match ms {
                0 => format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}Z"),
                _ => format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{ms:03}Z"),
            };
        }
        fn digits(out: &mut String, value: u32, width: u32) {
            for place in (0..width).rev() {
                out.push(char::from(b'0' + (value / 10u32.pow(place) % 10) as u8));
            }
        }
        let mut out = String::with_capacity(24);
        for (value, width, after) in [
            (y as u32, 4, '-'),
            (mo.into(), 2, '-'),
            (d.into(), 2, 'T'),
            (h.into(), 2, ':'),
            (mi.into(), 2, ':'),
        ] {
            digits(&mut out, value, width);
            out.push(after);
        }
        digits(&mut out, s.into(), 2);
        if ms != 0 {
            out.push('.');
            digits(&mut out, ms as u32, 3);
        }
        out.push('Z');
        out
    }

    /// Parses an RFC 3339 timestamp with any offset; sub-millisecond digits are dropped.
    pub fn parse_rfc3339(s: &str) -> Option<Timestamp> {
        let t = OffsetDateTime::parse(s, &Rfc3339).ok()?;
        Some(Timestamp((t.unix_timestamp_nanos() / 1_000_000) as i64))
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_rfc3339())
    }
}

vocabulary! {
    /// Whether an integration's App Key is accepted.
    pub enum IntegrationStatus {
        Enabled = "ENABLED",
        Disabled = "DISABLED",
    }
}

impl IntegrationStatus {
    /// Whether an integration's webhooks may be sent now: it is enabled and its delivery is switched
    /// on. The one statement of the rule: the dispatcher, verify and the test webhook all ask it
    /// (through `store::integrations::webhook_target`); otherwise its deliveries are held.
    pub fn sends_webhooks(self, webhook_delivery_enabled: bool) -> bool {
        self == IntegrationStatus::Enabled && webhook_delivery_enabled
    }
}

/// Who made an admin change, as the audit log records it: the admin's name (`admin`,
/// `token:deploy`, `cli`) and the client address the change came from (none on the command line).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor {
    pub name: String,
    pub from: Option<std::net::IpAddr>,
}

vocabulary! {
    /// What an admin user or token may do (ClickTerm's workspace has Owner / Admin / Member): a
    /// `Viewer` reads everything but secrets and changes nothing, an `Admin` does everything but
    /// manage users, an `Owner` also manages users.
    pub enum Role {
        Owner = "owner",
        Admin = "admin",
        Viewer = "viewer",
    }
}

impl Role {
    fn rank(self) -> u8 {
        match self {
            Role::Viewer => 0,
            Role::Admin => 1,
            Role::Owner => 2,
        }
    }

    /// Whether this role may do what `needed` may.
    pub fn allows(self, needed: Role) -> bool {
        self.rank() >= needed.rank()
    }
}

impl Actor {
    /// An actor on this machine: the command line.
    pub fn local(name: &str) -> Actor {
        Actor {
            name: name.to_string(),
            from: None,
        }
    }
}

impl fmt::Display for Actor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)
    }
}

/// A connected application, as the admin sees it. Credentials are not part of it: the App Key exists
/// only as a digest and the signing secret is read on purpose, never by accident.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Integration {
    pub app_id: String,
    pub name: Name,
    pub status: IntegrationStatus,
    pub domains: Vec<Domain>,
    pub created_at: Timestamp,
    pub callback_url: Option<CallbackUrl>,
    pub webhook_delivery_enabled: bool,
}

/// A display name: trimmed, 1–100 characters, no control characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Name(String);

impl Name {
    pub const MAX_CHARS: usize = 100;

    pub fn parse(raw: &str) -> Result<Name, String> {
        let name = raw.trim();
        if name.is_empty() {
            return Err("must not be empty".into());
        }
        if name.chars().count() > Self::MAX_CHARS {
            return Err(format!("must be at most {} characters", Self::MAX_CHARS));
        }
        if let Some(c) = name.chars().find(|&c| is_hidden(c)) {
            return Err(format!(
                "must not contain control or invisible formatting characters (found U+{:04X})",
                c as u32
            ));
        }
        Ok(Name(name.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Characters a name shown to people must not hold: controls, and the invisible formatting characters
/// that make a text read differently from what it is — bidirectional overrides and isolates (an
/// integration named "\u{202E}moc.elgoog" shows as "google.com"), zero-width characters, line and
/// paragraph separators, the byte-order mark.
pub fn is_hidden(c: char) -> bool {
    c.is_control()
        || matches!(c,
            '\u{061C}'                     // Arabic letter mark
            | '\u{180E}'                   // Mongolian vowel separator
            | '\u{200B}'..='\u{200F}'      // zero-width space, joiners, LRM, RLM
            | '\u{2028}'..='\u{202E}'      // line/paragraph separators, bidi embeddings and overrides
            | '\u{2060}'..='\u{2069}'      // word joiner, invisible operators, bidi isolates
            | '\u{FEFF}'                   // byte-order mark
            | '\u{FFF9}'..='\u{FFFB}') // interlinear annotations
}

/// An allowed web origin's host for the SDK endpoints: `app.example.com`, `*.example.com` (any
/// subdomain) or `localhost:3000`. Stored normalised (lower case, IDNA, default ports dropped).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Domain(String);

impl Domain {
    pub fn parse(raw: &str) -> Result<Domain, String> {
        let raw = raw.trim();
        let (wildcard, rest) = match raw.strip_prefix("*.") {
            Some(rest) => (true, rest),
            None => (false, raw),
        };
        if rest.is_empty() || rest.contains(['/', '?', '#', '@', '*']) || rest.contains("://") {
            return Err(format!(
                "{raw:?} is not a domain (expected a host such as app.example.com, *.example.com or localhost:3000)"
            ));
        }
        let url = url::Url::parse(&format!("https://{rest}/"))
            .map_err(|e| format!("{raw:?} is not a domain: {e}"))?;
        let host = url
            .host_str()
            .ok_or_else(|| format!("{raw:?} has no host"))?;
        let host = host.trim_end_matches('.');
        let mut out = String::new();
        if wildcard {
            out.push_str("*.");
        }
        out.push_str(host);
        if let Some(port) = url.port() {
            out.push_str(&format!(":{port}"));
        }
        Ok(Domain(out))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether a browser origin's host and port are covered: an exact host (any port unless the domain
    /// names one), or any subdomain for `*.example.com`.
    pub fn covers(&self, host: &str, port: Option<u16>) -> bool {
        let (pattern, want_port) = match self.0.rsplit_once(':') {
            Some((h, p)) if !h.is_empty() && p.chars().all(|c| c.is_ascii_digit()) => {
                (h, p.parse::<u16>().ok())
            }
            _ => (self.0.as_str(), None),
        };
        if want_port.is_some() && want_port != port {
            return false;
        }
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        match pattern.strip_prefix("*.") {
            Some(parent) => host.len() > parent.len() + 1 && host.ends_with(&format!(".{parent}")),
            None => host == pattern,
        }
    }
}

/// A callback URL that the callback-URL policy approved when it was saved (`dispatch::policy`). The
/// dispatcher judges its resolved addresses again at every attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallbackUrl(String);

impl CallbackUrl {
    pub const MAX_LEN: usize = 2048;

    /// Wraps a URL the policy approved.
    pub fn approved(url: &url::Url) -> CallbackUrl {
        CallbackUrl(url.to_string())
    }

    /// Rebuilds from storage, where only approved values are ever written.
    pub fn from_stored(s: String) -> CallbackUrl {
        CallbackUrl(s)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A user name of the admin console: 1–64 characters of letters, digits and `._-@`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Username(String);

impl Username {
    pub fn parse(raw: &str) -> Result<Username, String> {
        let ok = !raw.is_empty()
            && raw.len() <= 64
            && raw
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "._-@".contains(c));
        if ok {
            Ok(Username(raw.to_string()))
        } else {
            Err(format!(
                "{raw:?} is not a valid user name (1-64 of a-z, A-Z, 0-9, '.', '_', '-', '@')"
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A language tag such as `en`, `de-AT` or `pt-BR`: letters, then subtags of letters and digits,
/// at most 35 characters. Compared case-insensitively (stored lower case).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Language(String);

impl Language {
    pub fn parse(raw: &str) -> Result<Language, String> {
        let mut parts = raw.split('-');
        let first = parts.next().unwrap_or("");
        let ok = raw.len() <= 35
            && (2..=8).contains(&first.len())
            && first.chars().all(|c| c.is_ascii_alphabetic())
            && parts.all(|p| {
                (1..=8).contains(&p.len()) && p.chars().all(|c| c.is_ascii_alphanumeric())
            });
        if ok {
            Ok(Language(raw.to_ascii_lowercase()))
        } else {
            Err(format!("{raw:?} is not a language tag (e.g. en, de-AT)"))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The primary language (`de` for `de-AT`), used as a fallback before the default language.
    pub fn primary(&self) -> &str {
        self.0.split('-').next().unwrap_or(&self.0)
    }
}

/// A template's text in one language.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateText {
    pub title: String,
    pub content: String,
    pub inline_content: Option<String>,
}

impl TemplateText {
    pub const MAX_TITLE_CHARS: usize = 500;
    pub const MAX_CONTENT_CHARS: usize = 100_000;

    pub fn new(
        title: &str,
        content: &str,
        inline_content: Option<&str>,
    ) -> Result<TemplateText, String> {
        let title = title.trim();
        if title.is_empty() {
            return Err("title must not be empty".into());
        }
        if title.chars().count() > Self::MAX_TITLE_CHARS {
            return Err(format!(
                "title must be at most {} characters",
                Self::MAX_TITLE_CHARS
            ));
        }
        if content.trim().is_empty() {
            return Err("content must not be empty".into());
        }
        for (what, text) in [
            ("content", Some(content)),
            ("inlineContent", inline_content),
        ] {
            if text.is_some_and(|t| t.chars().count() > Self::MAX_CONTENT_CHARS) {
                return Err(format!(
                    "{what} must be at most {} characters",
                    Self::MAX_CONTENT_CHARS
                ));
            }
        }
        Ok(TemplateText {
            title: title.to_string(),
            content: content.to_string(),
            inline_content: inline_content
                .filter(|t| !t.trim().is_empty())
                .map(str::to_string),
        })
    }
}

/// A template tag: 1–50 characters, no control characters.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Tag(String);

impl Tag {
    pub fn parse(raw: &str) -> Result<Tag, String> {
        let t = raw.trim();
        if t.is_empty() || t.chars().count() > 50 || t.chars().any(is_hidden) {
            return Err(format!("{raw:?} is not a tag (1-50 characters)"));
        }
        Ok(Tag(t.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A clickwrap template as the admin edits it: its draft texts and settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    pub template_id: String,
    pub name: Name,
    pub tags: Vec<Tag>,
    pub enabled: bool,
    pub always_reaccept: bool,
    pub default_language: Language,
    /// Draft texts by language; always contains the default language.
    pub texts: std::collections::BTreeMap<Language, TemplateText>,
    /// App IDs of linked integrations; empty means visible to all.
    pub integrations: Vec<String>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

/// Whether a publication starts a new major version (everyone must accept again) or a minor one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VersionKind {
    Major,
    Minor,
}

/// A published, immutable template version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishedVersion {
    pub major: i64,
    pub minor: i64,
    pub default_language: Language,
    pub effective_at: Timestamp,
    pub must_accept_by: Option<Timestamp>,
    pub published_at: Timestamp,
}

impl PublishedVersion {
    /// The effective version at `now`: the latest `effective_at` not after `now`; among equal times, the
    /// highest version number. Publication order does not matter.
    pub fn effective(versions: &[PublishedVersion], now: Timestamp) -> Option<&PublishedVersion> {
        versions
            .iter()
            .filter(|v| v.effective_at <= now)
            .max_by_key(|v| (v.effective_at, v.major, v.minor))
    }
}

vocabulary! {
    /// What the end user did.
    pub enum Action {
        Accepted = "ACCEPTED",
        Declined = "DECLINED",
    }
}

vocabulary! {
    /// Where a webhook delivery is (SPEC §5.4). `Pending` waits for its next attempt, `InFlight` has
    /// one running under a lease; `Held` waits for its integration's delivery to be switched on;
    /// `Succeeded`, `Failed` and `Cancelled` (its integration was deleted) are final until a
    /// redelivery starts a new chain.
    pub enum DeliveryState {
        Pending = "pending",
        InFlight = "in_flight",
        Succeeded = "succeeded",
        Failed = "failed",
        Held = "held",
        Cancelled = "cancelled",
    }
}

impl DeliveryState {
    /// Whether the delivery still waits for an attempt (or runs one).
    pub fn is_unfinished(self) -> bool {
        matches!(
            self,
            DeliveryState::Pending | DeliveryState::InFlight | DeliveryState::Held
        )
    }
}

vocabulary! {
    /// What one attempt came to (SPEC §5.4): `Ok` is the only success (a 200).
    pub enum AttemptOutcome {
        Ok = "ok",
        HttpStatus = "http_status",
        RedirectRefused = "redirect_refused",
        Timeout = "timeout",
        DnsError = "dns_error",
        BlockedAddress = "blocked_address",
        ConnectError = "connect_error",
        TlsError = "tls_error",
        InvalidUrl = "invalid_url",
    }
}

impl AttemptOutcome {
    pub fn is_success(self) -> bool {
        self == AttemptOutcome::Ok
    }
}

vocabulary! {
    /// What started an attempt chain: the dispatcher on its own, or an admin's redelivery.
    pub enum Trigger {
        Automatic = "automatic",
        Manual = "manual",
    }
}

vocabulary! {
    /// The kind of webhook a delivery carries, its payload's `eventType` (SPEC §5.2).
    pub enum EventType {
        ClickwrapEventVerified = "CLICKWRAP_EVENT_VERIFIED",
    }
}

/// A clickwrap event as stored: one end user's action on one template version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClickwrapEvent {
    pub event_id: String,
    /// The App ID of the integration that recorded it.
    pub app_id: String,
    pub template_id: String,
    pub major: i64,
    pub minor: i64,
    pub effective_at: Timestamp,
    pub end_user_id: String,
    pub action: Action,
    /// A JSON object as text, or none.
    pub template_placeholders: Option<String>,
    /// A JSON object as text.
    pub technical_metadata: String,
    pub presented_at: Option<Timestamp>,
    pub action_at: Timestamp,
    pub verified_at: Option<Timestamp>,
}

/// A SHA-256 value of the proof-of-consent ledger: an evidence digest or a link's hash
/// (`ledger.rs` defines what is hashed).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ChainHash(pub [u8; 32]);

impl ChainHash {
    /// What the first link follows: 32 zero bytes.
    pub const GENESIS: ChainHash = ChainHash([0; 32]);

    /// Lower-case hex, as every document and message shows it.
    pub fn to_hex(self) -> String {
        hex::encode(self.0)
    }

    pub fn from_hex(s: &str) -> Option<ChainHash> {
        let mut out = [0u8; 32];
        hex::decode_to_slice(s, &mut out).ok()?;
        Some(ChainHash(out))
    }

    /// From a stored value, which must be 32 bytes.
    pub fn from_slice(b: &[u8]) -> Option<ChainHash> {
        Some(ChainHash(b.try_into().ok()?))
    }
}

impl fmt::Display for ChainHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

/// The ledger's last link: how many links there are and the hash that covers all of them. Position 0
/// with [`ChainHash::GENESIS`] is the empty ledger.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChainHead {
    pub position: i64,
    pub hash: ChainHash,
}

impl ChainHead {
    pub const EMPTY: ChainHead = ChainHead {
        position: 0,
        hash: ChainHash::GENESIS,
    };
}

/// An end user's identifier in the customer's system: 1–256 characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndUserId(String);

impl EndUserId {
    pub const MAX_CHARS: usize = 256;

    pub fn parse(raw: &str) -> Result<EndUserId, String> {
        if raw.is_empty() {
            return Err("must not be empty".into());
        }
        if raw.chars().count() > Self::MAX_CHARS {
            return Err(format!("must be at most {} characters", Self::MAX_CHARS));
        }
        if raw.chars().any(char::is_control) {
            return Err("must not contain control characters".into());
        }
        Ok(EndUserId(raw.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_render_like_clickterm() {
        let t = Timestamp::parse_rfc3339("2026-03-23T14:30:00Z").unwrap();
        assert_eq!(t.to_rfc3339(), "2026-03-23T14:30:00Z");
        let t = Timestamp::parse_rfc3339("2026-03-23T16:30:00.25+02:00").unwrap();
        assert_eq!(t.to_rfc3339(), "2026-03-23T14:30:00.250Z");
        // Against the rendering it replaced (`time`'s calendar through `format!`), across the years
        // and both sides of the epoch.
        for millis in [
            0i64,
            1,
            -1,
            999,
            -1000,
            86_399_999,
            951_782_400_000, // 2000-02-29
            4_102_444_799_999,
            -62_167_219_200_000, // year 0
            253_402_300_799_999, // 9999-12-31T23:59:59.999
            1_774_276_200_250,
        ] {
            let t = OffsetDateTime::from_unix_timestamp_nanos(millis as i128 * 1_000_000).unwrap();
            let (y, mo, d) = (t.year(), t.month() as u8, t.day());
            let (h, mi, s) = (t.hour(), t.minute(), t.second());
            let expected = match millis.rem_euclid(1000) {
                0 => format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}Z"),
                ms => format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{ms:03}Z"),
            };
            assert_eq!(Timestamp(millis).to_rfc3339(), expected, "{millis}");
        }
        assert!(Timestamp::parse_rfc3339("2026-03-23").is_none());
    }

    #[test]
    fn domains_are_normalised_or_refused() {
        let ok = [
            ("App.Example.COM", "app.example.com"),
            ("*.example.com", "*.example.com"),
            ("localhost:3000", "localhost:3000"),
            ("example.com:443", "example.com"),
            ("bücher.example", "xn--bcher-kva.example"),
        ];
        for (raw, want) in ok {
            assert_eq!(Domain::parse(raw).unwrap().as_str(), want, "{raw}");
        }
        for bad in [
            "",
            "https://example.com",
            "example.com/path",
            "a b.com",
            "*.",
            "user@example.com",
            "*.*.x",
        ] {
            assert!(Domain::parse(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn domains_cover_origins() {
        let d = |s: &str| Domain::parse(s).unwrap();
        assert!(d("app.example.com").covers("app.example.com", Some(8443)));
        assert!(!d("app.example.com").covers("evil.example.com", None));
        assert!(d("*.example.com").covers("a.b.example.com", None));
        assert!(!d("*.example.com").covers("example.com", None));
        assert!(!d("*.example.com").covers("badexample.com", None));
        assert!(d("localhost:3000").covers("localhost", Some(3000)));
        assert!(!d("localhost:3000").covers("localhost", Some(3001)));
    }

    #[test]
    fn names() {
        assert_eq!(Name::parse("  Web  ").unwrap().as_str(), "Web");
        assert!(Name::parse("   ").is_err());
        assert!(Name::parse(&"x".repeat(101)).is_err());
        assert!(Name::parse("a\u{7}b").is_err());
        for hidden in [
            "\u{202E}moc.elgoog",
            "a\u{200B}b",
            "x\u{2066}y",
            "a\u{2028}b",
            "\u{FEFF}z",
        ] {
            let err = Name::parse(hidden).unwrap_err();
            assert!(err.contains("U+"), "{hidden:?}: {err}");
            assert!(Tag::parse(hidden).is_err(), "{hidden:?} as a tag");
        }
        assert_eq!(
            Name::parse("Café – Ünïcode ✓").unwrap().as_str(),
            "Café – Ünïcode ✓"
        );
        assert!(Username::parse("admin").is_ok());
        assert!(Username::parse("ad min").is_err());
    }

    #[test]
    fn effective_version_is_chosen_by_time_not_publication_order() {
        let v = |major, minor, eff: i64| PublishedVersion {
            major,
            minor,
            default_language: Language::parse("en").unwrap(),
            effective_at: Timestamp(eff),
            must_accept_by: None,
            published_at: Timestamp(0),
        };
        // 2.0 was published first but takes effect later than 1.1.
        let versions = [v(1, 0, 100), v(2, 0, 500), v(1, 1, 300)];
        assert_eq!(PublishedVersion::effective(&versions, Timestamp(50)), None);
        assert_eq!(
            PublishedVersion::effective(&versions, Timestamp(100)).map(|v| (v.major, v.minor)),
            Some((1, 0))
        );
        assert_eq!(
            PublishedVersion::effective(&versions, Timestamp(499)).map(|v| (v.major, v.minor)),
            Some((1, 1))
        );
        assert_eq!(
            PublishedVersion::effective(&versions, Timestamp(500)).map(|v| (v.major, v.minor)),
            Some((2, 0))
        );
    }

    #[test]
    fn languages() {
        assert_eq!(Language::parse("de-AT").unwrap().as_str(), "de-at");
        assert_eq!(Language::parse("de-AT").unwrap().primary(), "de");
        for bad in [
            "",
            "e",
            "english-language-tag-that-is-too-long-x",
            "e n",
            "en_US",
            "1a",
        ] {
            assert!(Language::parse(bad).is_err(), "{bad:?}");
        }
    }
}
