//! The whole §6 decision for a callback URL, without connecting: the policy's static checks, then the
//! name resolved by the same resolver the dispatcher uses and every address judged. The admin API runs it
//! when a callback URL is saved, `clicktermd check-url` prints it, and the dispatcher's connector makes
//! the same decision again at every attempt (DNS answers change).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use super::SetupError;
use super::policy::{CallbackTarget, Policy, Refusal, TargetHost};
use super::resolve::{DnsResolver, LookupError};
use crate::config::WebhookConfig;
use crate::model::CallbackUrl;

/// Why a URL is refused: too long to store, by the policy, or because its name could not be resolved.
#[derive(Debug, thiserror::Error)]
pub enum UrlRefused {
    #[error("must be at most {} characters", CallbackUrl::MAX_LEN)]
    TooLong,
    #[error(transparent)]
    Policy(#[from] Refusal),
    #[error("{0}")]
    Dns(LookupError),
}

impl UrlRefused {
    /// The stable word of the refusal (`blocked_address`, `localhost`, `dns_error` …).
    pub fn code(&self) -> &'static str {
        match self {
            UrlRefused::TooLong => "too_long",
            UrlRefused::Policy(r) => r.code(),
            UrlRefused::Dns(_) => "dns_error",
        }
    }
}

/// A URL that passed, with the addresses its host has now.
#[derive(Debug)]
pub struct Judged {
    pub target: CallbackTarget,
    pub addrs: Vec<IpAddr>,
}

impl Judged {
    /// The host as written in the URL (name or address).
    pub fn host(&self) -> String {
        match &self.target.host {
            TargetHost::Ip(ip) => ip.to_string(),
            TargetHost::Name(n) => n.clone(),
        }
    }
}

/// The policy and the resolver, shared by the admin API, the dispatcher and the CLI.
pub struct UrlGuard {
    pub policy: Arc<Policy>,
    pub resolver: Arc<DnsResolver>,
    /// How long a lookup may take: part of an attempt's timeout, so connecting and TLS keep the rest.
    pub dns_budget: Duration,
}

impl UrlGuard {
    /// From `[webhooks]`, knowing our own listen address (refused as a callback target).
    pub fn from_config(
        config: &WebhookConfig,
        self_addr: Option<SocketAddr>,
    ) -> Result<UrlGuard, SetupError> {
        let servers: Vec<SocketAddr> = config.dns_servers.iter().map(|s| s.0).collect();
        let dns_budget = Duration::from_secs_f64(config.timeout_secs).mul_f64(0.6);
        Ok(UrlGuard {
            policy: Arc::new(super::policy_from_config(config, self_addr)),
            resolver: Arc::new(DnsResolver::new(&servers, dns_budget)?),
            dns_budget,
        })
    }

    /// Whether a callback URL may be saved, and the URL to save: the one admission of the admin API
    /// and the command line. Surrounding white space is ignored; then [`UrlGuard::judge`].
    pub async fn admit(&self, raw: &str) -> Result<CallbackUrl, UrlRefused> {
        let judged = self.judge(raw.trim()).await?;
        Ok(CallbackUrl::approved(&judged.target.url))
    }

    /// The length limit, the static checks, then (for a name) resolution and the judgement of every
    /// address. An IP literal was already judged by the static checks.
    pub async fn judge(&self, raw: &str) -> Result<Judged, UrlRefused> {
        if raw.len() > CallbackUrl::MAX_LEN {
            return Err(UrlRefused::TooLong);
        }
        let target = self.policy.check_url(raw)?;
        let addrs = match &target.host {
            TargetHost::Ip(ip) => vec![*ip],
            TargetHost::Name(name) => self
                .resolver
                .lookup(name, self.dns_budget)
                .await
                .map_err(UrlRefused::Dns)?,
        };
        let judged = Judged { target, addrs };
        self.policy
            .check_resolved_host(&judged.host(), &judged.addrs, judged.target.port)?;
        Ok(judged)
    }

    /// What `clicktermd check-url` prints: the decision, and for an allowed URL every address with the
    /// reason it is allowed (naming the exception where one was needed).
    pub async fn explain(&self, raw: &str) -> Result<String, String> {
        let judged = self
            .judge(raw)
            .await
            .map_err(|r| format!("refused ({}): {r}", r.code()))?;
        let mut lines = vec![format!(
            "allowed: {} (port {})",
            judged.target.url, judged.target.port
        )];
        for addr in &judged.addrs {
            let why = match self.policy.decide(*addr, judged.target.port) {
                Ok(allowed) => allowed.to_string(),
                Err(r) => r.to_string(),
            };
            lines.push(format!("  {addr}: {why}"));
        }
        Ok(lines.join("\n"))
    }
}
