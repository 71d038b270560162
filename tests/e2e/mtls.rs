//! Client certificates for receivers that demand mutual TLS (issue #16 point 3), end to end: a real
//! TLS receiver (rustls, HTTP/2) that requires a client certificate from a test CA made here, the
//! real server delivering to it on loopback, certificates uploaded through the admin API or named in
//! the config file. The receiver records the certificate each request's connection presented, so a
//! test sees whose identity a webhook arrived with — and that a pooled connection made with one
//! integration's certificate never carries another integration's webhook.

use std::time::{Duration, Instant};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair,
};
use reqwest::StatusCode;
use rustls_pki_types::CertificateDer;
use serde_json::{Value, json};
use sha2::Digest;

use crate::common::h2receiver::H2Receiver;
use crate::common::{Call, DEADLINE, TestServer, expect_error};

/// A company's CA that issues client certificates.
struct ClientCa {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

/// A client certificate and its key, as PEM, and the certificate's DER.
struct Issued {
    cert_pem: String,
    key_pem: String,
    der: Vec<u8>,
}

impl Issued {
    /// `openssl x509 -noout -fingerprint -sha256`'s spelling of the certificate's SHA-256.
    fn fingerprint(&self) -> String {
        sha2::Sha256::digest(&self.der)
            .iter()
            .map(|b| format!("{b:02X}"))
            .collect::<Vec<_>>()
            .join(":")
    }

    /// The key's base64 lines, each of which must never appear in an answer.
    fn key_lines(&self) -> Vec<String> {
        self.key_pem
            .lines()
            .filter(|l| !l.starts_with("-----") && l.len() > 16)
            .map(str::to_string)
            .collect()
    }
}

const DAY: i64 = 86_400;

fn unix_now() -> i64 {
    crate::common::receiver::unix_now() as i64
}

impl ClientCa {
    fn new(name: &str) -> ClientCa {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ClientCa {
            issuer: CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap(),
        }
    }

    fn der(&self) -> CertificateDer<'static> {
        self.issuer.der().clone()
    }

    /// A client certificate for `cn`, valid from a day ago for a year.
    fn issue(&self, cn: &str) -> Issued {
        self.issue_with(cn, unix_now() - DAY, unix_now() + 365 * DAY, true)
    }

    fn issue_with(&self, cn: &str, from: i64, to: i64, client_auth: bool) -> Issued {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, cn);
        params.extended_key_usages = vec![if client_auth {
            ExtendedKeyUsagePurpose::ClientAuth
        } else {
            ExtendedKeyUsagePurpose::ServerAuth
        }];
        params.use_authority_key_identifier_extension = true;
        params.not_before = time::OffsetDateTime::from_unix_timestamp(from).unwrap();
        params.not_after = time::OffsetDateTime::from_unix_timestamp(to).unwrap();
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            der: cert.der().to_vec(),
        }
    }
}

/// The server, an admin session, and the receiver that demands certificates from `ca`.
struct World {
    server: TestServer,
    admin: reqwest::Client,
    receiver: H2Receiver,
}

async fn world(ca: &ClientCa) -> World {
    let receiver = H2Receiver::requiring_client_certificates_from(ca.der()).await;
    let (server, admin) = server_trusting(receiver.ca_file.clone()).await;
    World {
        server,
        admin,
        receiver,
    }
}

/// A server that trusts the receiver CA `trust`, may deliver to 127.0.0.1, and tries once; with an
/// admin session.
async fn server_trusting(trust: std::path::PathBuf) -> (TestServer, reqwest::Client) {
    let server = TestServer::start_with(|c| {
        c.webhooks.extra_ca_file = Some(trust);
        c.webhooks.allow_private_cidrs = vec!["127.0.0.1/32".parse().unwrap()];
        c.webhooks.max_retries = 0;
    })
    .await;
    let admin = server.admin_client().await;
    (server, admin)
}

impl World {
    /// An integration whose callback is the receiver's `path`.
    async fn integration(&self, name: &str, path: &str) -> String {
        self.integration_at(name, &self.receiver.url(path)).await
    }

    /// An integration whose callback is `url`.
    async fn integration_at(&self, name: &str, url: &str) -> String {
        let (app_id, _, _) = self.server.create_integration(&self.admin, name).await;
        self.admin
            .patch(self.server.url(&format!("/api/v1/integrations/{app_id}")))
            .json(&json!({"callbackUrl": url}))
            .json_ok()
            .await;
        app_id
    }

    fn cert_url(&self, app_id: &str) -> String {
        self.server
            .url(&format!("/api/v1/integrations/{app_id}/client-certificate"))
    }

    async fn upload(&self, app_id: &str, issued: &Issued) -> Value {
        let body = json!({"certificate": issued.cert_pem, "privateKey": issued.key_pem});
        self.admin
            .put(self.cert_url(app_id))
            .json(&body)
            .json_ok()
            .await
    }

    /// Sends a test webhook and waits for its delivery to finish; returns the delivery.
    async fn deliver(&self, app_id: &str) -> Value {
        let queued = self
            .admin
            .post(
                self.server
                    .url(&format!("/api/v1/integrations/{app_id}/test-webhook")),
            )
            .json_with(StatusCode::ACCEPTED)
            .await;
        let id = queued["id"].as_str().unwrap().to_string();
        let deadline = Instant::now() + DEADLINE;
        loop {
            let d = self
                .admin
                .get(self.server.url(&format!("/api/v1/deliveries/{id}")))
                .json_ok()
                .await;
            if ["succeeded", "failed"].contains(&d["state"].as_str().unwrap_or("")) {
                return d;
            }
            assert!(
                Instant::now() < deadline,
                "the delivery never finished: {d}"
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// The client certificates of the requests that arrived at `path`, in order.
    fn arrived_at(&self, path: &str) -> Vec<Option<Vec<u8>>> {
        self.receiver
            .seen()
            .into_iter()
            .filter(|s| s.path == path)
            .map(|s| s.client_cert)
            .collect()
    }
}

/// The attempt's outcome and detail, of a delivery with one attempt.
fn outcome(d: &Value) -> (String, String) {
    let a = &d["attemptList"][0];
    (
        a["outcome"].as_str().unwrap_or_default().to_string(),
        a["detail"].as_str().unwrap_or_default().to_string(),
    )
}

/// The Must-show of issue #16 point 3, and the security point under it: a receiver that requires a
/// certificate from the company's CA gets each integration's webhooks with that integration's own
/// certificate; an integration without one is refused with `tls_error` and a sentence saying what
/// to do — also right after another integration's delivery opened an HTTP/2 connection to the same
/// receiver, which must not carry its request. A changed certificate is presented from the next
/// attempt on, on a new connection; a removed one is no longer presented; one from a CA the receiver
/// does not trust is named in the refusal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_integration_presents_its_own_certificate_and_no_other() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let ca = ClientCa::new("Example Corp Client CA");
    let w = world(&ca).await;

    let a = w.integration("A", "/a").await;
    let cert_a = ca.issue("integration A");
    let shown = w.upload(&a, &cert_a).await;
    assert_eq!(shown["subject"], "CN=integration A", "{shown}");
    assert_eq!(shown["issuer"], "CN=Example Corp Client CA", "{shown}");
    assert_eq!(shown["fingerprintSha256"], cert_a.fingerprint(), "{shown}");
    assert_eq!(shown["source"], "upload", "{shown}");
    let d = w.deliver(&a).await;
    assert_eq!(d["state"], "succeeded", "{d}");
    assert_eq!(w.arrived_at("/a"), vec![Some(cert_a.der.clone())]);
    let connections = w.receiver.accepted();

    // B has no certificate and goes to the same receiver while A's HTTP/2 connection is pooled.
    let b = w.integration("B", "/b").await;
    let d = w.deliver(&b).await;
    assert_eq!(d["state"], "failed", "{d}");
    let (outcome_b, detail) = outcome(&d);
    assert_eq!(outcome_b, "tls_error", "{d}");
    assert!(
        detail.contains("requires a client certificate")
            && detail.contains("this integration has none")
            && detail.contains("issued by CN=Example Corp Client CA")
            && detail.contains("client-certificate"),
        "{detail}"
    );
    assert!(w.arrived_at("/b").is_empty(), "{:?}", w.receiver.seen());
    assert!(
        w.receiver.accepted() > connections,
        "B's attempt dialled a connection of its own"
    );

    // C has a certificate of its own: its webhook arrives with it, and A's still with A's.
    let c = w.integration("C", "/c").await;
    let cert_c = ca.issue("integration C");
    w.upload(&c, &cert_c).await;
    assert_eq!(w.deliver(&c).await["state"], "succeeded");
    assert_eq!(w.deliver(&a).await["state"], "succeeded");
    assert_eq!(w.arrived_at("/c"), vec![Some(cert_c.der.clone())]);
    assert_eq!(
        w.arrived_at("/a"),
        vec![Some(cert_a.der.clone()), Some(cert_a.der.clone())]
    );

    // A's certificate is renewed: the next attempt presents the new one, on a new connection.
    let renewed = ca.issue("integration A (renewed)");
    w.upload(&a, &renewed).await;
    let before = w.receiver.accepted();
    assert_eq!(w.deliver(&a).await["state"], "succeeded");
    assert_eq!(
        w.arrived_at("/a").last().unwrap(),
        &Some(renewed.der.clone())
    );
    assert!(
        w.receiver.accepted() > before,
        "a new connection for the new certificate"
    );
    let seen = w.receiver.seen();
    let last = seen.last().unwrap();
    assert!(
        seen.iter()
            .filter(|s| s.client_cert.as_deref() == Some(&cert_a.der[..]))
            .all(|s| s.connection != last.connection),
        "no connection made with the old certificate carried the new attempt"
    );

    // Removed: A presents none from the next attempt on.
    w.admin
        .delete(w.cert_url(&a))
        .json_with(StatusCode::NO_CONTENT)
        .await;
    let d = w.deliver(&a).await;
    let (outcome_a, detail) = outcome(&d);
    assert_eq!(outcome_a, "tls_error", "{d}");
    assert!(detail.contains("this integration has none"), "{detail}");
    assert_eq!(w.arrived_at("/a").len(), 3);

    // A certificate from a CA the receiver does not trust is named in the refusal.
    let other = ClientCa::new("Somebody Else's CA").issue("integration D");
    let dd = w.integration("D", "/d").await;
    w.upload(&dd, &other).await;
    let d = w.deliver(&dd).await;
    let (outcome_d, detail) = outcome(&d);
    assert_eq!(outcome_d, "tls_error", "{d}");
    assert!(
        detail.contains("refused this integration's client certificate CN=integration D")
            && detail.contains("issued by CN=Somebody Else's CA")
            && detail.contains("accepts client certificates issued by CN=Example Corp Client CA"),
        "{detail}"
    );
    assert!(w.arrived_at("/d").is_empty());
    w.server.stop().await;
}

/// Uploads are checked before anything is stored — the PEM parses, the key is the certificate's, it
/// is meant for clients and valid now — and a refusal names the field and the problem. The key is
/// never in an answer: not the upload's, not the certificate's, not the integration's, not the
/// audit log's; setting and removing it are audited.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_are_checked_and_the_key_is_never_shown() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let ca = ClientCa::new("Example Corp Client CA");
    let server = TestServer::start().await;
    let admin = server.admin_client().await;
    let (app_id, _, _) = server.create_integration(&admin, "Shop").await;
    let url = server.url(&format!("/api/v1/integrations/{app_id}/client-certificate"));
    let good = ca.issue("shop");
    let other = ca.issue("other");
    let expired = ca.issue_with("old", unix_now() - 30 * DAY, unix_now() - DAY, true);
    let server_only = ca.issue_with("server", unix_now() - DAY, unix_now() + DAY, false);

    let none = expect_error(admin.get(&url).send().await.unwrap(), StatusCode::NOT_FOUND).await;
    assert_eq!(none["message"], "client certificate not found", "{none}");
    let body = |cert: &str, key: &str| json!({"certificate": cert, "privateKey": key});
    let cases: &[(Value, &str)] = &[
        (
            body("hello", &good.key_pem),
            "certificate: holds no certificate",
        ),
        (
            body(
                "-----BEGIN CERTIFICATE-----\n%%%%\n-----END CERTIFICATE-----\n",
                &good.key_pem,
            ),
            "certificate: is not valid PEM",
        ),
        (
            body(&good.cert_pem, "hello"),
            "privateKey: holds no private key",
        ),
        (
            body(&good.cert_pem, &other.key_pem),
            "privateKey: does not belong to the certificate CN=shop",
        ),
        (
            body(&expired.cert_pem, &expired.key_pem),
            "certificate: expired on",
        ),
        (
            body(&server_only.cert_pem, &server_only.key_pem),
            "certificate: is not meant for TLS clients",
        ),
        (json!({"certificate": good.cert_pem}), "privateKey"),
    ];
    for (sent, want) in cases {
        let res = admin.put(&url).json(sent).send().await.unwrap();
        let e = expect_error(res, StatusCode::BAD_REQUEST).await;
        let message = e["message"].as_str().unwrap();
        assert!(message.contains(want), "{want:?} in {message:?}");
    }
    expect_error(admin.get(&url).send().await.unwrap(), StatusCode::NOT_FOUND).await;
    let unknown = server.url("/api/v1/integrations/nope/client-certificate");
    let res = admin
        .put(&unknown)
        .json(&body(&good.cert_pem, &good.key_pem))
        .send()
        .await
        .unwrap();
    expect_error(res, StatusCode::NOT_FOUND).await;

    // A chain: the certificate, then the CA's; accepted, and the key shown nowhere.
    let chain = format!("{}{}", good.cert_pem, ca.issuer.pem());
    let res = admin
        .put(&url)
        .json(&body(&chain, &good.key_pem))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let mut answers = vec![res.text().await.unwrap()];
    for path in [
        format!("/api/v1/integrations/{app_id}/client-certificate"),
        format!("/api/v1/integrations/{app_id}"),
        "/api/v1/integrations".to_string(),
        "/api/v1/audit".to_string(),
    ] {
        let res = admin.get(server.url(&path)).send().await.unwrap();
        assert_eq!(res.status(), StatusCode::OK, "{path}");
        answers.push(res.text().await.unwrap());
    }
    for answer in &answers {
        for line in good.key_lines() {
            assert!(!answer.contains(&line), "the key is in {answer}");
        }
        assert!(!answer.contains("PRIVATE KEY"), "{answer}");
    }
    let shown: Value = serde_json::from_str(&answers[1]).unwrap();
    assert_eq!(shown["subject"], "CN=shop");
    assert_eq!(shown["chainLength"], 2);
    assert_eq!(shown["fingerprintSha256"], good.fingerprint());
    assert!(
        shown["notAfter"].as_str().unwrap().ends_with('Z'),
        "{shown}"
    );
    let audit: Value = serde_json::from_str(&answers[4]).unwrap();
    let set = &audit["items"][0];
    assert_eq!(
        set["action"], "integration.client_certificate.set",
        "{audit}"
    );
    assert_eq!(set["target"], app_id.as_str());
    let detail = set["detail"].as_str().unwrap();
    assert!(
        detail.contains("subject=CN=shop") && detail.contains(&good.fingerprint()),
        "{detail}"
    );

    admin.delete(&url).json_with(StatusCode::NO_CONTENT).await;
    expect_error(admin.get(&url).send().await.unwrap(), StatusCode::NOT_FOUND).await;
    expect_error(
        admin.delete(&url).send().await.unwrap(),
        StatusCode::NOT_FOUND,
    )
    .await;
    let audit = admin.get(server.url("/api/v1/audit")).json_ok().await;
    let removed = &audit["items"][0];
    assert_eq!(removed["action"], "integration.client_certificate.remove");
    assert_eq!(
        removed["detail"],
        format!("sha256={}", good.fingerprint()).as_str()
    );
    // Like every admin route, it needs a session or a token.
    let res = crate::common::cookie_client()
        .put(&url)
        .json(&body(&good.cert_pem, &good.key_pem))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    server.stop().await;
}

/// A certificate named in the config file (`webhooks.client_certificates`) is read at start and
/// presented; the admin API shows it with its file and refuses to change it. A file that cannot be
/// used, or an App ID no integration has, stops the start with a message naming the setting and
/// the path.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_named_in_the_config_file_is_presented() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let ca = ClientCa::new("Example Corp Client CA");
    let w = world(&ca).await;
    let app_id = w.integration("From the file", "/file").await;
    let issued = ca.issue("from the file");
    let files = tempfile::tempdir().unwrap();
    let (cert_file, key_file) = (
        files.path().join("client.pem"),
        files.path().join("client.key"),
    );
    std::fs::write(&cert_file, &issued.cert_pem).unwrap();
    std::fs::write(&key_file, &issued.key_pem).unwrap();
    let World {
        server,
        admin: _,
        receiver,
    } = w;
    let mut stopped = server.stop().await;
    let entry = clicktermd::config::ClientCertificateFiles {
        app_id: app_id.clone(),
        cert_file: cert_file.clone(),
        key_file: key_file.clone(),
    };
    stopped.config.webhooks.client_certificates = vec![entry.clone()];
    let server = stopped.restart().await;
    let w = World {
        admin: server.admin_client().await,
        server,
        receiver,
    };
    let shown = w.admin.get(w.cert_url(&app_id)).json_ok().await;
    assert_eq!(shown["source"], "config", "{shown}");
    assert_eq!(shown["certFile"], cert_file.display().to_string().as_str());
    assert_eq!(shown["fingerprintSha256"], issued.fingerprint());
    assert_eq!(w.deliver(&app_id).await["state"], "succeeded");
    assert_eq!(w.arrived_at("/file"), vec![Some(issued.der.clone())]);
    let body = json!({"certificate": issued.cert_pem, "privateKey": issued.key_pem});
    let res = w
        .admin
        .put(w.cert_url(&app_id))
        .json(&body)
        .send()
        .await
        .unwrap();
    let e = expect_error(res, StatusCode::CONFLICT).await;
    assert!(
        e["message"]
            .as_str()
            .unwrap()
            .contains("webhooks.client_certificates"),
        "{e}"
    );
    let res = w.admin.delete(w.cert_url(&app_id)).send().await.unwrap();
    expect_error(res, StatusCode::CONFLICT).await;
    let stopped = w.server.stop().await;

    // Start-up refusals, each naming the setting and the file (or the App ID).
    let other = ca.issue("someone else");
    let wrong_key = files.path().join("wrong.key");
    std::fs::write(&wrong_key, &other.key_pem).unwrap();
    let missing = files.path().join("missing.pem");
    let cases = [
        (
            clicktermd::config::ClientCertificateFiles {
                cert_file: missing.clone(),
                ..entry.clone()
            },
            format!(
                "webhooks.client_certificates[0].cert_file: {} cannot be read",
                missing.display()
            ),
        ),
        (
            clicktermd::config::ClientCertificateFiles {
                key_file: wrong_key.clone(),
                ..entry.clone()
            },
            format!(
                "webhooks.client_certificates[0].key_file: {} does not belong to the certificate",
                wrong_key.display()
            ),
        ),
        (
            clicktermd::config::ClientCertificateFiles {
                app_id: "no-such-app".into(),
                ..entry.clone()
            },
            "webhooks.client_certificates[0].app_id: no integration has the App ID \"no-such-app\""
                .to_string(),
        ),
    ];
    for (bad, want) in cases {
        let mut config = stopped.config.clone();
        config.webhooks.client_certificates = vec![bad];
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let run = clicktermd::run(config, listener, std::future::pending());
        let e = tokio::time::timeout(DEADLINE, run)
            .await
            .expect("a refused start ends at once")
            .expect_err("the start is refused");
        let message = format!("{e:#}");
        assert!(message.contains(&want), "{want:?} in {message:?}");
    }
}

/// The dashboard's integration page uploads a certificate from two files and removes it, in a real
/// Chromium: a wrong key is refused in words under the form, the right one shows the subject, issuer
/// and fingerprint (confirmed through the API), the key never reaches the page, Remove asks first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_uploads_and_removes_a_certificate() {
    use crate::common::browser::Browser;
    use fantoccini::Locator;

    let _ = rustls::crypto::ring::default_provider().install_default();
    let ca = ClientCa::new("Example Corp Client CA");
    let server = TestServer::start().await;
    let admin = server.admin_client().await;
    let (app_id, _, _) = server.create_integration(&admin, "Browser shop").await;
    // Ten days left: the page says so.
    let issued = ca.issue_with(
        "browser shop",
        unix_now() - DAY,
        unix_now() + 10 * DAY,
        true,
    );
    let other = ca.issue("someone else");
    let files = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| {
        let path = files.path().join(name);
        std::fs::write(&path, text).unwrap();
        path.display().to_string()
    };
    let (cert, key, wrong) = (
        write("client.pem", &issued.cert_pem),
        write("client.key", &issued.key_pem),
        write("other.key", &other.key_pem),
    );

    let browser = Browser::start(1280, 900).await;
    let find = |css: &'static str| {
        let client = browser.client.clone();
        async move {
            client
                .wait()
                .at_most(DEADLINE)
                .for_element(Locator::Css(css))
                .await
                .unwrap_or_else(|e| panic!("{css} never appeared: {e}"))
        }
    };
    browser
        .client
        .goto(&format!("{}/#/integrations/{app_id}", server.base))
        .await
        .unwrap();
    for (css, value) in [
        (
            "#login-form input[name=username]",
            crate::common::ADMIN.to_string(),
        ),
        ("#login-form input[name=password]", server.admin_password()),
    ] {
        let input = find(css).await;
        input.clear().await.unwrap();
        input.send_keys(&value).await.unwrap();
    }
    browser.click("#login-form button[type=submit]").await;
    browser
        .wait_text("#cert-current", |t| t.contains("None"))
        .await;

    // The wrong key: refused under the form, nothing stored.
    find("#cert-file").await.send_keys(&cert).await.unwrap();
    find("#cert-key-file")
        .await
        .send_keys(&wrong)
        .await
        .unwrap();
    browser.click("#cert-upload").await;
    let refused = browser.wait_text("#cert-error", |t| !t.is_empty()).await;
    assert!(
        refused.contains("privateKey: does not belong to the certificate CN=browser shop"),
        "{refused}"
    );
    let url = server.url(&format!("/api/v1/integrations/{app_id}/client-certificate"));
    expect_error(admin.get(&url).send().await.unwrap(), StatusCode::NOT_FOUND).await;

    // The right one: shown as the API shows it; the key is nowhere in the page.
    find("#cert-key-file").await.send_keys(&key).await.unwrap();
    browser.click("#cert-upload").await;
    let subject = browser.wait_text("#cert-subject", |t| !t.is_empty()).await;
    assert_eq!(subject, "CN=browser shop");
    assert_eq!(
        browser.text("#cert-issuer").await,
        "CN=Example Corp Client CA"
    );
    assert_eq!(
        browser.text("#cert-fingerprint").await,
        issued.fingerprint()
    );
    let expiry = browser.text("#cert-expiry").await;
    assert!(expiry.contains("expires in 10 days"), "{expiry}");
    let stored = admin.get(&url).json_ok().await;
    assert_eq!(stored["fingerprintSha256"], issued.fingerprint());
    let html = browser.client.source().await.unwrap();
    for line in issued.key_lines() {
        assert!(!html.contains(&line), "the key is in the page");
    }
    browser.screenshot("integration-client-certificate").await;

    // Remove: a confirmation first, then none.
    browser.click("#cert-remove").await;
    browser
        .wait_text(".confirm-dialog", |t| {
            t.contains("present no client certificate")
        })
        .await;
    browser.click(".confirm-dialog button.confirm").await;
    browser
        .wait_text("#cert-current", |t| t.contains("None"))
        .await;
    expect_error(admin.get(&url).send().await.unwrap(), StatusCode::NOT_FOUND).await;
    let audit = admin.get(server.url("/api/v1/audit")).json_ok().await;
    let actions: Vec<&str> = audit["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["action"].as_str())
        .take(2)
        .collect();
    assert_eq!(
        actions,
        [
            "integration.client_certificate.remove",
            "integration.client_certificate.set"
        ]
    );
    browser.close().await;
    server.stop().await;
}

/// The same against Debian's nginx as the receiver (`ssl_verify_client on` with the company's CA),
/// which finishes the handshake without a certificate, or with one it refuses, and answers 400 with a
/// page saying so: delivered with the integration's certificate (nginx echoes the subject it
/// verified); without one, or with one from another CA, a `tls_error` with a readable reason — also
/// right after the first integration's delivery left its HTTP/1.1 connection in the pool.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_nginx_receiver_demanding_client_certificates() {
    use crate::common::nginx::Nginx;
    let _ = rustls::crypto::ring::default_provider().install_default();
    let ca = ClientCa::new("Example Corp Client CA");
    let dir = tempfile::tempdir().unwrap();
    crate::common::receiver::write_certificates(&dir);
    std::fs::write(dir.path().join("client-ca.pem"), ca.issuer.pem()).unwrap();
    let d = dir.path().display().to_string();
    let nginx = Nginx::start(dir.path(), "127.0.0.1".parse().unwrap(), |_| {
        format!(
            "    ssl_certificate {d}/cert.pem; ssl_certificate_key {d}/key.pem;
    ssl_client_certificate {d}/client-ca.pem; ssl_verify_client on;
    location / {{ default_type application/json; return 200 '{{\"client\":\"$ssl_client_s_dn\"}}'; }}"
        )
    });
    let (server, admin) = server_trusting(dir.path().join("ca.pem")).await;
    let url = format!("https://127.0.0.1:{}/hook", nginx.port);
    // `World`'s helpers; its own receiver stays unused here.
    let w = World {
        server,
        admin,
        receiver: H2Receiver::start().await,
    };

    let a = w.integration_at("A", &url).await;
    let cert_a = ca.issue("nginx client A");
    w.upload(&a, &cert_a).await;
    let d = w.deliver(&a).await;
    assert_eq!(d["state"], "succeeded", "{d}");
    let body = d["attemptList"][0]["responseBody"].as_str().unwrap();
    assert!(body.contains("CN=nginx client A"), "{body}");

    let b = w.integration_at("B", &url).await;
    let d = w.deliver(&b).await;
    let (outcome_b, detail) = outcome(&d);
    assert_eq!(outcome_b, "tls_error", "{d}");
    assert!(
        detail.contains("requires a client certificate")
            && detail.contains("this integration has none")
            && detail.contains("issued by CN=Example Corp Client CA")
            && detail.contains("No required SSL certificate was sent"),
        "{detail}"
    );
    assert_eq!(d["attemptList"][0]["responseStatus"], 400, "{d}");

    let c = w.integration_at("C", &url).await;
    w.upload(&c, &ClientCa::new("Somebody Else's CA").issue("stranger"))
        .await;
    let d = w.deliver(&c).await;
    let (outcome_c, detail) = outcome(&d);
    assert_eq!(outcome_c, "tls_error", "{d}");
    assert!(
        detail.contains("refused this integration's client certificate CN=stranger")
            && detail.contains("SSL certificate error"),
        "{detail}"
    );
    // A, again after B and C: still its own certificate.
    let d = w.deliver(&a).await;
    assert_eq!(d["state"], "succeeded", "{d}");
    w.server.stop().await;
    drop(nginx);
}
