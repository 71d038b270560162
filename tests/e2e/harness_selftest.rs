//! Proves the test harness itself through real clients: the DNS server (`common::dns`) answers hickory-resolver
//! over UDP and TCP and its answers change while it runs; the webhook receiver (`common::receiver`) speaks TLS
//! with a certificate from our CA, checks signatures on its own and behaves as its paths say. Everything on
//! loopback.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

use crate::common::DEADLINE;
use crate::common::dns::DnsServer;
use crate::common::receiver::{Receiver, signature, unix_now};
use hickory_resolver::Resolver;
use hickory_resolver::config::{
    ConnectionConfig, LookupIpStrategy, NameServerConfig, ResolverConfig, ResolverOpts,
};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use reqwest::StatusCode;

const SECRET: &str = "whsec_selftest_0123456789";
const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
const LOOPBACK_2: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
const LOOPBACK_V6: IpAddr = IpAddr::V6(Ipv6Addr::LOCALHOST);

/// A resolver that asks only `server`, over UDP or TCP, for both A and AAAA.
fn resolver(server: SocketAddr, tcp: bool) -> Resolver<TokioRuntimeProvider> {
    let mut connection = if tcp {
        ConnectionConfig::tcp()
    } else {
        ConnectionConfig::udp()
    };
    connection.port = server.port();
    let config = ResolverConfig::from_name_servers(vec![NameServerConfig::new(
        server.ip(),
        true,
        vec![connection],
    )]);
    let mut options = ResolverOpts::default();
    // The 0.26 default is Ipv6AndIpv4; say what we mean.
    options.ip_strategy = LookupIpStrategy::Ipv4AndIpv6;
    options.timeout = Duration::from_secs(2);
    options.attempts = 1;
    Resolver::builder_with_config(config, TokioRuntimeProvider::default())
        .with_options(options)
        .build()
        .expect("resolver")
}

async fn lookup(resolver: &Resolver<TokioRuntimeProvider>, name: &str) -> Vec<IpAddr> {
    let mut ips: Vec<IpAddr> = resolver
        .lookup_ip(name)
        .await
        .unwrap_or_else(|e| panic!("resolve {name}: {e}"))
        .iter()
        .collect();
    ips.sort();
    ips
}

#[tokio::test]
async fn dns_server_answers_and_changes_its_answers() {
    let dns = DnsServer::start().await;
    assert!(dns.addr.ip().is_loopback());
    dns.set("a.test", &[LOCALHOST]);

    for tcp in [false, true] {
        let fresh = resolver(dns.addr, tcp);
        assert_eq!(lookup(&fresh, "a.test").await, [LOCALHOST], "tcp={tcp}");
    }

    // One resolver across the change: TTL 0 means its cache does not hide the new answer (rebinding).
    let same = resolver(dns.addr, false);
    assert_eq!(lookup(&same, "a.test.").await, [LOCALHOST]);
    dns.set("a.test", &[LOOPBACK_2, LOOPBACK_V6]);
    assert_eq!(lookup(&same, "a.test").await, [LOOPBACK_2, LOOPBACK_V6]);
    assert_eq!(
        lookup(&resolver(dns.addr, true), "a.test").await,
        [LOOPBACK_2, LOOPBACK_V6]
    );

    // Unknown names in the zone, and a name after its records were removed: NXDOMAIN.
    let err = same.lookup_ip("nope.test").await.expect_err("unknown name");
    assert!(err.is_nx_domain(), "{err:?}");
    dns.set("gone.test", &[LOCALHOST]);
    assert_eq!(lookup(&same, "gone.test").await, [LOCALHOST]);
    dns.remove("gone.test");
    let err = same.lookup_ip("gone.test").await.expect_err("removed name");
    assert!(err.is_nx_domain(), "{err:?}");
    // The negative answer is not cached either.
    dns.set("gone.test", &[LOOPBACK_2]);
    assert_eq!(lookup(&same, "gone.test").await, [LOOPBACK_2]);

    // Deeper names work too.
    dns.set("x.y.rebind.test", &[LOOPBACK_V6]);
    assert_eq!(lookup(&same, "x.y.rebind.test").await, [LOOPBACK_V6]);
}

#[tokio::test]
async fn dns_server_stops_when_dropped() {
    let dns = DnsServer::start().await;
    dns.set("a.test", &[LOCALHOST]);
    let addr = dns.addr;
    let r = resolver(addr, true);
    assert_eq!(lookup(&r, "a.test").await, [LOCALHOST]);
    drop(dns);
    // TCP shows it plainly: the listener is closed.
    let mut refused = false;
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(addr).await.is_err() {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(refused, "the DNS TCP listener still accepts after drop");
    assert!(resolver(addr, false).lookup_ip("a.test").await.is_err());
}

/// A client that trusts only the receiver's CA, pins `receiver.test` and `x.receiver.test` to it, and never
/// follows redirects.
fn client_for(rx: &Receiver) -> reqwest::Client {
    builder_for(rx).build().expect("client")
}

fn builder_for(rx: &Receiver) -> reqwest::ClientBuilder {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let ca = reqwest::Certificate::from_pem(rx.ca_pem.as_bytes()).expect("CA PEM");
    reqwest::Client::builder()
        .no_proxy()
        .tls_certs_only([ca])
        .resolve("receiver.test", rx.addr())
        .resolve("x.receiver.test", rx.addr())
        .redirect(reqwest::redirect::Policy::none())
        .timeout(DEADLINE)
}

const BODY: &str =
    r#"{"eventType":"CLICKWRAP_EVENT_VERIFIED","data":{"clickwrapEventId":"evt_1"}}"#;

/// POSTs `body` to `url` as a webhook signed with `secret` at `timestamp`.
async fn post_signed(
    client: &reqwest::Client,
    url: &str,
    secret: &str,
    timestamp: u64,
    body: &str,
) -> reqwest::Response {
    client
        .post(url)
        .header("Content-Type", "application/json")
        .header("X-Clickterm-Timestamp", timestamp.to_string())
        .header("X-Clickterm-Signature", signature(secret, timestamp, body))
        .body(body.to_string())
        .send()
        .await
        .unwrap_or_else(|e| panic!("POST {url}: {e}"))
}

#[tokio::test]
async fn receiver_verifies_signatures_and_records_requests() {
    let rx = Receiver::start(SECRET).await;
    assert!(rx.ca_file.is_file());
    assert!(
        std::fs::read_to_string(&rx.ca_file)
            .unwrap()
            .contains("BEGIN CERTIFICATE")
    );
    let client = client_for(&rx);
    let before = unix_now() as f64;

    let res = post_signed(
        &client,
        &rx.url("receiver.test", "/ok"),
        SECRET,
        unix_now(),
        BODY,
    )
    .await;
    assert_eq!(res.status(), StatusCode::OK);
    let json: serde_json::Value = res.json().await.unwrap();
    assert_eq!(json, serde_json::json!({"received": true}));

    let got = rx.wait_for(1, DEADLINE).await;
    let r = &got[0];
    assert_eq!(r.method, "POST");
    assert_eq!(r.path, "/ok");
    assert_eq!(r.body, BODY);
    assert_eq!(r.json()["data"]["clickwrapEventId"], "evt_1");
    assert!(r.signature_valid, "{r:?}");
    assert!(r.contract_errors.is_empty(), "{r:?}");
    assert_eq!(r.sni.as_deref(), Some("receiver.test"));
    assert_eq!(r.header("Content-Type"), Some("application/json"));
    assert_eq!(
        r.header("host"),
        Some(&*format!("receiver.test:{}", rx.port))
    );
    assert!(r.headers.keys().all(|k| *k == k.to_lowercase()), "{r:?}");
    assert!(
        r.at >= before - 1.0 && r.at <= unix_now() as f64 + 1.0,
        "{r:?}"
    );
    assert!(r.remote.starts_with("127.0.0.1:"), "{r:?}");

    // Signed with another secret: 401, recorded as invalid.
    let res = post_signed(
        &client,
        &rx.url("receiver.test", "/ok"),
        "wrong",
        unix_now(),
        BODY,
    )
    .await;
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    // (Reading each body to its end lets the client reuse the connection.)
    res.text().await.unwrap();
    // Correctly signed but 301 s old: outside the skew window.
    let stale = unix_now() - 301;
    let res = post_signed(
        &client,
        &rx.url("receiver.test", "/ok"),
        SECRET,
        stale,
        BODY,
    )
    .await;
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    res.text().await.unwrap();
    // Unsigned, and the wrong content type.
    let res = client
        .post(rx.url("receiver.test", "/ok"))
        .header("Content-Type", "text/plain")
        .body(BODY)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    res.text().await.unwrap();

    let got = rx.wait_for(4, DEADLINE).await;
    assert_eq!(got.len(), 4);
    assert!(!got[1].signature_valid);
    assert!(
        got[1]
            .contract_errors
            .iter()
            .any(|e| e.contains("does not match")),
        "{:?}",
        got[1]
    );
    assert!(!got[2].signature_valid);
    assert!(
        got[2]
            .contract_errors
            .iter()
            .any(|e| e.contains("from now")),
        "{:?}",
        got[2]
    );
    assert!(!got[3].signature_valid);
    assert_eq!(got[3].contract_errors.len(), 3, "{:?}", got[3]);

    // Keep-alive: the pooled connection was reused, so every request came from the same client port.
    assert!(got.iter().all(|r| r.remote == got[0].remote), "{got:?}");

    // An IP-literal URL: verified against the IP SAN, and no SNI.
    let res = post_signed(
        &client,
        &rx.url("127.0.0.1", "/ok"),
        SECRET,
        unix_now(),
        BODY,
    )
    .await;
    assert_eq!(res.status(), StatusCode::OK);
    let got = rx.wait_for(5, DEADLINE).await;
    assert_eq!(got[4].sni, None);
    assert!(got[4].signature_valid);
}

#[tokio::test]
async fn receiver_paths_behave_as_documented() {
    let rx = Receiver::start(SECRET).await;
    let client = client_for(&rx);
    let url = |path: &str| rx.url("receiver.test", path);

    for (code, status) in [
        (201, StatusCode::CREATED),
        (204, StatusCode::NO_CONTENT),
        (400, StatusCode::BAD_REQUEST),
        (500, StatusCode::INTERNAL_SERVER_ERROR),
    ] {
        let res = post_signed(
            &client,
            &url(&format!("/status/{code}")),
            SECRET,
            unix_now(),
            BODY,
        )
        .await;
        assert_eq!(res.status(), status);
        let text = res.text().await.unwrap();
        assert_eq!(text.is_empty(), code == 204, "{code}: {text:?}");
    }

    let res = post_signed(&client, &url("/redirect"), SECRET, unix_now(), BODY).await;
    assert_eq!(res.status(), StatusCode::FOUND);
    assert_eq!(res.headers()["location"], "/redirect-target");
    drop(res);

    let start = Instant::now();
    let res = post_signed(&client, &url("/slow/300"), SECRET, unix_now(), BODY).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert!(start.elapsed() >= Duration::from_millis(300));

    let got = rx.wait_for(6, DEADLINE).await;
    let paths: Vec<&str> = got.iter().map(|r| r.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "/status/201",
            "/status/204",
            "/status/400",
            "/status/500",
            "/redirect",
            "/slow/300"
        ]
    );
    assert!(rx.requests_to("/redirect-target").is_empty());
    assert!(got.iter().all(|r| r.signature_valid), "{got:?}");
}

#[tokio::test]
async fn receiver_hangs_trickles_and_floods_without_blocking_others() {
    let rx = Receiver::start(SECRET).await;
    let url = |path: &str| rx.url("receiver.test", path);

    // /hang never answers: a 1 s client timeout fires.
    let impatient = builder_for(&rx)
        .timeout(Duration::from_secs(1))
        .build()
        .unwrap();
    let start = Instant::now();
    let err = impatient
        .post(url("/hang"))
        .header("Content-Type", "application/json")
        .body(BODY)
        .send()
        .await
        .expect_err("/hang must not answer");
    assert!(err.is_timeout(), "{err:?}");
    let waited = start.elapsed();
    assert!(
        waited >= Duration::from_secs(1) && waited < Duration::from_secs(5),
        "{waited:?}"
    );
    assert_eq!(
        rx.requests_to("/hang").len(),
        1,
        "the hung request was recorded"
    );

    // While another /hang is pending, other requests are answered at once.
    let hang = tokio::spawn({
        let client = client_for(&rx);
        let url = url("/hang");
        async move { client.post(url).body(BODY).send().await }
    });
    let client = client_for(&rx);
    for _ in 0..3 {
        let start = Instant::now();
        let res = post_signed(&client, &url("/ok"), SECRET, unix_now(), BODY).await;
        assert_eq!(res.status(), StatusCode::OK);
        assert!(start.elapsed() < Duration::from_secs(2));
    }
    hang.abort();

    // /huge: the headers announce 50 MB; read 64 KiB of it and hang up.
    let mut res = client.get(url("/huge")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.content_length(), Some(50_000_000));
    let mut read = 0;
    while read < 64 * 1024 {
        let chunk = res.chunk().await.unwrap().expect("more of the huge body");
        read += chunk.len();
    }
    drop(res);

    // /trickle: headers at once (no Content-Length), then a byte every 0.2 s.
    let start = Instant::now();
    let mut res = client.get(url("/trickle")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.content_length(), None);
    assert!(start.elapsed() < Duration::from_secs(2));
    let mut bytes = 0;
    let first = Instant::now();
    while bytes < 4 {
        bytes += res.chunk().await.unwrap().expect("a trickled byte").len();
    }
    let spread = first.elapsed();
    assert!(
        spread >= Duration::from_millis(400) && spread < Duration::from_secs(5),
        "4 bytes in {spread:?}"
    );
    drop(res);

    // The receiver is still fine afterwards.
    let res = post_signed(&client, &url("/ok"), SECRET, unix_now(), BODY).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert!(rx.stderr_text().is_empty(), "{}", rx.stderr_text());
}

#[tokio::test]
async fn receiver_on_another_loopback_address_and_killed_on_drop() {
    let rx = Receiver::start_on(LOOPBACK_2, SECRET).await;
    assert_eq!(rx.addr().ip(), LOOPBACK_2);
    let client = client_for(&rx);
    // The wildcard name of the certificate.
    let res = post_signed(
        &client,
        &rx.url("x.receiver.test", "/ok"),
        SECRET,
        unix_now(),
        BODY,
    )
    .await;
    assert_eq!(res.status(), StatusCode::OK);
    let got = rx.wait_for(1, DEADLINE).await;
    assert_eq!(got[0].sni.as_deref(), Some("x.receiver.test"));
    assert!(got[0].remote.starts_with("127."), "{:?}", got[0]);

    // A name outside the certificate fails verification.
    let other = builder_for(&rx)
        .resolve("other.test", rx.addr())
        .build()
        .unwrap();
    let err = other
        .post(rx.url("other.test", "/ok"))
        .send()
        .await
        .expect_err("other.test is not in the certificate");
    assert!(err.is_connect(), "{err:?}");
    assert_eq!(rx.requests().len(), 1);

    let addr = rx.addr();
    drop(rx);
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "the receiver still listens after drop"
    );
}
