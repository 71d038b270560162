//! Serving connections: one accept loop for plain HTTP and TLS, hyper-util's `auto` builder (HTTP/1.1
//! and HTTP/2), and the limits that keep an internet-facing server bounded whatever its clients do.
//!
//! - **Connection budget.** At most `max_connections` connections are open at once: each connection
//!   task holds a slot of one semaphore. When the slots run out, the loop asks every connection with
//!   no request in flight to close (idle keep-alive connections, and ones that never sent a request,
//!   are what a flood of sockets consists of, while a request being served is never cut), then waits
//!   [`SLOT_WAIT`] for a slot; if none frees, new connections are closed as soon as they are accepted
//!   until one does, so the kernel's backlog does not fill with clients that would only time out.
//!   [`ConnectionBudget`] keeps `max_connections` below the process's file limit, with a reserve for
//!   the database and the dispatcher, so the process never runs out of descriptors.
//! - **Timeouts.** HTTP/1.1: hyper's `header_read_timeout`, which hyper starts whenever a connection is
//!   ready for a request head (accepted, or its previous response sent), so it bounds a trickled head
//!   and an idle keep-alive connection alike. Any connection: no first request within that time, or
//!   no request in flight for `idle_timeout`, and it is closed (HTTP/2 with GOAWAY). TLS: the
//!   handshake has its own limit. The body-read limit is the extractor's (`extract::ApiJson`).
//! - **Shutdown.** When `shutdown` resolves the loop stops accepting, every connection is asked to
//!   close gracefully (requests in flight finish), and `serve` returns once every slot is back.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, watch};
use tokio::time::Instant;
use tower::ServiceExt;

use super::head;
use crate::config::Config;

/// How long a new connection waits for a slot when all are taken (while idle connections close to
/// make room) before it is closed.
pub const SLOT_WAIT: Duration = Duration::from_millis(200);

/// How long a connection asked to close (idle, evicted or at shutdown) may take to finish once nothing
/// is in flight on it — an HTTP/2 GOAWAY round trip, a response still being written — before it is
/// dropped.
const CLOSE_GRACE: Duration = Duration::from_secs(5);

/// The longest pause between two tries after `accept` failed for want of descriptors or memory.
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);

/// Descriptors the process needs whatever its connections do: standard streams, the listener, the
/// runtime's epoll and wakers, the lock file, the database (ten SQLite connections, each with the
/// database and its log, and the shared memory index), and files read at start (certificates, DNS
/// configuration).
pub const FIXED_FDS: u64 = 64;

/// Descriptors per webhook attempt slot (`webhooks.max_in_flight`): the attempt's connection, the
/// sockets of its DNS lookup (A and AAAA at once), and about one idle pooled connection afterwards.
pub const FDS_PER_ATTEMPT: u64 = 4;

/// The fewest connections worth serving: a file limit that leaves fewer after the reserve is refused.
pub const MIN_CONNECTIONS: usize = 16;

/// How many connections the process can hold within its file limit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionBudget {
    /// The soft `RLIMIT_NOFILE` in force.
    pub file_limit: u64,
    /// Descriptors kept for everything but inbound connections.
    pub reserve: u64,
    /// The connection cap used: `server.max_connections`, or less if the file limit demands it.
    pub max_connections: usize,
    /// Whether `max_connections` is below the configured value.
    pub clamped: bool,
}

impl ConnectionBudget {
    /// Descriptors kept for the database, the dispatcher and the rest of the process.
    pub fn reserve(config: &Config) -> u64 {
        FIXED_FDS + FDS_PER_ATTEMPT * config.webhooks.max_in_flight as u64
    }

    /// The file limit `config` needs to serve `server.max_connections` connections.
    pub fn file_limit_needed(config: &Config) -> u64 {
        Self::reserve(config) + config.server.max_connections as u64
    }

    /// The budget within `file_limit`: the configured cap, clamped to what the reserve leaves; an
    /// error naming the keys if that is fewer than [`MIN_CONNECTIONS`].
    pub fn plan(file_limit: u64, config: &Config) -> Result<ConnectionBudget, String> {
        let reserve = Self::reserve(config);
        let room = usize::try_from(file_limit.saturating_sub(reserve)).unwrap_or(usize::MAX);
        if room < MIN_CONNECTIONS {
            return Err(format!(
                "server.max_connections: the file limit ({file_limit}; ulimit -n, or LimitNOFILE= \
                 under systemd) leaves room for {room} connections after the {reserve} descriptors \
                 kept for the database and webhooks.max_in_flight; at least {MIN_CONNECTIONS} are \
                 needed: raise the limit or lower webhooks.max_in_flight"
            ));
        }
        let wanted = config.server.max_connections;
        Ok(ConnectionBudget {
            file_limit,
            reserve,
            max_connections: wanted.min(room),
            clamped: wanted > room,
        })
    }
}

/// Raises the soft file limit to the hard one and returns the limit then in force. The soft limit is
/// often 1024 for the sake of `select(2)`, which nothing here uses, while the hard limit is what the
/// administrator allows; servers commonly raise it at start (Go does so in its runtime). Under the
/// systemd unit both are `LimitNOFILE=`, so this changes nothing there.
pub fn raise_file_limit() -> io::Result<u64> {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let now = getrlimit(Resource::Nofile);
    if now.current != now.maximum {
        setrlimit(
            Resource::Nofile,
            Rlimit {
                current: now.maximum,
                maximum: now.maximum,
            },
        )?;
    }
    // `None` is "unlimited".
    Ok(getrlimit(Resource::Nofile).current.unwrap_or(u64::MAX))
}

/// The connection limits, from the configuration and the budget.
#[derive(Debug, Clone)]
pub struct Limits {
    pub header_read_timeout: Duration,
    pub idle_timeout: Duration,
    pub tls_handshake_timeout: Duration,
    pub max_connections: usize,
}

impl Limits {
    pub fn new(config: &Config, budget: &ConnectionBudget) -> Limits {
        let s = &config.server;
        Limits {
            header_read_timeout: Duration::from_secs(s.header_read_timeout_secs),
            idle_timeout: Duration::from_secs(s.idle_timeout_secs),
            tls_handshake_timeout: Duration::from_secs(s.tls_handshake_timeout_secs),
            max_connections: budget.max_connections,
        }
    }
}

/// The hyper builders: protocol by detection (plain TCP), or as ALPN chose (TLS).
struct Builders {
    detect: auto::Builder<TokioExecutor>,
    http1: auto::Builder<TokioExecutor>,
    http2: auto::Builder<TokioExecutor>,
}

impl Builders {
    fn new(limits: &Limits) -> Builders {
        let mut detect = auto::Builder::new(TokioExecutor::new());
        detect
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(limits.header_read_timeout)
            .max_buf_size(head::MAX_BUFFERED_HEAD);
        detect
            .http2()
            .max_header_list_size(head::MAX_BUFFERED_HEAD as u32);
        Builders {
            http1: detect.clone().http1_only(),
            http2: detect.clone().http2_only(),
            detect,
        }
    }
}

/// What every connection task shares with the accept loop.
struct Shared {
    router: Router,
    builders: Builders,
    limits: Limits,
    /// Signalled when the slots run out: connections with nothing in flight close.
    pressure: Notify,
    /// Set once at shutdown.
    stop: watch::Receiver<bool>,
}

/// Serves `router` on `listener` until `shutdown` resolves, then lets requests in flight finish.
/// With `tls`, every connection is a rustls handshake first (HTTP/2 offered by ALPN).
pub async fn serve(
    listener: TcpListener,
    router: Router,
    tls: Option<Arc<rustls::ServerConfig>>,
    limits: Limits,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let max = limits.max_connections;
    let slots = Arc::new(Semaphore::new(max));
    let (stop_tx, stop) = watch::channel(false);
    let shared = Arc::new(Shared {
        router,
        builders: Builders::new(&limits),
        limits,
        pressure: Notify::new(),
        stop,
    });
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    // Connections closed at once because no slot was free, in the current episode.
    let mut shed: Option<u64> = None;
    let mut last_pressure = Instant::now();
    // Failed accepts in a row (out of descriptors and the like): the pause before the next try grows.
    let mut accept_failures = 0u64;
    tokio::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) if is_per_connection_error(&e) => continue,
                Err(e) => {
                    accept_failures += 1;
                    if accept_failures == 1 {
                        tracing::error!(error = %e, "accepting a connection failed; retrying with a \
                            backoff (logged once until accepting works again)");
                    }
                    // Descriptors or memory may come back from connections that can close.
                    shared.pressure.notify_waiters();
                    let pause = (Duration::from_millis(10) * 2u32.pow(accept_failures.min(7) as u32))
                        .min(ACCEPT_BACKOFF_MAX);
                    tokio::select! {
                        () = tokio::time::sleep(pause) => continue,
                        () = &mut shutdown => break,
                    }
                }
            },
            () = &mut shutdown => break,
        };
        if accept_failures > 0 {
            tracing::info!(
                failures = accept_failures,
                "accepting connections works again"
            );
            accept_failures = 0;
        }
        let permit = match slots.clone().try_acquire_owned() {
            Ok(permit) => Some(permit),
            Err(_) if shed.is_some() => None,
            Err(_) => {
                shared.pressure.notify_waiters();
                last_pressure = Instant::now();
                tokio::select! {
                    waited = tokio::time::timeout(SLOT_WAIT, slots.clone().acquire_owned()) => {
                        waited.ok().and_then(Result::ok)
                    }
                    () = &mut shutdown => break,
                }
            }
        };
        let Some(permit) = permit else {
            let closed = shed.get_or_insert_with(|| {
                tracing::warn!(
                    max_connections = max,
                    "server.max_connections reached and no connection closed in time: closing new \
                     connections at once until one does"
                );
                0
            });
            *closed += 1;
            if last_pressure.elapsed() >= SLOT_WAIT {
                shared.pressure.notify_waiters();
                last_pressure = Instant::now();
            }
            drop(tcp);
            continue;
        };
        if let Some(closed) = shed.take() {
            tracing::info!(
                closed,
                "connections fit within server.max_connections again"
            );
        }
        // Responses are written whole; do not let Nagle's algorithm hold their last segment back.
        let _ = tcp.set_nodelay(true);
        let shared = shared.clone();
        match &acceptor {
            None => {
                tokio::spawn(async move {
                    connection(tcp, peer, &shared.builders.detect, &shared).await;
                    drop(permit);
                });
            }
            Some(acceptor) => {
                let handshake = acceptor.accept(tcp);
                tokio::spawn(async move {
                    tls_connection(handshake, peer, &shared, permit).await;
                });
            }
        }
    }
    drop(listener);
    let _ = stop_tx.send(true);
    // Every connection task holds a slot until it ends: all slots back means every connection ended.
    let all = u32::try_from(max).unwrap_or(u32::MAX);
    let _ = slots.acquire_many(all).await;
    Ok(())
}

/// Errors of `accept` that concern only the connection being accepted: go on at once.
fn is_per_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

/// The TLS handshake within its limit (dropped at shutdown or under pressure: nothing was asked of it
/// yet), then HTTP as ALPN chose.
async fn tls_connection(
    handshake: tokio_rustls::Accept<tokio::net::TcpStream>,
    peer: SocketAddr,
    shared: &Shared,
    permit: OwnedSemaphorePermit,
) {
    let mut stop = shared.stop.clone();
    let stream = tokio::select! {
        done = tokio::time::timeout(shared.limits.tls_handshake_timeout, handshake) => match done {
            Ok(Ok(stream)) => stream,
            Ok(Err(e)) => return tracing::debug!(client = %peer, error = %e, "TLS handshake failed"),
            Err(_) => return tracing::debug!(client = %peer, "TLS handshake timed out"),
        },
        () = shared.pressure.notified() => return,
        _ = stop.wait_for(|stop| *stop) => return,
    };
    let builder = match stream.get_ref().1.alpn_protocol() {
        Some(b"h2") => &shared.builders.http2,
        _ => &shared.builders.http1,
    };
    connection(stream, peer, builder, shared).await;
    drop(permit);
}

/// One connection, from its first byte to its end: hyper serves it; this task closes it when it has
/// been idle too long, when the slots run out and nothing is in flight on it, or at shutdown.
async fn connection<I>(
    io: I,
    peer: SocketAddr,
    builder: &auto::Builder<TokioExecutor>,
    shared: &Shared,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let activity = Arc::new(Activity::new());
    let service = {
        let (router, activity) = (shared.router.clone(), activity.clone());
        hyper::service::service_fn(move |mut req: http::Request<Incoming>| {
            req.extensions_mut().insert(ConnectInfo(peer));
            let in_flight = activity.begin();
            let response = router.clone().oneshot(req);
            async move {
                // Once the handler has answered, its body may still be streaming (an export takes
                // minutes): the connection is not idle until it has been sent.
                let response = response.await;
                let streaming = in_flight.streaming();
                response.map(|r| {
                    r.map(|body| Sending {
                        body,
                        _streaming: streaming,
                    })
                })
            }
        })
    };
    let conn = builder.serve_connection(TokioIo::new(io), service);
    tokio::pin!(conn);
    let mut stop = shared.stop.clone();
    let limits = &shared.limits;
    // Since when the connection has been asked to close.
    let mut closing: Option<Instant> = None;
    loop {
        // The task does not hear of each request; it wakes at the deadline the connection's state
        // gives, or within one idle timeout from now, whichever is first, and looks again. A deadline
        // that requests move later is then seen in time: a request that starts after this point ends
        // later than now, so its idle deadline is later than `now + idle_timeout`.
        let wake = match closing {
            None => {
                let soon = Instant::now() + limits.idle_timeout;
                activity.idle_deadline(limits).map_or(soon, |d| d.min(soon))
            }
            Some(since) => since + CLOSE_GRACE,
        };
        let close = tokio::select! {
            biased;
            served = conn.as_mut() => {
                if let Err(e) = served {
                    tracing::debug!(client = %peer, error = %e, "connection ended with an error");
                }
                return;
            }
            () = tokio::time::sleep_until(wake) => match closing {
                None => activity.idle_deadline(limits).is_some_and(|d| d <= Instant::now()),
                Some(_) if activity.in_flight() => {
                    // A request still runs (at shutdown): let it finish, then grant the grace again.
                    closing = Some(Instant::now());
                    false
                }
                Some(_) => {
                    return tracing::debug!(client = %peer, "connection dropped: still open after being asked to close");
                }
            },
            () = shared.pressure.notified(), if closing.is_none() => !activity.busy(),
            _ = stop.wait_for(|stop| *stop), if closing.is_none() => true,
        };
        if close {
            if !activity.used() {
                // No request ever reached the service: nothing to finish or answer.
                return;
            }
            conn.as_mut().graceful_shutdown();
            closing = Some(Instant::now());
        }
    }
}

/// What the connection task needs to know about a connection's requests. Updated by the service on
/// every request (two atomic operations and a clock read), read by the task only when it wakes.
struct Activity {
    opened: Instant,
    /// Requests being handled.
    in_flight: AtomicUsize,
    /// Responses whose head is sent and whose body is still being sent.
    streaming: AtomicUsize,
    used: AtomicBool,
    /// When the last request ended, in milliseconds since `opened`.
    last_end_ms: AtomicU64,
}

impl Activity {
    fn new() -> Activity {
        Activity {
            opened: Instant::now(),
            in_flight: AtomicUsize::new(0),
            streaming: AtomicUsize::new(0),
            used: AtomicBool::new(false),
            last_end_ms: AtomicU64::new(0),
        }
    }

    fn begin(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        self.used.store(true, Ordering::Release);
        InFlight(self.clone())
    }

    fn in_flight(&self) -> bool {
        self.in_flight.load(Ordering::Acquire) > 0
    }

    /// A request handled or a response body being sent: the connection is not idle, and is not
    /// closed to make room. (At shutdown only the handling is waited for: a body still streaming
    /// after the grace is cut, so a long export cannot hold a stop.)
    fn busy(&self) -> bool {
        self.in_flight() || self.streaming.load(Ordering::Acquire) > 0
    }

    /// Notes now as the end of the latest request (the idle time counts from there).
    fn mark_end(&self) {
        let ms = u64::try_from(self.opened.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_end_ms.store(ms, Ordering::Release);
    }

    fn used(&self) -> bool {
        self.used.load(Ordering::Acquire)
    }

    /// When the connection is to close for idleness: its first request is due within the header-read
    /// limit, a later one within the idle limit of the last one's end. `None` while a request runs.
    fn idle_deadline(&self, limits: &Limits) -> Option<Instant> {
        if self.busy() {
            return None;
        }
        if !self.used() {
            return Some(self.opened + limits.header_read_timeout);
        }
        let last_end = Duration::from_millis(self.last_end_ms.load(Ordering::Acquire));
        Some(self.opened + last_end + limits.idle_timeout)
    }
}

/// A response body on its way out, marked [`Streaming`] until it ends (or is dropped, when the client
/// goes away).
struct Sending {
    body: axum::body::Body,
    _streaming: Streaming,
}

/// A response body being sent; its drop marks the end of the request.
struct Streaming(Arc<Activity>);

impl Drop for Streaming {
    fn drop(&mut self) {
        let a = &self.0;
        a.mark_end();
        a.streaming.fetch_sub(1, Ordering::AcqRel);
    }
}

impl http_body::Body for Sending {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        std::pin::Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

/// A request on its way through the service; its drop marks the request's end.
struct InFlight(Arc<Activity>);

impl InFlight {
    /// The handler has answered: the request goes on as its body's [`Streaming`] (counted before
    /// the handling ends, so the connection never looks idle in between).
    fn streaming(self) -> Streaming {
        self.0.streaming.fetch_add(1, Ordering::AcqRel);
        Streaming(self.0.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let a = &self.0;
        a.mark_end();
        a.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(max_connections: usize, max_in_flight: usize) -> Config {
        let mut c = Config::default();
        c.server.max_connections = max_connections;
        c.webhooks.max_in_flight = max_in_flight;
        c
    }

    #[test]
    fn the_budget_keeps_a_reserve_and_clamps_the_cap() {
        let reserve = FIXED_FDS + FDS_PER_ATTEMPT * 256;
        // file limit, max_connections, max_in_flight → Some((cap, clamped)), or None: refused
        type Case = (u64, usize, usize, Option<(usize, bool)>);
        let cases: &[Case] = &[
            (65_536, 4096, 256, Some((4096, false))),
            (reserve + 4096, 4096, 256, Some((4096, false))),
            (reserve + 4095, 4096, 256, Some((4095, true))),
            (1024, 4096, 16, Some((1024 - 64 - 64, true))),
            (1024, 4096, 256, None),
            (
                reserve + MIN_CONNECTIONS as u64,
                4096,
                256,
                Some((MIN_CONNECTIONS, true)),
            ),
            (reserve + MIN_CONNECTIONS as u64 - 1, 4096, 256, None),
            (u64::MAX, 4096, 256, Some((4096, false))),
        ];
        for &(limit, max, in_flight, want) in cases {
            let got = ConnectionBudget::plan(limit, &config(max, in_flight));
            match want {
                Some((cap, clamped)) => {
                    let b = got.unwrap_or_else(|e| panic!("{limit} {max} {in_flight}: {e}"));
                    assert_eq!(
                        (b.max_connections, b.clamped),
                        (cap, clamped),
                        "{limit} {max}"
                    );
                    assert!(b.max_connections as u64 + b.reserve <= limit);
                }
                None => {
                    let e = got.expect_err("refused");
                    assert!(e.contains("server.max_connections"), "{e}");
                    assert!(e.contains("webhooks.max_in_flight"), "{e}");
                }
            }
        }
        assert_eq!(
            ConnectionBudget::file_limit_needed(&Config::default()),
            4096 + reserve
        );
    }
}
