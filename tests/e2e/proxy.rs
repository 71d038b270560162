//! Behind a real reverse proxy (Debian's nginx, started by the test on loopback): the consent record
//! and the limits see the client's address, not the proxy's; what a client writes into the
//! forwarding headers itself is never believed; and `X-Forwarded-Proto: https` from the proxy makes
//! the session cookie `Secure`. nginx listens on 127.0.0.2 and connects to clicktermd from
//! 127.0.0.3 (`proxy_bind`), the only trusted proxy; clients connect from 127.0.0.5.

use crate::common;
use crate::common::Call;

use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;

use crate::common::TestServer;
use crate::common::nginx::Nginx;
use reqwest::StatusCode;
use serde_json::{Value, json};

const PROXY_LISTEN: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);
const PROXY_SOURCE: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 3);
const CLIENT: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 5);

/// nginx on 127.0.0.2 in front of `upstream`, connecting to it from 127.0.0.3.
fn start_nginx(dir: &Path, upstream: &str) -> Nginx {
    Nginx::start(dir, IpAddr::V4(PROXY_LISTEN), |_| {
        format!(
            "    location / {{
      proxy_pass {upstream};
      proxy_bind {PROXY_SOURCE};
      proxy_set_header Host $http_host;
      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
      proxy_set_header X-Forwarded-Proto https;
    }}"
        )
    })
}

/// A client whose connections come from 127.0.0.5.
fn client_from_127_0_0_5(cookies: bool) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(IpAddr::V4(CLIENT))
        .cookie_store(cookies)
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_a_trusted_proxy_the_client_address_is_the_clients_own() {
    let server = TestServer::start_with(|c| {
        c.server.trusted_proxies = vec![format!("{PROXY_SOURCE}/32").parse().unwrap()];
        // One SDK request a second per address, so the limit shows whose address it counts.
        c.limits.sdk_requests_per_sec_per_address = 1;
        c.limits.sdk_burst_per_address = 2;
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let nginx = start_nginx(dir.path(), &server.url(""));
    let proxied = format!("http://{PROXY_LISTEN}:{}", nginx.port);

    let admin = server.admin_client().await;
    let (app_id, key, _) = server.create_integration(&admin, "Proxied").await;
    let tid = server.published_template(&admin, "Terms", &[]).await;

    // The end user acts through the proxy and writes a forwarding header of its own.
    let end_user = client_from_127_0_0_5(false);
    let act = |base: String, user: &'static str| {
        let end_user = end_user.clone();
        let (app_id, tid) = (app_id.clone(), tid.clone());
        async move {
            end_user
                .post(format!("{base}/public-client/v1/clickwrap"))
                .header("X-Forwarded-For", "198.51.100.77")
                .header("Forwarded", "for=198.51.100.78")
                .json(
                    &json!({"appId": app_id, "clickwrapTemplateId": tid, "endUserId": user,
                              "action": "ACCEPTED"}),
                )
                .send()
                .await
                .unwrap()
        }
    };
    let recorded_ip = |acted: Value| {
        let (app_id, key) = (app_id.clone(), key.clone());
        let server_url = server.url("/public-client/v1/clickwrap/verify");
        async move {
            let verified: Value = common::client()
                .post(server_url)
                .header("X-APP-ID", &app_id)
                .header("X-APP-KEY", &key)
                .json(&json!({"clicktermSignature": acted["clicktermSignature"]}))
                .json_ok()
                .await;
            let metadata: Value =
                serde_json::from_str(verified["technicalMetadata"].as_str().unwrap()).unwrap();
            metadata["ip"].as_str().unwrap().to_string()
        }
    };
    let res = act(proxied.clone(), "via-proxy").await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let acted: Value = res.json().await.unwrap();
    assert_eq!(
        recorded_ip(acted).await,
        CLIENT.to_string(),
        "the consent record names the end user's address, not the proxy's nor the one it wrote"
    );

    // Straight to clicktermd, the same headers are only words: the peer is the client.
    let res = act(server.url(""), "direct").await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let acted: Value = res.json().await.unwrap();
    assert_eq!(recorded_ip(acted).await, CLIENT.to_string());

    // The SDK limit counts 127.0.0.5, whichever way it comes (its burst of 2 is spent above), and
    // another client behind the same proxy has its own budget.
    let res = act(proxied.clone(), "third").await;
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    let other = reqwest::Client::builder()
        .local_address(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 6)))
        .build()
        .unwrap();
    let res = other
        .post(format!("{proxied}/public-client/v1/clickwrap"))
        .json(
            &json!({"appId": app_id, "clickwrapTemplateId": tid, "endUserId": "other",
                      "action": "ACCEPTED"}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(
        res.status(),
        StatusCode::CREATED,
        "another client behind the proxy"
    );

    // Logged in through the proxy (which says the client spoke HTTPS to it), the cookie is Secure;
    // straight to the plain-HTTP server it is not.
    let password = server.admin_password();
    let login = |base: String| {
        let password = password.clone();
        async move {
            client_from_127_0_0_5(false)
                .post(format!("{base}/api/v1/login"))
                .json(&json!({"username": common::ADMIN, "password": password}))
                .send()
                .await
                .unwrap()
        }
    };
    let cookie = |res: &reqwest::Response| {
        res.headers()
            .get("set-cookie")
            .unwrap()
            .to_str()
            .unwrap()
            .to_string()
    };
    let via_proxy = login(proxied.clone()).await;
    assert_eq!(via_proxy.status(), StatusCode::OK);
    assert!(
        cookie(&via_proxy).contains("; Secure"),
        "{}",
        cookie(&via_proxy)
    );
    let direct = login(server.url("")).await;
    assert_eq!(direct.status(), StatusCode::OK);
    assert!(!cookie(&direct).contains("Secure"), "{}", cookie(&direct));

    // An admin change through the proxy is audited with the admin's own address.
    let token = server.admin_token().await;
    let res = client_from_127_0_0_5(false)
        .post(format!("{proxied}/api/v1/integrations/{app_id}/app-key"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let audit: Value = admin.get(server.url("/api/v1/audit")).json_ok().await;
    let entry = &audit["items"][0];
    assert_eq!(entry["action"], "integration.app_key.regenerate", "{audit}");
    assert_eq!(entry["from"], CLIENT.to_string(), "{entry}");
    drop(nginx);
    server.stop().await;
}
