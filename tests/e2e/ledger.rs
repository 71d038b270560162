//! Proof of consent (issue #17): the evidence of a verified event is what the SDK showed the end user;
//! every verified event is chained (SHA-256, in verification order) and the hashes are recomputed here
//! from the documented encoding, independently of the server's code; `verify-ledger` names the link a
//! change behind the server's back broke (an end user changed, an event deleted, two links swapped) and
//! finds an untouched database intact after 10 000 verifies across a restart and a `kill -9`; the
//! certificate is a PDF that poppler reads; an export of 100 000 events streams in flat server memory
//! and its lines re-hash to the head it reports.

use std::collections::BTreeMap;
use std::path::Path;

use reqwest::StatusCode;
use reqwest::header;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::common::{
    self, Call, TestServer, assert_success, clicktermd, expect_error, stderr, stdout,
};

pub(crate) const UA: &str = "ledger-e2e/1.0 (proof of consent)";

/// `value` as canonical JSON: members sorted by name at every depth, no whitespace (what docs/ledger.md
/// specifies; written here from that text, not with the server's code).
pub(crate) fn canonical(value: &Value) -> Vec<u8> {
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
pub(crate) fn rehash(doc: &Value) -> (i64, String, String) {
    let mut evidence = doc.as_object().expect("an object").clone();
    let ledger = evidence.remove("ledger").expect("a ledger member");
    rehash_parts(&Value::Object(evidence), &ledger)
}

pub(crate) fn rehash_parts(evidence: &Value, ledger: &Value) -> (i64, String, String) {
    let digest: [u8; 32] = Sha256::digest(canonical(evidence)).into();
    link_of(&digest, ledger, evidence)
}

pub(crate) fn link_of(
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

pub(crate) const ZEROS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// An integration's credentials and a published template.
#[derive(Clone)]
pub(crate) struct Setup {
    pub(crate) app_id: String,
    pub(crate) app_key: String,
    pub(crate) template: String,
}

pub(crate) async fn setup(base: &str, admin: &reqwest::Client, name: &str, content: &str) -> Setup {
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
pub(crate) async fn accept(
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

pub(crate) async fn text(res: reqwest::Response, status: StatusCode) -> String {
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
    let env = server.cli_env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
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
        &env,
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

    // Verifies racing each other (on PostgreSQL, on as many pooled connections) each take the next
    // position: the chain never forks, and `verify-ledger` walks it intact to the head.
    let burst: Vec<_> = (0..24)
        .map(|i| {
            let (http, base, s) = (http.clone(), base.clone(), s.clone());
            tokio::spawn(async move {
                accept(&http, &base, &s, &format!("racer-{i}"), "ACCEPTED", None).await
            })
        })
        .collect();
    for task in burst {
        task.await.unwrap().expect("a racing verify");
    }
    let head: Value = admin
        .get(format!("{base}/api/v1/ledger/head"))
        .json_ok()
        .await;
    assert_eq!(head["position"], 26, "{head}");
    let out = clicktermd(&["--data-dir", &data, "verify-ledger"], &env);
    assert_success(&out, "verify-ledger");
    assert!(
        stdout(&out).contains("ledger intact: 26 links"),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    server.stop().await;
}
