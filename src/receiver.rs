//! `clicktermd webhook-receiver`: a webhook endpoint for trying webhooks out on one's own machine. It
//! serves HTTPS on `127.0.0.1`, checks every request exactly as the README's Webhooks section tells a
//! receiver to (`X-Clickterm-Signature` = `sha256=` + hex HMAC-SHA256 keyed with the whole `whsec_…`
//! secret as UTF-8 bytes, over `"{X-Clickterm-Timestamp}.{raw body}"`, the timestamp within 300 s),
//! prints one line per request and answers 200 to the genuine ones, 400 to the rest.
//!
//! It makes its own certificate authority and a certificate for `127.0.0.1`, `::1` and `localhost`
//! on first use and keeps them in its directory, so a clicktermd that trusts that CA
//! (`webhooks.extra_ca_file`) keeps trusting the receiver across restarts.
//!
//! The check is written here from the guide, not with the dispatcher's signing code, so that it is a
//! second opinion on it.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use bytes::Bytes;
use hmac::{KeyInit, Mac};
use http_body_util::{BodyExt, Full, Limited};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// How far a webhook's timestamp may be from the receiver's clock, as the guide says.
pub const MAX_SKEW_SECS: i64 = 300;

/// The largest body read; a webhook is a few hundred bytes.
const MAX_BODY: usize = 1024 * 1024;

/// The files of a receiver's directory.
pub struct Certificates {
    /// The CA to trust: `webhooks.extra_ca_file`.
    pub ca_file: PathBuf,
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    /// Whether they were made just now.
    pub created: bool,
}

/// The CA and the receiver's certificate in `dir`: those already there, or new ones. The key is
/// written 0600.
pub fn certificates(dir: &Path) -> anyhow::Result<Certificates> {
    let dir = std::path::absolute(dir).with_context(|| format!("{}", dir.display()))?;
    let ca_file = dir.join("ca.pem");
    let cert_file = dir.join("cert.pem");
    let key_file = dir.join("key.pem");
    let present = [&ca_file, &cert_file, &key_file].map(|p| p.exists());
    if present.iter().all(|&p| p) {
        return Ok(Certificates {
            ca_file,
            cert_file,
            key_file,
            created: false,
        });
    }
    if present.iter().any(|&p| p) {
        anyhow::bail!(
            "{} holds only some of ca.pem, cert.pem and key.pem: remove them (or choose another \
             --dir) and a new set is made",
            dir.display()
        );
    }
    use rcgen::{
        BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose,
        IsCa, KeyPair, KeyUsagePurpose,
    };
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.distinguished_name
        .push(DnType::CommonName, "clicktermd webhook-receiver local CA");
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate()?)?;
    let names = ["127.0.0.1", "::1", "localhost"]
        .map(str::to_string)
        .to_vec();
    let mut leaf = CertificateParams::new(names)?;
    leaf.distinguished_name
        .push(DnType::CommonName, "clicktermd webhook-receiver");
    leaf.is_ca = IsCa::ExplicitNoCa;
    leaf.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    leaf.use_authority_key_identifier_extension = true;
    let key = KeyPair::generate()?;
    let leaf = leaf.signed_by(&key, &ca)?;

    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let write = |path: &Path, text: &str, mode: u32| -> anyhow::Result<()> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(path)
            .and_then(|mut f| f.write_all(text.as_bytes()))
            .with_context(|| format!("cannot write {}", path.display()))
    };
    write(&key_file, &key.serialize_pem(), 0o600)?;
    write(&cert_file, &format!("{}{}", leaf.pem(), ca.pem()), 0o644)?;
    write(&ca_file, &ca.pem(), 0o644)?;
    Ok(Certificates {
        ca_file,
        cert_file,
        key_file,
        created: true,
    })
}

/// The two settings that let a clicktermd on this machine deliver to the receiver, as TOML lines.
pub fn server_settings(ca_file: &Path) -> [String; 2] {
    let path = toml::Value::String(ca_file.display().to_string());
    [
        "allow_private_cidrs = [\"127.0.0.1/32\"]".to_string(),
        format!("extra_ca_file = {path}"),
    ]
}

/// A whole clicktermd configuration: the defaults with the two settings.
pub fn server_config(ca_file: &Path) -> String {
    let [cidrs, ca] = server_settings(ca_file);
    let text = crate::config::DEFAULT_CONFIG_TOML
        .replace("allow_private_cidrs = []", &cidrs)
        .replace(
            "# extra_ca_file = \"/etc/clicktermd/receiver-ca.pem\"",
            &format!("# The CA of `clicktermd webhook-receiver` (its directory's ca.pem).\n{ca}"),
        );
    debug_assert!(text.contains(&cidrs) && text.contains(&ca));
    text
}

/// What the receiver made of one request.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Signed with the secret, in time.
    Genuine,
    /// Why not.
    Refused(String),
}

/// The guide's check: `signature` is `sha256=` + hex HMAC-SHA256(secret as UTF-8 bytes,
/// `"{timestamp}.{body}"`), and `timestamp` (Unix seconds) is within [`MAX_SKEW_SECS`] of `now`.
pub fn verify(
    secret: &str,
    timestamp: Option<&str>,
    signature: Option<&str>,
    body: &[u8],
    now: i64,
) -> Verdict {
    let refused = |why: &str| Verdict::Refused(why.to_string());
    let Some(timestamp) = timestamp else {
        return refused("no X-Clickterm-Timestamp header");
    };
    let Some(signature) = signature else {
        return refused("no X-Clickterm-Signature header");
    };
    let Ok(ts) = timestamp.parse::<i64>() else {
        return refused("X-Clickterm-Timestamp is not a number of seconds");
    };
    let Some(hex_mac) = signature.strip_prefix("sha256=") else {
        return refused("X-Clickterm-Signature does not start with sha256=");
    };
    let Ok(given) = hex::decode(hex_mac) else {
        return refused("X-Clickterm-Signature is not hexadecimal after sha256=");
    };
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes())
        .expect("HMAC takes any key length");
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    if mac.verify_slice(&given).is_err() {
        return refused(
            "the signature does not match: is --secret the integration's signing secret, the \
             whole whsec_… string?",
        );
    }
    let skew = (now - ts).abs();
    if skew > MAX_SKEW_SECS {
        return Verdict::Refused(format!(
            "the timestamp is {skew} s from this machine's clock (at most {MAX_SKEW_SECS} s): a \
             replay, or a clock is wrong"
        ));
    }
    Verdict::Genuine
}

/// One printed line for a request.
fn describe(
    is_test: bool,
    body: &[u8],
    attempt_path: &str,
    verdict: &Verdict,
    answer: u16,
) -> String {
    let json: Option<serde_json::Value> = serde_json::from_slice(body).ok();
    let field = |k: &str| {
        json.as_ref()
            .and_then(|j| j["data"][k].as_str().map(str::to_string))
            .unwrap_or_else(|| "-".to_string())
    };
    let event_type = json
        .as_ref()
        .and_then(|j| j["eventType"].as_str().map(str::to_string))
        .unwrap_or_else(|| "(not a clickterm webhook)".to_string());
    let signature = match verdict {
        Verdict::Genuine => "signature ok".to_string(),
        Verdict::Refused(why) => format!("signature BAD ({why})"),
    };
    format!(
        "{now}  POST {attempt_path}  {event_type}{test}  event {event}  status {status}  {signature}  → {answer}",
        now = crate::model::Timestamp::now().to_rfc3339(),
        test = if is_test { " (test)" } else { "" },
        event = field("clickwrapEventId"),
        status = field("clickwrapEventStatus"),
    )
}

/// Serves on `127.0.0.1:port` until `shutdown` resolves, printing a line per request to standard
/// output. `ready` is told the bound address once it accepts connections.
pub async fn serve(
    certs: &Certificates,
    port: u16,
    secret: String,
    shutdown: impl std::future::Future<Output = ()>,
    ready: impl FnOnce(SocketAddr),
) -> anyhow::Result<()> {
    let chain = CertificateDer::pem_file_iter(&certs.cert_file)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .with_context(|| format!("cannot read {}", certs.cert_file.display()))?;
    let key = PrivateKeyDer::from_pem_file(&certs.key_file)
        .with_context(|| format!("cannot read {}", certs.key_file.display()))?;
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_no_client_auth()
    .with_single_cert(chain, key)
    .context("the receiver's certificate and key do not match")?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr}: choose another --port"))?;
    ready(listener.local_addr()?);
    let secret: Arc<str> = secret.into();
    let accept = async {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            let (acceptor, secret) = (acceptor.clone(), secret.clone());
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let service = service_fn(move |req| handle(req, secret.clone()));
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tls), service)
                    .await;
            });
        }
    };
    tokio::select! {
        _ = accept => Ok(()),
        _ = shutdown => Ok(()),
    }
}

async fn handle(
    req: http::Request<hyper::body::Incoming>,
    secret: Arc<str>,
) -> Result<http::Response<Full<Bytes>>, std::convert::Infallible> {
    let header = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let (timestamp, signature) = (
        header("x-clickterm-timestamp"),
        header("x-clickterm-signature"),
    );
    let is_test = header("x-clickterm-test").as_deref() == Some("true");
    let path = req.uri().path().to_string();
    let method = req.method().clone();
    let body = match Limited::new(req.into_body(), MAX_BODY).collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => Bytes::new(),
    };
    let verdict = if method != http::Method::POST {
        Verdict::Refused(format!("{method}, not POST"))
    } else {
        let now = crate::model::Timestamp::now().millis().div_euclid(1000);
        verify(
            &secret,
            timestamp.as_deref(),
            signature.as_deref(),
            &body,
            now,
        )
    };
    let (status, text) = match &verdict {
        Verdict::Genuine => (200, "ok\n".to_string()),
        Verdict::Refused(why) => (400, format!("{why}\n")),
    };
    println!("{}", describe(is_test, &body, &path, &verdict, status));
    let response = http::Response::builder()
        .status(status)
        .header("content-type", "text/plain; charset=utf-8")
        .body(Full::new(Bytes::from(text)))
        .expect("a valid response");
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sign(secret: &str, ts: i64, body: &str) -> String {
        // Computed as the guide says, independently of `verify`: HMAC keyed with the secret's bytes.
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
        mac.update(format!("{ts}.{body}").as_bytes());
        format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
    }

    #[test]
    fn the_guides_check() {
        let (secret, now, body) = ("whsec_abc", 1_800_000_000, r#"{"a":1}"#);
        let good = sign(secret, now, body);
        let ts = now.to_string();
        let v = |secret: &str, ts: Option<&str>, sig: Option<&str>, body: &str, now: i64| {
            verify(secret, ts, sig, body.as_bytes(), now)
        };
        assert_eq!(
            v(secret, Some(&ts), Some(&good), body, now),
            Verdict::Genuine
        );
        assert_eq!(
            v(secret, Some(&ts), Some(&good), body, now + 300),
            Verdict::Genuine
        );
        let refusals = [
            v(secret, Some(&ts), Some(&good), body, now + 301),
            v(secret, Some(&ts), Some(&good), r#"{"a":2}"#, now),
            v("abc", Some(&ts), Some(&good), body, now),
            v(secret, Some("1800000001"), Some(&good), body, now),
            v(secret, None, Some(&good), body, now),
            v(secret, Some(&ts), None, body, now),
            v(secret, Some(&ts), Some(&good[7..]), body, now),
        ];
        for r in refusals {
            assert!(matches!(r, Verdict::Refused(_)), "{r:?}");
        }
    }

    #[test]
    fn the_settings_written_are_the_defaults_with_the_two() {
        let ca = Path::new("/tmp/x y/ca.pem");
        let config: crate::config::Config = toml::from_str(&server_config(ca)).unwrap();
        let mut expected = crate::config::Config::default();
        expected.webhooks.allow_private_cidrs = vec!["127.0.0.1/32".parse().unwrap()];
        expected.webhooks.extra_ca_file = Some(ca.to_path_buf());
        assert_eq!(config, expected);
    }
}
