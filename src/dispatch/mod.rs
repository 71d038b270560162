//! The webhook dispatcher (SPEC §5, §6): a loop that claims due deliveries from the database with a
//! lease, sends each one as a signed `POST` through the pinned client, stores what happened, and
//! schedules the retry. Deliveries live only in SQLite, so a crash loses none: an attempt that was in
//! flight when the process died is claimed again when its lease runs out.
//!
//! Isolation: at most `max_in_flight` attempts run at once, and at most `max_in_flight_per_integration`
//! for any one integration, so a callback that hangs until the timeout only ever occupies its own slots.

pub mod client;
pub mod clients;
pub mod guard;
pub mod policy;
pub mod resolve;
pub mod settle;
pub mod tls;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hmac::{KeyInit, Mac};
use http_body_util::{BodyExt, Full};
use tokio::sync::{Notify, Semaphore, watch};

use crate::config::WebhookConfig;
use crate::model::{AttemptOutcome, DeliveryState, Timestamp};
use crate::store::deliveries::{Attempt, Busy, ClaimLimits, Claimed, Next};
use crate::store::{Store, StoreError};
use client::{CertificateAsked, ConnectError, PinnedConnector, RemoteAddr};
use policy::{Policy, Refusal};

/// Why the dispatcher or the URL guard cannot be built from `[webhooks]`.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("webhooks.extra_ca_file: {} {why}", path.display())]
    CaFile {
        path: std::path::PathBuf,
        why: String,
    },
    #[error("the TLS settings for callbacks: {0}")]
    Tls(#[from] rustls::Error),
    #[error("the certificate verifier for callbacks: {0}")]
    Verifier(String),
    #[error(transparent)]
    Resolver(#[from] resolve::ResolverError),
}

/// The first bytes of a response body kept in the history; reading stops there.
pub const BODY_EXCERPT: usize = 4096;

/// The policy the configuration asks for, knowing our own listen address.
pub fn policy_from_config(config: &WebhookConfig, self_addr: Option<SocketAddr>) -> Policy {
    Policy {
        allow_http: config.allow_http,
        allow_private_cidrs: config.allow_private_cidrs.clone(),
        self_addr,
    }
}

/// `sha256=<hex HMAC-SHA256(secret, "{timestamp}.{body}")>`, the `X-Clickterm-Signature` header.
pub fn sign(secret: &str, timestamp: i64, body: &[u8]) -> String {
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes())
        .expect("HMAC takes any key length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// The headers of one attempt, in the order they are sent: built once, sent as they are, and
/// recorded in the delivery history exactly so. A test webhook carries `X-Clickterm-Test: true`, so a
/// receiver can tell it from a real one without reading the body (whose shape is the seed's either way).
pub fn attempt_headers(
    secret: &str,
    timestamp: i64,
    body: &[u8],
    is_test: bool,
) -> Vec<(&'static str, String)> {
    let mut headers = vec![
        ("Content-Type", "application/json".to_string()),
        ("User-Agent", USER_AGENT.to_string()),
        ("X-Clickterm-Timestamp", timestamp.to_string()),
        ("X-Clickterm-Signature", sign(secret, timestamp, body)),
    ];
    if is_test {
        headers.push((TEST_HEADER, "true".to_string()));
    }
    headers
}

/// The header that marks a test webhook.
pub const TEST_HEADER: &str = "X-Clickterm-Test";

/// The `User-Agent` of every attempt.
const USER_AGENT: &str = concat!("clicktermd/", env!("CARGO_PKG_VERSION"));

/// The wait before retry number `retry` (1 for the first retry): `base`, doubling, at most `cap`.
pub fn backoff(base_secs: f64, cap_secs: f64, retry: u32) -> Duration {
    let factor = 2f64.powi(retry.saturating_sub(1).min(30) as i32);
    Duration::from_secs_f64((base_secs * factor).min(cap_secs).max(0.0))
}

/// The dispatcher's settings, from `[webhooks]`.
#[derive(Clone, Debug)]
pub struct Settings {
    pub timeout: Duration,
    pub max_retries: u32,
    pub retry_base_secs: f64,
    pub retry_cap_secs: f64,
    pub max_in_flight: usize,
    pub max_in_flight_per_integration: usize,
}

impl Settings {
    pub fn from_config(c: &WebhookConfig) -> Settings {
        Settings {
            timeout: Duration::from_secs_f64(c.timeout_secs),
            max_retries: c.max_retries,
            retry_base_secs: c.retry_base_secs,
            retry_cap_secs: c.retry_cap_secs,
            max_in_flight: c.max_in_flight,
            max_in_flight_per_integration: c.max_in_flight_per_integration,
        }
    }

    /// A claim outlasts the longest possible attempt, so no delivery is sent twice while its first
    /// attempt is still running.
    fn lease(&self) -> Duration {
        self.timeout + Duration::from_secs(30)
    }
}

/// Tells whoever waits on it when the dispatcher has nothing to do now: every attempt it started is
/// stored, and a claim that began after they asked found nothing due. Tests wait on it where they
/// would otherwise sleep and hope ("the held delivery was not sent"); the server never does.
#[derive(Clone)]
pub struct Quiet(Arc<QuietInner>);

struct QuietInner {
    /// How many waits have begun; each is answered by a quiet pass that began after it.
    asked: AtomicU64,
    /// The `asked` count seen at the start of the latest quiet pass.
    reached: watch::Sender<u64>,
    wake: OnceLock<Arc<Notify>>,
}

impl Default for Quiet {
    fn default() -> Quiet {
        Quiet(Arc::new(QuietInner {
            asked: AtomicU64::new(0),
            reached: watch::Sender::new(0),
            wake: OnceLock::new(),
        }))
    }
}

impl Quiet {
    /// Waits until the dispatcher has been quiet after this call began (it is woken to look).
    pub async fn wait(&self) {
        let asked = self.0.asked.fetch_add(1, Ordering::SeqCst) + 1;
        if let Some(wake) = self.0.wake.get() {
            wake.notify_one();
        }
        let mut reached = self.0.reached.subscribe();
        let _ = reached.wait_for(|&r| r >= asked).await;
    }

    fn asked(&self) -> u64 {
        self.0.asked.load(Ordering::SeqCst)
    }

    fn reached(&self, asked: u64) {
        self.0.reached.send_if_modified(|r| {
            let newer = asked > *r;
            if newer {
                *r = asked;
            }
            newer
        });
    }
}

#[derive(Clone)]
pub struct Dispatcher {
    store: Store,
    /// The pooled clients: one per client certificate, and the default one (see `clients`).
    clients: Arc<clients::Clients>,
    policy: Arc<Policy>,
    settings: Settings,
    wake: Arc<Notify>,
    permits: Arc<Semaphore>,
    per_integration: Busy,
    metrics: Arc<crate::metrics::Metrics>,
    quiet: Quiet,
}

impl Dispatcher {
    /// `configured` holds the client certificates named in the config file, by integration row.
    pub fn new(
        store: Store,
        config: &WebhookConfig,
        guard: &guard::UrlGuard,
        configured: HashMap<i64, Arc<crate::client_cert::ClientCertificate>>,
        wake: Arc<Notify>,
        metrics: Arc<crate::metrics::Metrics>,
    ) -> Result<Dispatcher, SetupError> {
        let settings = Settings::from_config(config);
        let policy = guard.policy.clone();
        let tls = Arc::new(tls::CallbackTls::new(config.extra_ca_file.as_deref())?);
        let connector = PinnedConnector {
            policy: policy.clone(),
            resolver: guard.resolver.clone(),
            tls,
            dns_budget: guard.dns_budget,
            dials: Arc::default(),
            identity: None,
        };
        let permits = Arc::new(Semaphore::new(settings.max_in_flight));
        Ok(Dispatcher {
            store,
            clients: Arc::new(clients::Clients::new(connector, configured)),
            policy,
            settings,
            wake,
            permits,
            per_integration: Arc::new(Mutex::new(HashMap::new())),
            metrics,
            quiet: Quiet::default(),
        })
    }

    /// Reports to `quiet` whenever the dispatcher has nothing to do (see [`Quiet`]).
    pub fn report_quiet_to(&mut self, quiet: Quiet) {
        let _ = quiet.0.wake.set(self.wake.clone());
        self.quiet = quiet;
    }

    /// One pass: claims what is due within the concurrency limits and starts an attempt for each.
    /// Returns how many it started; [`Dispatcher::run`] calls it whenever it wakes.
    pub async fn tick(&self) -> Result<usize, StoreError> {
        let budget = self.permits.available_permits();
        if budget == 0 {
            return Ok(0);
        }
        let limits = ClaimLimits {
            budget,
            per_integration: self.settings.max_in_flight_per_integration,
            lease: self.settings.lease(),
        };
        let claimed: Vec<Claimed> = self
            .store
            .claim_due_deliveries(limits, self.per_integration.clone())
            .await?;
        let started = claimed.len();
        for claim in claimed {
            let permit = self
                .permits
                .clone()
                .try_acquire_owned()
                .expect("a permit for every claim");
            let this = self.clone();
            tokio::spawn(async move {
                let integration = claim.integration_id;
                let slot = this.clone();
                // The integration's slot is free once the HTTP exchange is over; the global permit is
                // held until the attempt is stored, so shutdown still waits for every record.
                this.attempt(claim, move || slot.release_slot(integration))
                    .await;
                drop(permit);
                this.wake.notify_one();
            });
        }
        Ok(started)
    }

    /// One of `integration`'s attempts finished its HTTP exchange: another may start.
    fn release_slot(&self, integration: i64) {
        let mut counts = self.per_integration.lock().expect("counts lock");
        if let Some(n) = counts.get_mut(&integration) {
            *n -= 1;
            if *n == 0 {
                counts.remove(&integration);
            }
        }
        drop(counts);
        self.wake.notify_one();
    }

    /// Runs until `shutdown` turns true, then waits for attempts in flight (at most their timeout).
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        tracing::info!(
            max_in_flight = self.settings.max_in_flight,
            per_integration = self.settings.max_in_flight_per_integration,
            exceptions = ?self.policy.allow_private_cidrs,
            allow_http = self.policy.allow_http,
            "webhook dispatcher started"
        );
        while !*shutdown.borrow() {
            self.metrics.heartbeat();
            let asked = self.quiet.asked();
            let started = match self.tick().await {
                Ok(0) if self.permits.available_permits() == self.settings.max_in_flight => {
                    self.quiet.reached(asked);
                    0
                }
                Ok(n) => n,
                Err(e) => {
                    tracing::error!(error = %e, "dispatcher: claiming deliveries failed");
                    0
                }
            };
            let wait = if started > 0 && self.permits.available_permits() > 0 {
                Duration::ZERO
            } else {
                match self.store.next_delivery_wake().await {
                    Ok(Some(at)) => {
                        let ms = at.millis() - Timestamp::now().millis();
                        // Due now but nothing could start (limits): wait for an attempt to finish.
                        if ms <= 0 {
                            Duration::from_secs(1)
                        } else {
                            Duration::from_millis(ms as u64).min(Duration::from_secs(60))
                        }
                    }
                    Ok(None) => Duration::from_secs(60),
                    Err(e) => {
                        tracing::error!(error = %e, "dispatcher: reading the queue failed");
                        Duration::from_secs(1)
                    }
                }
            };
            if wait.is_zero() {
                continue;
            }
            tokio::select! {
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(wait) => {}
                _ = shutdown.changed() => {}
            }
        }
        let all = self.settings.max_in_flight as u32;
        let grace = self.settings.timeout + Duration::from_secs(2);
        if tokio::time::timeout(grace, self.permits.acquire_many(all))
            .await
            .is_err()
        {
            tracing::warn!(
                "dispatcher: attempts still running at shutdown; they will be retried after restart"
            );
        }
        tracing::info!("webhook dispatcher stopped");
    }

    /// Sends one attempt and stores its outcome with the delivery's next state.
    /// `exchanged` runs once the HTTP exchange is over, before the attempt is stored.
    async fn attempt(&self, claim: Claimed, exchanged: impl FnOnce()) {
        let number = claim.attempts + 1;
        let started_at = Timestamp::now();
        let start = Instant::now();
        let timestamp = started_at.millis().div_euclid(1000);
        let headers = attempt_headers(&claim.secret, timestamp, &claim.payload, claim.is_test);
        let observed =
            match tokio::time::timeout(self.settings.timeout, self.send(&claim, &headers)).await {
                Ok(o) => o,
                Err(_) => Observed::failed(
                    AttemptOutcome::Timeout,
                    format!(
                        "no complete answer within {} ms",
                        self.settings.timeout.as_millis()
                    ),
                ),
            };
        let elapsed = start.elapsed();
        let duration_ms = elapsed.as_millis() as i64;
        let next = if observed.outcome.is_success() {
            Next::Succeeded
        } else if number <= self.settings.max_retries as i64 {
            let wait = backoff(
                self.settings.retry_base_secs,
                self.settings.retry_cap_secs,
                number as u32,
            );
            Next::Retry(Timestamp(
                Timestamp::now().millis() + wait.as_millis() as i64,
            ))
        } else {
            Next::Failed
        };
        exchanged();
        let finished = match next {
            Next::Succeeded => Some(DeliveryState::Succeeded),
            Next::Failed => Some(DeliveryState::Failed),
            Next::Retry(_) => None,
        };
        self.metrics
            .attempt(observed.outcome, elapsed.as_secs_f64(), finished);
        // Every attempt is in the delivery history; the log names the failed ones at `info` and the
        // successful ones only at `debug` (at thousands a second they would drown everything else).
        let failed = !observed.outcome.is_success();
        if failed || tracing::enabled!(tracing::Level::DEBUG) {
            // The host only: a callback URL's path or query may carry a customer's token.
            let host = url::Url::parse(&claim.url)
                .ok()
                .and_then(|u| u.host_str().map(str::to_string))
                .unwrap_or_default();
            let (delivery, outcome, status) = (
                &claim.delivery_id,
                observed.outcome.as_str(),
                observed.status,
            );
            if failed {
                tracing::info!(%delivery, %host, attempt = number, outcome, status, duration_ms,
                    "webhook attempt failed");
            } else {
                tracing::debug!(%delivery, %host, attempt = number, outcome, status, duration_ms,
                    "webhook attempt");
            }
        }
        let recorded: serde_json::Map<String, serde_json::Value> = headers
            .into_iter()
            .map(|(name, value)| (name.to_string(), value.into()))
            .collect();
        let record = Attempt {
            number,
            trigger: claim.trigger,
            started_at,
            duration_ms,
            url: claim.url.clone(),
            remote_addr: observed.remote.map(|a| a.to_string()),
            request_headers: serde_json::Value::Object(recorded).to_string(),
            response_status: observed.status,
            response_body: observed.body,
            outcome: observed.outcome,
            detail: observed.detail,
        };
        let stored = self.store.record_attempt(&claim, record, next).await;
        if let Err(e) = stored {
            // The lease runs out and the delivery is attempted again: at least once, never lost.
            tracing::error!(delivery = %claim.delivery_id, error = %e, "storing an attempt failed");
        }
    }

    async fn send(&self, claim: &Claimed, headers: &[(&'static str, String)]) -> Observed {
        // The URL was judged when it was saved; judge it again, since the policy or the URL may differ.
        if let Err(refusal) = self.policy.check_url(&claim.url) {
            return Observed::refused(&refusal);
        }
        let request = headers
            .iter()
            .fold(http::Request::post(&claim.url), |r, (name, value)| {
                r.header(*name, value)
            })
            .body(Full::new(Bytes::from(claim.payload.clone())));
        let request = match request {
            Ok(r) => r,
            Err(e) => {
                return Observed::failed(
                    AttemptOutcome::InvalidUrl,
                    format!("cannot build the request: {e}"),
                );
            }
        };
        let chosen = match self.clients.for_attempt(
            claim.integration_id,
            claim.client_cert.as_ref(),
            Timestamp::now(),
        ) {
            Ok(chosen) => chosen,
            Err(detail) => return Observed::failed(AttemptOutcome::TlsError, detail),
        };
        let response = match chosen.client.request(request).await {
            Ok(r) => r,
            Err(e) => {
                return Observed::from_client_error(&e, &claim.url, chosen.certificate.as_deref());
            }
        };
        let remote = response.extensions().get::<RemoteAddr>().map(|r| r.0);
        let asked = response.extensions().get::<CertificateAsked>().cloned();
        let status = response.status();
        let location = response
            .headers()
            .get(http::header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        // Read at most the excerpt; a body that never ends is cut off by the attempt's timeout.
        let mut body = response.into_body();
        let mut excerpt = Vec::new();
        while excerpt.len() < BODY_EXCERPT {
            match body.frame().await {
                Some(Ok(frame)) => {
                    if let Some(data) = frame.data_ref() {
                        let room = BODY_EXCERPT - excerpt.len();
                        excerpt.extend_from_slice(&data[..data.len().min(room)]);
                    }
                }
                Some(Err(_)) | None => break,
            }
        }
        let page = asked.as_ref().and_then(|asked| {
            certificate_page(status, &excerpt, asked, chosen.certificate.as_deref())
        });
        let (outcome, detail) = if let Some(detail) = page {
            (AttemptOutcome::TlsError, Some(detail))
        } else if status == http::StatusCode::OK {
            (AttemptOutcome::Ok, None)
        } else if status.is_redirection() {
            (
                AttemptOutcome::RedirectRefused,
                Some(format!(
                    "{status} to {} not followed",
                    location.as_deref().unwrap_or("(no Location)")
                )),
            )
        } else {
            (
                AttemptOutcome::HttpStatus,
                Some(format!("{status}: only 200 counts as delivered")),
            )
        };
        Observed {
            outcome,
            status: Some(status.as_u16()),
            remote,
            body: excerpt,
            detail,
        }
    }
}

/// A receiver that asked for a client certificate in the handshake and answered 400 with a page about
/// it — as nginx does with `ssl_verify_client on` ("400 No required SSL certificate was sent", "400
/// The SSL certificate error"), finishing the handshake either way — refused the connection's TLS
/// identity, not the webhook: that is a `tls_error`, explained like a refusal in the handshake.
fn certificate_page(
    status: http::StatusCode,
    body: &[u8],
    asked: &CertificateAsked,
    presented: Option<&crate::client_cert::ClientCertificate>,
) -> Option<String> {
    if status != http::StatusCode::BAD_REQUEST {
        return None;
    }
    let text = String::from_utf8_lossy(body);
    let said = [
        "No required SSL certificate was sent",
        "SSL certificate error",
    ]
    .into_iter()
    .find(|phrase| text.contains(phrase))?;
    let answered = format!("it answered 400 \"{said}\"");
    Some(match presented {
        None => format!("{} ({answered})", tls::certificate_missing(&asked.issuers)),
        Some(presented) => tls::certificate_refused(presented, &answered, &asked.issuers),
    })
}

/// Attempts deleted per write transaction when pruning, so pruning never holds the writer for long.
pub const PRUNE_BATCH: u32 = 500;

/// How often old attempts are pruned (and once at start).
const PRUNE_EVERY: Duration = Duration::from_secs(3600);

/// Deletes the attempts of finished deliveries older than `retention_days` in batches of
/// [`PRUNE_BATCH`], each its own write, yielding between them. Returns how many were deleted.
pub async fn prune_attempts(store: &Store, retention_days: u32) -> Result<usize, StoreError> {
    if retention_days == 0 {
        return Ok(0);
    }
    let before = Timestamp(Timestamp::now().millis() - i64::from(retention_days) * 86_400_000);
    let mut total = 0;
    loop {
        let n = store.prune_attempts(before, PRUNE_BATCH).await?;
        total += n;
        if n < PRUNE_BATCH as usize {
            return Ok(total);
        }
        tokio::task::yield_now().await;
    }
}

/// Prunes at start and then every hour until `shutdown`.
pub async fn run_pruning(store: Store, retention_days: u32, mut shutdown: watch::Receiver<bool>) {
    if retention_days == 0 {
        return;
    }
    while !*shutdown.borrow() {
        match prune_attempts(&store, retention_days).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(
                attempts = n,
                retention_days,
                "pruned the history of old finished deliveries"
            ),
            Err(e) => tracing::error!(error = %e, "pruning old attempts failed"),
        }
        tokio::select! {
            _ = tokio::time::sleep(PRUNE_EVERY) => {}
            _ = shutdown.changed() => {}
        }
    }
}

/// What one attempt saw.
struct Observed {
    outcome: AttemptOutcome,
    status: Option<u16>,
    remote: Option<SocketAddr>,
    body: Vec<u8>,
    detail: Option<String>,
}

impl Observed {
    fn failed(outcome: AttemptOutcome, detail: String) -> Observed {
        Observed {
            outcome,
            status: None,
            remote: None,
            body: Vec::new(),
            detail: Some(detail),
        }
    }

    fn refused(r: &Refusal) -> Observed {
        let outcome = match r {
            Refusal::Forbidden { .. } | Refusal::SelfAddress(_) | Refusal::LocalhostName(_) => {
                AttemptOutcome::BlockedAddress
            }
            Refusal::NoAddresses(_) => AttemptOutcome::DnsError,
            _ => AttemptOutcome::InvalidUrl,
        };
        Observed::failed(outcome, format!("blocked: {r}"))
    }

    /// `presented` is the client certificate the attempt's connections present, if any.
    fn from_client_error(
        e: &hyper_util::client::legacy::Error,
        url: &str,
        presented: Option<&crate::client_cert::ClientCertificate>,
    ) -> Observed {
        // A refusal by TLS that arrives after the handshake (TLS 1.3: a demanded client certificate
        // is refused once the client has sent its Finished), on the connection's first request.
        let mut source = std::error::Error::source(e);
        while let Some(s) = source {
            let tls = s.downcast_ref::<rustls::Error>().or_else(|| {
                s.downcast_ref::<std::io::Error>()
                    .and_then(|io| io.get_ref())
                    .and_then(|inner| inner.downcast_ref::<rustls::Error>())
            });
            if let Some(tls) = tls {
                let host = url::Url::parse(url)
                    .ok()
                    .and_then(|u| u.host_str().map(str::to_string))
                    .unwrap_or_default();
                return Observed::failed(
                    AttemptOutcome::TlsError,
                    format!(
                        "TLS with {host} failed: {}",
                        tls::explain_rustls(
                            &host,
                            tls,
                            &tls::ClientAuthSeen {
                                presented,
                                ..Default::default()
                            }
                        )
                    ),
                );
            }
            source = s.source();
        }
        let mut source = std::error::Error::source(e);
        while let Some(s) = source {
            if let Some(ce) = s.downcast_ref::<ConnectError>() {
                return match ce {
                    ConnectError::Dns(m) => {
                        Observed::failed(AttemptOutcome::DnsError, m.to_string())
                    }
                    ConnectError::Blocked(r) => Observed::refused(r),
                    ConnectError::Connect { .. } | ConnectError::Shared(_) => {
                        Observed::failed(AttemptOutcome::ConnectError, ce.to_string())
                    }
                    ConnectError::Tls { .. } => {
                        Observed::failed(AttemptOutcome::TlsError, ce.to_string())
                    }
                    ConnectError::InvalidUrl(m) => {
                        Observed::failed(AttemptOutcome::InvalidUrl, m.clone())
                    }
                };
            }
            source = s.source();
        }
        Observed::failed(
            AttemptOutcome::ConnectError,
            format!("the connection failed: {}", error_chain(e)),
        )
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

/// The decision of `clicktermd check-url`: what the dispatcher would do with this URL now, decided by
/// the same policy and resolver without connecting anywhere. `Ok` carries an explanation of why it is
/// allowed; `Err` the reason it is refused.
pub async fn check_url(
    config: &WebhookConfig,
    self_addr: SocketAddr,
    raw: &str,
) -> Result<String, String> {
    guard::UrlGuard::from_config(config, Some(self_addr))
        .map_err(|e| e.to_string())?
        .explain(raw)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_certificate_page_after_asking_is_a_tls_failure() {
        let asked = CertificateAsked {
            issuers: vec!["CN=Company CA".into()],
        };
        let nginx = b"<html><head><title>400 No required SSL certificate was sent</title></head>";
        let bad = http::StatusCode::BAD_REQUEST;
        let missing = certificate_page(bad, nginx, &asked, None).unwrap();
        assert!(
            missing.contains("this integration has none")
                && missing.contains("CN=Company CA")
                && missing.contains("No required SSL certificate was sent"),
            "{missing}"
        );
        // Any other 400, or a 200 that quotes the phrase, is the receiver's answer.
        assert_eq!(
            certificate_page(bad, b"{\"error\":\"bad\"}", &asked, None),
            None
        );
        assert_eq!(
            certificate_page(http::StatusCode::OK, nginx, &asked, None),
            None
        );
    }

    #[test]
    fn the_retry_schedule_is_the_seeds() {
        let waits: Vec<u64> = (1..=4).map(|n| backoff(60.0, 300.0, n).as_secs()).collect();
        assert_eq!(waits, [60, 120, 240, 300]);
        assert_eq!(backoff(0.1, 0.3, 3), Duration::from_secs_f64(0.3));
    }

    #[test]
    fn signatures_follow_the_seed() {
        // The known answer, from outside this code: printf '1711800000.{"a":1}' | openssl dgst
        // -sha256 -hmac whsec_test (Python's hmac module gives the same).
        assert_eq!(
            sign("whsec_test", 1711800000, br#"{"a":1}"#),
            "sha256=fb39d81fcf456c76fd952cb1e2d2290b04dc11cbec5c5dce69c404a88a594944"
        );
    }
}
