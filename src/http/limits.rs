//! Request rate limits, so that a flood from one source slows only that source: per integration on
//! the public client API (every request costs one, a re-accept also each pair it asks for, from a
//! budget of its own), and per client address on the unauthenticated SDK endpoints. A refused request
//! is answered 429 with `Retry-After` before any database work.
//!
//! The buckets are governor's (GCRA: a rate and a burst, no timer thread). Their key maps are pruned
//! of keys that are back to a full bucket whenever they grow past [`PRUNE_ABOVE`], so addresses that
//! came and went cost no memory. IPv6 clients are keyed by their /64: one host can have millions of
//! addresses in its network, but rarely more than one network.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use std::sync::Arc;

use super::error::ApiError;
use crate::config::LimitsConfig;
use crate::metrics::Metrics;

/// Keys a bucket map holds before buckets that are full again are dropped.
const PRUNE_ABOVE: usize = 10_000;

/// Which limit refused a request: the 429's message and the metric's label.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Limit {
    Integration = 0,
    Reaccept = 1,
    Address = 2,
}

impl Limit {
    pub fn as_str(self) -> &'static str {
        match self {
            Limit::Integration => "integration",
            Limit::Reaccept => "reaccept_pairs",
            Limit::Address => "client_address",
        }
    }
}

struct Bucket<K: std::hash::Hash + Eq + Clone> {
    limiter: DefaultKeyedRateLimiter<K>,
    checks: AtomicU64,
}

impl<K: std::hash::Hash + Eq + Clone> Bucket<K> {
    /// `None` when the rate is 0 (the limit is off).
    fn new(per_sec: u32, burst: u32) -> Option<Bucket<K>> {
        let rate = NonZeroU32::new(per_sec)?;
        let burst = NonZeroU32::new(burst).unwrap_or(rate);
        Some(Bucket {
            limiter: RateLimiter::keyed(Quota::per_second(rate).allow_burst(burst)),
            checks: AtomicU64::new(0),
        })
    }

    /// `Err(seconds to wait)` when `key` has not `cost` left.
    fn take(&self, key: &K, cost: u32) -> Result<(), u64> {
        if self
            .checks
            .fetch_add(1, Ordering::Relaxed)
            .is_multiple_of(1024)
            && self.limiter.len() > PRUNE_ABOVE
        {
            self.limiter.retain_recent();
            self.limiter.shrink_to_fit();
        }
        let cost = NonZeroU32::new(cost.max(1)).expect("at least 1");
        match self.limiter.check_key_n(key, cost) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(not_until)) => Err(wait_secs(
                not_until.wait_time_from(DefaultClock::default().now()),
            )),
            // More than the burst at once can never pass; the callers bound the cost below it.
            Err(_) => Err(1),
        }
    }
}

fn wait_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

pub struct RequestLimits {
    integration: Option<Bucket<i64>>,
    reaccept: Option<Bucket<i64>>,
    address: Option<Bucket<IpAddr>>,
    metrics: Arc<Metrics>,
    /// When each limit last logged that it refuses requests (Unix ms): once a minute at most.
    logged: [std::sync::atomic::AtomicI64; 3],
}

impl RequestLimits {
    pub fn new(config: &LimitsConfig, metrics: Arc<Metrics>) -> RequestLimits {
        RequestLimits {
            metrics,
            logged: Default::default(),
            integration: Bucket::new(
                config.integration_requests_per_sec,
                config.integration_burst,
            ),
            reaccept: Bucket::new(config.reaccept_pairs_per_sec, config.reaccept_pairs_burst),
            address: Bucket::new(
                config.sdk_requests_per_sec_per_address,
                config.sdk_burst_per_address,
            ),
        }
    }

    /// One public-client-API request by the integration `id`.
    pub fn integration(&self, id: i64) -> Result<(), ApiError> {
        self.take(&self.integration, &id, 1, Limit::Integration)
    }

    /// A re-accept by the integration `id` asking for `pairs` pairs.
    pub fn reaccept(&self, id: i64, pairs: u32) -> Result<(), ApiError> {
        self.take(&self.reaccept, &id, pairs, Limit::Reaccept)
    }

    /// One SDK request from the client address `ip`.
    pub fn address(&self, ip: IpAddr) -> Result<(), ApiError> {
        self.take(&self.address, &address_key(ip), 1, Limit::Address)
    }

    fn take<K: std::hash::Hash + Eq + Clone>(
        &self,
        bucket: &Option<Bucket<K>>,
        key: &K,
        cost: u32,
        limit: Limit,
    ) -> Result<(), ApiError> {
        let Some(bucket) = bucket else {
            return Ok(());
        };
        bucket.take(key, cost).map_err(|wait| {
            self.metrics.rate_limited(limit.as_str());
            let now = crate::model::Timestamp::now().millis();
            let last = &self.logged[limit as usize];
            if now - last.load(Ordering::Relaxed) > 60_000 {
                last.store(now, Ordering::Relaxed);
                tracing::warn!(
                    limit = limit.as_str(),
                    "requests are being refused by a rate limit (counted in \
                     clicktermd_rate_limited_requests_total; logged once a minute at most)"
                );
            }
            refusal(limit, wait)
        })
    }
}

fn refusal(limit: Limit, wait: u64) -> ApiError {
    {
        let message = match limit {
            Limit::Integration => "too many requests from this integration",
            Limit::Reaccept => "too many re-acceptance requests from this integration",
            Limit::Address => "too many requests from this client address",
        };
        ApiError::rate_limited(message, wait.max(1))
    }
}

/// The key of a client address: IPv4 addresses as they are, IPv6 by their /64 network.
fn address_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let s = v6.segments();
            IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
        }
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(per_sec: u32, burst: u32) -> RequestLimits {
        RequestLimits::new(
            &LimitsConfig {
                integration_requests_per_sec: per_sec,
                integration_burst: burst,
                reaccept_pairs_per_sec: per_sec,
                reaccept_pairs_burst: burst,
                sdk_requests_per_sec_per_address: per_sec,
                sdk_burst_per_address: burst,
            },
            Arc::new(Metrics::new()),
        )
    }

    #[test]
    fn a_burst_then_refusals_with_a_wait_per_key() {
        let l = limits(1, 3);
        for _ in 0..3 {
            assert!(l.integration(1).is_ok());
        }
        let refused = l.integration(1).unwrap_err();
        assert_eq!(refused.status, axum::http::StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(refused.retry_after, Some(1));
        assert!(
            l.integration(2).is_ok(),
            "another integration has its own bucket"
        );
    }

    #[test]
    fn re_accepts_cost_their_pairs() {
        let l = limits(10, 100);
        assert!(l.reaccept(1, 60).is_ok());
        assert!(l.reaccept(1, 60).is_err(), "only 40 left");
        assert!(l.reaccept(1, 40).is_ok());
    }

    #[test]
    fn ipv6_clients_share_their_64() {
        let l = limits(1, 2);
        assert!(l.address("2001:db8::1".parse().unwrap()).is_ok());
        assert!(l.address("2001:db8::ffff:2".parse().unwrap()).is_ok());
        assert!(l.address("2001:db8::3".parse().unwrap()).is_err());
        assert!(l.address("2001:db8:0:1::1".parse().unwrap()).is_ok());
        // An IPv4-mapped address is its IPv4 address.
        assert!(l.address("127.0.0.1".parse().unwrap()).is_ok());
        assert!(l.address("::ffff:127.0.0.1".parse().unwrap()).is_ok());
        assert!(l.address("127.0.0.1".parse().unwrap()).is_err());
    }

    #[test]
    fn a_rate_of_zero_is_no_limit() {
        let l = limits(0, 0);
        for _ in 0..10_000 {
            assert!(l.integration(1).is_ok());
        }
    }

    #[test]
    fn maps_are_pruned_of_full_buckets() {
        let l = limits(1_000_000, 1_000_000);
        for i in 0..(PRUNE_ABOVE as u32 + 3000) {
            let _ = l.address(IpAddr::from(std::net::Ipv4Addr::from(i)));
        }
        let len = l.address.as_ref().unwrap().limiter.len();
        assert!(len <= PRUNE_ABOVE + 1024, "{len} keys kept");
    }
}
