//! The configuration: one struct with every option, its default and its validation.
//!
//! Layers, later wins: built-in defaults → the TOML file (`--config`, else `./clicktermd.toml` when
//! there is one: `main` decides) → environment variables
//! `CLICKTERMD_SECTION__KEY` → command-line overrides (`--data-dir`). Unknown keys are errors at every
//! layer, always naming the key, because a misspelt option that is silently ignored is how an appliance
//! ends up sending webhooks with the wrong policy. The result is validated once at load and then passed
//! down read-only; nothing reads the environment after this.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use ipnet::IpNet;
use serde::Deserialize;

/// Prefix of the environment variables that override configuration keys.
pub const ENV_PREFIX: &str = "CLICKTERMD_";

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub server: ServerConfig,
    pub storage: StorageConfig,
    pub log: LogConfig,
    pub auth: AuthConfig,
    pub clickwrap: ClickwrapConfig,
    pub limits: LimitsConfig,
    pub webhooks: WebhookConfig,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address and port of the HTTP server.
    #[serde(deserialize_with = "listen_address")]
    pub listen: SocketAddr,
    /// PEM certificate chain; with `tls_key`, serve HTTPS directly.
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for `tls_cert`.
    pub tls_key: Option<PathBuf>,
    /// Largest request body accepted, in bytes (413 above it).
    pub max_body_bytes: usize,
    /// HTTP/1.1: how long a client may take to deliver a request head, counted from the moment the
    /// connection is ready for one (accepted, or its previous response sent). So it is also how long
    /// an idle HTTP/1.1 keep-alive connection stays open. Any connection must send its first request
    /// within it.
    pub header_read_timeout_secs: u64,
    /// How long a request body may take to arrive in full once the handler starts reading it (408).
    pub body_read_timeout_secs: u64,
    /// A connection with no request in flight for this long is closed (HTTP/2 with GOAWAY). HTTP/1.1
    /// connections close sooner if `header_read_timeout_secs` is shorter.
    pub idle_timeout_secs: u64,
    /// How long a TLS handshake may take (with `tls_cert`).
    pub tls_handshake_timeout_secs: u64,
    /// Connections open at once. Beyond it, idle connections are closed to make room and a new
    /// connection waits briefly for a slot, else is closed at once. Clamped at start to what the
    /// process's file limit leaves after the reserve for the database and the dispatcher.
    pub max_connections: usize,
    /// Reverse proxies trusted to say who their client was (`Forwarded`, `X-Forwarded-For`,
    /// `X-Forwarded-Proto`); from any other peer those headers are ignored.
    pub trusted_proxies: Vec<IpNet>,
    /// The header the trusted proxies write the client's address into.
    pub proxy_header: ProxyHeader,
}

/// Which forwarding header the trusted proxies append to. Only the one they write can be believed:
/// a header they pass through untouched holds whatever the client put in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ProxyHeader {
    /// `X-Forwarded-For`, with the protocol from `X-Forwarded-Proto` (nginx, HAProxy's
    /// `option forwardfor`, most load balancers).
    XForwardedFor,
    /// RFC 7239 `Forwarded`, its `for` and `proto` (HAProxy's `option forwarded`, Envoy, Caddy can).
    Forwarded,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    /// Directory holding the database and state files (created 0700).
    pub data_dir: PathBuf,
    /// SQLite `synchronous` level: `full` (default; an acknowledged record is on disk) or `normal`.
    pub synchronous: Synchronous,
    /// Where the records are kept: `sqlite` (default: one file in `data_dir`, one server) or
    /// `postgres` (a PostgreSQL database at `postgres_url`, any number of nodes on it).
    pub backend: Backend,
    /// A libpq connection URL (`postgres://user:password@host:port/database?sslmode=verify-full`),
    /// for `backend = "postgres"`. Holds a password: it is never logged or printed.
    pub postgres_url: Option<PostgresUrl>,
    /// Connections each node keeps open to PostgreSQL at most.
    pub postgres_pool_size: u32,
    /// A PEM file of CA certificates to check the database server's certificate against
    /// (`sslmode=verify-ca` or `verify-full`), instead of the Mozilla roots.
    pub postgres_ca_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// `storage.postgres_url`: kept as given, shown (`Debug`, `Display`) without its password.
#[derive(Clone, PartialEq, Deserialize)]
#[serde(transparent)]
pub struct PostgresUrl(String);

impl PostgresUrl {
    pub fn new(url: impl Into<String>) -> PostgresUrl {
        PostgresUrl(url.into())
    }

    /// The URL with its password: only for connecting.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The URL as it may be shown: any password replaced by `***`.
    pub fn redacted(&self) -> String {
        match url::Url::parse(&self.0) {
            Ok(mut u) if u.password().is_some() => {
                let _ = u.set_password(Some("***"));
                u.to_string()
            }
            Ok(u) => u.to_string(),
            // Not a URL at all: show only its scheme-like start, never the rest.
            Err(_) => "(not a URL)".into(),
        }
    }
}

impl std::fmt::Debug for PostgresUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self.redacted())
    }
}

impl std::fmt::Display for PostgresUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.redacted())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Synchronous {
    Full,
    Normal,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `text` or `json`.
    pub format: LogFormat,
    /// A `tracing` filter directive, e.g. `info` or `clicktermd=debug,info`.
    pub level: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// Lifetime of an admin session cookie.
    pub session_ttl_secs: u64,
    /// Failed logins from one client address allowed within `login_window_secs` before 429.
    pub login_max_failures: u32,
    /// Failed logins naming one user name, from any address, allowed within the window before 429.
    pub login_max_failures_per_user: u32,
    pub login_window_secs: u64,
    /// Passwords checked at once, each on a thread of its own that keeps the check's ~19 MiB; beyond
    /// it, 503 at once. Checks are CPU-bound, so more than the machine's cores gains nothing.
    pub max_concurrent_logins: usize,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClickwrapConfig {
    /// How long a clicktermSignature can be verified after the end user acted.
    pub signature_ttl_secs: u64,
}

/// Request rate limits (0 turns one off). A refused request is 429 with `Retry-After`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Public-client-API requests per second of one integration (its App Key), and the burst above it.
    pub integration_requests_per_sec: u32,
    pub integration_burst: u32,
    /// Re-acceptance pairs (end user × template) per second one integration may ask for.
    pub reaccept_pairs_per_sec: u32,
    pub reaccept_pairs_burst: u32,
    /// SDK requests (`/public-client/v1/clickwrap`, which need no key) per second from one client
    /// address (an IPv6 /64), and the burst above it.
    pub sdk_requests_per_sec_per_address: u32,
    pub sdk_burst_per_address: u32,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebhookConfig {
    /// Whole-attempt timeout: DNS, connect, TLS, request, response head and capped body.
    pub timeout_secs: f64,
    /// Retries after the first attempt.
    pub max_retries: u32,
    /// First retry delay; doubles each retry up to `retry_cap_secs`.
    pub retry_base_secs: f64,
    pub retry_cap_secs: f64,
    /// CIDRs exempted from the forbidden address ranges (on-prem receivers).
    #[serde(deserialize_with = "cidrs")]
    pub allow_private_cidrs: Vec<IpNet>,
    /// Permit `http://` callback URLs (local demos only).
    pub allow_http: bool,
    /// Extra trusted certificates (PEM) for callback TLS; each is also pinned (a receiver presenting
    /// exactly it is accepted even with `CA:TRUE`). Read again when the file changes.
    pub extra_ca_file: Option<PathBuf>,
    /// DNS servers for callback host names, `"ip"` or `"ip:port"`; empty means the system's.
    pub dns_servers: Vec<DnsServer>,
    /// Attempts in flight at once, in total.
    pub max_in_flight: usize,
    /// Attempts in flight at once for one integration, so a dead endpoint cannot take every slot.
    pub max_in_flight_per_integration: usize,
    /// Attempts of finished deliveries older than this many days are pruned; 0 keeps them forever.
    pub attempt_retention_days: u32,
    /// Client certificates (mutual TLS) for the receivers of the integrations named, read at start.
    /// An integration named here cannot have one uploaded through the admin API.
    pub client_certificates: Vec<ClientCertificateFiles>,
}

/// One `webhooks.client_certificates` entry: the PEM files of an integration's client certificate.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientCertificateFiles {
    /// The integration's App ID.
    pub app_id: String,
    /// The certificate (PEM), then any intermediates.
    pub cert_file: PathBuf,
    /// Its private key (PEM, unencrypted).
    pub key_file: PathBuf,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            tls_cert: None,
            tls_key: None,
            max_body_bytes: 256 * 1024,
            header_read_timeout_secs: 30,
            body_read_timeout_secs: 10,
            idle_timeout_secs: 60,
            tls_handshake_timeout_secs: 10,
            max_connections: 4096,
            trusted_proxies: Vec::new(),
            proxy_header: ProxyHeader::XForwardedFor,
        }
    }
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            data_dir: PathBuf::from("./clicktermd-data"),
            synchronous: Synchronous::Full,
            backend: Backend::Sqlite,
            postgres_url: None,
            postgres_pool_size: 16,
            postgres_ca_file: None,
        }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: LogFormat::Text,
            level: "info".to_string(),
        }
    }
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            session_ttl_secs: 12 * 3600,
            login_max_failures: 5,
            login_max_failures_per_user: 20,
            login_window_secs: 300,
            max_concurrent_logins: 2,
        }
    }
}

impl Default for ClickwrapConfig {
    fn default() -> Self {
        ClickwrapConfig {
            signature_ttl_secs: 24 * 3600,
        }
    }
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            integration_requests_per_sec: 25_000,
            integration_burst: 50_000,
            reaccept_pairs_per_sec: 1_000,
            reaccept_pairs_burst: 2_000,
            sdk_requests_per_sec_per_address: 100,
            sdk_burst_per_address: 200,
        }
    }
}

impl Default for WebhookConfig {
    fn default() -> Self {
        WebhookConfig {
            timeout_secs: 10.0,
            max_retries: 3,
            retry_base_secs: 60.0,
            retry_cap_secs: 300.0,
            allow_private_cidrs: Vec::new(),
            allow_http: false,
            extra_ca_file: None,
            dns_servers: Vec::new(),
            max_in_flight: 256,
            max_in_flight_per_integration: 16,
            attempt_retention_days: 90,
            client_certificates: Vec::new(),
        }
    }
}

/// A configuration that could not be loaded; the message names the file or variable and the key.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(String);

impl Config {
    /// Loads the configuration: defaults, then `file` (if any), then the `CLICKTERMD_*` variables in `env`.
    pub fn load(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let mut table = match file {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|e| {
                    ConfigError(format!("cannot read config file {}: {e}", path.display()))
                })?;
                // Deserialising the text itself (not the table) gives errors with line, column and key.
                toml::from_str::<Config>(&text).map_err(|e| {
                    ConfigError(format!("config file {}: {}", path.display(), plain(&e)))
                })?;
                toml::from_str::<toml::Table>(&text)
                    .map_err(|e| ConfigError(format!("config file {}: {e}", path.display())))?
            }
            None => toml::Table::new(),
        };
        let mut overrides: Vec<(String, String)> = env
            .into_iter()
            .filter(|(k, _)| k.starts_with(ENV_PREFIX))
            .collect();
        overrides.sort();
        for (name, raw) in overrides {
            apply_env_override(&mut table, &name, &raw)?;
        }
        let config = Config::deserialize(toml::Value::Table(table))
            .map_err(|e| ConfigError(format!("configuration: {}", plain(&e))))?;
        config.validate()?;
        Ok(config)
    }

    /// Semantic checks that types alone cannot express. Each error names its key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let fail = |key: &str, why: &str| Err(ConfigError(format!("{key}: {why}")));
        match (&self.server.tls_cert, &self.server.tls_key) {
            (Some(_), None) => {
                return fail("server.tls_key", "required when server.tls_cert is set");
            }
            (None, Some(_)) => {
                return fail("server.tls_cert", "required when server.tls_key is set");
            }
            _ => {}
        }
        if self.server.max_body_bytes < 1024 {
            return fail("server.max_body_bytes", "must be at least 1024");
        }
        let s = &self.server;
        for (key, secs) in [
            (
                "server.header_read_timeout_secs",
                s.header_read_timeout_secs,
            ),
            ("server.body_read_timeout_secs", s.body_read_timeout_secs),
            ("server.idle_timeout_secs", s.idle_timeout_secs),
            (
                "server.tls_handshake_timeout_secs",
                s.tls_handshake_timeout_secs,
            ),
        ] {
            if !(1..=3600).contains(&secs) {
                return fail(key, "must be a whole number of seconds between 1 and 3600");
            }
        }
        if !(1..=1_000_000).contains(&s.max_connections) {
            return fail("server.max_connections", "must be between 1 and 1000000");
        }
        if self.storage.data_dir.as_os_str().is_empty() {
            return fail("storage.data_dir", "must not be empty");
        }
        if self.storage.backend == Backend::Postgres {
            match &self.storage.postgres_url {
                None => {
                    return fail(
                        "storage.postgres_url",
                        "must be set when storage.backend is \"postgres\" \
                         (postgres://user:password@host/database)",
                    );
                }
                Some(url) => {
                    if let Err(e) = crate::store::pg::parse_url(url) {
                        return fail("storage.postgres_url", &e);
                    }
                }
            }
        }
        if !(1..=1000).contains(&self.storage.postgres_pool_size) {
            return fail("storage.postgres_pool_size", "must be between 1 and 1000");
        }
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&self.log.level) {
            return fail("log.level", &format!("not a valid filter: {e}"));
        }
        if self.auth.session_ttl_secs == 0 {
            return fail("auth.session_ttl_secs", "must be greater than 0");
        }
        if self.auth.login_max_failures == 0 {
            return fail("auth.login_max_failures", "must be greater than 0");
        }
        if self.auth.login_max_failures_per_user == 0 {
            return fail("auth.login_max_failures_per_user", "must be greater than 0");
        }
        if !(1..=64).contains(&self.auth.max_concurrent_logins) {
            return fail("auth.max_concurrent_logins", "must be between 1 and 64");
        }
        if self.clickwrap.signature_ttl_secs == 0 {
            return fail("clickwrap.signature_ttl_secs", "must be greater than 0");
        }
        let l = &self.limits;
        for (key, rate, burst_key, burst) in [
            (
                "limits.integration_requests_per_sec",
                l.integration_requests_per_sec,
                "limits.integration_burst",
                l.integration_burst,
            ),
            (
                "limits.reaccept_pairs_per_sec",
                l.reaccept_pairs_per_sec,
                "limits.reaccept_pairs_burst",
                l.reaccept_pairs_burst,
            ),
            (
                "limits.sdk_requests_per_sec_per_address",
                l.sdk_requests_per_sec_per_address,
                "limits.sdk_burst_per_address",
                l.sdk_burst_per_address,
            ),
        ] {
            if rate > 0 && burst == 0 {
                return fail(burst_key, &format!("must be at least 1 when {key} is set"));
            }
        }
        if l.reaccept_pairs_per_sec > 0
            && (l.reaccept_pairs_burst as usize) < crate::clickwrap::MAX_REACCEPT_PAIRS
        {
            return fail(
                "limits.reaccept_pairs_burst",
                &format!(
                    "must be at least {} (the pairs one re-accept may ask for)",
                    crate::clickwrap::MAX_REACCEPT_PAIRS
                ),
            );
        }
        let w = &self.webhooks;
        if !(w.timeout_secs.is_finite() && w.timeout_secs > 0.0 && w.timeout_secs <= 300.0) {
            return fail(
                "webhooks.timeout_secs",
                "must be a number of seconds in (0, 300]",
            );
        }
        if !(w.retry_base_secs.is_finite() && w.retry_base_secs >= 0.0) {
            return fail(
                "webhooks.retry_base_secs",
                "must be a non-negative number of seconds",
            );
        }
        if !(w.retry_cap_secs.is_finite() && w.retry_cap_secs >= w.retry_base_secs) {
            return fail(
                "webhooks.retry_cap_secs",
                "must be at least webhooks.retry_base_secs",
            );
        }
        if w.max_in_flight == 0 || w.max_in_flight > 10_000 {
            return fail("webhooks.max_in_flight", "must be between 1 and 10000");
        }
        if w.max_in_flight_per_integration == 0 || w.max_in_flight_per_integration > w.max_in_flight
        {
            return fail(
                "webhooks.max_in_flight_per_integration",
                "must be between 1 and webhooks.max_in_flight",
            );
        }
        if w.attempt_retention_days > 36_500 {
            return fail(
                "webhooks.attempt_retention_days",
                "must be at most 36500 (0 keeps attempts forever)",
            );
        }
        if w.max_retries > 20 {
            return fail("webhooks.max_retries", "must be at most 20");
        }
        let mut named = std::collections::HashSet::new();
        for (i, entry) in w.client_certificates.iter().enumerate() {
            let key = format!("webhooks.client_certificates[{i}]");
            if entry.app_id.trim().is_empty() {
                return fail(&format!("{key}.app_id"), "must be an integration's App ID");
            }
            if !named.insert(entry.app_id.as_str()) {
                return fail(
                    &format!("{key}.app_id"),
                    &format!("{:?} is named twice; give it one entry", entry.app_id),
                );
            }
            for (name, path) in [
                ("cert_file", &entry.cert_file),
                ("key_file", &entry.key_file),
            ] {
                if path.as_os_str().is_empty() {
                    return fail(&format!("{key}.{name}"), "must be the path of a PEM file");
                }
            }
        }
        Ok(())
    }

    /// Where the database lives inside the data directory.
    pub fn database_path(&self) -> PathBuf {
        self.storage.data_dir.join("clicktermd.db")
    }
}

/// A `webhooks.dns_servers` entry, parsed when the configuration is read: `"1.2.3.4"`,
/// `"1.2.3.4:5353"`, `"::1"` or `"[::1]:5353"` (port 53 when none is given).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct DnsServer(pub SocketAddr);

impl std::str::FromStr for DnsServer {
    type Err = String;

    fn from_str(s: &str) -> Result<DnsServer, String> {
        s.parse::<SocketAddr>()
            .or_else(|_| {
                s.parse::<std::net::IpAddr>()
                    .map(|ip| SocketAddr::new(ip, 53))
            })
            .map(DnsServer)
            .map_err(|_| format!("webhooks.dns_servers: {s:?} is not an IP address or ip:port"))
    }
}

impl TryFrom<String> for DnsServer {
    type Error = String;

    fn try_from(s: String) -> Result<DnsServer, String> {
        s.parse()
    }
}

/// A deserialisation error in words for people: serde names Rust types ("expected f64"), which say
/// nothing to someone editing a TOML file. Every floating-point option is a number of seconds.
fn plain(e: &dyn std::fmt::Display) -> String {
    let text = e.to_string();
    let mut out = text.replace(
        "expected f64",
        "expected a number of seconds, such as 10 or 0.5",
    );
    for int in ["u16", "u32", "u64", "usize", "i64"] {
        out = out.replace(
            &format!("expected {int}"),
            "expected a whole number, such as 10",
        );
    }
    out.replace("expected a boolean", "expected true or false")
}

/// `server.listen` (and `serve --listen`): an `ip:port`, with a suggestion for the spellings people
/// try first (`localhost:8080`, `:8080`, `8080`).
pub fn parse_listen(s: &str) -> Result<SocketAddr, String> {
    if let Ok(addr) = s.parse::<SocketAddr>() {
        return Ok(addr);
    }
    let example = "127.0.0.1:8080 (this machine only) or 0.0.0.0:8080 (every interface)";
    let hint = if let Some(port) = s.strip_prefix("localhost:") {
        format!(
            "write 127.0.0.1:{port} (or [::1]:{port}): a listen address is an IP address, not a name"
        )
    } else if let Some(port) = s.strip_prefix(':') {
        format!(
            "write 127.0.0.1:{port} for this machine only, or 0.0.0.0:{port} for every interface"
        )
    } else if s.parse::<u16>().is_ok() {
        format!("write 127.0.0.1:{s} for this machine only, or 0.0.0.0:{s} for every interface")
    } else if s.parse::<std::net::IpAddr>().is_ok() {
        format!(
            "add the port, e.g. {}",
            SocketAddr::new(s.parse().expect("checked"), 8080)
        )
    } else {
        format!("expected an IP address and a port, such as {example}")
    };
    Err(format!("{s:?} is not a listen address: {hint}"))
}

fn listen_address<'de, D: serde::Deserializer<'de>>(d: D) -> Result<SocketAddr, D::Error> {
    let s = String::deserialize(d)?;
    parse_listen(&s).map_err(serde::de::Error::custom)
}

/// `webhooks.allow_private_cidrs`: CIDRs; a bare address is refused with the CIDR that means it alone.
fn cidrs<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<IpNet>, D::Error> {
    let items = Vec::<String>::deserialize(d)?;
    items
        .iter()
        .map(|s| {
            s.parse::<IpNet>().map_err(|_| {
                let why = match s.parse::<std::net::IpAddr>() {
                    Ok(ip) => format!(
                        "{s:?} is an address, not a CIDR: write \"{ip}/{}\" to allow this one address",
                        if ip.is_ipv4() { 32 } else { 128 }
                    ),
                    Err(_) => format!(
                        "{s:?} is not a CIDR such as \"127.0.0.1/32\", \"10.0.0.0/8\" or \"fd00::/8\""
                    ),
                };
                serde::de::Error::custom(why)
            })
        })
        .collect()
}

/// Applies `CLICKTERMD_SECTION__KEY=value` to the table. The value is read as a TOML value when it is one
/// (`10`, `true`, `["127.0.0.1/32"]`) and as a string otherwise, so paths and addresses need no quoting.
fn apply_env_override(table: &mut toml::Table, name: &str, raw: &str) -> Result<(), ConfigError> {
    let rest = &name[ENV_PREFIX.len()..];
    let Some((section, key)) = rest.split_once("__") else {
        return Err(ConfigError(format!(
            "environment variable {name}: expected {ENV_PREFIX}SECTION__KEY, e.g. {ENV_PREFIX}SERVER__LISTEN"
        )));
    };
    let (section, key) = (section.to_ascii_lowercase(), key.to_ascii_lowercase());
    let value = toml::from_str::<toml::Table>(&format!("v = {raw}"))
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(raw.to_string()));
    // Judge this one key alone against the schema, so the error names the variable that caused it.
    let mut probe = toml::Table::new();
    let mut inner = toml::Table::new();
    inner.insert(key.clone(), value.clone());
    probe.insert(section.clone(), toml::Value::Table(inner));
    if let Err(e) = Config::deserialize(toml::Value::Table(probe)) {
        return Err(ConfigError(format!(
            "environment variable {name} ({section}.{key}): {}",
            plain(&e)
        )));
    }
    let entry = table
        .entry(section)
        .or_insert_with(|| toml::Value::Table(toml::Table::new()));
    match entry {
        toml::Value::Table(t) => {
            t.insert(key, value);
            Ok(())
        }
        _ => Err(ConfigError(format!(
            "environment variable {name}: the config file's section is not a table"
        ))),
    }
}

/// The commented configuration `clicktermd init` writes. Every key is present with its default, so the
/// file documents the whole configuration surface; a test keeps it equal to `Config::default()`.
pub const DEFAULT_CONFIG_TOML: &str = r#"# clicktermd configuration.
# Every key may be overridden by an environment variable CLICKTERMD_SECTION__KEY,
# e.g. CLICKTERMD_SERVER__LISTEN=0.0.0.0:8080. Unknown keys are refused.

[server]
# Address and port of the HTTP server (public client API, SDK, admin API, dashboard).
listen = "127.0.0.1:8080"
# Serve HTTPS directly: PEM certificate chain and private key (both or neither).
# tls_cert = "/etc/clicktermd/tls/cert.pem"
# tls_key = "/etc/clicktermd/tls/key.pem"
# Largest request body accepted, in bytes.
max_body_bytes = 262144
# HTTP/1.1: seconds a client may take to send a request head, counted from when the
# connection is ready for one, so also how long an idle keep-alive connection stays open.
# Every connection must send its first request within it.
header_read_timeout_secs = 30
# Seconds a request body may take to arrive once it is read (then 408).
body_read_timeout_secs = 10
# Seconds a connection may stay with no request in flight (HTTP/2: then GOAWAY).
idle_timeout_secs = 60
# Seconds a TLS handshake may take.
tls_handshake_timeout_secs = 10
# Connections open at once; when full, idle ones are closed to make room. Clamped at
# start to what the file limit (ulimit -n) leaves after the database and the webhooks.
max_connections = 4096
# Reverse proxies (CIDRs) trusted to say who their client was: only from these peers are
# Forwarded / X-Forwarded-For / X-Forwarded-Proto believed. Behind nginx on this machine:
# ["127.0.0.1/32", "::1/128"].
trusted_proxies = []
# The header those proxies append the client's address to: "x-forwarded-for" (with
# X-Forwarded-Proto) or "forwarded" (RFC 7239). The other one is ignored: it holds what the
# client wrote.
proxy_header = "x-forwarded-for"

[storage]
# Database and state. Created 0700; the database file is 0600.
data_dir = "./clicktermd-data"
# "full": every acknowledged consent record is on disk. "normal" trades that for speed.
synchronous = "full"
# "sqlite" (one file in data_dir, one server) or "postgres" (several nodes on one database:
# README, "Beyond one machine").
backend = "sqlite"
# For "postgres": a libpq URL; its password is never logged. sslmode: disable, prefer,
# require, verify-ca, verify-full (rustls; postgres_ca_file, else the Mozilla roots).
# postgres_url = "postgres://clicktermd:PASSWORD@db.example:5432/clicktermd?sslmode=verify-full"
# Connections each node keeps open to PostgreSQL at most.
postgres_pool_size = 16
# postgres_ca_file = "/etc/clicktermd/db-ca.pem"

[log]
# "text" or "json".
format = "text"
# A tracing filter: "info", "debug", "clicktermd=debug,info" ...
level = "info"

[auth]
# Lifetime of an admin session, in seconds.
session_ttl_secs = 43200
# Failed logins allowed within the window before answering 429: per client address, and per user
# name whatever the address. A success resets only its own user name's count.
login_max_failures = 5
login_max_failures_per_user = 20
login_window_secs = 300
# Passwords checked at once (argon2id, ~19 MiB each); a login beyond it is answered 503 at once.
max_concurrent_logins = 2

[clickwrap]
# How long a clicktermSignature stays verifiable, in seconds.
signature_ttl_secs = 86400

[limits]
# Request rate limits; a refused request is answered 429 with Retry-After. 0 turns one off.
# Public client API requests per second of one integration (App Key), and the burst above the rate.
integration_requests_per_sec = 25000
integration_burst = 50000
# Re-acceptance pairs (end users x templates) per second one integration may ask for.
reaccept_pairs_per_sec = 1000
reaccept_pairs_burst = 2000
# SDK requests (the widget's, with only the App ID) per second from one client address (IPv6: its /64).
# Behind a reverse proxy every client has the proxy's address: raise this accordingly.
sdk_requests_per_sec_per_address = 100
sdk_burst_per_address = 200

[webhooks]
# Whole-attempt timeout in seconds (DNS, connect, TLS, request, response).
timeout_secs = 10
# Retries after the first attempt, with exponential backoff from retry_base_secs capped at retry_cap_secs.
max_retries = 3
retry_base_secs = 60
retry_cap_secs = 300
# CIDRs exempted from the forbidden (private, loopback, metadata ...) ranges, for on-prem receivers.
allow_private_cidrs = []
# Permit http:// callback URLs. For local demos only.
allow_http = false
# Extra trusted certificates (PEM) for callback endpoints: a private CA, or a receiver's own
# self-signed certificate (accepted as exactly that one, even with CA:TRUE). Read again when it changes.
# extra_ca_file = "/etc/clicktermd/receiver-ca.pem"
# DNS servers for callback host names ("ip" or "ip:port"); empty uses the system's resolv.conf.
dns_servers = []
# Attempts in flight at once, in total and for one integration (a dead endpoint only fills its own slots).
max_in_flight = 256
max_in_flight_per_integration = 16
# Attempts (the history of each try) of finished deliveries are pruned after this many days, in small
# batches; the deliveries themselves and every clickwrap event are kept. 0 keeps attempts forever.
attempt_retention_days = 90
# Client certificates (mutual TLS) presented to receivers that demand one, by integration: PEM files
# read at start (the certificate, then any intermediates; an unencrypted key). An integration's
# certificate can instead be uploaded in the dashboard or the admin API. For example:
#   client_certificates = [
#     { app_id = "<App ID>", cert_file = "/etc/clicktermd/client.pem", key_file = "/etc/clicktermd/client.key" },
#   ]
client_certificates = []
"#;

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn load_env(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        Config::load(
            None,
            vars.iter().map(|(k, v)| (k.to_string(), v.to_string())),
        )
    }

    /// The configuration table (docs/configuration.md) names every key of the defaults file, each with its default
    /// as written there: a key is `unset` when the file only shows it commented out, and the table's
    /// cell lists the values of a row's keys in order.
    #[test]
    fn the_readme_table_holds_every_key_with_its_default() {
        let mut defaults: BTreeMap<String, String> = BTreeMap::new();
        let mut section = String::new();
        for line in DEFAULT_CONFIG_TOML.lines() {
            if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
                section = name.to_string();
                continue;
            }
            let (commented, line) = match line.strip_prefix("# ") {
                Some(rest) => (true, rest),
                None => (false, line),
            };
            let Some((key, value)) = line.split_once(" = ") else {
                continue;
            };
            if key.contains(' ') || section.is_empty() {
                continue;
            }
            let value = if commented {
                "unset".to_string()
            } else {
                value.trim_matches('"').to_string()
            };
            defaults.insert(format!("{section}.{key}"), value);
        }
        let readme = include_str!("../docs/configuration.md");
        let mut table: BTreeMap<String, String> = BTreeMap::new();
        for row in readme.lines().filter(|l| l.starts_with("| `")) {
            let cells: Vec<&str> = row.split(" | ").collect();
            let ticked = |cell: &str| -> Vec<String> {
                cell.split('`')
                    .skip(1)
                    .step_by(2)
                    .map(str::to_string)
                    .collect()
            };
            let keys = ticked(cells[0].trim_start_matches("| "));
            if !keys.iter().all(|k| defaults.contains_key(k)) {
                continue;
            }
            let values = match cells[1] {
                "unset" => vec!["unset".to_string(); keys.len()],
                cell => ticked(cell),
            };
            assert_eq!(
                keys.len(),
                values.len(),
                "docs/configuration.md row {row:?}"
            );
            table.extend(keys.into_iter().zip(values));
        }
        assert_eq!(table, defaults, "docs/configuration.md's table");
    }

    #[test]
    fn default_config_file_parses_to_the_defaults() {
        let parsed: Config = toml::from_str(DEFAULT_CONFIG_TOML).unwrap();
        assert_eq!(parsed, Config::default());
    }

    #[test]
    fn env_overrides_are_typed_and_named() {
        let c = load_env(&[
            ("CLICKTERMD_WEBHOOKS__TIMEOUT_SECS", "0.5"),
            ("CLICKTERMD_SERVER__LISTEN", "127.0.0.1:0"),
            ("CLICKTERMD_STORAGE__DATA_DIR", "/tmp/x y"),
            (
                "CLICKTERMD_WEBHOOKS__ALLOW_PRIVATE_CIDRS",
                "[\"127.0.0.1/32\"]",
            ),
            ("UNRELATED", "1"),
        ])
        .unwrap();
        assert_eq!(c.webhooks.timeout_secs, 0.5);
        assert_eq!(c.server.listen.port(), 0);
        assert_eq!(c.storage.data_dir, PathBuf::from("/tmp/x y"));
        assert_eq!(
            c.webhooks.allow_private_cidrs,
            vec!["127.0.0.1/32".parse::<IpNet>().unwrap()]
        );
    }

    #[test]
    fn bad_input_names_the_key() {
        let cases: &[(&[(&str, &str)], &str)] = &[
            (
                &[("CLICKTERMD_SERVER__LISTEN_ADDR", "x")],
                "CLICKTERMD_SERVER__LISTEN_ADDR",
            ),
            (&[("CLICKTERMD_SERVER__LISTEN_ADDR", "x")], "listen_addr"),
            (&[("CLICKTERMD_NOPE__X", "1")], "nope"),
            (&[("CLICKTERMD_LISTEN", "1")], "CLICKTERMD_LISTEN"),
            (
                &[("CLICKTERMD_WEBHOOKS__TIMEOUT_SECS", "0")],
                "webhooks.timeout_secs",
            ),
            (
                &[("CLICKTERMD_WEBHOOKS__TIMEOUT_SECS", "ten")],
                "CLICKTERMD_WEBHOOKS__TIMEOUT_SECS",
            ),
            (
                &[("CLICKTERMD_SERVER__TLS_CERT", "/a.pem")],
                "server.tls_key",
            ),
            (
                &[("CLICKTERMD_WEBHOOKS__DNS_SERVERS", "[\"nameserver\"]")],
                "webhooks.dns_servers",
            ),
            (
                &[("CLICKTERMD_LOG__FORMAT", "xml")],
                "CLICKTERMD_LOG__FORMAT",
            ),
            (
                &[("CLICKTERMD_WEBHOOKS__RETRY_CAP_SECS", "1")],
                "webhooks.retry_cap_secs",
            ),
            (
                &[("CLICKTERMD_SERVER__HEADER_READ_TIMEOUT_SECS", "0")],
                "server.header_read_timeout_secs",
            ),
            (
                &[("CLICKTERMD_SERVER__BODY_READ_TIMEOUT_SECS", "3601")],
                "server.body_read_timeout_secs",
            ),
            (
                &[("CLICKTERMD_SERVER__IDLE_TIMEOUT_SECS", "0")],
                "server.idle_timeout_secs",
            ),
            (
                &[("CLICKTERMD_SERVER__TLS_HANDSHAKE_TIMEOUT_SECS", "0")],
                "server.tls_handshake_timeout_secs",
            ),
            (
                &[("CLICKTERMD_SERVER__MAX_CONNECTIONS", "0")],
                "server.max_connections",
            ),
            (
                &[("CLICKTERMD_SERVER__MAX_CONNECTIONS", "-1")],
                "CLICKTERMD_SERVER__MAX_CONNECTIONS",
            ),
        ];
        for (vars, needle) in cases {
            let err = load_env(vars).unwrap_err().to_string();
            assert!(
                err.contains(needle),
                "{vars:?}: {err:?} should name {needle:?}"
            );
        }
    }

    #[test]
    fn unknown_key_in_file_is_named_with_its_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "[server]\nlisten = \"127.0.0.1:1\"\nlsten = 3\n").unwrap();
        let err = Config::load(Some(&path), Vec::new())
            .unwrap_err()
            .to_string();
        assert!(err.contains("lsten") && err.contains("line 3"), "{err}");
    }

    #[test]
    fn mistakes_people_make_get_the_fix() {
        let cases: &[(&str, &str, &[&str])] = &[
            (
                "CLICKTERMD_WEBHOOKS__TIMEOUT_SECS",
                "ten",
                &["a number of seconds"],
            ),
            (
                "CLICKTERMD_WEBHOOKS__ALLOW_PRIVATE_CIDRS",
                "[\"127.0.0.1\"]",
                &["\"127.0.0.1/32\""],
            ),
            (
                "CLICKTERMD_WEBHOOKS__ALLOW_PRIVATE_CIDRS",
                "[\"::1\"]",
                &["\"::1/128\""],
            ),
            (
                "CLICKTERMD_SERVER__LISTEN",
                "localhost:8080",
                &["127.0.0.1:8080"],
            ),
            ("CLICKTERMD_SERVER__LISTEN", ":9000", &["127.0.0.1:9000"]),
            (
                "CLICKTERMD_SERVER__MAX_CONNECTIONS",
                "many",
                &["a whole number"],
            ),
            ("CLICKTERMD_WEBHOOKS__ALLOW_HTTP", "yes", &["true or false"]),
        ];
        for (var, value, needles) in cases {
            let err = load_env(&[(var, value)]).unwrap_err().to_string();
            for needle in *needles {
                assert!(
                    err.contains(needle),
                    "{var}={value}: {err:?} lacks {needle:?}"
                );
            }
            assert!(
                !err.contains("expected f64") && !err.contains("u64"),
                "{err}"
            );
        }
        // The same words in a file, with its line.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "[webhooks]\nallow_private_cidrs = [\"10.1.2.3\"]\n").unwrap();
        let err = Config::load(Some(&path), Vec::new())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("\"10.1.2.3/32\"") && err.contains("line 2"),
            "{err}"
        );
    }

    #[test]
    fn dns_server_spellings() {
        let parse = |s: &str| s.parse::<DnsServer>().ok().map(|d| d.0);
        assert_eq!(parse("127.0.0.1"), Some("127.0.0.1:53".parse().unwrap()));
        assert_eq!(
            parse("127.0.0.1:5353"),
            Some("127.0.0.1:5353".parse().unwrap())
        );
        assert_eq!(parse("::1"), Some("[::1]:53".parse().unwrap()));
        assert_eq!(parse("[::1]:5353"), Some("[::1]:5353".parse().unwrap()));
        assert_eq!(parse("dns.example"), None);
    }
}
