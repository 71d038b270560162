//! Webhook health at a glance (issue #14): each integration's last 24 hours and its queue, the rule
//! that calls it failing, and the series the dashboard's charts draw (attempts per hour by outcome
//! with their latency, verified events per day by action). Everything is read from the kept
//! aggregates in `store::stats`, summed here; every window is bounded by the caller's limits.

use crate::error::{Error, Result};
use crate::model::{Action, AttemptOutcome, Timestamp};
use crate::store::Store;
use crate::store::stats::{self, DAY_MS, HOUR_MS};

/// The longest window of the hourly series (a week) and of the daily one (a quarter).
pub const MAX_HOURS: u32 = 168;
pub const MAX_DAYS: u32 = 90;

/// An integration's webhooks in one word.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HealthWord {
    /// Its latest attempt in the last 24 hours failed, and none has succeeded since.
    Failing,
    /// Some attempts failed in the last 24 hours, but the latest one succeeded.
    Degraded,
    /// Every attempt of the last 24 hours succeeded.
    Healthy,
    /// No attempt in the last 24 hours.
    Idle,
}

impl HealthWord {
    pub fn as_str(self) -> &'static str {
        match self {
            HealthWord::Failing => "failing",
            HealthWord::Degraded => "degraded",
            HealthWord::Healthy => "healthy",
            HealthWord::Idle => "idle",
        }
    }
}

/// Attempts counted by outcome, in `AttemptOutcome::ALL` order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Tally {
    pub by_outcome: [i64; AttemptOutcome::ALL.len()],
    /// Deliveries that failed for good.
    pub gave_up: i64,
    pub duration_ms: i64,
    pub max_duration_ms: i64,
}

/// Where `outcome` counts in [`Tally::by_outcome`].
fn index_of(outcome: AttemptOutcome) -> usize {
    AttemptOutcome::ALL
        .iter()
        .position(|o| *o == outcome)
        .expect("every outcome is in ALL")
}

impl Tally {
    fn add(&mut self, row: &stats::HourRow) {
        self.by_outcome[index_of(row.outcome)] += row.attempts;
        self.gave_up += row.gave_up;
        self.duration_ms += row.duration_ms;
        self.max_duration_ms = self.max_duration_ms.max(row.max_duration_ms);
    }

    pub fn attempts(&self) -> i64 {
        self.by_outcome.iter().sum()
    }

    pub fn delivered(&self) -> i64 {
        self.by_outcome[index_of(AttemptOutcome::Ok)]
    }

    pub fn failed(&self) -> i64 {
        self.attempts() - self.delivered()
    }

    /// Delivered attempts over all attempts; `None` with no attempt.
    pub fn success_rate(&self) -> Option<f64> {
        let n = self.attempts();
        (n > 0).then(|| self.delivered() as f64 / n as f64)
    }

    pub fn avg_duration_ms(&self) -> Option<i64> {
        let n = self.attempts();
        (n > 0).then(|| self.duration_ms / n)
    }

    /// The outcomes with their counts, zeros left out.
    pub fn outcomes(&self) -> impl Iterator<Item = (AttemptOutcome, i64)> + '_ {
        AttemptOutcome::ALL
            .iter()
            .copied()
            .zip(self.by_outcome)
            .filter(|(_, n)| *n > 0)
    }
}

/// One integration on the overview.
#[derive(Debug, Clone)]
pub struct IntegrationHealth {
    pub app_id: String,
    pub name: String,
    pub health: HealthWord,
    pub last_24h: Tally,
    pub last_success_at: Option<Timestamp>,
    pub last_failure: Option<stats::Failure>,
    pub pending: i64,
    pub in_flight: i64,
    pub held: i64,
    pub oldest_due_at: Option<Timestamp>,
    /// How long the oldest due delivery has been waiting past its time (0 when none is late).
    pub lag_ms: i64,
}

pub struct Overview {
    pub window: (Timestamp, Timestamp),
    pub integrations: Vec<IntegrationHealth>,
}

/// The start of the hour (or day) `t` falls in.
fn floor(t: Timestamp, unit: i64) -> Timestamp {
    Timestamp(t.millis() - t.millis().rem_euclid(unit))
}

/// The rule for the one word, from the figures of the last 24 hours.
pub fn judge(
    tally: &Tally,
    last_success_at: Option<Timestamp>,
    last_failure_at: Option<Timestamp>,
    since: Timestamp,
) -> HealthWord {
    match last_failure_at {
        Some(f) if f >= since && last_success_at.is_none_or(|s| s < f) => HealthWord::Failing,
        _ if tally.failed() > 0 => HealthWord::Degraded,
        _ if tally.attempts() > 0 => HealthWord::Healthy,
        _ => HealthWord::Idle,
    }
}

/// Every live integration, with the 24 hours before `now` (the current hour and the 23 before it).
pub async fn overview(store: &Store, now: Timestamp) -> Result<Overview> {
    let to = Timestamp(floor(now, HOUR_MS).millis() + HOUR_MS);
    let from = Timestamp(to.millis() - 24 * HOUR_MS);
    let since = Timestamp(now.millis() - DAY_MS);
    let (rows, live) = store.health_facts((from, to)).await?;
    let integrations = live
        .into_iter()
        .map(|h| {
            let mut tally = Tally::default();
            for r in rows.iter().filter(|r| r.integration_id == h.integration_id) {
                tally.add(r);
            }
            let health = judge(
                &tally,
                h.last_success_at,
                h.last_failure.as_ref().map(|f| f.at),
                since,
            );
            IntegrationHealth {
                app_id: h.app_id,
                name: h.name,
                health,
                last_24h: tally,
                last_success_at: h.last_success_at,
                last_failure: h.last_failure,
                pending: h.pending,
                in_flight: h.in_flight,
                held: h.held,
                oldest_due_at: h.oldest_due_at,
                lag_ms: h
                    .oldest_due_at
                    .map_or(0, |due| (now.millis() - due.millis()).max(0)),
            }
        })
        .collect();
    Ok(Overview {
        window: (from, to),
        integrations,
    })
}

/// One hour of the attempts chart.
pub struct HourBucket {
    pub start: Timestamp,
    pub tally: Tally,
}

/// Attempts per hour for the `hours` hours up to `now` (the current one last), of one integration or
/// all; every hour present, zeros included.
pub async fn attempts_by_hour(
    store: &Store,
    app_id: Option<String>,
    hours: u32,
    now: Timestamp,
) -> Result<((Timestamp, Timestamp), Vec<HourBucket>)> {
    let hours = hours.clamp(1, MAX_HOURS) as i64;
    let to = Timestamp(floor(now, HOUR_MS).millis() + HOUR_MS);
    let from = Timestamp(to.millis() - hours * HOUR_MS);
    let rows = store
        .attempt_hours((from, to), app_id)
        .await?
        .ok_or(Error::NotFound("integration"))?;
    let mut buckets: Vec<HourBucket> = (0..hours)
        .map(|i| HourBucket {
            start: Timestamp(from.millis() + i * HOUR_MS),
            tally: Tally::default(),
        })
        .collect();
    for r in &rows {
        let i = ((r.hour.millis() - from.millis()) / HOUR_MS) as usize;
        if let Some(b) = buckets.get_mut(i) {
            b.tally.add(r);
        }
    }
    Ok(((from, to), buckets))
}

/// One day of the events chart.
pub struct DayBucket {
    pub start: Timestamp,
    pub accepted: i64,
    pub declined: i64,
}

/// Verified events per UTC day (of their action) for the `days` days up to `now`, of one integration
/// or all; every day present.
pub async fn events_by_day(
    store: &Store,
    app_id: Option<String>,
    days: u32,
    now: Timestamp,
) -> Result<((Timestamp, Timestamp), Vec<DayBucket>)> {
    let days = days.clamp(1, MAX_DAYS) as i64;
    let to = Timestamp(floor(now, DAY_MS).millis() + DAY_MS);
    let from = Timestamp(to.millis() - days * DAY_MS);
    let rows = store
        .event_days((from, to), app_id)
        .await?
        .ok_or(Error::NotFound("integration"))?;
    let mut buckets: Vec<DayBucket> = (0..days)
        .map(|i| DayBucket {
            start: Timestamp(from.millis() + i * DAY_MS),
            accepted: 0,
            declined: 0,
        })
        .collect();
    for r in &rows {
        let i = ((r.day.millis() - from.millis()) / DAY_MS) as usize;
        if let Some(b) = buckets.get_mut(i) {
            match r.action {
                Action::Accepted => b.accepted += r.events,
                Action::Declined => b.declined += r.events,
            }
        }
    }
    Ok(((from, to), buckets))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tally(ok: i64, failed: i64) -> Tally {
        let mut t = Tally::default();
        t.by_outcome[index_of(AttemptOutcome::Ok)] = ok;
        t.by_outcome[index_of(AttemptOutcome::Timeout)] = failed;
        t
    }

    #[test]
    fn the_one_word_follows_the_latest_attempt_and_the_day() {
        let since = Timestamp(1_000);
        let at = |ms| Some(Timestamp(ms));
        let cases = [
            (tally(0, 0), None, None, HealthWord::Idle),
            (tally(3, 0), at(2_000), None, HealthWord::Healthy),
            (tally(0, 2), None, at(2_000), HealthWord::Failing),
            (tally(1, 2), at(1_500), at(2_000), HealthWord::Failing),
            (tally(1, 2), at(2_500), at(2_000), HealthWord::Degraded),
            // A failure older than the day no longer makes it failing.
            (tally(0, 0), None, at(500), HealthWord::Idle),
        ];
        for (t, success, failure, want) in cases {
            assert_eq!(
                judge(&t, success, failure, since),
                want,
                "{success:?} {failure:?}"
            );
        }
        assert_eq!(tally(1, 3).success_rate(), Some(0.25));
        assert_eq!(tally(0, 0).success_rate(), None);
    }
}
