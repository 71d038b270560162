//! Shared harness for the end-to-end tests: the real server in-process on an ephemeral loopback port with
//! its data in a temporary directory, HTTP clients for it, and the real binary for command-line tests.
//!
//! `main.rs` declares it once; each module uses the part it needs.
#![allow(dead_code)]

pub mod browser;
pub mod dns;
pub mod h2receiver;
pub mod nginx;
pub mod peek;
pub mod postgres;
pub mod raw;
pub mod receiver;
pub mod serving;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clicktermd::config::Config;
use dns::DnsServer;
use reqwest::StatusCode;
use serde_json::Value;
use tempfile::TempDir;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// How long anything in a test may take to become ready before the test fails.
pub const DEADLINE: Duration = Duration::from_secs(30);

/// The user name of the admin created at first start.
pub const ADMIN: &str = "admin";

/// A callback URL every test server accepts. Its host is answered by the harness's own DNS server with
/// [`SINK`], a loopback address the default test configuration allows and where nothing listens: an
/// attempt ends in `connect_error` without any traffic leaving loopback.
pub const HOOKS_URL: &str = "https://hooks.test/ct";

/// The host of [`HOOKS_URL`].
pub const HOOKS_HOST: &str = "hooks.test";

/// Where [`HOOKS_HOST`] points.
pub const SINK: &str = "127.0.0.9";

/// The real server, running in-process on `127.0.0.1:<ephemeral>` with its own data directory.
pub struct TestServer {
    /// `http://127.0.0.1:PORT`
    pub base: String,
    pub addr: SocketAddr,
    /// The data directory (a not-yet-existing subdirectory of the temporary directory at start, so the
    /// server creates it).
    pub data_dir: PathBuf,
    /// The configuration the server runs with.
    pub config: Config,
    /// The harness's DNS server (see [`HOOKS_URL`]); tests with DNS needs of their own point
    /// `webhooks.dns_servers` at their own server instead.
    pub dns: Arc<DnsServer>,
    dir: TempDir,
    shutdown: Option<oneshot::Sender<()>>,
    handle: JoinHandle<anyhow::Result<()>>,
    quiet: clicktermd::dispatch::Quiet,
}

/// A server that was stopped; its data directory is still there (until this is dropped) and it can be
/// started again on the same data.
pub struct StoppedServer {
    pub data_dir: PathBuf,
    pub config: Config,
    pub dir: TempDir,
    dns: Arc<DnsServer>,
}

impl TestServer {
    /// Starts a server with the default configuration.
    pub async fn start() -> TestServer {
        TestServer::start_with(|_| {}).await
    }

    /// Starts a server with the default configuration changed by `tweak`. When `tweak` runs, the data
    /// directory is set and so is the hermetic DNS setup: `dns_servers` is the harness's DNS server
    /// (no lookup ever reaches the machine's resolvers) and `allow_private_cidrs` is [`SINK`]`/32`.
    pub async fn start_with(tweak: impl FnOnce(&mut Config)) -> TestServer {
        let dir = tempfile::tempdir().expect("temporary directory");
        let dns = Arc::new(DnsServer::start().await);
        dns.set(HOOKS_HOST, &[SINK.parse().expect("sink address")]);
        let mut config = Config::default();
        config.storage.data_dir = dir.path().join("data");
        if crate::POSTGRES {
            let cluster = postgres::cluster();
            let database = cluster.create_database().await;
            config.storage.backend = clicktermd::config::Backend::Postgres;
            config.storage.postgres_url =
                Some(clicktermd::config::PostgresUrl::new(cluster.url(&database)));
            config.storage.postgres_pool_size = 8;
        }
        config.webhooks.dns_servers = vec![dns.server_string().parse().expect("dns server")];
        config.webhooks.allow_private_cidrs =
            vec![format!("{SINK}/32").parse().expect("sink network")];
        tweak(&mut config);
        TestServer::start_in(dir, config, dns).await
    }

    async fn start_in(dir: TempDir, mut config: Config, dns: Arc<DnsServer>) -> TestServer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("listener address");
        config.server.listen = addr;
        config
            .validate()
            .expect("the test configuration must be valid");
        let data_dir = config.storage.data_dir.clone();
        let (tx, rx) = oneshot::channel::<()>();
        let quiet = clicktermd::dispatch::Quiet::default();
        let handle = tokio::spawn(clicktermd::run_reporting_quiet(
            config.clone(),
            listener,
            async move {
                rx.await.ok();
            },
            quiet.clone(),
        ));
        let base = format!("http://{addr}");
        let mut server = TestServer {
            base,
            addr,
            data_dir,
            config,
            dns,
            dir,
            shutdown: Some(tx),
            handle,
            quiet,
        };
        server.wait_healthy().await;
        server
    }

    /// Polls `/healthz` until it answers 200; fails the test if the server task ends first or the
    /// deadline passes.
    async fn wait_healthy(&mut self) {
        let client = client();
        let url = self.url("/healthz");
        let start = Instant::now();
        loop {
            if self.handle.is_finished() {
                let result = (&mut self.handle).await;
                panic!("the server stopped before it was healthy: {result:?}");
            }
            if let Ok(res) = client.get(&url).send().await
                && res.status() == StatusCode::OK
            {
                return;
            }
            assert!(
                start.elapsed() < DEADLINE,
                "the server did not become healthy within {DEADLINE:?}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// `base` + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// The first-start admin password from `initial-admin-password` in the data directory.
    pub fn admin_password(&self) -> String {
        read_admin_password(&self.data_dir)
    }

    /// A client with a cookie store, logged in as `admin` through `POST /api/v1/login`.
    pub async fn admin_client(&self) -> reqwest::Client {
        let client = cookie_client();
        let res = client
            .post(self.url("/api/v1/login"))
            .json(&serde_json::json!({"username": ADMIN, "password": self.admin_password()}))
            .send()
            .await
            .expect("login request");
        assert_eq!(res.status(), StatusCode::OK, "admin login failed");
        client
    }

    /// A new admin bearer token (role `admin`), minted by the real binary (`clicktermd admin token
    /// create`) against this server's data directory while the server runs.
    pub async fn admin_token(&self) -> String {
        self.token_with_role("admin").await
    }

    /// What the command line needs beside `--data-dir` to reach this server's store: on PostgreSQL,
    /// the backend and the URL (as `CLICKTERMD_STORAGE__*` variables); on SQLite, nothing.
    pub fn cli_env(&self) -> Vec<(&'static str, String)> {
        store_env(&self.config)
    }

    /// A new bearer token with `role` (owner, admin, viewer), minted by the real binary.
    pub async fn token_with_role(&self, role: &str) -> String {
        let dir = self.data_dir.to_str().expect("UTF-8 path").to_string();
        let args = [
            "--data-dir",
            &dir,
            "admin",
            "token",
            "create",
            "--role",
            role,
        ];
        let env = self.cli_env();
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let out = clicktermd_async(&args, &env).await;
        assert_success(&out, "admin token create");
        let token = String::from_utf8(out.stdout).expect("UTF-8 token");
        token.trim_end().to_string()
    }

    /// A client that sends `Authorization: Bearer <token>` on every request.
    pub async fn token_client(&self) -> reqwest::Client {
        bearer_client(&self.admin_token().await)
    }

    /// Creates an integration named `name` as the admin; returns `(appId, appKey, signingSecret)`.
    pub async fn create_integration(
        &self,
        admin: &reqwest::Client,
        name: &str,
    ) -> (String, String, String) {
        create_integration(admin, &self.base, name).await
    }

    /// A template named `name` with one English text, linked to `integrations` (none: visible to
    /// all), published as version 1.0; returns its id.
    pub async fn published_template(
        &self,
        admin: &reqwest::Client,
        name: &str,
        integrations: &[&str],
    ) -> String {
        let template: Value = admin
            .post(self.url("/api/v1/templates"))
            .json(&serde_json::json!({"name": name, "defaultLanguage": "en",
                      "languages": {"en": {"title": "Terms", "content": "<p>Terms</p>"}},
                      "integrations": integrations}))
            .json_with(StatusCode::CREATED)
            .await;
        let tid = template["id"].as_str().expect("template id").to_string();
        admin
            .post(self.url(&format!("/api/v1/templates/{tid}/versions")))
            .json(&serde_json::json!({"type": "MAJOR"}))
            .json_with(StatusCode::CREATED)
            .await;
        tid
    }

    /// Waits until the dispatcher has nothing to do: every attempt it started is stored and a claim
    /// made after this call found nothing due. What a test checks after it (nothing was sent, every
    /// attempt is recorded) is then settled, not a matter of having slept long enough.
    pub async fn dispatcher_quiet(&self) {
        tokio::time::timeout(DEADLINE, self.quiet.wait())
            .await
            .expect("the dispatcher was never quiet within the deadline");
    }

    /// Stops the server gracefully (within the deadline) and asserts that `run` returned `Ok`. The data
    /// directory stays until the returned value is dropped.
    pub async fn stop(mut self) -> StoppedServer {
        let tx = self.shutdown.take().expect("shutdown sender");
        let _ = tx.send(());
        let result = tokio::time::timeout(DEADLINE, self.handle)
            .await
            .expect("the server did not stop within the deadline")
            .expect("the server task panicked");
        if let Err(e) = result {
            panic!("the server stopped with an error: {e:#}");
        }
        StoppedServer {
            data_dir: self.data_dir,
            config: self.config,
            dir: self.dir,
            dns: self.dns,
        }
    }
}

impl StoppedServer {
    /// Starts the server again on the same data directory and configuration (on a new port).
    pub async fn restart(self) -> TestServer {
        TestServer::start_in(self.dir, self.config, self.dns).await
    }
}

/// The `CLICKTERMD_STORAGE__*` variables that point the command line at `config`'s store when it is
/// PostgreSQL (none for SQLite, which `--data-dir` names).
pub fn store_env(config: &Config) -> Vec<(&'static str, String)> {
    match &config.storage.postgres_url {
        Some(url) if config.storage.backend == clicktermd::config::Backend::Postgres => vec![
            ("CLICKTERMD_STORAGE__BACKEND", "postgres".to_string()),
            ("CLICKTERMD_STORAGE__POSTGRES_URL", url.expose().to_string()),
        ],
        _ => Vec::new(),
    }
}

/// Reads `initial-admin-password` from a data directory.
pub fn read_admin_password(data_dir: &Path) -> String {
    let path = data_dir.join("initial-admin-password");
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
        .trim()
        .to_string()
}

fn builder() -> reqwest::ClientBuilder {
    // reqwest with `rustls-no-provider` needs a process-wide crypto provider to build any client, even
    // one that only speaks plain http.
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .no_proxy()
        .timeout(DEADLINE)
        .redirect(reqwest::redirect::Policy::none())
}

/// A plain client: no cookies, no credentials.
pub fn client() -> reqwest::Client {
    builder().build().expect("HTTP client")
}

/// A client that keeps cookies and, like the dashboard, says where its changes come from
/// (`X-Requested-With`): without it the server refuses changes made with the session cookie.
pub fn cookie_client() -> reqwest::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        "x-requested-with",
        reqwest::header::HeaderValue::from_static("clicktermd-tests"),
    );
    builder()
        .cookie_store(true)
        .default_headers(headers)
        .build()
        .expect("HTTP client")
}

/// A client that keeps cookies and sends nothing else: a browser-less script with a cookie jar.
pub fn bare_cookie_client() -> reqwest::Client {
    builder().cookie_store(true).build().expect("HTTP client")
}

/// A client that sends `Authorization: Bearer <token>` on every request.
pub fn bearer_client(token: &str) -> reqwest::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    let value = reqwest::header::HeaderValue::from_str(&format!("Bearer {token}"))
        .expect("token is a header value");
    headers.insert(reqwest::header::AUTHORIZATION, value);
    builder()
        .default_headers(headers)
        .build()
        .expect("HTTP client")
}

/// `POST /api/v1/integrations` with `body`; asserts 201 and returns the response body.
pub async fn create_integration_with(client: &reqwest::Client, base: &str, body: &Value) -> Value {
    let res = client
        .post(format!("{base}/api/v1/integrations"))
        .json(body)
        .send()
        .await
        .expect("create integration request");
    let status = res.status();
    let json: Value = res.json().await.expect("JSON body");
    assert_eq!(status, StatusCode::CREATED, "create integration: {json}");
    json
}

/// Creates an integration named `name`; returns `(appId, appKey, signingSecret)`.
pub async fn create_integration(
    client: &reqwest::Client,
    base: &str,
    name: &str,
) -> (String, String, String) {
    let json = create_integration_with(client, base, &serde_json::json!({"name": name})).await;
    let field = |k: &str| {
        json[k]
            .as_str()
            .unwrap_or_else(|| panic!("{k} missing in {json}"))
            .to_string()
    };
    (field("appId"), field("appKey"), field("signingSecret"))
}

/// Sending a request the way these tests mostly do: send it, check the status, read the JSON body.
#[allow(async_fn_in_trait)] // used only here, never as `dyn`
pub trait Call {
    /// Sends the request and returns its JSON body (`null` when empty) if its status is `status`; a
    /// different status fails the test, naming the request and showing the body.
    async fn json_with(self, status: StatusCode) -> Value;

    /// [`Call::json_with`] `200 OK`.
    async fn json_ok(self) -> Value
    where
        Self: Sized,
    {
        self.json_with(StatusCode::OK).await
    }
}

impl Call for reqwest::RequestBuilder {
    async fn json_with(self, status: StatusCode) -> Value {
        let (client, request) = self.build_split();
        let request = request.expect("a well-formed request");
        let what = format!("{} {}", request.method(), request.url());
        let res = client
            .execute(request)
            .await
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        let got = res.status();
        let text = res.text().await.unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_eq!(got, status, "{what}: {text}");
        if text.is_empty() {
            return Value::Null;
        }
        serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{what}: the body is not JSON ({e}): {text:?}"))
    }
}

/// Asserts that `res` is an error with `status` in the API's shape — a JSON object with exactly the
/// string fields `message` (non-empty) and `code` — and returns the body.
pub async fn expect_error(res: reqwest::Response, status: StatusCode) -> Value {
    let got = res.status();
    let content_type = res
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let text = res.text().await.expect("response body");
    assert_eq!(got, status, "body: {text}");
    assert!(
        content_type.starts_with("application/json"),
        "content type {content_type:?} for {status}: {text}"
    );
    let body: Value = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("error body is not JSON ({e}): {text:?}"));
    let obj = body.as_object().expect("error body is an object");
    let mut keys: Vec<&str> = obj.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(keys, ["code", "message"], "error body {body}");
    assert!(
        body["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{body}"
    );
    assert!(
        body["code"].as_str().is_some_and(|c| !c.is_empty()),
        "{body}"
    );
    body
}

/// The sorted keys of a JSON object.
pub fn keys(v: &Value) -> Vec<String> {
    let mut k: Vec<String> = v
        .as_object()
        .unwrap_or_else(|| panic!("not an object: {v}"))
        .keys()
        .cloned()
        .collect();
    k.sort();
    k
}

/// The path of the built `clicktermd` binary.
pub fn clicktermd_bin() -> &'static str {
    env!("CARGO_BIN_EXE_clicktermd")
}

/// A command for the real binary with no inherited `CLICKTERMD_*` variables and `env` set.
pub fn clicktermd_command(args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(clicktermd_bin());
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("CLICKTERMD_") {
            cmd.env_remove(name);
        }
    }
    // No stray log filter from the environment changes what the binary prints.
    cmd.env_remove("RUST_LOG");
    // Not the checkout, where a developer's ./clicktermd.toml (ignored by git) would be read.
    cmd.current_dir(env!("CARGO_TARGET_TMPDIR"));
    cmd.args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd
}

/// Runs the real binary to completion with `args` and `env` (inherited `CLICKTERMD_*` cleared) and
/// standard input empty.
pub fn clicktermd(args: &[&str], env: &[(&str, &str)]) -> Output {
    clicktermd_command(args, env)
        .stdin(Stdio::null())
        .output()
        .expect("run clicktermd")
}

/// Like [`clicktermd`], with `stdin` as standard input.
pub fn clicktermd_with_stdin(args: &[&str], env: &[(&str, &str)], stdin: &str) -> Output {
    use std::io::Write;
    let mut child = clicktermd_command(args, env)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn clicktermd");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin.as_bytes())
        .expect("write stdin");
    child.wait_with_output().expect("wait for clicktermd")
}

/// [`clicktermd`] on a blocking thread, for use inside async tests while an in-process server runs.
pub async fn clicktermd_async(args: &[&str], env: &[(&str, &str)]) -> Output {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    let env: Vec<(String, String)> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        clicktermd(&args, &env)
    })
    .await
    .expect("clicktermd task")
}

/// Asserts a zero exit status, showing standard error otherwise.
pub fn assert_success(out: &Output, what: &str) {
    assert!(
        out.status.success(),
        "{what}: {:?}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Standard output as text.
pub fn stdout(out: &Output) -> String {
    String::from_utf8(out.stdout.clone()).expect("UTF-8 stdout")
}

/// Standard error as text.
pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A loopback port that was free a moment ago (bind port 0, read it, release it).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind 127.0.0.1:0")
        .local_addr()
        .expect("local address")
        .port()
}

/// Polls `GET {base}/healthz` until 200 or the deadline.
pub async fn wait_healthy(base: &str) -> bool {
    let client = client();
    let start = Instant::now();
    while start.elapsed() < DEADLINE {
        if let Ok(res) = client.get(format!("{base}/healthz")).send().await
            && res.status() == StatusCode::OK
        {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}
