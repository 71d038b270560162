//! A webhook receiver in Rust that offers HTTP/2 (ALPN `h2`, then `http/1.1`) over TLS on
//! `127.0.0.1:<ephemeral>`, with a certificate from the same kind of rcgen CA as the Python receiver.
//! It answers 200 to everything and records, for each request, which connection it came on, with
//! which HTTP version and which client certificate — what tests of connection reuse and of mutual
//! TLS need. (The Python receiver speaks HTTP/1.1
//! only; signatures are checked there.)

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tempfile::TempDir;

/// One request as the receiver saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    /// Connections are numbered from 1 in the order they were accepted.
    pub connection: usize,
    pub version: http::Version,
    pub path: String,
    /// The client certificate (DER of the leaf) its connection authenticated with, if any.
    pub client_cert: Option<Vec<u8>>,
}

/// Whether and how the receiver asks for client certificates.
enum ClientAuth {
    None,
    /// Signed by a CA of its own, which clicktermd never has; `optional` takes connections without.
    OwnCa {
        optional: bool,
    },
    /// Required, from this CA.
    Requires(CertificateDer<'static>),
}

pub struct H2Receiver {
    pub addr: SocketAddr,
    /// The CA to trust (`webhooks.extra_ca_file`).
    pub ca_file: PathBuf,
    seen: Arc<Mutex<Vec<Seen>>>,
    accepted: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
    _dir: TempDir,
}

impl H2Receiver {
    pub async fn start() -> H2Receiver {
        H2Receiver::start_with(ClientAuth::None).await
    }

    /// A receiver that asks for a client certificate (mutual TLS) signed by a CA of its own, which
    /// clicktermd never has: it demands one, or, if `optional`, takes the connection without.
    pub async fn asking_for_client_certificates(optional: bool) -> H2Receiver {
        H2Receiver::start_with(ClientAuth::OwnCa { optional }).await
    }

    /// A receiver that demands a client certificate issued by `ca` (a company's CA) and records, for
    /// each request, the certificate its connection presented.
    pub async fn requiring_client_certificates_from(ca: CertificateDer<'static>) -> H2Receiver {
        H2Receiver::start_with(ClientAuth::Requires(ca)).await
    }

    async fn start_with(client_auth: ClientAuth) -> H2Receiver {
        let dir = tempfile::tempdir().expect("temporary directory");
        super::receiver::write_certificates(&dir);
        let certs: Vec<CertificateDer<'static>> =
            CertificateDer::pem_file_iter(dir.path().join("cert.pem"))
                .expect("read cert.pem")
                .collect::<Result<_, _>>()
                .expect("parse cert.pem");
        let key = PrivateKeyDer::from_pem_file(dir.path().join("key.pem")).expect("key.pem");
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("TLS versions");
        let required = match client_auth {
            ClientAuth::None => None,
            ClientAuth::OwnCa { optional } => {
                let clients = tempfile::tempdir().expect("temporary directory");
                Some((super::receiver::write_certificates(&clients).0, optional))
            }
            ClientAuth::Requires(ca) => Some((ca, false)),
        };
        let config = if let Some((client_ca, optional)) = required {
            let mut roots = rustls::RootCertStore::empty();
            roots.add(client_ca).expect("client CA");
            let builder = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                Arc::new(rustls::crypto::ring::default_provider()),
            );
            let builder = if optional {
                builder.allow_unauthenticated()
            } else {
                builder
            };
            let verifier = builder.build().expect("client verifier");
            config.with_client_cert_verifier(verifier)
        } else {
            config.with_no_client_auth()
        };
        let mut config = config
            .with_single_cert(certs, key)
            .expect("receiver certificate");
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local address");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        let accepted = Arc::new(AtomicUsize::new(0));
        let connections = accepted.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let connection = connections.fetch_add(1, Ordering::SeqCst) + 1;
                let (acceptor, log) = (acceptor.clone(), log.clone());
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let client_cert = tls
                        .get_ref()
                        .1
                        .peer_certificates()
                        .and_then(|chain| chain.first())
                        .map(|leaf| leaf.as_ref().to_vec());
                    let service = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                        let (log, client_cert) = (log.clone(), client_cert.clone());
                        async move {
                            let version = req.version();
                            let path = req.uri().path().to_string();
                            let _ = req.into_body().collect().await;
                            log.lock().unwrap().push(Seen {
                                connection,
                                version,
                                path,
                                client_cert,
                            });
                            Ok::<_, hyper::Error>(http::Response::new(Full::new(
                                Bytes::from_static(b"{\"ok\":true}"),
                            )))
                        }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(tls), service)
                        .await;
                });
            }
        });
        H2Receiver {
            addr,
            ca_file: dir.path().join("ca.pem"),
            seen,
            accepted,
            task,
            _dir: dir,
        }
    }

    /// How many TCP connections it has accepted, whether or not a request came on them.
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    /// `https://127.0.0.1:PORT{path}`
    pub fn url(&self, path: &str) -> String {
        format!("https://{}{path}", self.addr)
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

impl Drop for H2Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}
