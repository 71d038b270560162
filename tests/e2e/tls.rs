//! Serving HTTPS directly (`server.tls_cert` / `server.tls_key`): a real rustls server on a real port,
//! a client that trusts only the test certificate, the session cookie marked `Secure`, HTTP/2 by ALPN.

use std::time::{Duration, Instant};

use clicktermd::config::Config;
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_https_with_secure_cookies() {
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
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(clicktermd::run(config, listener, async move {
        let _ = stopped.await;
    }));

    let client = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_der(cert.cert.der()).unwrap()])
        .resolve("clicktermd.test", addr)
        .build()
        .unwrap();
    let base = format!("https://clicktermd.test:{}", addr.port());
    let deadline = Instant::now() + Duration::from_secs(30);
    let health = loop {
        match client.get(format!("{base}/healthz")).send().await {
            Ok(res) => break res,
            Err(e) => {
                assert!(
                    Instant::now() < deadline,
                    "the TLS server never answered: {e}"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    assert_eq!(health.status(), reqwest::StatusCode::OK);
    assert_eq!(
        health.version(),
        reqwest::Version::HTTP_2,
        "HTTP/2 is offered by ALPN"
    );

    // Plain HTTP on the TLS port gets no answer from the application.
    let plain = reqwest::Client::new()
        .get(format!("http://127.0.0.1:{}/healthz", addr.port()))
        .send()
        .await;
    assert!(plain.is_err() || plain.unwrap().status() != reqwest::StatusCode::OK);

    let password = std::fs::read_to_string(dir.path().join("data/initial-admin-password")).unwrap();
    let res = client
        .post(format!("{base}/api/v1/login"))
        .json(&json!({"username": "admin", "password": password.trim()}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), reqwest::StatusCode::OK);
    let cookie = res
        .headers()
        .get("set-cookie")
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    for attribute in ["HttpOnly", "SameSite=Strict", "Secure"] {
        assert!(cookie.contains(attribute), "{cookie} lacks {attribute}");
    }
    let session = cookie.split(';').next().unwrap().to_string();
    let me: Value = client
        .get(format!("{base}/api/v1/session"))
        .header("cookie", session)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(me["username"], "admin");

    stop.send(()).unwrap();
    server.await.unwrap().unwrap();
}
