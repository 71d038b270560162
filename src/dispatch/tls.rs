//! TLS for callbacks: whom the dispatcher trusts, and what it says when a receiver's certificate is
//! refused.
//!
//! Trust is Mozilla's roots (compiled in, so the appliance does not depend on the host's CA bundle)
//! plus the certificates in `webhooks.extra_ca_file`. A certificate in that file is also *pinned*: a
//! receiver that presents exactly it (the same DER) is accepted even when it says `CA:TRUE`, which is
//! what `openssl req -x509` makes and what curl accepts with `--cacert`; webpki alone refuses such a
//! certificate as "CA used as end entity". Its name is still checked against the URL's host, and its
//! validity period too (see [`PinningVerifier`]).
//!
//! The file is read again when it changes (its modification time, size or inode), at the next new
//! connection, so trusting a new receiver needs no restart. A file that cannot be used any more keeps
//! the certificates read before, with a warning in the log.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::{AlertDescription, CertificateError, DigitallySignedStruct, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};

use super::SetupError;
use crate::client_cert::ClientCertificate;

/// The settings named in messages.
const EXTRA_CA: &str = "webhooks.extra_ca_file";
const CLIENT_CERTS: &str = "webhooks.client_certificates";

/// The callback TLS settings, kept in step with `webhooks.extra_ca_file`.
pub struct CallbackTls {
    extra_ca_file: Option<PathBuf>,
    current: Mutex<Loaded>,
}

struct Loaded {
    /// The file as it was when read; `None` when it could not be inspected.
    stamp: Option<FileStamp>,
    connector: tokio_rustls::TlsConnector,
}

/// What tells that a file changed without reading it.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
struct FileStamp {
    modified: Option<SystemTime>,
    len: u64,
    inode: u64,
}

impl FileStamp {
    fn of(path: &Path) -> Option<FileStamp> {
        use std::os::unix::fs::MetadataExt;
        let meta = std::fs::metadata(path).ok()?;
        Some(FileStamp {
            modified: meta.modified().ok(),
            len: meta.len(),
            inode: meta.ino(),
        })
    }
}

impl CallbackTls {
    /// Reads `extra_ca_file` (if any); a file that cannot be used is a start-up error.
    pub fn new(extra_ca_file: Option<&Path>) -> Result<CallbackTls, SetupError> {
        let stamp = extra_ca_file.and_then(FileStamp::of);
        let connector = connector(extra_ca_file)?;
        Ok(CallbackTls {
            extra_ca_file: extra_ca_file.map(Path::to_path_buf),
            current: Mutex::new(Loaded { stamp, connector }),
        })
    }

    /// A connector for one new connection, and what it learns of client authentication: whether
    /// the receiver asks for a certificate, and which issuers it accepts. `presented` is the
    /// integration's certificate (mutual TLS), sent when asked; without one none is sent.
    pub fn dial(
        &self,
        presented: Option<Arc<ClientCertificate>>,
    ) -> (tokio_rustls::TlsConnector, Arc<ClientAuth>) {
        let auth = Arc::new(ClientAuth {
            presented,
            asked: Default::default(),
            issuers: Default::default(),
        });
        let mut config = (*self.connector().config().clone()).clone();
        config.client_auth_cert_resolver = auth.clone();
        (tokio_rustls::TlsConnector::from(Arc::new(config)), auth)
    }

    /// The connector for a new connection, after reading `extra_ca_file` again if it changed since.
    /// (One `stat` per new connection; connections are pooled, so this is rare.)
    pub fn connector(&self) -> tokio_rustls::TlsConnector {
        let mut current = self.current.lock().expect("callback TLS lock");
        let Some(path) = &self.extra_ca_file else {
            return current.connector.clone();
        };
        let stamp = FileStamp::of(path);
        if stamp != current.stamp {
            current.stamp = stamp;
            match connector(Some(path)) {
                Ok(c) => {
                    tracing::info!(file = %path.display(), "{EXTRA_CA} changed: read it again");
                    current.connector = c;
                }
                Err(e) => tracing::warn!(
                    error = %e,
                    "{EXTRA_CA} changed but cannot be used; the certificates read before stay trusted"
                ),
            }
        }
        current.connector.clone()
    }
}

/// Client authentication on one connection: the certificate sent when the receiver asks for one (the
/// integration's, or none), and what the receiver's request said. In TLS 1.3 a receiver refuses a
/// missing or unacceptable certificate only after the client finished the handshake, so the dialler
/// looks for that refusal when the receiver asked.
#[derive(Debug)]
pub struct ClientAuth {
    presented: Option<Arc<ClientCertificate>>,
    asked: std::sync::atomic::AtomicBool,
    /// The issuers the receiver said it accepts, as names (it may list none).
    issuers: Mutex<Vec<String>>,
}

impl ClientAuth {
    pub fn asked(&self) -> bool {
        self.asked.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// What a refusal is explained with.
    pub fn seen(&self) -> ClientAuthSeen<'_> {
        ClientAuthSeen {
            presented: self.presented.as_deref(),
            asked: self.asked(),
            issuers: self.issuers.lock().expect("issuers lock").clone(),
        }
    }
}

impl rustls::client::ResolvesClientCert for ClientAuth {
    fn resolve(
        &self,
        acceptable_issuers: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        self.asked.store(true, std::sync::atomic::Ordering::Relaxed);
        *self.issuers.lock().expect("issuers lock") = acceptable_issuers
            .iter()
            .take(8)
            .filter_map(|dn| distinguished_name(dn))
            .collect();
        self.presented.as_ref().map(|c| c.certified_key())
    }

    fn has_certs(&self) -> bool {
        self.presented.is_some()
    }
}

/// A DER `Name` (as a CertificateRequest lists acceptable issuers) as `CN=…, O=…`.
fn distinguished_name(der: &[u8]) -> Option<String> {
    use x509_parser::prelude::FromDer;
    let (_, name) = x509_parser::x509::X509Name::from_der(der).ok()?;
    Some(name.to_string())
}

/// What a dial knew of client authentication when its TLS failed: the certificate it presented, and
/// the issuers the receiver accepts.
#[derive(Default)]
pub struct ClientAuthSeen<'a> {
    pub presented: Option<&'a ClientCertificate>,
    /// The receiver asked for a client certificate (unknown after the handshake: false).
    pub asked: bool,
    pub issuers: Vec<String>,
}

/// ` (it accepts client certificates issued by …)`, or nothing when the receiver named no issuer.
fn accepted_issuers(issuers: &[String]) -> String {
    if issuers.is_empty() {
        String::new()
    } else {
        format!(
            " (it accepts client certificates issued by {})",
            issuers.join("; ")
        )
    }
}

/// A receiver requires a client certificate and the integration has none: what to do.
pub fn certificate_missing(issuers: &[String]) -> String {
    format!(
        "the receiver requires a client certificate (mutual TLS){} and this integration has \
         none: give it one (the dashboard's integration page, PUT \
         /api/v1/integrations/{{appId}}/client-certificate, or {CLIENT_CERTS}), or turn \
         client-certificate authentication off for this endpoint",
        accepted_issuers(issuers)
    )
}

/// A receiver refused the integration's certificate (`why`: what it said).
pub fn certificate_refused(presented: &ClientCertificate, why: &str, issuers: &[String]) -> String {
    format!(
        "the receiver refused this integration's client certificate {}: {why}{}; give the \
         integration a certificate from a CA the receiver trusts",
        presented.summary.describe(),
        accepted_issuers(issuers)
    )
}

/// The certificates of a PEM file, or why it cannot be used.
fn read_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, SetupError> {
    let fail = |why: String| SetupError::CaFile {
        path: path.to_path_buf(),
        why,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| fail(format!("cannot be read: {e}")))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| fail(format!("is not PEM: {e}")))?;
    if certs.is_empty() {
        return Err(fail(
            "holds no certificate (expected one or more -----BEGIN CERTIFICATE----- blocks)".into(),
        ));
    }
    Ok(certs)
}

/// A connector trusting Mozilla's roots plus the certificates of `extra_ca_file`, which are also
/// pinned; HTTP/2 and HTTP/1.1 offered by ALPN.
fn connector(extra_ca_file: Option<&Path>) -> Result<tokio_rustls::TlsConnector, SetupError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    let mut pinned = Vec::new();
    if let Some(path) = extra_ca_file {
        for cert in read_certificates(path)? {
            roots.add(cert.clone()).map_err(|e| SetupError::CaFile {
                path: path.to_path_buf(),
                why: format!("holds a certificate that cannot be used: {e}"),
            })?;
            pinned.push(cert);
        }
    }
    let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|e| SetupError::Verifier(e.to_string()))?;
    let verifier = Arc::new(PinningVerifier { webpki, pinned });
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
}

/// webpki's verifier, except that a certificate listed in `extra_ca_file` is accepted as the server's
/// own even with `CA:TRUE`.
///
/// webpki checks a certificate's validity period before its basic constraints, so a certificate it
/// refuses as "CA used as end entity" is within its validity period; the exact certificate being
/// trusted, its signature is moot; the name is checked here.
#[derive(Debug)]
pub struct PinningVerifier {
    webpki: Arc<WebPkiServerVerifier>,
    pinned: Vec<CertificateDer<'static>>,
}

impl ServerCertVerifier for PinningVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self.webpki.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        ) {
            Err(e)
                if is_webpki(&e, &webpki::Error::CaUsedAsEndEntity)
                    && self
                        .pinned
                        .iter()
                        .any(|p| p.as_ref() == end_entity.as_ref()) =>
            {
                let parsed = rustls::server::ParsedCertificate::try_from(end_entity)?;
                rustls::client::verify_server_name(&parsed, server_name)?;
                Ok(ServerCertVerified::assertion())
            }
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.webpki.supported_verify_schemes()
    }

    fn root_hint_subjects(&self) -> Option<&[rustls::DistinguishedName]> {
        self.webpki.root_hint_subjects()
    }
}

/// Whether `e` is webpki's error `which` (rustls passes the ones it has no variant for on as `Other`).
fn is_webpki(e: &rustls::Error, which: &webpki::Error) -> bool {
    matches!(e, rustls::Error::InvalidCertificate(CertificateError::Other(other))
        if other.0.downcast_ref::<webpki::Error>() == Some(which))
}

/// A failed TLS handshake with `host` as a sentence a person can act on: what was wrong, and what to
/// change. `error` is what tokio-rustls returned.
pub fn explain(host: &str, error: &std::io::Error, auth: &ClientAuthSeen<'_>) -> String {
    let Some(tls) = error
        .get_ref()
        .and_then(|e| e.downcast_ref::<rustls::Error>())
    else {
        return match error.kind() {
            std::io::ErrorKind::UnexpectedEof | std::io::ErrorKind::ConnectionReset => format!(
                "the receiver closed the connection during the TLS handshake: is it serving HTTPS \
                 on this port, and does it accept TLS 1.2 or 1.3? ({error})"
            ),
            _ => format!("the TLS handshake failed: {error}"),
        };
    };
    explain_rustls(host, tls, auth)
}

/// [`explain`] for a rustls error met after the handshake (a TLS 1.3 server refuses the client's
/// certificate only once the client has finished its part).
pub fn explain_rustls(host: &str, e: &rustls::Error, auth: &ClientAuthSeen<'_>) -> String {
    use rustls::Error as E;
    let trust = format!(
        "put the receiver's certificate, or the CA that issued it, in PEM in {EXTRA_CA} \
         (read again when it changes)"
    );
    match e {
        E::InvalidCertificate(c) => match c {
            CertificateError::UnknownIssuer => format!(
                "the receiver's certificate is not signed by an authority clicktermd trusts \
                 (unknown issuer): if it is self-signed or from a private CA, {trust}"
            ),
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                let when = match c {
                    CertificateError::ExpiredContext { not_after, .. } => {
                        format!(" on {}", unix_time(*not_after))
                    }
                    _ => String::new(),
                };
                format!(
                    "the receiver's certificate expired{when}: renew it on the receiver (and, \
                     if it is listed in {EXTRA_CA}, there too)"
                )
            }
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                let when = match c {
                    CertificateError::NotValidYetContext { not_before, .. } => {
                        format!(" until {}", unix_time(*not_before))
                    }
                    _ => String::new(),
                };
                format!(
                    "the receiver's certificate is not valid yet{when}: check the clocks of both \
                     machines"
                )
            }
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
                let names = match c {
                    CertificateError::NotValidForNameContext { presented, .. }
                        if !presented.is_empty() =>
                    {
                        format!(" (it names {})", presented.join(", "))
                    }
                    _ => String::new(),
                };
                format!(
                    "the receiver's certificate is not valid for {host}{names}: use a callback URL \
                     with a name the certificate has, or give the receiver a certificate for {host}"
                )
            }
            CertificateError::BadSignature => "the receiver's certificate has a signature that \
                 does not verify: its chain is broken or forged"
                .to_string(),
            CertificateError::Revoked => "the receiver's certificate was revoked".to_string(),
            CertificateError::InvalidPurpose | CertificateError::InvalidPurposeContext { .. } => {
                "the receiver's certificate is not meant for TLS servers (its extended key usage \
                 lacks serverAuth): issue one that is"
                    .to_string()
            }
            CertificateError::BadEncoding => {
                "the receiver's certificate is not valid DER (it cannot be read)".to_string()
            }
            other => {
                let ca = rustls::Error::InvalidCertificate(other.clone());
                if is_webpki(&ca, &webpki::Error::CaUsedAsEndEntity) {
                    format!(
                        "the receiver presents a CA certificate (CA:TRUE, as `openssl req -x509` \
                         makes) as its own: list that exact certificate in {EXTRA_CA} to trust it \
                         (pinned), or give the receiver a certificate issued by a CA"
                    )
                } else {
                    format!("the receiver's certificate was refused: {other}")
                }
            }
        },
        E::AlertReceived(alert) => match (alert, auth.presented) {
            (AlertDescription::CertificateRequired, None)
            | (AlertDescription::HandshakeFailure, None)
                if alert == &AlertDescription::CertificateRequired || auth.asked =>
            {
                certificate_missing(&auth.issuers)
            }
            (AlertDescription::CertificateRequired, Some(presented)) => format!(
                "the receiver asked for a client certificate but could not take this \
                 integration's {}: its key suits none of the signature schemes the receiver \
                 accepts",
                presented.summary.describe()
            ),
            (
                AlertDescription::UnknownCA
                | AlertDescription::BadCertificate
                | AlertDescription::CertificateUnknown
                | AlertDescription::UnsupportedCertificate
                | AlertDescription::CertificateExpired
                | AlertDescription::CertificateRevoked
                | AlertDescription::AccessDenied
                | AlertDescription::DecryptError
                | AlertDescription::HandshakeFailure,
                Some(presented),
            ) => {
                let why = match alert {
                    AlertDescription::UnknownCA => "it does not trust its issuer (unknown_ca)",
                    AlertDescription::CertificateExpired => "it finds it expired",
                    AlertDescription::CertificateRevoked => "it was revoked",
                    AlertDescription::AccessDenied => {
                        "the certificate is valid but not allowed on this endpoint (access_denied)"
                    }
                    _ => "it refused it",
                };
                certificate_refused(presented, why, &auth.issuers)
            }
            (AlertDescription::HandshakeFailure | AlertDescription::ProtocolVersion, _) => {
                "the receiver refused the handshake: it offers no TLS version or cipher suite in \
                 common with clicktermd (TLS 1.2 or 1.3 with modern suites), or it requires a \
                 client certificate"
                    .to_string()
            }
            (AlertDescription::UnrecognisedName, _) => format!(
                "the receiver has no certificate for the name {host} (it answered \
                 unrecognised_name): configure it for {host} or use the name it serves"
            ),
            (other, _) => format!("the receiver ended the handshake with the TLS alert {other:?}"),
        },
        E::InvalidMessage(_) | E::InappropriateMessage { .. } => {
            "the receiver did not answer in TLS: is this port serving plain HTTP? Serve HTTPS \
             there, or use an http:// URL (allowed only with webhooks.allow_http)"
                .to_string()
        }
        E::PeerIncompatible(why) => format!(
            "the receiver's TLS is incompatible with clicktermd's (TLS 1.2 or 1.3): {why:?}"
        ),
        E::NoApplicationProtocol => {
            "the receiver speaks neither HTTP/2 nor HTTP/1.1 over TLS (ALPN)".to_string()
        }
        other => format!("the TLS handshake failed: {other}"),
    }
}

fn unix_time(t: UnixTime) -> String {
    crate::model::Timestamp(t.as_secs() as i64 * 1000).to_rfc3339()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};

    /// A self-signed certificate as `openssl req -x509 -subj /CN=NAME -addext subjectAltName=…`
    /// makes it: `CA:TRUE`, no key usages, valid from `from` to `to` (Unix seconds).
    fn self_signed(names: &[&str], from: i64, to: i64) -> CertificateDer<'static> {
        let mut params =
            CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.not_before = time::OffsetDateTime::from_unix_timestamp(from).unwrap();
        params.not_after = time::OffsetDateTime::from_unix_timestamp(to).unwrap();
        params
            .self_signed(&KeyPair::generate().unwrap())
            .unwrap()
            .der()
            .clone()
    }

    fn verifier(pinned: &[CertificateDer<'static>]) -> PinningVerifier {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        for c in pinned {
            roots.add(c.clone()).unwrap();
        }
        if roots.is_empty() {
            roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        }
        PinningVerifier {
            webpki: WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .unwrap(),
            pinned: pinned.to_vec(),
        }
    }

    fn verify(v: &PinningVerifier, cert: &CertificateDer<'_>, host: &str) -> Result<(), String> {
        let name = ServerName::try_from(host.to_string()).unwrap();
        v.verify_server_cert(cert, &[], &name, &[], UnixTime::now())
            .map(|_| ())
            .map_err(|e| explain_rustls(host, &e, &ClientAuthSeen::default()))
    }

    const DAY: i64 = 86_400;

    fn now() -> i64 {
        UnixTime::now().as_secs() as i64
    }

    #[test]
    fn a_pinned_ca_certificate_is_accepted_for_its_names_while_valid() {
        let cert = self_signed(&["localhost", "127.0.0.1"], now() - DAY, now() + DAY);
        let v = verifier(std::slice::from_ref(&cert));
        assert_eq!(verify(&v, &cert, "localhost"), Ok(()));
        assert_eq!(verify(&v, &cert, "127.0.0.1"), Ok(()));

        let wrong = verify(&v, &cert, "other.test").unwrap_err();
        assert!(
            wrong.contains("not valid for other.test") && wrong.contains("localhost"),
            "{wrong}"
        );

        let old = self_signed(&["localhost"], now() - 10 * DAY, now() - DAY);
        let v = verifier(std::slice::from_ref(&old));
        let expired = verify(&v, &old, "localhost").unwrap_err();
        assert!(
            expired.contains("expired") && expired.contains("renew"),
            "{expired}"
        );

        let later = self_signed(&["localhost"], now() + DAY, now() + 10 * DAY);
        let v = verifier(std::slice::from_ref(&later));
        let early = verify(&v, &later, "localhost").unwrap_err();
        assert!(early.contains("not valid yet"), "{early}");
    }

    #[test]
    fn an_unlisted_certificate_is_refused_with_the_remedy() {
        // webpki refuses a CA:TRUE certificate as the server's before it looks for its issuer.
        let cert = self_signed(&["localhost"], now() - DAY, now() + DAY);
        let ca = verify(&verifier(&[]), &cert, "localhost").unwrap_err();
        assert!(
            ca.contains("CA:TRUE") && ca.contains(EXTRA_CA) && !ca.contains("CaUsedAsEndEntity"),
            "{ca}"
        );
        // A self-signed server certificate (CA:FALSE) nobody trusts.
        let mut params = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
        params.is_ca = IsCa::ExplicitNoCa;
        let leaf = params.self_signed(&KeyPair::generate().unwrap()).unwrap();
        let unknown = verify(&verifier(&[]), leaf.der(), "localhost").unwrap_err();
        assert!(
            unknown.contains("unknown issuer") && unknown.contains(EXTRA_CA),
            "{unknown}"
        );
    }

    #[test]
    fn alerts_and_plain_http_read_as_sentences() {
        let none = ClientAuthSeen::default();
        let mtls = explain_rustls(
            "h.test",
            &rustls::Error::AlertReceived(AlertDescription::CertificateRequired),
            &none,
        );
        assert!(
            mtls.contains("requires a client certificate")
                && mtls.contains("has none")
                && mtls.contains(CLIENT_CERTS),
            "{mtls}"
        );
        // TLS 1.2: a receiver that asked and got none answers handshake_failure.
        let asked = ClientAuthSeen {
            asked: true,
            issuers: vec!["CN=Company CA".into()],
            ..ClientAuthSeen::default()
        };
        let tls12 = explain_rustls(
            "h.test",
            &rustls::Error::AlertReceived(AlertDescription::HandshakeFailure),
            &asked,
        );
        assert!(
            tls12.contains("requires a client certificate") && tls12.contains("CN=Company CA"),
            "{tls12}"
        );
        let ciphers = explain_rustls(
            "h.test",
            &rustls::Error::AlertReceived(AlertDescription::HandshakeFailure),
            &none,
        );
        assert!(ciphers.contains("cipher suite"), "{ciphers}");
        let plain = explain_rustls(
            "h.test",
            &rustls::Error::InvalidMessage(rustls::InvalidMessage::InvalidContentType),
            &none,
        );
        assert!(plain.contains("plain HTTP"), "{plain}");
    }

    #[test]
    fn a_refused_client_certificate_is_named() {
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.distinguished_name
            .push(rcgen::DnType::CommonName, "Other CA");
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = rcgen::CertifiedIssuer::self_signed(ca, KeyPair::generate().unwrap()).unwrap();
        let mut leaf = CertificateParams::new(Vec::<String>::new()).unwrap();
        leaf.distinguished_name
            .push(rcgen::DnType::CommonName, "shop client");
        let key = KeyPair::generate().unwrap();
        let cert = leaf.signed_by(&key, &ca).unwrap();
        let presented = ClientCertificate::load(&cert.pem(), &key.serialize_pem()).unwrap();
        let seen = ClientAuthSeen {
            presented: Some(&presented),
            asked: true,
            issuers: vec!["CN=Company CA".into()],
        };
        let refused = explain_rustls(
            "h.test",
            &rustls::Error::AlertReceived(AlertDescription::UnknownCA),
            &seen,
        );
        assert!(
            refused.contains("refused this integration's client certificate CN=shop client")
                && refused.contains("issued by CN=Other CA")
                && refused.contains("unknown_ca")
                && refused.contains("it accepts client certificates issued by CN=Company CA"),
            "{refused}"
        );
    }
}
