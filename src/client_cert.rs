//! An integration's client certificate for callback TLS (mutual TLS, issue #16): receivers inside a
//! company's network often accept only clients with a certificate from the company's CA.
//!
//! A certificate is checked once, when it is given (uploaded through the admin API, or named in
//! `webhooks.client_certificates` and read at start): the PEM parses, the key belongs to the
//! certificate, the certificate is meant for TLS clients and is valid now. What the admin API shows of
//! it is its [`Summary`] — subject, issuer, validity, SHA-256 fingerprint — never the key.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use sha2::Digest;

use crate::model::Timestamp;

/// The most a certificate field (the chain) or a key field may hold: a chain of a few certificates
/// with RSA-4096 keys is under 10 KiB.
pub const MAX_CERTIFICATE_PEM: usize = 64 * 1024;
pub const MAX_KEY_PEM: usize = 16 * 1024;
/// Certificates in one chain (leaf and intermediates).
pub const MAX_CHAIN: usize = 10;

/// Which half of the pair a refusal is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    Certificate,
    Key,
}

/// Why a certificate and key cannot be used; `reason` is a sentence with the fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct Refused {
    pub part: Part,
    pub reason: String,
}

fn refuse<T>(part: Part, reason: impl Into<String>) -> Result<T, Refused> {
    Err(Refused {
        part,
        reason: reason.into(),
    })
}

/// The SHA-256 of the leaf certificate's DER: what identifies a client certificate.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct Fingerprint(pub [u8; 32]);

impl std::fmt::Display for Fingerprint {
    /// As `openssl x509 -noout -fingerprint -sha256` prints it: upper-case hex pairs joined by colons.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, b) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(":")?;
            }
            write!(f, "{b:02X}")?;
        }
        Ok(())
    }
}

/// What may be shown of a certificate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Summary {
    pub subject: String,
    pub issuer: String,
    pub not_before: Timestamp,
    pub not_after: Timestamp,
    pub fingerprint: Fingerprint,
    /// Certificates in the chain, the leaf included.
    pub chain: usize,
}

impl Summary {
    /// The summary of a PEM chain (leaf first) that was checked before: what the admin API shows of
    /// a stored certificate, without touching its key.
    pub fn of_pem(cert_pem: &str) -> Result<Summary, Refused> {
        let chain = certificates(cert_pem)?;
        summarize(&chain)
    }

    /// `subject (issued by issuer, valid until …, SHA-256 …)`, as logs and attempt details name it.
    pub fn describe(&self) -> String {
        format!(
            "{} (issued by {}, valid until {})",
            self.subject,
            self.issuer,
            self.not_after.to_rfc3339()
        )
    }
}

/// A checked certificate chain with its private key, ready to be presented.
pub struct ClientCertificate {
    /// The PEM texts as given, kept to be stored (the key is never shown again).
    pub cert_pem: String,
    pub key_pem: String,
    pub summary: Summary,
    key: Arc<CertifiedKey>,
}

impl std::fmt::Debug for ClientCertificate {
    /// Never the key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientCertificate")
            .field("summary", &self.summary)
            .finish_non_exhaustive()
    }
}

impl ClientCertificate {
    /// Parses a PEM chain (leaf first, then any intermediates) and its private key (PKCS#8, PKCS#1
    /// or SEC1, unencrypted), and checks that the key is the certificate's and that the certificate
    /// is meant for TLS clients. Validity in time is [`ClientCertificate::check_valid_at`]'s: a
    /// stored certificate that expired since is still loaded, so the attempt can say so.
    pub fn load(cert_pem: &str, key_pem: &str) -> Result<ClientCertificate, Refused> {
        if cert_pem.len() > MAX_CERTIFICATE_PEM {
            return refuse(
                Part::Certificate,
                format!("is larger than {} KiB", MAX_CERTIFICATE_PEM / 1024),
            );
        }
        if key_pem.len() > MAX_KEY_PEM {
            return refuse(
                Part::Key,
                format!("is larger than {} KiB", MAX_KEY_PEM / 1024),
            );
        }
        if cert_pem.contains("PRIVATE KEY-----") {
            return refuse(
                Part::Certificate,
                "holds a private key: give the certificate (and its intermediates) here and the \
                 key on its own",
            );
        }
        let chain = certificates(cert_pem)?;
        let summary = summarize(&chain)?;
        let key = private_key(key_pem)?;
        let provider = rustls::crypto::ring::default_provider();
        let key = CertifiedKey::from_der(chain, key, &provider).map_err(|e| match e {
            rustls::Error::InconsistentKeys(_) => Refused {
                part: Part::Key,
                reason: format!(
                    "does not belong to the certificate {} (their public keys differ): give the \
                     key the certificate was issued for",
                    summary.subject
                ),
            },
            other => Refused {
                part: Part::Key,
                reason: format!(
                    "cannot be used ({other}): RSA (2048 bits or more), ECDSA P-256 or P-384, \
                     and Ed25519 keys can"
                ),
            },
        })?;
        Ok(ClientCertificate {
            cert_pem: cert_pem.to_string(),
            key_pem: key_pem.to_string(),
            summary,
            key: Arc::new(key),
        })
    }

    /// Refuses a certificate that is not valid at `now` (expired, or not yet valid).
    pub fn check_valid_at(&self, now: Timestamp) -> Result<(), Refused> {
        let s = &self.summary;
        if now.millis() > s.not_after.millis() {
            return refuse(
                Part::Certificate,
                format!(
                    "expired on {}: give a renewed certificate",
                    s.not_after.to_rfc3339()
                ),
            );
        }
        if now.millis() < s.not_before.millis() {
            return refuse(
                Part::Certificate,
                format!(
                    "is not valid until {}: check this machine's clock, or wait",
                    s.not_before.to_rfc3339()
                ),
            );
        }
        Ok(())
    }

    /// The chain and signing key rustls presents.
    pub fn certified_key(&self) -> Arc<CertifiedKey> {
        self.key.clone()
    }
}

/// The certificates of a PEM text, at least one and at most [`MAX_CHAIN`].
fn certificates(pem: &str) -> Result<Vec<CertificateDer<'static>>, Refused> {
    let chain = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .or_else(|e| refuse(Part::Certificate, format!("is not valid PEM: {e}")))?;
    if chain.is_empty() {
        return refuse(
            Part::Certificate,
            "holds no certificate (expected a -----BEGIN CERTIFICATE----- block, the client \
             certificate first, then any intermediates)",
        );
    }
    if chain.len() > MAX_CHAIN {
        return refuse(
            Part::Certificate,
            format!("holds more than {MAX_CHAIN} certificates"),
        );
    }
    Ok(chain)
}

/// The private key of a PEM text.
fn private_key(pem: &str) -> Result<PrivateKeyDer<'static>, Refused> {
    if pem.contains("ENCRYPTED PRIVATE KEY") || pem.contains("Proc-Type: 4,ENCRYPTED") {
        return refuse(
            Part::Key,
            "is encrypted: give it unencrypted (`openssl pkey -in key.pem -out plain.pem` asks \
             for its passphrase once)",
        );
    }
    PrivateKeyDer::from_pem_slice(pem.as_bytes()).or_else(|e| {
        let why = match e {
            rustls_pki_types::pem::Error::NoItemsFound => {
                "holds no private key (expected a -----BEGIN PRIVATE KEY-----, BEGIN RSA PRIVATE \
                 KEY or BEGIN EC PRIVATE KEY block)"
                    .to_string()
            }
            other => format!("is not valid PEM: {other}"),
        };
        refuse(Part::Key, why)
    })
}

/// The leaf's subject, issuer and validity; refuses a leaf that cannot be read or is not meant for
/// TLS clients (an extended key usage without clientAuth, which receivers refuse).
fn summarize(chain: &[CertificateDer<'static>]) -> Result<Summary, Refused> {
    let leaf = &chain[0];
    let (_, cert) = x509_parser::parse_x509_certificate(leaf.as_ref()).or_else(|e| {
        refuse(
            Part::Certificate,
            format!("the first certificate cannot be read as X.509: {e}"),
        )
    })?;
    if let Ok(Some(eku)) = cert.extended_key_usage()
        && !(eku.value.client_auth || eku.value.any)
    {
        return refuse(
            Part::Certificate,
            "is not meant for TLS clients (its extended key usage lacks clientAuth), so \
             receivers refuse it: issue one with clientAuth",
        );
    }
    let name = |n: &x509_parser::x509::X509Name<'_>| {
        let s = n.to_string();
        if s.is_empty() {
            "(empty name)".to_string()
        } else {
            s
        }
    };
    let validity = cert.validity();
    Ok(Summary {
        subject: name(cert.subject()),
        issuer: name(cert.issuer()),
        not_before: Timestamp(validity.not_before.timestamp().saturating_mul(1000)),
        not_after: Timestamp(validity.not_after.timestamp().saturating_mul(1000)),
        fingerprint: Fingerprint(sha2::Sha256::digest(leaf.as_ref()).into()),
        chain: chain.len(),
    })
}

/// One certificate named in `webhooks.client_certificates`, read at start.
pub struct Configured {
    /// The integration's row.
    pub integration: i64,
    pub certificate: Arc<ClientCertificate>,
    pub cert_file: PathBuf,
}

/// The certificates named in the config file, by App ID. These belong to the file: the admin API
/// shows them but does not change them.
#[derive(Default)]
pub struct ConfiguredCertificates(pub HashMap<String, Configured>);

impl ConfiguredCertificates {
    pub fn get(&self, app_id: &str) -> Option<&Configured> {
        self.0.get(app_id)
    }

    /// The certificate of an integration's row, for the dispatcher.
    pub fn by_integration(&self) -> HashMap<i64, Arc<ClientCertificate>> {
        self.0
            .values()
            .map(|c| (c.integration, c.certificate.clone()))
            .collect()
    }
}

/// Reads and checks a certificate and key named by path (`key` is the setting they come from, for
/// the messages). Each error names the setting and the file.
pub fn read_files(
    key: &str,
    cert_file: &Path,
    key_file: &Path,
    now: Timestamp,
) -> Result<ClientCertificate, String> {
    let read = |name: &str, path: &Path| {
        std::fs::read_to_string(path)
            .map_err(|e| format!("{key}.{name}: {} cannot be read: {e}", path.display()))
    };
    let (cert_pem, key_pem) = (read("cert_file", cert_file)?, read("key_file", key_file)?);
    let named = |e: Refused| match e.part {
        Part::Certificate => format!("{key}.cert_file: {} {e}", cert_file.display()),
        Part::Key => format!("{key}.key_file: {} {e}", key_file.display()),
    };
    let certificate = ClientCertificate::load(&cert_pem, &key_pem).map_err(named)?;
    certificate.check_valid_at(now).map_err(named)?;
    Ok(certificate)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{
        BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose,
        IsCa, KeyPair,
    };

    fn ca() -> CertifiedIssuer<'static, KeyPair> {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, "Test Client CA");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap()
    }

    /// A client certificate issued by `ca`, valid from `from` to `to` (Unix seconds).
    fn client(
        ca: &CertifiedIssuer<'static, KeyPair>,
        cn: &str,
        eku: ExtendedKeyUsagePurpose,
        from: i64,
        to: i64,
    ) -> (String, String) {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, cn);
        params.extended_key_usages = vec![eku];
        params.not_before = time::OffsetDateTime::from_unix_timestamp(from).unwrap();
        params.not_after = time::OffsetDateTime::from_unix_timestamp(to).unwrap();
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, ca).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    const DAY: i64 = 86_400;

    fn now() -> i64 {
        Timestamp::now().millis() / 1000
    }

    #[test]
    fn a_client_certificate_and_its_key_are_summarised() {
        let ca = ca();
        let (cert, key) = client(
            &ca,
            "shop.example",
            ExtendedKeyUsagePurpose::ClientAuth,
            now() - DAY,
            now() + DAY,
        );
        let chain = format!("{cert}{}", ca.pem());
        let c = ClientCertificate::load(&chain, &key).unwrap();
        c.check_valid_at(Timestamp::now()).unwrap();
        assert_eq!(c.summary.subject, "CN=shop.example");
        assert_eq!(c.summary.issuer, "CN=Test Client CA");
        assert_eq!(c.summary.chain, 2);
        assert_eq!(c.summary.not_after.millis() / 1000, now() + DAY);
        let der = CertificateDer::from_pem_slice(cert.as_bytes()).unwrap();
        let want: [u8; 32] = sha2::Sha256::digest(der.as_ref()).into();
        assert_eq!(c.summary.fingerprint.0, want);
        let shown = c.summary.fingerprint.to_string();
        assert_eq!(shown.len(), 32 * 3 - 1);
        assert_eq!(shown, shown.to_uppercase());
        assert_eq!(Summary::of_pem(&chain).unwrap(), c.summary);
        assert!(!format!("{c:?}").contains("PRIVATE"));
        assert_eq!(c.certified_key().cert.len(), 2);
    }

    #[test]
    fn refusals_name_the_part_and_the_problem() {
        let ca = ca();
        let valid = |cn| {
            client(
                &ca,
                cn,
                ExtendedKeyUsagePurpose::ClientAuth,
                now() - DAY,
                now() + DAY,
            )
        };
        let (cert, key) = valid("a");
        let (_, other_key) = valid("b");
        let refused = |c: &str, k: &str| ClientCertificate::load(c, k).unwrap_err();

        let e = refused("not a certificate", &key);
        assert_eq!(e.part, Part::Certificate);
        assert!(e.reason.contains("no certificate"), "{e}");
        let e = refused(
            "-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n",
            &key,
        );
        assert!(e.reason.contains("not valid PEM"), "{e}");
        let e = refused(&format!("{cert}{key}"), &key);
        assert!(e.reason.contains("holds a private key"), "{e}");
        let e = refused(&cert, "");
        assert_eq!(e.part, Part::Key);
        assert!(e.reason.contains("no private key"), "{e}");
        let e = refused(&cert, &other_key);
        assert_eq!(e.part, Part::Key);
        assert!(e.reason.contains("does not belong"), "{e}");
        let e = refused(
            &cert,
            "-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n",
        );
        assert!(e.reason.contains("encrypted"), "{e}");

        let (server_only, server_key) = client(
            &ca,
            "s",
            ExtendedKeyUsagePurpose::ServerAuth,
            now() - DAY,
            now() + DAY,
        );
        let e = refused(&server_only, &server_key);
        assert!(e.reason.contains("clientAuth"), "{e}");

        let (old, old_key) = client(
            &ca,
            "old",
            ExtendedKeyUsagePurpose::ClientAuth,
            now() - 10 * DAY,
            now() - DAY,
        );
        let e = ClientCertificate::load(&old, &old_key)
            .unwrap()
            .check_valid_at(Timestamp::now())
            .unwrap_err();
        assert_eq!(e.part, Part::Certificate);
        assert!(e.reason.contains("expired on"), "{e}");
        let (later, later_key) = client(
            &ca,
            "later",
            ExtendedKeyUsagePurpose::ClientAuth,
            now() + DAY,
            now() + 10 * DAY,
        );
        let e = ClientCertificate::load(&later, &later_key)
            .unwrap()
            .check_valid_at(Timestamp::now())
            .unwrap_err();
        assert!(e.reason.contains("not valid until"), "{e}");

        let big = "x".repeat(MAX_CERTIFICATE_PEM + 1);
        assert!(refused(&big, &key).reason.contains("larger than"));
    }

    #[test]
    fn files_named_in_the_config_are_read_with_errors_naming_the_setting_and_path() {
        let ca = ca();
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = client(
            &ca,
            "file",
            ExtendedKeyUsagePurpose::ClientAuth,
            now() - DAY,
            now() + DAY,
        );
        let (c, k) = (dir.path().join("c.pem"), dir.path().join("k.pem"));
        std::fs::write(&c, &cert).unwrap();
        let setting = "webhooks.client_certificates[0]";
        let e = read_files(setting, &c, &k, Timestamp::now()).unwrap_err();
        assert!(
            e.starts_with("webhooks.client_certificates[0].key_file: ")
                && e.contains(&k.display().to_string())
                && e.contains("cannot be read"),
            "{e}"
        );
        std::fs::write(&k, &cert).unwrap();
        let e = read_files(setting, &c, &k, Timestamp::now()).unwrap_err();
        assert!(
            e.contains(".key_file: ") && e.contains("no private key"),
            "{e}"
        );
        std::fs::write(&k, &key).unwrap();
        let read = read_files(setting, &c, &k, Timestamp::now()).unwrap();
        assert_eq!(read.summary.subject, "CN=file");
    }
}
