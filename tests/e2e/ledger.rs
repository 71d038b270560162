//! Proof of consent (issue #17): the evidence of a verified event is what the SDK showed the end user;
//! every verified event is chained (SHA-256, in verification order) and the hashes are recomputed here
//! from the documented encoding, independently of the server's code; `verify-ledger` names the link a
//! change behind the server's back broke (an end user changed, an event deleted, two links swapped) and
//! finds an untouched database intact after 10 000 verifies across a restart and a `kill -9`; the
//! certificate is a PDF that poppler reads; an export of 100 000 events streams in flat server memory
//! and its lines re-hash to the head it reports.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use reqwest::header;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::common::serving::{Serving, serve, serve_within};
use crate::common::{
    self, Call, DEADLINE, TestServer, assert_success, clicktermd, expect_error,
    read_admin_password, stderr, stdout,
};

const UA: &str = "ledger-e2e/1.0 (proof of consent)";

/// The SDK limits off for the tests that verify thousands of events from one address.
const UNLIMITED: [(&str, &str); 2] = [
    (
        "CLICKTERMD_LIMITS__SDK_REQUESTS_PER_SEC_PER_ADDRESS",
        "1000000",
    ),
    ("CLICKTERMD_LIMITS__SDK_BURST_PER_ADDRESS", "1000000"),
];

/// `value` as canonical JSON: members sorted by name at every depth, no whitespace (what docs/ledger.md
/// specifies; written here from that text, not with the server's code).
fn canonical(value: &Value) -> Vec<u8> {
    fn sorted(v: &Value) -> Value {
        match v {
            Value::Object(m) => {
                let s: BTreeMap<String, Value> =
                    m.iter().map(|(k, v)| (k.clone(), sorted(v))).collect();
                Value::Object(s.into_iter().collect())
            }
            Value::Array(a) => Value::Array(a.iter().map(sorted).collect()),
            other => other.clone(),
        }
    }
    serde_json::to_vec(&sorted(value)).unwrap()
}

/// Re-hashes one evidence document: its digest (SHA-256 of the canonical document without `ledger`)
/// and its link's hash (SHA-256 of the previous hash, the position as 8 bytes big-endian and the
/// digest); asserts both equal what the document says. Returns (position, previousHash, hash).
fn rehash(doc: &Value) -> (i64, String, String) {
    let mut evidence = doc.as_object().expect("an object").clone();
    let ledger = evidence.remove("ledger").expect("a ledger member");
    rehash_parts(&Value::Object(evidence), &ledger)
}

/// [`rehash`] of an exported line, read straight into members sorted by name (the document's values
/// are all scalars, so that is its canonical order) without the copy.
fn rehash_line(line: &[u8]) -> (i64, String, String) {
    let mut members: BTreeMap<String, Value> = serde_json::from_slice(line).unwrap();
    let ledger = members.remove("ledger").expect("a ledger member");
    assert!(members.values().all(|v| !v.is_object() && !v.is_array()));
    let canonical = serde_json::to_vec(&members).unwrap();
    link_of(&Sha256::digest(canonical).into(), &ledger, &members)
}

fn rehash_parts(evidence: &Value, ledger: &Value) -> (i64, String, String) {
    let digest: [u8; 32] = Sha256::digest(canonical(evidence)).into();
    link_of(&digest, ledger, evidence)
}

fn link_of(
    digest: &[u8; 32],
    ledger: &Value,
    evidence: &impl std::fmt::Debug,
) -> (i64, String, String) {
    let position = ledger["position"].as_i64().expect("position");
    let previous = ledger["previousHash"].as_str().expect("previousHash");
    assert_eq!(
        hex::encode(digest),
        ledger["evidenceDigest"].as_str().unwrap(),
        "the digest of {evidence:?}"
    );
    let mut link = Sha256::new();
    link.update(hex::decode(previous).unwrap());
    link.update(position.to_be_bytes());
    link.update(digest);
    let hash = hex::encode(link.finalize());
    assert_eq!(hash, ledger["hash"].as_str().unwrap(), "link {position}");
    (position, previous.to_string(), hash)
}

const ZEROS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// An integration's credentials and a published template.
struct Setup {
    app_id: String,
    app_key: String,
    template: String,
}

async fn setup(base: &str, admin: &reqwest::Client, name: &str, content: &str) -> Setup {
    let (app_id, app_key, _) = common::create_integration(admin, base, name).await;
    let template: Value = admin
        .post(format!("{base}/api/v1/templates"))
        .json(
            &json!({"name": format!("{name} terms"), "defaultLanguage": "en",
            "languages": {"en": {"title": "Terms for {{fullName}}", "content": content,
                "inlineContent": "I, {{fullName}}, accept"}}}),
        )
        .json_with(StatusCode::CREATED)
        .await;
    let template = template["id"].as_str().unwrap().to_string();
    admin
        .post(format!("{base}/api/v1/templates/{template}/versions"))
        .json(&json!({"type": "MAJOR"}))
        .json_with(StatusCode::CREATED)
        .await;
    Setup {
        app_id,
        app_key,
        template,
    }
}

/// SDK POST then verify, as the widget and the customer's backend do: the event id, or the error.
async fn accept(
    http: &reqwest::Client,
    base: &str,
    s: &Setup,
    user: &str,
    action: &str,
    placeholders: Option<&str>,
) -> Result<String, String> {
    let res = http
        .post(format!("{base}/public-client/v1/clickwrap"))
        .header(header::USER_AGENT, UA)
        .json(
            &json!({"appId": s.app_id, "clickwrapTemplateId": s.template, "endUserId": user,
            "action": action, "templatePlaceholders": placeholders}),
        )
        .send()
        .await
        .map_err(|e| e.to_string())?;
    if res.status() != StatusCode::CREATED {
        return Err(format!("act: {}", res.status()));
    }
    let acted: Value = res.json().await.map_err(|e| e.to_string())?;
    let res = http
        .post(format!("{base}/public-client/v1/clickwrap/verify"))
        .header("x-app-id", &s.app_id)
        .header("x-app-key", &s.app_key)
        .json(&json!({"clicktermSignature": acted["clicktermSignature"]}))
        .send()
        .await
        .map_err(|e| e.to_string())?;
    if res.status() != StatusCode::OK {
        return Err(format!("verify: {}", res.status()));
    }
    let verified: Value = res.json().await.map_err(|e| e.to_string())?;
    Ok(verified["clickwrapEventId"].as_str().unwrap().to_string())
}

async fn text(res: reqwest::Response, status: StatusCode) -> String {
    let got = res.status();
    let body = res.text().await.unwrap();
    assert_eq!(got, status, "{body}");
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_evidence_is_what_the_sdk_showed_and_every_link_rehashes() {
    let server = TestServer::start().await;
    let admin = server.admin_client().await;
    let base = server.base.clone();
    let content = "<p>Hello {{fullName}} of {{company}} &amp; co.</p><p>Clause 2: {{missing}}.</p>";
    let s = setup(&base, &admin, "Shop", content).await;
    let other = setup(&base, &admin, "Other", "<p>x</p>").await;
    let http = common::client();

    // What the widget shows the end user: the SDK GET, with the placeholders it is given.
    let placeholders = r#"{"fullName":"<Ann & Bob>","company":"ACME"}"#;
    let shown: Value = http
        .get(
            url::Url::parse_with_params(
                &format!("{base}/public-client/v1/clickwrap"),
                &[
                    ("appId", s.app_id.as_str()),
                    ("clickwrapTemplateId", &s.template),
                    ("endUserId", "ann"),
                    ("templatePlaceholders", placeholders),
                ],
            )
            .unwrap(),
        )
        .header(header::USER_AGENT, UA)
        .json_ok()
        .await;
    assert!(
        shown["content"]
            .as_str()
            .unwrap()
            .contains("&lt;Ann &amp; Bob&gt;"),
        "{shown}"
    );
    let first = accept(&http, &base, &s, "ann", "ACCEPTED", Some(placeholders))
        .await
        .unwrap();

    let evidence: Value = admin
        .get(format!("{base}/api/v1/events/{first}/evidence"))
        .json_ok()
        .await;
    for field in ["title", "content", "inlineContent"] {
        assert_eq!(evidence[field], shown[field], "{field}: {evidence}");
    }
    assert_eq!(evidence["clickwrapEventId"], first.as_str());
    assert_eq!(evidence["endUserId"], "ann");
    assert_eq!(evidence["appId"], s.app_id.as_str());
    assert_eq!(evidence["clickwrapTemplateId"], s.template.as_str());
    assert_eq!(evidence["clickwrapTemplateName"], "Shop terms");
    assert_eq!(evidence["clickwrapTemplateVersion"], 1);
    assert_eq!(evidence["clickwrapTemplateVersionMinor"], 0);
    assert_eq!(evidence["language"], "en");
    assert_eq!(evidence["clickwrapEventStatus"], "ACCEPTED");
    assert_eq!(evidence["clientAddress"], "127.0.0.1");
    assert_eq!(evidence["userAgent"], UA);
    // The placeholders as the event API shows them (the stored JSON text).
    let event: Value = admin
        .get(format!("{base}/api/v1/events/{first}"))
        .json_ok()
        .await;
    assert_eq!(
        evidence["templatePlaceholders"],
        event["templatePlaceholders"]
    );
    assert_eq!(
        serde_json::from_str::<Value>(evidence["templatePlaceholders"].as_str().unwrap()).unwrap(),
        serde_json::from_str::<Value>(placeholders).unwrap()
    );
    assert!(
        evidence["presentedAt"].is_string(),
        "the SDK GET was recorded: {evidence}"
    );
    assert!(evidence["verifiedAt"].is_string());
    assert_eq!(evidence["evidenceVersion"], 1);
    let (position, previous, first_hash) = rehash(&evidence);
    assert_eq!((position, previous.as_str()), (1, ZEROS));

    // The integration's own backend reads the same document with its App Key; another cannot.
    let public = |app: &Setup, id: &str| {
        http.get(format!(
            "{base}/public-client/v1/clickwrap-events/{id}/evidence"
        ))
        .header("x-app-id", &app.app_id)
        .header("x-app-key", &app.app_key)
    };
    assert_eq!(public(&s, &first).json_ok().await, evidence);
    expect_error(
        public(&other, &first).send().await.unwrap(),
        StatusCode::NOT_FOUND,
    )
    .await;

    // The next verify links to the first; an action not verified has no evidence.
    let second = accept(&http, &base, &other, "bob", "DECLINED", None)
        .await
        .unwrap();
    let doc: Value = public(&other, &second).json_ok().await;
    let (position, previous, second_hash) = rehash(&doc);
    assert_eq!((position, previous), (2, first_hash.clone()));
    assert_eq!(doc["clickwrapEventStatus"], "DECLINED");
    assert_eq!(doc["templatePlaceholders"], Value::Null);
    assert_eq!(doc["content"], "<p>x</p>");
    let unverified: Value = http
        .post(format!("{base}/public-client/v1/clickwrap"))
        .json(
            &json!({"appId": s.app_id, "clickwrapTemplateId": s.template, "endUserId": "cy",
            "action": "ACCEPTED"}),
        )
        .json_with(StatusCode::CREATED)
        .await;
    let id = unverified["clickwrapEventId"].as_str().unwrap();
    let res = admin
        .get(format!("{base}/api/v1/events/{id}/evidence"))
        .send()
        .await
        .unwrap();
    expect_error(res, StatusCode::NOT_FOUND).await;

    // Renaming the template later changes nothing already proven: the name is the one verified.
    admin
        .patch(format!("{base}/api/v1/templates/{}", s.template))
        .json(&json!({"name": "Renamed terms"}))
        .json_ok()
        .await;
    let again: Value = admin
        .get(format!("{base}/api/v1/events/{first}/evidence"))
        .json_ok()
        .await;
    assert_eq!(again, evidence);

    // The head: in the admin API and in /metrics.
    let head: Value = admin
        .get(format!("{base}/api/v1/ledger/head"))
        .json_ok()
        .await;
    assert_eq!(head, json!({"position": 2, "hash": second_hash}));
    let metrics = text(
        http.get(format!("{base}/metrics")).send().await.unwrap(),
        StatusCode::OK,
    )
    .await;
    assert!(
        metrics.contains("clicktermd_ledger_head_position 2\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains(&format!(
            "clicktermd_ledger_head_info{{position=\"2\",hash=\"{second_hash}\"}} 1"
        )),
        "{metrics}"
    );

    // The certificate: a PDF that poppler reads, holding the event, the end user, the version and
    // the hashes. Its first page is also rendered as the README's picture.
    let res = admin
        .get(format!("{base}/api/v1/events/{first}/certificate.pdf"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()[header::CONTENT_TYPE], "application/pdf");
    let pdf = res.bytes().await.unwrap();
    assert!(pdf.starts_with(b"%PDF-"), "not a PDF");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("certificate.pdf");
    std::fs::write(&file, &pdf).unwrap();
    let out = std::process::Command::new("pdftotext")
        .args(["-layout", file.to_str().unwrap(), "-"])
        .output()
        .expect("pdftotext (poppler-utils) must be installed: .ci/run installs it");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let read = String::from_utf8(out.stdout).unwrap();
    for needle in [
        "Certificate of acceptance",
        first.as_str(),
        "ann",
        "Template version",
        "1.0",
        "Shop terms",
        "Hello <Ann & Bob> of ACME & co.",
        evidence["ledger"]["evidenceDigest"].as_str().unwrap(),
        first_hash.as_str(),
        ZEROS,
        UA,
    ] {
        assert!(
            read.contains(needle),
            "{needle:?} missing from the certificate:\n{read}"
        );
    }
    let shots = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/tmp/screenshots");
    std::fs::create_dir_all(&shots).unwrap();
    let png = std::process::Command::new("pdftoppm")
        .args(["-png", "-r", "110", "-singlefile", file.to_str().unwrap()])
        .arg(shots.join("certificate"))
        .output()
        .expect("pdftoppm");
    assert!(
        png.status.success(),
        "{}",
        String::from_utf8_lossy(&png.stderr)
    );

    // Exports: CSV with its head in a header, NDJSON filtered, bad parameters named.
    let res = admin
        .get(format!("{base}/api/v1/events/export?format=csv"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(
        res.headers()[header::CONTENT_TYPE],
        "text/csv; charset=utf-8"
    );
    assert_eq!(
        res.headers()["clickterm-chain-head"],
        format!("2:{second_hash}").as_str()
    );
    let csv = res.text().await.unwrap();
    let rows: Vec<&str> = csv.split("\r\n").filter(|l| !l.is_empty()).collect();
    assert_eq!(rows.len(), 3, "{csv}");
    assert!(
        rows[0].starts_with("position,clickwrapEventId,appId,endUserId,"),
        "{csv}"
    );
    assert!(
        rows[1].starts_with(&format!("2,{second},")),
        "newest first: {csv}"
    );
    assert!(rows[2].ends_with(&first_hash), "{csv}");
    let ndjson = text(
        admin
            .get(format!(
                "{base}/api/v1/events/export?endUserId=ann&appId={}",
                s.app_id
            ))
            .send()
            .await
            .unwrap(),
        StatusCode::OK,
    )
    .await;
    let lines: Vec<Value> = ndjson
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2, "{ndjson}");
    assert_eq!(lines[0], evidence);
    assert_eq!(
        lines[1],
        json!({"chainHead": {"position": 2, "hash": second_hash}, "events": 1})
    );
    // The few lines of Python in docs/ledger.md re-hash every line of an export, as written there.
    let full = text(
        admin
            .get(format!("{base}/api/v1/events/export"))
            .send()
            .await
            .unwrap(),
        StatusCode::OK,
    )
    .await;
    let lines_file = dir.path().join("export.ndjson");
    std::fs::write(&lines_file, &full).unwrap();
    let doc = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/ledger.md"))
        .unwrap();
    let snippet = doc
        .split("```python\n")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("docs/ledger.md has a python block");
    let script = format!(
        "import sys\nchecked = 0\nfor line in open(sys.argv[1]):\n    if '\"chainHead\"' in line:\n        continue\n{}    checked += 1\nprint(checked)\n",
        snippet
            .lines()
            .map(|l| format!("    {l}\n"))
            .collect::<String>()
    );
    let out = std::process::Command::new("python3")
        .args(["-c", &script, lines_file.to_str().unwrap()])
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "2");
    for (query, field) in [
        ("format=xml", "format"),
        ("from=yesterday", "from"),
        ("appId=nope", "appId"),
        ("clickwrapEventStatus=MAYBE", "clickwrapEventStatus"),
        ("limit=5", "limit"),
    ] {
        let res = admin
            .get(format!("{base}/api/v1/events/export?{query}"))
            .send()
            .await
            .unwrap();
        let err = expect_error(res, StatusCode::BAD_REQUEST).await;
        assert!(
            err["message"].as_str().unwrap().contains(field),
            "{query}: {err}"
        );
    }

    // The command line: the same export, its head on standard error.
    let data = server.data_dir.to_str().unwrap().to_string();
    let out = clicktermd(
        &[
            "--data-dir",
            &data,
            "export",
            "--from",
            "2000-01-01T00:00:00Z",
            "--to",
            "2100-01-01T00:00:00Z",
            "--format",
            "csv",
            "--status",
            "ACCEPTED",
        ],
        &[],
    );
    assert_success(&out, "export");
    let rows: Vec<String> = stdout(&out)
        .split("\r\n")
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect();
    assert_eq!(rows.len(), 2, "{}", stdout(&out));
    assert!(rows[1].starts_with(&format!("1,{first},")));
    assert!(
        stderr(&out).contains(&format!("chain head 2:{second_hash}")),
        "{}",
        stderr(&out)
    );
    let out = clicktermd(
        &["--data-dir", &data, "export", "--from", "x", "--to", "y"],
        &[],
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("--from"), "{}", stderr(&out));
    server.stop().await;
}

/// The real binary serving `data`, with an admin cookie client.
async fn serving(data: &Path, log: &Path) -> (Serving, String, reqwest::Client) {
    let (child, base) = serve(data, log, &UNLIMITED).await;
    let admin = common::cookie_client();
    admin
        .post(format!("{base}/api/v1/login"))
        .json(&json!({"username": common::ADMIN, "password": read_admin_password(data)}))
        .json_ok()
        .await;
    (child, base, admin)
}

/// `clicktermd verify-ledger` on a data directory: (exit code, standard output).
fn verify_ledger(data: &Path, extra: &[&str]) -> (i32, String) {
    let mut args = vec!["--data-dir", data.to_str().unwrap(), "verify-ledger"];
    args.extend_from_slice(extra);
    let out = clicktermd(&args, &[]);
    (
        out.status.code().unwrap_or(-1),
        format!("{}{}", stdout(&out), stderr(&out)),
    )
}

fn db(data: &Path) -> rusqlite::Connection {
    let c = rusqlite::Connection::open(data.join("clicktermd.db")).unwrap();
    c.busy_timeout(Duration::from_secs(5)).unwrap();
    c
}

/// The event chained at `position`.
fn event_at(data: &Path, position: i64) -> String {
    db(data)
        .query_row(
            "SELECT e.event_id FROM ledger l JOIN events e ON e.id = l.event_id WHERE l.position = ?1",
            [position],
            |r| r.get(0),
        )
        .unwrap()
}

/// Runs `sql` with the named triggers out of the way, as someone editing the file would.
fn tamper(data: &Path, triggers: &[&str], sql: &str) {
    let c = db(data);
    // As a hand at the file would: without the foreign keys this build of SQLite enforces by default.
    c.execute_batch("PRAGMA foreign_keys = OFF").unwrap();
    let mut saved = Vec::new();
    for t in triggers {
        let create: String = c
            .query_row("SELECT sql FROM sqlite_schema WHERE name = ?1", [t], |r| {
                r.get(0)
            })
            .unwrap();
        c.execute_batch(&format!("DROP TRIGGER {t}")).unwrap();
        saved.push(create);
    }
    c.execute_batch(sql).unwrap();
    for create in saved {
        c.execute_batch(&create).unwrap();
    }
}

fn copy_of(data: &Path, to: &Path) -> std::path::PathBuf {
    std::fs::create_dir_all(to).unwrap();
    std::fs::copy(data.join("clicktermd.db"), to.join("clicktermd.db")).unwrap();
    to.to_path_buf()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_ledger_names_the_link_each_tampering_broke() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (child, base, admin) = serving(&data, &dir.path().join("serve.log")).await;
    let s = setup(&base, &admin, "Shop", "<p>Terms, {{fullName}}</p>").await;
    let http = common::client();
    for i in 0..12 {
        accept(
            &http,
            &base,
            &s,
            &format!("user-{i}"),
            "ACCEPTED",
            Some(r#"{"fullName":"U"}"#),
        )
        .await
        .unwrap();
    }
    let (code, out) = verify_ledger(&data, &[]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("ledger intact: 12 links"), "{out}");
    let head: Value = admin
        .get(format!("{base}/api/v1/ledger/head"))
        .json_ok()
        .await;
    let anchor = format!("12:{}", head["hash"].as_str().unwrap());

    // One event's end user changed in the live database, behind the running server's back.
    let fourth = event_at(&data, 4);
    tamper(
        &data,
        &["events_final_once_verified"],
        &format!("UPDATE events SET end_user_id = 'mallory' WHERE event_id = '{fourth}'"),
    );
    let (code, out) = verify_ledger(&data, &[]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(&format!(
            "ledger broken: link 4: the evidence of event {fourth} no longer matches"
        )),
        "{out}"
    );
    tamper(
        &data,
        &["events_final_once_verified"],
        &format!("UPDATE events SET end_user_id = 'user-3' WHERE event_id = '{fourth}'"),
    );
    let (code, out) = verify_ledger(&data, &["--anchor", &anchor]);
    assert_eq!(code, 0, "put back, the chain is whole again: {out}");
    assert!(child.terminate().success());

    // One event deleted: its link points at nothing. Deleted with its link: the chain has a gap.
    let deleted = copy_of(&data, &dir.path().join("deleted"));
    let seventh = event_at(&deleted, 7);
    tamper(
        &deleted,
        &["events_never_deleted"],
        &format!("DELETE FROM events WHERE event_id = '{seventh}'"),
    );
    let (code, out) = verify_ledger(&deleted, &[]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("ledger broken: link 7: its clickwrap event is no longer in the database"),
        "{out}"
    );
    tamper(
        &deleted,
        &["ledger_links_never_deleted"],
        "DELETE FROM ledger WHERE position = 7",
    );
    let (code, out) = verify_ledger(&deleted, &[]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("ledger broken: link 7 is missing"), "{out}");

    // Two links swapped (each keeping its own hash): the first of them no longer follows.
    let swapped = copy_of(&data, &dir.path().join("swapped"));
    tamper(
        &swapped,
        &["ledger_links_immutable"],
        "UPDATE ledger SET position = -9 WHERE position = 9;
         UPDATE ledger SET position = 9 WHERE position = 10;
         UPDATE ledger SET position = 10 WHERE position = -9;",
    );
    let (code, out) = verify_ledger(&swapped, &[]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("ledger broken: link 9: its hash does not follow from link 8"),
        "{out}"
    );

    // The last link cut off: only the anchor noted earlier can tell.
    let cut = copy_of(&data, &dir.path().join("cut"));
    tamper(
        &cut,
        &["ledger_links_never_deleted"],
        "DELETE FROM ledger WHERE position = 12",
    );
    let (code, out) = verify_ledger(&cut, &["--anchor", &anchor]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("link 12 is missing"), "{out}");
    // (Without the anchor its event is still found unchained.)
    let (code, out) = verify_ledger(&cut, &[]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("is verified but no link covers it"), "{out}");
    let (code, out) = verify_ledger(&cut, &["--anchor", "12:zz"]);
    assert_eq!(code, 2, "{out}");
}

/// Verifies `n` new events with `concurrency` clients at once; returns the ids acknowledged.
async fn verify_many(
    base: &str,
    s: &Arc<Setup>,
    prefix: &str,
    n: usize,
    concurrency: usize,
) -> Vec<String> {
    let next = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (base, s, next, prefix) = (
            base.to_string(),
            s.clone(),
            next.clone(),
            prefix.to_string(),
        );
        tasks.push(tokio::spawn(async move {
            let http = common::client();
            let mut done = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed) as usize;
                if i >= n {
                    return done;
                }
                let user = format!("{prefix}-{i}");
                match accept(&http, &base, &s, &user, "ACCEPTED", None).await {
                    Ok(id) => done.push(id),
                    Err(e) => panic!("{user}: {e}"),
                }
            }
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    all
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_verifies_stay_chained_across_a_restart_and_a_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (child, base, admin) = serving(&data, &dir.path().join("1.log")).await;
    let s = Arc::new(setup(&base, &admin, "Load", "<p>Terms</p>").await);
    let started = Instant::now();
    let mut acknowledged = verify_many(&base, &s, "a", 5_000, 32).await;
    println!("5000 verifies in {:?}", started.elapsed());
    assert!(child.terminate().success());

    let (child, base, _) = serving(&data, &dir.path().join("2.log")).await;
    acknowledged.extend(verify_many(&base, &s, "b", 4_000, 32).await);

    // The last ones with the process killed in the middle of them: what was acknowledged is chained,
    // whatever was in flight is either wholly there (event and link) or not at all.
    let killed = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for t in 0..32 {
        let (base, s, killed, acked) = (base.clone(), s.clone(), killed.clone(), acked.clone());
        tasks.push(tokio::spawn(async move {
            let http = common::client();
            for i in 0.. {
                if killed.load(Ordering::Relaxed) {
                    return;
                }
                match accept(&http, &base, &s, &format!("c-{t}-{i}"), "ACCEPTED", None).await {
                    Ok(id) => acked.lock().unwrap().push(id),
                    Err(_) => return,
                }
            }
        }));
    }
    let start = Instant::now();
    while acked.lock().unwrap().len() < 1_500 {
        assert!(
            start.elapsed() < DEADLINE * 4,
            "the last verifies do not go through"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    child.kill9();
    killed.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.unwrap();
    }
    acknowledged.extend(acked.lock().unwrap().drain(..));
    assert!(acknowledged.len() >= 10_000, "{}", acknowledged.len());

    let (child, base, admin) = serving(&data, &dir.path().join("3.log")).await;
    let (code, out) = verify_ledger(&data, &[]);
    assert_eq!(code, 0, "{out}");
    let c = db(&data);
    let verified: i64 = c
        .query_row(
            "SELECT count(*) FROM events WHERE verified_at IS NOT NULL",
            [],
            |r| r.get(0),
        )
        .unwrap();
    let links: i64 = c
        .query_row("SELECT count(*) FROM ledger", [], |r| r.get(0))
        .unwrap();
    assert_eq!(links, verified);
    assert!(
        out.contains(&format!("ledger intact: {links} links")),
        "{out}"
    );
    let mut missing = 0;
    for id in &acknowledged {
        let chained: i64 = c
            .query_row(
                "SELECT count(*) FROM ledger l JOIN events e ON e.id = l.event_id WHERE e.event_id = ?1",
                [id],
                |r| r.get(0),
            )
            .unwrap();
        missing += usize::from(chained != 1);
    }
    assert_eq!(missing, 0, "acknowledged verifies without their link");
    // The chain goes on from where it was after the crash.
    accept(&common::client(), &base, &s, "after", "ACCEPTED", None)
        .await
        .unwrap();
    let head: Value = admin
        .get(format!("{base}/api/v1/ledger/head"))
        .json_ok()
        .await;
    assert_eq!(head["position"], links + 1);
    assert!(child.terminate().success());
    let (code, out) = verify_ledger(&data, &[]);
    assert_eq!(code, 0, "{out}");
    println!("{out} ({} acknowledged verifies)", acknowledged.len());
}

/// The resident set of process `pid`, from `/proc/PID/status`, in bytes.
fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .expect("VmRSS");
    let kb: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kb * 1024
}

/// Streams an export and re-hashes every line as it comes; meanwhile samples the server's RSS.
/// Returns (lines by position, trailer, peak RSS, bytes).
async fn stream_export(
    admin: &reqwest::Client,
    url: &str,
    pid: u32,
) -> (BTreeMap<i64, (String, String)>, Value, u64, u64) {
    let peak = Arc::new(AtomicU64::new(rss(pid)));
    let sampling = Arc::new(AtomicBool::new(true));
    let sampler = {
        let (peak, sampling) = (peak.clone(), sampling.clone());
        tokio::spawn(async move {
            while sampling.load(Ordering::Relaxed) {
                peak.fetch_max(rss(pid), Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
    };
    let mut res = admin
        .get(url)
        .timeout(Duration::from_secs(300))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let header_head = res.headers()["clickterm-chain-head"]
        .to_str()
        .unwrap()
        .to_string();
    let mut links = BTreeMap::new();
    let mut pending = Vec::new();
    let mut trailer = Value::Null;
    let mut bytes = 0u64;
    while let Some(chunk) = res.chunk().await.unwrap() {
        bytes += chunk.len() as u64;
        pending.extend_from_slice(&chunk);
        while let Some(nl) = pending.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = pending.drain(..=nl).collect();
            let line = &line[..line.len() - 1];
            if line.starts_with(b"{\"chainHead\"") {
                trailer = serde_json::from_slice(line).unwrap();
                continue;
            }
            let (position, previous, hash) = rehash_line(line);
            assert!(
                links.insert(position, (previous, hash)).is_none(),
                "link {position} twice"
            );
        }
    }
    sampling.store(false, Ordering::Relaxed);
    sampler.await.unwrap();
    assert!(pending.is_empty());
    assert_eq!(
        format!(
            "{}:{}",
            trailer["chainHead"]["position"],
            trailer["chainHead"]["hash"].as_str().unwrap()
        ),
        header_head
    );
    (links, trailer, peak.load(Ordering::Relaxed), bytes)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_export_of_100000_events_streams_in_flat_memory_and_rehashes_to_its_head() {
    const EVENTS: i64 = 100_000;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (child, base, admin) = serving(&data, &dir.path().join("1.log")).await;
    // A text of about half a KiB, so that the export (over 100 MB) is far larger than the bound below.
    let content = format!(
        "<p>Dear {{{{fullName}}}},</p>{}",
        "<p>The terms of the service. </p>".repeat(16)
    );
    let s = setup(&base, &admin, "Big", &content).await;
    let model = accept(
        &common::client(),
        &base,
        &s,
        "model",
        "ACCEPTED",
        Some(r#"{"fullName":"M"}"#),
    )
    .await
    .unwrap();
    assert!(child.terminate().success());

    // 100 000 more verified events, generated straight into the file from the one above; then the
    // database is made one of the schema before the ledger (the ledger and the events' column for it
    // dropped), so that the start chains them all as the migration chains an existing database's
    // events.
    let started = Instant::now();
    let c = db(&data);
    c.execute_batch(&format!(
        "BEGIN;
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {EVENTS})
         INSERT INTO events (event_id, integration_id, template_id, major, minor, effective_at, end_user_id,
             action, template_placeholders, technical_metadata, language, presented_at, action_at, verified_at)
         SELECT printf('%08x-0000-4000-8000-%012x', i, i), e.integration_id, e.template_id, e.major, e.minor,
             e.effective_at, 'user-' || i, CASE WHEN i % 8 = 0 THEN 'DECLINED' ELSE 'ACCEPTED' END,
             printf('{{\"fullName\":\"User %d\"}}', i), e.technical_metadata, e.language, NULL,
             e.action_at - 86400000 + i, e.verified_at - 86400000 + i
         FROM n, events e WHERE e.event_id = '{model}';
         DROP TABLE ledger;
         ALTER TABLE events DROP COLUMN ledger_position;
         PRAGMA user_version = {before};
         COMMIT;",
        before = clicktermd::store::SCHEMA_VERSION - 1
    ))
    .unwrap();
    drop(c);
    println!("generated {EVENTS} events in {:?}", started.elapsed());
    let started = Instant::now();
    let (child, base) =
        serve_within(DEADLINE * 4, &data, &dir.path().join("2.log"), &UNLIMITED).await;
    println!(
        "started, chaining {} events, in {:?}",
        EVENTS + 1,
        started.elapsed()
    );
    assert!(
        child
            .log()
            .contains("chained the events verified before the ledger"),
        "{}",
        child.log()
    );
    let token = {
        let out = clicktermd(
            &[
                "--data-dir",
                data.to_str().unwrap(),
                "admin",
                "token",
                "create",
            ],
            &[],
        );
        assert_success(&out, "token");
        stdout(&out).trim().to_string()
    };
    let admin = common::bearer_client(&token);
    let pid = child.child.id();

    // Warm up: a small export, so every pooled connection has its caches before the baseline.
    let warm = format!("{base}/api/v1/events/export?to={}", "2000-01-01T00:00:00Z");
    stream_export(&admin, &warm, pid).await;
    let (_, _, _, _) = stream_export(
        &admin,
        &format!("{base}/api/v1/events/export?endUserId=user-5"),
        pid,
    )
    .await;
    let baseline = rss(pid);
    let started = Instant::now();
    let (links, trailer, peak, bytes) =
        stream_export(&admin, &format!("{base}/api/v1/events/export"), pid).await;
    let took = started.elapsed();
    println!(
        "exported {} events, {:.1} MB in {took:?}; server RSS {:.1} MB before, peak {:.1} MB",
        links.len(),
        bytes as f64 / 1e6,
        baseline as f64 / 1e6,
        peak as f64 / 1e6
    );
    assert_eq!(links.len() as i64, EVENTS + 1);
    assert_eq!(trailer["events"], EVENTS + 1);
    // The lines chain from the first link to the head the export reports.
    let mut previous = ZEROS.to_string();
    for (i, (position, (prev, hash))) in links.iter().enumerate() {
        assert_eq!(*position, i as i64 + 1);
        assert_eq!(prev, &previous, "link {position}");
        previous = hash.clone();
    }
    assert_eq!(trailer["chainHead"]["position"], EVENTS + 1);
    assert_eq!(trailer["chainHead"]["hash"], previous.as_str());
    // Flat memory: the server grew by far less than a tenth of what it sent.
    let growth = peak.saturating_sub(baseline);
    assert!(bytes > 100_000_000, "the export is large: {bytes} bytes");
    assert!(
        growth < 24 * 1024 * 1024,
        "the server's RSS grew by {:.1} MB during a {:.1} MB export",
        growth as f64 / 1e6,
        bytes as f64 / 1e6
    );
    assert!(child.terminate().success());
}
