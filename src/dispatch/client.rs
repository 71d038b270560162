//! The outbound HTTP client: hyper's pooled client over our own connector. The connector is where the
//! SSRF guard holds: it resolves the host, judges **every** returned address with the policy (one
//! forbidden address refuses the URL), and then connects only to an address it just judged — there is
//! no second lookup that a DNS rebinding could answer differently. TLS uses the URL's host name for SNI
//! and certificate verification, whatever address was dialled. Connections are pooled per host and
//! reused (keep-alive; HTTP/2 when the receiver offers it by ALPN); redirects are never followed,
//! because hyper's client does not follow them.
//!
//! A burst of attempts to an origin with no pooled connection would make hyper dial once per attempt
//! (it learns that a peer speaks HTTP/2 only from a finished handshake), then drop all but one of the
//! HTTP/2 connections. [`Dials`] makes the burst's other dials wait for the first: when it ends in
//! HTTP/2 they are not needed (hyper hands their requests the new connection), otherwise they dial.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::Uri;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls_pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::watch;

use super::policy::{Policy, Refusal};
use super::resolve::{DnsResolver, LookupError};

/// Why the connector refused or failed; the dispatcher maps it to an attempt outcome.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("{0}")]
    Dns(LookupError),
    #[error("{0}")]
    Blocked(Refusal),
    #[error("connecting to {addr} failed: {error}")]
    Connect { addr: SocketAddr, error: io::Error },
    /// `reason` is [`super::tls::explain`]'s sentence.
    #[error("TLS with {host} ({addr}) failed: {reason}")]
    Tls {
        host: String,
        addr: SocketAddr,
        reason: String,
    },
    #[error("{0}")]
    InvalidUrl(String),
    /// Another dial to the same origin made an HTTP/2 connection that this request shares; this dial
    /// only ends (in hyper's background) once it is certainly not needed.
    #[error("not dialled: an HTTP/2 connection to {0} was made for another request")]
    Shared(String),
}

/// How long a dial that found its origin served by a new HTTP/2 connection stays pending before it
/// gives up. hyper hands the request that started it the shared connection as soon as that is pooled
/// (a moment after the handshake) and keeps the dial running in the background, where this error is
/// dropped. It is longer than any attempt's timeout: should the new connection fail before hyper
/// pools it (its HTTP/2 handshake refused), the waiting attempts end at their timeout and are retried.
const SHARED_DIAL_GRACE: Duration = Duration::from_secs(120);

/// How long an origin's entry stays after its dial made an HTTP/2 connection: hyper pools the
/// connection a moment after the handshake, and a dial that starts in that moment would otherwise make
/// a second one. Dials after it lead again (the pooled connection may have closed since); one in that
/// second whose connection closed at once waits out its attempt's timeout and is retried.
const H2_SETTLE: Duration = Duration::from_secs(1);

/// The TLS dials in progress, by origin (`scheme://authority`, hyper's pool key). The first dial to
/// an origin leads; dials to it while it runs wait for its end and learn whether it made an HTTP/2
/// connection (`Some(true)`), or not (`Some(false)`: HTTP/1.1, a failure, or the dial was dropped).
/// An entry whose dial made an HTTP/2 connection stays for [`H2_SETTLE`]; any other goes with its dial.
#[derive(Default)]
pub struct Dials(std::sync::Mutex<HashMap<String, Dial>>);

struct Dial {
    outcome: watch::Receiver<Option<bool>>,
    /// When its dial ended in HTTP/2.
    settled: Option<std::time::Instant>,
}

/// What a dial is to do: lead (dial, then tell the waiting ones), or follow one that leads.
enum Turn {
    Lead(DialLead),
    Follow(watch::Receiver<Option<bool>>),
}

impl Dials {
    fn turn(self: &Arc<Self>, origin: &str) -> Turn {
        let mut map = self.0.lock().expect("dials lock");
        if let Some(dial) = map.get(origin)
            && dial.settled.is_none_or(|at| at.elapsed() < H2_SETTLE)
        {
            return Turn::Follow(dial.outcome.clone());
        }
        let (tx, rx) = watch::channel(None);
        map.insert(
            origin.to_string(),
            Dial {
                outcome: rx,
                settled: None,
            },
        );
        Turn::Lead(DialLead {
            dials: self.clone(),
            origin: origin.to_string(),
            tx,
        })
    }
}

/// The leading dial's duty: say how it ended, and clear the origin's entry unless it made an HTTP/2
/// connection — also when the dial is dropped half-way (its attempt timed out), so the followers dial
/// for themselves.
struct DialLead {
    dials: Arc<Dials>,
    origin: String,
    tx: watch::Sender<Option<bool>>,
}

impl DialLead {
    fn ended(&self, h2: bool) {
        self.tx.send_replace(Some(h2));
    }
}

impl Drop for DialLead {
    fn drop(&mut self) {
        if self.tx.borrow().is_none() {
            self.tx.send_replace(Some(false));
        }
        let h2 = *self.tx.borrow() == Some(true);
        let mut map = self.dials.0.lock().expect("dials lock");
        let ours = map
            .get(&self.origin)
            .is_some_and(|dial| dial.outcome.same_channel(&self.tx.subscribe()));
        if !ours {
            return;
        }
        if h2 {
            if let Some(dial) = map.get_mut(&self.origin) {
                dial.settled = Some(std::time::Instant::now());
            }
        } else {
            map.remove(&self.origin);
        }
    }
}

/// The address a response came from, attached to every response of a connection.
#[derive(Debug, Clone, Copy)]
pub struct RemoteAddr(pub SocketAddr);

/// Attached to every response of a connection whose receiver asked for a client certificate during
/// the handshake: the issuers it named. (Some receivers — nginx with `ssl_verify_client on` — finish
/// the handshake without one and answer the request with a page saying so.)
#[derive(Debug, Clone)]
pub struct CertificateAsked {
    pub issuers: Vec<String>,
}

/// Resolves, judges, dials and (for https) shakes hands.
#[derive(Clone)]
pub struct PinnedConnector {
    pub policy: Arc<Policy>,
    pub resolver: Arc<DnsResolver>,
    /// Read for every new connection, so a changed `extra_ca_file` applies without a restart.
    pub tls: Arc<super::tls::CallbackTls>,
    /// The part of the attempt's time that DNS may use.
    pub dns_budget: Duration,
    pub dials: Arc<Dials>,
    /// The client certificate every connection of this connector presents when asked (mutual TLS):
    /// one connector, and so one pool, per certificate (see `clients`).
    pub identity: Option<Arc<crate::client_cert::ClientCertificate>>,
}

impl PinnedConnector {
    /// A dial to an `https` origin that is already being dialled waits for that dial; see [`Dials`].
    ///
    /// The dial itself is boxed, so a follower that only waits — for up to [`SHARED_DIAL_GRACE`],
    /// in hyper's background, one per attempt of a burst to a new HTTP/2 origin — holds a few hundred
    /// bytes rather than a whole handshake's state.
    async fn connect(self, uri: Uri) -> Result<PinnedStream, ConnectError> {
        if uri.scheme_str() != Some("https") {
            return Box::pin(self.dial(uri)).await;
        }
        let origin = format!("https://{}", uri.authority().map_or("", |a| a.as_str()));
        match self.dials.turn(&origin) {
            Turn::Lead(lead) => {
                let stream = Box::pin(self.dial(uri)).await;
                lead.ended(stream.as_ref().is_ok_and(|s| s.h2));
                stream
            }
            Turn::Follow(mut rx) => {
                let h2 = match rx.wait_for(Option::is_some).await {
                    Ok(v) => *v == Some(true),
                    Err(_) => false,
                };
                if h2 {
                    tokio::time::sleep(SHARED_DIAL_GRACE).await;
                    return Err(ConnectError::Shared(origin));
                }
                Box::pin(self.dial(uri)).await
            }
        }
    }

    async fn dial(self, uri: Uri) -> Result<PinnedStream, ConnectError> {
        let https = match uri.scheme_str() {
            Some("https") => true,
            Some("http") if self.policy.allow_http => false,
            other => {
                return Err(ConnectError::InvalidUrl(format!(
                    "scheme {other:?} is not allowed"
                )));
            }
        };
        let host = uri
            .host()
            .ok_or_else(|| ConnectError::InvalidUrl("no host".into()))?;
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
        let addrs: Vec<IpAddr> = match host.parse::<IpAddr>() {
            Ok(ip) => vec![ip],
            Err(_) => self
                .resolver
                .lookup(&host, self.dns_budget)
                .await
                .map_err(ConnectError::Dns)?,
        };
        // The last line of defence: nothing below runs unless every address passed.
        self.policy
            .check_resolved_host(&host, &addrs, port)
            .map_err(ConnectError::Blocked)?;

        let mut last = None;
        let mut tcp = None;
        for ip in &addrs {
            let addr = SocketAddr::new(*ip, port);
            match TcpStream::connect(addr).await {
                Ok(s) => {
                    tcp = Some((s, addr));
                    break;
                }
                Err(error) => last = Some(ConnectError::Connect { addr, error }),
            }
        }
        let Some((tcp, addr)) = tcp else {
            return Err(last.unwrap_or(ConnectError::Dns(LookupError::NoRecords { host })));
        };
        let _ = tcp.set_nodelay(true);
        if !https {
            return Ok(PinnedStream {
                io: Io::Plain(tcp),
                remote: addr,
                h2: false,
                pending: Bytes::new(),
                asked: None,
            });
        }
        let name = ServerName::try_from(host.clone()).map_err(|e| {
            ConnectError::InvalidUrl(format!("{host} is not a valid TLS server name: {e}"))
        })?;
        let (connector, auth) = self.tls.dial(self.identity.clone());
        let shake = std::time::Instant::now();
        let mut tls = connector
            .connect(name, tcp)
            .await
            .map_err(|error| ConnectError::Tls {
                reason: super::tls::explain(&host, &error, &auth.seen()),
                host: host.clone(),
                addr,
            })?;
        let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
        let mut pending = Vec::new();
        if auth.asked()
            && tls.get_ref().1.protocol_version() == Some(rustls::ProtocolVersion::TLSv1_3)
        {
            // Asked for a client certificate, in TLS 1.3: a receiver that requires one (or refuses
            // ours) says so about one round trip after our Finished, and hyper would report that
            // only as a closed connection. Wait for it briefly (twice the handshake's time);
            // anything the receiver sends meanwhile (an HTTP/2 SETTINGS frame) is kept for hyper.
            use tokio::io::AsyncReadExt;
            let wait =
                (shake.elapsed() * 2).clamp(Duration::from_millis(20), Duration::from_millis(500));
            let mut buf = [0u8; 4096];
            match tokio::time::timeout(wait, tls.read(&mut buf)).await {
                Ok(Ok(n)) => pending.extend_from_slice(&buf[..n]),
                Ok(Err(error)) => {
                    return Err(ConnectError::Tls {
                        reason: super::tls::explain(&host, &error, &auth.seen()),
                        host: host.clone(),
                        addr,
                    });
                }
                Err(_) => {}
            }
        }
        Ok(PinnedStream {
            io: Io::Tls(Box::new(tls)),
            remote: addr,
            h2,
            pending: Bytes::from(pending),
            asked: auth.asked().then(|| CertificateAsked {
                issuers: auth.seen().issuers,
            }),
        })
    }
}

impl tower::Service<Uri> for PinnedConnector {
    type Response = TokioIo<PinnedStream>;
    type Error = ConnectError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, ConnectError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), ConnectError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let this = self.clone();
        Box::pin(async move { this.connect(uri).await.map(TokioIo::new) })
    }
}

enum Io {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

/// A connection to a judged address.
pub struct PinnedStream {
    io: Io,
    remote: SocketAddr,
    h2: bool,
    /// Bytes already read from the connection (see `dial`), given to the first reads.
    pending: Bytes,
    asked: Option<CertificateAsked>,
}

impl Connection for PinnedStream {
    fn connected(&self) -> Connected {
        let mut c = Connected::new().extra(RemoteAddr(self.remote));
        if let Some(asked) = &self.asked {
            c = c.extra(asked.clone());
        }
        if self.h2 { c.negotiated_h2() } else { c }
    }
}

impl AsyncRead for PinnedStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.pending.is_empty() {
            let n = this.pending.len().min(buf.remaining());
            buf.put_slice(&this.pending.split_to(n));
            return Poll::Ready(Ok(()));
        }
        match &mut this.io {
            Io::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for PinnedStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match &mut self.get_mut().io {
            Io::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().io {
            Io::Plain(s) => Pin::new(s).poll_flush(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().io {
            Io::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

pub type HttpClient = Client<PinnedConnector, Full<Bytes>>;

/// The pooled client over the pinned connector. The timer makes hyper close idle connections after
/// the idle timeout on its own; without one it drops an expired connection only when its origin is
/// next used, and a pool of one integration's certificate (`clients`) may not be used again for long.
pub fn build(connector: PinnedConnector) -> HttpClient {
    Client::builder(TokioExecutor::new())
        .pool_timer(hyper_util::rt::TokioTimer::new())
        .pool_idle_timeout(Duration::from_secs(60))
        .pool_max_idle_per_host(32)
        .build(connector)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::WebhookConfig;

    fn connector() -> PinnedConnector {
        // A closed loopback port: nothing here resolves a name.
        let config = WebhookConfig {
            dns_servers: vec![crate::config::DnsServer(
                "127.0.0.1:9".parse().expect("addr"),
            )],
            ..WebhookConfig::default()
        };
        let guard = super::super::guard::UrlGuard::from_config(&config, None).expect("guard");
        PinnedConnector {
            policy: guard.policy,
            resolver: guard.resolver,
            tls: Arc::new(super::super::tls::CallbackTls::new(None).expect("tls")),
            dns_budget: guard.dns_budget,
            dials: Arc::default(),
            identity: None,
        }
    }

    /// Every attempt of a burst to a new HTTP/2 origin but the first waits in a connect future that
    /// hyper keeps for up to `SHARED_DIAL_GRACE`: a hundred new receivers at 16 attempts each were
    /// 1 500 of them, 6.4 KB each while the handshake's state was inline (8 MB of the peak RSS).
    /// The future is only built here, never polled: nothing is dialled.
    #[test]
    fn a_waiting_dial_holds_no_handshake_state() {
        let c = connector();
        let waiting = c
            .clone()
            .connect(Uri::from_static("https://127.0.0.1:9/hook"));
        let size = std::mem::size_of_val(&waiting);
        assert!(size <= 1024, "a connect future takes {size} bytes");
        let whole = std::mem::size_of_val(&c.dial(Uri::from_static("https://127.0.0.1:9/hook")));
        assert!(size * 4 < whole, "connect {size} bytes, dial {whole}");
    }
}
