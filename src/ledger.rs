//! Proof of consent (issue #17): the evidence document of a verified event, its canonical encoding,
//! the hash chain over every verified event in verification order, the walk that re-checks the chain
//! (`clicktermd verify-ledger`) and the streamed export.
//!
//! The evidence is not stored: it is rebuilt from what the event row holds (template version,
//! language, placeholders, times, technical metadata) and the published version's frozen text, which
//! the schema keeps immutable, plus the template's name as it was at verification (kept in the link).
//! What is stored per link is the digest of the evidence's canonical encoding and the link's hash, so
//! any later change to an event, its version's text or the order of the links shows when the chain is
//! walked again. The encoding (docs/ledger.md) uses no SQLite-specific value — no row id, no SQLite
//! text or number rendering — so another store computes the same hashes from the same facts.
//!
//! The document's JSON shape is defined here and not in `http`: the bytes hashed *are* the document,
//! so the shape and the hash must be written in one place.

use std::fmt::Write as _;

use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::clickwrap::Placeholders;
use crate::model::{Action, ChainHash, ChainHead, Timestamp};

/// Bumped if the document's shape ever changes; part of what is hashed.
pub const EVIDENCE_VERSION: i64 = 1;

/// Everything one event's evidence is made of, as the store reads it.
#[derive(Debug, Clone)]
pub struct Source {
    pub event_id: String,
    pub app_id: String,
    pub end_user_id: String,
    pub template_id: String,
    /// The template's name when the event was verified.
    pub template_name: String,
    pub major: i64,
    pub minor: i64,
    pub language: String,
    pub effective_at: Timestamp,
    /// The published version's text in the event's language, before placeholders; none if the version
    /// or the language is gone (which only a tampered database can show).
    pub text: Option<VersionText>,
    /// The stored JSON text of the placeholders, as the event API shows it.
    pub template_placeholders: Option<String>,
    /// The stored JSON text `{"userAgent", "ip"}` the SDK recorded.
    pub technical_metadata: String,
    pub presented_at: Option<Timestamp>,
    pub action_at: Timestamp,
    pub verified_at: Timestamp,
    pub action: Action,
}

/// A published version's frozen text in one language.
#[derive(Debug, Clone)]
pub struct VersionText {
    pub title: String,
    pub content: String,
    pub inline_content: Option<String>,
}

/// The evidence of one verified event: who accepted (or declined) which exact text, when and from where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Evidence {
    pub event_id: String,
    pub app_id: String,
    pub end_user_id: String,
    pub template_id: String,
    pub template_name: String,
    pub major: i64,
    pub minor: i64,
    pub language: String,
    pub effective_at: Timestamp,
    /// The title, content and inline content as the widget showed them: the version's text rendered
    /// with the event's placeholders (values HTML-escaped, missing ones `-`), exactly as the SDK GET
    /// rendered it.
    pub title: Option<String>,
    pub content: Option<String>,
    pub inline_content: Option<String>,
    pub template_placeholders: Option<String>,
    pub client_address: Option<String>,
    pub user_agent: Option<String>,
    pub presented_at: Option<Timestamp>,
    pub action_at: Timestamp,
    pub verified_at: Timestamp,
    pub action: Action,
}

impl Evidence {
    pub fn from_source(s: Source) -> Evidence {
        // Stored placeholders were checked when recorded; text that no longer parses (a tampered row)
        // renders with none, and the digest then tells the change anyway.
        let placeholders = s
            .template_placeholders
            .as_deref()
            .map(|t| {
                Placeholders::from_json(&serde_json::Value::String(t.to_string()))
                    .unwrap_or_default()
            })
            .unwrap_or_default();
        let (client_address, user_agent) = client_of(&s.technical_metadata);
        Evidence {
            title: s.text.as_ref().map(|t| placeholders.render(&t.title)),
            content: s.text.as_ref().map(|t| placeholders.render(&t.content)),
            inline_content: s
                .text
                .as_ref()
                .and_then(|t| t.inline_content.as_deref())
                .map(|t| placeholders.render(t)),
            event_id: s.event_id,
            app_id: s.app_id,
            end_user_id: s.end_user_id,
            template_id: s.template_id,
            template_name: s.template_name,
            major: s.major,
            minor: s.minor,
            language: s.language,
            effective_at: s.effective_at,
            template_placeholders: s.template_placeholders,
            client_address,
            user_agent,
            presented_at: s.presented_at,
            action_at: s.action_at,
            verified_at: s.verified_at,
            action: s.action,
        }
    }

    /// The canonical encoding hashed into the chain: the document without its `ledger` member, as
    /// JSON with members sorted by name and no whitespace (RFC 8785 for this document, whose only
    /// numbers are integers and whose member names are ASCII).
    pub fn canonical(&self) -> Vec<u8> {
        serde_json::to_vec(&self.wire()).expect("the evidence serialises")
    }

    /// SHA-256 of [`Evidence::canonical`].
    pub fn digest(&self) -> ChainHash {
        /// Feeds the encoding to the hash as it is written, without a buffer of it.
        struct Hashing(Sha256);
        impl std::io::Write for Hashing {
            fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
                self.0.update(bytes);
                Ok(bytes.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let mut h = Hashing(Sha256::new());
        serde_json::to_writer(&mut h, &self.wire()).expect("the evidence serialises");
        ChainHash(h.0.finalize().into())
    }

    /// The whole document, with its place in the chain: what the evidence endpoints answer and each
    /// line of an NDJSON export.
    pub fn document(&self, link: &Link) -> Vec<u8> {
        #[derive(Serialize)]
        struct Document<'a> {
            #[serde(flatten)]
            evidence: Wire<'a>,
            ledger: LinkWire,
        }
        serde_json::to_vec(&Document {
            evidence: self.wire(),
            ledger: LinkWire::of(link),
        })
        .expect("the evidence serialises")
    }

    /// The members in byte order of their names (serde keeps the declaration order, so the order
    /// below *is* the canonical order; a test checks it against a sorted map).
    fn wire(&self) -> Wire<'_> {
        Wire {
            action_at: self.action_at.to_rfc3339(),
            app_id: &self.app_id,
            clickwrap_event_id: &self.event_id,
            clickwrap_event_status: self.action.as_str(),
            clickwrap_template_id: &self.template_id,
            clickwrap_template_name: &self.template_name,
            clickwrap_template_version: self.major,
            clickwrap_template_version_minor: self.minor,
            client_address: self.client_address.as_deref(),
            content: self.content.as_deref(),
            effective_at: self.effective_at.to_rfc3339(),
            end_user_id: &self.end_user_id,
            evidence_version: EVIDENCE_VERSION,
            inline_content: self.inline_content.as_deref(),
            language: &self.language,
            presented_at: self.presented_at.map(Timestamp::to_rfc3339),
            template_placeholders: self.template_placeholders.as_deref(),
            title: self.title.as_deref(),
            user_agent: self.user_agent.as_deref(),
            verified_at: self.verified_at.to_rfc3339(),
        }
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Wire<'a> {
    action_at: String,
    app_id: &'a str,
    clickwrap_event_id: &'a str,
    clickwrap_event_status: &'static str,
    clickwrap_template_id: &'a str,
    clickwrap_template_name: &'a str,
    clickwrap_template_version: i64,
    clickwrap_template_version_minor: i64,
    client_address: Option<&'a str>,
    content: Option<&'a str>,
    effective_at: String,
    end_user_id: &'a str,
    evidence_version: i64,
    inline_content: Option<&'a str>,
    language: &'a str,
    presented_at: Option<String>,
    template_placeholders: Option<&'a str>,
    title: Option<&'a str>,
    user_agent: Option<&'a str>,
    verified_at: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct LinkWire {
    position: i64,
    evidence_digest: String,
    previous_hash: String,
    hash: String,
}

impl LinkWire {
    fn of(link: &Link) -> LinkWire {
        LinkWire {
            position: link.position,
            evidence_digest: link.digest.to_hex(),
            previous_hash: link.previous.to_hex(),
            hash: link.hash.to_hex(),
        }
    }
}

/// The client address and user agent the SDK recorded (`technicalMetadata`).
fn client_of(metadata: &str) -> (Option<String>, Option<String>) {
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Recorded {
        ip: Option<String>,
        user_agent: Option<String>,
    }
    match serde_json::from_str::<Recorded>(metadata) {
        Ok(r) => (r.ip, r.user_agent),
        Err(_) => (None, None),
    }
}

/// One link of the chain: its position (1, 2, … in verification order), the hash of the link before
/// ([`ChainHash::GENESIS`] for the first), the evidence's digest and its own hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Link {
    pub position: i64,
    pub previous: ChainHash,
    pub digest: ChainHash,
    pub hash: ChainHash,
}

/// A link's hash: SHA-256 over the previous link's hash (32 bytes), the position as 8 bytes big-endian
/// and the evidence's digest (32 bytes). Each link so covers every link before it, and its place.
pub fn link_hash(position: i64, previous: ChainHash, digest: ChainHash) -> ChainHash {
    let mut h = Sha256::new();
    h.update(previous.0);
    h.update(position.to_be_bytes());
    h.update(digest.0);
    ChainHash(h.finalize().into())
}

/// The link that follows `head` for evidence with `digest`.
pub fn next_link(head: ChainHead, digest: ChainHash) -> Link {
    let position = head.position + 1;
    Link {
        position,
        previous: head.hash,
        digest,
        hash: link_hash(position, head.hash, digest),
    }
}

/// A stored link as `verify-ledger` reads it back: what was recorded, and the evidence rebuilt from
/// the database now (none when its event is gone).
pub struct StoredLink {
    pub position: i64,
    pub event_id: Option<String>,
    pub digest: ChainHash,
    pub hash: ChainHash,
    pub evidence: Option<Evidence>,
}

/// What is wrong with the chain, at the first link where it goes wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Break {
    /// No link at this position: it was deleted (or the links after it were renumbered).
    Missing { position: i64 },
    /// The link's event is no longer in the database.
    EventGone { position: i64 },
    /// The evidence rebuilt now differs from what was hashed: the event, its version's text or the
    /// link's template name changed after it was chained.
    EvidenceChanged { position: i64, event_id: String },
    /// The link's hash does not follow from the link before it: links were reordered or rewritten.
    HashMismatch { position: i64 },
    /// A verified event that no link covers (added or unchained behind the server's back).
    Unchained { event_id: String },
    /// The operator's anchor (a head noted earlier) is not in the chain any more.
    AnchorMismatch { position: i64 },
}

impl Break {
    /// The link reported, when the break is at one.
    pub fn position(&self) -> Option<i64> {
        match self {
            Break::Missing { position }
            | Break::EventGone { position }
            | Break::EvidenceChanged { position, .. }
            | Break::HashMismatch { position }
            | Break::AnchorMismatch { position } => Some(*position),
            Break::Unchained { .. } => None,
        }
    }
}

impl std::fmt::Display for Break {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Break::Missing { position } => write!(
                f,
                "link {position} is missing: the ledger jumps past it (a link was deleted)"
            ),
            Break::EventGone { position } => write!(
                f,
                "link {position}: its clickwrap event is no longer in the database (it was deleted)"
            ),
            Break::EvidenceChanged { position, event_id } => write!(
                f,
                "link {position}: the evidence of event {event_id} no longer matches the digest \
                 chained at verification (the event, its template version's text or its template \
                 name was changed)"
            ),
            Break::HashMismatch { position } => write!(
                f,
                "link {position}: its hash does not follow from link {} (links were reordered or \
                 rewritten)",
                position - 1
            ),
            Break::Unchained { event_id } => write!(
                f,
                "event {event_id} is verified but no link covers it (it was added or changed \
                 outside clicktermd)"
            ),
            Break::AnchorMismatch { position } => write!(
                f,
                "link {position} does not have the anchored hash: the chain up to it was rewritten"
            ),
        }
    }
}

/// Checks one page of stored links, in order, against the link before them; the first break, or the
/// head after the page.
pub fn check_links(mut before: ChainHead, links: &[StoredLink]) -> Result<ChainHead, Break> {
    for l in links {
        let position = before.position + 1;
        if l.position != position {
            return Err(Break::Missing { position });
        }
        let Some(evidence) = &l.evidence else {
            return Err(Break::EventGone { position });
        };
        if evidence.digest() != l.digest {
            return Err(Break::EvidenceChanged {
                position,
                event_id: l.event_id.clone().unwrap_or_default(),
            });
        }
        if link_hash(position, before.hash, l.digest) != l.hash {
            return Err(Break::HashMismatch { position });
        }
        before = ChainHead {
            position,
            hash: l.hash,
        };
    }
    Ok(before)
}

/// The formats of an export.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExportFormat {
    /// One evidence document per line, then `{"chainHead": …}`.
    Ndjson,
    /// A header row and one row per event (the document's members flattened, the link's last).
    Csv,
}

impl ExportFormat {
    pub fn parse(s: &str) -> Option<ExportFormat> {
        match s {
            "ndjson" => Some(ExportFormat::Ndjson),
            "csv" => Some(ExportFormat::Csv),
            _ => None,
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            ExportFormat::Ndjson => "application/x-ndjson",
            ExportFormat::Csv => "text/csv; charset=utf-8",
        }
    }

    pub fn extension(self) -> &'static str {
        match self {
            ExportFormat::Ndjson => "ndjson",
            ExportFormat::Csv => "csv",
        }
    }

    /// What comes before the first event.
    pub fn header(self) -> Vec<u8> {
        match self {
            ExportFormat::Ndjson => Vec::new(),
            ExportFormat::Csv => {
                let mut line = CSV_COLUMNS.join(",");
                line.push_str("\r\n");
                line.into_bytes()
            }
        }
    }

    /// One event's line, appended to `out`.
    pub fn line(self, evidence: &Evidence, link: &Link, out: &mut Vec<u8>) {
        match self {
            ExportFormat::Ndjson => {
                out.extend(evidence.document(link));
                out.push(b'\n');
            }
            ExportFormat::Csv => {
                let w = evidence.wire();
                let num = |n: i64| n.to_string();
                let cells: [Option<String>; 24] = [
                    Some(num(link.position)),
                    Some(w.clickwrap_event_id.to_string()),
                    Some(w.app_id.to_string()),
                    Some(w.end_user_id.to_string()),
                    Some(w.clickwrap_event_status.to_string()),
                    Some(w.clickwrap_template_id.to_string()),
                    Some(w.clickwrap_template_name.to_string()),
                    Some(num(w.clickwrap_template_version)),
                    Some(num(w.clickwrap_template_version_minor)),
                    Some(w.language.to_string()),
                    Some(w.effective_at.clone()),
                    w.presented_at.clone(),
                    Some(w.action_at.clone()),
                    Some(w.verified_at.clone()),
                    w.client_address.map(str::to_string),
                    w.user_agent.map(str::to_string),
                    w.template_placeholders.map(str::to_string),
                    w.title.map(str::to_string),
                    w.content.map(str::to_string),
                    w.inline_content.map(str::to_string),
                    Some(num(w.evidence_version)),
                    Some(link.digest.to_hex()),
                    Some(link.previous.to_hex()),
                    Some(link.hash.to_hex()),
                ];
                let mut line = String::new();
                for (i, cell) in cells.iter().enumerate() {
                    if i > 0 {
                        line.push(',');
                    }
                    if let Some(cell) = cell {
                        csv_cell(&mut line, cell);
                    }
                }
                line.push_str("\r\n");
                out.extend(line.into_bytes());
            }
        }
    }

    /// What comes after the last event: the chain head the export ends at (NDJSON; a CSV export says
    /// it in its file name and the `Clickterm-Chain-Head` header only, since a row of another shape
    /// would break the table).
    pub fn trailer(self, head: ChainHead, lines: u64) -> Vec<u8> {
        match self {
            ExportFormat::Ndjson => {
                #[derive(Serialize)]
                #[serde(rename_all = "camelCase")]
                struct Trailer {
                    chain_head: HeadWire,
                    events: u64,
                }
                let mut out = serde_json::to_vec(&Trailer {
                    chain_head: HeadWire::of(head),
                    events: lines,
                })
                .expect("the trailer serialises");
                out.push(b'\n');
                out
            }
            ExportFormat::Csv => Vec::new(),
        }
    }
}

/// The CSV export's columns, in order: the evidence's members (absent ones empty), then the link's.
pub const CSV_COLUMNS: [&str; 24] = [
    "position",
    "clickwrapEventId",
    "appId",
    "endUserId",
    "clickwrapEventStatus",
    "clickwrapTemplateId",
    "clickwrapTemplateName",
    "clickwrapTemplateVersion",
    "clickwrapTemplateVersionMinor",
    "language",
    "effectiveAt",
    "presentedAt",
    "actionAt",
    "verifiedAt",
    "clientAddress",
    "userAgent",
    "templatePlaceholders",
    "title",
    "content",
    "inlineContent",
    "evidenceVersion",
    "evidenceDigest",
    "previousHash",
    "hash",
];

/// RFC 4180: quoted when it holds a comma, a quote or a line break (quotes doubled). A cell that a
/// spreadsheet would run as a formula is not altered: the export is evidence, byte for byte.
fn csv_cell(out: &mut String, cell: &str) {
    if cell.contains([',', '"', '\n', '\r']) {
        out.push('"');
        out.push_str(&cell.replace('"', "\"\""));
        out.push('"');
    } else {
        out.push_str(cell);
    }
}

/// The chain head as every JSON answer shows it: `{"position", "hash"}`.
#[derive(Serialize)]
pub struct HeadWire {
    pub position: i64,
    pub hash: String,
}

impl HeadWire {
    pub fn of(head: ChainHead) -> HeadWire {
        HeadWire {
            position: head.position,
            hash: head.hash.to_hex(),
        }
    }
}

/// `POSITION:HASH`, as `verify-ledger --anchor` takes a noted head and the export's header shows it.
pub fn head_text(head: ChainHead) -> String {
    let mut s = String::new();
    let _ = write!(s, "{}:{}", head.position, head.hash);
    s
}

pub fn parse_head(s: &str) -> Option<ChainHead> {
    let (position, hash) = s.split_once(':')?;
    Some(ChainHead {
        position: position.parse().ok().filter(|p: &i64| *p >= 1)?,
        hash: ChainHash::from_hex(hash)?,
    })
}

/// Links read per page when the chain is walked again.
const CHECK_PAGE: u32 = 500;

/// Events per page of an export: each page is one read (an index walk of the event list and the
/// events' rows), turned into bytes and handed to the response before the next is read.
const EXPORT_PAGE: u32 = 200;

/// Pages an export holds ready ahead of its client: with [`EXPORT_PAGE`] events each, what bounds its
/// memory whatever the export's size.
const EXPORT_AHEAD: usize = 2;

/// The outcome of [`check`]: the head reached, or the first break.
pub type Checked = Result<ChainHead, Break>;

/// Walks the whole chain again from its first link to the head at the start (links appended
/// meanwhile are not looked at), rebuilding every evidence from the database; then checks that no
/// verified event is left out and, with `anchor`, that the head noted then is still in the chain.
pub async fn check(
    store: &crate::store::Store,
    anchor: Option<ChainHead>,
) -> crate::error::Result<Checked> {
    let end = store.ledger_head().await?;
    let mut at = ChainHead::EMPTY;
    while at.position < end.position {
        let mut page = store.ledger_links(at.position, CHECK_PAGE).await?;
        page.retain(|l| l.position <= end.position);
        if page.is_empty() {
            break;
        }
        match check_links(at, &page) {
            Ok(head) => at = head,
            Err(b) => return Ok(Err(b)),
        }
    }
    if let Some(anchor) = anchor {
        match store.ledger_hash_at(anchor.position).await? {
            None => {
                return Ok(Err(Break::Missing {
                    position: at.position + 1,
                }));
            }
            Some(hash) if hash != anchor.hash => {
                return Ok(Err(Break::AnchorMismatch {
                    position: anchor.position,
                }));
            }
            Some(_) => {}
        }
    }
    if let Some(event_id) = store.ledger_unchained().await? {
        return Ok(Err(Break::Unchained { event_id }));
    }
    Ok(Ok(at))
}

/// A streamed export: the head it ends at (known before the first byte, so it can be a header) and
/// its bytes, page by page.
pub struct Export {
    pub head: ChainHead,
    pub format: ExportFormat,
    pub chunks: tokio::sync::mpsc::Receiver<crate::error::Result<bytes::Bytes>>,
}

/// Starts an export of every verified event matching `filter` that the chain holds now: its head is
/// read first, and events chained after it are left out, so the export is exactly that chain's
/// events (all of them, without filters; its lines then re-hash to the head). The walk is the event
/// list's (newest first), one page at a time; a page is read only once the client has taken all but
/// [`EXPORT_AHEAD`] of the ones before, and a client that goes away ends it.
pub async fn export(
    store: &crate::store::Store,
    filter: crate::store::events::Filter,
    format: ExportFormat,
) -> crate::error::Result<Export> {
    let head = store.ledger_head().await?;
    let (tx, chunks) = tokio::sync::mpsc::channel(EXPORT_AHEAD);
    let store = store.clone();
    tokio::spawn(async move {
        let send = |bytes: Vec<u8>| tx.send(Ok(bytes::Bytes::from(bytes)));
        if send(format.header()).await.is_err() {
            return;
        }
        let mut cursor = None;
        let mut lines = 0u64;
        loop {
            let page = match store
                .export_page(filter.clone(), cursor.take(), EXPORT_PAGE, head.position)
                .await
            {
                Ok(page) => page,
                Err(e) => {
                    tracing::error!(error = %e, "export: reading a page failed");
                    let _ = tx.send(Err(e.into())).await;
                    return;
                }
            };
            let mut out = Vec::with_capacity(page.items.len() * 1024);
            for (evidence, link) in &page.items {
                format.line(evidence, link, &mut out);
            }
            lines += page.items.len() as u64;
            if !out.is_empty() && send(out).await.is_err() {
                return;
            }
            match page.next {
                Some(next) => cursor = Some(next),
                None => break,
            }
        }
        let _ = send(format.trailer(head, lines)).await;
    });
    Ok(Export {
        head,
        format,
        chunks,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source() -> Source {
        Source {
            event_id: "0b6c2c1e-6d1e-4c1e-9d1e-1c1e6d1e4c1e".into(),
            app_id: "app".into(),
            end_user_id: "user-1".into(),
            template_id: "tpl".into(),
            template_name: "Terms \"of\" Service".into(),
            major: 2,
            minor: 1,
            language: "en".into(),
            effective_at: Timestamp(1_700_000_000_000),
            text: Some(VersionText {
                title: "Hi {{name}}".into(),
                content: "<p>Dear {{name}}, {{missing}}\n\u{1}é</p>".into(),
                inline_content: None,
            }),
            template_placeholders: Some(r#"{"name":"<Ann>"}"#.into()),
            technical_metadata: r#"{"userAgent":"UA/1","ip":"127.0.0.1"}"#.into(),
            presented_at: None,
            action_at: Timestamp(1_700_000_000_123),
            verified_at: Timestamp(1_700_000_001_000),
            action: Action::Accepted,
        }
    }

    #[test]
    fn canonical_encoding_is_sorted_compact_json_of_the_rendered_evidence() {
        let e = Evidence::from_source(source());
        assert_eq!(e.title.as_deref(), Some("Hi &lt;Ann&gt;"));
        assert_eq!(
            e.content.as_deref(),
            Some("<p>Dear &lt;Ann&gt;, -\n\u{1}é</p>")
        );
        assert_eq!(e.client_address.as_deref(), Some("127.0.0.1"));
        let canonical = e.canonical();
        // Re-encoded through a map sorted by member name, the bytes are the same: the declared
        // order is the sorted one.
        let value: std::collections::BTreeMap<String, serde_json::Value> =
            serde_json::from_slice(&canonical).unwrap();
        assert_eq!(serde_json::to_vec(&value).unwrap(), canonical);
        let text = String::from_utf8(canonical).unwrap();
        assert!(
            text.starts_with(
                r#"{"actionAt":"2023-11-14T22:13:20.123Z","appId":"app","clickwrapEventId""#
            ),
            "{text}"
        );
        assert!(
            text.contains(r#""content":"<p>Dear &lt;Ann&gt;, -\n\u0001é</p>""#),
            "{text}"
        );
        assert!(text.contains(r#""presentedAt":null"#));
        assert!(!text.contains("ledger"));
    }

    #[test]
    fn links_chain_and_any_change_breaks_the_first_link_it_touches() {
        let evidences: Vec<Evidence> = (0..4)
            .map(|i| {
                let mut s = source();
                s.end_user_id = format!("user-{i}");
                Evidence::from_source(s)
            })
            .collect();
        let mut head = ChainHead::EMPTY;
        let mut stored = Vec::new();
        for e in &evidences {
            let link = next_link(head, e.digest());
            assert_eq!(link.previous, head.hash);
            head = ChainHead {
                position: link.position,
                hash: link.hash,
            };
            stored.push(StoredLink {
                position: link.position,
                event_id: Some(e.event_id.clone()),
                digest: link.digest,
                hash: link.hash,
                evidence: Some(e.clone()),
            });
        }
        assert_eq!(check_links(ChainHead::EMPTY, &stored), Ok(head));
        // The documented hash, computed by hand.
        let mut by_hand = Sha256::new();
        by_hand.update([0u8; 32]);
        by_hand.update(1i64.to_be_bytes());
        by_hand.update(Sha256::digest(evidences[0].canonical()));
        assert_eq!(stored[0].hash.0, <[u8; 32]>::from(by_hand.finalize()));

        let recheck = |f: &dyn Fn(&mut Vec<StoredLink>)| {
            let mut links: Vec<StoredLink> = stored
                .iter()
                .map(|l| StoredLink {
                    event_id: l.event_id.clone(),
                    evidence: l.evidence.clone(),
                    ..*l
                })
                .collect();
            f(&mut links);
            check_links(ChainHead::EMPTY, &links).unwrap_err()
        };
        let changed = recheck(&|l| l[2].evidence.as_mut().unwrap().end_user_id = "x".into());
        assert_eq!(changed.position(), Some(3));
        assert!(matches!(changed, Break::EvidenceChanged { .. }));
        assert_eq!(
            recheck(&|l| {
                l.remove(1);
            }),
            Break::Missing { position: 2 }
        );
        assert_eq!(
            recheck(&|l| l[1].evidence = None),
            Break::EventGone { position: 2 }
        );
        // Two links swapped, positions kept: the first of them no longer follows.
        assert_eq!(
            recheck(&|l| {
                let (a, b) = (l[1].position, l[2].position);
                l.swap(1, 2);
                l[1].position = a;
                l[2].position = b;
            }),
            Break::HashMismatch { position: 2 }
        );
    }

    #[test]
    fn csv_cells_are_quoted_when_they_must_be_and_heads_parse() {
        let mut s = String::new();
        csv_cell(&mut s, "plain");
        s.push('|');
        csv_cell(&mut s, "a,\"b\"\nc");
        assert_eq!(s, "plain|\"a,\"\"b\"\"\nc\"");
        let head = ChainHead {
            position: 7,
            hash: ChainHash([0xab; 32]),
        };
        assert_eq!(parse_head(&head_text(head)), Some(head));
        assert_eq!(parse_head("0:00"), None);
        assert_eq!(parse_head("3:zz"), None);
    }
}
