//! Login throttling. A password check is deliberately expensive (argon2id: ~19 MiB and tens of
//! milliseconds each), so the limiter decides *before* the hash, never after:
//!
//! - every attempt is **reserved** first, on its client address and on the user name it names; an
//!   address or a name whose failures plus attempts still in progress reach the limit inside the
//!   window is answered 429 at once. So a hundred concurrent wrong logins from one address check at
//!   most the limit's number of passwords, not a hundred;
//! - (the bound on passwords checked at once is `credentials::PasswordChecker`'s: a login that finds
//!   no free slot is answered 503 with `Retry-After` at once, and gives its reservation back);
//! - a success resets the failures of its own user name only. The address keeps its count until the
//!   window ends, so an attacker's own valid account cannot wipe the count of its guesses against
//!   another one.
//!
//! In memory on purpose: it protects the argon2 verifier and the passwords, and a restart that
//! forgets it costs an attacker nothing new. The maps are bounded: expired entries are pruned, and past
//! [`MAX_TRACKED`] keys those that lock nothing are dropped first.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Keys (addresses, user names) each map holds before it sheds entries that lock nothing.
const MAX_TRACKED: usize = 10_000;
/// A user name is tracked by at most this many bytes, so a huge one costs no memory.
const MAX_NAME_BYTES: usize = 64;

pub struct LoginLimiter {
    max_per_address: u32,
    max_per_user: u32,
    window: Duration,
    counts: Mutex<Counts>,
}

#[derive(Default)]
struct Counts {
    by_address: HashMap<IpAddr, Tally>,
    by_user: HashMap<String, Tally>,
}

/// Failures inside the window that started at `since`, and attempts still being checked.
#[derive(Clone, Copy)]
struct Tally {
    failures: u32,
    pending: u32,
    since: Instant,
}

impl Tally {
    fn fresh(now: Instant) -> Tally {
        Tally {
            failures: 0,
            pending: 0,
            since: now,
        }
    }
}

/// Too many failures from this address or for this user name: try again in this many seconds.
#[derive(Debug, PartialEq, Eq)]
pub struct Locked {
    pub retry_after: u64,
}

/// A reserved login attempt. Say how it ended with [`Attempt::succeeded`], [`Attempt::failed`] or
/// [`Attempt::not_checked`]; dropped without any (the client went away mid-check), it counts as a
/// failure, so abandoning requests is no way around the limit.
pub struct Attempt<'a> {
    limiter: &'a LoginLimiter,
    ip: IpAddr,
    user: String,
    settled: bool,
}

impl LoginLimiter {
    pub fn new(max_per_address: u32, max_per_user: u32, window: Duration) -> LoginLimiter {
        LoginLimiter {
            max_per_address,
            max_per_user,
            window,
            counts: Mutex::new(Counts::default()),
        }
    }

    /// Reserves an attempt by `ip` for `user`, or says why not. Cheap: no hashing, no I/O.
    pub fn begin(&self, ip: IpAddr, user: &str) -> Result<Attempt<'_>, Locked> {
        let user = tracked_name(user);
        let now = Instant::now();
        {
            let mut counts = self.counts.lock().expect("limiter lock");
            let window = self.window;
            let address = live(&mut counts.by_address, ip, now, window);
            if let Some(wait) = self.locked(address, self.max_per_address, now) {
                return Err(Locked { retry_after: wait });
            }
            let name = live(&mut counts.by_user, user.clone(), now, window);
            if let Some(wait) = self.locked(name, self.max_per_user, now) {
                return Err(Locked { retry_after: wait });
            }
            counts.by_address.get_mut(&ip).expect("just made").pending += 1;
            counts.by_user.get_mut(&user).expect("just made").pending += 1;
        }
        Ok(Attempt {
            limiter: self,
            ip,
            user,
            settled: false,
        })
    }

    /// Seconds to wait when `tally` has reached `max` inside the window.
    fn locked(&self, tally: Tally, max: u32, now: Instant) -> Option<u64> {
        (tally.failures + tally.pending >= max).then(|| {
            let left = (tally.since + self.window).saturating_duration_since(now);
            left.as_secs().max(1)
        })
    }

    /// Ends a reserved attempt: `failed` counts it against both keys; otherwise only the reservation
    /// is given back.
    fn settle(&self, ip: IpAddr, user: &str, failed: bool) {
        let mut counts = self.counts.lock().expect("limiter lock");
        let Counts {
            by_address,
            by_user,
        } = &mut *counts;
        for tally in [by_address.get_mut(&ip), by_user.get_mut(user)]
            .into_iter()
            .flatten()
        {
            tally.pending = tally.pending.saturating_sub(1);
            if failed {
                tally.failures += 1;
            }
        }
        self.shed(&mut counts);
    }

    fn succeed(&self, ip: IpAddr, user: &str) {
        self.settle(ip, user, false);
        let mut counts = self.counts.lock().expect("limiter lock");
        if let Some(t) = counts.by_user.get_mut(user) {
            t.failures = 0;
        }
    }

    /// Keeps the maps bounded: expired entries go first, then (past the bound) those that lock nothing.
    fn shed(&self, counts: &mut Counts) {
        let now = Instant::now();
        let window = self.window;
        let (max_a, max_u) = (self.max_per_address, self.max_per_user);
        shed_map(&mut counts.by_address, now, window, max_a);
        shed_map(&mut counts.by_user, now, window, max_u);
    }
}

impl Attempt<'_> {
    /// The password was not checked after all (no check slot was free): the reservation is given
    /// back and nothing is counted.
    pub fn not_checked(mut self) {
        self.settled = true;
        self.limiter.settle(self.ip, &self.user, false);
    }

    pub fn succeeded(mut self) {
        self.settled = true;
        self.limiter.succeed(self.ip, &self.user);
    }

    pub fn failed(mut self) {
        self.settled = true;
        self.limiter.settle(self.ip, &self.user, true);
    }
}

impl Drop for Attempt<'_> {
    fn drop(&mut self) {
        if !self.settled {
            self.limiter.settle(self.ip, &self.user, true);
        }
    }
}

fn tracked_name(user: &str) -> String {
    let mut end = user.len().min(MAX_NAME_BYTES);
    while !user.is_char_boundary(end) {
        end -= 1;
    }
    user[..end].to_string()
}

/// The key's tally, restarted when its window has passed and nothing is in progress.
fn live<K: Hash + Eq>(
    map: &mut HashMap<K, Tally>,
    key: K,
    now: Instant,
    window: Duration,
) -> Tally {
    let tally = map.entry(key).or_insert_with(|| Tally::fresh(now));
    if tally.pending == 0 && now.duration_since(tally.since) >= window {
        *tally = Tally::fresh(now);
    }
    *tally
}

fn shed_map<K: Hash + Eq>(map: &mut HashMap<K, Tally>, now: Instant, window: Duration, max: u32) {
    if map.len() <= MAX_TRACKED {
        return;
    }
    map.retain(|_, t| t.pending > 0 || now.duration_since(t.since) < window);
    if map.len() > MAX_TRACKED {
        map.retain(|_, t| t.pending > 0 || t.failures >= max);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn reserves_before_the_check_so_concurrent_attempts_cannot_pass_the_limit() {
        let l = LoginLimiter::new(3, 100, Duration::from_secs(60));
        let a = ip("127.0.0.1");
        // Three attempts in progress at once fill the address's allowance: the fourth is refused
        // before any of them has been checked.
        let held: Vec<_> = (0..3).map(|_| l.begin(a, "admin").unwrap()).collect();
        assert!(matches!(l.begin(a, "admin"), Err(Locked { .. })));
        drop(held); // abandoned attempts count as failures
        assert!(matches!(l.begin(a, "admin"), Err(Locked { retry_after }) if retry_after >= 1));
        assert!(l.begin(ip("127.0.0.2"), "admin").is_ok());
    }

    #[test]
    fn one_accounts_success_does_not_reset_the_addresss_count() {
        let l = LoginLimiter::new(3, 100, Duration::from_secs(60));
        let a = ip("127.0.0.1");
        l.begin(a, "admin").unwrap().failed();
        l.begin(a, "admin").unwrap().failed();
        l.begin(a, "eve").unwrap().succeeded();
        // Two failures and a success: the address has one attempt left, whatever the success.
        l.begin(a, "admin").unwrap().failed();
        assert!(matches!(l.begin(a, "admin"), Err(Locked { .. })));
    }

    #[test]
    fn a_user_name_is_limited_across_addresses_and_reset_by_its_own_success() {
        let l = LoginLimiter::new(100, 3, Duration::from_secs(60));
        for i in 1..=3 {
            l.begin(ip(&format!("127.0.0.{i}")), "admin")
                .unwrap()
                .failed();
        }
        assert!(matches!(
            l.begin(ip("127.0.0.9"), "admin"),
            Err(Locked { .. })
        ));
        assert!(l.begin(ip("127.0.0.9"), "other").is_ok());
        // The real admin's success (its count below the limit) resets the name's failures.
        let l = LoginLimiter::new(100, 3, Duration::from_secs(60));
        l.begin(ip("127.0.0.1"), "admin").unwrap().failed();
        l.begin(ip("127.0.0.2"), "admin").unwrap().failed();
        l.begin(ip("127.0.0.3"), "admin").unwrap().succeeded();
        l.begin(ip("127.0.0.4"), "admin").unwrap().failed();
        l.begin(ip("127.0.0.5"), "admin").unwrap().failed();
        assert!(l.begin(ip("127.0.0.6"), "admin").is_ok());
    }

    #[test]
    fn an_attempt_not_checked_is_not_counted() {
        let l = LoginLimiter::new(1, 100, Duration::from_secs(60));
        l.begin(ip("127.0.0.1"), "a").unwrap().not_checked();
        assert!(l.begin(ip("127.0.0.1"), "a").is_ok());
    }

    #[test]
    fn maps_stay_bounded() {
        let l = LoginLimiter::new(5, 5, Duration::from_secs(60));
        for i in 0..(MAX_TRACKED as u32 + 500) {
            let a = IpAddr::from(std::net::Ipv4Addr::from(0x7f00_0000 + i));
            l.begin(a, &format!("user{i}")).unwrap().failed();
        }
        let counts = l.counts.lock().unwrap();
        assert!(counts.by_address.len() <= MAX_TRACKED + 1);
        assert!(counts.by_user.len() <= MAX_TRACKED + 1);
    }
}
