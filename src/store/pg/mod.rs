//! The PostgreSQL store (`storage.backend = "postgres"`, issue #12): the same operations as the SQLite
//! store, on a database any number of clicktermd nodes share.
//!
//! - **Client and pool**: tokio-postgres, pooled by deadpool-postgres (ARCHITECTURE.md says why), TLS
//!   by rustls (`tokio-postgres-rustls`), with libpq's `sslmode`s: `disable`, `prefer` and `require`
//!   (encrypted, the certificate not checked, as libpq does), `verify-ca` (the chain checked against
//!   `storage.postgres_ca_file` or the Mozilla roots) and `verify-full` (the chain and the host name).
//! - **Each operation is one transaction** on a pooled connection (`family.rs` beside each SQLite
//!   family, `impl Postgres`); PostgreSQL orders the nodes' transactions (row locks, `FOR UPDATE SKIP
//!   LOCKED` for claims), so there is no writer thread.
//! - **The schema** is `schema-postgres.sql`, applied to an empty database at start under an advisory
//!   lock ([`migrate`]), so nodes starting together apply it once.
//! - **What the other nodes change** is heard on one listening connection (`LISTEN clicktermd`, fed by
//!   the schema's triggers): a change to `integrations` makes the credentials cache start over, new
//!   due deliveries wake the dispatcher. While that connection is down the cache is not used at all
//!   (every request reads), so a change on another node can never be missed.

mod actions;
pub mod admin;
pub mod audit;
mod batch;
pub mod client_certs;
pub mod consent;
pub mod deliveries;
pub mod events;
pub mod integrations;
pub mod ledger;
mod migrate;
mod records;
pub mod settings;
pub mod stats;
pub mod templates;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio::sync::Notify;
use tokio_postgres::config::SslMode;
use tokio_postgres_rustls::MakeRustlsConnect;

use super::{Result, StoreError, WriterStats, cache};
use crate::config::{PostgresUrl, StorageConfig};

pub use migrate::SCHEMA_POSTGRES;
pub(crate) use migrate::{MIGRATION_LOCK, tables as schema_tables};

/// How long a request waits for a pooled connection, and a new connection for the server, before it
/// is answered 503.
const POOL_WAIT: Duration = Duration::from_secs(5);

/// How long the listening connection waits before connecting again after it was lost.
const RELISTEN_AFTER: Duration = Duration::from_secs(1);

/// The channel the schema's triggers announce changes on.
const CHANNEL: &str = "clicktermd";

/// `storage.postgres_url`, understood: what tokio-postgres connects with, and how TLS is checked.
pub struct Target {
    pub config: tokio_postgres::Config,
    pub tls: TlsCheck,
    /// A CA file named in the URL (`sslrootcert`), used when `storage.postgres_ca_file` is not set.
    pub root_cert: Option<std::path::PathBuf>,
}

/// What a TLS connection to the database checks (libpq's `sslmode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsCheck {
    /// `disable`, `prefer`, `require`: encrypted when the mode asks, the certificate taken as it is.
    Nothing,
    /// `verify-ca`: the chain, not the name.
    Chain,
    /// `verify-full`: the chain and the host name.
    Full,
}

/// Parses a libpq URL (`postgres://` or `postgresql://`), taking out the `sslmode`s tokio-postgres
/// does not know (`verify-ca`, `verify-full`) and `sslrootcert`. The error never repeats the URL
/// (it may hold a password).
pub fn parse_url(url: &PostgresUrl) -> std::result::Result<Target, String> {
    let raw = url.expose();
    let mut parsed = url::Url::parse(raw).map_err(|e| {
        format!("not a URL ({e}); expected postgres://user:password@host:port/database")
    })?;
    if !matches!(parsed.scheme(), "postgres" | "postgresql") {
        return Err(format!(
            "the scheme must be postgres:// or postgresql://, not {}://",
            parsed.scheme()
        ));
    }
    let mut tls = TlsCheck::Nothing;
    let mut mode = None;
    let mut root_cert = None;
    let kept: Vec<(String, String)> = parsed
        .query_pairs()
        .filter_map(|(k, v)| match &*k {
            "sslmode" => {
                mode = Some(v.into_owned());
                None
            }
            "sslrootcert" => {
                root_cert = Some(std::path::PathBuf::from(v.into_owned()));
                None
            }
            _ => Some((k.into_owned(), v.into_owned())),
        })
        .collect();
    let ssl_mode = match mode.as_deref() {
        None | Some("prefer") => SslMode::Prefer,
        Some("disable") => SslMode::Disable,
        Some("require") => SslMode::Require,
        Some("verify-ca") => {
            tls = TlsCheck::Chain;
            SslMode::Require
        }
        Some("verify-full") => {
            tls = TlsCheck::Full;
            SslMode::Require
        }
        Some(other) => {
            return Err(format!(
                "sslmode={other} is not one of disable, prefer, require, verify-ca, verify-full"
            ));
        }
    };
    if kept.is_empty() {
        parsed.set_query(None);
    } else {
        parsed.query_pairs_mut().clear().extend_pairs(kept);
    }
    let mut config: tokio_postgres::Config = parsed
        .as_str()
        .parse()
        .map_err(|e: tokio_postgres::Error| format!("not a PostgreSQL URL: {e}"))?;
    if config.get_dbname().is_none() {
        return Err("names no database (postgres://user:password@host/DATABASE)".into());
    }
    config.ssl_mode(ssl_mode);
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(POOL_WAIT);
    }
    if config.get_application_name().is_none() {
        config.application_name("clicktermd");
    }
    config.keepalives(true);
    Ok(Target {
        config,
        tls,
        root_cert,
    })
}

/// The rustls configuration for `check`, trusting `ca_file`'s certificates (else the Mozilla roots).
pub fn tls_connector(
    check: TlsCheck,
    ca_file: Option<&std::path::Path>,
) -> std::result::Result<MakeRustlsConnect, String> {
    use rustls_pki_types::pem::PemObject;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    match ca_file {
        Some(path) => {
            let certs = rustls_pki_types::CertificateDer::pem_file_iter(path)
                .map_err(|e| {
                    format!(
                        "cannot read storage.postgres_ca_file {}: {e}",
                        path.display()
                    )
                })?
                .collect::<std::result::Result<Vec<_>, _>>()
                .map_err(|e| format!("storage.postgres_ca_file {}: {e}", path.display()))?;
            if certs.is_empty() {
                return Err(format!(
                    "storage.postgres_ca_file {} holds no certificate",
                    path.display()
                ));
            }
            for cert in certs {
                roots
                    .add(cert)
                    .map_err(|e| format!("storage.postgres_ca_file {}: {e}", path.display()))?;
            }
        }
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let webpki = rustls::client::WebPkiServerVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()
    .map_err(|e| e.to_string())?;
    let config = match check {
        TlsCheck::Full => builder.with_webpki_verifier(webpki).with_no_client_auth(),
        TlsCheck::Chain => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verify::ChainOnly(webpki)))
            .with_no_client_auth(),
        TlsCheck::Nothing => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verify::Unchecked(provider)))
            .with_no_client_auth(),
    };
    Ok(MakeRustlsConnect::new(config))
}

/// The two certificate checks libpq has and webpki has not.
mod verify {
    use std::sync::Arc;

    use rustls::client::WebPkiServerVerifier;
    use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
    use rustls::{CertificateError, DigitallySignedStruct, Error, SignatureScheme};
    use rustls_pki_types::{CertificateDer, ServerName, UnixTime};

    /// `verify-ca`: the chain must lead to a trusted root; the name is not compared.
    #[derive(Debug)]
    pub struct ChainOnly(pub Arc<WebPkiServerVerifier>);

    impl ServerCertVerifier for ChainOnly {
        fn verify_server_cert(
            &self,
            end_entity: &CertificateDer<'_>,
            intermediates: &[CertificateDer<'_>],
            server_name: &ServerName<'_>,
            ocsp: &[u8],
            now: UnixTime,
        ) -> Result<ServerCertVerified, Error> {
            match self
                .0
                .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
            {
                Err(Error::InvalidCertificate(
                    CertificateError::NotValidForName
                    | CertificateError::NotValidForNameContext { .. },
                )) => Ok(ServerCertVerified::assertion()),
                other => other,
            }
        }

        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, Error> {
            self.0.verify_tls12_signature(message, cert, dss)
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, Error> {
            self.0.verify_tls13_signature(message, cert, dss)
        }

        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            self.0.supported_verify_schemes()
        }
    }

    /// `require` (and `prefer`): encrypted, the certificate not checked — libpq's meaning of these
    /// modes. The handshake's signatures are still verified, so the connection is with the holder of
    /// the certificate's key.
    #[derive(Debug)]
    pub struct Unchecked(pub Arc<rustls::crypto::CryptoProvider>);

    impl ServerCertVerifier for Unchecked {
        fn verify_server_cert(
            &self,
            _: &CertificateDer<'_>,
            _: &[CertificateDer<'_>],
            _: &ServerName<'_>,
            _: &[u8],
            _: UnixTime,
        ) -> Result<ServerCertVerified, Error> {
            Ok(ServerCertVerified::assertion())
        }

        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, Error> {
            rustls::crypto::verify_tls12_signature(
                message,
                cert,
                dss,
                &self.0.signature_verification_algorithms,
            )
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, Error> {
            rustls::crypto::verify_tls13_signature(
                message,
                cert,
                dss,
                &self.0.signature_verification_algorithms,
            )
        }

        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            self.0.signature_verification_algorithms.supported_schemes()
        }
    }
}

/// A PostgreSQL error that means the database cannot be reached now (rather than that a statement
/// was wrong): the connection closed or failed (an I/O error), or SQLSTATE class 08 (connection
/// exception) and 57P01–57P03 (the server shutting down or starting).
fn unavailable(e: &tokio_postgres::Error) -> bool {
    match e.code() {
        None => {
            e.is_closed() || std::error::Error::source(e).is_some_and(|s| s.is::<std::io::Error>())
        }
        Some(code) => {
            let c = code.code();
            c.starts_with("08") || matches!(c, "57P01" | "57P02" | "57P03")
        }
    }
}

impl From<tokio_postgres::Error> for StoreError {
    fn from(e: tokio_postgres::Error) -> StoreError {
        if unavailable(&e) {
            StoreError::Unavailable(e.to_string())
        } else {
            StoreError::Postgres(e)
        }
    }
}

impl From<deadpool_postgres::PoolError> for StoreError {
    fn from(e: deadpool_postgres::PoolError) -> StoreError {
        match e {
            // Whatever stops a new connection (refused, the server starting or shutting down, the
            // database not accepting connections) means the database cannot be reached now.
            deadpool_postgres::PoolError::Backend(e) => StoreError::Unavailable(e.to_string()),
            deadpool_postgres::PoolError::Timeout(_) => StoreError::Unavailable(format!(
                "no database connection within {} s",
                POOL_WAIT.as_secs()
            )),
            other => StoreError::Unavailable(other.to_string()),
        }
    }
}

/// A cheap handle's contents: the pool, the credentials cache and the listening task.
pub struct Postgres {
    pool: Pool,
    shown: String,
    credentials: cache::Credentials,
    /// Whether the listening connection is up: the cache is used only while it is.
    listening: Arc<AtomicBool>,
    stats: Arc<WriterStats>,
    wake: Arc<Notify>,
    listener: tokio::task::JoinHandle<()>,
    /// The node's action batches (`actions.rs`).
    actions: actions::Queue,
    actor: tokio::task::JoinHandle<()>,
    /// The node's verify batches (`batch.rs`).
    verifies: batch::Queue,
    verifier: tokio::task::JoinHandle<()>,
    /// The node's attempt batches (`records.rs`).
    records: records::Queue,
    recorder: tokio::task::JoinHandle<()>,
    /// This node's claims whose attempts are not recorded yet (`deliveries.rs`, **Claims**).
    unrecorded: deliveries::Unrecorded,
}

impl Drop for Postgres {
    fn drop(&mut self) {
        self.listener.abort();
        self.actor.abort();
        self.verifier.abort();
        self.recorder.abort();
        self.pool.close();
    }
}

impl Postgres {
    /// Connects to `storage.postgres_url`, checks that the database answers (a wrong URL, a refused
    /// connection, a failed login, a missing database: an error naming it), migrates it under the
    /// advisory lock, and starts listening for the other nodes' changes.
    pub async fn connect(storage: &StorageConfig) -> Result<Postgres> {
        let url = storage.postgres_url.as_ref().ok_or_else(|| {
            StoreError::Io(
                "storage.postgres_url is not set (storage.backend = \"postgres\")".into(),
            )
        })?;
        let shown = url.redacted();
        let target =
            parse_url(url).map_err(|e| StoreError::Io(format!("storage.postgres_url: {e}")))?;
        let ca_file = storage
            .postgres_ca_file
            .clone()
            .or(target.root_cert.clone());
        let tls = tls_connector(target.tls, ca_file.as_deref()).map_err(StoreError::Io)?;
        let manager = Manager::from_config(
            target.config.clone(),
            tls.clone(),
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(storage.postgres_pool_size as usize)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(POOL_WAIT))
            .create_timeout(Some(POOL_WAIT))
            .recycle_timeout(Some(POOL_WAIT))
            .build()
            .map_err(|e| StoreError::Io(format!("cannot make the PostgreSQL pool: {e}")))?;
        let mut client = pool.get().await.map_err(|e| {
            StoreError::Io(format!(
                "cannot connect to PostgreSQL at {shown}: {}",
                describe_pool_error(&e)
            ))
        })?;
        migrate::migrate(&mut client, &shown).await?;
        drop(client);

        let credentials = cache::Credentials::default();
        let listening = Arc::new(AtomicBool::new(false));
        let wake = Arc::new(Notify::new());
        let listener = tokio::spawn(listen(
            target.config,
            tls,
            credentials.generation(),
            listening.clone(),
            wake.clone(),
        ));
        let (actions, actor) = actions::start(pool.clone());
        let (verifies, verifier) = batch::start(pool.clone());
        let (records, recorder) = records::start(pool.clone());
        Ok(Postgres {
            actions,
            actor,
            verifies,
            verifier,
            records,
            recorder,
            pool,
            shown,
            credentials,
            listening,
            stats: Arc::new(WriterStats::default()),
            wake,
            listener,
            unrecorded: Default::default(),
        })
    }

    /// The URL without its password.
    pub fn describe(&self) -> String {
        self.shown.clone()
    }

    /// A pooled connection; 503 (`Unavailable`) when none comes within [`POOL_WAIT`].
    pub(crate) async fn client(&self) -> Result<deadpool_postgres::Object> {
        Ok(self.pool.get().await?)
    }

    /// The credentials cache, or none while the listening connection is down (then nothing another
    /// node changes could be heard, so nothing may be served from memory).
    pub(crate) fn credentials_cache(&self) -> Option<&cache::Credentials> {
        self.listening
            .load(Ordering::SeqCst)
            .then_some(&self.credentials)
    }

    /// After this node changed `integrations`: its own cache starts over at once, before the
    /// notification comes back through the listener.
    pub(crate) fn integrations_changed(&self) {
        self.credentials.generation().bump();
    }

    /// Woken whenever deliveries became due on any node.
    pub fn delivery_wake(&self) -> Arc<Notify> {
        self.wake.clone()
    }

    pub(crate) fn stats(&self) -> Arc<WriterStats> {
        self.stats.clone()
    }

    pub(crate) async fn ping(&self) -> Result<()> {
        let client = self.client().await?;
        client.query_one("SELECT 1", &[]).await?;
        Ok(())
    }

    pub(crate) async fn probe_write(&self) -> Result<()> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(
                "INSERT INTO settings (key, value) VALUES ('write_probe', $1) \
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            )
            .await?;
        let now = crate::model::Timestamp::now()
            .millis()
            .to_be_bytes()
            .to_vec();
        client.execute(&stmt, &[&now]).await?;
        Ok(())
    }
}

/// A pool error at start as a sentence: the server's own message (a failed login, a missing
/// database) or the connection's (refused, timed out).
fn describe_pool_error(e: &deadpool_postgres::PoolError) -> String {
    match e {
        deadpool_postgres::PoolError::Backend(e) => match e.as_db_error() {
            Some(db) => db.message().to_string(),
            None => {
                let mut text = e.to_string();
                let mut source = std::error::Error::source(e);
                while let Some(s) = source {
                    text = format!("{text}: {s}");
                    source = s.source();
                }
                text
            }
        },
        deadpool_postgres::PoolError::Timeout(_) => {
            format!("no answer within {} s", POOL_WAIT.as_secs())
        }
        other => other.to_string(),
    }
}

/// The listening connection: `LISTEN clicktermd`, and for each notification, the cache starts over
/// (`integrations`) or the dispatcher looks (`deliveries`). Lost, it is made again after
/// [`RELISTEN_AFTER`]; while it is down the cache is off, and when it is back the cache starts over
/// and the dispatcher looks (what was announced meanwhile was not heard).
async fn listen(
    config: tokio_postgres::Config,
    tls: MakeRustlsConnect,
    generation: cache::Generation,
    listening: Arc<AtomicBool>,
    wake: Arc<Notify>,
) {
    loop {
        match config.connect(tls.clone()).await {
            Ok((client, mut connection)) => {
                let mut heard = std::pin::pin!(async {
                    std::future::poll_fn(|cx| {
                        loop {
                            match connection.poll_message(cx) {
                                std::task::Poll::Ready(Some(Ok(
                                    tokio_postgres::AsyncMessage::Notification(n),
                                ))) => match n.payload() {
                                    "integrations" => generation.bump(),
                                    "deliveries" => wake.notify_one(),
                                    _ => {}
                                },
                                std::task::Poll::Ready(Some(Ok(_))) => {}
                                std::task::Poll::Ready(Some(Err(e))) => {
                                    return std::task::Poll::Ready(Some(e));
                                }
                                std::task::Poll::Ready(None) => {
                                    return std::task::Poll::Ready(None);
                                }
                                std::task::Poll::Pending => return std::task::Poll::Pending,
                            }
                        }
                    })
                    .await
                });
                let listen = format!("LISTEN {CHANNEL}");
                let listened = tokio::select! {
                    r = client.batch_execute(&listen) => r,
                    e = &mut heard => {
                        tracing::warn!(error = ?e, "the database's listening connection closed");
                        tokio::time::sleep(RELISTEN_AFTER).await;
                        continue;
                    }
                };
                match listened {
                    Ok(()) => {
                        generation.bump();
                        listening.store(true, Ordering::SeqCst);
                        wake.notify_one();
                        let e = heard.await;
                        tracing::warn!(
                            error = ?e.map(|e| e.to_string()),
                            "lost the database's listening connection; reading credentials from \
                             the database until it is back"
                        );
                    }
                    Err(e) => tracing::warn!(error = %e, "cannot LISTEN on the database"),
                }
                listening.store(false, Ordering::SeqCst);
                generation.bump();
                drop(client);
            }
            Err(e) => {
                listening.store(false, Ordering::SeqCst);
                tracing::debug!(error = %e, "cannot connect the listening connection");
            }
        }
        tokio::time::sleep(RELISTEN_AFTER).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(s: &str) -> PostgresUrl {
        PostgresUrl::new(s)
    }

    #[test]
    fn sslmodes_are_libpqs() {
        for (mode, ssl, check) in [
            ("", SslMode::Prefer, TlsCheck::Nothing),
            ("?sslmode=disable", SslMode::Disable, TlsCheck::Nothing),
            ("?sslmode=prefer", SslMode::Prefer, TlsCheck::Nothing),
            ("?sslmode=require", SslMode::Require, TlsCheck::Nothing),
            ("?sslmode=verify-ca", SslMode::Require, TlsCheck::Chain),
            ("?sslmode=verify-full", SslMode::Require, TlsCheck::Full),
        ] {
            let t = parse_url(&url(&format!("postgres://u:p@db.example:5433/ct{mode}"))).unwrap();
            assert_eq!(t.config.get_ssl_mode(), ssl, "{mode}");
            assert_eq!(t.tls, check, "{mode}");
            assert_eq!(t.config.get_dbname(), Some("ct"));
            assert_eq!(t.config.get_ports(), &[5433]);
            assert_eq!(t.config.get_password(), Some(&b"p"[..]));
        }
        let t = parse_url(&url(
            "postgresql://u@h/ct?sslmode=verify-full&sslrootcert=/etc/ca.pem&application_name=x",
        ))
        .unwrap();
        assert_eq!(
            t.root_cert.as_deref(),
            Some(std::path::Path::new("/etc/ca.pem"))
        );
        assert_eq!(t.config.get_application_name(), Some("x"));
    }

    #[test]
    fn a_wrong_url_is_refused_naming_what_is_wrong_and_never_its_password() {
        for (given, says) in [
            (
                "postgres://u:s3cret@h/ct?sslmode=allow-all",
                "sslmode=allow-all",
            ),
            ("postgres://u:s3cret@h", "names no database"),
            ("mysql://u:s3cret@h/ct", "postgres:// or postgresql://"),
            ("host=h password=s3cret dbname=ct", "not a URL"),
            (
                "postgres://u:s3cret@h/ct?nonsense=1",
                "not a PostgreSQL URL",
            ),
        ] {
            let e = parse_url(&url(given))
                .err()
                .unwrap_or_else(|| panic!("{given} accepted"));
            assert!(e.contains(says), "{given}: {e}");
            assert!(
                !e.contains("s3cret"),
                "{given}: the error shows the password: {e}"
            );
        }
    }

    #[test]
    fn the_url_is_shown_without_its_password() {
        let u = url("postgres://clicktermd:s3cret@db.example:5432/ct?sslmode=verify-full");
        for shown in [u.redacted(), format!("{u}"), format!("{u:?}")] {
            assert!(!shown.contains("s3cret"), "{shown}");
            assert!(
                shown.contains("clicktermd:***@db.example:5432/ct"),
                "{shown}"
            );
        }
        assert_eq!(url("not a url: s3cret").redacted(), "(not a URL)");
    }

    #[test]
    fn a_ca_file_without_certificates_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("ca.pem");
        std::fs::write(&empty, "").unwrap();
        let e = tls_connector(TlsCheck::Full, Some(&empty)).err().unwrap();
        assert!(e.contains("holds no certificate"), "{e}");
        let missing = dir.path().join("missing.pem");
        let e = tls_connector(TlsCheck::Full, Some(&missing)).err().unwrap();
        assert!(e.contains("cannot read storage.postgres_ca_file"), "{e}");
        assert!(tls_connector(TlsCheck::Nothing, None).is_ok());
    }
}
