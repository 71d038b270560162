//! The customer's webhook endpoint: `receiver.py` (Python standard library, HTTPS) run as a child process on
//! a loopback address, with a certificate for `localhost`, `receiver.test`, `*.receiver.test`, 127.0.0.1,
//! 127.0.0.2 and ::1 signed by a CA generated here, so trusting that CA (`webhooks.extra_ca_file`) is real
//! certificate verification.
//!
//! The receiver checks the webhook contract on its own, in Python, and appends every request it gets as one
//! JSON line to a log that [`Receiver::requests`] reads. The path selects its behaviour (`/ok`, `/status/NNN`,
//! `/redirect`, `/hang`, `/trickle`, `/huge`, `/slow/MS`; see the top of `receiver.py`). The child is killed
//! when the [`Receiver`] is dropped, and exits by itself if the test process dies.

use std::collections::BTreeMap;
use std::fs::File;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hmac::{KeyInit, Mac};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use rustls_pki_types::{CertificateDer, ServerName};
use serde::Deserialize;
use tempfile::TempDir;

use super::DEADLINE;

/// The receiver script.
pub const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/e2e/common/receiver.py");

/// The names and addresses the receiver's certificate is valid for.
pub const CERT_NAMES: [&str; 6] = [
    "localhost",
    "receiver.test",
    "*.receiver.test",
    "127.0.0.1",
    "127.0.0.2",
    "::1",
];

/// One request as the receiver saw it.
#[derive(Debug, Clone, Deserialize)]
pub struct ReceivedRequest {
    pub method: String,
    /// The request target as sent, query string included.
    pub path: String,
    /// Lower-case names; repeated headers joined with `", "`.
    pub headers: BTreeMap<String, String>,
    /// The raw body, decoded as UTF-8 (invalid bytes replaced).
    pub body: String,
    /// Arrival time, Unix seconds.
    pub at: f64,
    /// The guide's check: `X-Clickterm-Signature` is `sha256=` + hex HMAC-SHA256(secret, "{ts}.{body}") and
    /// `X-Clickterm-Timestamp` is within 300 s of the receiver's clock.
    pub signature_valid: bool,
    /// Every violation of the webhook contract (method, content type, headers, signature, skew); empty for a
    /// conforming webhook.
    pub contract_errors: Vec<String>,
    /// The client's `ip:port`.
    pub remote: String,
    /// The TLS server name the client sent (none for an IP-literal URL).
    pub sni: Option<String>,
}

impl ReceivedRequest {
    /// A header by (any-case) name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(&name.to_ascii_lowercase())
            .map(String::as_str)
    }

    /// The body parsed as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("the body is not JSON ({e}): {:?}", self.body))
    }

    /// The path without its query string.
    pub fn route(&self) -> &str {
        self.path.split('?').next().unwrap_or_default()
    }
}

/// The receiver's CA and certificate, written to a temporary directory, before any receiver runs.
pub struct ReceiverCa {
    /// The CA certificate (PEM) to trust, e.g. as `webhooks.extra_ca_file`.
    pub ca_file: PathBuf,
    ca_der: CertificateDer<'static>,
    ca_pem: String,
    /// The receiver presents `ca_file` itself (see [`ReceiverCa::self_signed`]).
    self_signed: bool,
    dir: TempDir,
}

impl ReceiverCa {
    pub fn generate() -> ReceiverCa {
        let dir = tempfile::tempdir().expect("temporary directory");
        let (ca_der, ca_pem) = write_certificates(&dir);
        ReceiverCa {
            ca_file: dir.path().join("ca.pem"),
            ca_der,
            ca_pem,
            self_signed: false,
            dir,
        }
    }

    /// One self-signed certificate, as `openssl req -x509 -newkey … -addext subjectAltName=…` makes
    /// it: `CA:TRUE` (critical), subject and authority key identifiers, no key usages; valid for
    /// [`CERT_NAMES`]. The receiver presents it and `ca_file` is the same certificate.
    pub fn self_signed() -> ReceiverCa {
        let dir = tempfile::tempdir().expect("temporary directory");
        let names: Vec<String> = CERT_NAMES.iter().map(|s| s.to_string()).collect();
        let mut params = CertificateParams::new(names).expect("certificate parameters");
        params
            .distinguished_name
            .push(DnType::CommonName, "receiver.test");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.use_authority_key_identifier_extension = true;
        let key = KeyPair::generate().expect("key");
        let cert = params.self_signed(&key).expect("self-signed certificate");
        let write = |name: &str, text: &str| {
            std::fs::write(dir.path().join(name), text)
                .unwrap_or_else(|e| panic!("write {name}: {e}"));
        };
        write("ca.pem", &cert.pem());
        write("cert.pem", &cert.pem());
        write("key.pem", &key.serialize_pem());
        ReceiverCa {
            ca_file: dir.path().join("ca.pem"),
            ca_der: cert.der().clone(),
            ca_pem: cert.pem(),
            self_signed: true,
            dir,
        }
    }
}

/// The running receiver; the child process is killed when this is dropped.
pub struct Receiver {
    /// The loopback address it listens on.
    pub ip: IpAddr,
    pub port: u16,
    /// The CA certificate (PEM) to trust, e.g. as `webhooks.extra_ca_file`.
    pub ca_file: PathBuf,
    /// The same CA certificate, PEM text.
    pub ca_pem: String,
    /// The webhook signing secret it verifies with.
    pub secret: String,
    log: PathBuf,
    stderr: PathBuf,
    child: Mutex<ChildGuard>,
    // Declared after `child`, so the files outlive the process.
    _dir: TempDir,
}

impl Receiver {
    /// Starts a receiver on `127.0.0.1` that verifies signatures with `secret`.
    pub async fn start(secret: &str) -> Receiver {
        Receiver::start_on(IpAddr::V4(Ipv4Addr::LOCALHOST), secret).await
    }

    /// Starts a receiver on the loopback address `ip` (127.0.0.x, or ::1 where IPv6 is available) that
    /// verifies signatures with `secret`.
    pub async fn start_on(ip: IpAddr, secret: &str) -> Receiver {
        Receiver::start_prepared(ReceiverCa::generate(), ip, secret).await
    }

    /// Starts a receiver with certificates made beforehand: a server can trust `ca.ca_file` before the
    /// secret the receiver is to check is known (an operator configures their endpoint with the signing
    /// secret the dashboard shows after the integration was created).
    pub async fn start_prepared(ca: ReceiverCa, ip: IpAddr, secret: &str) -> Receiver {
        assert!(
            ip.is_loopback(),
            "the receiver binds loopback only, not {ip}"
        );
        let ReceiverCa {
            dir,
            ca_der,
            ca_pem,
            ca_file,
            self_signed,
        } = ca;
        let log = dir.path().join("requests.jsonl");
        let stderr = dir.path().join("stderr.txt");
        File::create(&log).expect("create the request log");
        let tls = tls_connector(ca_der);

        // The port was free a moment ago; if another process takes it first, the script exits with status
        // 3 and another port is tried.
        let mut attempt = 0;
        let (port, child) = loop {
            attempt += 1;
            let port = std::net::TcpListener::bind((ip, 0))
                .unwrap_or_else(|e| panic!("bind {ip}:0: {e}"))
                .local_addr()
                .expect("local address")
                .port();
            let child = Command::new("python3")
                .arg(SCRIPT)
                .args(["--bind", &ip.to_string(), "--port", &port.to_string()])
                .arg("--cert")
                .arg(dir.path().join("cert.pem"))
                .arg("--key")
                .arg(dir.path().join("key.pem"))
                .arg("--log")
                .arg(&log)
                .env("CLICKTERM_WEBHOOK_SECRET", secret)
                .env("PYTHONDONTWRITEBYTECODE", "1")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(File::create(&stderr).expect("create the stderr file"))
                .spawn()
                .expect("spawn python3 (is Python 3 installed?)");
            let mut child = ChildGuard(child);
            match wait_ready(&mut child, SocketAddr::new(ip, port), &tls, self_signed).await {
                Ok(()) => break (port, child),
                Err(Some(3)) if attempt < 5 => continue,
                Err(status) => panic!(
                    "the receiver exited with {status:?}: {}",
                    read_lossy(&stderr)
                ),
            }
        };
        Receiver {
            ip,
            port,
            ca_file,
            ca_pem,
            secret: secret.to_string(),
            log,
            stderr,
            child: Mutex::new(child),
            _dir: dir,
        }
    }

    /// `ip:port`.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::new(self.ip, self.port)
    }

    /// `https://{host}:{port}{path}`; `host` is a name (`receiver.test`, `x.receiver.test`, `localhost`) or an
    /// IP literal (IPv6 gets its brackets).
    pub fn url(&self, host: &str, path: &str) -> String {
        assert!(path.starts_with('/'), "path {path:?} must start with /");
        match host.parse::<std::net::Ipv6Addr>() {
            Ok(v6) => format!("https://[{v6}]:{}{path}", self.port),
            Err(_) => format!("https://{host}:{}{path}", self.port),
        }
    }

    /// Every request received so far, in arrival order.
    pub fn requests(&self) -> Vec<ReceivedRequest> {
        let text = std::fs::read_to_string(&self.log).expect("read the request log");
        // Only complete lines: the one after the last newline may still be being written.
        let complete = text.rsplit_once('\n').map_or("", |(done, _)| done);
        complete
            .lines()
            .map(|line| {
                serde_json::from_str(line)
                    .unwrap_or_else(|e| panic!("bad request log line ({e}): {line}"))
            })
            .collect()
    }

    /// The requests received so far whose path (without query) is `route`.
    pub fn requests_to(&self, route: &str) -> Vec<ReceivedRequest> {
        self.requests()
            .into_iter()
            .filter(|r| r.route() == route)
            .collect()
    }

    /// Polls (without blocking the runtime, so an in-process server keeps running) until at least `n`
    /// requests have arrived, and returns all of them; panics after `deadline` or if the receiver died.
    pub async fn wait_for(&self, n: usize, deadline: Duration) -> Vec<ReceivedRequest> {
        let start = Instant::now();
        loop {
            let requests = self.requests();
            if requests.len() >= n {
                return requests;
            }
            if let Some(status) = self.exit_status() {
                panic!(
                    "the receiver exited with {status} after {} of {n} requests: {}",
                    requests.len(),
                    self.stderr_text()
                );
            }
            if start.elapsed() >= deadline {
                let paths: Vec<&str> = requests.iter().map(|r| r.path.as_str()).collect();
                panic!(
                    "{} of {n} requests arrived at the receiver within {deadline:?}: {paths:?}",
                    requests.len()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// What the script wrote to standard error (tracebacks; empty normally).
    pub fn stderr_text(&self) -> String {
        read_lossy(&self.stderr)
    }

    /// The exit status if the child is no longer running.
    fn exit_status(&self) -> Option<std::process::ExitStatus> {
        self.child
            .lock()
            .expect("child lock")
            .0
            .try_wait()
            .expect("child status")
    }
}

/// `sha256=<hex HMAC-SHA256(secret, "{timestamp}.{body}")>`, the `X-Clickterm-Signature` value.
pub fn signature(secret: &str, timestamp: u64, body: &str) -> String {
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes())
        .expect("HMAC takes any key length");
    mac.update(format!("{timestamp}.{body}").as_bytes());
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// The current Unix time in seconds.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

/// Kills and reaps the child when dropped.
struct ChildGuard(Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Waits until `addr` completes a TLS handshake with a client that trusts only our CA. `Err` carries the
/// exit code if the child died first. A `self_signed` receiver is ready when it presents a certificate
/// (webpki refuses a `CA:TRUE` one as a server's, which is what the tests of pinning are about).
async fn wait_ready(
    child: &mut ChildGuard,
    addr: SocketAddr,
    tls: &tokio_rustls::TlsConnector,
    self_signed: bool,
) -> Result<(), Option<i32>> {
    let start = Instant::now();
    loop {
        if let Some(status) = child.0.try_wait().expect("child status") {
            return Err(status.code());
        }
        if let Ok(tcp) = tokio::net::TcpStream::connect(addr).await {
            // An IP server name: the handshake checks the IP SAN, and no SNI is sent.
            let name = ServerName::IpAddress(addr.ip().into());
            match tls.connect(name, tcp).await {
                Ok(_) => return Ok(()),
                Err(e)
                    if self_signed
                        && matches!(
                            e.get_ref().and_then(|e| e.downcast_ref::<rustls::Error>()),
                            Some(rustls::Error::InvalidCertificate(_))
                        ) =>
                {
                    return Ok(());
                }
                Err(_) => {}
            }
        }
        assert!(
            start.elapsed() < DEADLINE,
            "the receiver did not accept TLS on {addr} within {DEADLINE:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A TLS client that trusts only `ca`.
fn tls_connector(ca: CertificateDer<'static>) -> tokio_rustls::TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca).expect("add the test CA");
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("TLS versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

/// Generates the CA and the receiver's certificate signed by it; writes `ca.pem`, `cert.pem` (leaf, then CA)
/// and `key.pem` into `dir`. Returns the CA certificate as DER and PEM.
pub fn write_certificates(dir: &TempDir) -> (CertificateDer<'static>, String) {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA parameters");
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "clicktermd test receiver CA");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().expect("CA key"))
        .expect("CA certificate");

    let names: Vec<String> = CERT_NAMES.iter().map(|s| s.to_string()).collect();
    let mut leaf_params = CertificateParams::new(names).expect("receiver certificate parameters");
    leaf_params
        .distinguished_name
        .push(DnType::CommonName, "receiver.test");
    leaf_params.is_ca = IsCa::ExplicitNoCa;
    leaf_params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    leaf_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    leaf_params.use_authority_key_identifier_extension = true;
    let leaf_key = KeyPair::generate().expect("receiver key");
    let leaf = leaf_params
        .signed_by(&leaf_key, &ca)
        .expect("receiver certificate");

    let write = |name: &str, text: &str| {
        std::fs::write(dir.path().join(name), text).unwrap_or_else(|e| panic!("write {name}: {e}"));
    };
    write("ca.pem", &ca.pem());
    write("cert.pem", &format!("{}{}", leaf.pem(), ca.pem()));
    write("key.pem", &leaf_key.serialize_pem());
    (ca.der().clone(), ca.pem())
}

fn read_lossy(path: &std::path::Path) -> String {
    std::fs::read(path)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default()
}
