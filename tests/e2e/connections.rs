//! The server's connections are bounded in time and number (issue #13, point 2): idle, slow-header,
//! slow-body and never-handshaking TLS connections are closed after their (shortened) timeouts; beyond
//! `server.max_connections` idle connections make room and new ones are closed rather than left
//! hanging, while `/healthz` keeps answering; a low file limit lowers the cap instead of letting the
//! process run out of descriptors; and shutdown is not held up by connections that never sent a
//! request. Everything through the real server on a real loopback port, with raw sockets where a
//! client library would be too polite.

use crate::common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::common::raw::{closed_within, connect, read_response};
use crate::common::{TestServer, client};
use bytes::Bytes;
use clicktermd::config::Config;
use http_body_util::Empty;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::AsyncWriteExt;

/// Sets the connection limits a test runs with; the rest of the configuration keeps its defaults.
fn limits(c: &mut Config, header: u64, body: u64, idle: u64, max_connections: usize) {
    c.server.header_read_timeout_secs = header;
    c.server.body_read_timeout_secs = body;
    c.server.idle_timeout_secs = idle;
    c.server.max_connections = max_connections;
}

/// How much later than its timeout a close may come on a loaded two-core machine.
const SLACK: Duration = Duration::from_secs(4);

/// Asserts that a close after `took` came from a timeout of `secs`: not before it, and not long after.
fn assert_timed_out(what: &str, took: Option<Duration>, secs: u64) {
    let timeout = Duration::from_secs(secs);
    let took = took.unwrap_or_else(|| panic!("{what}: still open {SLACK:?} after its {timeout:?}"));
    assert!(
        took >= timeout.mul_f64(0.9),
        "{what}: closed after {took:?}, before its timeout of {timeout:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_http1_connections_are_closed_after_the_header_read_timeout() {
    let server = TestServer::start_with(|c| limits(c, 1, 30, 30, 4096)).await;

    // A keep-alive connection after one request: hyper's header-read timer runs while it waits for
    // the next request's head, so it is the HTTP/1.1 idle timeout.
    let mut used = connect(server.addr).await;
    used.write_all(b"GET /healthz HTTP/1.1\r\nHost: clicktermd.test\r\n\r\n")
        .await
        .unwrap();
    let res = read_response(&mut used).await;
    assert_eq!(res.status(), 200, "{res:?}");
    assert_ne!(res.header("connection"), Some("close"), "{res:?}");
    // A connection that never sends a byte (HTTP version not yet known).
    let mut silent = connect(server.addr).await;

    let within = Duration::from_secs(1) + SLACK;
    let (used_took, silent_took) = tokio::join!(
        closed_within(&mut used, within),
        closed_within(&mut silent, within)
    );
    assert_timed_out("idle keep-alive connection", used_took, 1);
    assert_timed_out("silent connection", silent_took, 1);

    // The server itself is fine.
    let res = client().get(server.url("/healthz")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trickled_request_head_is_cut_off_after_the_header_read_timeout() {
    let server = TestServer::start_with(|c| limits(c, 1, 30, 30, 4096)).await;
    let stream = connect(server.addr).await;
    let (mut reader, mut writer) = stream.into_split();
    writer
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: clicktermd.test\r\n")
        .await
        .unwrap();
    // One more header line every 200 ms, for far longer than the timeout; stops when the server has
    // closed the connection (a write then fails).
    let trickle = tokio::spawn(async move {
        for i in 0..50 {
            tokio::time::sleep(Duration::from_millis(200)).await;
            if writer
                .write_all(format!("X-Slow-{i}: x\r\n").as_bytes())
                .await
                .is_err()
            {
                return;
            }
        }
        let _ = writer.write_all(b"\r\n").await;
        // Keep the write half open until the test ends.
        tokio::time::sleep(Duration::from_secs(30)).await;
    });
    let start = Instant::now();
    let mut answer = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(1) + SLACK, async {
        use tokio::io::AsyncReadExt;
        let _ = reader.read_to_end(&mut answer).await;
    })
    .await;
    assert_timed_out("trickled head", closed.ok().map(|()| start.elapsed()), 1);
    assert!(
        answer.is_empty(),
        "no answer to a head that never completed: {:?}",
        String::from_utf8_lossy(&answer)
    );
    trickle.abort();
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trickled_body_is_answered_408_after_the_body_read_timeout() {
    let server = TestServer::start_with(|c| limits(c, 30, 1, 30, 4096)).await;
    let stream = connect(server.addr).await;
    let (mut reader, mut writer) = stream.into_split();
    writer
        .write_all(
            b"POST /api/v1/login HTTP/1.1\r\nHost: clicktermd.test\r\n\
              Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"username\": ",
        )
        .await
        .unwrap();
    let start = Instant::now();
    // A byte every 200 ms: each arrives well within any per-read timeout, the whole body never does.
    let trickle = tokio::spawn(async move {
        for _ in 0..90 {
            tokio::time::sleep(Duration::from_millis(200)).await;
            if writer.write_all(b" ").await.is_err() {
                return;
            }
        }
        tokio::time::sleep(Duration::from_secs(30)).await;
    });
    let res = tokio::time::timeout(Duration::from_secs(1) + SLACK, read_response(&mut reader))
        .await
        .ok();
    assert_timed_out("trickled body", res.as_ref().map(|_| start.elapsed()), 1);
    let res = res.unwrap();
    assert_eq!(res.status(), 408, "{res:?}");
    assert_eq!(res.json()["code"], "request_timeout", "{res:?}");
    // Nothing more is read from that connection: it is closed.
    assert!(
        closed_within(&mut reader, SLACK).await.is_some(),
        "the connection stays open after the 408"
    );
    trickle.abort();
    server.stop().await;
}

/// A TLS server on a loopback port, with its certificate for `clicktermd.test`.
struct TlsServer {
    addr: std::net::SocketAddr,
    cert: rcgen::CertifiedKey<rcgen::KeyPair>,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
    _dir: tempfile::TempDir,
}

impl TlsServer {
    async fn start(tweak: impl FnOnce(&mut Config)) -> TlsServer {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let dir = tempfile::tempdir().unwrap();
        let cert = rcgen::generate_simple_self_signed(vec!["clicktermd.test".to_string()]).unwrap();
        let (cert_path, key_path) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
        std::fs::write(&cert_path, cert.cert.pem()).unwrap();
        std::fs::write(&key_path, cert.signing_key.serialize_pem()).unwrap();
        let mut config = Config::default();
        config.storage.data_dir = dir.path().join("data");
        config.server.tls_cert = Some(cert_path);
        config.server.tls_key = Some(key_path);
        tweak(&mut config);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        config.server.listen = addr;
        config.validate().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(clicktermd::run(config, listener, async move {
            let _ = stopped.await;
        }));
        let server = TlsServer {
            addr,
            cert,
            stop,
            task,
            _dir: dir,
        };
        // Healthy once an HTTP/2 request over TLS is answered.
        let start = Instant::now();
        loop {
            if let Ok((mut sender, _conn)) = server.http2().await
                && let Ok(res) = sender.send_request(healthz()).await
                && res.status() == 200
            {
                return server;
            }
            assert!(
                start.elapsed() < common::DEADLINE,
                "the TLS server never answered"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// An HTTP/2 connection (ALPN `h2`) and the task driving it, which ends when the server closes it.
    async fn http2(
        &self,
    ) -> Result<
        (
            hyper::client::conn::http2::SendRequest<Empty<Bytes>>,
            tokio::task::JoinHandle<hyper::Result<()>>,
        ),
        String,
    > {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.cert.cert.der().clone()).unwrap();
        let mut tls = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        tls.alpn_protocols = vec![b"h2".to_vec()];
        let tcp = connect(self.addr).await;
        let name = rustls_pki_types::ServerName::try_from("clicktermd.test").unwrap();
        let stream = tokio_rustls::TlsConnector::from(Arc::new(tls))
            .connect(name, tcp)
            .await
            .map_err(|e| e.to_string())?;
        assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
        let (sender, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
                .await
                .map_err(|e| e.to_string())?;
        Ok((sender, tokio::spawn(conn)))
    }

    async fn stop(self) {
        self.stop.send(()).unwrap();
        tokio::time::timeout(common::DEADLINE, self.task)
            .await
            .expect("the TLS server stops within the deadline")
            .unwrap()
            .unwrap();
    }
}

fn healthz() -> http::Request<Empty<Bytes>> {
    http::Request::get("https://clicktermd.test/healthz")
        .body(Empty::new())
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_handshakes_time_out_and_idle_http2_connections_get_goaway() {
    let server = TlsServer::start(|c| {
        limits(c, 30, 30, 2, 4096);
        c.server.tls_handshake_timeout_secs = 1;
    })
    .await;

    // A connection that never starts its handshake, and one that stops in the middle of its hello.
    let mut silent = connect(server.addr).await;
    let mut partial = connect(server.addr).await;
    partial
        .write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01])
        .await
        .unwrap();
    let within = Duration::from_secs(1) + SLACK;
    let (silent_took, partial_took) = tokio::join!(
        closed_within(&mut silent, within),
        closed_within(&mut partial, within)
    );
    assert_timed_out("TLS connection without a handshake", silent_took, 1);
    assert_timed_out("TLS connection stopped mid-handshake", partial_took, 1);

    // HTTP/2 over TLS, one request, then nothing: the server closes it after the idle timeout.
    let (mut sender, conn) = server.http2().await.unwrap();
    let res = sender.send_request(healthz()).await.unwrap();
    assert_eq!(res.status(), 200);
    let start = Instant::now();
    let ended = tokio::time::timeout(Duration::from_secs(2) + SLACK, conn).await;
    let ended = ended.ok().map(|joined| {
        joined
            .unwrap()
            .expect("a graceful close (GOAWAY), not a broken connection");
        start.elapsed()
    });
    assert_timed_out("idle HTTP/2 connection", ended, 2);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_make_room_when_max_connections_is_reached() {
    // Timeouts far longer than the test: only the cap can close anything.
    let server = TestServer::start_with(|c| limits(c, 600, 600, 600, 50)).await;
    let mut held = Vec::new();
    for _ in 0..60 {
        held.push(connect(server.addr).await);
    }
    let start = Instant::now();
    let res = tokio::time::timeout(
        Duration::from_secs(5),
        client().get(server.url("/healthz")).send(),
    )
    .await
    .expect("/healthz answers on a fresh connection while 60 are held")
    .unwrap();
    assert_eq!(res.status(), 200);
    eprintln!("/healthz answered after {:?}", start.elapsed());
    let mut open = 0;
    for stream in &mut held {
        if closed_within(stream, Duration::from_millis(20))
            .await
            .is_none()
        {
            open += 1;
        }
    }
    // /healthz's connection took a slot as well.
    assert!(
        open < 50,
        "{open} of 60 connections held open with max_connections = 50"
    );
    server.stop().await;
}

/// A login body in two halves: the first sent with the head, the second only when a test says.
const FIRST_HALF: &str = r#"{"username": "admin", "#;
const REST_OF_BODY: &str = r#""password": "wrong password"}"#;

/// Starts `POST /api/v1/login` with half its body: a request in flight, waiting for the rest. It asks
/// for `100 Continue`, which the server sends once the handler reads the body: then the request is
/// known to be in flight.
async fn request_in_flight(addr: std::net::SocketAddr) -> tokio::net::TcpStream {
    let mut stream = connect(addr).await;
    let head = format!(
        "POST /api/v1/login HTTP/1.1\r\nHost: clicktermd.test\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nExpect: 100-continue\r\n\r\n",
        FIRST_HALF.len() + REST_OF_BODY.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let interim = read_response(&mut stream).await;
    assert_eq!(interim.status(), 100, "{interim:?}");
    stream.write_all(FIRST_HALF.as_bytes()).await.unwrap();
    stream
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn beyond_max_connections_new_connections_are_closed_while_requests_are_in_flight() {
    let server = TestServer::start_with(|c| limits(c, 600, 600, 600, 20)).await;
    // Let the start-up health check's connection go.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut busy = Vec::new();
    for _ in 0..20 {
        busy.push(request_in_flight(server.addr).await);
    }

    // Newcomers are closed at once (after the short wait for a slot), not left hanging.
    for i in 0..5 {
        let mut extra = connect(server.addr).await;
        let _ = extra
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: clicktermd.test\r\n\r\n")
            .await;
        let took = closed_within(&mut extra, Duration::from_secs(3)).await;
        assert!(
            took.is_some(),
            "connection {i} beyond the cap was left open"
        );
    }
    let refused = tokio::time::timeout(
        Duration::from_secs(5),
        client().get(server.url("/healthz")).send(),
    )
    .await
    .expect("a client beyond the cap is refused quickly, not left waiting");
    assert!(refused.is_err(), "{refused:?}");
    // No request in flight was cut to make room.
    for (i, stream) in busy.iter_mut().enumerate() {
        assert!(
            closed_within(stream, Duration::from_millis(20))
                .await
                .is_none(),
            "request {i} in flight was closed"
        );
    }
    // One finishes and its connection goes: the next client is served.
    let mut done = busy.pop().unwrap();
    done.write_all(REST_OF_BODY.as_bytes()).await.unwrap();
    let res = read_response(&mut done).await;
    assert_eq!(res.status(), 401, "{res:?}");
    drop(done);
    let res = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            if let Ok(res) = client().get(server.url("/healthz")).send().await {
                return res;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("/healthz answers once a slot is free");
    assert_eq!(res.status(), 200);
    drop(busy);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_closes_connections_without_a_request_and_lets_requests_in_flight_finish() {
    let server = TestServer::start().await;
    let mut silent = connect(server.addr).await;
    let mut partial = connect(server.addr).await;
    partial
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: clicktermd.test\r\n")
        .await
        .unwrap();
    let mut busy = request_in_flight(server.addr).await;

    let stopping = tokio::spawn(server.stop());
    let within = Duration::from_secs(3);
    let (silent_took, partial_took) = tokio::join!(
        closed_within(&mut silent, within),
        closed_within(&mut partial, within)
    );
    assert!(
        silent_took.is_some(),
        "a silent connection holds up the shutdown"
    );
    assert!(
        partial_took.is_some(),
        "a half-sent head holds up the shutdown"
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        !stopping.is_finished(),
        "the server stopped with a request in flight"
    );
    busy.write_all(REST_OF_BODY.as_bytes()).await.unwrap();
    let res = read_response(&mut busy).await;
    assert_eq!(res.status(), 401, "{res:?}");
    assert_eq!(res.header("connection"), Some("close"), "{res:?}");
    stopping.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_low_file_limit_lowers_max_connections_and_the_server_never_runs_out() {
    // This process holds the connections: it needs more descriptors than the server may have.
    {
        use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
        let now = getrlimit(Resource::Nofile);
        if now.current.is_some_and(|soft| soft < 4096) {
            let soft = now.maximum.map_or(4096, |hard| hard.min(4096));
            let raised = Rlimit {
                current: Some(soft),
                maximum: now.maximum,
            };
            setrlimit(Resource::Nofile, raised).unwrap();
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("serve.log");
    // 300 descriptors: with webhooks.max_in_flight = 16 the reserve is 64 + 4 × 16 = 128, which
    // leaves 172 connections.
    let (serving, base) = common::serving::serve_under(
        &["prlimit", "--nofile=300:300", "--"],
        &dir.path().join("data"),
        &log,
        &[("CLICKTERMD_WEBHOOKS__MAX_IN_FLIGHT", "16")],
    )
    .await;
    let addr: std::net::SocketAddr = base.strip_prefix("http://").unwrap().parse().unwrap();
    let mut held = Vec::new();
    for _ in 0..400 {
        held.push(connect(addr).await);
    }
    let res = tokio::time::timeout(
        Duration::from_secs(5),
        client().get(format!("{base}/healthz")).send(),
    )
    .await
    .expect("/healthz answers while more connections are held than the file limit allows")
    .unwrap();
    assert_eq!(res.status(), 200);
    let text = serving.log();
    assert!(
        text.contains("server.max_connections lowered") && text.contains("max_connections=172"),
        "{text}"
    );
    assert!(!text.contains("Too many open files"), "{text}");
    assert!(!text.contains("accepting a connection failed"), "{text}");
    drop(held);
    assert!(serving.terminate().success());
}
