//! What `/metrics` reports, in the Prometheus/OpenMetrics text format (prometheus-client).
//!
//! Counters and the attempt-duration histogram live in memory and count since the process started; the
//! queue figures (depth by state, age of the oldest due delivery) are read from the database at scrape
//! time, so they are true even right after a restart, and so is the proof-of-consent ledger's head
//! (its position, and its hash as the one label of an info metric, so an operator's scraper keeps a
//! record of heads to anchor the chain with). Labels otherwise carry only closed lists (outcome, state,
//! status code): never an App ID, a URL or anything else that grows with the data; the head's hash is
//! one series at a time, made at each scrape.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::model::{AttemptOutcome, ChainHead, DeliveryState, Timestamp};
use crate::store::WriterStats;
use crate::store::deliveries::QueueStats;

/// The content type of [`Metrics::render`].
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Upper bounds of the attempt-duration buckets, in seconds: from a fast loopback answer to the 10 s
/// timeout.
const DURATION_BUCKETS: [f64; 12] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 15.0,
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Outcome {
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct State {
    state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Status {
    status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LimitLabel {
    limit: &'static str,
}

pub struct Metrics {
    registry: Registry,
    attempts: Family<Outcome, Counter>,
    finished: Family<State, Counter>,
    attempt_duration: Histogram,
    verify_requests: Family<Status, Counter>,
    rate_limited: Family<LimitLabel, Counter>,
    queue: Family<State, Gauge>,
    oldest_due: Gauge<f64, AtomicU64>,
    heartbeat_age: Gauge<f64, AtomicU64>,
    /// When the dispatcher's loop last came round (Unix ms); 0 before it started.
    heartbeat: AtomicI64,
    /// The ledger's head as read for the scrape in progress.
    ledger: Arc<std::sync::Mutex<ChainHead>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("clicktermd");
        let attempts = Family::<Outcome, Counter>::default();
        registry.register(
            "webhook_attempts",
            "Webhook attempts by outcome (ok, http_status, redirect_refused, timeout, dns_error, blocked_address, connect_error, tls_error, invalid_url)",
            attempts.clone(),
        );
        let finished = Family::<State, Counter>::default();
        registry.register(
            "webhook_deliveries_finished",
            "Deliveries that reached a final state (succeeded, failed) through an attempt",
            finished.clone(),
        );
        let attempt_duration = Histogram::new(DURATION_BUCKETS);
        registry.register_with_unit(
            "webhook_attempt_duration",
            "Duration of webhook attempts, DNS to the end of the capped body read",
            prometheus_client::registry::Unit::Seconds,
            attempt_duration.clone(),
        );
        let verify_requests = Family::<Status, Counter>::default();
        registry.register(
            "verify_requests",
            "POST /public-client/v1/clickwrap/verify requests by response status",
            verify_requests.clone(),
        );
        let rate_limited = Family::<LimitLabel, Counter>::default();
        registry.register(
            "rate_limited_requests",
            "Requests answered 429 by a rate limit (integration, reaccept_pairs, client_address)",
            rate_limited.clone(),
        );
        let queue = Family::<State, Gauge>::default();
        registry.register(
            "webhook_queue_depth",
            "Deliveries not yet finished, by state (pending, in_flight, held)",
            queue.clone(),
        );
        let oldest_due = Gauge::<f64, AtomicU64>::default();
        registry.register_with_unit(
            "webhook_oldest_due_age",
            "How long the oldest pending delivery has been due (the dispatcher's lag); 0 when none is due",
            prometheus_client::registry::Unit::Seconds,
            oldest_due.clone(),
        );
        let heartbeat_age = Gauge::<f64, AtomicU64>::default();
        registry.register_with_unit(
            "dispatcher_heartbeat_age",
            "Time since the webhook dispatcher's loop last came round; it comes round at least every 60 s",
            prometheus_client::registry::Unit::Seconds,
            heartbeat_age.clone(),
        );
        let ledger = Arc::new(std::sync::Mutex::new(ChainHead::EMPTY));
        registry.register_collector(Box::new(LedgerCollector(ledger.clone())));
        Metrics {
            ledger,
            registry,
            attempts,
            finished,
            attempt_duration,
            verify_requests,
            rate_limited,
            queue,
            oldest_due,
            heartbeat_age,
            heartbeat: AtomicI64::new(0),
        }
    }

    /// One webhook attempt ended with `outcome` after `seconds`; `finished` names the final state it
    /// led to, if any.
    pub fn attempt(&self, outcome: AttemptOutcome, seconds: f64, finished: Option<DeliveryState>) {
        self.attempts
            .get_or_create(&Outcome {
                outcome: outcome.as_str(),
            })
            .inc();
        self.attempt_duration.observe(seconds);
        if let Some(state) = finished {
            self.finished
                .get_or_create(&State {
                    state: state.as_str(),
                })
                .inc();
        }
    }

    /// Reports the database writer's totals ([`WriterStats`]) and the free space of `data_dir`'s file
    /// system at every scrape.
    pub fn register_store(&mut self, stats: Arc<WriterStats>, data_dir: std::path::PathBuf) {
        self.registry
            .register_collector(Box::new(StoreCollector(stats, data_dir)));
    }

    /// A verify request was answered with `status`.
    pub fn verify_request(&self, status: u16) {
        self.verify_requests
            .get_or_create(&Status {
                status: status.to_string(),
            })
            .inc();
    }

    /// A request was refused by the rate limit named `limit`.
    pub fn rate_limited(&self, limit: &'static str) {
        self.rate_limited.get_or_create(&LimitLabel { limit }).inc();
    }

    /// The dispatcher's loop came round.
    pub fn heartbeat(&self) {
        self.heartbeat
            .store(Timestamp::now().millis(), Ordering::Relaxed);
    }

    /// The text for a scrape, with the queue figures and the ledger's head read just before.
    pub fn render(&self, queue: &QueueStats, ledger: ChainHead, now: Timestamp) -> String {
        *self.ledger.lock().expect("the head is only ever copied") = ledger;
        for (state, n) in [
            (DeliveryState::Pending, queue.pending),
            (DeliveryState::InFlight, queue.in_flight),
            (DeliveryState::Held, queue.held),
        ] {
            self.queue
                .get_or_create(&State {
                    state: state.as_str(),
                })
                .set(n);
        }
        let lag = queue
            .oldest_due_at
            .map(|at| (now.millis() - at.millis()).max(0) as f64 / 1000.0)
            .unwrap_or(0.0);
        self.oldest_due.set(lag);
        let beat = self.heartbeat.load(Ordering::Relaxed);
        let age = if beat == 0 {
            // Not started yet: as old as can be, so an alert on it fires.
            f64::INFINITY
        } else {
            (now.millis() - beat).max(0) as f64 / 1000.0
        };
        self.heartbeat_age.set(age);
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String does not fail");
        out
    }
}

/// The ledger's head at scrape time: `ledger_head_position` (links in the chain) and
/// `ledger_head_info{position, hash} 1`.
#[derive(Debug)]
struct LedgerCollector(Arc<std::sync::Mutex<ChainHead>>);

impl Collector for LedgerCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let head = *self.0.lock().expect("the head is only ever copied");
        let position = prometheus_client::metrics::gauge::ConstGauge::new(head.position);
        let metric = encoder.encode_descriptor(
            "ledger_head_position",
            "Links in the proof-of-consent ledger: the position of its head",
            None,
            position.metric_type(),
        )?;
        position.encode(metric)?;
        let info = prometheus_client::metrics::info::Info::new(vec![
            ("position", head.position.to_string()),
            ("hash", head.hash.to_hex()),
        ]);
        let metric = encoder.encode_descriptor(
            "ledger_head",
            "The ledger's head: note its hash elsewhere to prove later that nothing before it changed",
            None,
            info.metric_type(),
        )?;
        info.encode(metric)
    }
}

/// The database writer's running totals, read at scrape time.
#[derive(Debug)]
struct StoreCollector(Arc<WriterStats>, std::path::PathBuf);

impl Collector for StoreCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let f = self.0.figures();
        for (name, help, value) in [
            (
                "db_write_batches",
                "Write batches committed by the database writer (one transaction each)",
                f.batches,
            ),
            (
                "db_write_jobs",
                "Write jobs run by the database writer; divided by batches, the mean batch size",
                f.jobs,
            ),
            (
                "db_log_syncs",
                "fdatasync calls on the write-ahead log; each makes every batch before it durable",
                f.syncs,
            ),
        ] {
            let counter = ConstCounter::new(value);
            let metric = encoder.encode_descriptor(name, help, None, counter.metric_type())?;
            counter.encode(metric)?;
        }
        let full =
            prometheus_client::metrics::gauge::ConstGauge::new(i64::from(self.0.disk_full()));
        let metric = encoder.encode_descriptor(
            "storage_disk_full",
            "1 while writes fail because the disk holding the database is full, else 0",
            None,
            full.metric_type(),
        )?;
        full.encode(metric)?;
        if let Some(free) = crate::store::free_bytes(&self.1) {
            let free = prometheus_client::metrics::gauge::ConstGauge::new(free as i64);
            let metric = encoder.encode_descriptor(
                "storage_free",
                "Space left for clicktermd on the file system holding the data directory",
                Some(&prometheus_client::registry::Unit::Bytes),
                free.metric_type(),
            )?;
            free.encode(metric)?;
        }
        let seconds = prometheus_client::registry::Unit::Seconds;
        for (name, help, value) in [
            (
                "db_writer_busy",
                "Time the database writer spent running and committing batches",
                f.busy_seconds,
            ),
            (
                "db_log_sync",
                "Time spent in fdatasync of the write-ahead log",
                f.sync_seconds,
            ),
        ] {
            let counter = ConstCounter::new(value);
            let metric =
                encoder.encode_descriptor(name, help, Some(&seconds), counter.metric_type())?;
            counter.encode(metric)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_every_family_with_its_labels() {
        let mut m = Metrics::new();
        m.register_store(Arc::new(WriterStats::default()), std::env::temp_dir());
        m.heartbeat();
        m.attempt(AttemptOutcome::Ok, 0.02, Some(DeliveryState::Succeeded));
        m.attempt(AttemptOutcome::Timeout, 10.0, None);
        m.verify_request(200);
        m.verify_request(409);
        let now = Timestamp::now();
        let text = m.render(
            &QueueStats {
                pending: 3,
                in_flight: 1,
                held: 2,
                oldest_due_at: Some(Timestamp(now.millis() - 1500)),
            },
            ChainHead {
                position: 42,
                hash: crate::model::ChainHash([0xab; 32]),
            },
            now,
        );
        let info = format!(
            "clicktermd_ledger_head_info{{position=\"42\",hash=\"{}\"}} 1",
            "ab".repeat(32)
        );
        for line in [
            "clicktermd_webhook_attempts_total{outcome=\"ok\"} 1",
            "clicktermd_webhook_attempts_total{outcome=\"timeout\"} 1",
            "clicktermd_webhook_deliveries_finished_total{state=\"succeeded\"} 1",
            "clicktermd_webhook_attempt_duration_seconds_count 2",
            "clicktermd_webhook_attempt_duration_seconds_bucket{le=\"0.025\"} 1",
            "clicktermd_verify_requests_total{status=\"409\"} 1",
            "clicktermd_webhook_queue_depth{state=\"held\"} 2",
            "clicktermd_webhook_oldest_due_age_seconds 1.5",
            "clicktermd_db_write_batches_total 0",
            "clicktermd_db_write_jobs_total 0",
            "clicktermd_db_log_syncs_total 0",
            "clicktermd_db_writer_busy_seconds_total 0.0",
            "clicktermd_db_log_sync_seconds_total 0.0",
            "clicktermd_ledger_head_position 42",
            info.as_str(),
        ] {
            assert!(text.contains(line), "missing {line:?} in\n{text}");
        }
        assert!(text.ends_with("# EOF\n"));
    }
}
